/* Unit tests for src/engine/redis_ring.c: keys spread evenly over the
 * servers, adding a server moves only the keys it takes (about 1/(n+1)),
 * the mapping ignores the order servers are listed in, and the hash is
 * the fixed function every node must share. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "engine/redis_ring.h"

#define KEYS 30000

static size_t shard_of(const redis_ring *r, int i) {
    char key[32];
    int n = snprintf(key, sizeof key, "room-%d", i);
    return redis_ring_shard(r, key, (size_t)n);
}

Test(redis_ring, balance) {
    const char *names[] = {"10.0.0.1:6379/0", "10.0.0.2:6379/0", "10.0.0.3:6379/0",
                           "10.0.0.4:6379/0"};
    wsg_error err = {0};
    redis_ring *r = redis_ring_new(names, 4, &err);
    cr_assert_not_null(r);
    size_t count[4] = {0};
    for (int i = 0; i < KEYS; i++) count[shard_of(r, i)]++;
    for (int s = 0; s < 4; s++) {
        double share = (double)count[s] / (KEYS / 4.0);
        cr_log_info("shard %d: %zu keys (%.2f of the mean)", s, count[s], share);
        cr_assert(share > 0.8 && share < 1.2, "shard %d holds %zu of %d keys", s, count[s], KEYS);
    }
    redis_ring_free(r);
}

Test(redis_ring, adding_a_server_moves_only_what_it_takes) {
    const char *names[] = {"a:6379/0", "b:6379/0", "c:6379/0", "d:6379/0"};
    wsg_error err = {0};
    redis_ring *three = redis_ring_new(names, 3, &err);
    redis_ring *four = redis_ring_new(names, 4, &err);
    int moved = 0;
    for (int i = 0; i < KEYS; i++) {
        size_t before = shard_of(three, i), after = shard_of(four, i);
        if (before != after) {
            moved++;
            cr_assert_eq(after, 3, "key %d moved between old servers (%zu -> %zu)", i, before,
                         after);
        }
    }
    double frac = (double)moved / KEYS;
    cr_log_info("adding a 4th server moved %.3f of the keys", frac);
    cr_assert(frac > 0.17 && frac < 0.33, "moved %.3f", frac);
    redis_ring_free(three);
    redis_ring_free(four);
}

Test(redis_ring, order_of_servers_does_not_matter) {
    const char *ab[] = {"a:1/0", "b:1/0", "c:1/0"};
    const char *ba[] = {"c:1/0", "a:1/0", "b:1/0"};
    wsg_error err = {0};
    redis_ring *x = redis_ring_new(ab, 3, &err), *y = redis_ring_new(ba, 3, &err);
    for (int i = 0; i < 2000; i++) cr_assert_str_eq(ab[shard_of(x, i)], ba[shard_of(y, i)]);
    redis_ring_free(x);
    redis_ring_free(y);
}

Test(redis_ring, one_server_and_refusals) {
    const char *one[] = {"only:6379/0"};
    wsg_error err = {0};
    redis_ring *r = redis_ring_new(one, 1, &err);
    for (int i = 0; i < 100; i++) cr_assert_eq(shard_of(r, i), 0);
    redis_ring_free(r);
    cr_assert_null(redis_ring_new(one, 0, &err));
    const char *dup[] = {"a:1/0", "b:1/0", "a:1/0"};
    cr_assert_null(redis_ring_new(dup, 3, &err));
    cr_assert(strstr(err.message, "listed twice") && err.code == WSG_E_ENGINE_CONFIG);
    redis_ring_free(NULL);
}

/* The hash is part of the protocol between nodes: values pinned from an
 * independent implementation (Python, from the definition). */
Test(redis_ring, hash_is_fixed) {
    cr_assert_eq(redis_ring_hash("", 0), 0xefd01f60ba992926ull);
    cr_assert_eq(redis_ring_hash("room-1", 6), 0x656bb5e56c350c3full);
    cr_assert_eq(redis_ring_hash("a:6379/0#0", 10), 0x4dde03e80fc07a97ull);
}
