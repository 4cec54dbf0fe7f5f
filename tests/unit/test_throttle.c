/* Unit tests for src/throttle/throttle.c with injected clocks. Workers call
 * the shared throttle with their own notion of "now"; these tests feed it
 * times that go backwards, as two loops whose cached clocks are skewed do,
 * and check that no window resets and no address is forgotten early. */
#include <criterion/criterion.h>

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
