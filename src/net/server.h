/* The listener and its event loop: accepts connections, flushes their
 * write queues once per loop turn, runs the timers (handshake deadline,
 * idle timeout, pings, maximum duration) and shuts down gracefully on
 * SIGTERM/SIGINT. What connections say is handed to server_handlers. */
#ifndef WSGATE_NET_SERVER_H
#define WSGATE_NET_SERVER_H

#include <stdbool.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <uv.h>

#include "common/error.h"
#include "config/config.h"
#include "http/request.h"
#include "common/slab.h"
#include "net/conn.h"
#include "ws/deflate.h"
#include "net/tls.h"

struct server;

/* What the application layer does with connections. Every callback runs on
 * the loop's thread. Any may be NULL. */
typedef struct server_handlers {
    /* A valid upgrade request for the stage path, before the 101. Return 0
     * to accept, or an HTTP status (401, 403, 429...) with *message set to a
     * static text for the JSON body. */
    int (*authorize)(conn *c, const http_request *req, const char **message);
    /* The 101 has been queued; c->app may be set here. */
    void (*on_open)(conn *c, const http_request *req);
    /* A complete text or binary message. data is valid during the call. */
    void (*on_message)(conn *c, uint8_t opcode, const uint8_t *data, size_t len);
    /* The connection is going away (only called after on_open). The
     * connection can no longer be written to. */
    void (*on_close)(conn *c);
    /* A plain HTTP request that is not an upgrade to the stage path.
     * Return true after answering it with conn_http_respond(). */
    bool (*on_http)(conn *c, const http_request *req);
    /* The head of such a request, before any of its body is read: return
     * the largest body the route takes (0: none; a body then gets 413), a
     * negative WSG_E_* code (WSG_E_HTTP_NOT_FOUND, _METHOD...) to refuse it
     * unread with the code's status, or SERVER_HTTP_ANSWERED after
     * answering it. NULL: requests with a body get 404. */
    long (*on_http_head)(conn *c, const http_request *req);
    /* The net layer refused c's request itself with `status` (429: the
     * address holds more than max_connections_per_ip sockets). */
    void (*on_refused)(conn *c, int status);
    /* c's authorize returned SERVER_AUTH_PENDING and c ended (the client
     * went, shutdown) before server_authorize_done: forget it. c is still
     * valid during the call, not after. */
    void (*on_auth_abandoned)(conn *c);
    /* c's on_http called server_http_defer and c ended (the client went,
     * shutdown) before server_http_answer: forget it. c is still valid
     * during the call, not after. */
    void (*on_http_abandoned)(conn *c);
} server_handlers;

/* What authorize returns to hold the upgrade until the application calls
 * server_authorize_done (an answer that comes over the network). */
#define SERVER_AUTH_PENDING (-1)

/* On c's loop: finish the upgrade that authorize left pending: status 0
 * sends the 101 and runs on_open (then any bytes the client pipelined),
 * else the request is refused with that HTTP status and message (static
 * text, NULL: the status's reason). No effect when c is not pending. */
void server_authorize_done(conn *c, int status, const char *message);

/* From c's on_http, on c's loop: the answer comes later, through
 * server_http_answer (or on_http_abandoned when c ends first). The request
 * stays in c->req until then; bytes the client sends meanwhile are kept
 * (64 KiB at most) and the handshake deadline is off, so the application
 * bounds the wait itself. */
void server_http_defer(conn *c);

/* On c's loop: send the deferred answer (raw response bytes, copied) and,
 * when keep_alive, read c's next request (then any bytes it sent while it
 * waited). No effect when c has no deferred request. */
void server_http_answer(conn *c, const char *data, size_t len, bool keep_alive);

/* Work handed to a worker by another thread (a worker, the store thread):
 * run on the worker's own thread by `run`, in the order posted. Items
 * name connections, rooms and users by id, never by pointer: the owner
 * looks them up in its own index, so one that is gone is simply not found. */
typedef struct server_inbox_item server_inbox_item;
/* Runs item `it` on srv's thread; with `dropped` the loop is gone and run
 * only releases what it->arg holds. The server releases f and key after. */
typedef void (*server_inbox_fn)(struct server *srv, server_inbox_item *it, bool dropped);
struct server_inbox_item {
    server_inbox_fn run;
    ws_frame *f; /* a reference (released after run), or NULL */
    char *key;   /* malloc'd (freed after run), or NULL: a room or user id, a reason */
    void *arg;   /* run's own */
    void (*call)(void *, void *); /* run's own */
    uint32_t flags;
    uint16_t code;
    char conn_id[CONN_ID_LEN + 1];
    char except[CONN_ID_LEN + 1];
};

/* What server_time_next_flush calls after the flush: the monotonic ns just
 * before its first socket write and just after its last. */
typedef void (*server_flush_cb)(void *ctx, uint64_t first_ns, uint64_t last_ns);

typedef struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_prepare_t flush_prepare;
    uv_check_t flush_check;
    uv_timer_t sweep_timer;
    uv_signal_t sig_term, sig_int;

    const config *cfg;
    ws_deflate_config deflate; /* permessage-deflate, from cfg */
    const server_handlers *handlers;
    void *app;            /* the application's server-wide state */
    char stage_path[256]; /* "/staging" */

    conn *conns; /* every live connection */
    size_t nconns;
    size_t nopen; /* connections past the 101 */
    conn *dirty;  /* connections with unflushed queues */

    bool shutting_down;
    uint64_t shutdown_deadline_ms;
    int bound_port;
    int claimed_port; /* the first worker of a SO_REUSEPORT group: its port */
    int worker_index; /* 0 .. worker_threads-1 (logged) */

    tls_ctx *tls; /* wss:// when set; replaced on SIGHUP */
    uv_signal_t sig_hup;
    /* Sends and closes posted by other workers' threads (room fan-out
     * across workers passes each encoded frame by reference). */
    uv_async_t inbox_async;
    pthread_mutex_t inbox_mu;
    server_inbox_item *inbox; /* guarded by inbox_mu */
    size_t inbox_len, inbox_cap;
    _Atomic size_t inbox_waiting; /* inbox_len, readable without inbox_mu */
    bool inbox_closed;            /* the loop is gone: posts are dropped */
    server_inbox_item *running;   /* the batch being delivered (own thread) */
    size_t running_len, running_pos;
    _Atomic size_t queued_sample; /* unwritten bytes, summed at each sweep */
    _Atomic size_t parser_sample; /* parsers' bytes, summed at each sweep */
    server_flush_cb flush_cb;     /* server_time_next_flush: own thread only */
    void *flush_ctx;
    slab conn_slab;   /* [idle memory] every conn of this server (conn.c) */
    size_t untrimmed; /* [idle memory] buffers released since malloc_trim */

    /* Buffers last: server_start zeroes everything before read_buf. */
    uint8_t read_buf[256 * 1024]; /* shared: read callbacks finish with it */
    uint8_t tls_plain[64 * 1024]; /* shared: decrypted bytes of one read */
} server;

/* Initialise srv on `loop` with cfg (borrowed: must outlive srv) and
 * handlers, bind and listen on cfg->listen:cfg->port. Returns 0, or a
 * negative libuv error (the message is logged). */
int server_start(server *srv, uv_loop_t *loop, const config *cfg, const server_handlers *handlers,
                 void *app);

/* As server_start, on `port` instead of cfg->port; with shared, the socket
 * is opened with SO_REUSEPORT so several workers (one loop each, in their
 * own threads) listen on the same port and the kernel spreads connections
 * over them. */
int server_start_worker(server *srv, uv_loop_t *loop, const config *cfg,
                        const server_handlers *handlers, void *app, int port, bool shared);

/* Begin a graceful shutdown: stop accepting, send close 1001 to every open
 * connection, and stop the loop when all are gone or the shutdown timeout
 * passes. */
void server_shutdown(server *srv);

/* Release what server_start allocated (the TLS context) once the loop has
 * stopped. */
void server_free(server *srv);

/* Make srv the calling thread's server: connections of other servers are
 * then written to and closed through their inboxes. Call on each worker's
 * thread before running its loop. */
void server_enter(server *srv);

/* Return true when c may be touched directly from the calling thread: it
 * belongs to the server the thread entered (server_enter). False on a
 * thread that entered none. */
bool server_owns(const conn *c);

/* From any thread: have srv's thread run *it (copied; its f reference and
 * key pass to srv). Posts from one thread run in the order they were
 * made; one wake-up serves every post made before the owner runs them.
 * Once srv's loop is gone the item is run with dropped = true at once. */
void server_post(server *srv, const server_inbox_item *it);

/* Run the posts waiting in srv's inbox (on srv's thread), in the order
 * they were posted. A nested call (a delivery that ends a connection whose
 * on_close runs the inbox again) carries on where the outer one was, so the
 * order holds whoever runs it. */
void server_run_inbox(server *srv);

/* Run the calling thread's inbox (nothing when it has entered no server).
 * The application calls it before handling anything from a client:
 * everything other threads posted before is then queued on this thread's
 * connections ahead of what the handler sends them directly. */
void server_run_own_inbox(void);

/* Set up srv's inbox on loop (server_start does; for a server built by
 * hand, as the fuzzers do). */
void server_inbox_init(server *srv, uv_loop_t *loop);

/* Return the server the calling thread entered, or NULL. */
server *server_current(void);

/* Have the calling thread's next flush of dirty connections (at the end
 * of this loop turn) call cb with ctx and when it wrote its first and last
 * socket; it is called once, then forgotten. A second call before that
 * flush replaces cb. Nothing happens when the thread entered no server. */
void server_time_next_flush(server_flush_cb cb, void *ctx);

/* Unwritten bytes queued on srv's connections: exact on srv's own thread,
 * else as sampled at its last sweep. */
size_t server_queued_bytes(server *srv);

/* Bytes held by srv's connections' frame parsers (partial messages and
 * permessage-deflate inflate state, ws_parser_memory): exact on srv's own
 * thread, else as sampled at its last sweep. */
size_t server_parser_bytes(server *srv);

/* Open WebSocket connections of the whole process (every worker). */
int64_t server_open_total(void);

/* What a server_handlers.on_http_head returns when it has answered the
 * request itself (conn_http_respond): the body is not read and the
 * connection is closed once the answer is written. */
#define SERVER_HTTP_ANSWERED WSG_E_HTTP_ANSWERED

/* Bytes held by connections that have not upgraded (their request head,
 * header index, body and the connection itself), summed over every worker;
 * bounded by max_pending_http_bytes. */
size_t server_pending_http_bytes(void);

/* Internal to the net module. */
void server_open_add(int delta);
void server_pending_http_add(ssize_t delta);
/* Count one more accepted socket from address ip, over every worker, and
 * return how many it now has; server_addr_release forgets one. */
size_t server_addr_acquire(const char *ip);
void server_addr_release(const char *ip);
void server_mark_dirty(server *srv, conn *c);
void server_conn_freed(server *srv, conn *c);

#endif
