/* Unit tests for src/common/random.c: the per-thread pool of random bytes
 * behind ids, nonces and trace ids. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/random.h"

Test(random, uuid_is_version_4_in_canonical_form) {
    char u[37];
    for (int i = 0; i < 100; i++) {
        memset(u, 'x', sizeof(u));
        random_uuid(u);
        cr_assert_eq(strlen(u), 36);
        for (int j = 0; j < 36; j++) {
            if (j == 8 || j == 13 || j == 18 || j == 23) cr_assert_eq(u[j], '-', "%s", u);
            else cr_assert_not_null(strchr("0123456789abcdef", u[j]), "%s", u);
        }
        cr_assert_eq(u[14], '4', "%s", u);
        cr_assert_not_null(strchr("89ab", u[19]), "%s", u);
    }
}

Test(random, hex_has_the_asked_length) {
    char h[2 * 100 + 2];
    memset(h, 'x', sizeof(h));
    random_hex(h, 100); /* more than one internal chunk */
    cr_assert_eq(strlen(h), 200);
    cr_assert_eq(strspn(h, "0123456789abcdef"), 200);
    cr_assert_eq(h[201], 'x');
}

/* Across pool refills (4 KiB each) no 16-byte draw repeats and every byte
 * value turns up: a pool handed out twice or left zeroed would show. */
Test(random, draws_differ_across_refills) {
    enum { N = 2000 };
    static unsigned char draws[N][16];
    size_t seen[256] = {0};
    for (int i = 0; i < N; i++) {
        random_bytes(draws[i], 16);
        for (int j = 0; j < 16; j++) seen[draws[i][j]]++;
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) cr_assert_neq(memcmp(draws[i], draws[j], 16), 0);
    for (int v = 0; v < 256; v++) cr_assert_gt(seen[v], 0, "byte %d never drawn", v);
}

/* A draw larger than the pool spans refills. */
Test(random, large_draw_is_filled) {
    static unsigned char big[10000];
    random_bytes(big, sizeof(big));
    size_t zeros = 0;
    for (size_t i = 0; i < sizeof(big); i++) zeros += big[i] == 0;
    cr_assert_lt(zeros, 200); /* about 39 expected */
}

static void *draw_in_thread(void *out) {
    random_bytes(out, 32);
    return NULL;
}

/* Each thread has its own pool: two threads never get the same bytes. */
Test(random, threads_get_different_bytes) {
    unsigned char a[32], b[32];
    pthread_t t1, t2;
    cr_assert_eq(pthread_create(&t1, NULL, draw_in_thread, a), 0);
    cr_assert_eq(pthread_create(&t2, NULL, draw_in_thread, b), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert_neq(memcmp(a, b, sizeof(a)), 0);
}

/* Version 7: the first 48 bits are the Unix time in milliseconds, ids made
 * later sort after earlier ones, and the rest is random. */
Test(random, uuid7_is_time_ordered) {
    char a[37], b[37];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    random_uuid7(a);
    cr_assert_eq(strlen(a), 36);
    cr_assert_eq(a[14], '7', "%s", a);
    cr_assert_not_null(strchr("89ab", a[19]), "%s", a);
    char ms_hex[13];
    memcpy(ms_hex, a, 8);
    memcpy(ms_hex + 8, a + 9, 4);
    ms_hex[12] = '\0';
    uint64_t ms = strtoull(ms_hex, NULL, 16);
    cr_assert_geq(ms, before);
    cr_assert_leq(ms, before + 5000);
    struct timespec pause = {0, 2 * 1000 * 1000};
    nanosleep(&pause, NULL);
    random_uuid7(b);
    cr_assert_lt(strcmp(a, b), 0, "%s then %s", a, b);
    random_uuid7(b);
    cr_assert_neq(strcmp(a, b), 0);
}
