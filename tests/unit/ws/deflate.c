/* Unit tests for permessage-deflate (src/ws/deflate.c and its use in
 * src/ws/frame.c): negotiation per RFC 7692 section 7, the shared
 * compressed forms of frames, and the parser's inflate path with its
 * limits. Parser runs feed the same bytes whole, one byte at a time and in
 * 7-byte chunks and require the same outcome. */
#include <criterion/criterion.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ws/deflate.h"
#include "ws/frame.h"

static uint8_t *sample(size_t len, int kind);

/* ------------------------------------------------------------ negotiation */

static ws_deflate_config cfg_default(void) {
    return (ws_deflate_config){.enabled = true,
                               .server_max_window_bits = 15,
                               .client_max_window_bits = 15,
                               .level = 6,
                               .min_size = 0,
                               .client_no_context_takeover = false};
}

static char RESP[WS_DEFLATE_RESPONSE_MAX];
static ws_deflate_params PARAMS;

/* Negotiate the header values (NULL-terminated list); returns the response
 * or NULL when nothing is accepted. */
static const char *neg_list(const ws_deflate_config *cfg, const char *const *values) {
    size_t n = 0, lens[8];
    while (values[n]) {
        lens[n] = strlen(values[n]);
        n++;
    }
    memset(RESP, 'X', sizeof RESP);
    memset(&PARAMS, 0xAA, sizeof PARAMS);
    return ws_deflate_negotiate(cfg, values, lens, n, &PARAMS, RESP) ? RESP : NULL;
}

static const char *neg(const ws_deflate_config *cfg, const char *value) {
    const char *values[] = {value, NULL};
    return neg_list(cfg, values);
}

#define BASE "permessage-deflate; server_no_context_takeover"

Test(negotiate, disabled_answers_nothing) {
    ws_deflate_config c = cfg_default();
    c.enabled = false;
    cr_expect_null(neg(&c, "permessage-deflate"));
}

Test(negotiate, plain_offer) {
    ws_deflate_config c = cfg_default();
    /* The server always takes server_no_context_takeover (RFC 7692
     * 7.1.1.1: it may, offered or not) so frames can be shared. */
    cr_expect_str_eq(neg(&c, "permessage-deflate"), BASE);
    cr_expect_eq(PARAMS.server_max_window_bits, 15);
    cr_expect_eq(PARAMS.client_max_window_bits, 15);
    cr_expect_not(PARAMS.client_no_context_takeover);
    cr_expect_eq(PARAMS.level, 6);
    cr_expect_eq(PARAMS.min_size, 0);
    /* Requesting client_no_context_takeover: the server may add it. */
    c.client_no_context_takeover = true;
    c.min_size = 100;
    cr_expect_str_eq(neg(&c, "permessage-deflate"), BASE "; client_no_context_takeover");
    cr_expect(PARAMS.client_no_context_takeover);
    cr_expect_eq(PARAMS.min_size, 100);
}

/* What browsers send. */
Test(negotiate, browser_offers) {
    ws_deflate_config c = cfg_default();
    cr_expect_str_eq(neg(&c, "permessage-deflate; client_max_window_bits"), BASE);
    cr_expect_eq(PARAMS.client_max_window_bits, 15);
    cr_expect_str_eq(neg(&c, "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"),
                     BASE);
}

/* The examples of RFC 7692 section 5 and 7.1. */
Test(negotiate, rfc_examples) {
    ws_deflate_config c = cfg_default();
    /* The client offers server_no_context_takeover itself. */
    cr_expect_str_eq(neg(&c, "permessage-deflate; server_no_context_takeover"), BASE);
    /* client_no_context_takeover offered: echoed, and the inflater may
     * reset per message. */
    cr_expect_str_eq(neg(&c, "permessage-deflate; client_no_context_takeover"),
                     BASE "; client_no_context_takeover");
    cr_expect(PARAMS.client_no_context_takeover);
    /* Two offers; the first is acceptable. */
    cr_expect_str_eq(neg(&c,
                         "permessage-deflate; client_max_window_bits; server_max_window_bits=10, "
                         "permessage-deflate; client_max_window_bits"),
                     BASE "; server_max_window_bits=10");
    cr_expect_eq(PARAMS.server_max_window_bits, 10);
    cr_expect_str_eq(neg(&c, "permessage-deflate; server_max_window_bits=10, permessage-deflate"),
                     BASE "; server_max_window_bits=10");
}

Test(negotiate, server_window_bits) {
    ws_deflate_config c = cfg_default();
    for (int b = 8; b <= 15; b++) {
        char offer[80], want[120];
        snprintf(offer, sizeof offer, "permessage-deflate; server_max_window_bits=%d", b);
        snprintf(want, sizeof want, BASE "; server_max_window_bits=%d", b);
        cr_expect_str_eq(neg(&c, offer), want);
        cr_expect_eq(PARAMS.server_max_window_bits, b);
        /* zlib's raw deflate has no 8: it compresses with 9, whose matches
         * stay within 250 bytes (see the round trip below). */
        cr_expect_eq(ws_deflate_compress_bits(&PARAMS), b == 8 ? 9 : b);
    }
    /* A smaller configured window is answered, offered or not. */
    c.server_max_window_bits = 12;
    cr_expect_str_eq(neg(&c, "permessage-deflate"), BASE "; server_max_window_bits=12");
    cr_expect_str_eq(neg(&c, "permessage-deflate; server_max_window_bits=14"),
                     BASE "; server_max_window_bits=12");
    cr_expect_str_eq(neg(&c, "permessage-deflate; server_max_window_bits=9"),
                     BASE "; server_max_window_bits=9");
    cr_expect_eq(PARAMS.server_max_window_bits, 9);
}

Test(negotiate, client_window_bits) {
    ws_deflate_config c = cfg_default();
    /* A value the server does not lower needs no answer: the client uses
     * at most what it offered, and the inflater needs no more. */
    cr_expect_str_eq(neg(&c, "permessage-deflate; client_max_window_bits=10"), BASE);
    cr_expect_eq(PARAMS.client_max_window_bits, 10);
    c.client_max_window_bits = 9;
    cr_expect_str_eq(neg(&c, "permessage-deflate; client_max_window_bits=10"),
                     BASE "; client_max_window_bits=9");
    cr_expect_eq(PARAMS.client_max_window_bits, 9);
    cr_expect_str_eq(neg(&c, "permessage-deflate; client_max_window_bits"),
                     BASE "; client_max_window_bits=9");
    cr_expect_eq(PARAMS.client_max_window_bits, 9);
    /* An offer without the parameter cannot be limited (RFC 7692 7.1.2.2:
     * the response must not carry it): declined, the next one taken. */
    cr_expect_null(neg(&c, "permessage-deflate"));
    cr_expect_str_eq(neg(&c, "permessage-deflate, permessage-deflate; client_max_window_bits=8"),
                     BASE);
    cr_expect_eq(PARAMS.client_max_window_bits, 8);
    cr_expect_str_eq(neg(&c, "permessage-deflate, permessage-deflate; client_max_window_bits=15"),
                     BASE "; client_max_window_bits=9");
}

Test(negotiate, everything_at_once_fits) {
    ws_deflate_config c = cfg_default();
    c.client_max_window_bits = 10;
    c.server_max_window_bits = 10;
    c.client_no_context_takeover = true;
    const char *r =
        neg(&c, "permessage-deflate; client_max_window_bits; server_max_window_bits=11; "
                "server_no_context_takeover; client_no_context_takeover");
    cr_expect_str_eq(r, BASE "; client_no_context_takeover; server_max_window_bits=10; "
                             "client_max_window_bits=10");
    cr_expect_lt(strlen(r), WS_DEFLATE_RESPONSE_MAX);
}

/* RFC 7692 section 5: an offer with an unknown, duplicate or invalid
 * parameter is declined; the server then tries the next offer. */
Test(negotiate, bad_offers_declined) {
    static const char *bad[] = {
        "permessage-deflate; foo",
        "permessage-deflate; foo=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=1O",
        "permessage-deflate; server_max_window_bits=-9",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; server_max_window_bits=9999999999999999999999",
        "permessage-deflate; server_max_window_bits=\"\"",
        "permessage-deflate; server_max_window_bits=\"1 0\"",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"x\"",
        /* syntax */
        "permessage-deflate;",
        "permessage-deflate; ;",
        "permessage-deflate; =10",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10 11",
        "permessage-deflate; server_max_window_bits==10",
        "permessage-deflate; a@b",
        "permessage-deflate\x01",
    };
    ws_deflate_config c = cfg_default();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_null(neg(&c, bad[i]), "accepted: %s", bad[i]);
        /* The next offer in the same header is still considered (except
         * after an unterminated quote, which swallows the header). */
        char two[256];
        snprintf(two, sizeof two, "%s, permessage-deflate; server_max_window_bits=12", bad[i]);
        const char *r = neg(&c, two);
        if (strstr(bad[i], "=\"10")) cr_expect_null(r, "%s", two);
        else
            cr_expect(r && strcmp(r, BASE "; server_max_window_bits=12") == 0, "%s -> %s", two,
                      r ? r : "(none)");
        /* And a later header always is. */
        const char *values[] = {bad[i], "permessage-deflate; server_max_window_bits=13", NULL};
        r = neg_list(&c, values);
        cr_expect(r && strcmp(r, BASE "; server_max_window_bits=13") == 0, "%s -> %s", bad[i],
                  r ? r : "(none)");
    }
}

Test(negotiate, syntax_accepted) {
    ws_deflate_config c = cfg_default();
    /* Whitespace, empty list elements, case, quoted values (RFC 6455 9.1:
     * the unquoted value must be a token) and escapes. */
    cr_expect_str_eq(neg(&c, "  permessage-deflate ;  server_max_window_bits = 10 ,"),
                     BASE "; server_max_window_bits=10");
    cr_expect_str_eq(neg(&c, ", ,permessage-deflate"), BASE);
    cr_expect_str_eq(neg(&c, "\tPerMessage-Deflate;\tServer_Max_Window_Bits=11"),
                     BASE "; server_max_window_bits=11");
    cr_expect_str_eq(neg(&c, "permessage-deflate; server_max_window_bits=\"10\""),
                     BASE "; server_max_window_bits=10");
    cr_expect_str_eq(neg(&c, "permessage-deflate; server_max_window_bits=\"1\\0\""),
                     BASE "; server_max_window_bits=10");
    cr_expect_str_eq(neg(&c, "permessage-deflate; client_max_window_bits=\"9\""), BASE);
    cr_expect_eq(PARAMS.client_max_window_bits, 9);
    /* A comma inside another extension's quoted value does not split. */
    cr_expect_str_eq(neg(&c, "x-foo; a=\"b, permessage-deflate\", permessage-deflate; "
                             "server_max_window_bits=9"),
                     BASE "; server_max_window_bits=9");
    /* Other extensions are skipped, whatever their parameters. */
    cr_expect_null(neg(&c, "x-webkit-deflate-frame; max_window_bits=10"));
    cr_expect_null(neg(&c, ""));
    cr_expect_null(neg(&c, "permessage-deflatex"));
    const char *none[] = {NULL};
    cr_expect_null(neg_list(&c, none));
}

/* ------------------------------------------------------- client frames */

typedef struct {
    uint8_t *d;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
        cr_assert_not_null(b->d);
    }
    if (n) memcpy(b->d + b->n, s, n);
    b->n += n;
}

static const uint8_t MASK[4] = {0x5C, 0x01, 0xE3, 0x9A};

/* One masked client frame with first byte b0. */
static void cframe(bytes *b, uint8_t b0, const void *payload, size_t plen) {
    uint8_t h[10];
    size_t hl;
    h[0] = b0;
    if (plen < 126) {
        h[1] = (uint8_t)(0x80 | plen);
        hl = 2;
    } else if (plen <= 0xFFFF) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(plen >> 8);
        h[3] = (uint8_t)plen;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)plen >> (56 - 8 * i));
        hl = 10;
    }
    put(b, h, hl);
    put(b, MASK, 4);
    size_t start = b->n;
    put(b, payload, plen);
    for (size_t i = 0; i < plen; i++) b->d[start + i] ^= MASK[i & 3];
}

/* A server frame as a client would send it: the same first byte and
 * payload, masked. */
static void from_server_frame(bytes *b, const ws_frame *f) {
    const uint8_t *pl = ws_frame_payload((ws_frame *)f);
    cframe(b, f->data[0], pl, f->len - (size_t)(pl - f->data));
}

/* Raw DEFLATE of in with a sync flush and the 4-byte tail removed, as a
 * client compresses (independent of the code under test). */
static uint8_t *client_deflate(const void *in, size_t len, int bits, size_t *out_len) {
    z_stream zs = {0};
    cr_assert_eq(deflateInit2(&zs, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, len) + 64;
    uint8_t *out = malloc(cap);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    cr_assert_eq(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    cr_assert_geq(n, 4);
    cr_assert_eq(memcmp(out + n - 4, "\x00\x00\xff\xff", 4), 0);
    *out_len = n - 4;
    return out;
}

/* ------------------------------------------------------------ parser runs */

typedef struct {
    int err;
    size_t events;
    uint8_t opcode[8];
    uint8_t *data[8]; /* the first 8 messages */
    size_t len[8];
    size_t peak_memory; /* ws_parser_memory, highest seen after a feed */
} outcome;

static void outcome_free(outcome *o) {
    for (size_t i = 0; i < 8; i++) free(o->data[i]);
    memset(o, 0, sizeof *o);
}

static ws_deflate_params params_of(int client_bits, bool no_context) {
    return (ws_deflate_params){.server_max_window_bits = 15,
                               .client_max_window_bits = (uint8_t)client_bits,
                               .client_no_context_takeover = no_context,
                               .level = 6,
                               .min_size = 0};
}

/* Feed in[0..n) in chunks (0 = whole) to a parser with deflate per params
 * (NULL: not negotiated). */
static void run(const uint8_t *in, size_t n, size_t maxm, const ws_deflate_params *params,
                size_t chunk, outcome *o) {
    memset(o, 0, sizeof *o);
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, in, n);
    ws_parser *p = ws_parser_new(0, maxm);
    if (params) ws_parser_enable_deflate(p, params);
    size_t off = 0;
    while (off < n && !o->err) {
        size_t c = chunk && chunk < n - off ? chunk : n - off;
        uint8_t *at = copy + off;
        size_t left = c;
        while (left) {
            ws_event ev;
            ssize_t rc = ws_parser_feed(p, at, left, &ev);
            size_t mem = ws_parser_memory(p);
            if (mem > o->peak_memory) o->peak_memory = mem;
            if (rc < 0) {
                o->err = (int)rc;
                break;
            }
            if (ev.type == WS_EV_MESSAGE) {
                if (o->events < 8) {
                    o->opcode[o->events] = ev.opcode;
                    o->data[o->events] = malloc(ev.len + 1);
                    memcpy(o->data[o->events], ev.data, ev.len);
                    o->len[o->events] = ev.len;
                }
                o->events++;
            }
            at += rc;
            left -= (size_t)rc;
        }
        off += c;
    }
    ws_parser_free(p);
    free(copy);
}

/* Run whole, byte by byte (for modest inputs) and in 7-byte chunks; the
 * outcomes must agree. Returns the whole run's. */
static void check(const bytes *b, size_t maxm, const ws_deflate_params *params, outcome *o) {
    run(b->d, b->n, maxm, params, 0, o);
    size_t chunks[] = {1, 7, 4096};
    for (size_t k = 0; k < 3; k++) {
        if (chunks[k] == 1 && b->n > 20000) continue;
        outcome other;
        run(b->d, b->n, maxm, params, chunks[k], &other);
        cr_assert_eq(other.err, o->err, "chunk %zu: %d vs %d", chunks[k], other.err, o->err);
        cr_assert_eq(other.events, o->events, "chunk %zu", chunks[k]);
        for (size_t i = 0; i < o->events && i < 8; i++) {
            cr_assert_eq(other.len[i], o->len[i]);
            cr_assert_eq(memcmp(other.data[i], o->data[i], o->len[i]), 0);
        }
        outcome_free(&other);
    }
}

static void expect_hello(const bytes *b, const ws_deflate_params *params, size_t count) {
    outcome o;
    check(b, 0, params, &o);
    cr_expect_eq(o.err, 0, "%s", wsg_strerror(o.err));
    cr_expect_eq(o.events, count);
    for (size_t i = 0; i < count && i < o.events; i++) {
        cr_expect_eq(o.opcode[i], WS_OP_TEXT);
        cr_expect_eq(o.len[i], 5);
        cr_expect_eq(memcmp(o.data[i], "Hello", 5), 0);
    }
    outcome_free(&o);
}

/* RFC 7692 section 7.2.3: every example message says "Hello". */
Test(inflate, rfc_examples) {
    ws_deflate_params ctx = params_of(15, false);
    static const uint8_t one[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    bytes b = {0};
    cframe(&b, 0xC1, one, sizeof one); /* 7.2.3.1 */
    expect_hello(&b, &ctx, 1);
    b.n = 0; /* 7.2.3.1, fragmented */
    cframe(&b, 0x41, one, 3);
    cframe(&b, 0x80, one + 3, 4);
    expect_hello(&b, &ctx, 1);
    b.n = 0; /* 7.2.3.3: no compression (a stored block) */
    static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                     0x65, 0x6c, 0x6c, 0x6f, 0x00};
    cframe(&b, 0xC1, stored, sizeof stored);
    expect_hello(&b, &ctx, 1);
    b.n = 0; /* 7.2.3.4: BFINAL set; what follows the final block is ignored */
    static const uint8_t final[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    cframe(&b, 0xC1, final, sizeof final);
    cframe(&b, 0xC1, one, sizeof one); /* and the next message still inflates */
    expect_hello(&b, &ctx, 2);
    b.n = 0; /* 7.2.3.5: two DEFLATE blocks in one message */
    static const uint8_t two[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                  0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
    cframe(&b, 0xC1, two, sizeof two);
    expect_hello(&b, &ctx, 1);
    b.n = 0; /* an empty compressed fragment in the middle */
    cframe(&b, 0x41, one, 3);
    cframe(&b, 0x00, "", 0);
    cframe(&b, 0x80, one + 3, 4);
    expect_hello(&b, &ctx, 1);
    b.n = 0; /* compressed and plain messages mixed */
    cframe(&b, 0x81, "Hello", 5);
    cframe(&b, 0xC1, one, sizeof one);
    cframe(&b, 0x81, "Hello", 5);
    expect_hello(&b, &ctx, 3);
    free(b.d);
}

/* 7.2.3.2: the second message refers to the first one's window. */
Test(inflate, context_takeover) {
    static const uint8_t first[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t second[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    bytes b = {0};
    cframe(&b, 0xC1, first, sizeof first);
    cframe(&b, 0xC1, second, sizeof second);
    ws_deflate_params ctx = params_of(15, false);
    expect_hello(&b, &ctx, 2);
    /* With client_no_context_takeover the window is gone: the reference
     * is invalid data, 1007. */
    ws_deflate_params reset = params_of(15, true);
    outcome o;
    check(&b, 0, &reset, &o);
    cr_expect_eq(o.events, 1);
    cr_expect_eq(o.err, WSG_E_WS_DEFLATE);
    cr_expect_eq(wsg_err_close_code(o.err), 1007);
    outcome_free(&o);
    free(b.d);
}

Test(inflate, rsv_rules) {
    static const uint8_t one[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    ws_deflate_params pd = params_of(15, false);
    struct {
        uint8_t b0;
        bool negotiated;
    } bad[] = {
        {0xC1, false},               /* RSV1 without the extension */
        {0xC2, false}, {0xA1, true}, /* RSV2 */
        {0x91, true},                /* RSV3 */
        {0xE1, true},                /* RSV1 + RSV2 */
        {0xC9, true},                /* RSV1 on a ping */
        {0xCA, true},                /* on a pong */
        {0xC8, true},                /* on a close */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bytes b = {0};
        cframe(&b, bad[i].b0, one, sizeof one);
        outcome o;
        check(&b, 0, bad[i].negotiated ? &pd : NULL, &o);
        cr_expect_eq(o.err, WSG_E_WS_RSV, "b0 %02x: %s", bad[i].b0, wsg_strerror(o.err));
        cr_expect_eq(wsg_err_close_code(o.err), 1002);
        outcome_free(&o);
        free(b.d);
    }
    /* RSV1 on a continuation frame, compressed message or not. */
    for (int first = 0; first < 2; first++) {
        bytes b = {0};
        if (first) cframe(&b, 0x41, one, 3);
        else cframe(&b, 0x01, "Hel", 3);
        cframe(&b, 0xC0, one + 3, 4);
        outcome o;
        check(&b, 0, &pd, &o);
        cr_expect_eq(o.err, WSG_E_WS_RSV);
        outcome_free(&o);
        free(b.d);
    }
    /* A control frame inside a compressed message is fine. */
    bytes b = {0};
    cframe(&b, 0x41, one, 3);
    cframe(&b, 0x89, "p", 1);
    cframe(&b, 0x80, one + 3, 4);
    expect_hello(&b, &pd, 1);
    free(b.d);
    /* Binary compressed. */
    b = (bytes){0};
    cframe(&b, 0xC2, one, sizeof one);
    outcome o;
    check(&b, 0, &pd, &o);
    cr_expect_eq(o.err, 0);
    cr_expect_eq(o.opcode[0], WS_OP_BINARY);
    cr_expect_eq(o.len[0], 5);
    outcome_free(&o);
    free(b.d);
}

Test(inflate, invalid_data_is_1007) {
    ws_deflate_params pd = params_of(15, false);
    static const uint8_t reserved_btype[] = {0xff, 0xff, 0xff};
    static const uint8_t bad_stored[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'H'}; /* NLEN wrong */
    /* A valid stream cut inside a block: the message ends mid-block. */
    size_t n;
    uint8_t *text = (uint8_t *)strdup("a message long enough to be cut in the middle of its block");
    uint8_t *cut = client_deflate(text, strlen((char *)text), 15, &n);
    const struct {
        const uint8_t *d;
        size_t n;
    } cases[] = {{reserved_btype, 3}, {bad_stored, 6}, {cut, n / 2}};
    for (size_t i = 0; i < 3; i++) {
        bytes b = {0};
        cframe(&b, 0xC2, cases[i].d, cases[i].n);
        outcome o;
        check(&b, 0, &pd, &o);
        cr_expect_eq(o.err, WSG_E_WS_DEFLATE, "case %zu: %s", i, wsg_strerror(o.err));
        cr_expect_eq(wsg_err_close_code(o.err), 1007);
        cr_expect_str_eq(wsg_strerror(o.err), "invalid compressed data");
        outcome_free(&o);
        free(b.d);
    }
    free(cut);
    free(text);
}

/* UTF-8 is checked on the inflated text, as it comes out. */
Test(inflate, utf8_after_inflate) {
    ws_deflate_params pd = params_of(15, false);
    size_t n;
    uint8_t *c = client_deflate("ok \xed\xa0\x80 bad", 10, 15, &n);
    bytes b = {0};
    cframe(&b, 0xC1, c, n);
    outcome o;
    check(&b, 0, &pd, &o);
    cr_expect_eq(o.err, WSG_E_WS_UTF8);
    outcome_free(&o);
    free(c);
    /* A character split across compressed fragments is fine. */
    const char *text = "caf\xc3\xa9 \xe2\x82\xac";
    c = client_deflate(text, strlen(text), 15, &n);
    b.n = 0;
    cframe(&b, 0x41, c, 1);
    for (size_t i = 1; i + 1 < n; i++) cframe(&b, 0x00, c + i, 1);
    cframe(&b, 0x80, c + n - 1, 1);
    check(&b, 0, &pd, &o);
    cr_expect_eq(o.err, 0);
    cr_expect_eq(o.len[0], strlen(text));
    cr_expect_eq(memcmp(o.data[0], text, o.len[0]), 0);
    outcome_free(&o);
    free(c);
    free(b.d);
}

/* The limit is on the inflated size, exactly: a message of the limit
 * passes, one byte more is 1009, while the compressed bytes are tiny. */
Test(inflate, limit_is_exact) {
    ws_deflate_params pd = params_of(15, true);
    const size_t limit = 5000;
    for (size_t len = limit - 1; len <= limit + 1; len++) {
        uint8_t *plain = calloc(len, 1);
        size_t n;
        uint8_t *c = client_deflate(plain, len, 15, &n);
        cr_assert_lt(n, 100);
        bytes b = {0};
        cframe(&b, 0xC2, c, n);
        outcome o;
        check(&b, limit, &pd, &o);
        if (len <= limit) {
            cr_expect_eq(o.err, 0, "%zu: %s", len, wsg_strerror(o.err));
            cr_expect_eq(o.len[0], len);
        } else {
            cr_expect_eq(o.err, WSG_E_WS_MESSAGE_TOO_BIG, "%zu: %s", len, wsg_strerror(o.err));
            cr_expect_eq(wsg_err_close_code(o.err), 1009);
        }
        outcome_free(&o);
        free(b.d);
        free(c);
        free(plain);
    }
}

/* A bomb: 10 MB of zeros compress to about 10 KB; with a 1 MiB limit the
 * parser fails with 1009 holding no more than the limit (its own count, and
 * the heap's), single frame or fragmented. */
Test(inflate, bomb_costs_no_more_than_the_limit) {
    const size_t big = 10u * 1000 * 1000, limit = 1u << 20;
    uint8_t *zeros = calloc(big, 1);
    size_t n;
    uint8_t *c = client_deflate(zeros, big, 15, &n);
    free(zeros);
    cr_assert_lt(n, 20000, "bomb is %zu bytes", n);
    ws_deflate_params pd = params_of(15, false);
    for (int fragmented = 0; fragmented < 2; fragmented++) {
        bytes b = {0};
        if (fragmented) {
            size_t q = n / 4;
            cframe(&b, 0x42, c, q);
            cframe(&b, 0x00, c + q, q);
            cframe(&b, 0x00, c + 2 * q, q);
            cframe(&b, 0x80, c + 3 * q, n - 3 * q);
        } else {
            cframe(&b, 0xC2, c, n);
        }
        struct mallinfo2 before = mallinfo2();
        outcome o;
        run(b.d, b.n, limit, &pd, 0, &o);
        cr_expect_eq(o.err, WSG_E_WS_MESSAGE_TOO_BIG, "%s", wsg_strerror(o.err));
        cr_expect_eq(o.events, 0);
        /* the message buffer (at most the limit), the inflate state and
         * window, the parser */
        cr_expect_leq(o.peak_memory, limit + 64 * 1024, "peak %zu", o.peak_memory);
        cr_expect_geq(o.peak_memory, limit);
        outcome_free(&o);
        /* The same through the heap's own count, with the parser kept
         * alive at its peak. */
        uint8_t *copy = malloc(b.n);
        memcpy(copy, b.d, b.n);
        ws_parser *p = ws_parser_new(0, limit);
        ws_parser_enable_deflate(p, &pd);
        size_t off = 0;
        ssize_t rc = 0;
        while (off < b.n) {
            ws_event ev;
            rc = ws_parser_feed(p, copy + off, b.n - off, &ev);
            if (rc < 0) break;
            off += (size_t)rc;
        }
        cr_expect_eq(rc, WSG_E_WS_MESSAGE_TOO_BIG);
        struct mallinfo2 after = mallinfo2();
        if (before.uordblks || after.uordblks) { /* 0 under sanitizers */
            size_t grown = after.uordblks > before.uordblks ? after.uordblks - before.uordblks : 0;
            cr_expect_leq(grown, limit + 64 * 1024 + b.n, "heap grew %zu", grown);
        }
        ws_parser_free(p);
        free(copy);
        free(b.d);
    }
    free(c);
}

/* The wire limit still bounds each compressed frame. */
Test(inflate, frame_limit_on_wire_bytes) {
    uint8_t *plain = malloc(3000);
    for (size_t i = 0; i < 3000; i++) plain[i] = (uint8_t)(i * 7919 >> 3);
    size_t n;
    uint8_t *c = client_deflate(plain, 3000, 15, &n);
    bytes b = {0};
    cframe(&b, 0xC2, c, n);
    ws_parser *p = ws_parser_new(n - 1, 0);
    ws_deflate_params pd = params_of(15, false);
    ws_parser_enable_deflate(p, &pd);
    ws_event ev;
    cr_expect_eq(ws_parser_feed(p, b.d, b.n, &ev), WSG_E_WS_FRAME_TOO_BIG);
    ws_parser_free(p);
    free(b.d);
    free(c);
    free(plain);
}

/* The inflate state's memory: kept between messages only when the client
 * takes over context; otherwise released by a trim and an idle parser may
 * be dropped. */
Test(inflate, state_memory_and_release) {
    static const uint8_t one[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    for (int no_context = 0; no_context < 2; no_context++) {
        ws_deflate_params pd = params_of(15, no_context);
        ws_parser *p = ws_parser_new(0, 0);
        size_t base = ws_parser_memory(p);
        ws_parser_enable_deflate(p, &pd);
        cr_expect_eq(ws_parser_memory(p), base, "no state before the first message");
        bytes b = {0};
        cframe(&b, 0xC1, one, sizeof one);
        ws_event ev;
        cr_assert_eq(ws_parser_feed(p, b.d, b.n, &ev), (ssize_t)b.n);
        cr_assert_eq(ev.type, WS_EV_MESSAGE);
        size_t state = ws_parser_memory(p) - base - 256; /* less the message buffer */
        /* zlib's inflate state (about 7 KB) and its 32 KiB window */
        cr_expect_geq(state, 32768 + 6000, "state %zu", state);
        cr_expect_leq(state, 32768 + 12000, "state %zu", state);
        ws_parser_trim(p);
        if (no_context) {
            cr_expect(ws_parser_idle(p));
            cr_expect_eq(ws_parser_memory(p), base);
        } else {
            cr_expect_not(ws_parser_idle(p), "the window must be kept");
            cr_expect_geq(ws_parser_memory(p), base + 32768);
        }
        /* Another message works either way after the trim. */
        b.n = 0;
        cframe(&b, 0xC1, one, sizeof one);
        cr_assert_eq(ws_parser_feed(p, b.d, b.n, &ev), (ssize_t)b.n);
        cr_expect_eq(ev.len, 5);
        cr_expect_eq(memcmp(ev.data, "Hello", 5), 0);
        ws_parser_free(p);
        free(b.d);
    }
    /* The inflate window is 32 KiB whatever the client was asked to use
     * (see ws_inflater_new): the state does not shrink with it. */
    ws_deflate_params small = params_of(9, true);
    ws_parser *p = ws_parser_new(0, 0);
    ws_parser_enable_deflate(p, &small);
    bytes b = {0};
    cframe(&b, 0xC1, one, sizeof one);
    ws_event ev;
    cr_assert_eq(ws_parser_feed(p, b.d, b.n, &ev), (ssize_t)b.n);
    cr_expect_geq(ws_parser_memory(p), 32768 + 6000);
    ws_parser_free(p);
    free(b.d);
}

/* A client that overreaches its negotiated window is not caught or let
 * through depending on how its bytes are split: a match 400 bytes back in
 * a message of a client told to use 9 bits (512) or 8 (256) inflates the
 * same whole and byte by byte. */
Test(inflate, window_verdict_does_not_depend_on_split) {
    uint8_t *d = malloc(3000);
    uint8_t *block = sample(400, 2);
    for (size_t i = 0; i < 3000; i++) d[i] = block[i % 400];
    size_t n;
    uint8_t *c = client_deflate(d, 3000, 15, &n);
    bytes b = {0};
    cframe(&b, 0xC2, c, n);
    for (int bits = 8; bits <= 9; bits++) {
        ws_deflate_params pd = params_of(bits, true);
        outcome o;
        check(&b, 0, &pd, &o); /* whole, 1-, 7- and 4096-byte chunks agree */
        cr_expect_eq(o.err, 0, "%s", wsg_strerror(o.err));
        cr_expect_eq(o.len[0], 3000);
        cr_expect_eq(memcmp(o.data[0], d, 3000), 0);
        outcome_free(&o);
    }
    free(b.d);
    free(c);
    free(block);
    free(d);
}

/* ------------------------------------------------ outgoing compressed frames */

static ws_deflate_params srv_params(int server_bits, uint32_t min_size) {
    return (ws_deflate_params){.server_max_window_bits = (uint8_t)server_bits,
                               .client_max_window_bits = 15,
                               .client_no_context_takeover = false,
                               .level = 6,
                               .min_size = min_size};
}

static uint8_t *sample(size_t len, int kind) {
    uint8_t *d = malloc(len ? len : 1);
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        if (kind == 0) d[i] = (uint8_t)("{\"type\":\"chat\",\"text\":\"hello world\"} "[i % 38]);
        else if (kind == 1) d[i] = (uint8_t)(x >> 16); /* incompressible */
        else d[i] = (uint8_t)('a' + (x >> 16) % 4);
    }
    return d;
}

/* Compress -> inflate through the parser gives back every message, for
 * sizes 0..1 MiB, text and binary, compressible or not. */
Test(outgoing, round_trip_sizes) {
    static const size_t sizes[] = {0,     1,     2,     3,     4,      5,      63,
                                   64,    100,   125,   126,   127,    1000,   4096,
                                   65535, 65536, 65537, 70000, 131072, 500000, 1u << 20};
    ws_deflate_params sp = srv_params(15, 0);
    ws_deflate_params cp = params_of(15, false);
    for (int kind = 0; kind < 3; kind++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            size_t len = sizes[i];
            uint8_t *d = sample(len, kind);
            uint8_t op = kind == 1 ? WS_OP_BINARY : WS_OP_TEXT;
            ws_frame *f = ws_frame_new(op, d, len);
            ws_frame *z = ws_frame_deflated(f, &sp);
            size_t zlen = z->len - (size_t)(ws_frame_payload(z) - z->data);
            if (z != f) {
                cr_expect_eq(z->data[0], 0xC0 | op, "FIN, RSV1, opcode");
                cr_expect_lt(zlen, len, "compressed only when smaller");
            } else {
                cr_expect(kind == 1 || len < 8, "kind %d len %zu not compressed", kind, len);
            }
            bytes b = {0};
            from_server_frame(&b, z);
            from_server_frame(&b, z); /* twice: the window carries over */
            outcome o;
            if (len <= 70000) {
                check(&b, 0, &cp, &o);
            } else {
                run(b.d, b.n, 0, &cp, 0, &o);
            }
            cr_expect_eq(o.err, 0, "kind %d len %zu: %s", kind, len, wsg_strerror(o.err));
            cr_expect_eq(o.events, 2);
            for (size_t k = 0; k < 2 && k < o.events; k++) {
                cr_expect_eq(o.opcode[k], op);
                cr_expect_eq(o.len[k], len, "kind %d len %zu", kind, len);
                cr_expect(len == 0 || memcmp(o.data[k], d, len) == 0, "kind %d len %zu", kind, len);
            }
            outcome_free(&o);
            free(b.d);
            ws_frame_unref(z);
            ws_frame_unref(f);
            free(d);
        }
    }
}

/* A compressed message in several frames: the compressed form cut into
 * fragments inflates to the same message. */
Test(outgoing, fragmented_compressed) {
    size_t len = 20000;
    uint8_t *d = sample(len, 2);
    ws_frame *f = ws_frame_new(WS_OP_TEXT, d, len);
    ws_deflate_params sp = srv_params(15, 0);
    ws_frame *z = ws_frame_deflated(f, &sp);
    cr_assert_neq(z, f);
    const uint8_t *pl = ws_frame_payload(z);
    size_t zlen = z->len - (size_t)(pl - z->data);
    static const size_t parts[] = {1, 2, 3, 7, 100};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        bytes b = {0};
        size_t step = (zlen + parts[k] - 1) / parts[k], off = 0;
        for (size_t i = 0; off < zlen || i == 0; i++) {
            size_t take = zlen - off < step ? zlen - off : step;
            bool last = off + take == zlen;
            uint8_t b0 = (uint8_t)((last ? 0x80 : 0) | (i == 0 ? 0x40 | WS_OP_TEXT : 0));
            cframe(&b, b0, pl + off, take);
            off += take;
        }
        outcome o;
        check(&b, 0, &(ws_deflate_params){.client_max_window_bits = 15}, &o);
        cr_expect_eq(o.err, 0, "%zu parts: %s", parts[k], wsg_strerror(o.err));
        cr_expect_eq(o.len[0], len);
        cr_expect_eq(memcmp(o.data[0], d, len), 0);
        outcome_free(&o);
        free(b.d);
    }
    ws_frame_unref(z);
    ws_frame_unref(f);
    free(d);
}

/* Negotiated 8: compressed with 9, which a decoder with a 256-byte window
 * still decodes (zlib keeps matches within 250 bytes at 9). The data has
 * repeats 251..300 bytes back that a 9-bit window could reach. The decoder
 * is zlib with an 8-bit window, given one output byte per call so that it
 * checks every match against that window. */
Test(outgoing, window_8_is_decodable_with_256_bytes) {
    size_t len = 60000;
    uint8_t *d = malloc(len);
    uint8_t *block = sample(300, 2);
    for (size_t i = 0; i < len; i++) d[i] = block[i % (251 + (i / 3000) % 50)];
    ws_frame *f = ws_frame_new(WS_OP_BINARY, d, len);
    ws_deflate_params sp = srv_params(8, 0);
    ws_frame *z = ws_frame_deflated(f, &sp);
    cr_assert_neq(z, f);
    const uint8_t *pl = ws_frame_payload(z);
    size_t plen = z->len - (size_t)(pl - z->data);
    uint8_t *in = malloc(plen + 4);
    memcpy(in, pl, plen);
    memcpy(in + plen, "\x00\x00\xff\xff", 4);
    uint8_t *out = malloc(len + 1);
    z_stream zs = {0};
    cr_assert_eq(inflateInit2(&zs, -8), Z_OK);
    zs.next_in = in;
    zs.avail_in = (uInt)(plen + 4);
    size_t got = 0;
    int rc = Z_OK;
    while (rc == Z_OK && got <= len) {
        zs.next_out = out + got;
        zs.avail_out = 1;
        rc = inflate(&zs, Z_SYNC_FLUSH);
        got += 1 - zs.avail_out;
        if (zs.avail_in == 0 && zs.avail_out == 1) break;
    }
    cr_expect(rc == Z_OK || rc == Z_BUF_ERROR, "inflate: %d %s", rc, zs.msg ? zs.msg : "");
    cr_expect_eq(got, len);
    cr_expect_eq(memcmp(out, d, len), 0);
    inflateEnd(&zs);
    /* The same decoder fails on a 15-bit stream of the same data (matches
     * up to 300 bytes back), so the check above has teeth. */
    size_t c15n;
    uint8_t *c15 = client_deflate(d, len, 15, &c15n);
    uint8_t *in15 = malloc(c15n + 4);
    memcpy(in15, c15, c15n);
    memcpy(in15 + c15n, "\x00\x00\xff\xff", 4);
    cr_assert_eq(inflateInit2(&zs, -8), Z_OK);
    zs.next_in = in15;
    zs.avail_in = (uInt)(c15n + 4);
    got = 0;
    rc = Z_OK;
    while (rc == Z_OK && got < len) {
        zs.next_out = out + got;
        zs.avail_out = 1;
        rc = inflate(&zs, Z_SYNC_FLUSH);
        got += 1 - zs.avail_out;
    }
    cr_expect_eq(rc, Z_DATA_ERROR, "a 15-bit stream with far matches must fail at 8 bits");
    inflateEnd(&zs);
    free(in15);
    free(c15);
    free(out);
    free(in);
    ws_frame_unref(z);
    ws_frame_unref(f);
    free(block);
    free(d);
}

Test(outgoing, shared_once_per_parameter_set) {
    uint8_t *d = sample(1000, 0);
    ws_frame *f = ws_frame_new(WS_OP_TEXT, d, 1000);
    ws_deflate_params a = srv_params(15, 64), a2 = srv_params(15, 200), b = srv_params(10, 64);
    ws_frame *za = ws_frame_deflated(f, &a);
    cr_expect_neq(za, f);
    cr_expect_eq(ws_frame_deflated(f, &a), za, "the same bytes for every member");
    cr_expect_eq(ws_frame_deflated(f, &a2), za, "min_size does not shape the bytes");
    ws_frame *zb = ws_frame_deflated(f, &b);
    cr_expect_neq(zb, za, "another window, another form");
    cr_expect_eq(ws_frame_deflated(f, &b), zb);
    cr_expect_eq(ws_frame_refcount(za), 4); /* three callers and the list */
    cr_expect_eq(ws_frame_refcount(zb), 3);
    cr_expect_eq(ws_frame_refcount(f), 1);
    /* The plain frame goes first; its forms live on while queued. */
    ws_frame_unref(f);
    for (int i = 0; i < 3; i++) ws_frame_unref(za);
    ws_frame_unref(zb);
    ws_frame_unref(zb);
    free(d);
}

Test(outgoing, sent_plain) {
    uint8_t *d = sample(1000, 0);
    ws_deflate_params sp = srv_params(15, 64);
    /* below min_size */
    ws_frame *f = ws_frame_new(WS_OP_TEXT, d, 63);
    ws_frame *z = ws_frame_deflated(f, &sp);
    cr_expect_eq(z, f);
    cr_expect_eq(ws_frame_refcount(f), 2);
    ws_frame_unref(z);
    ws_frame_unref(f);
    /* control frames are never compressed (RFC 7692 6.1) */
    f = ws_frame_new(WS_OP_PING, d, 100);
    z = ws_frame_deflated(f, &sp);
    cr_expect_eq(z, f);
    ws_frame_unref(z);
    ws_frame_unref(f);
    f = ws_frame_close(1000, "a reason long enough to be worth compressing, if it were data");
    z = ws_frame_deflated(f, &sp);
    cr_expect_eq(z, f);
    ws_frame_unref(z);
    ws_frame_unref(f);
    /* incompressible: the plain frame, and the verdict is kept */
    uint8_t *r = sample(1000, 1);
    f = ws_frame_new(WS_OP_BINARY, r, 1000);
    z = ws_frame_deflated(f, &sp);
    cr_expect_eq(z, f);
    cr_expect_not_null(atomic_load(&f->deflated));
    ws_frame_unref(z);
    z = ws_frame_deflated(f, &sp);
    cr_expect_eq(z, f);
    ws_frame_unref(z);
    ws_frame_unref(f);
    free(r);
    /* a frame filled in by hand (a raw buffer): left alone */
    ws_frame *raw = malloc(sizeof(ws_frame) + 200);
    memset(raw, 0xEE, sizeof(ws_frame) + 200);
    atomic_init(&raw->refs, 1);
    raw->len = 200;
    raw->data[0] = 0x81;
    z = ws_frame_deflated(raw, &sp);
    cr_expect_eq(z, raw);
    ws_frame_unref(z);
    ws_frame_unref(raw); /* freed without touching the unset fields */
    free(d);
}

typedef struct {
    ws_frame *f;
    ws_deflate_params params;
    ws_frame *got[200];
} racer;

static void *race(void *arg) {
    racer *r = arg;
    for (int i = 0; i < 200; i++) r->got[i] = ws_frame_deflated(r->f, &r->params);
    return NULL;
}

/* Many threads asking at once publish one form per parameter set. */
Test(outgoing, concurrent_first_use) {
    for (int round = 0; round < 20; round++) {
        uint8_t *d = sample(4000, 2);
        ws_frame *f = ws_frame_new(WS_OP_TEXT, d, 4000);
        racer rs[6];
        pthread_t th[6];
        for (int i = 0; i < 6; i++) {
            rs[i].f = f;
            rs[i].params = srv_params(i % 2 ? 12 : 15, 0);
            cr_assert_eq(pthread_create(&th[i], NULL, race, &rs[i]), 0);
        }
        for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 200; k++) {
                cr_assert_eq(rs[i].got[k], rs[i % 2].got[0]);
                ws_frame_unref(rs[i].got[k]);
            }
        cr_assert_neq(rs[0].got[0], rs[1].got[0]);
        ws_frame_unref(f);
        free(d);
    }
}
