/* A Redis client for one event loop: hiredis's asynchronous API driven by
 * libuv, to one Redis server (one redis_url; a sharded engine holds one
 * client per server and per loop, see redis_ring.h). Single-threaded:
 * every function must be called on the loop's thread, and every callback
 * runs there.
 *
 * Connections: `pool_size` command connections and one pub/sub connection,
 * each opened with AUTH and SELECT from the URL (and SCRIPT LOAD of
 * preload_scripts on the command connections, so that EVALSHA finds them
 * after a Redis restart), then PING: ready means the server answers. A
 * host name is looked up on libuv's thread pool before each attempt
 * (hiredis only ever gets an address, so DNS never blocks the loop).
 * A rediss:// url puts each connection through a TLS bridge
 * (redis_tls.h) with opt.tls; everything else is the same.
 * Commands issued during one loop turn on one connection leave in one
 * write (pipelining: hiredis appends them to the connection's output
 * buffer, which is written when the socket polls writable). A lost
 * connection is reopened after an exponential backoff with jitter
 * (backoff_min_ms doubling up to backoff_max_ms), and the pub/sub
 * connection subscribes again to every channel wanted. A command that is
 * not answered within command_timeout_ms marks the server unresponsive:
 * every connection is dropped and reopened.
 *
 * Fail fast: while no command connection is ready, a command is not queued
 * anywhere: its callback gets an error on the loop's next turn (never from
 * inside redis_client_command_argv). Memory held for a server that is down is
 * therefore bounded by what is in flight when it went down.
 *
 * Deferred frees: hiredis frees its contexts itself (after their
 * disconnect callback); the client never frees a context from inside one
 * of that context's callbacks, and redis_client_close tears down on a later
 * loop turn, so it may be called from any callback. */
#ifndef WSGATE_ENGINE_REDIS_CLIENT_H
#define WSGATE_ENGINE_REDIS_CLIENT_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine/redis_tls.h"
#include "engine/redis_url.h"

typedef struct redis_client redis_client;

/* A command's outcome. On an answer, err is NULL and reply is hiredis's
 * reply (which may be a Redis error: reply->type == REDIS_REPLY_ERROR);
 * the reply is freed by hiredis when the callback returns, so copy what
 * you keep. When the command got no answer, reply is NULL and err is one
 * of these static texts (compare by address): REDIS_CLIENT_E_DOWN (failed fast, never sent),
 * REDIS_CLIENT_E_LOST (sent, then the connection was lost: it may or may
 * not have run), REDIS_CLIENT_E_TIMEOUT (sent, no answer in time: it may
 * or may not have run) or REDIS_CLIENT_E_CLOSED (the client was closed). */
typedef void (*redis_client_reply_cb)(redis_client *c, const redisReply *reply, const char *err,
                                      void *data);

extern const char REDIS_CLIENT_E_DOWN[];
extern const char REDIS_CLIENT_E_LOST[];
extern const char REDIS_CLIENT_E_TIMEOUT[];
extern const char REDIS_CLIENT_E_CLOSED[];

/* A message published on a channel this client subscribed to. Both byte
 * strings are hiredis's, valid during the call only. */
typedef void (*redis_client_message_cb)(redis_client *c, const char *channel, size_t channel_len,
                                        const char *payload, size_t payload_len, void *data);

/* The client became usable (up: the pub/sub connection and at least one
 * command connection are ready) or stopped being usable. */
typedef void (*redis_client_state_cb)(redis_client *c, bool up, void *data);

typedef struct redis_client_options {
    redis_url url;                      /* copied */
    unsigned pool_size;                 /* command connections, 1..16 (0: 2) */
    unsigned connect_timeout_ms;        /* connect + AUTH + SELECT (0: 2000) */
    unsigned command_timeout_ms;        /* a reply later than this drops the server (0: 5000) */
    unsigned backoff_min_ms;            /* first retry after about this (0: 100) */
    unsigned backoff_max_ms;            /* retries at most this far apart (0: 5000) */
    const char *const *preload_scripts; /* Lua sources, NULL-terminated: SCRIPT LOAD on every
                                         * command connection before it is ready (may be NULL) */
    redis_client_message_cb on_message; /* may be NULL */
    redis_client_state_cb on_state;     /* may be NULL */
    void *data;                         /* passed to on_message and on_state */
    redis_tls_options tls;              /* with a rediss:// url (its strings are not copied) */
} redis_client_options;

/* Round-trip latency histogram bounds, in milliseconds (an implicit +Inf
 * bucket follows the last). */
#define REDIS_CLIENT_RTT_BUCKETS 12
extern const double redis_client_rtt_bounds_ms[REDIS_CLIENT_RTT_BUCKETS];

typedef struct redis_client_stats {
    uint64_t commands;         /* sent to Redis (handshakes and subscriptions not counted) */
    uint64_t failed_fast;      /* refused at once: no ready connection */
    uint64_t error_replies;    /* answered with a Redis error */
    uint64_t dropped;          /* sent and never answered (lost, timed out, closed) */
    uint64_t timeouts;         /* times the server was declared unresponsive */
    uint64_t writes;           /* socket writes of the command buffers (pipelining) */
    uint64_t connects;         /* connections made ready (AUTH/SELECT done) */
    uint64_t reconnects;       /* ... of which after a connection was lost */
    uint64_t connect_failures; /* attempts that failed (refused, timed out, AUTH) */
    uint64_t messages;         /* pub/sub messages delivered to on_message */
    uint64_t channels;         /* channels subscribed now (wanted) */
    uint64_t rtt_count;        /* answered commands, with their round trips: */
    double rtt_sum_ms;
    uint64_t rtt_buckets[REDIS_CLIENT_RTT_BUCKETS + 1]; /* not cumulative */
} redis_client_stats;

/* Start a client on loop: connections open from the loop's next turn.
 * Returns the client (never NULL); free it with redis_client_close. */
redis_client *redis_client_new(uv_loop_t *loop, const redis_client_options *opt);

/* Send one command, argc arguments of argvlen[i] bytes each (binary safe;
 * argvlen NULL: C strings), on the command connection chosen by affinity
 * (REDIS_CLIENT_ANY: round robin). Commands with the same affinity go on
 * the same connection while it is up, so Redis runs them in the order they
 * were sent (use the room's hash for a room's commands). cb is called
 * exactly once, on this loop, never before this function returns.
 * Returns 0 when sent, -1 when it failed fast (cb gets REDIS_CLIENT_E_DOWN
 * on the next turn). The arguments are copied. */
#define REDIS_CLIENT_ANY UINT32_MAX
int redis_client_command_argv(redis_client *c, uint32_t affinity, redis_client_reply_cb cb,
                              void *data, int argc, const char **argv, const size_t *argvlen);

/* Return an affinity for key (a stable hash; any 32-bit value works). */
uint32_t redis_client_affinity(const char *key, size_t len);

/* Subscribe to channel (a C string), idempotently: messages reach
 * opt.on_message once Redis confirmed, and again after every reconnect.
 * Unsubscribing stops delivery at once (messages already in flight are
 * dropped). Both return at once; what Redis is told follows. */
void redis_client_subscribe(redis_client *c, const char *channel);
void redis_client_unsubscribe(redis_client *c, const char *channel);

/* Return true when Redis confirmed the subscription to channel on the
 * current pub/sub connection (false while it is being made again). */
bool redis_client_subscribed(const redis_client *c, const char *channel);

/* Write what the commands and subscriptions issued so far wait to send,
 * now rather than when the loop next polls the sockets: for writes that
 * must reach Redis before what the caller is about to tell its own
 * client (a join's count before its welcome). c may be NULL. */
void redis_client_flush(redis_client *c);

/* Return true while the client is up (see redis_client_state_cb). */
bool redis_client_up(const redis_client *c);

/* Copy the client's counters into out. */
void redis_client_get_stats(const redis_client *c, redis_client_stats *out);

/* Return the server's name "host:port/db" (the client's memory). */
const char *redis_client_name(const redis_client *c);

/* Close the client: on the loop's next turn every connection is closed and
 * every unanswered command gets REDIS_CLIENT_E_CLOSED; the client is freed
 * once libuv closed its handles (keep running the loop). Commands sent
 * after this fail (REDIS_CLIENT_E_CLOSED). Callable from any callback. */
void redis_client_close(redis_client *c);

#endif
