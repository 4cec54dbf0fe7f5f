/* Throttling, standing in for API Gateway's stage throttling and going
 * further: token buckets for the stage (connects and messages), per route,
 * per connection and per source address, plus per-address caps on
 * concurrent connections and failed authorizations. No I/O: callers pass
 * the time in milliseconds, from throttle_now_ms() when several threads
 * share one instance, so that every stored time comes from one clock.
 * Times that go backwards are tolerated: elapsed time saturates at zero.
 *
 * Thread safety: one throttle is shared by every worker with no lock on
 * the message path. The stage and route buckets, taken per message, are
 * lock-free (throttle_shared_bucket: one atomic compare-and-swap); the
 * per-address table, touched on connect and close only, has its own
 * mutex; a connection's own bucket belongs to its worker. */
#ifndef WSGATE_THROTTLE_THROTTLE_H
#define WSGATE_THROTTLE_THROTTLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strmap.h"
#include "config/config.h"

/* A token bucket: `burst` tokens at most, refilled at `rate` per second. */
typedef struct throttle_bucket {
    double tokens;
    double rate;
    double burst;
    uint64_t last_ms;
    bool unlimited;
} throttle_bucket;

/* Start b full. unlimited buckets always give a token. */
void throttle_bucket_init(throttle_bucket *b, double rate, double burst, bool unlimited,
                          uint64_t now_ms);
/* Take one token; returns false (and takes nothing) when none is left. */
bool throttle_bucket_take(throttle_bucket *b, uint64_t now_ms);

/* A bucket that any thread may take from at once, exact across threads:
 * the generic cell rate algorithm (GCRA), the token bucket written as one
 * "theoretical arrival time" that a take moves forward by one emission
 * interval with a compare-and-swap. Same `rate` and `burst` meaning as
 * throttle_bucket. */
typedef struct throttle_shared_bucket {
    _Atomic uint64_t tat_ns; /* when the bucket would be full again */
    _Atomic uint64_t left;   /* rate 0: tokens left of the burst */
    uint64_t interval_ns;    /* 1 / rate */
    uint64_t tolerance_ns;   /* (burst - 1) intervals */
    bool unlimited;
    bool no_refill; /* rate 0: the burst is all there ever is */
} throttle_shared_bucket;

/* Start b full (now in ms from throttle_now_ms). */
void throttle_shared_init(throttle_shared_bucket *b, double rate, double burst, bool unlimited,
                          uint64_t now_ms);
/* Take one token from any thread; false (nothing taken) when none is left. */
bool throttle_shared_take(throttle_shared_bucket *b, uint64_t now_ms);

/* Per source address state. */
typedef struct throttle_addr {
    uint32_t connections;     /* open WebSocket connections */
    throttle_bucket connects; /* connect attempts */
    uint32_t auth_failures;   /* in the current minute */
    uint64_t auth_window_ms;  /* start of that minute */
    uint64_t last_seen_ms;
} throttle_addr;

typedef enum throttle_verdict {
    THROTTLE_OK = 0,
    THROTTLE_STAGE,      /* the stage bucket is empty */
    THROTTLE_ROUTE,      /* the route's bucket is empty */
    THROTTLE_CONNECTION, /* the connection's bucket is empty */
    THROTTLE_ADDRESS,    /* too many connects, connections or auth failures */
} throttle_verdict;

typedef struct throttle {
    const config *cfg;
    throttle_shared_bucket stage;
    char **route_names; /* route_throttling keys (borrowed from cfg) */
    throttle_shared_bucket *routes;
    size_t nroutes;
    pthread_mutex_t addrs_lock; /* guards addrs: connect and close paths only */
    strmap addrs;               /* source address -> throttle_addr */
} throttle;

/* Return the process-wide monotonic clock in milliseconds: the one clock
 * for throttles shared by worker loops (each loop's uv_now is cached per
 * iteration and differs between loops). */
uint64_t throttle_now_ms(void);

/* Initialise t from cfg (borrowed; must outlive t). */
void throttle_init(throttle *t, const config *cfg, uint64_t now_ms);
void throttle_free(throttle *t);

/* A connect from addr: checks the per-address cap on concurrent
 * connections, the per-address connect bucket, the address's failed
 * authorizations, then the stage bucket. */
throttle_verdict throttle_connect(throttle *t, const char *addr, uint64_t now_ms);
/* Record a failed authorization from addr. */
void throttle_auth_failed(throttle *t, const char *addr, uint64_t now_ms);
/* A connection from addr opened / closed (the concurrent count). */
void throttle_opened(throttle *t, const char *addr, uint64_t now_ms);
void throttle_closed(throttle *t, const char *addr, uint64_t now_ms);

/* A connection's message bucket, as a throttle_bucket of rate
 * connection_rate_limit and burst connection_burst_limit but holding no
 * copy of them (they are read from the configuration at each take): only
 * the time at which it is full again, 8 bytes in every session. The clock
 * must not go back (a worker's monotonic clock). */
typedef struct throttle_conn_bucket {
    double full_ms;
} throttle_conn_bucket;

/* Initialise a connection's message bucket, as full as a throttle_bucket
 * starts (burst tokens). */
void throttle_connection_init(const throttle *t, throttle_conn_bucket *b, uint64_t now_ms);
/* Take one token from a bucket of rate tokens a second, holding at most
 * burst, kept in *b as the time it is full again (zero: full). Returns
 * false, taking nothing, when none is left; true when rate is 0 or less
 * (no limit). The same answers as throttle_bucket_take. */
bool throttle_full_at_take(throttle_conn_bucket *b, int64_t rate, int64_t burst, uint64_t now_ms);
/* Take one token from a connection's message bucket (the configured
 * connection_rate_limit and connection_burst_limit); returns false (taking
 * nothing) when none is left. */
bool throttle_conn_take(const throttle *t, throttle_conn_bucket *b, uint64_t now_ms);
/* A message on a connection (its bucket conn_bucket) for route_key (NULL
 * before routing is known): connection bucket, stage bucket, then the
 * route's own bucket when route_throttling has one. */
throttle_verdict throttle_message(throttle *t, throttle_conn_bucket *conn_bucket,
                                  const char *route_key, uint64_t now_ms);

/* Forget addresses with no connections that have been quiet for idle_ms.
 * Returns how many were dropped. */
size_t throttle_gc(throttle *t, uint64_t now_ms, uint64_t idle_ms);

#endif
