/* Unit tests for the RFC 6455 opening handshake, server side
 * (src/http/handshake.c). Requests are built by feeding request text to
 * http_request_feed, as the server does. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "http/handshake.h"
#include "http/request.h"

#define STAGE "/staging"
#define KEY   "dGhlIHNhbXBsZSBub25jZQ=="
/* RFC 6455 section 1.3 (checked against Python hashlib/base64). */
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Parse text (a complete request head) into *r; caller frees. */
static void load(http_request *r, const char *text) {
    http_request_init(r, 8192, 100, 1024);
    ssize_t n = http_request_feed(r, text, strlen(text));
    cr_assert_geq(n, 0, "request did not parse (status %d):\n%s", r->error_status, text);
    cr_assert(r->complete, "request incomplete:\n%s", text);
}

/* A request with the given request line and the default upgrade headers,
 * any of which can be replaced (a NULL keeps the default, "" drops it). */
typedef struct {
    const char *line, *upgrade, *connection, *version, *key, *extra;
} req_spec;

static char *build(req_spec s) {
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    fprintf(f, "%s\r\nHost: example.com\r\n", s.line ? s.line : "GET " STAGE " HTTP/1.1");
#define HDR(field, name, def)                                                                      \
    do {                                                                                           \
        const char *v_ = s.field ? s.field : def;                                                  \
        if (*v_) fprintf(f, "%s: %s\r\n", name, v_);                                               \
    } while (0)
    HDR(upgrade, "Upgrade", "websocket");
    HDR(connection, "Connection", "Upgrade");
    HDR(version, "Sec-WebSocket-Version", "13");
    HDR(key, "Sec-WebSocket-Key", KEY);
#undef HDR
    if (s.extra) fputs(s.extra, f);
    fputs("\r\n", f);
    fclose(f);
    return out;
}

static int check(req_spec s, ws_handshake_result *res) {
    char *text = build(s);
    http_request r;
    load(&r, text);
    int st = ws_handshake_check(&r, STAGE, res);
    cr_assert_eq(st, res->status);
    if (st == 101) {
        cr_assert_eq(res->error, 0);
        cr_assert_null(res->message);
        cr_assert_null(res->extra_headers);
    } else {
        cr_assert_lt(res->error, 0);
        cr_assert_eq(st, wsg_err_http_status(res->error));
        cr_assert_str_eq(res->message, wsg_strerror(res->error));
        cr_assert_gt(strlen(res->message), 0);
        cr_assert_eq(res->accept[0], '\0');
    }
    http_request_free(&r);
    free(text);
    return st;
}

/* ---- Sec-WebSocket-Accept ---- */

Test(handshake, rfc6455_example_accept) {
    char out[29];
    memset(out, 'x', sizeof out);
    ws_handshake_accept(KEY, strlen(KEY), out);
    cr_assert_str_eq(out, ACCEPT);
}

Test(handshake, second_known_accept) {
    /* The example of the WebSocket article on Wikipedia. */
    char out[29];
    ws_handshake_accept("x3JJHMbDL1EzLkh9GBhXDw==", 24, out);
    cr_assert_str_eq(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

Test(handshake, accept_uses_only_key_len_bytes) {
    char out[29];
    ws_handshake_accept(KEY "trailing junk", 24, out);
    cr_assert_str_eq(out, ACCEPT);
}

Test(handshake, accept_with_overlong_key_stays_in_bounds) {
    char key[300];
    memset(key, 'A', sizeof key);
    char out[29];
    ws_handshake_accept(key, sizeof key, out);
    cr_assert_eq(strlen(out), 28);
}

/* ---- a valid upgrade ---- */

Test(handshake, valid_request_101) {
    ws_handshake_result res;
    cr_assert_eq(check((req_spec){0}, &res), 101);
    cr_assert_str_eq(res.accept, ACCEPT);
}

Test(handshake, valid_variants_101) {
    ws_handshake_result res;
    cr_assert_eq(check((req_spec){.line = "GET " STAGE "?userId=a&token=valid_x HTTP/1.1"}, &res),
                 101);
    cr_assert_eq(check((req_spec){.upgrade = "WebSocket"}, &res), 101);
    cr_assert_eq(check((req_spec){.connection = "keep-alive, Upgrade"}, &res), 101);
    cr_assert_eq(check((req_spec){.connection = "upgrade"}, &res), 101);
    cr_assert_eq(check((req_spec){.upgrade = "h2c, websocket"}, &res), 101);
    /* Optional whitespace around values is not part of them. */
    cr_assert_eq(check((req_spec){.version = "13  ", .key = KEY " \t"}, &res), 101);
    cr_assert_str_eq(res.accept, ACCEPT);
    /* Connection tokens may be spread over repeated headers. */
    cr_assert_eq(
        check((req_spec){.connection = "keep-alive", .extra = "Connection: Upgrade\r\n"}, &res),
        101);
}

/* RFC 6455 11.3.1 and 11.3.5: Sec-WebSocket-Key and Sec-WebSocket-Version
 * must not appear more than once in a request. Both used to be accepted,
 * the first one answered: a proxy keeping the last one would check another
 * Sec-WebSocket-Accept. */
Test(handshake, repeated_key_or_version_refused) {
    ws_handshake_result res;
    cr_assert_eq(
        check((req_spec){.extra = "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"}, &res), 400);
    cr_assert_eq(res.error, WSG_E_HS_KEY);
    cr_assert_eq(check((req_spec){.extra = "sec-websocket-key: " KEY "\r\n"}, &res), 400);
    cr_assert_eq(res.error, WSG_E_HS_KEY);
    cr_assert_eq(check((req_spec){.extra = "Sec-WebSocket-Version: 8\r\n"}, &res), 426);
    cr_assert_eq(res.error, WSG_E_HS_WS_VERSION);
    cr_assert_eq(check((req_spec){.extra = "Sec-WebSocket-Version: 13\r\n"}, &res), 426);
    cr_assert_eq(res.error, WSG_E_HS_WS_VERSION);
}

Test(handshake, every_canonical_last_key_char_accepted) {
    const char tails[] = "AQgw";
    for (int i = 0; i < 4; i++) {
        char key[25];
        memcpy(key, KEY, 25);
        key[21] = tails[i];
        ws_handshake_result res;
        cr_assert_eq(check((req_spec){.key = key}, &res), 101, "tail %c", tails[i]);
        char want[29];
        ws_handshake_accept(key, 24, want);
        cr_assert_str_eq(res.accept, want);
    }
}

/* ---- rejections ---- */

Test(handshake, wrong_path_404) {
    static const char *const lines[] = {
        "GET / HTTP/1.1",         "GET /stag HTTP/1.1",    "GET /stagingx HTTP/1.1",
        "GET /staging/ HTTP/1.1", "GET /STAGING HTTP/1.1", "GET //staging HTTP/1.1",
        "POST /other HTTP/1.1", /* the path is checked first */
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        ws_handshake_result res;
        cr_assert_eq(check((req_spec){.line = lines[i]}, &res), 404, "%s", lines[i]);
        cr_assert_str_eq(res.message, "Not Found");
        cr_assert_null(res.extra_headers);
    }
}

Test(handshake, post_405) {
    ws_handshake_result res;
    cr_assert_eq(
        check((req_spec){.line = "POST " STAGE " HTTP/1.1", .extra = "Content-Length: 0\r\n"},
              &res),
        405);
    cr_assert_str_eq(res.extra_headers, "Allow: GET\r\n");
    cr_assert_str_eq(res.message, "Method Not Allowed");
    cr_assert_eq(check((req_spec){.line = "HEAD " STAGE " HTTP/1.1"}, &res), 405);
}

Test(handshake, http10_400) {
    ws_handshake_result res;
    cr_assert_eq(check((req_spec){.line = "GET " STAGE " HTTP/1.0"}, &res), 400);
    cr_assert_null(res.extra_headers);
    cr_assert_str_eq(res.message, "HTTP/1.1 or later required");
}

Test(handshake, no_upgrade_426) {
    ws_handshake_result res;
    cr_assert_eq(check((req_spec){.upgrade = ""}, &res), 426);
    cr_assert_str_eq(res.extra_headers,
                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
    cr_assert_eq(check((req_spec){.upgrade = "h2c"}, &res), 426);
    cr_assert_eq(check((req_spec){.upgrade = "websocket2"}, &res), 426);
}

Test(handshake, no_connection_upgrade_400) {
    ws_handshake_result res;
    cr_assert_eq(check((req_spec){.connection = ""}, &res), 400);
    cr_assert_null(res.extra_headers);
    cr_assert_str_eq(res.message, "Connection: Upgrade required");
    cr_assert_eq(check((req_spec){.connection = "keep-alive"}, &res), 400);
    cr_assert_eq(check((req_spec){.connection = "upgraded"}, &res), 400);
}

Test(handshake, bad_version_426) {
    static const char *const versions[] = {"8", "", "12", "130", "1 3", "013"};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        ws_handshake_result res;
        cr_assert_eq(check((req_spec){.version = versions[i]}, &res), 426, "[%s]", versions[i]);
        cr_assert_str_eq(res.extra_headers, "Sec-WebSocket-Version: 13\r\n");
        cr_assert_str_eq(res.message, "Unsupported WebSocket version");
    }
}

Test(handshake, bad_keys_400) {
    static const char *const keys[] = {
        "",                                                 /* missing */
        "dGhlIHNhbXBsZSBub25jZQ=",                          /* 23 */
        "dGhlIHNhbXBsZSBub25jZQ===",                        /* 25 */
        "dGhlIHNhbXBsZSBub25jZQ",                           /* no padding */
        "dGhlIHNhbXBsZSBub25jZQAA",                         /* 24 but 18 bytes */
        "dGhlIHNhbXBsZSBub25jZR==",                         /* non-canonical last char */
        "dGhlIHNhbXBsZSBub25jZf==",                         /* non-canonical last char */
        "dGhlIHNhbXBsZSBub25jZ/==",                         /* non-canonical last char */
        "dGhlIHNhbXBsZSBub25j-Q==",                         /* base64url character */
        "dGhlIHNhbXBsZSBub25j_Q==",                         /* base64url character */
        "dGhlIHNhbXBs*SBub25jZQ==",                         /* bad character */
        "dGhlIHNhbXBs ZSBub25jZQ==",                        /* inner space (25 bytes) */
        "dGhlIHNhbXBsZSBub25=ZQ==",                         /* padding inside */
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==", /* 48 */
        "\xc3\xa9GhlIHNhbXBsZSBub25jZQ=",                   /* non-ASCII */
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        ws_handshake_result res;
        cr_assert_eq(check((req_spec){.key = keys[i]}, &res), 400, "key %zu [%s]", i, keys[i]);
        cr_assert_str_eq(res.message, "Invalid Sec-WebSocket-Key");
        cr_assert_null(res.extra_headers);
    }
}

Test(handshake, checks_run_in_documented_order) {
    ws_handshake_result res;
    /* Everything wrong: the path wins. */
    cr_assert_eq(check((req_spec){.line = "POST /x HTTP/1.0",
                                  .upgrade = "",
                                  .connection = "",
                                  .version = "8",
                                  .key = "bad"},
                       &res),
                 404);
    /* Then the method. */
    cr_assert_eq(check((req_spec){.line = "PUT " STAGE " HTTP/1.0",
                                  .upgrade = "",
                                  .version = "8",
                                  .extra = "Content-Length: 0\r\n"},
                       &res),
                 405);
    /* Then the version of HTTP. */
    cr_assert_eq(check((req_spec){.line = "GET " STAGE " HTTP/1.0", .upgrade = ""}, &res), 400);
    /* Then Upgrade before Connection. */
    cr_assert_eq(check((req_spec){.upgrade = "", .connection = ""}, &res), 426);
    /* Then the WebSocket version before the key. */
    cr_assert_eq(check((req_spec){.version = "8", .key = "bad"}, &res), 426);
}

/* ---- the 101 ---- */

Test(handshake, response_101_exact) {
    size_t len;
    char *s = ws_handshake_response(ACCEPT, NULL, &len);
    const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                        "Upgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                        "\r\n";
    cr_assert_eq(len, strlen(want));
    cr_assert_str_eq(s, want);
    free(s);
}

Test(handshake, response_101_with_protocol) {
    size_t len;
    char *s = ws_handshake_response(ACCEPT, "chat.v1", &len);
    const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                        "Upgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                        "Sec-WebSocket-Protocol: chat.v1\r\n"
                        "\r\n";
    cr_assert_eq(len, strlen(want));
    cr_assert_str_eq(s, want);
    free(s);
}

Test(handshake, full_round_trip_from_bytes) {
    const char req[] = "GET /staging HTTP/1.1\r\n"
                       "Host: server.example.com\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Key: " KEY "\r\n"
                       "Origin: http://example.com\r\n"
                       "Sec-WebSocket-Protocol: chat, superchat\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "\r\n";
    http_request r;
    load(&r, req);
    cr_assert(r.upgrade);
    ws_handshake_result res;
    cr_assert_eq(ws_handshake_check(&r, STAGE, &res), 101);
    size_t len;
    char *s = ws_handshake_response(res.accept, NULL, &len);
    cr_assert_not_null(strstr(s, "Sec-WebSocket-Accept: " ACCEPT "\r\n"));
    free(s);
    http_request_free(&r);
}

/* ---- permessage-deflate in the handshake ---- */

static const ws_deflate_config DEFLATE_ON = {
    .enabled = true,
    .server_max_window_bits = 15,
    .client_max_window_bits = 15,
    .level = 6,
    .min_size = 0,
    .client_no_context_takeover = false,
};

/* Every Sec-WebSocket-Extensions header counts, in order: the first
 * header's only offer is declined (unknown parameter), the second's is
 * taken. */
Test(handshake_deflate, offers_across_headers) {
    char *text = build((req_spec){.extra = "Sec-WebSocket-Extensions: permessage-deflate; foo\r\n"
                                           "Sec-WebSocket-Extensions: x-other, permessage-deflate; "
                                           "server_max_window_bits=11\r\n"});
    http_request r;
    load(&r, text);
    ws_deflate_params p;
    char ext[WS_DEFLATE_RESPONSE_MAX];
    cr_assert(ws_handshake_deflate(&r, &DEFLATE_ON, &p, ext));
    cr_expect_str_eq(ext,
                     "permessage-deflate; server_no_context_takeover; server_max_window_bits=11");
    cr_expect_eq(p.server_max_window_bits, 11);
    size_t len;
    char *resp = ws_handshake_response_ext(ACCEPT, "chat", ext, &len);
    cr_expect_str_eq(resp,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                     "Sec-WebSocket-Protocol: chat\r\n"
                     "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                     "server_max_window_bits=11\r\n\r\n");
    cr_expect_eq(len, strlen(resp));
    free(resp);
    http_request_free(&r);
    free(text);
}

Test(handshake_deflate, nothing_to_answer) {
    char *text = build((req_spec){.extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n"});
    http_request r;
    load(&r, text);
    ws_deflate_params p;
    char ext[WS_DEFLATE_RESPONSE_MAX];
    ws_deflate_config off = DEFLATE_ON;
    off.enabled = false;
    cr_expect_not(ws_handshake_deflate(&r, &off, &p, ext)); /* off by configuration */
    http_request_free(&r);
    free(text);

    text = build((req_spec){.extra = NULL});
    load(&r, text);
    cr_expect_not(ws_handshake_deflate(&r, &DEFLATE_ON, &p, ext)); /* nothing offered */
    size_t len;
    char *resp = ws_handshake_response_ext(ACCEPT, NULL, NULL, &len);
    char *old = ws_handshake_response(ACCEPT, NULL, &len);
    cr_expect_str_eq(resp, old);
    cr_expect_null(strstr(resp, "Extensions"));
    free(resp);
    free(old);
    http_request_free(&r);
    free(text);
}
