/* libFuzzer target for HTTP request parsing (src/http/request.c), the
 * WebSocket handshake checks (src/http/handshake.c) and the identity taken
 * from the query (src/app/auth.c).
 *
 * The first input byte picks the limits, a chunking and whether the head is
 * routed before the body (on_head); the rest is what a client sends. It is parsed whole and in chunks (and one byte at a time for
 * small inputs): every run must keep the feed invariants (consumed <= fed,
 * sticky errors, limits respected) and all runs must agree exactly on the
 * outcome. Complete requests then go through the handshake check, query
 * parameter extraction and the demo authorizer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/auth.h"
#include "http/handshake.h"
#include "http/request.h"

#include "fuzz_require.h"

typedef struct {
    ssize_t consumed; /* total, or -1 */
    int status;
    bool complete, upgrade;
    uint64_t hash; /* over the parsed method, target, headers and body */
} outcome;

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h ^ n;
}

/* Check r's internal consistency and hash what a caller can observe. */
static uint64_t inspect(const http_request *r) {
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    require(r->nheaders <= r->max_headers);
    require(r->head_bytes <= r->max_header_bytes);
    require(r->body_len <= r->max_body);
    require(r->raw_len <= r->raw_cap || r->raw_cap == 0);
    if (r->url_len) require(r->url_off + r->url_len <= r->raw_len);
    for (size_t i = 0; i < r->nheaders; i++) {
        const http_header *hd = &r->headers[i];
        require(hd->name_off + hd->name_len <= r->raw_len);
        require(r->raw[hd->name_off + hd->name_len] == '\0');
        if (hd->value_len) {
            require(hd->value_off + hd->value_len <= r->raw_len);
            require(r->raw[hd->value_off + hd->value_len] == '\0');
        }
    }
    if (!r->headers_complete) return h;
    const char *m = http_request_method(r);
    h = mix(h, m, strlen(m));
    size_t pl, ql;
    const char *p = http_request_path(r, &pl);
    const char *q = http_request_query(r, &ql);
    require(pl <= r->url_len && ql <= r->url_len);
    h = mix(h, p, pl);
    h = mix(h, q, ql);
    uint8_t ver[2] = {(uint8_t)r->parser.http_major, (uint8_t)r->parser.http_minor};
    h = mix(h, ver, 2);
    for (size_t i = 0; i < r->nheaders; i++) {
        const http_header *hd = &r->headers[i];
        h = mix(h, r->raw + hd->name_off, hd->name_len);
        h = mix(h, hd->value_len ? r->raw + hd->value_off : "", hd->value_len);
        /* Trailing whitespace never survives in a value (of a complete
         * request: trailer fields are trimmed at the end). */
        if (hd->value_len && r->complete) {
            char last = r->raw[hd->value_off + hd->value_len - 1];
            require(last != ' ' && last != '\t');
        }
    }
    if (r->body_len) {
        require(r->body != NULL && r->body[r->body_len] == '\0');
        h = mix(h, r->body, r->body_len);
    }
    return h;
}

typedef struct {
    size_t max_header_bytes, max_headers, max_body;
    int head_mode; /* -1: no on_head; else what on_head answers (see route_head) */
} limits;

/* An on_head as a server routes: refuse bodies (404), take none, take a
 * small one, refuse everything (429). Runs once, before any body byte. */
static long route_head(http_request *r, void *ctx) {
    const limits *lim = ctx;
    require(r->headers_complete && r->body_len == 0 && r->body == NULL);
    switch (lim->head_mode) {
    case 0: return http_request_has_body(r) ? WSG_E_HTTP_NOT_FOUND : 0;
    case 1: return 0;
    case 2: return 16;
    default: return WSG_E_HTTP_TOO_MANY;
    }
}

/* mode 0: whole; 1: one byte at a time; 2: pseudo-random chunks. */
static void run(const char *in, size_t n, int mode, uint8_t seed, limits lim, outcome *out,
                http_request *keep) {
    http_request local, *rp = keep ? keep : &local;
    http_request_init(rp, lim.max_header_bytes, lim.max_headers, lim.max_body);
    if (lim.head_mode >= 0) {
        rp->on_head = route_head;
        rp->on_head_ctx = &lim;
    }
    uint32_t rng = seed * 2654435761u + 7;
    size_t off = 0;
    ssize_t total = 0;
    memset(out, 0, sizeof(*out));
    while (off < n) {
        size_t c = n - off;
        if (mode == 1) {
            c = 1;
        } else if (mode == 2) {
            rng = rng * 1103515245u + 12345u;
            size_t want = (rng >> 16) % (seed % 97 + 2) + 1;
            if (want < c) c = want;
        }
        ssize_t got = http_request_feed(rp, in + off, c);
        if (got < 0) {
            int st = wsg_err_http_status((int)got);
            require(st == rp->error_status);
            require(rp->error_status == 400 || rp->error_status == 413 || rp->error_status == 431 ||
                    (lim.head_mode == 0 && rp->error_status == 404) ||
                    (lim.head_mode == 3 && rp->error_status == 429));
            require(http_request_feed(rp, in + off, c) == got); /* sticky */
            require(http_request_feed(rp, "x", 1) == got);
            total = -1;
            break;
        }
        require((size_t)got <= c); /* consumed <= fed */
        require(rp->error_status == 0);
        total += got;
        if (rp->complete) {
            require(rp->headers_complete);
            require(http_request_feed(rp, in + off + got, c - (size_t)got) == 0);
            if (lim.head_mode == 3) require(false); /* every head is refused */
            break;
        }
        require((size_t)got == c); /* an incomplete request takes everything */
        off += c;
    }
    require(total <= (ssize_t)n);
    if (rp->upgrade) require(rp->complete);
    out->consumed = total;
    out->status = rp->error_status;
    out->complete = rp->complete;
    out->upgrade = rp->upgrade;
    out->hash = total < 0 ? 0 : inspect(rp);
    if (!keep) http_request_free(rp);
}

static void check_query(const http_request *r) {
    size_t ql;
    const char *q = http_request_query(r, &ql);
    static const char *const names[] = {"userId", "username", "roomId", "token", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *v = (char *)1;
        bool found = http_query_param(q, ql, names[i], &v);
        if (found) {
            require(v != NULL);
            require(strlen(v) <= ql);
        } else {
            require(v == NULL);
        }
        free(v);
    }
    char *all = http_url_decode(q, ql);
    if (all) require(strlen(all) <= ql);
    free(all);

    auth_identity id;
    int rc = auth_identity_from_query(r, &id);
    require(rc == 0 || rc == WSG_E_AUTH_USER_ID || rc == WSG_E_AUTH_USERNAME ||
            rc == WSG_E_AUTH_ROOM_ID);
    require(id.user_id && id.username && id.room_id);
    const char *msg = NULL;
    require(auth_http_status(rc, &msg) == (rc ? 400 : 0));
    if (rc == 0) {
        require(msg == NULL);
        require(auth_valid_id(id.user_id) && auth_valid_id(id.username) &&
                auth_valid_id(id.room_id));
        authorizer *a = auth_demo();
        int as = a->authorize(a, r, &id);
        require(as == 0 || as == WSG_E_AUTH_DENIED);
    } else {
        require(msg == wsg_strerror(rc));
    }
    auth_identity_clear(&id);
}

static void check_handshake(const http_request *r) {
    ws_handshake_result res;
    int st = ws_handshake_check(r, "/staging", &res);
    require(st == res.status);
    require(st == 101 || st == 400 || st == 404 || st == 405 || st == 426);
    if (st == 101) {
        require(strlen(res.accept) == 28);
        require(r->parser.method == HTTP_GET);
        size_t len;
        char *resp = ws_handshake_response(res.accept, NULL, &len);
        require(len > 0 && strlen(resp) == len);
        require(strstr(resp, res.accept) != NULL);
        free(resp);
    } else {
        require(res.message != NULL);
        size_t len;
        char *resp = http_response_json_message(st, res.extra_headers, res.message, &len);
        require(len > 0 && strlen(resp) == len);
        free(resp);
    }
    /* An error text built from request bytes is escaped: no raw control
     * characters in the JSON body. */
    size_t ul;
    const char *ua = http_request_header(r, "User-Agent", &ul);
    if (ua) {
        require(strlen(ua) == ul);
        size_t len;
        char *resp = http_response_json_message(400, NULL, ua, &len);
        const char *body = strstr(resp, "\r\n\r\n");
        require(body != NULL);
        for (const char *p = body + 4; *p; p++) require((unsigned char)*p >= 0x20);
        free(resp);
    }
}

/* Two runs agree. One exception: a request that is both malformed and over
 * a limit may report either, since http-parser delivers a piece of a
 * header to the callbacks (which enforce the limits) before it has seen the
 * bad byte further on only when the split falls between them. Both runs
 * must still refuse it. */
static void require_same(const outcome *a, const outcome *b) {
    if (a->consumed < 0 && b->consumed < 0) {
        require(a->status == b->status || a->status == 400 || b->status == 400);
        return;
    }
    require(a->consumed == b->consumed && a->status == b->status && a->complete == b->complete &&
            a->upgrade == b->upgrade && a->hash == b->hash);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t seed = data[0];
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    limits lim = {
        .max_header_bytes = (seed & 0x80) ? 256 : 8192,
        .max_headers = (seed & 0x40) ? 8 : 100,
        .max_body = (seed & 0x20) ? 16 : 65536,
        .head_mode = (seed & 0x10) ? (seed >> 2) & 3 : -1,
    };

    http_request whole;
    outcome w, o;
    run(in, n, 0, seed, lim, &w, &whole);
    run(in, n, 2, seed, lim, &o, NULL);
    require_same(&w, &o);
    if (n <= 4096) {
        run(in, n, 1, seed, lim, &o, NULL);
        require_same(&w, &o);
    }
    if (w.complete) {
        check_handshake(&whole);
        check_query(&whole);
    }
    http_request_free(&whole);
    return 0;
}
