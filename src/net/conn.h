/* One client connection: its socket, its handshake, its frame parser and its
 * write queue of shared frames. A connection is owned by the server (the
 * worker loop) that accepted it, and is only touched from that loop's
 * thread. It is never freed inside one of its own callbacks: closing marks
 * it and libuv's close callback frees it on a later turn of the loop. */
#ifndef WSGATE_NET_CONN_H
#define WSGATE_NET_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "http/request.h"
#include "net/tls.h"
#include "ws/deflate.h"
#include "ws/frame.h"

struct server;

typedef enum conn_state {
    CONN_HTTP,    /* reading the request head */
    CONN_OPEN,    /* WebSocket open */
    CONN_CLOSING, /* close frame sent or received; waiting to end TCP */
    CONN_CLOSED,  /* uv_close called; freed by the close callback */
} conn_state;

#define CONN_ID_LEN 16

/* A connection's write queue while it has one (write_queue.c): the ring's
 * bookkeeping lives with its slots, not in every connection. */
typedef struct conn_wq {
    uint32_t head, count, cap; /* cap: a power of two */
    uint32_t head_off;         /* bytes of the first frame already written */
    uint64_t backlog_since_ms; /* uv_now when wq_bytes last rose above
                                * max_queued_bytes; 0 while at or below */
    ws_frame *frames[];
} conn_wq;

/* Laid out for idle memory (issue 16): flags are bits, fields that are
 * never needed at the same time share storage, and the address text is
 * shared by every connection from it. What each part costs is in
 * docs/BENCHMARKS.md ("Idle memory"). */
typedef struct conn {
    uv_tcp_t tcp;
    struct server *srv;
    struct conn *prev, *next; /* the server's list of connections */
    struct conn *dirty_next;  /* the server's list of queues to flush */

    conn_state state;
    uint16_t peer_close_code;   /* the client's close code (1005: none given), 0: no close */
    bool dirty : 1;             /* on the flush list */
    bool close_after_flush : 1; /* end TCP once the queue drains */
    bool close_sent : 1;        /* our close frame is queued */
    bool awaiting_pong : 1;
    bool opened : 1;          /* on_open ran, so on_close must run */
    bool http_keep_alive : 1; /* plain HTTP: read another request after this one */
    bool upgraded : 1;        /* past the 101: what arrives is WebSocket frames */
    bool deflate : 1;         /* permessage-deflate agreed (deflate_params) */
    bool addr_counted : 1;    /* counted in server_addr_acquire */
    bool over_addr_limit : 1; /* its address had max_connections_per_ip sockets */
    bool http_answered : 1;   /* on_http_head answered: the body is never read */
    bool auth_pending : 1;    /* authorize answered SERVER_AUTH_PENDING: no 101 yet */
    bool tls_shutdown_sent : 1;
    bool http_deferred : 1; /* on_http answers later (server_http_answer) */
    ws_deflate_params deflate_params;

    /* During the handshake / plain HTTP; with what only then matters
     * around it (conn_http in conn_internal.h). */
    http_request *req;
    ws_parser *parser; /* once open; NULL while idle between frames */

    /* Write queue: a ring of shared frames, NULL while nothing is queued
     * (the sweep frees an empty ring), so idle connections hold none. */
    struct conn_wq *wq;
    uint32_t partial_held;   /* its share of msgbudget_total (net/msg_budget.h):
                              * at most max_fragmented_bytes (64 MiB) */
    uint32_t control_frames; /* pings and pongs received in the current second */
    size_t wq_bytes;         /* unwritten bytes queued */
    size_t posted_bytes;     /* frames other workers posted for c, not yet queued
                              * (atomic: added by posters, taken by the owner) */

    tls_conn *tls; /* wss://: the queue holds plaintext (and tls_conn_inflight
                    * the ciphertext being written) */

    /* A connection is timed by one of these, the one of its state: its
     * handshake deadline (reading its request), its age (open) or its
     * closing deadline. */
    union {
        uint64_t created_ms;        /* CONN_HTTP: uv_now at accept (or at its
                                     * keep-alive request's start) */
        uint64_t opened_ms;         /* CONN_OPEN: uv_now at 101 */
        uint64_t close_deadline_ms; /* CONN_CLOSING: when TCP is ended anyway */
    };
    /* The low 32 bits of uv_now: only ever compared by difference with
     * limits the configuration caps at a day (idle_timeout_s) and an hour
     * (ping_interval_s, pong_timeout_s), and refreshed or acted on within
     * them, so the wrap every 49 days never matters. */
    uint32_t last_active_ms; /* last data message or ping from the client */
    uint32_t last_ping_ms;   /* last server ping sent */
    /* Unix seconds (unsigned 32 bits: good until 2106). */
    uint32_t connected_at;   /* at 101 */
    uint32_t last_active_at; /* of the last message (atomic: read by any thread) */

    const char *source_ip; /* the peer's address as text, shared by every
                            * connection from it (conn_addr_intern) */
    char *user_agent;      /* owned, may be NULL */
    char *subprotocol;     /* owned; set by the authorizer to answer
                                      * Sec-WebSocket-Protocol, or NULL */

    void *app; /* the application's per-connection state */
    /* Low 32 bits of uv_now, as last_active_ms: compared by difference
     * with one second only (next to id, it takes the id's padding). */
    uint32_t control_window_ms; /* start of the current control-frame second */
    uint16_t writing;           /* frames covered by the uv_write in flight (at
                                 * most CONN_IOV_MAX); in the id's padding too */
    char id[CONN_ID_LEN + 1];   /* opaque, URL-safe connection id */
} conn;

/* Queue frame f (taking a new reference) to be written on the next flush.
 * Returns 0, or WSG_E_NET_NOT_OPEN when the connection is not open for
 * writing (closing, closed). A frame of any size is taken while the unsent
 * bytes are at most max_queued_bytes. Above that the connection is
 * backlogged: it is closed with 1008 (slow consumer) and
 * WSG_E_NET_SLOW_CONSUMER is returned when the queue has stayed
 * above max_queued_bytes for slow_consumer_timeout_ms, or would exceed the
 * ceiling of CONN_QUEUE_CEILING times max_queued_bytes. c's own thread
 * only: other threads post to its worker by id (src/engine/). */
int conn_send(conn *c, ws_frame *f);

/* The hard ceiling on a backlogged queue, in units of max_queued_bytes:
 * protects memory from a reader that never reads before its deadline. */
#define CONN_QUEUE_CEILING 4

/* Encode and queue one text or binary message (copying payload). Same
 * returns as conn_send. */
int conn_send_data(conn *c, uint8_t opcode, const void *payload, size_t len);

/* Start the closing handshake with `code` and `reason` (NULL for none): the
 * close frame is queued, further data frames from the peer are ignored, and
 * TCP is ended when the peer answers or a short deadline passes. No effect
 * on a connection already closing. c's own thread only. */
void conn_close(conn *c, uint16_t code, const char *reason);

/* End the TCP connection now (after nothing): queued frames are dropped.
 * on_close runs if the connection was open. Safe to call more than once. */
void conn_abort(conn *c);

/* Send a complete plain-HTTP response (raw bytes, copied) and then close
 * TCP once it is written, unless the request asked for keep-alive and
 * `keep_alive` is true. */
void conn_http_respond(conn *c, const char *data, size_t len, bool keep_alive);

/* Return bytes queued and not yet written, counting frames other workers
 * posted that c's loop has not queued yet (from any thread: relaxed atomic
 * reads), so a backlog is seen whichever worker asks. */
static inline size_t conn_queued_bytes(const conn *c) {
    return __atomic_load_n(&c->wq_bytes, __ATOMIC_RELAXED) +
           __atomic_load_n(&c->posted_bytes, __ATOMIC_RELAXED);
}

/* Return the Unix time of c's last message (from any thread). */
static inline int64_t conn_last_active_at(const conn *c) {
    return (int64_t)__atomic_load_n(&c->last_active_at, __ATOMIC_RELAXED);
}

/* Return the index of the worker that owns the connection with this id
 * (from the id itself), or WSG_E_INVAL when id is not a connection id. */
int conn_id_worker(const char *id);

/* Internal to the net module: accept, read, flush, sweep, free. */
conn *conn_accept(struct server *srv);
void conn_flush(conn *c);
/* Run c's timers and release its idle buffers (write ring, frame parser);
 * returns how many buffers were released. */
unsigned conn_sweep(conn *c, uint64_t now_ms);

#endif
