/* The presence bucket is the throttle module's full-at bucket with the
 * presence rate and burst. */
#include "app/presence_limit.h"

bool presence_limit_applies(route_id route) {
    return route == ROUTE_TYPING_INDICATOR || route == ROUTE_JOIN_ROOM || route == ROUTE_LEAVE_ROOM;
}

bool presence_limit_take(const config *cfg, throttle_conn_bucket *b, uint64_t now_ms) {
    return throttle_full_at_take(b, cfg->presence_rate_limit, cfg->presence_burst_limit, now_ms);
}
