/* Unit tests for throttle_conn_take (src/throttle/throttle.c): a
 * connection's 8-byte bucket must answer exactly as the full token bucket
 * (throttle_bucket_take) it replaced, for every rate and burst, over long
 * runs of messages at random (non-decreasing) times. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "config/config.h"
#include "throttle/throttle.h"

static void same_answers(double rate, double burst, unsigned seed) {
    config cfg;
    config_init_defaults(&cfg);
    cfg.connection_rate_limit = rate;
    cfg.connection_burst_limit = burst;
    throttle t;
    uint64_t now = 5000000;
    throttle_init(&t, &cfg, now);
    throttle_bucket ref;
    throttle_bucket_init(&ref, rate, burst, rate == 0, now);
    throttle_conn_bucket b;
    throttle_connection_init(&t, &b, now);
    srand(seed);
    int allowed = 0, refused = 0, boundary = 0;
    for (int i = 0; i < 20000; i++) {
        /* Bursts of messages in the same millisecond, short and long gaps. */
        int r = rand() % 10;
        int slow = 1 + (int)(4000 / (rate > 0 ? rate : 1)); /* about 4 times the rate */
        now += r < 6 ? 0 : r < 9 ? (uint64_t)(rand() % 5) : (uint64_t)(rand() % slow);
        bool want = throttle_bucket_take(&ref, now);
        bool got = throttle_conn_take(&t, &b, now);
        if (got != want) {
            /* The old bucket adds rate/1000 per millisecond in floating
             * point, so it drifts from the exact count by rounding: only
             * on a boundary (one token, to rounding) may the two differ,
             * and then the reference is set to the exact count. */
            double tokens = want ? ref.tokens + 1.0 : ref.tokens;
            cr_assert(fabs(tokens - 1.0) < 1e-6,
                      "rate %g burst %g: message %d at %llu: %d, want %d", rate, burst, i,
                      (unsigned long long)now, got, want);
            double left = b.full_ms - (double)now;
            double cap = burst < 1 && rate > 0 ? 1.0 : burst;
            ref.tokens = cap - (left > 0 ? left : 0) * rate / 1000.0;
            boundary++;
        }
        if (want) allowed++;
        else refused++;
    }
    if (rate > 0)
        cr_assert(refused > 0 && allowed > 0, "rate %g burst %g tested nothing", rate, burst);
    cr_assert_leq(boundary, allowed / 10, "rate %g burst %g: %d boundary differences", rate, burst,
                  boundary);
    throttle_free(&t);
    config_free(&cfg);
}

Test(throttle_conn, answers_as_the_token_bucket) {
    /* The configuration holds whole numbers; a burst of 0 still lets one
     * message through every 1/rate seconds. */
    static const double cases[][2] = {{0, 0}, {1, 2},    {10, 20},  {100, 5}, {3, 7}, {2, 0},
                                      {7, 1}, {1000, 1}, {33, 100}, {250, 3}, {1, 1}, {100, 200}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (unsigned seed = 1; seed <= 4; seed++) same_answers(cases[i][0], cases[i][1], seed);
}

Test(throttle_conn, is_eight_bytes) { cr_assert_eq(sizeof(throttle_conn_bucket), 8); }
