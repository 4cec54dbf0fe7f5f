/* Unit tests for HTTP/1.1 request parsing and responses (src/http/request.c).
 *
 * Most parser tests go through parse_all(): it feeds the same text whole,
 * one byte at a time and in 7-byte chunks, renders each resulting request
 * (status, bytes consumed, method, target, headers, body) as a string and
 * requires the three renderings to be identical, so a test written for one
 * split covers them all. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "http/request.h"

#define MAXH 8192
#define MAXN 100
#define MAXB 1024

/* ---- feeding ---- */

/* Feed s[0..len) in chunks of `step` bytes (0: all at once), stopping once
 * the request is complete. Returns the bytes consumed, or -1 on error. */
static ssize_t feed_steps(http_request *r, const char *s, size_t len, size_t step) {
    size_t off = 0;
    ssize_t total = 0;
    if (len == 0) return http_request_feed(r, s, 0);
    while (off < len) {
        size_t c = len - off;
        if (step && step < c) c = step;
        ssize_t n = http_request_feed(r, s + off, c);
        if (n < 0) {
            /* the code and the status to answer with agree */
            int st = wsg_err_http_status((int)n);
            cr_assert(st ? st == r->error_status : r->error_status == 400, "%zd / %d", n,
                      r->error_status);
            return -1;
        }
        cr_assert_leq((size_t)n, c, "consumed more than fed");
        total += n;
        if (r->complete) return total;
        cr_assert_eq((size_t)n, c, "an incomplete request must consume everything");
        off += c;
    }
    return total;
}

/* Describe everything observable about r after a feed that returned rc. */
static char *render(const http_request *r, ssize_t rc) {
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    cr_assert_not_null(f);
    fprintf(f, "rc=%zd status=%d complete=%d upgrade=%d hc=%d\n", rc, r->error_status, r->complete,
            r->upgrade, r->headers_complete);
    if (rc >= 0 && r->headers_complete) {
        size_t pl, ql;
        const char *p = http_request_path(r, &pl);
        const char *q = http_request_query(r, &ql);
        fprintf(f, "method=%s path=[%.*s] query=[%.*s] v=%d.%d\n", http_request_method(r), (int)pl,
                p, (int)ql, q, r->parser.http_major, r->parser.http_minor);
        for (size_t i = 0; i < r->nheaders; i++) {
            const http_header *h = &r->headers[i];
            fprintf(f, "h[%.*s]=[%.*s]\n", (int)h->name_len, r->raw + h->name_off,
                    (int)h->value_len, h->value_len ? r->raw + h->value_off : "");
        }
        fprintf(f, "body(%zu)=[%.*s]\n", r->body_len, (int)r->body_len, r->body ? r->body : "");
    }
    fclose(f);
    return buf;
}

typedef struct {
    size_t max_header_bytes, max_headers, max_body;
} limits;

static const limits DEF = {MAXH, MAXN, MAXB};

/* Parse s whole into *r (caller frees) after checking that byte-by-byte and
 * 7-byte feeding agree with it. Returns the feed result. */
static ssize_t parse_lim(http_request *r, const char *s, size_t len, limits lim) {
    static const size_t steps[] = {1, 7, 2, 0};
    char *want = NULL;
    ssize_t rc = 0;
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        http_request_init(r, lim.max_header_bytes, lim.max_headers, lim.max_body);
        rc = feed_steps(r, s, len, steps[k]);
        char *got = render(r, rc);
        if (!want) {
            want = got;
        } else {
            cr_assert_str_eq(got, want, "step %zu differs from step 1", steps[k]);
            free(got);
        }
        if (steps[k] != 0) http_request_free(r);
    }
    free(want);
    return rc;
}

static ssize_t parse(http_request *r, const char *s) { return parse_lim(r, s, strlen(s), DEF); }

static const char UPGRADE[] = "GET /staging?userId=alice HTTP/1.1\r\n"
                              "Host: example.com\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "\r\n";

/* ---- split independence ---- */

Test(http_request, whole_and_bytewise_agree_on_many_requests) {
    static const char *const reqs[] = {
        UPGRADE,
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /api/x?y=1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nX-Empty:\r\nX-Folded: a,\r\n b\r\nHost: h\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\nHost: lf-only\n\n",
        "FOO / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n: novalue\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        http_request r;
        parse(&r, reqs[i]);
        http_request_free(&r);
    }
}

Test(http_request, upgrade_request_parsed) {
    http_request r;
    ssize_t n = parse(&r, UPGRADE);
    cr_assert_eq(n, (ssize_t)strlen(UPGRADE));
    cr_assert(r.complete);
    cr_assert(r.headers_complete);
    cr_assert(r.upgrade, "Upgrade + Connection: Upgrade must set r->upgrade");
    cr_assert_str_eq(http_request_method(&r), "GET");
    size_t pl, ql;
    const char *p = http_request_path(&r, &pl);
    cr_assert_eq(pl, strlen("/staging"));
    cr_assert_eq(memcmp(p, "/staging", pl), 0);
    const char *q = http_request_query(&r, &ql);
    cr_assert_eq(ql, strlen("userId=alice"));
    cr_assert_str_eq(q, "userId=alice");
    cr_assert_eq(r.nheaders, 5);
    size_t hl;
    cr_assert_str_eq(http_request_header(&r, "Host", &hl), "example.com");
    cr_assert_eq(hl, 11);
    http_request_free(&r);
}

/* ---- pipelining ---- */

Test(http_request, bytes_after_upgrade_head_are_not_consumed) {
    char buf[512];
    const char frame[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"; /* masked "Hello" */
    size_t hl = strlen(UPGRADE), fl = sizeof frame - 1;
    memcpy(buf, UPGRADE, hl);
    memcpy(buf + hl, frame, fl);
    http_request r;
    ssize_t n = parse_lim(&r, buf, hl + fl, DEF);
    cr_assert_eq(n, (ssize_t)hl, "consumed %zd, head is %zu", n, hl);
    cr_assert(r.complete);
    cr_assert(r.upgrade);
    cr_assert_eq(memcmp(buf + n, frame, fl), 0);
    /* A complete request takes nothing more. */
    cr_assert_eq(http_request_feed(&r, buf + n, fl), 0);
    http_request_free(&r);
}

Test(http_request, upgrade_head_then_frame_in_separate_feeds) {
    http_request r;
    http_request_init(&r, MAXH, MAXN, MAXB);
    cr_assert_eq(http_request_feed(&r, UPGRADE, strlen(UPGRADE)), (ssize_t)strlen(UPGRADE));
    cr_assert(r.complete && r.upgrade);
    cr_assert_eq(http_request_feed(&r, "\x81\x80", 2), 0);
    http_request_free(&r);
}

/* Found by fuzz_http_request: an upgrade request with a body was declared
 * complete, without its body, whenever a feed ended right after the head
 * (parser.upgrade is set from the head on), but read whole otherwise. */
Test(http_request, upgrade_request_with_body_complete_after_body) {
    const char req[] = "GET /staging HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Content-Length: 4\r\n\r\nbody\x81\x80";
    size_t head = strlen(req) - 6;
    http_request r;
    ssize_t n = parse(&r, req); /* whole, bytewise and chunked agree */
    cr_assert_eq(n, (ssize_t)(head + 4));
    cr_assert(r.complete && r.upgrade);
    cr_assert_str_eq(r.body, "body");
    http_request_free(&r);

    http_request_init(&r, MAXH, MAXN, MAXB);
    cr_assert_eq(http_request_feed(&r, req, head), (ssize_t)head);
    cr_assert(!r.complete, "complete before its body");
    cr_assert(!r.upgrade);
    cr_assert_eq(http_request_feed(&r, req + head, 6), 4);
    cr_assert(r.complete && r.upgrade);
    cr_assert_str_eq(r.body, "body");
    http_request_free(&r);
}

Test(http_request, connect_is_an_upgrade) {
    const char req[] = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\nrest";
    http_request r;
    ssize_t n = parse(&r, req);
    cr_assert_eq(n, (ssize_t)strlen(req) - 4);
    cr_assert(r.complete && r.upgrade);
    cr_assert_str_eq(http_request_method(&r), "CONNECT");
    http_request_free(&r);
}

Test(http_request, pipelined_second_request_left_unparsed) {
    const char first[] = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    const char both[] = "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: b\r\n\r\n";
    http_request r;
    ssize_t n = parse(&r, both);
    cr_assert_eq(n, (ssize_t)strlen(first));
    cr_assert(r.complete);
    cr_assert(!r.upgrade);
    size_t pl;
    const char *p = http_request_path(&r, &pl);
    cr_assert_eq(pl, 4);
    cr_assert_eq(memcmp(p, "/one", 4), 0);
    cr_assert_str_eq(http_request_header(&r, "host", NULL), "a");
    http_request_free(&r);
}

Test(http_request, body_then_pipelined_bytes) {
    const char req[] = "POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
    http_request r;
    ssize_t n = parse(&r, req);
    cr_assert_eq(n, (ssize_t)(strchr(req, 'G') - req));
    cr_assert_eq(r.body_len, 3);
    cr_assert_str_eq(r.body, "abc");
    cr_assert(!r.upgrade);
    http_request_free(&r);
}

/* ---- headers ---- */

Test(http_request, header_lookup_is_case_insensitive) {
    http_request r;
    parse(&r, "GET / HTTP/1.1\r\nsec-websocket-KEY: k1\r\nX-Thing: v\r\n\r\n");
    cr_assert_str_eq(http_request_header(&r, "Sec-WebSocket-Key", NULL), "k1");
    cr_assert_str_eq(http_request_header(&r, "SEC-WEBSOCKET-KEY", NULL), "k1");
    cr_assert_str_eq(http_request_header(&r, "x-thing", NULL), "v");
    cr_assert_null(http_request_header(&r, "X-Thin", NULL));
    cr_assert_null(http_request_header(&r, "X-Things", NULL));
    cr_assert_null(http_request_header(&r, "Missing", NULL));
    http_request_free(&r);
}

Test(http_request, repeated_headers_first_wins_tokens_seen_in_all) {
    http_request r;
    parse(&r, "GET / HTTP/1.1\r\nX-Dup: first\r\nConnection: keep-alive\r\nx-dup: second\r\n"
              "connection: Upgrade\r\n\r\n");
    size_t l = 0;
    cr_assert_str_eq(http_request_header(&r, "X-Dup", &l), "first");
    cr_assert_eq(l, 5);
    cr_assert_eq(r.nheaders, 4);
    cr_assert(http_request_header_has_token(&r, "Connection", "upgrade"));
    cr_assert(http_request_header_has_token(&r, "Connection", "Keep-Alive"));
    cr_assert(http_request_header_has_token(&r, "X-Dup", "second"));
    http_request_free(&r);
}

Test(http_request, token_lists) {
    http_request r;
    parse(&r, "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n"
              "Upgrade: h2c ,\t WebSocket\t,,\r\nX-One: upgrade-insecure\r\n\r\n");
    cr_assert(http_request_header_has_token(&r, "Connection", "keep-alive"));
    cr_assert(http_request_header_has_token(&r, "connection", "upgrade"));
    cr_assert(http_request_header_has_token(&r, "Upgrade", "websocket"));
    cr_assert(http_request_header_has_token(&r, "Upgrade", "h2c"));
    cr_assert(!http_request_header_has_token(&r, "Connection", "keep"));
    cr_assert(!http_request_header_has_token(&r, "Connection", "alive, Upgrade"));
    cr_assert(!http_request_header_has_token(&r, "X-One", "upgrade"));
    cr_assert(!http_request_header_has_token(&r, "Missing", "upgrade"));
    http_request_free(&r);
}

Test(http_request, empty_header_value) {
    http_request r;
    parse(&r, "GET / HTTP/1.1\r\nX-Empty:\r\nX-Next: n\r\n\r\n");
    size_t l = 99;
    cr_assert_str_eq(http_request_header(&r, "X-Empty", &l), "");
    cr_assert_eq(l, 0);
    cr_assert_str_eq(http_request_header(&r, "X-Next", NULL), "n");
    cr_assert(!http_request_header_has_token(&r, "X-Empty", "x"));
    http_request_free(&r);
}

/* RFC 7230 3.2.4: optional whitespace around a field value is not part of
 * it, so `Sec-WebSocket-Version: 13 ` is version "13". */
Test(http_request, header_value_surrounding_whitespace_dropped) {
    http_request r;
    parse(&r, "GET / HTTP/1.1\r\nX-A:   v1  \r\nX-B:\tv 2\t\r\nX-C:  \r\n\r\n");
    size_t l;
    cr_assert_str_eq(http_request_header(&r, "X-A", &l), "v1");
    cr_assert_eq(l, 2);
    cr_assert_str_eq(http_request_header(&r, "X-B", &l), "v 2");
    cr_assert_eq(l, 3);
    cr_assert_str_eq(http_request_header(&r, "X-C", &l), "");
    cr_assert_eq(l, 0);
    http_request_free(&r);
}

/* Found by fuzz_http_request: trailer fields of a chunked body arrive as
 * more headers after on_headers_complete, and kept their trailing
 * whitespace. */
Test(http_request, trailer_values_trimmed_too) {
    http_request r;
    parse(&r, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked \r\n\r\n"
              "1\r\na\r\n0\r\nX-Trailer: t \t\r\n\r\n");
    cr_assert(r.complete);
    size_t l;
    cr_assert_str_eq(http_request_header(&r, "Transfer-Encoding", &l), "chunked");
    cr_assert_str_eq(http_request_header(&r, "X-Trailer", &l), "t");
    cr_assert_eq(l, 1);
    cr_assert_str_eq(r.body, "a");
    http_request_free(&r);
}

/* ---- budgets ---- */

/* A request of exactly n header-budget bytes with `count` headers:
 * the URL, and for each header its name, value and 4 (": " and CRLF). */
static char *request_with_budget(size_t target_bytes, size_t count) {
    /* URL "/" (1) + count * (name "X-Hnnnn" (7) + 4 + value) */
    size_t fixed = 1 + count * 11;
    cr_assert_geq(target_bytes, fixed + count);
    size_t vtotal = target_bytes - fixed;
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    fprintf(f, "GET / HTTP/1.1\r\n");
    for (size_t i = 0; i < count; i++) {
        size_t vl = vtotal / count + (i < vtotal % count ? 1 : 0);
        fprintf(f, "X-H%04zu: ", i);
        for (size_t j = 0; j < vl; j++) fputc('a' + (int)(j % 26), f);
        fprintf(f, "\r\n");
    }
    fprintf(f, "\r\n");
    fclose(f);
    return buf;
}

Test(http_request, header_bytes_budget_boundary_independent_of_split) {
    char *s = request_with_budget(300, 5);
    http_request r;
    limits lim = {300, MAXN, MAXB};
    ssize_t n = parse_lim(&r, s, strlen(s), lim);
    cr_assert_eq(n, (ssize_t)strlen(s), "at the budget: accepted in every split");
    cr_assert(r.complete);
    http_request_free(&r);

    lim.max_header_bytes = 299;
    n = parse_lim(&r, s, strlen(s), lim);
    cr_assert_eq(n, -1);
    cr_assert_eq(r.error_status, 431);
    http_request_free(&r);
    free(s);
}

Test(http_request, header_bytes_over_budget_431) {
    char big[9000];
    memset(big, 'v', sizeof big);
    big[sizeof big - 1] = 0;
    char *req = NULL;
    cr_assert_gt(asprintf(&req, "GET / HTTP/1.1\r\nX-Big: %s\r\n\r\n", big), 0);
    http_request r;
    cr_assert_eq(parse(&r, req), -1);
    cr_assert_eq(r.error_status, 431);
    /* Errors are sticky. */
    cr_assert_eq(http_request_feed(&r, "GET", 3), WSG_E_HTTP_HEAD_TOO_LARGE);
    http_request_free(&r);
    free(req);
}

Test(http_request, long_url_counts_against_budget) {
    char *req = NULL;
    char url[200];
    memset(url, 'u', sizeof url);
    url[0] = '/';
    url[sizeof url - 1] = 0;
    cr_assert_gt(asprintf(&req, "GET %s HTTP/1.1\r\n\r\n", url), 0);
    http_request r;
    limits lim = {199, MAXN, MAXB};
    cr_assert_eq(parse_lim(&r, req, strlen(req), lim), (ssize_t)strlen(req));
    http_request_free(&r);
    lim.max_header_bytes = 198;
    cr_assert_eq(parse_lim(&r, req, strlen(req), lim), -1);
    cr_assert_eq(r.error_status, 431);
    http_request_free(&r);
    free(req);
}

Test(http_request, header_count_budget) {
    char *s = request_with_budget(600, 10);
    http_request r;
    limits lim = {MAXH, 10, MAXB};
    cr_assert_eq(parse_lim(&r, s, strlen(s), lim), (ssize_t)strlen(s));
    cr_assert_eq(r.nheaders, 10);
    http_request_free(&r);
    lim.max_headers = 9;
    cr_assert_eq(parse_lim(&r, s, strlen(s), lim), -1);
    cr_assert_eq(r.error_status, 431);
    http_request_free(&r);
    free(s);
}

Test(http_request, body_limit_content_length) {
    http_request r;
    limits lim = {MAXH, MAXN, 4};
    const char ok[] = "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
    cr_assert_eq(parse_lim(&r, ok, strlen(ok), lim), (ssize_t)strlen(ok));
    cr_assert_eq(r.body_len, 4);
    cr_assert_str_eq(r.body, "abcd");
    http_request_free(&r);
    /* Refused at the head, before any body byte arrives. */
    const char big[] = "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
    cr_assert_eq(parse_lim(&r, big, strlen(big), lim), -1);
    cr_assert_eq(r.error_status, 413);
    http_request_free(&r);
}

Test(http_request, body_limit_chunked) {
    http_request r;
    limits lim = {MAXH, MAXN, 4};
    const char ok[] =
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n";
    cr_assert_eq(parse_lim(&r, ok, strlen(ok), lim), (ssize_t)strlen(ok));
    cr_assert_str_eq(r.body, "abcd");
    http_request_free(&r);
    const char big[] =
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n";
    cr_assert_eq(parse_lim(&r, big, strlen(big), lim), -1);
    cr_assert_eq(r.error_status, 413);
    http_request_free(&r);
}

Test(http_request, no_body_is_complete_without_body) {
    http_request r;
    parse(&r, "GET / HTTP/1.1\r\n\r\n");
    cr_assert(r.complete);
    cr_assert_eq(r.body_len, 0);
    cr_assert_null(r.body);
    cr_assert_eq(r.nheaders, 0);
    http_request_free(&r);
}

Test(http_request, incomplete_request_not_complete) {
    http_request r;
    const char part[] = "GET /x HTTP/1.1\r\nHost: a\r\n";
    cr_assert_eq(parse(&r, part), (ssize_t)strlen(part));
    cr_assert(!r.complete);
    cr_assert(!r.headers_complete);
    cr_assert_eq(r.error_status, 0);
    http_request_free(&r);
}

/* ---- malformed ---- */

Test(http_request, malformed_request_lines_400) {
    static const char *const bad[] = {
        "FOO / HTTP/1.1\r\n\r\n",
        "GET\r\n\r\n",
        "get / HTTP/1.1\r\n\r\n",
        "GET HTTP/1.1\r\n\r\n",
        "GET / HTTP/11.1\r\n\r\n",
        "GET / HTTP/1.1\r\nX\x01Y: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
        "GET / HTTP/x.1\r\n\r\n",
        "GET / HTTP/1.1 junk\r\n\r\n",
        "\x01\x02\x03\r\n\r\n",
        " GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
        "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http_request r;
        ssize_t n = parse(&r, bad[i]);
        cr_assert_eq(n, -1, "request %zu accepted", i);
        cr_assert_eq(r.error_status, 400, "request %zu: status %d", i, r.error_status);
        http_request_free(&r);
    }
}

/* Found by fuzz_http_request: http-parser does not check the first byte
 * of a header value, so `User-Agent:\0...` parsed and http_request_header
 * returned a string shorter than its length. */
Test(http_request, control_characters_in_values_400) {
    static const char a[] = "GET / HTTP/1.1\r\nUser-Agent:\0x\r\n\r\n";
    static const char b[] = "GET / HTTP/1.1\r\nUser-Agent: \x01x\r\n\r\n";
    static const char c[] = "GET / HTTP/1.1\r\nUser-Agent: \x7fx\r\n\r\n";
    static const char d[] = "GET / HTTP/1.1\r\nUser-Agent: x\x1b\r\n\r\n";
    static const char e[] = "GET / HTTP/1.1\r\nSec-WebSocket-Key:\0dGhlIHNhbXBsZSBub25jZQ=\r\n\r\n";
    const char *reqs[] = {a, b, c, d, e};
    size_t lens[] = {sizeof a - 1, sizeof b - 1, sizeof c - 1, sizeof d - 1, sizeof e - 1};
    for (size_t i = 0; i < 5; i++) {
        http_request r;
        cr_assert_eq(parse_lim(&r, reqs[i], lens[i], DEF), -1, "request %zu accepted", i);
        cr_assert_eq(r.error_status, 400);
        http_request_free(&r);
    }
    /* A tab and bytes >= 0x80 are fine. */
    http_request r;
    parse(&r, "GET / HTTP/1.1\r\nUser-Agent:\tx\ty \xc3\xa9\xff\r\n\r\n");
    size_t l;
    cr_assert_str_eq(http_request_header(&r, "User-Agent", &l), "x\ty \xc3\xa9\xff");
    cr_assert_eq(l, 7);
    http_request_free(&r);
}

Test(http_request, free_is_idempotent_and_reinit_works) {
    http_request r;
    parse(&r, UPGRADE);
    http_request_free(&r);
    http_request_free(&r);
    http_request_init(&r, MAXH, MAXN, MAXB);
    cr_assert_eq(http_request_feed(&r, UPGRADE, strlen(UPGRADE)), (ssize_t)strlen(UPGRADE));
    http_request_free(&r);
}

/* ---- target accessors ---- */

Test(http_request, path_and_query) {
    http_request r;
    size_t pl, ql;
    parse(&r, "GET /a/b?x=1&y=%20? HTTP/1.1\r\n\r\n");
    const char *p = http_request_path(&r, &pl);
    cr_assert_eq(pl, 4);
    cr_assert_eq(memcmp(p, "/a/b", 4), 0);
    cr_assert_str_eq(http_request_query(&r, &ql), "x=1&y=%20?");
    cr_assert_eq(ql, 10);
    http_request_free(&r);

    parse(&r, "GET /plain HTTP/1.1\r\n\r\n");
    p = http_request_path(&r, &pl);
    cr_assert_eq(pl, 6);
    cr_assert_str_eq(p, "/plain");
    cr_assert_str_eq(http_request_query(&r, &ql), "");
    cr_assert_eq(ql, 0);
    http_request_free(&r);

    parse(&r, "GET /e? HTTP/1.1\r\n\r\n");
    http_request_path(&r, &pl);
    cr_assert_eq(pl, 2);
    cr_assert_str_eq(http_request_query(&r, &ql), "");
    cr_assert_eq(ql, 0);
    http_request_free(&r);
}

/* ---- query parameters and URL decoding ---- */

static char *qp(const char *q, const char *name, bool *found) {
    char *out = (char *)0x1;
    *found = http_query_param(q, strlen(q), name, &out);
    if (!*found) cr_assert_null(out);
    return out;
}

Test(http_query, decoding) {
    bool f;
    char *v = qp("userId=al%69ce&username=Alice+B%20C&roomId=%2Fr%3F%26", "userId", &f);
    cr_assert(f);
    cr_assert_str_eq(v, "alice");
    free(v);
    v = qp("userId=al%69ce&username=Alice+B%20C&roomId=%2Fr%3F%26", "username", &f);
    cr_assert(f);
    cr_assert_str_eq(v, "Alice B C");
    free(v);
    v = qp("userId=al%69ce&username=Alice+B%20C&roomId=%2Fr%3F%26", "roomId", &f);
    cr_assert(f);
    cr_assert_str_eq(v, "/r?&");
    free(v);
    v = qp("a=%e2%82%AC", "a", &f); /* lower and upper hex */
    cr_assert(f);
    cr_assert_str_eq(v, "\xe2\x82\xac");
    free(v);
    v = qp("a=%2B+", "a", &f);
    cr_assert_str_eq(v, "+ ");
    free(v);
}

Test(http_query, missing_and_empty) {
    bool f;
    char *v = qp("a=1&b=2", "c", &f);
    cr_assert(!f);
    v = qp("", "a", &f);
    cr_assert(!f);
    v = qp("ab=1&a_=2", "a", &f); /* names match whole */
    cr_assert(!f);
    v = qp("x=1&a=&b=2", "a", &f);
    cr_assert(f);
    cr_assert_str_eq(v, "");
    free(v);
    v = qp("x=1&a", "a", &f); /* no '=' */
    cr_assert(f);
    cr_assert_str_eq(v, "");
    free(v);
    v = qp("&&a=z&", "a", &f);
    cr_assert(f);
    cr_assert_str_eq(v, "z");
    free(v);
    v = qp("a=first&a=second", "a", &f);
    cr_assert_str_eq(v, "first");
    free(v);
    v = qp("a=x=y", "a", &f);
    cr_assert_str_eq(v, "x=y");
    free(v);
    v = qp("=v&a=1", "", &f); /* an empty name matches an empty key */
    cr_assert(f);
    cr_assert_str_eq(v, "v");
    free(v);
}

Test(http_query, only_the_given_length_is_read) {
    char *v = NULL;
    const char q[] = "a=12345&b=2";
    cr_assert(http_query_param(q, 4, "a", &v));
    cr_assert_str_eq(v, "12");
    free(v);
    cr_assert(!http_query_param(q, 7, "b", &v));
    cr_assert_null(v);
}

Test(http_query, bad_escapes_rejected) {
    static const char *const bad[] = {"a=%",    "a=%4",  "a=%zz",     "a=%4g", "a=x%g1",
                                      "a=%%41", "a=%00", "a=ab%00cd", "a=%0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool f;
        char *v = qp(bad[i], "a", &f);
        cr_assert(!f, "%s accepted as [%s]", bad[i], v ? v : "");
    }
    /* A bad escape elsewhere does not matter. */
    bool f;
    char *v = qp("b=%zz&a=ok", "a", &f);
    cr_assert(f);
    cr_assert_str_eq(v, "ok");
    free(v);
}

Test(http_url_decode, direct) {
    char *s = http_url_decode("%41%62c+d%2b", 12);
    cr_assert_str_eq(s, "Abc d+");
    free(s);
    s = http_url_decode("", 0);
    cr_assert_str_eq(s, "");
    free(s);
    s = http_url_decode("%41", 3);
    cr_assert_str_eq(s, "A");
    free(s);
    s = http_url_decode("x%4", 3);
    cr_assert_null(s);
    s = http_url_decode("%4142", 3); /* only len bytes are looked at */
    cr_assert_str_eq(s, "A");
    free(s);
    s = http_url_decode("%41", 2); /* escape cut by len */
    cr_assert_null(s);
    s = http_url_decode("a\0b", 3); /* a raw NUL is refused too */
    cr_assert_null(s);
    s = http_url_decode("%ff%80", 6);
    cr_assert_str_eq(s, "\xff\x80");
    free(s);
}

/* ---- responses ---- */

Test(http_response, status_text) {
    cr_assert_str_eq(http_status_text(101), "Switching Protocols");
    cr_assert_str_eq(http_status_text(200), "OK");
    cr_assert_str_eq(http_status_text(400), "Bad Request");
    cr_assert_str_eq(http_status_text(401), "Unauthorized");
    cr_assert_str_eq(http_status_text(404), "Not Found");
    cr_assert_str_eq(http_status_text(405), "Method Not Allowed");
    cr_assert_str_eq(http_status_text(413), "Payload Too Large");
    cr_assert_str_eq(http_status_text(426), "Upgrade Required");
    cr_assert_str_eq(http_status_text(429), "Too Many Requests");
    cr_assert_str_eq(http_status_text(431), "Request Header Fields Too Large");
    cr_assert_str_eq(http_status_text(999), "Unknown");
}

static void assert_bytes(const char *got, size_t len, const char *want) {
    cr_assert_eq(len, strlen(want), "length %zu, want %zu:\n%.*s", len, strlen(want), (int)len,
                 got);
    cr_assert_eq(memcmp(got, want, len), 0, "got:\n%.*s\nwant:\n%s", (int)len, got, want);
    cr_assert_eq(got[len], '\0');
}

Test(http_response, format_exact_bytes) {
    size_t len;
    char *s =
        http_response_format(200, "X-A: 1\r\nX-B: 2\r\n", "text/plain", "hello", 5, false, &len);
    assert_bytes(s, len,
                 "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nContent-Type: text/plain\r\n"
                 "Content-Length: 5\r\n\r\nhello");
    free(s);

    s = http_response_format(404, NULL, NULL, NULL, 123, true, &len);
    assert_bytes(s, len,
                 "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    free(s);

    s = http_response_format(204, NULL, "text/plain", "", 0, false, &len);
    assert_bytes(
        s, len, "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n");
    free(s);
}

Test(http_response, format_binary_body) {
    size_t len;
    const char body[] = {'a', 0, 'b'};
    char *s = http_response_format(200, NULL, "application/octet-stream", body, 3, false, &len);
    const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        "Content-Length: 3\r\n\r\n";
    cr_assert_eq(len, strlen(head) + 3);
    cr_assert_eq(memcmp(s, head, strlen(head)), 0);
    cr_assert_eq(memcmp(s + strlen(head), body, 3), 0);
    free(s);
}

Test(http_response, json_message_exact_bytes) {
    size_t len;
    char *s = http_response_json_message(401, NULL, "Unauthorized", &len);
    assert_bytes(s, len,
                 "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                 "Content-Length: 26\r\nConnection: close\r\n\r\n{\"message\":\"Unauthorized\"}");
    free(s);

    s = http_response_json_message(426, "Sec-WebSocket-Version: 13\r\n", "", &len);
    assert_bytes(s, len,
                 "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
                 "Content-Type: application/json\r\nContent-Length: 14\r\nConnection: close\r\n"
                 "\r\n{\"message\":\"\"}");
    free(s);
}

Test(http_response, json_message_escaping) {
    size_t len;
    char *s = http_response_json_message(400, NULL, "a\"b\\c\n\t\x01\x1f\x7f\xc3\xa9/", &len);
    const char body[] = "{\"message\":\"a\\\"b\\\\c\\u000a\\u0009\\u0001\\u001f\x7f\xc3\xa9/\"}";
    char *want = NULL;
    cr_assert_gt(asprintf(&want,
                          "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          strlen(body), body),
                 0);
    assert_bytes(s, len, want);
    free(want);
    free(s);
}

Test(http_response, json_message_worst_case_length) {
    /* Every byte a control character: 6 output bytes each. */
    char msg[301];
    memset(msg, 0x01, 300);
    msg[300] = 0;
    size_t len;
    char *s = http_response_json_message(400, NULL, msg, &len);
    const char *body = strstr(s, "\r\n\r\n") + 4;
    cr_assert_eq(strlen(body), 300 * 6 + strlen("{\"message\":\"\"}"));
    cr_assert_eq((size_t)(body - s) + strlen(body), len);
    free(s);
}

/* ---- routing on the head (on_head), before any body byte is read ---- */

typedef struct head_seen {
    int calls;
    bool had_body;
    size_t body_at_head;
    long answer;
} head_seen;

static long record_head(http_request *r, void *ctx) {
    head_seen *h = ctx;
    h->calls++;
    h->had_body = http_request_has_body(r);
    h->body_at_head = r->body_len;
    return h->answer;
}

static void init_routed(http_request *r, head_seen *h, long answer) {
    http_request_init(r, 8192, 100, 128 * 1024);
    memset(h, 0, sizeof(*h));
    h->answer = answer;
    r->on_head = record_head;
    r->on_head_ctx = h;
}

Test(http_request, head_refused_before_its_body_is_read) {
    http_request r;
    head_seen h;
    init_routed(&r, &h, WSG_E_HTTP_NOT_FOUND);
    const char *req = "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
    cr_assert_eq(http_request_feed(&r, req, strlen(req)), WSG_E_HTTP_NOT_FOUND);
    cr_expect_eq(r.error_status, 404);
    cr_expect_eq(h.calls, 1);
    cr_expect(h.had_body);
    cr_expect_eq(h.body_at_head, 0);
    cr_expect_eq(r.body_len, 0);
    cr_expect_null(r.body);
    http_request_free(&r);
}

/* on_head's code is what the feed returns, again on every later feed; a
 * code without an HTTP status of its own is answered 400. */
Test(http_request, head_refusal_code_is_returned) {
    const struct {
        long code;
        int status;
    } t[] = {{WSG_E_HTTP_METHOD, 405}, {WSG_E_HTTP_TOO_MANY, 429}, {WSG_E_HTTP_ANSWERED, 400}};
    const char *req = "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        http_request r;
        head_seen h;
        init_routed(&r, &h, t[i].code);
        cr_assert_eq(http_request_feed(&r, req, strlen(req)), t[i].code);
        cr_expect_eq(r.error_status, t[i].status);
        cr_expect_eq(http_request_feed(&r, "x", 1), t[i].code);
        cr_expect_eq(h.calls, 1);
        http_request_free(&r);
    }
}

Test(http_request, head_sets_the_body_limit) {
    http_request r;
    head_seen h;
    init_routed(&r, &h, 4);
    const char *big = "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n12345";
    cr_assert_eq(http_request_feed(&r, big, strlen(big)), WSG_E_HTTP_BODY_TOO_LARGE);
    cr_expect_eq(r.error_status, 413);
    http_request_free(&r);

    /* Chunked: the limit holds chunk by chunk, nothing over it is kept. */
    init_routed(&r, &h, 4);
    const char *chunked =
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    cr_assert_eq(http_request_feed(&r, chunked, strlen(chunked)), WSG_E_HTTP_BODY_TOO_LARGE);
    cr_expect_eq(r.error_status, 413);
    cr_expect(h.had_body);
    cr_expect_leq(r.body_len, 4);
    http_request_free(&r);

    init_routed(&r, &h, 5);
    cr_assert_eq(http_request_feed(&r, big, strlen(big)), (ssize_t)strlen(big));
    cr_expect(r.complete);
    cr_expect_eq(r.body_len, 5);
    cr_expect_geq(http_request_held(&r), 5 + 1);
    http_request_free(&r);
}

Test(http_request, head_without_body_passes_with_limit_zero) {
    http_request r;
    head_seen h;
    init_routed(&r, &h, 0);
    const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t i = 0; i < strlen(req); i++) cr_assert_geq(http_request_feed(&r, req + i, 1), 0);
    cr_expect(r.complete);
    cr_expect_eq(h.calls, 1);
    cr_expect_not(h.had_body);
    http_request_free(&r);
}
