/* Unit tests for the per-connection presence bucket (src/app/presence_limit.c). */
#include <criterion/criterion.h>

#include "app/presence_limit.h"

static config cfg_with(int64_t rate, int64_t burst) {
    config c = {0};
    c.presence_rate_limit = rate;
    c.presence_burst_limit = burst;
    return c;
}

Test(presence_limit, covers_the_routes_that_fan_out_for_free) {
    cr_assert(presence_limit_applies(ROUTE_TYPING_INDICATOR));
    cr_assert(presence_limit_applies(ROUTE_JOIN_ROOM));
    cr_assert(presence_limit_applies(ROUTE_LEAVE_ROOM));
    cr_assert_not(presence_limit_applies(ROUTE_CHAT));
    cr_assert_not(presence_limit_applies(ROUTE_ROOM_LIST));
    cr_assert_not(presence_limit_applies(ROUTE_NONE));
}

Test(presence_limit, burst_then_refill) {
    config c = cfg_with(5, 20); /* a token every 200 ms */
    throttle_conn_bucket full = {0};
    uint64_t now = 1000000;
    for (int i = 0; i < 20; i++) cr_assert(presence_limit_take(&c, &full, now), "take %d", i);
    cr_assert_not(presence_limit_take(&c, &full, now));
    cr_assert_not(presence_limit_take(&c, &full, now + 199));
    cr_assert(presence_limit_take(&c, &full, now + 200));
    cr_assert_not(presence_limit_take(&c, &full, now + 200));
    /* Idle long enough: full again, and no more than full. */
    now += 60000;
    for (int i = 0; i < 20; i++) cr_assert(presence_limit_take(&c, &full, now), "take %d", i);
    cr_assert_not(presence_limit_take(&c, &full, now));
}

Test(presence_limit, rate_zero_is_off) {
    config c = cfg_with(0, 1);
    throttle_conn_bucket full = {0};
    for (int i = 0; i < 1000; i++) cr_assert(presence_limit_take(&c, &full, 5));
}
