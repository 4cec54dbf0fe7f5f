/* The Redis engine's families on /metrics. See redis_metrics.h. */
#include "engine/redis_metrics.h"

#include <stdio.h>

void redis_client_stats_add(redis_client_stats *dst, const redis_client_stats *src) {
    dst->commands += src->commands;
    dst->failed_fast += src->failed_fast;
    dst->error_replies += src->error_replies;
    dst->dropped += src->dropped;
    dst->timeouts += src->timeouts;
    dst->writes += src->writes;
    dst->connects += src->connects;
    dst->reconnects += src->reconnects;
    dst->connect_failures += src->connect_failures;
    dst->messages += src->messages;
    dst->channels += src->channels;
    dst->rtt_count += src->rtt_count;
    dst->rtt_sum_ms += src->rtt_sum_ms;
    for (int i = 0; i <= REDIS_CLIENT_RTT_BUCKETS; i++) dst->rtt_buckets[i] += src->rtt_buckets[i];
}

/* One table for the plain counters and gauges: name, type, help, value. */
typedef struct row {
    const char *name, *type, *help;
    double value;
} row;

void redis_metrics_write(metrics_out *o, const redis_engine_stats *s) {
    const redis_client_stats *c = &s->client;
    const row rows[] = {
        {"wsgate_redis_up", "gauge",
         "1 while every worker's Redis clients are connected (engine = \"redis\"), else 0.",
         s->workers && s->workers_up == s->workers ? 1 : 0},
        {"wsgate_redis_workers_up", "gauge", "Workers whose Redis clients are all connected.",
         (double)s->workers_up},
        {"wsgate_redis_published_chats_total", "counter",
         "Chats stored and published once by the chat script (retries answered from the "
         "idempotency key not counted).",
         (double)s->published_chats},
        {"wsgate_redis_published_events_total", "counter",
         "Room events (presence, typing, POST @rooms) published to other nodes.",
         (double)s->published_events},
        {"wsgate_redis_published_private_total", "counter",
         "Private messages published to other nodes.", (double)s->published_private},
        {"wsgate_redis_commands_total", "counter",
         "Commands sent to Redis (connection handshakes and subscriptions not counted).",
         (double)c->commands},
        {"wsgate_redis_commands_failed_fast_total", "counter",
         "Commands refused at once because no connection to Redis was ready.",
         (double)c->failed_fast},
        {"wsgate_redis_error_replies_total", "counter", "Commands Redis answered with an error.",
         (double)c->error_replies},
        {"wsgate_redis_commands_dropped_total", "counter",
         "Commands sent and never answered (connection lost, timed out, client closed).",
         (double)c->dropped},
        {"wsgate_redis_timeouts_total", "counter",
         "Times a Redis server was declared unresponsive (a reply later than the command "
         "timeout) and its connections reopened.",
         (double)c->timeouts},
        {"wsgate_redis_writes_total", "counter",
         "Socket writes of pipelined commands (commands_total / writes_total: commands per write).",
         (double)c->writes},
        {"wsgate_redis_connects_total", "counter", "Connections to Redis made ready.",
         (double)c->connects},
        {"wsgate_redis_reconnects_total", "counter",
         "Connections to Redis made ready again after one was lost.", (double)c->reconnects},
        {"wsgate_redis_connect_failures_total", "counter",
         "Connection attempts to Redis that failed (refused, timed out, AUTH).",
         (double)c->connect_failures},
        {"wsgate_redis_pubsub_messages_total", "counter",
         "Pub/sub messages received from Redis (chats, events, counts, markers).",
         (double)c->messages},
        {"wsgate_redis_subscribed_channels", "gauge",
         "Channels subscribed, summed over workers' pub/sub connections (a room's channel once "
         "per worker with members there, plus the node's private-message channel).",
         (double)c->channels},
        {"wsgate_redis_subscribed_rooms", "gauge",
         "Rooms whose channel a worker subscribed, summed over workers.", (double)s->rooms},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        metrics_out_family(o, rows[i].name, rows[i].type, rows[i].help);
        metrics_out_sample(o, rows[i].name, NULL, rows[i].value);
    }

    const char *h = "wsgate_redis_rtt_seconds";
    metrics_out_family(o, h, "histogram",
                       "Round trip of answered Redis commands, from sending to the reply.");
    uint64_t cum = 0;
    char label[48], name[64];
    snprintf(name, sizeof(name), "%s_bucket", h);
    for (int i = 0; i <= REDIS_CLIENT_RTT_BUCKETS; i++) {
        cum += c->rtt_buckets[i];
        if (i < REDIS_CLIENT_RTT_BUCKETS)
            snprintf(label, sizeof(label), "le=\"%g\"", redis_client_rtt_bounds_ms[i] / 1000.0);
        else snprintf(label, sizeof(label), "le=\"+Inf\"");
        metrics_out_sample(o, name, label, (double)cum);
    }
    snprintf(name, sizeof(name), "%s_sum", h);
    metrics_out_sample(o, name, NULL, c->rtt_sum_ms / 1000.0);
    snprintf(name, sizeof(name), "%s_count", h);
    metrics_out_sample(o, name, NULL, (double)cum);
}

void redis_metrics_source(metrics_out *o, void *ctx) {
    redis_engine_stats s;
    engine_redis_stats(ctx, &s);
    redis_metrics_write(o, &s);
}
