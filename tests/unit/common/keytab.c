/* Unit tests for the compact pointer table (src/common/keytab.c): values
 * carry their own key; a randomised run of puts and removes is checked
 * against a plain array model after every step, so the backward-shift
 * deletion (runs that wrap around the end, shrinking) is exercised. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/keytab.h"

typedef struct item {
    int n;
    char key[16];
} item;

static const char *item_key(const void *v) { return ((const item *)v)->key; }

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

Test(keytab, empty_table_answers_null) {
    keytab t;
    keytab_init(&t, item_key);
    cr_assert_null(keytab_get(&t, "x"));
    cr_assert_null(keytab_remove(&t, "x"));
    size_t it = 0;
    void *v;
    cr_assert_not(keytab_next(&t, &it, &v));
    keytab_free(&t);
}

Test(keytab, put_replaces_same_key) {
    keytab t;
    keytab_init(&t, item_key);
    item a = {1, "k"}, b = {2, "k"};
    cr_assert_null(keytab_put(&t, &a));
    cr_assert_eq(keytab_put(&t, &b), &a);
    cr_assert_eq(t.count, 1);
    cr_assert_eq(keytab_get(&t, "k"), &b);
    cr_assert_eq(keytab_remove(&t, "k"), &b);
    cr_assert_eq(t.count, 0);
    cr_assert_eq(t.cap, 0, "an emptied table holds no slots");
    keytab_free(&t);
}

#define N 3000
Test(keytab, random_against_model) {
    static item items[N];
    static bool in[N];
    for (int i = 0; i < N; i++) {
        items[i].n = i;
        snprintf(items[i].key, sizeof items[i].key, "k%d", i);
    }
    keytab t;
    keytab_init(&t, item_key);
    size_t live = 0;
    for (int step = 0; step < 200000; step++) {
        int i = (int)(rnd() % N);
        /* Phases that mostly add, then mostly remove, so the table grows
         * and shrinks several times. */
        bool add = (step / 20000) % 2 == 0 ? rnd() % 4 != 0 : rnd() % 4 == 0;
        if (add) {
            void *old = keytab_put(&t, &items[i]);
            cr_assert_eq(old, in[i] ? &items[i] : NULL);
            if (!in[i]) live++;
            in[i] = true;
        } else {
            void *old = keytab_remove(&t, items[i].key);
            cr_assert_eq(old, in[i] ? &items[i] : NULL);
            if (in[i]) live--;
            in[i] = false;
        }
        cr_assert_eq(t.count, live);
        cr_assert(t.cap == 0 || t.count * 4 <= t.cap * 3);
        if (step % 997 == 0) {
            for (int k = 0; k < N; k++)
                cr_assert_eq(keytab_get(&t, items[k].key), in[k] ? &items[k] : NULL, "key %d", k);
            size_t it = 0, seen = 0;
            void *v;
            while (keytab_next(&t, &it, &v)) {
                cr_assert(in[((item *)v)->n]);
                seen++;
            }
            cr_assert_eq(seen, live);
        }
    }
    keytab_free(&t);
}

/* Every slot's value is found again after removals in a small full-ish
 * table, whatever order (runs wrap around slot 0). */
Test(keytab, small_table_every_removal_order) {
    item items[6];
    for (int i = 0; i < 6; i++) {
        items[i].n = i;
        snprintf(items[i].key, sizeof items[i].key, "w%d", i);
    }
    for (int start = 0; start < 6; start++) {
        keytab t;
        keytab_init(&t, item_key);
        for (int i = 0; i < 6; i++) keytab_put(&t, &items[i]);
        for (int r = 0; r < 6; r++) {
            int victim = (start + r * 5) % 6;
            cr_assert_eq(keytab_remove(&t, items[victim].key), &items[victim]);
            for (int k = 0; k < 6; k++) {
                bool gone = false;
                for (int q = 0; q <= r; q++) gone |= (start + q * 5) % 6 == k;
                cr_assert_eq(keytab_get(&t, items[k].key), gone ? NULL : &items[k]);
            }
        }
        keytab_free(&t);
    }
}
