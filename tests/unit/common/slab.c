/* Unit tests for the slab (src/common/slab.c): slots are zeroed, distinct
 * and writable across chunks; freed slots are reused; chunks go back as
 * they empty (one kept in reserve until slab_destroy). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/slab.h"

#define N 5000

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static bool zeroed(const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return false;
    return true;
}

Test(slab, slots_are_zeroed_distinct_and_reused) {
    slab s;
    slab_init(&s, 520);
    cr_assert_eq(s.size % 16, 0);
    cr_assert_geq(s.size, 520);
    static uint8_t *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = slab_alloc(&s);
        cr_assert(zeroed(p[i], 520), "slot %d not zeroed", i);
        memset(p[i], i & 0xff ? i & 0xff : 1, 520);
    }
    cr_assert_eq(s.used, N);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 520; k++)
            cr_assert_eq(p[i][k], i & 0xff ? i & 0xff : 1, "slot %d overwritten", i);
    /* Free in a random order, reallocating some: every slot comes back
     * zeroed even when it is a reused one. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            int j = (int)(rnd() % N);
            slab_free(&s, p[j]);
            p[j] = slab_alloc(&s);
            cr_assert(zeroed(p[j], 520));
            memset(p[j], 7, 520);
        }
    }
    for (int i = 0; i < N; i++) slab_free(&s, p[i]);
    cr_assert_eq(s.used, 0);
    cr_assert_leq(slab_bytes(&s), SLAB_CHUNK_BYTES, "emptied chunks were returned");
    slab_destroy(&s);
    cr_assert_eq(slab_bytes(&s), 0);
}

Test(slab, free_null_is_a_no_op) {
    slab s;
    slab_init(&s, 100);
    slab_free(&s, NULL);
    void *a = slab_alloc(&s);
    slab_free(&s, a);
    slab_destroy(&s);
    cr_assert_eq(s.used, 0);
}
