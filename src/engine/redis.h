/* The Redis engine (engine = "redis"): several wsgate nodes sharing one
 * Redis server, or several sharded ones (redis_urls; docs/redis.md). */
#ifndef WSGATE_ENGINE_REDIS_H
#define WSGATE_ENGINE_REDIS_H

#include "config/config.h"
#include "engine/engine.h"
#include "crypto/crypto.h"

/* Return the Redis engine for nworkers workers delivering through d
 * (static, borrowed), on cfg->redis_urls (sharded; the first is the home
 * Redis) or else cfg->redis_url (cfg borrowed: must outlive the engine), sealing chats with keys (borrowed; NULL: values in the clear)
 * and recording room joins in st (borrowed). NULL with a message in err
 * when a URL does not parse. Free with engine_free, after every worker
 * loop has ended (each closes its Redis client when its server shuts
 * down). */
engine *engine_redis_new(size_t nworkers, const engine_deliver *d, store *st, const config *cfg,
                         crypto_keyring *keys, char *err, size_t errlen);
/* Tell the engine which server is worker `index` (before it starts). */
void engine_redis_attach(engine *e, int index, server *srv);
/* On worker `index`'s thread, before its loop runs: start its Redis client
 * on that loop (the client and its timer close when the server shuts
 * down, so the loop can end). */
void engine_redis_start(engine *e, int index);

#endif
