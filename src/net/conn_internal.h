/* Internal to the net module: what conn.c, write_queue.c and upgrade.c
 * share about a connection. */
#ifndef WSGATE_NET_CONN_INTERNAL_H
#define WSGATE_NET_CONN_INTERNAL_H

#include "net/conn.h"

/* How long a closing connection waits for the peer's close frame (or for a
 * slow reader to take our close frame) before TCP is ended anyway. */
#define CONN_CLOSE_WAIT_MS 2000
/* Buffers handed to one writev. */
#define CONN_IOV_MAX 64

/* write_queue.c: queue f (a new reference) on c to be written at the next
 * flush; drop every queued frame (the connection is being freed). */
void conn_enqueue(conn *c, ws_frame *f);
void conn_wq_clear(conn *c);
/* Free c's ring when it is empty and no write is in flight (the sweep:
 * idle connections keep none); true when one was freed. */
bool conn_wq_release_idle(conn *c);

/* A connection's request and what only matters until it upgrades: one
 * block, freed at the 101, so an open connection carries none of it. */
typedef struct conn_http {
    http_request req;     /* first: conn.req points here */
    size_t held;          /* bytes counted in server_pending_http_bytes */
    uint8_t *early_bytes; /* what the client sent after its request while
                           * its authorization was pending */
    size_t early_len;
} conn_http;

static inline conn_http *conn_http_of(const conn *c) { return (conn_http *)(void *)c->req; }

/* upgrade.c: give c a request (zeroed conn_http) and start reading a
 * request head; bring c's share of server_pending_http_bytes up to date
 * (returns the growth); forget c's request (uncounted, freed). */
void conn_request_new(conn *c);
void conn_request_init(conn *c);
ssize_t conn_pending_update(conn *c);
void conn_request_drop(conn *c);
/* upgrade.c: bytes read before the upgrade (request heads, bodies, or
 * frames pipelined behind a pending 101). */
void conn_handle_http_bytes(conn *c, char *data, size_t len);

/* write_queue.c: the slow-consumer rule. True when c's backlog has
 * outlived slow_consumer_timeout_ms; log why c is cut and close it 1008. */
bool conn_backlog_expired(const conn *c, uint64_t now);
void conn_slow_consumer(conn *c, const char *why, size_t frame_len);

/* conn.c: c's frame parser (with its limits and deflate state), and the
 * WebSocket bytes read once c is open. */
ws_parser *conn_parser_new(const conn *c);
void conn_handle_ws_bytes(conn *c, uint8_t *data, size_t len);

/* conn_addr.c: the shared text of a peer address (a reference taken for
 * the connection: release it once, on the accepting thread, when the
 * connection is freed). Returns a string that lives while it has
 * references. */
const char *conn_addr_intern(const char *text);
void conn_addr_release(const char *text);

#endif
