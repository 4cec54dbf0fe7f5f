/* The Redis engine's families on /metrics (docs/management.md lists them):
 * its clients' counters summed over workers, its publishes, the round-trip
 * histogram and the up state. */
#ifndef WSGATE_ENGINE_REDIS_METRICS_H
#define WSGATE_ENGINE_REDIS_METRICS_H

#include "engine/redis.h"
#include "engine/redis_client.h"
#include "metrics/metrics.h"

/* dst += src, every counter and bucket (channels too: a sum over clients). */
void redis_client_stats_add(redis_client_stats *dst, const redis_client_stats *src);

/* Write the wsgate_redis_* families of s to o. */
void redis_metrics_write(metrics_out *o, const redis_engine_stats *s);

/* A metrics_family_fn: ctx is the Redis engine (engine *); writes its
 * engine_redis_stats. */
void redis_metrics_source(metrics_out *o, void *ctx);

#endif
