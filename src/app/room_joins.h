/* Which rooms a worker has recently told the store about. Every connect
 * joins a room, and the store only writes a join when the room's row is
 * new or its lastActivity is an hour old (apply_room_join): for a room
 * joined a moment ago by the same worker the op, its queue lock, the store
 * thread's wake-up and its empty transaction are all wasted. Only the
 * worker's thread touches its set. */
#ifndef WSGATE_APP_ROOM_JOINS_H
#define WSGATE_APP_ROOM_JOINS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/strmap.h"

/* A join is sent again after this long (seconds), so the store's hourly
 * lastActivity refresh is late by at most this much. */
#define ROOM_JOINS_WINDOW_S 60

/* Rooms remembered at most per worker; past that the set starts over (it
 * only saves ops), so invented room ids cannot grow it without bound. */
#define ROOM_JOINS_MAX 65536

typedef struct room_joins {
    strmap seen; /* room id -> (store generation << 32 | Unix seconds), no allocation */
} room_joins;

/* Initialise an empty set (no allocation until the first join). */
void room_joins_init(room_joins *j);
/* Release the set's memory. */
void room_joins_free(room_joins *j);

/* Return true when a join of room_id at now_s (Unix seconds) must be
 * submitted to the store, and remember it as submitted; false when this
 * worker submitted one under the same store generation `gen`
 * (store_rooms_gen: it moves whenever the store may have lost a room's
 * row) less than ROOM_JOINS_WINDOW_S ago. */
bool room_joins_due(room_joins *j, const char *room_id, uint32_t gen, int64_t now_s);

#endif
