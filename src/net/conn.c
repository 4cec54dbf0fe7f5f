#include "net/conn.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/random.h"
#include "http/handshake.h"
#include "log/log.h"
#include "net/server.h"

/* How long a closing connection waits for the peer's close frame (or for a
 * slow reader to take our close frame) before TCP is ended anyway. */
#define CONN_CLOSE_WAIT_MS 2000
/* Buffers handed to one writev. */
#define CONN_IOV_MAX 64

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_closed(uv_handle_t *h);
static long on_http_head(http_request *r, void *ctx);

static const char id_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The first character names the owning worker (any thread routes to the
 * owner from the id alone); the other 15 are random (90 bits), so an id
 * is never reused and a stale one matches nothing in the owner's index. */
static void make_id(char out[CONN_ID_LEN + 1], int worker) {
    unsigned char rnd[CONN_ID_LEN];
    random_bytes(rnd, sizeof(rnd));
    out[0] = id_alphabet[worker & 63];
    for (int i = 1; i < CONN_ID_LEN; i++) out[i] = id_alphabet[rnd[i] & 63];
    out[CONN_ID_LEN] = '\0';
}

/* Dotted quad of a (network order) into out (16 bytes at least): libuv's
 * and libc's go through snprintf, a noticeable part of a connect. */
static void ipv4_text(const struct in_addr *a, char *out) {
    const uint8_t *b = (const uint8_t *)&a->s_addr;
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100) *p++ = (char)('0' + v / 100);
        if (v >= 10) *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
}

int conn_id_worker(const char *id) {
    if (!id || strlen(id) != CONN_ID_LEN) return -1;
    const char *p = strchr(id_alphabet, id[0]);
    return p && *p ? (int)(p - id_alphabet) : -1;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    conn *c = h->data;
    buf->base = (char *)c->srv->read_buf;
    buf->len = sizeof(c->srv->read_buf);
}

/* ---- requests before the upgrade ---- */

/* Largest plain-HTTP request body a route may take: API Gateway's 128 KB
 * message limit, for POST @connections. */
#define CONN_MAX_HTTP_BODY (128 * 1024)

/* Bring c's share of server_pending_http_bytes up to date: the connection
 * itself and what its request holds (0 once it has none). Returns how much
 * it grew. */
static ssize_t pending_update(conn *c) {
    size_t held =
        c->req ? sizeof(*c) + sizeof(*c->req) + http_request_held(c->req) + c->early_len : 0;
    ssize_t delta = (ssize_t)held - (ssize_t)c->http_held;
    if (delta) server_pending_http_add(delta);
    c->http_held = held;
    return delta;
}

/* (Re)start c's request, routed on its head before any body is read. */
static void request_init(conn *c) {
    const config *cfg = c->srv->cfg;
    http_request_init(c->req, (size_t)cfg->max_header_bytes, (size_t)cfg->max_headers,
                      CONN_MAX_HTTP_BODY);
    c->req->on_head = on_http_head;
    c->req->on_head_ctx = c;
    pending_update(c);
}

/* The request head is parsed: decide how much body, if any, is read. */
static long on_http_head(http_request *r, void *ctx) {
    conn *c = ctx;
    if (c->over_addr_limit) return -429;
    size_t plen;
    const char *path = http_request_path(r, &plen);
    bool is_stage =
        plen == strlen(c->srv->stage_path) && memcmp(path, c->srv->stage_path, plen) == 0;
    /* A handshake carries no body. */
    if (is_stage || r->parser.upgrade) return 0;
    if (!c->srv->handlers->on_http_head) return http_request_has_body(r) ? -404 : 0;
    long v = c->srv->handlers->on_http_head(c, r);
    if (v == SERVER_HTTP_ANSWERED) {
        c->http_answered = true;
        return -400; /* stop the parser; the answer is already queued */
    }
    if (v > CONN_MAX_HTTP_BODY) v = CONN_MAX_HTTP_BODY;
    return v;
}

conn *conn_accept(server *srv) {
    conn *c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return NULL;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (srv->tls) c->tls = tls_conn_new(srv->tls);
    c->state = CONN_HTTP;
    c->created_ms = uv_now(srv->loop);
    c->last_active_ms = c->created_ms;
    make_id(c->id, srv->worker_index);

    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    strcpy(c->source_ip, "unknown");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            ipv4_text(&((struct sockaddr_in *)&ss)->sin_addr, c->source_ip);
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->source_ip, sizeof(c->source_ip));
    }

    const config *cfg = srv->cfg;
    c->req = xmalloc(sizeof(*c->req));
    request_init(c);

    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;

    /* Every socket counts against its address's max_connections_per_ip,
     * upgraded or not: a flood of sockets that never upgrade is refused
     * too. Up to twice the limit they get a 429 once their request head is
     * read (what clients and metrics expect); beyond that they are closed
     * at once, unread. */
    if (cfg->max_connections_per_ip > 0) {
        size_t n = server_addr_acquire(c->source_ip);
        c->addr_counted = true;
        if (n > (size_t)cfg->max_connections_per_ip) {
            c->over_addr_limit = true;
            if (n > 2 * (size_t)cfg->max_connections_per_ip) {
                log_line l;
                log_begin(&l, LOG_INFO, "address_limit");
                log_str(&l, "identity.sourceIp", c->source_ip);
                log_int(&l, "sockets", (int64_t)n);
                log_end(&l);
                conn_abort(c);
                return c;
            }
        }
    }

    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    return c;
}

/* ---- write queue ---- */

/* Only c's thread writes wq_bytes; other workers read it (the management
 * API's queue check, gauges), so every write is a relaxed atomic store. */
static inline void wq_bytes_set(conn *c, size_t v) {
    __atomic_store_n(&c->wq_bytes, v, __ATOMIC_RELAXED);
    /* The slow-consumer clock runs while the queue is above the limit and
     * restarts whenever it has drained to the limit. */
    if (v <= (size_t)c->srv->cfg->max_queued_bytes) c->backlog_since_ms = 0;
    else if (!c->backlog_since_ms) c->backlog_since_ms = uv_now(c->srv->loop) | 1;
}

static void wq_push(conn *c, ws_frame *f) {
    if (c->wq_count == c->wq_cap) {
        uint32_t ncap = c->wq_cap ? c->wq_cap * 2 : 8;
        ws_frame **n = xmalloc(ncap * sizeof(*n));
        for (uint32_t i = 0; i < c->wq_count; i++) n[i] = c->wq[(c->wq_head + i) & (c->wq_cap - 1)];
        free(c->wq);
        c->wq = n;
        c->wq_cap = ncap;
        c->wq_head = 0;
    }
    c->wq[(c->wq_head + c->wq_count) & (c->wq_cap - 1)] = f;
    c->wq_count++;
    wq_bytes_set(c, c->wq_bytes + f->len);
}

static ws_frame *wq_at(const conn *c, uint32_t i) {
    return c->wq[(c->wq_head + i) & (c->wq_cap - 1)];
}

static void wq_pop(conn *c) {
    ws_frame *f = wq_at(c, 0);
    wq_bytes_set(c, c->wq_bytes - (f->len - c->wq_head_off));
    c->wq_head = (c->wq_head + 1) & (c->wq_cap - 1);
    c->wq_count--;
    c->wq_head_off = 0;
    ws_frame_unref(f);
}

/* Account for n bytes written from the head of the queue. */
static void wq_advance(conn *c, size_t n) {
    while (n > 0 && c->wq_count > 0) {
        ws_frame *f = wq_at(c, 0);
        size_t left = f->len - c->wq_head_off;
        if (n >= left) {
            n -= left;
            wq_pop(c);
        } else {
            c->wq_head_off += (uint32_t)n;
            wq_bytes_set(c, c->wq_bytes - n);
            n = 0;
        }
    }
}

/* Drop every frame not yet handed to the kernel or to an in-flight write. */
static void wq_drop_unsent(conn *c) {
    uint32_t keep = c->writing ? c->writing : (c->wq_head_off ? 1 : 0);
    while (c->wq_count > keep) {
        uint32_t last = c->wq_count - 1;
        ws_frame *f = wq_at(c, last);
        wq_bytes_set(c, c->wq_bytes - f->len);
        c->wq_count--;
        ws_frame_unref(f);
    }
}

static void wq_clear(conn *c) {
    while (c->wq_count) wq_pop(c);
    free(c->wq);
    c->wq = NULL;
    c->wq_cap = 0;
}

static uint32_t wq_gather(conn *c, uv_buf_t *bufs, uint32_t max) {
    uint32_t n = c->wq_count < max ? c->wq_count : max;
    for (uint32_t i = 0; i < n; i++) {
        ws_frame *f = wq_at(c, i);
        uint32_t off = i == 0 ? c->wq_head_off : 0;
        bufs[i] = uv_buf_init((char *)f->data + off, f->len - off);
    }
    return n;
}

static void enqueue(conn *c, ws_frame *f) {
    /* The contract of this file: only c's own loop thread touches c. */
    assert(server_owns(c));
    wq_push(c, f);
    if (!c->dirty) server_mark_dirty(c->srv, c);
}

/* Offer the queue to the kernel now, without closing on error (callers may
 * be walking a list of connections); conn_flush handles errors later. */
static void wq_try_push(conn *c) {
    if (c->tls) return; /* plaintext must go through the TLS engine first */
    uv_buf_t bufs[CONN_IOV_MAX];
    while (c->wq_count > 0 && !c->writing && c->state != CONN_CLOSED) {
        uint32_t n = wq_gather(c, bufs, CONN_IOV_MAX);
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r <= 0) return;
        size_t want = 0;
        for (uint32_t i = 0; i < n; i++) want += bufs[i].len;
        wq_advance(c, (size_t)r);
        if ((size_t)r < want) return;
    }
}

/* Log why c is cut as a slow consumer and close it with 1008. */
static void slow_consumer(conn *c, const char *why, size_t frame_len) {
    uint64_t now = uv_now(c->srv->loop);
    log_line l;
    log_begin(&l, LOG_INFO, "slow_consumer");
    log_str(&l, "connectionId", c->id);
    log_str(&l, "identity.sourceIp", c->source_ip);
    log_str(&l, "reason", why);
    log_int(&l, "queuedBytes", (int64_t)c->wq_bytes);
    log_int(&l, "frames", (int64_t)c->wq_count);
    log_int(&l, "stuckMs", c->backlog_since_ms ? (int64_t)(now - c->backlog_since_ms) : 0);
    if (frame_len) log_int(&l, "frameBytes", (int64_t)frame_len);
    log_end(&l);
    wq_drop_unsent(c);
    conn_close(c, WS_CLOSE_POLICY, "slow consumer: send queue not drained");
}

/* True when a backlogged queue has outlived slow_consumer_timeout_ms. */
static bool backlog_expired(const conn *c, uint64_t now) {
    return c->backlog_since_ms &&
           now - c->backlog_since_ms >= (uint64_t)c->srv->cfg->slow_consumer_timeout_ms;
}

int conn_send(conn *c, ws_frame *f) {
    /* Other threads reach c through its worker's inbox, by id. */
    assert(server_owns(c));
    if (c->state != CONN_OPEN || c->close_sent) return -1;
    /* With permessage-deflate, the frame's compressed form: made once per
     * broadcast and parameter set, whichever member needs it first. */
    f = c->deflate ? ws_frame_deflated(f, &c->deflate_params) : ws_frame_ref(f);
    size_t limit = (size_t)c->srv->cfg->max_queued_bytes;
    /* Frames queued in this loop turn (a batch of broadcasts) have not been
     * offered to the kernel yet: count only what the kernel will not take. */
    if (c->wq_bytes + f->len > limit) wq_try_push(c);
    /* Bug fix (issue 18): the limit used to be checked against the queue
     * plus the new frame, so one frame bigger than the limit cut even a
     * fast reader with an empty queue. What judges a consumer is what it
     * leaves queued: any frame is taken while the queue is within the
     * limit; beyond it, only until the deadline or the ceiling. */
    if (c->wq_bytes > limit) {
        const char *why = c->wq_bytes + f->len > limit * CONN_QUEUE_CEILING ? "queue ceiling"
                          : backlog_expired(c, uv_now(c->srv->loop))        ? "not drained"
                                                                            : NULL;
        if (why) {
            slow_consumer(c, why, f->len);
            ws_frame_unref(f);
            return -1;
        }
    }
    enqueue(c, f);
    return 0;
}

int conn_send_data(conn *c, uint8_t opcode, const void *payload, size_t len) {
    ws_frame *f = ws_frame_new(opcode, payload, len);
    int r = conn_send(c, f);
    ws_frame_unref(f);
    return r;
}

/* libuv's write and shutdown requests (272 bytes together) are allocated
 * only while one is in flight, not kept in every idle connection: most
 * writes complete in uv_try_write and need none. */
static void *request_new(size_t size, conn *c) {
    uv_req_t *r = xmalloc(size);
    r->data = c;
    return r;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    conn *c = req->data;
    free(req);
    conn_abort(c);
}

static void start_shutdown(conn *c) {
    if (c->state == CONN_CLOSED) return;
    uv_shutdown_t *req = request_new(sizeof(*req), c);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_abort(c);
        return;
    }
    /* Stop reading: nothing more from the peer matters now. */
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->close_after_flush = false;
    c->state = CONN_CLOSING;
    c->close_deadline_ms = uv_now(c->srv->loop) + CONN_CLOSE_WAIT_MS;
}

static void on_write(uv_write_t *req, int status) {
    conn *c = req->data;
    free(req);
    uint32_t n = c->writing;
    c->writing = 0;
    if (status < 0) {
        /* Cancelled by close or failed: the frames are released with the
         * queue when the connection is freed. */
        conn_abort(c);
        return;
    }
    for (uint32_t i = 0; i < n; i++) wq_pop(c);
    if (c->state == CONN_CLOSED) return;
    if (c->wq_count > 0) {
        if (!c->dirty) server_mark_dirty(c->srv, c);
    } else if (c->close_after_flush) {
        start_shutdown(c);
    }
}

/* ---- TLS write path: the queue holds plaintext frames (still shared by
 * reference); they are encrypted into the engine and the ciphertext is
 * written from a buffer of its own. ---- */

static void tls_flush(conn *c);

static void on_tls_write(uv_write_t *req, int status) {
    conn *c = req->data;
    free(req);
    ws_frame_unref(c->tls_inflight);
    c->tls_inflight = NULL;
    c->writing = 0;
    if (status < 0) {
        conn_abort(c);
        return;
    }
    if (c->state != CONN_CLOSED) tls_flush(c);
}

static void tls_flush(conn *c) {
    if (c->state == CONN_CLOSED || c->writing) return;
    while (c->wq_count > 0) {
        ws_frame *f = wq_at(c, 0);
        int n = tls_conn_write(c->tls, f->data + c->wq_head_off, f->len - c->wq_head_off);
        if (n < 0) {
            conn_abort(c);
            return;
        }
        if (n == 0) break; /* handshake still running */
        wq_advance(c, (size_t)n);
    }
    if (c->wq_count == 0 && c->close_after_flush && !c->tls_shutdown_sent) {
        tls_conn_shutdown(c->tls);
        c->tls_shutdown_sent = true;
    }
    size_t pending = tls_conn_pending_output(c->tls);
    if (pending > 0) {
        ws_frame *out = ws_frame_raw(NULL, pending);
        out->len = (uint32_t)tls_conn_take_output(c->tls, out->data, pending);
        uv_buf_t b = uv_buf_init((char *)out->data, out->len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
            ws_frame_unref(out);
            conn_abort(c);
            return;
        }
        size_t done = r > 0 ? (size_t)r : 0;
        if (done < out->len) {
            b = uv_buf_init((char *)out->data + done, out->len - (uint32_t)done);
            c->tls_inflight = out;
            uv_write_t *req = request_new(sizeof(*req), c);
            if (uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, on_tls_write) != 0) {
                free(req);
                conn_abort(c);
                return;
            }
            c->writing = 1;
            return;
        }
        ws_frame_unref(out);
    }
    if (c->wq_count == 0 && c->close_after_flush) start_shutdown(c);
}

void conn_flush(conn *c) {
    assert(server_owns(c));
    if (c->state == CONN_CLOSED || c->writing) return;
    if (c->tls) {
        tls_flush(c);
        return;
    }
    uv_buf_t bufs[CONN_IOV_MAX];
    while (c->wq_count > 0) {
        uint32_t n = wq_gather(c, bufs, CONN_IOV_MAX);
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r == UV_EAGAIN || r == UV_ENOSYS) break;
        if (r < 0) {
            conn_abort(c);
            return;
        }
        size_t want = 0;
        for (uint32_t i = 0; i < n; i++) want += bufs[i].len;
        wq_advance(c, (size_t)r);
        if ((size_t)r < want) break; /* the kernel buffer is full */
    }
    if (c->wq_count > 0) {
        /* Hand the rest to libuv: it writes when the socket is writable. */
        uint32_t n = wq_gather(c, bufs, CONN_IOV_MAX);
        uv_write_t *req = request_new(sizeof(*req), c);
        if (uv_write(req, (uv_stream_t *)&c->tcp, bufs, n, on_write) != 0) {
            free(req);
            conn_abort(c);
            return;
        }
        c->writing = n;
        return;
    }
    if (c->close_after_flush) start_shutdown(c);
}

/* ---- closing ---- */

void conn_abort(conn *c) {
    assert(server_owns(c));
    if (c->state == CONN_CLOSED) return;
    c->state = CONN_CLOSED;
    if (c->auth_pending) {
        c->auth_pending = false;
        if (c->srv->handlers->on_auth_abandoned) c->srv->handlers->on_auth_abandoned(c);
    }
    if (c->opened) {
        c->opened = false;
        c->srv->nopen--;
        server_open_add(-1);
        if (c->srv->handlers->on_close) c->srv->handlers->on_close(c);
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_closed(uv_handle_t *h) {
    conn *c = h->data;
    server_conn_freed(c->srv, c);
    wq_clear(c);
    if (c->req) {
        http_request_free(c->req);
        free(c->req);
        c->req = NULL;
    }
    pending_update(c);
    if (c->addr_counted) server_addr_release(c->source_ip);
    if (c->parser) ws_parser_free(c->parser);
    free(c->user_agent);
    free(c->subprotocol);
    free(c->early_bytes);
    if (c->tls_inflight) ws_frame_unref(c->tls_inflight);
    tls_conn_free(c->tls);
    free(c);
}

void conn_close(conn *c, uint16_t code, const char *reason) {
    assert(server_owns(c));
    if (c->state == CONN_CLOSED) return;
    if (c->state == CONN_HTTP) {
        conn_abort(c);
        return;
    }
    if (c->close_sent) return;
    c->close_sent = true;
    c->state = CONN_CLOSING;
    c->close_deadline_ms = uv_now(c->srv->loop) + CONN_CLOSE_WAIT_MS;
    enqueue(c, ws_frame_close(code, reason));
}

/* Fail the WebSocket connection (RFC 6455 7.1.7): send a close frame and
 * end TCP as soon as it is written, without waiting for an answer. */
static void conn_fail(conn *c, uint16_t code, const char *reason) {
    if (!c->close_sent) {
        c->close_sent = true;
        enqueue(c, ws_frame_close(code, reason));
    }
    c->state = CONN_CLOSING;
    c->close_after_flush = true;
    c->close_deadline_ms = uv_now(c->srv->loop) + CONN_CLOSE_WAIT_MS;
}

void conn_http_respond(conn *c, const char *data, size_t len, bool keep_alive) {
    if (c->state == CONN_CLOSED) return;
    enqueue(c, ws_frame_raw(data, len));
    if (!keep_alive) {
        c->close_after_flush = true;
        c->state = CONN_CLOSING;
        c->close_deadline_ms = uv_now(c->srv->loop) + CONN_CLOSE_WAIT_MS;
    } else {
        c->http_keep_alive = true;
    }
}

/* End a plain-HTTP connection once what is queued is written. */
static void http_end(conn *c) {
    if (c->state == CONN_CLOSED) return;
    c->close_after_flush = true;
    c->http_keep_alive = false;
    c->state = CONN_CLOSING;
    c->close_deadline_ms = uv_now(c->srv->loop) + CONN_CLOSE_WAIT_MS;
    if (!c->dirty) server_mark_dirty(c->srv, c);
}

static void http_error(conn *c, int status, const char *extra, const char *msg) {
    size_t len;
    char *resp = http_response_json_message(status, extra, msg, &len);
    conn_http_respond(c, resp, len, false);
    free(resp);
}

/* ---- reading ---- */

/* Count one control frame from the peer; true (and the connection is
 * failed with 1008) when it sends more than max_control_frames_per_s in a
 * second: a ping flood costs us a pong each. */
static bool control_flood(conn *c) {
    int64_t limit = c->srv->cfg->max_control_frames_per_s;
    if (limit <= 0) return false;
    uint64_t now = uv_now(c->srv->loop);
    if (now - c->control_window_ms >= 1000) {
        c->control_window_ms = now;
        c->control_frames = 0;
    }
    if (++c->control_frames <= (uint32_t)limit) return false;
    log_line l;
    log_begin(&l, LOG_INFO, "control_flood");
    log_str(&l, "connectionId", c->id);
    log_str(&l, "identity.sourceIp", c->source_ip);
    log_end(&l);
    conn_fail(c, WS_CLOSE_POLICY, "too many control frames");
    return true;
}

/* A new frame parser with the server's limits: a message that arrives in
 * fragments is buffered and may hold no more than max_fragmented_bytes (nor
 * max_message_size). */
static ws_parser *parser_new(const conn *c) {
    const config *cfg = c->srv->cfg;
    size_t max_message = (size_t)cfg->max_message_size;
    if (cfg->max_fragmented_bytes > 0 && (size_t)cfg->max_fragmented_bytes < max_message)
        max_message = (size_t)cfg->max_fragmented_bytes;
    ws_parser *p = ws_parser_new((size_t)cfg->max_frame_size, max_message);
    /* The limits above then hold for the inflated message. */
    if (c->deflate) ws_parser_enable_deflate(p, &c->deflate_params);
    return p;
}

static void handle_ws_bytes(conn *c, uint8_t *data, size_t len) {
    /* The sweep drops the parser of an idle connection between frames. */
    if (!c->parser) c->parser = parser_new(c);
    size_t off = 0;
    while (off < len && c->state != CONN_CLOSED && !(c->close_after_flush)) {
        ws_event ev;
        ssize_t n = ws_parser_feed(c->parser, data + off, len - off, &ev);
        if (n < 0) {
            log_line l;
            log_begin(&l, LOG_INFO, "protocol_error");
            log_str(&l, "connectionId", c->id);
            log_str(&l, "error", ws_strerror((int)n));
            log_end(&l);
            conn_fail(c, ws_error_close_code((int)n), ws_strerror((int)n));
            return;
        }
        off += (size_t)n;
        switch (ev.type) {
        case WS_EV_NONE: break;
        case WS_EV_MESSAGE:
            if (c->close_sent) break; /* closing: data is discarded */
            c->last_active_ms = uv_now(c->srv->loop);
            __atomic_store_n(&c->last_active_at, (int64_t)time(NULL), __ATOMIC_RELAXED);
            if (c->srv->handlers->on_message)
                c->srv->handlers->on_message(c, ev.opcode, ev.data, ev.len);
            break;
        case WS_EV_PING:
            c->last_active_ms = uv_now(c->srv->loop);
            if (control_flood(c)) return;
            if (!c->close_sent) enqueue(c, ws_frame_new(WS_OP_PONG, ev.data, ev.len));
            break;
        case WS_EV_PONG:
            if (control_flood(c)) return;
            break;
        case WS_EV_CLOSE:
            c->peer_close_code = ev.close_code;
            if (!c->close_sent) {
                /* Echo the peer's code (RFC 6455 5.5.1), then end TCP. */
                c->close_sent = true;
                if (ev.close_code == WS_CLOSE_NO_STATUS) enqueue(c, ws_frame_close(0, NULL));
                else enqueue(c, ws_frame_close(ev.close_code, NULL));
            }
            c->state = CONN_CLOSING;
            c->close_after_flush = true;
            if (!c->dirty) server_mark_dirty(c->srv, c);
            return;
        }
    }
}

static void upgrade_accept(conn *c, const char *accept, const char *rest, size_t rest_len);

static void upgrade(conn *c, const char *rest, size_t rest_len) {
    server *srv = c->srv;
    http_request *req = c->req;
    ws_handshake_result hs;
    if (ws_handshake_check(req, srv->stage_path, &hs) != 101) {
        http_error(c, hs.status, hs.extra_headers, hs.message);
        return;
    }
    if (srv->shutting_down) {
        http_error(c, 503, NULL, "Server shutting down");
        return;
    }
    /* max_connections is for the process, whichever worker accepted. */
    if (server_open_total() >= srv->cfg->max_connections) {
        http_error(c, 503, NULL, "Too many connections");
        return;
    }
    /* Known before the authorizer runs, so refused connects are logged
     * with it too. */
    size_t ualen;
    const char *ua = http_request_header(req, "User-Agent", &ualen);
    if (ua) {
        c->user_agent = xstrndup(ua, ualen);
        /* It is echoed in JSON (logs, the management API), which must be
         * UTF-8: a header that is not keeps its ASCII and gets '?' for the
         * rest. */
        if (!ws_utf8_valid((const uint8_t *)c->user_agent, ualen))
            for (char *p = c->user_agent; *p; p++)
                if ((unsigned char)*p >= 0x80) *p = '?';
    }

    const char *msg = NULL;
    if (srv->handlers->authorize) {
        int st = srv->handlers->authorize(c, req, &msg);
        if (st == SERVER_AUTH_PENDING) {
            /* The answer comes later (server_authorize_done); whatever the
             * client pipelined waits with the request. */
            c->auth_pending = true;
            if (rest_len) {
                c->early_bytes = xmalloc(rest_len);
                memcpy(c->early_bytes, rest, rest_len);
                c->early_len = rest_len;
                pending_update(c);
            }
            return;
        }
        if (st != 0) {
            http_error(c, st, NULL, msg ? msg : http_status_text(st));
            return;
        }
    }
    upgrade_accept(c, hs.accept, rest, rest_len);
}

/* Bytes a client may send between its request and a pending 101. */
#define CONN_EARLY_MAX (64 * 1024)

void server_authorize_done(conn *c, int status, const char *message) {
    assert(server_owns(c));
    if (!c->auth_pending || c->state != CONN_HTTP) return;
    c->auth_pending = false;
    if (status != 0) {
        http_error(c, status, NULL, message ? message : http_status_text(status));
        return;
    }
    /* The request passed this check before it waited. */
    ws_handshake_result hs;
    ws_handshake_check(c->req, c->srv->stage_path, &hs);
    uint8_t *early = c->early_bytes;
    size_t early_len = c->early_len;
    c->early_bytes = NULL;
    c->early_len = 0; /* upgrade_accept's pending_update forgets them */
    upgrade_accept(c, hs.accept, (const char *)early, early_len);
    free(early);
}

/* The 101 and the connection's opening, once authorize accepted. */
static void upgrade_accept(conn *c, const char *accept, const char *rest, size_t rest_len) {
    server *srv = c->srv;
    http_request *req = c->req;
    char extensions[WS_DEFLATE_RESPONSE_MAX];
    c->deflate = ws_handshake_deflate(req, &srv->deflate, &c->deflate_params, extensions);
    size_t rlen;
    char *resp =
        ws_handshake_response_ext(accept, c->subprotocol, c->deflate ? extensions : NULL, &rlen);
    enqueue(c, ws_frame_raw(resp, rlen));
    free(resp);

    c->state = CONN_OPEN;
    c->upgraded = true;
    c->parser = parser_new(c);
    c->opened_ms = uv_now(srv->loop);
    c->last_active_ms = c->opened_ms;
    c->last_ping_ms = c->opened_ms;
    c->connected_at = time(NULL);
    c->last_active_at = c->connected_at;
    c->opened = true;
    srv->nopen++;
    server_open_add(1);
    if (srv->handlers->on_open) srv->handlers->on_open(c, req);

    http_request_free(req);
    free(req);
    c->req = NULL;
    pending_update(c);

    /* Bytes pipelined after the request head are the first frames. The
     * shared read buffer is still ours: copy them out of it first only if
     * they live there (they always do). */
    if (rest_len > 0 && c->state == CONN_OPEN) handle_ws_bytes(c, (uint8_t *)rest, rest_len);
}

static void handle_http_bytes(conn *c, char *data, size_t len) {
    if (c->auth_pending) {
        /* Frames sent before the 101: kept for after it, within a bound. */
        if (c->early_len + len > CONN_EARLY_MAX) {
            conn_abort(c);
            return;
        }
        c->early_bytes = xrealloc(c->early_bytes, c->early_len + len);
        memcpy(c->early_bytes + c->early_len, data, len);
        c->early_len += len;
        /* They count against max_pending_http_bytes like the request. */
        if (pending_update(c) > 0 &&
            server_pending_http_bytes() > (size_t)c->srv->cfg->max_pending_http_bytes)
            conn_abort(c);
        return;
    }
    /* Plain HTTP requests (management API, metrics) may come several on one
     * keep-alive connection; a WebSocket upgrade ends the loop. */
    for (;;) {
        ssize_t n = http_request_feed(c->req, data, len);
        if (n < 0) {
            if (c->http_answered || c->state != CONN_HTTP) {
                /* on_http_head answered: the body stays unread, so the
                 * connection cannot carry another request. */
                http_end(c);
                return;
            }
            int st = c->req->error_status ? c->req->error_status : 400;
            if (st == 429 && c->srv->handlers->on_refused) c->srv->handlers->on_refused(c, st);
            http_error(c, st, st == 413 ? "x-amzn-ErrorType: PayloadTooLargeException\r\n" : NULL,
                       st == 431   ? "Request header fields too large"
                       : st == 413 ? "Payload too large"
                       : st == 400 ? "Bad request"
                       : st == 429 ? "Too Many Requests"
                                   : http_status_text(st));
            return;
        }
        /* The bytes held by requests that have not upgraded are bounded
         * for the whole process: the request that grows them past the
         * budget is refused (and its memory released at once). */
        if (pending_update(c) > 0 &&
            server_pending_http_bytes() > (size_t)c->srv->cfg->max_pending_http_bytes) {
            log_line l;
            log_begin(&l, LOG_INFO, "pending_http_limit");
            log_str(&l, "identity.sourceIp", c->source_ip);
            log_int(&l, "pendingBytes", (int64_t)server_pending_http_bytes());
            log_end(&l);
            http_error(c, 503, "Retry-After: 1\r\n", "Server busy");
            http_request_free(c->req);
            free(c->req);
            c->req = NULL;
            pending_update(c);
            return;
        }
        if (!c->req->complete) return;
        size_t plen;
        const char *path = http_request_path(c->req, &plen);
        bool is_stage =
            plen == strlen(c->srv->stage_path) && memcmp(path, c->srv->stage_path, plen) == 0;
        if (is_stage || c->req->upgrade) {
            upgrade(c, data + n, len - (size_t)n);
            return;
        }
        c->http_keep_alive = false;
        if (!c->srv->handlers->on_http || !c->srv->handlers->on_http(c, c->req)) {
            http_error(c, 404, NULL, "Not Found");
            return;
        }
        if (!c->http_keep_alive || c->state != CONN_HTTP) return;
        /* Ready for the next request; the handshake deadline now bounds how
         * long an idle keep-alive connection is kept. */
        http_request_free(c->req);
        request_init(c);
        c->created_ms = uv_now(c->srv->loop);
        data += n;
        len -= (size_t)n;
        if (len == 0) return;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    conn *c = s->data;
    if (nread < 0) {
        conn_abort(c);
        return;
    }
    if (nread == 0 || c->state == CONN_CLOSED) return;
    c->awaiting_pong = false;
    if (c->tls) {
        tls_conn_feed(c->tls, buf->base, (size_t)nread);
        for (;;) {
            const char *reason = NULL;
            int n = tls_conn_read(c->tls, c->srv->tls_plain, sizeof(c->srv->tls_plain), &reason);
            if (n == 0) break;
            if (n < 0) {
                log_line l;
                log_begin(&l, LOG_INFO, "tls_error");
                log_str(&l, "connectionId", c->id);
                log_str(&l, "identity.sourceIp", c->source_ip);
                log_str(&l, "error", reason);
                log_end(&l);
                conn_abort(c);
                return;
            }
            if (c->state == CONN_HTTP) handle_http_bytes(c, (char *)c->srv->tls_plain, (size_t)n);
            else if (c->upgraded) handle_ws_bytes(c, c->srv->tls_plain, (size_t)n);
            if (c->state == CONN_CLOSED) return;
        }
        /* Handshake records (or a close_notify) may be waiting. */
        if (tls_conn_pending_output(c->tls) && !c->dirty) server_mark_dirty(c->srv, c);
        return;
    }
    if (c->state == CONN_HTTP) {
        handle_http_bytes(c, buf->base, (size_t)nread);
    } else if (c->upgraded) {
        handle_ws_bytes(c, (uint8_t *)buf->base, (size_t)nread);
    }
}

/* ---- timers ---- */

unsigned conn_sweep(conn *c, uint64_t now) {
    unsigned released = 0;
    const config *cfg = c->srv->cfg;
    switch (c->state) {
    case CONN_HTTP:
        /* A pending authorization is bounded by its integration's timeout. */
        if (c->auth_pending) return released;
        /* Bug fix: 0 means no limit, it used to abort at the first sweep. */
        if (cfg->handshake_timeout_ms > 0 &&
            now - c->created_ms >= (uint64_t)cfg->handshake_timeout_ms)
            conn_abort(c);
        return released;
    case CONN_CLOSING:
        if (now >= c->close_deadline_ms) conn_abort(c);
        return released;
    case CONN_CLOSED: return released;
    case CONN_OPEN: break;
    }
    if (backlog_expired(c, now)) {
        /* Nothing more may be sent to it, but what it has not read for so
         * long is still held: a reader that stopped is cut here. */
        slow_consumer(c, "not drained", 0);
        return released;
    }
    if (c->wq_count == 0 && c->wq && !c->writing) {
        /* An empty queue keeps no ring between sweeps: idle connections
         * hold no write memory, busy ones reallocate it at most once per
         * sweep. */
        free(c->wq);
        c->wq = NULL;
        c->wq_cap = 0;
        c->wq_head = 0;
        released++;
    }
    if (c->parser && ws_parser_idle(c->parser)) {
        /* Between frames: an idle connection keeps no parser at all. */
        ws_parser_free(c->parser);
        c->parser = NULL;
        released++;
    } else if (c->parser) {
        ws_parser_trim(c->parser);
    }
    if (cfg->idle_timeout_s > 0 &&
        now - c->last_active_ms >= (uint64_t)cfg->idle_timeout_s * 1000) {
        conn_close(c, WS_CLOSE_POLICY, "idle timeout");
        return released;
    }
    if (cfg->max_connection_duration_s > 0 &&
        now - c->opened_ms >= (uint64_t)cfg->max_connection_duration_s * 1000) {
        conn_close(c, WS_CLOSE_GOING_AWAY, "maximum connection duration reached");
        return released;
    }
    if (cfg->ping_interval_s > 0) {
        /* Bug fix: pong_timeout_s 0 means never, it used to close at the
         * first sweep after a ping; pings go on without waiting for pongs. */
        if (cfg->pong_timeout_s > 0 && c->awaiting_pong &&
            now - c->last_ping_ms >= (uint64_t)cfg->pong_timeout_s * 1000) {
            conn_close(c, WS_CLOSE_POLICY, "pong timeout");
            return released;
        }
        if ((!c->awaiting_pong || cfg->pong_timeout_s == 0) &&
            now - c->last_ping_ms >= (uint64_t)cfg->ping_interval_s * 1000) {
            c->awaiting_pong = true;
            c->last_ping_ms = now;
            enqueue(c, ws_frame_new(WS_OP_PING, NULL, 0));
        }
    }
    return released;
}
