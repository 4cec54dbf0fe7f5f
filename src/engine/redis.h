/* The Redis engine (engine = "redis"): several wsgate nodes sharing one
 * Redis server, or several sharded ones (redis_urls; docs/redis.md). */
#ifndef WSGATE_ENGINE_REDIS_H
#define WSGATE_ENGINE_REDIS_H

#include "config/config.h"
#include "engine/engine.h"
#include "engine/redis_client.h"
#include "engine/redis_nodes.h"
#include "crypto/crypto.h"

/* Return the Redis engine for nworkers workers delivering through d
 * (static, borrowed), on cfg->redis_urls (sharded; the first is the home
 * Redis) or else cfg->redis_url (cfg borrowed: must outlive the engine), sealing chats with keys (borrowed; NULL: values in the clear)
 * and recording room joins in st (borrowed). NULL with err filled
 * (WSG_E_ENGINE_CONFIG, the message naming the URL) when a URL does not
 * parse or the shards cannot form a ring. Free with engine_free, after every worker
 * loop has ended (each closes its Redis client when its server shuts
 * down). */
engine *engine_redis_new(size_t nworkers, const engine_deliver *d, store *st, const config *cfg,
                         crypto_keyring *keys, wsg_error *err);
/* Tell the engine which server is worker `index` (before it starts). */
void engine_redis_attach(engine *e, int index, server *srv);
/* On worker `index`'s thread, before its loop runs: start its Redis client
 * on that loop (the client and its timer close when the server shuts
 * down, so the loop can end). */
void engine_redis_start(engine *e, int index);

/* What /metrics shows of the Redis engine (engine_redis_stats). */
typedef struct redis_engine_stats {
    redis_client_stats client;    /* summed over every client of every worker */
    uint64_t published_chats;     /* chats the chat script stored and published (not duplicates) */
    uint64_t published_events;    /* room events PUBLISHed (presence, typing, POST @rooms) */
    uint64_t published_private;   /* private messages PUBLISHed for other nodes */
    uint64_t rooms;               /* rooms subscribed, summed over workers */
    uint64_t workers, workers_up; /* workers, and those whose clients are all up */
} redis_engine_stats;

/* Fill *out with the engine's counters, summed over its workers. Any
 * thread. Each worker copies its clients' counters every 250 ms on its own
 * thread (redis_client is single-threaded), so they may be that old; the
 * up state is current. */
void engine_redis_stats(engine *e, redis_engine_stats *out);

/* The node's id: random per process, 16 hex digits (the engine's memory). */
const char *engine_redis_node(engine *e);

/* Fill *out (the caller frees it with redis_nodes_free) with every live
 * node, sorted by id, as worker 0 read them at most about a second ago;
 * this node's entry (self) carries its exact connection and room counts.
 * Returns the count (at least 1: this node). Any thread. */
size_t engine_redis_nodes(engine *e, redis_nodes *out);

#endif
