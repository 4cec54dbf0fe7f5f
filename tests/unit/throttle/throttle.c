/* Unit tests for src/throttle/throttle.c with injected clocks. Workers call
 * the shared throttle with their own notion of "now"; these tests feed it
 * times that go backwards, as two loops whose cached clocks are skewed do,
 * and check that no window resets and no address is forgotten early. */
#include <criterion/criterion.h>
#include <pthread.h>

#include "config/config.h"
#include "throttle/throttle.h"

static config cfg;
static throttle t;

static void setup_limits(int64_t auth_failures, int64_t per_ip) {
    config_init_defaults(&cfg);
    cfg.auth_failures_per_minute = auth_failures;
    cfg.max_connections_per_ip = per_ip;
    cfg.connect_rate_per_ip = 0;
    cfg.throttling_enabled = false;
    throttle_init(&t, &cfg, 1000000);
}

static void teardown(void) {
    throttle_free(&t);
    config_free(&cfg);
}

/* Failed authorizations recorded by a loop whose clock is ahead; the next
 * connect is judged by a loop 5 ms behind. Before the fix the unsigned
 * difference wrapped, the window looked a minute old, reset, and the
 * address could try again at once. */
Test(throttle, auth_window_survives_a_clock_behind, .fini = teardown) {
    setup_limits(3, 0);
    for (int i = 0; i < 3; i++) throttle_auth_failed(&t, "10.0.0.1", 1000010);
    cr_assert_eq(throttle_connect(&t, "10.0.0.1", 1000005), THROTTLE_ADDRESS);
    /* Still refused by a clock behind after more failures counted. */
    throttle_auth_failed(&t, "10.0.0.1", 1000003);
    cr_assert_eq(throttle_connect(&t, "10.0.0.1", 1000001), THROTTLE_ADDRESS);
    /* A real minute later the window opens again. */
    cr_assert_eq(throttle_connect(&t, "10.0.0.1", 1000010 + 60000), THROTTLE_OK);
}

/* The collector runs on a loop whose clock is behind the worker that just
 * saw the address: "quiet for idle_ms" must not wrap to "quiet forever". */
Test(throttle, gc_keeps_an_address_just_seen_by_a_clock_ahead, .fini = teardown) {
    setup_limits(2, 0);
    throttle_auth_failed(&t, "10.0.0.2", 2000050);
    throttle_auth_failed(&t, "10.0.0.2", 2000050);
    cr_assert_eq(throttle_gc(&t, 2000000, 60000), 0);
    cr_assert_eq(throttle_connect(&t, "10.0.0.2", 2000060), THROTTLE_ADDRESS);
    cr_assert_eq(throttle_gc(&t, 2000060 + 60000, 60000), 1);
}

/* A token bucket refilled by a clock ahead and then asked by one behind
 * neither gains tokens nor moves its stamp back. */
Test(throttle, bucket_ignores_a_clock_behind) {
    throttle_bucket b;
    throttle_bucket_init(&b, 1.0, 2.0, false, 5000);
    cr_assert(throttle_bucket_take(&b, 5000));
    cr_assert(throttle_bucket_take(&b, 5000));
    cr_assert_not(throttle_bucket_take(&b, 4000));
    cr_assert_eq(b.last_ms, 5000);
    cr_assert_not(throttle_bucket_take(&b, 5500));
    cr_assert(throttle_bucket_take(&b, 6000));
}

/* The per-address cap on concurrent connections is exact whatever the
 * callers' clocks. */
Test(throttle, per_address_cap, .fini = teardown) {
    setup_limits(0, 2);
    throttle_opened(&t, "10.0.0.3", 3000000);
    throttle_opened(&t, "10.0.0.3", 2999990);
    cr_assert_eq(throttle_connect(&t, "10.0.0.3", 2999980), THROTTLE_ADDRESS);
    throttle_closed(&t, "10.0.0.3", 2999970);
    cr_assert_eq(throttle_connect(&t, "10.0.0.3", 2999960), THROTTLE_OK);
}

/* The process clock the shared buckets use never goes backwards. */
Test(throttle, process_clock_is_monotonic) {
    uint64_t prev = throttle_now_ms();
    for (int i = 0; i < 100000; i++) {
        uint64_t now = throttle_now_ms();
        cr_assert_geq(now, prev);
        prev = now;
    }
}

/* ---- the lock-free bucket shared by every worker ---- */

/* Same meaning as the plain bucket: burst at once, then rate per second. */
Test(throttle_shared, burst_then_rate) {
    throttle_shared_bucket b;
    throttle_shared_init(&b, 10.0, 3.0, false, 1000);
    for (int i = 0; i < 3; i++) cr_assert(throttle_shared_take(&b, 1000));
    cr_assert_not(throttle_shared_take(&b, 1000));
    cr_assert_not(throttle_shared_take(&b, 1050)); /* half an interval */
    cr_assert(throttle_shared_take(&b, 1100));     /* one interval: one token */
    cr_assert_not(throttle_shared_take(&b, 1100));
    /* A long quiet refills to the burst, not beyond. */
    int n = 0;
    while (throttle_shared_take(&b, 100000)) n++;
    cr_assert_eq(n, 3);
}

/* A caller whose clock reads behind the others' gets no more and no less:
 * the stored time is not moved back, nothing wraps. */
Test(throttle_shared, skewed_clocks) {
    throttle_shared_bucket b;
    throttle_shared_init(&b, 1.0, 2.0, false, 5000);
    cr_assert(throttle_shared_take(&b, 5000));
    cr_assert(throttle_shared_take(&b, 5000));
    cr_assert_not(throttle_shared_take(&b, 4000));
    cr_assert_not(throttle_shared_take(&b, 5500));
    cr_assert(throttle_shared_take(&b, 6000));
}

Test(throttle_shared, rate_zero_is_the_burst_once) {
    throttle_shared_bucket b;
    throttle_shared_init(&b, 0.0, 2.0, false, 0);
    cr_assert(throttle_shared_take(&b, 0));
    cr_assert(throttle_shared_take(&b, 1000000));
    cr_assert_not(throttle_shared_take(&b, 2000000));
}

#define HAMMER_THREADS 4
#define HAMMER_TAKES   50000
static throttle_shared_bucket hammered;
static void *hammer(void *arg) {
    long won = 0;
    for (int i = 0; i < HAMMER_TAKES; i++) won += throttle_shared_take(&hammered, 7000);
    return (void *)won;
}

/* Threads taking at once from one bucket, at one instant: exactly the
 * burst is given out, never a token more (the old bucket needed a lock). */
Test(throttle_shared, exact_across_threads) {
    throttle_shared_init(&hammered, 5.0, 1000.0, false, 7000);
    pthread_t th[HAMMER_THREADS];
    for (int i = 0; i < HAMMER_THREADS; i++) pthread_create(&th[i], NULL, hammer, NULL);
    long total = 0;
    for (int i = 0; i < HAMMER_THREADS; i++) {
        void *r;
        pthread_join(th[i], &r);
        total += (long)r;
    }
    cr_assert_eq(total, 1000);
}
