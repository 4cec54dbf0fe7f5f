/* libFuzzer target for the management API (src/mgmt/mgmt.c) and the browser
 * pages (src/web/web.c) behind it: request parsing (src/http/request.c),
 * path decoding, bearer and SigV4 authentication, and every route
 * (@connections, @rooms, @config, /metrics, /healthz, /readyz).
 *
 * Each input builds a fresh app (SQLite ":memory:"), a fake server, three
 * fake open WebSocket connections (ids Aconn00000000000..2, users alice and
 * bob, rooms general and lobby) and one fake connection in CONN_HTTP state.
 * The first input byte picks how the rest is fed to http_request_feed (whole
 * or in pseudo-random chunks); the rest is what a client sends, possibly
 * several pipelined keep-alive requests. Each head is routed by
 * mgmt_http_head before its body is read, as the server does (a refusal it
 * answers itself queues one response). Each complete plain request goes to
 * mgmt_handle; its queued response is checked (a well-formed HTTP/1.1
 * response whose Content-Length matches its body, a JSON body when it says
 * so) and released, as is whatever it sent to the WebSocket connections.
 * The bearer key is "fuzz-bearer-key" (in the dictionary). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "app/app.h"
#include "config/config.h"
#include "http/request.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "mgmt/mgmt.h"
#include "net/conn.h"
#include "net/server.h"
#include "ws/frame.h"

#include "fuzz_harness.h"

#define NWS          3
#define MAX_REQUESTS 8

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    harness_begin();
    harness_finish();
    return 0;
}

/* Frames sent to a WebSocket connection: single unmasked frames. */
static void release_ws(conn *c) {
    for (uint32_t i = 0; i < harness_queue_len(c); i++) {
        ws_frame *f = harness_queued(c, i);
        require(f->len >= 2 && (f->data[0] & 0x80) && !(f->data[1] & 0x80));
        uint8_t op = f->data[0] & 0x0F;
        require(op == WS_OP_TEXT || op == WS_OP_BINARY || op == WS_OP_CLOSE);
        ws_frame_unref(f);
    }
    harness_reset_queue(c);
}

/* Responses queued on the HTTP connection: each a complete HTTP/1.1
 * response. Returns how many. */
static uint32_t release_http(conn *c) {
    uint32_t n = harness_queue_len(c);
    for (uint32_t i = 0; i < n; i++) {
        ws_frame *f = harness_queued(c, i);
        const char *r = (const char *)f->data;
        size_t len = f->len;
        require(len > 17 && memcmp(r, "HTTP/1.1 ", 9) == 0);
        int status = atoi(r + 9);
        require(status >= 200 && status <= 599);
        const char *end = memmem(r, len, "\r\n\r\n", 4);
        require(end != NULL);
        size_t head_len = (size_t)(end - r) + 4;
        size_t body_len = len - head_len;
        /* Content-Length, Content-Type from the head. */
        long clen = -1;
        bool json = false;
        const char *p = memchr(r, '\n', head_len) + 1;
        while (p < end) {
            const char *eol = memchr(p, '\n', (size_t)(end + 2 - p));
            require(eol && eol[-1] == '\r');
            for (const char *q = p; q < eol - 1; q++) require(*q != '\r' && *q != '\0');
            if (strncasecmp(p, "Content-Length:", 15) == 0) clen = strtol(p + 15, NULL, 10);
            if (strncasecmp(p, "Content-Type: application/json", 30) == 0) json = true;
            p = eol + 1;
        }
        require(clen >= 0 && (size_t)clen == body_len);
        if (json && body_len) {
            json_error_t jerr;
            json_t *j = json_loadb(end + 4, body_len, 0, &jerr);
            require(j != NULL);
            json_decref(j);
        }
        ws_frame_unref(f);
    }
    harness_reset_queue(c);
    return n;
}

/* The server's on_http_head: the management API routes each head before
 * its body is read. */
typedef struct head_route {
    app *a;
    conn *c;
    bool answered; /* mgmt_http_head answered the request itself */
} head_route;

static long route_head(http_request *r, void *ctx) {
    head_route *h = ctx;
    long v = mgmt_http_head(h->a, h->c, r);
    if (v == SERVER_HTTP_ANSWERED) h->answered = true;
    else
        require(v == WSG_E_HTTP_NOT_FOUND || v == WSG_E_HTTP_METHOD || v == 0 ||
                v == MGMT_MAX_BODY);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t seed = data[0];
    const char *in = (const char *)data + 1;
    size_t n = size - 1;

    uv_loop_t loop;
    require(uv_loop_init(&loop) == 0);
    app *a = harness_app_new(&loop);
    server *srv = harness_server(&loop, a);

    static const char *const users[NWS] = {"alice", "bob", "alice"};
    static const char *const rooms[NWS] = {"general", "general", "lobby"};
    conn *conns = calloc(NWS + 1, sizeof(conn));
    for (int i = 0; i <= NWS; i++) {
        conn *c = &conns[i];
        c->srv = srv;
        snprintf(c->id, sizeof(c->id), "Aconn%011d", i);
        static const char *const ips[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4",
                                          "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"};
        c->source_ip = ips[i % 8];
        c->next = i < NWS ? &conns[i + 1] : NULL;
        c->prev = i > 0 ? &conns[i - 1] : NULL;
        if (i == NWS) {
            c->state = CONN_HTTP;
            continue;
        }
        c->state = CONN_OPEN;
        c->opened = true;
        c->connected_at = 1700000000 + i;
        c->last_active_at = 1700000100 + i;
        if (i == 1) c->user_agent = strdup("fuzz-agent/1.0 \"quoted\"");
        harness_open(a, c, users[i], users[i], rooms[i]);
    }
    srv->conns = conns;
    srv->nconns = NWS + 1;
    srv->nopen = NWS;
    conn *hc = &conns[NWS];

    head_route hr = {a, hc, false};
    uint32_t rng = seed * 2654435761u + 1;
    size_t off = 0;
    for (int reqs = 0; reqs < MAX_REQUESTS && off < n; reqs++) {
        http_request req;
        http_request_init(&req, (size_t)harness_cfg.max_header_bytes,
                          (size_t)harness_cfg.max_headers, 128 * 1024);
        req.on_head = route_head;
        req.on_head_ctx = &hr;
        hr.answered = false;
        hc->state = CONN_HTTP;
        hc->http_keep_alive = false;
        hc->close_after_flush = false;
        bool bad = false;
        while (off < n && !req.complete) {
            size_t c = n - off;
            if (seed & 1) {
                rng = rng * 1103515245u + 12345u;
                size_t want = (rng >> 16) % (seed % 61 + 2) + 1;
                if (want < c) c = want;
            }
            ssize_t got = http_request_feed(&req, in + off, c);
            if (got < 0) {
                require(req.error_status == 400 || req.error_status == 413 ||
                        req.error_status == 431 || req.error_status == 404 ||
                        req.error_status == 405);
                require(release_http(hc) == (hr.answered ? 1u : 0u));
                bad = true;
                break;
            }
            require((size_t)got <= c);
            off += (size_t)got;
        }
        if (bad || !req.complete || req.upgrade) {
            http_request_free(&req);
            break;
        }
        bool answered = mgmt_handle(a, hc, &req);
        uint32_t responses = release_http(hc);
        require(responses == (answered ? 1u : 0u));
        for (int i = 0; i < NWS; i++) release_ws(&conns[i]);
        srv->dirty = NULL;
        http_request_free(&req);
        if (!answered || !hc->http_keep_alive) break;
    }

    /* $disconnect for the WebSocket connections, then free everything. */
    for (int i = 0; i < NWS; i++) {
        conn *c = &conns[i];
        c->state = CONN_CLOSED;
        srv->nopen--;
        srv->handlers->on_close(c);
        for (int k = 0; k < NWS; k++) release_ws(&conns[k]);
        srv->dirty = NULL;
        free(c->user_agent);
    }
    require(store_pending(a->store) == 0); /* the management API stores nothing */
    app_close(a);
    harness_server_close(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    server_free(srv);
    require(uv_loop_close(&loop) == 0);
    free(a);
    free(conns);
    free(srv);
    return 0;
}
