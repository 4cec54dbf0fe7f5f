/* On-demand reads of the member counts that every live worker of the
 * cluster keeps in Redis (docs/redis.md, "Counts across nodes"): what
 * room_list and @rooms answer for rooms where this node has no member, at
 * the moment they are asked rather than as of worker 0's last
 * once-a-second read. Module prefix redis_counts_. One loop's clients
 * only; every callback runs on that loop. */
#ifndef WSGATE_ENGINE_REDIS_COUNTS_H
#define WSGATE_ENGINE_REDIS_COUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/strmap.h"
#include "engine/redis_client.h"

/* The answer: rc 0 and sums (room id -> (uintptr_t) members, on every
 * live worker whose field does not start with "<own node>."), or rc -1
 * (a read failed: err is the client's error text or a short reason) with
 * sums NULL. sums is the module's, valid during the call only. */
typedef void (*redis_counts_fn)(void *data, int rc, const char *err, const strmap *sums);

/* Read the live-worker set "wsgate:workers" on home (workers whose
 * heartbeat, Unix ms, is at least min_heartbeat_ms), then, pipelined, one
 * script per server of shards[0..nshards) (shards[0] may be home) that
 * adds up those workers' "wsgate:w:<field>:rooms" hashes there: two round
 * trips, one when no other worker is live. home must not be NULL; a
 * shard's client NULL (closing) fails the read. done runs exactly once, on this loop, never from
 * inside this call. own_node and the clients are borrowed for the call. */
void redis_counts_rooms(redis_client *home, redis_client *const *shards, size_t nshards,
                        const char *own_node, int64_t min_heartbeat_ms, redis_counts_fn done,
                        void *data);

#endif
