#include "net/conn.h"

#include <assert.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/random.h"
#include "http/handshake.h"
#include "log/log.h"
#include "net/conn_internal.h"
#include "net/msg_budget.h"
#include "net/server.h"

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_closed(uv_handle_t *h);

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
    if (!id || strlen(id) != CONN_ID_LEN) return WSG_E_INVAL;
    const char *p = strchr(id_alphabet, id[0]);
    return p && *p ? (int)(p - id_alphabet) : WSG_E_INVAL;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    conn *c = h->data;
    buf->base = (char *)c->srv->read_buf;
    buf->len = sizeof(c->srv->read_buf);
}

static void on_unaccepted_closed(uv_handle_t *h) {
    conn *c = h->data;
    slab_free(&c->srv->conn_slab, c);
}

conn *conn_accept(server *srv) {
    conn *c = slab_alloc(&srv->conn_slab);
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_unaccepted_closed);
        return NULL;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (srv->tls) c->tls = tls_conn_new(srv->tls);
    c->state = CONN_HTTP;
    c->created_ms = uv_now(srv->loop);
    c->last_active_ms = (uint32_t)c->created_ms;
    make_id(c->id, srv->worker_index);

    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    strcpy(ip, "unknown");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) ipv4_text(&((struct sockaddr_in *)&ss)->sin_addr, ip);
        else if (ss.ss_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
    }
    c->source_ip = conn_addr_intern(ip);

    const config *cfg = srv->cfg;
    conn_request_new(c);

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

/* ---- closing ---- */

void conn_abort(conn *c) {
    assert(server_owns(c));
    if (c->state == CONN_CLOSED) return;
    c->state = CONN_CLOSED;
    if (c->auth_pending) {
        c->auth_pending = false;
        if (c->srv->handlers->on_auth_abandoned) c->srv->handlers->on_auth_abandoned(c);
    }
    if (c->http_deferred) {
        c->http_deferred = false;
        if (c->srv->handlers->on_http_abandoned) c->srv->handlers->on_http_abandoned(c);
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
    conn_wq_clear(c);
    conn_request_drop(c);
    if (c->addr_counted) server_addr_release(c->source_ip);
    if (c->parser) ws_parser_free(c->parser);
    msgbudget_set(&c->partial_held, 0, 0);
    free(c->user_agent);
    free(c->subprotocol);
    if (c->tls && *tls_conn_inflight(c->tls)) ws_frame_unref(*tls_conn_inflight(c->tls));
    tls_conn_free(c->tls);
    conn_addr_release(c->source_ip);
    slab_free(&c->srv->conn_slab, c);
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
    conn_enqueue(c, ws_frame_close(code, reason));
}

/* Fail the WebSocket connection (RFC 6455 7.1.7): send a close frame and
 * end TCP as soon as it is written, without waiting for an answer. */
static void conn_fail(conn *c, uint16_t code, const char *reason) {
    if (!c->close_sent) {
        c->close_sent = true;
        conn_enqueue(c, ws_frame_close(code, reason));
    }
    c->state = CONN_CLOSING;
    c->close_after_flush = true;
    c->close_deadline_ms = uv_now(c->srv->loop) + CONN_CLOSE_WAIT_MS;
}

/* ---- reading ---- */

/* Count one control frame from the peer; true (and the connection is
 * failed with 1008) when it sends more than max_control_frames_per_s in a
 * second: a ping flood costs us a pong each. */
static bool control_flood(conn *c) {
    int64_t limit = c->srv->cfg->max_control_frames_per_s;
    if (limit <= 0) return false;
    uint32_t now = (uint32_t)uv_now(c->srv->loop);
    if ((uint32_t)(now - c->control_window_ms) >= 1000) {
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
ws_parser *conn_parser_new(const conn *c) {
    const config *cfg = c->srv->cfg;
    size_t max_message = (size_t)cfg->max_message_size;
    if (cfg->max_fragmented_bytes > 0 && (size_t)cfg->max_fragmented_bytes < max_message)
        max_message = (size_t)cfg->max_fragmented_bytes;
    ws_parser *p = ws_parser_new((size_t)cfg->max_frame_size, max_message);
    /* The limits above then hold for the inflated message. */
    if (c->deflate) ws_parser_enable_deflate(p, &c->deflate_params);
    return p;
}

/* Every connection's unfinished messages together hold
 * max_partial_message_bytes and c's grew: refuse it with 1013 (the message
 * is within the limits and may be sent again later; 1009 would tell the
 * client it is too big) and release its buffer now, not at close. */
static void conn_partial_refused(conn *c) {
    log_line l;
    log_begin(&l, LOG_INFO, "partial_message_limit");
    log_str(&l, "connectionId", c->id);
    log_str(&l, "identity.sourceIp", c->source_ip);
    log_int(&l, "partialBytes", (int64_t)msgbudget_total());
    log_end(&l);
    ws_parser_free(c->parser);
    c->parser = NULL;
    msgbudget_set(&c->partial_held, 0, 0);
    conn_fail(c, WS_CLOSE_TRY_AGAIN_LATER, "server busy");
}

void conn_handle_ws_bytes(conn *c, uint8_t *data, size_t len) {
    /* The sweep drops the parser of an idle connection between frames. */
    if (!c->parser) c->parser = conn_parser_new(c);
    size_t off = 0;
    while (off < len && c->state != CONN_CLOSED && !(c->close_after_flush)) {
        ws_event ev;
        ssize_t n = ws_parser_feed(c->parser, data + off, len - off, &ev);
        if (n < 0) {
            log_line l;
            log_begin(&l, LOG_INFO, "protocol_error");
            log_str(&l, "connectionId", c->id);
            log_str(&l, "error", wsg_strerror((int)n));
            log_end(&l);
            uint16_t cc = wsg_err_close_code((int)n);
            conn_fail(c, cc ? cc : WS_CLOSE_PROTOCOL_ERROR, wsg_strerror((int)n));
            return;
        }
        off += (size_t)n;
        if (msgbudget_set(&c->partial_held, ws_parser_partial_bytes(c->parser),
                          c->srv->cfg->max_partial_message_bytes)) {
            conn_partial_refused(c);
            return;
        }
        switch (ev.type) {
        case WS_EV_NONE: break;
        case WS_EV_MESSAGE:
            if (c->close_sent) break; /* closing: data is discarded */
            c->last_active_ms = (uint32_t)uv_now(c->srv->loop);
            __atomic_store_n(&c->last_active_at, (uint32_t)time(NULL), __ATOMIC_RELAXED);
            if (c->srv->handlers->on_message)
                c->srv->handlers->on_message(c, ev.opcode, ev.data, ev.len);
            break;
        case WS_EV_PING:
            c->last_active_ms = (uint32_t)uv_now(c->srv->loop);
            if (control_flood(c)) return;
            if (!c->close_sent) {
                /* Under the send rule like any frame: with the control
                 * limit off, a client pinging without reading had its
                 * pongs queued past the ceiling (875 MB for one). */
                ws_frame *pong = ws_frame_new(WS_OP_PONG, ev.data, ev.len);
                int rc = conn_send(c, pong);
                ws_frame_unref(pong);
                if (rc == WSG_E_NET_SLOW_CONSUMER) return;
            }
            break;
        case WS_EV_PONG:
            if (control_flood(c)) return;
            break;
        case WS_EV_CLOSE:
            c->peer_close_code = ev.close_code;
            if (!c->close_sent) {
                /* Echo the peer's code (RFC 6455 5.5.1), then end TCP. */
                c->close_sent = true;
                if (ev.close_code == WS_CLOSE_NO_STATUS) conn_enqueue(c, ws_frame_close(0, NULL));
                else conn_enqueue(c, ws_frame_close(ev.close_code, NULL));
            }
            c->state = CONN_CLOSING;
            c->close_after_flush = true;
            if (!c->dirty) server_mark_dirty(c->srv, c);
            return;
        }
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
            int n = tls_conn_read(c->tls, c->srv->tls_plain, sizeof(c->srv->tls_plain));
            if (n == 0) break;
            if (n < 0) {
                log_line l;
                log_begin(&l, LOG_INFO, "tls_error");
                log_str(&l, "connectionId", c->id);
                log_str(&l, "identity.sourceIp", c->source_ip);
                log_str(&l, "error", wsg_strerror(n));
                log_end(&l);
                conn_abort(c);
                return;
            }
            if (c->state == CONN_HTTP)
                conn_handle_http_bytes(c, (char *)c->srv->tls_plain, (size_t)n);
            else if (c->upgraded) conn_handle_ws_bytes(c, c->srv->tls_plain, (size_t)n);
            if (c->state == CONN_CLOSED) return;
        }
        /* Handshake records (or a close_notify) may be waiting. */
        if (tls_conn_pending_output(c->tls) && !c->dirty) server_mark_dirty(c->srv, c);
        return;
    }
    if (c->state == CONN_HTTP) {
        conn_handle_http_bytes(c, buf->base, (size_t)nread);
    } else if (c->upgraded) {
        conn_handle_ws_bytes(c, (uint8_t *)buf->base, (size_t)nread);
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
        /* So is a deferred answer, by the application's own bound. */
        if (c->http_deferred) return released;
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
    if (conn_backlog_expired(c, now)) {
        /* Nothing more may be sent to it, but what it has not read for so
         * long is still held: a reader that stopped is cut here. */
        conn_slow_consumer(c, "not drained", 0);
        return released;
    }
    /* An empty queue keeps no ring between sweeps: idle connections hold
     * no write memory, busy ones reallocate it at most once per sweep. */
    if (conn_wq_release_idle(c)) released++;
    if (c->parser && ws_parser_idle(c->parser)) {
        /* Between frames: an idle connection keeps no parser at all. */
        ws_parser_free(c->parser);
        c->parser = NULL;
        released++;
    } else if (c->parser) {
        ws_parser_trim(c->parser);
    }
    if (cfg->idle_timeout_s > 0 &&
        (uint32_t)((uint32_t)now - c->last_active_ms) >= (uint64_t)cfg->idle_timeout_s * 1000) {
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
            (uint32_t)((uint32_t)now - c->last_ping_ms) >= (uint64_t)cfg->pong_timeout_s * 1000) {
            conn_close(c, WS_CLOSE_POLICY, "pong timeout");
            return released;
        }
        if ((!c->awaiting_pong || cfg->pong_timeout_s == 0) &&
            (uint32_t)((uint32_t)now - c->last_ping_ms) >= (uint64_t)cfg->ping_interval_s * 1000) {
            c->awaiting_pong = true;
            c->last_ping_ms = (uint32_t)now;
            conn_enqueue(c, ws_frame_new(WS_OP_PING, NULL, 0));
        }
    }
    return released;
}
