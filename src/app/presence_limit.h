/* The per-connection bound on room fan-out a client can cause with events
 * that cost it nothing: a typing_indicator, join_room or leave_room is one
 * small message in, one frame to every member of the room out. Under the
 * connection's message bucket alone (100 a second) one client in a room of
 * M members made the server write 100 x M frames a second. These routes
 * take a token from a second, smaller bucket (presence_rate_limit per
 * second, presence_burst_limit at most); chat, which is stored and is what
 * the room is for, keeps the message bucket only. */
#ifndef WSGATE_APP_PRESENCE_LIMIT_H
#define WSGATE_APP_PRESENCE_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "app/router.h"
#include "config/config.h"
#include "throttle/throttle.h"

/* Return true when route is one of the fan-out events this bound covers. */
bool presence_limit_applies(route_id route);

/* Take one token from a connection's presence bucket *b (the caller's;
 * zeroed it starts full; times in ms of the worker's monotonic clock).
 * Returns false, taking nothing, when the bucket is empty; always true when
 * presence_rate_limit is 0 (off). */
bool presence_limit_take(const config *cfg, throttle_conn_bucket *b, uint64_t now_ms);

#endif
