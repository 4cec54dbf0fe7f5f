/* A connection before it is a WebSocket: its request head under a budget,
 * plain HTTP answers, the RFC 6455 handshake and the 101, including an
 * upgrade the application authorizes later (server_authorize_done). */
#include "net/conn.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "http/handshake.h"
#include "log/log.h"
#include "net/conn_internal.h"
#include "net/server.h"

/* ---- requests before the upgrade ---- */

static long on_http_head(http_request *r, void *ctx);

/* Largest plain-HTTP request body a route may take: API Gateway's 128 KB
 * message limit, for POST @connections. */
#define CONN_MAX_HTTP_BODY (128 * 1024)

/* Bring c's share of server_pending_http_bytes up to date: the connection
 * itself and what its request holds (0 once it has none). Returns how much
 * it grew. */
ssize_t conn_pending_update(conn *c) {
    if (!c->req) return 0;
    conn_http *h = conn_http_of(c);
    size_t held = sizeof(*c) + sizeof(*h) + http_request_held(&h->req) + h->early_len;
    ssize_t delta = (ssize_t)held - (ssize_t)h->held;
    if (delta) server_pending_http_add(delta);
    h->held = held;
    return delta;
}

void conn_request_new(conn *c) {
    c->req = &((conn_http *)xcalloc(1, sizeof(conn_http)))->req;
    conn_request_init(c);
}

void conn_request_drop(conn *c) {
    if (!c->req) return;
    conn_http *h = conn_http_of(c);
    if (h->held) server_pending_http_add(-(ssize_t)h->held);
    free(h->early_bytes);
    http_request_free(&h->req);
    free(h);
    c->req = NULL;
}

/* (Re)start c's request, routed on its head before any body is read. */
void conn_request_init(conn *c) {
    const config *cfg = c->srv->cfg;
    http_request_init(c->req, (size_t)cfg->max_header_bytes, (size_t)cfg->max_headers,
                      CONN_MAX_HTTP_BODY);
    c->req->on_head = on_http_head;
    c->req->on_head_ctx = c;
    conn_pending_update(c);
}

/* The request head is parsed: decide how much body, if any, is read. */
static long on_http_head(http_request *r, void *ctx) {
    conn *c = ctx;
    if (c->over_addr_limit) return WSG_E_HTTP_TOO_MANY;
    size_t plen;
    const char *path = http_request_path(r, &plen);
    bool is_stage =
        plen == strlen(c->srv->stage_path) && memcmp(path, c->srv->stage_path, plen) == 0;
    /* A handshake carries no body. */
    if (is_stage || r->parser.upgrade) return 0;
    if (!c->srv->handlers->on_http_head) return http_request_has_body(r) ? WSG_E_HTTP_NOT_FOUND : 0;
    long v = c->srv->handlers->on_http_head(c, r);
    if (v == SERVER_HTTP_ANSWERED) c->http_answered = true; /* stops the parser */
    if (v > CONN_MAX_HTTP_BODY) v = CONN_MAX_HTTP_BODY;
    return v;
}

void conn_http_respond(conn *c, const char *data, size_t len, bool keep_alive) {
    if (c->state == CONN_CLOSED) return;
    conn_enqueue(c, ws_frame_raw(data, len));
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
                conn_http *h = conn_http_of(c);
                h->early_bytes = xmalloc(rest_len);
                memcpy(h->early_bytes, rest, rest_len);
                h->early_len = rest_len;
                conn_pending_update(c);
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
    conn_http *h = conn_http_of(c);
    uint8_t *early = h->early_bytes;
    size_t early_len = h->early_len;
    h->early_bytes = NULL;
    h->early_len = 0; /* upgrade_accept's conn_request_drop forgets them */
    upgrade_accept(c, hs.accept, (const char *)early, early_len);
    free(early);
}

void server_http_defer(conn *c) {
    assert(server_owns(c));
    if (c->state == CONN_HTTP && c->req && c->req->complete) c->http_deferred = true;
}

/* Keep bytes that came after a request for when its answer is sent (or
 * the 101): the next request, or the first frames. */
static void keep_early(conn *c, const char *data, size_t len) {
    conn_http *h = conn_http_of(c);
    h->early_bytes = xrealloc(h->early_bytes, h->early_len + len);
    memcpy(h->early_bytes + h->early_len, data, len);
    h->early_len += len;
}

/* Ready for the next request on a keep-alive connection; the handshake
 * deadline now bounds how long it is kept idle. */
static void next_request(conn *c) {
    http_request_free(c->req);
    conn_request_init(c);
    c->created_ms = uv_now(c->srv->loop);
}

void server_http_answer(conn *c, const char *data, size_t len, bool keep_alive) {
    assert(server_owns(c));
    if (!c->http_deferred) return;
    c->http_deferred = false;
    c->http_keep_alive = false;
    /* What the client pipelined meanwhile, taken before the answer may
     * drop the request it is kept with. */
    conn_http *h = conn_http_of(c);
    uint8_t *early = h ? h->early_bytes : NULL;
    size_t early_len = h ? h->early_len : 0;
    if (h) {
        h->early_bytes = NULL;
        h->early_len = 0;
    }
    conn_http_respond(c, data, len, keep_alive);
    if (c->http_keep_alive && c->state == CONN_HTTP) {
        /* As after an answer given at once: the next request, the deadline
         * bounding an idle keep-alive connection again. */
        next_request(c);
        if (early_len) conn_handle_http_bytes(c, (char *)early, early_len);
    } else {
        conn_pending_update(c);
    }
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
    conn_enqueue(c, ws_frame_raw(resp, rlen));
    free(resp);

    c->state = CONN_OPEN;
    c->upgraded = true;
    c->parser = conn_parser_new(c);
    c->opened_ms = uv_now(srv->loop);
    c->last_active_ms = (uint32_t)c->opened_ms;
    c->last_ping_ms = (uint32_t)c->opened_ms;
    c->connected_at = (uint32_t)time(NULL);
    c->last_active_at = c->connected_at;
    c->opened = true;
    srv->nopen++;
    server_open_add(1);
    if (srv->handlers->on_open) srv->handlers->on_open(c, req);

    conn_request_drop(c);

    /* Bytes pipelined after the request head are the first frames. The
     * shared read buffer is still ours: copy them out of it first only if
     * they live there (they always do). */
    if (rest_len > 0 && c->state == CONN_OPEN) conn_handle_ws_bytes(c, (uint8_t *)rest, rest_len);
}

/* Answer a request the parser refused with its status. */
static void refuse_request(conn *c) {
    if (c->http_answered || c->state != CONN_HTTP) {
        /* on_http_head answered: the body stays unread, so the connection
         * cannot carry another request. */
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
}

/* The bytes held by requests that have not upgraded are bounded for the
 * whole process: the request that grows them past the budget is refused
 * (and its memory released at once). Returns true when it was. */
static bool refused_over_budget(conn *c) {
    if (conn_pending_update(c) <= 0 ||
        server_pending_http_bytes() <= (size_t)c->srv->cfg->max_pending_http_bytes)
        return false;
    log_line l;
    log_begin(&l, LOG_INFO, "pending_http_limit");
    log_str(&l, "identity.sourceIp", c->source_ip);
    log_int(&l, "pendingBytes", (int64_t)server_pending_http_bytes());
    log_end(&l);
    http_error(c, 503, "Retry-After: 1\r\n", "Server busy");
    conn_request_drop(c);
    return true;
}

void conn_handle_http_bytes(conn *c, char *data, size_t len) {
    if (c->auth_pending || c->http_deferred) {
        /* Frames sent before the 101: kept for after it, within a bound. */
        if (conn_http_of(c)->early_len + len > CONN_EARLY_MAX) {
            conn_abort(c);
            return;
        }
        keep_early(c, data, len);
        /* They count against max_pending_http_bytes like the request. */
        if (conn_pending_update(c) > 0 &&
            server_pending_http_bytes() > (size_t)c->srv->cfg->max_pending_http_bytes)
            conn_abort(c);
        return;
    }
    /* Plain HTTP requests (management API, metrics) may come several on one
     * keep-alive connection; a WebSocket upgrade ends the loop. */
    for (;;) {
        /* Answers pile up while a client pipelines requests and reads
         * none (5,000 GET /metrics held 180 MB): past max_queued_bytes
         * unsent, no more are parsed and the connection ends once what is
         * queued is written. */
        if (conn_queued_bytes(c) > (size_t)c->srv->cfg->max_queued_bytes) {
            http_end(c);
            return;
        }
        ssize_t n = http_request_feed(c->req, data, len);
        if (n < 0) {
            refuse_request(c);
            return;
        }
        if (refused_over_budget(c)) return;
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
        if (c->http_deferred) {
            /* server_http_answer carries on, with what followed the
             * request in this read. */
            size_t rest = len - (size_t)n;
            if (rest) {
                keep_early(c, data + n, rest);
                conn_pending_update(c);
            }
            return;
        }
        if (!c->http_keep_alive || c->state != CONN_HTTP) return;
        next_request(c);
        data += n;
        len -= (size_t)n;
        if (len == 0) return;
    }
}
