/* A token bucket held as one number, the time it is full again: each take
 * moves it one refill interval later, and a take that would move it more
 * than the burst's worth of intervals past now finds the bucket empty. */
#include "app/presence_limit.h"

bool presence_limit_applies(route_id route) {
    return route == ROUTE_TYPING_INDICATOR || route == ROUTE_JOIN_ROOM || route == ROUTE_LEAVE_ROOM;
}

bool presence_limit_take(const config *cfg, double *full_ms, uint64_t now_ms) {
    if (cfg->presence_rate_limit <= 0) return true;
    double interval = 1000.0 / (double)cfg->presence_rate_limit;
    double now = (double)now_ms;
    double full = *full_ms > now ? *full_ms : now;
    if (full + interval - now > (double)cfg->presence_burst_limit * interval) return false;
    *full_ms = full + interval;
    return true;
}
