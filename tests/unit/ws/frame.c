/* Unit tests for the RFC 6455 codec (src/ws/frame.c).
 *
 * Most parser tests go through check(): it feeds the same bytes whole,
 * one byte at a time and in 7-byte chunks, and requires the three runs to
 * produce identical events and the identical final error, so a test written
 * for one split covers them all. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ws/frame.h"

/* ---- building client frames ---- */

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

static void put8(bytes *b, uint8_t v) { put(b, &v, 1); }

static const uint8_t MASK[4] = {0x37, 0xFA, 0x21, 0x3D};

/* lenform: 0 = minimal, 7/16/64 = force that length encoding (len_field is
 * then written as given, even when it disagrees with plen). */
static void frame_raw(bytes *b, uint8_t b0, int lenform, uint64_t len_field, bool masked,
                      const void *payload, size_t plen) {
    put8(b, b0);
    uint8_t mbit = masked ? 0x80 : 0;
    if (lenform == 0) lenform = len_field < 126 ? 7 : len_field <= 0xFFFF ? 16 : 64;
    if (lenform == 7) {
        put8(b, (uint8_t)(mbit | len_field));
    } else if (lenform == 16) {
        put8(b, mbit | 126);
        put8(b, (uint8_t)(len_field >> 8));
        put8(b, (uint8_t)len_field);
    } else {
        put8(b, mbit | 127);
        for (int i = 7; i >= 0; i--) put8(b, (uint8_t)(len_field >> (8 * i)));
    }
    if (masked) put(b, MASK, 4);
    size_t start = b->n;
    put(b, payload, plen);
    if (masked)
        for (size_t i = 0; i < plen; i++) b->d[start + i] ^= MASK[i & 3];
}

static void frame(bytes *b, bool fin, uint8_t op, const void *payload, size_t plen) {
    frame_raw(b, (uint8_t)((fin ? 0x80 : 0) | op), 0, plen, true, payload, plen);
}

static void frame_str(bytes *b, bool fin, uint8_t op, const char *s) {
    frame(b, fin, op, s, strlen(s));
}

/* ---- running the parser ---- */

typedef struct {
    ws_event_type type;
    uint8_t opcode;
    uint16_t code;
    uint8_t *data;
    size_t len;
} rec;

typedef struct {
    rec *ev;
    size_t n;
    int err;       /* 0 when every byte was consumed without error */
    size_t at_err; /* input bytes fed (not consumed) when the error came */
} result;

static void result_free(result *r) {
    for (size_t i = 0; i < r->n; i++) free(r->ev[i].data);
    free(r->ev);
    memset(r, 0, sizeof *r);
}

/* When set, run() releases the parser's idle buffers after every feed, as
 * the server's sweep may between any two reads. */
static bool TRIM;

/* Feed in[0..n) in chunks of `chunk` bytes (0 = all at once). */
static void run(const uint8_t *in, size_t n, size_t maxf, size_t maxm, size_t chunk, result *r) {
    memset(r, 0, sizeof *r);
    uint8_t *copy = malloc(n ? n : 1); /* the parser unmasks in place */
    if (n) memcpy(copy, in, n);
    ws_parser *p = ws_parser_new(maxf, maxm);
    size_t off = 0;
    while (off < n && !r->err) {
        size_t c = chunk && chunk < n - off ? chunk : n - off;
        uint8_t *at = copy + off;
        size_t left = c;
        while (left) {
            ws_event ev;
            ssize_t rc = ws_parser_feed(p, at, left, &ev);
            if (rc < 0) {
                r->err = (int)rc;
                r->at_err = off + c;
                break;
            }
            cr_assert_leq((size_t)rc, left);
            if (ev.type == WS_EV_NONE) {
                cr_assert_eq((size_t)rc, left, "no event yet input left over");
            } else {
                cr_assert_not_null(ev.data);
                r->ev = realloc(r->ev, (r->n + 1) * sizeof *r->ev);
                rec *e = &r->ev[r->n++];
                e->type = ev.type;
                e->opcode = ev.opcode;
                e->code = ev.close_code;
                e->len = ev.len;
                e->data = malloc(ev.len + 1);
                memcpy(e->data, ev.data, ev.len);
            }
            at += rc;
            left -= (size_t)rc;
            if (TRIM) {
                /* As the sweep does: an idle parser is dropped and a new
                 * one takes over; a busy one only lets go of its buffers. */
                if (ws_parser_idle(p)) {
                    ws_parser_free(p);
                    p = ws_parser_new(maxf, maxm);
                } else {
                    ws_parser_trim(p);
                }
            }
        }
        off += c;
    }
    ws_parser_free(p);
    free(copy);
}

static void same(const result *a, const result *b, const char *what) {
    cr_assert_eq(a->err, b->err, "%s: error %d vs %d", what, a->err, b->err);
    cr_assert_eq(a->n, b->n, "%s: %zu vs %zu events", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        cr_assert_eq(a->ev[i].type, b->ev[i].type, "%s: event %zu", what, i);
        cr_assert_eq(a->ev[i].opcode, b->ev[i].opcode);
        cr_assert_eq(a->ev[i].code, b->ev[i].code);
        cr_assert_eq(a->ev[i].len, b->ev[i].len);
        cr_assert_eq(memcmp(a->ev[i].data, b->ev[i].data, a->ev[i].len), 0);
    }
}

/* Run whole, byte by byte and 7 bytes at a time; require the same outcome. */
static void check(const bytes *in, size_t maxf, size_t maxm, result *r) {
    result one, seven;
    run(in->d, in->n, maxf, maxm, 0, r);
    run(in->d, in->n, maxf, maxm, 1, &one);
    run(in->d, in->n, maxf, maxm, 7, &seven);
    same(r, &one, "byte at a time");
    same(r, &seven, "7-byte chunks");
    result_free(&one);
    result_free(&seven);
}

static int check_err(const bytes *in, size_t maxf, size_t maxm) {
    result r;
    check(in, maxf, maxm, &r);
    int err = r.err;
    result_free(&r);
    return err;
}

static void expect_msg(const rec *e, uint8_t op, const void *data, size_t len) {
    cr_assert_eq(e->type, WS_EV_MESSAGE);
    cr_assert_eq(e->opcode, op);
    cr_assert_eq(e->len, len, "len %zu want %zu", e->len, len);
    cr_assert_eq(memcmp(e->data, data, len), 0);
}

/* ---- error table ---- */

Test(frame_errors, strerror_and_close_codes) {
    struct {
        int err;
        uint16_t close;
        const char *text;
    } t[] = {
#define ROW(name, val, close, http, text) {val, close, text},
        WSG_ERRNO_MAP(ROW)
#undef ROW
    };
    size_t ws = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (t[i].err > -101 || t[i].err <= -200) continue; /* the WS_ group */
        ws++;
        cr_assert_str_eq(wsg_strerror(t[i].err), t[i].text);
        cr_assert(t[i].close == 1002 || t[i].close == 1007 || t[i].close == 1009);
        cr_assert_eq(wsg_err_close_code(t[i].err), t[i].close);
    }
    cr_assert_eq(ws, 17);
    cr_assert_str_eq(wsg_strerror(-999), "unknown error");
    cr_assert_eq(wsg_err_close_code(-999), 0);
    cr_assert_eq(wsg_err_close_code(WSG_E_INVAL), 0); /* no close code of its own */
    cr_assert_eq(wsg_err_close_code(WSG_E_WS_UTF8), 1007);
    cr_assert_eq(wsg_err_close_code(WSG_E_WS_MESSAGE_TOO_BIG), 1009);
    cr_assert_str_eq(wsg_strerror(WSG_E_WS_UNMASKED), "client frame is not masked");
}

Test(frame_errors, unmasked) {
    bytes b = {0};
    frame_raw(&b, 0x81, 0, 2, false, "hi", 2);
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_UNMASKED);
    /* fails on the second byte, before the payload */
    result r;
    run(b.d, 2, 0, 0, 0, &r);
    cr_assert_eq(r.err, WSG_E_WS_UNMASKED);
    result_free(&r);
    free(b.d);
}

Test(frame_errors, rsv_bits) {
    for (uint8_t rsv = 0x10; rsv <= 0x40; rsv <<= 1) {
        bytes b = {0};
        frame_raw(&b, (uint8_t)(0x81 | rsv), 0, 1, true, "x", 1);
        cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_RSV);
        result r;
        run(b.d, 1, 0, 0, 0, &r); /* from the first byte alone */
        cr_assert_eq(r.err, WSG_E_WS_RSV);
        result_free(&r);
        free(b.d);
    }
}

Test(frame_errors, reserved_opcodes) {
    const uint8_t ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof ops; i++) {
        bytes b = {0};
        frame(&b, true, ops[i], "x", 1);
        cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_OPCODE, "op %x", ops[i]);
        free(b.d);
    }
}

Test(frame_errors, control_fragmented) {
    const uint8_t ops[] = {WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
    for (size_t i = 0; i < 3; i++) {
        bytes b = {0};
        frame(&b, false, ops[i], "x", 1);
        cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_CONTROL_FRAGMENTED);
        free(b.d);
    }
}

Test(frame_errors, control_too_long) {
    uint8_t pl[126] = {0};
    bytes b = {0};
    frame(&b, true, WS_OP_PING, pl, 126);
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_CONTROL_TOO_LONG);
    free(b.d);
    /* exactly 125 is fine */
    bytes ok = {0};
    frame(&ok, true, WS_OP_PING, pl, 125);
    result r;
    check(&ok, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.ev[0].type, WS_EV_PING);
    cr_assert_eq(r.ev[0].len, 125);
    result_free(&r);
    free(ok.d);
}

Test(frame_errors, non_minimal_length) {
    uint8_t pl[70000] = {0};
    struct {
        int form;
        size_t len;
    } t[] = {{16, 0}, {16, 125}, {64, 0}, {64, 125}, {64, 126}, {64, 65535}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        bytes b = {0};
        frame_raw(&b, 0x82, t[i].form, t[i].len, true, pl, t[i].len);
        cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_NON_MINIMAL_LENGTH, "case %zu", i);
        free(b.d);
    }
}

Test(frame_errors, length_top_bit) {
    bytes b = {0};
    frame_raw(&b, 0x82, 64, UINT64_C(1) << 63, true, NULL, 0);
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_LENGTH_TOP_BIT);
    free(b.d);
    bytes c = {0};
    frame_raw(&c, 0x82, 64, UINT64_MAX, true, NULL, 0);
    cr_assert_eq(check_err(&c, 0, 0), WSG_E_WS_LENGTH_TOP_BIT);
    free(c.d);
}

Test(frame_errors, unexpected_continuation) {
    bytes b = {0};
    frame_str(&b, true, WS_OP_CONTINUATION, "x");
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_UNEXPECTED_CONTINUATION);
    free(b.d);
    /* also after a completed message */
    bytes c = {0};
    frame_str(&c, true, WS_OP_TEXT, "a");
    frame_str(&c, true, WS_OP_CONTINUATION, "b");
    result r;
    check(&c, 0, 0, &r);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.err, WSG_E_WS_UNEXPECTED_CONTINUATION);
    result_free(&r);
    free(c.d);
}

Test(frame_errors, expected_continuation) {
    bytes b = {0};
    frame_str(&b, false, WS_OP_TEXT, "a");
    frame_str(&b, true, WS_OP_BINARY, "b");
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_EXPECTED_CONTINUATION);
    free(b.d);
}

Test(frame_errors, close_payload_one_byte) {
    bytes b = {0};
    frame(&b, true, WS_OP_CLOSE, "\x03", 1);
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_CLOSE_PAYLOAD);
    free(b.d);
}

Test(frame_errors, close_reason_utf8) {
    bytes b = {0};
    frame(&b, true, WS_OP_CLOSE, "\x03\xe8ok\xc0\xaf", 6);
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_CLOSE_UTF8);
    free(b.d);
    bytes c = {0}; /* truncated sequence at the end of the reason */
    frame(&c, true, WS_OP_CLOSE, "\x03\xe8\xe2\x82", 4);
    cr_assert_eq(check_err(&c, 0, 0), WSG_E_WS_CLOSE_UTF8);
    free(c.d);
}

Test(frame_errors, text_utf8) {
    bytes b = {0};
    frame(&b, true, WS_OP_TEXT, "ok\xed\xa0\x80", 5);
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_UTF8);
    free(b.d);
}

Test(frame_errors, data_after_close) {
    bytes b = {0};
    frame(&b, true, WS_OP_CLOSE, "\x03\xe8", 2);
    frame_str(&b, true, WS_OP_TEXT, "late");
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.ev[0].type, WS_EV_CLOSE);
    cr_assert_eq(r.err, WSG_E_WS_CLOSED);
    result_free(&r);
    free(b.d);
}

Test(frame_errors, error_is_sticky) {
    ws_parser *p = ws_parser_new(0, 0);
    uint8_t bad[] = {0x83, 0x80, 0, 0, 0, 0};
    uint8_t good[] = {0x81, 0x80, 0, 0, 0, 0};
    ws_event ev;
    cr_assert_eq(ws_parser_feed(p, bad, sizeof bad, &ev), WSG_E_WS_OPCODE);
    cr_assert_eq(ws_parser_feed(p, good, sizeof good, &ev), WSG_E_WS_OPCODE);
    cr_assert_eq(ev.type, WS_EV_NONE);
    ws_parser_free(p);
}

/* ---- limits ---- */

Test(frame_limits, frame_at_limit_and_over) {
    uint8_t pl[300];
    memset(pl, 'a', sizeof pl);
    bytes ok = {0}, over = {0};
    frame(&ok, true, WS_OP_BINARY, pl, 200);
    frame(&over, true, WS_OP_BINARY, pl, 201);
    result r;
    check(&ok, 200, 0, &r);
    cr_assert_eq(r.err, 0);
    expect_msg(&r.ev[0], WS_OP_BINARY, pl, 200);
    result_free(&r);
    cr_assert_eq(check_err(&over, 200, 0), WSG_E_WS_FRAME_TOO_BIG);
    /* decided from the 4-byte header, before mask or payload */
    run(over.d, 4, 200, 0, 0, &r);
    cr_assert_eq(r.err, WSG_E_WS_FRAME_TOO_BIG);
    result_free(&r);
    free(ok.d);
    free(over.d);
}

Test(frame_limits, frame_limit_from_huge_header) {
    bytes b = {0};
    frame_raw(&b, 0x82, 64, UINT64_C(1) << 40, true, NULL, 0);
    cr_assert_eq(check_err(&b, 4096, 0), WSG_E_WS_FRAME_TOO_BIG);
    bytes c = {0};
    frame_raw(&c, 0x82, 64, UINT64_C(1) << 40, true, NULL, 0);
    cr_assert_eq(check_err(&c, 0, 4096), WSG_E_WS_MESSAGE_TOO_BIG);
    free(b.d);
    free(c.d);
}

Test(frame_limits, unfragmented_message_at_limit_and_over) {
    uint8_t pl[300];
    memset(pl, 'b', sizeof pl);
    bytes ok = {0}, over = {0};
    frame(&ok, true, WS_OP_TEXT, pl, 250);
    frame(&over, true, WS_OP_TEXT, pl, 251);
    result r;
    check(&ok, 0, 250, &r);
    cr_assert_eq(r.err, 0);
    expect_msg(&r.ev[0], WS_OP_TEXT, pl, 250);
    result_free(&r);
    cr_assert_eq(check_err(&over, 0, 250), WSG_E_WS_MESSAGE_TOO_BIG);
    cr_assert_eq(check_err(&over, 251, 250), WSG_E_WS_MESSAGE_TOO_BIG);
    cr_assert_eq(check_err(&over, 250, 250), WSG_E_WS_FRAME_TOO_BIG);
    free(ok.d);
    free(over.d);
}

Test(frame_limits, fragmented_message_at_limit_and_over) {
    uint8_t pl[100];
    memset(pl, 'c', sizeof pl);
    bytes ok = {0}, over = {0};
    frame(&ok, false, WS_OP_BINARY, pl, 60);
    frame(&ok, true, WS_OP_PING, "p", 1); /* control frames do not count */
    frame(&ok, true, WS_OP_CONTINUATION, pl, 40);
    frame(&over, false, WS_OP_BINARY, pl, 60);
    frame(&over, true, WS_OP_CONTINUATION, pl, 41);
    result r;
    check(&ok, 64, 100, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.ev[0].type, WS_EV_PING);
    expect_msg(&r.ev[1], WS_OP_BINARY, pl, 100);
    result_free(&r);
    cr_assert_eq(check_err(&over, 64, 100), WSG_E_WS_MESSAGE_TOO_BIG);
    /* the second fragment's 2-byte header is enough to fail */
    size_t first = 2 + 4 + 60;
    run(over.d, first + 2, 64, 100, 0, &r);
    cr_assert_eq(r.err, WSG_E_WS_MESSAGE_TOO_BIG);
    result_free(&r);
    free(ok.d);
    free(over.d);
}

Test(frame_limits, limit_resets_between_messages) {
    uint8_t pl[100] = {0};
    bytes b = {0};
    for (int i = 0; i < 5; i++) {
        frame(&b, false, WS_OP_BINARY, pl, 50);
        frame(&b, true, WS_OP_CONTINUATION, pl, 50);
    }
    result r;
    check(&b, 0, 100, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 5);
    result_free(&r);
    free(b.d);
}

/* ---- lengths ---- */

Test(frame_lengths, boundaries) {
    const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
    const size_t hlen[] = {6, 6, 6, 8, 8, 8, 14, 14};
    uint8_t *pl = malloc(70000);
    for (size_t i = 0; i < 70000; i++) pl[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        bytes b = {0};
        frame(&b, true, WS_OP_BINARY, pl, lens[i]);
        cr_assert_eq(b.n, hlen[i] + lens[i]);
        result r;
        check(&b, 0, 0, &r);
        cr_assert_eq(r.err, 0);
        cr_assert_eq(r.n, 1);
        expect_msg(&r.ev[0], WS_OP_BINARY, pl, lens[i]);
        result_free(&r);
        free(b.d);
    }
    free(pl);
}

Test(frame_lengths, empty_messages) {
    bytes b = {0};
    frame(&b, true, WS_OP_TEXT, "", 0);
    frame(&b, false, WS_OP_BINARY, "", 0);
    frame(&b, true, WS_OP_CONTINUATION, "", 0);
    frame(&b, true, WS_OP_PING, "", 0);
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 3);
    expect_msg(&r.ev[0], WS_OP_TEXT, "", 0);
    expect_msg(&r.ev[1], WS_OP_BINARY, "", 0);
    cr_assert_eq(r.ev[2].type, WS_EV_PING);
    cr_assert_eq(r.ev[2].len, 0);
    result_free(&r);
    free(b.d);
}

/* ---- messages, fragmentation, control frames ---- */

Test(frame_msgs, several_in_one_buffer) {
    bytes b = {0};
    frame_str(&b, true, WS_OP_TEXT, "first");
    frame_str(&b, true, WS_OP_BINARY, "second");
    frame_str(&b, true, WS_OP_PONG, "pong");
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 3);
    expect_msg(&r.ev[0], WS_OP_TEXT, "first", 5);
    expect_msg(&r.ev[1], WS_OP_BINARY, "second", 6);
    cr_assert_eq(r.ev[2].type, WS_EV_PONG);
    cr_assert_eq(memcmp(r.ev[2].data, "pong", 4), 0);
    result_free(&r);
    free(b.d);
}

Test(frame_msgs, fragmented_with_interleaved_control) {
    bytes b = {0};
    frame_str(&b, false, WS_OP_TEXT, "Hel");
    frame_str(&b, true, WS_OP_PING, "ping-1");
    frame_str(&b, false, WS_OP_CONTINUATION, "lo, ");
    frame_str(&b, true, WS_OP_PONG, "");
    frame_str(&b, true, WS_OP_PING, "ping-2");
    frame_str(&b, true, WS_OP_CONTINUATION, "world");
    frame_str(&b, true, WS_OP_TEXT, "next");
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 5);
    cr_assert_eq(r.ev[0].type, WS_EV_PING);
    cr_assert_eq(r.ev[0].len, 6);
    cr_assert_eq(memcmp(r.ev[0].data, "ping-1", 6), 0);
    cr_assert_eq(r.ev[1].type, WS_EV_PONG);
    cr_assert_eq(r.ev[2].type, WS_EV_PING);
    cr_assert_eq(memcmp(r.ev[2].data, "ping-2", 6), 0);
    expect_msg(&r.ev[3], WS_OP_TEXT, "Hello, world", 12);
    expect_msg(&r.ev[4], WS_OP_TEXT, "next", 4);
    result_free(&r);
    free(b.d);
}

Test(frame_msgs, close_interleaved_in_fragmented_message) {
    bytes b = {0};
    frame_str(&b, false, WS_OP_BINARY, "part");
    frame(&b, true, WS_OP_CLOSE, "\x03\xe9", 2);
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.ev[0].type, WS_EV_CLOSE);
    cr_assert_eq(r.ev[0].code, 1001);
    result_free(&r);
    free(b.d);
}

Test(frame_msgs, sixteen_mib_in_65536_fragments) {
    const size_t nfrag = 65536, fsz = 256, total = nfrag * fsz;
    uint8_t chunk[256];
    bytes b = {0};
    for (size_t i = 0; i < nfrag; i++) {
        memset(chunk, 'a' + (int)(i % 26), fsz);
        frame(&b, i == nfrag - 1, i ? WS_OP_CONTINUATION : WS_OP_TEXT, chunk, fsz);
    }
    for (size_t chunking = 0; chunking <= 4096; chunking += 4096) {
        result r;
        run(b.d, b.n, 1024, total, chunking, &r);
        cr_assert_eq(r.err, 0);
        cr_assert_eq(r.n, 1);
        cr_assert_eq(r.ev[0].len, total);
        for (size_t i = 0; i < nfrag; i += 4099)
            cr_assert_eq(r.ev[0].data[i * fsz + 17], 'a' + (int)(i % 26));
        result_free(&r);
    }
    /* one byte more is refused */
    result r;
    run(b.d, b.n, 1024, total - 1, 0, &r);
    cr_assert_eq(r.err, WSG_E_WS_MESSAGE_TOO_BIG);
    result_free(&r);
    free(b.d);
}

Test(frame_msgs, sixty_four_byte_fragments) {
    const size_t nfrag = 65536, fsz = 64;
    uint8_t chunk[64];
    memset(chunk, 'z', sizeof chunk);
    bytes b = {0};
    for (size_t i = 0; i < nfrag; i++)
        frame(&b, i == nfrag - 1, i ? WS_OP_CONTINUATION : WS_OP_BINARY, chunk, fsz);
    result r;
    run(b.d, b.n, 128 * 1024, 16u << 20, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.ev[0].len, nfrag * fsz);
    result_free(&r);
    free(b.d);
}

/* ---- close frames ---- */

Test(frame_close, empty_is_1005) {
    bytes b = {0};
    frame(&b, true, WS_OP_CLOSE, "", 0);
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.ev[0].type, WS_EV_CLOSE);
    cr_assert_eq(r.ev[0].code, WS_CLOSE_NO_STATUS);
    cr_assert_eq(r.ev[0].len, 0);
    result_free(&r);
    free(b.d);
}

Test(frame_close, code_and_reason) {
    bytes b = {0};
    frame(&b, true, WS_OP_CLOSE,
          "\x03\xe8"
          "bye \xe2\x82\xac",
          9);
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.ev[0].type, WS_EV_CLOSE);
    cr_assert_eq(r.ev[0].code, 1000);
    cr_assert_eq(r.ev[0].len, 7);
    cr_assert_eq(memcmp(r.ev[0].data, "bye \xe2\x82\xac", 7), 0);
    result_free(&r);
    free(b.d);
}

Test(frame_close, valid_and_invalid_codes) {
    const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                              1010, 1011, 3000, 3999, 4000, 4999};
    const uint16_t invalid[] = {0,    1,    999,  1004, 1005, 1006, 1012, 1013,
                                1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        cr_assert(ws_close_code_valid(valid[i]), "%u", valid[i]);
        uint8_t pl[2] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i]};
        bytes b = {0};
        frame(&b, true, WS_OP_CLOSE, pl, 2);
        result r;
        check(&b, 0, 0, &r);
        cr_assert_eq(r.err, 0);
        cr_assert_eq(r.ev[0].code, valid[i]);
        result_free(&r);
        free(b.d);
    }
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        cr_assert_not(ws_close_code_valid(invalid[i]), "%u", invalid[i]);
        uint8_t pl[2] = {(uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i]};
        bytes b = {0};
        frame(&b, true, WS_OP_CLOSE, pl, 2);
        cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_CLOSE_CODE, "%u", invalid[i]);
        free(b.d);
    }
}

/* ---- UTF-8 in text messages ---- */

Test(frame_utf8, sequence_split_across_fragments) {
    bytes b = {0};
    frame(&b, false, WS_OP_TEXT, "\xe2", 1);
    frame(&b, true, WS_OP_PING, "", 0);
    frame(&b, false, WS_OP_CONTINUATION, "\x82", 1);
    frame(&b, true, WS_OP_CONTINUATION, "\xac!", 2);
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 2);
    expect_msg(&r.ev[1], WS_OP_TEXT, "\xe2\x82\xac!", 4);
    result_free(&r);
    free(b.d);
}

Test(frame_utf8, truncated_at_message_end) {
    bytes b = {0};
    frame(&b, false, WS_OP_TEXT, "ok", 2);
    frame(&b, true, WS_OP_CONTINUATION, "\xf0\x9f\x98", 3);
    cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_UTF8);
    free(b.d);
    bytes c = {0};
    frame(&c, true, WS_OP_TEXT, "\xc3", 1);
    cr_assert_eq(check_err(&c, 0, 0), WSG_E_WS_UTF8);
    free(c.d);
}

Test(frame_utf8, binary_is_not_checked) {
    bytes b = {0};
    frame(&b, true, WS_OP_BINARY, "\xff\xc0\xed\xa0\x80", 5);
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    expect_msg(&r.ev[0], WS_OP_BINARY, "\xff\xc0\xed\xa0\x80", 5);
    result_free(&r);
    free(b.d);
}

Test(frame_utf8, invalid_forms) {
    const char *bad[] = {
        "\xc0\x80",         "\xe0\x80\xaf",     "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80", "\xf0\x8f\xbf\xbf", "\x80",         "\xfe"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bytes b = {0};
        frame_str(&b, true, WS_OP_TEXT, bad[i]);
        cr_assert_eq(check_err(&b, 0, 0), WSG_E_WS_UTF8, "case %zu", i);
        free(b.d);
        /* the same bytes as two fragments */
        bytes c = {0};
        frame(&c, false, WS_OP_TEXT, bad[i], 1);
        frame(&c, true, WS_OP_CONTINUATION, bad[i] + 1, strlen(bad[i]) - 1);
        cr_assert_eq(check_err(&c, 0, 0), WSG_E_WS_UTF8, "case %zu split", i);
        free(c.d);
    }
}

Test(frame_utf8, fails_in_first_fragment_before_second_arrives) {
    bytes b = {0};
    frame(&b, false, WS_OP_TEXT, "abc\xc0xyz", 7);
    size_t first = b.n;
    frame_str(&b, true, WS_OP_CONTINUATION, "rest");
    result r;
    run(b.d, first, 0, 0, 0, &r); /* only the first fragment */
    cr_assert_eq(r.err, WSG_E_WS_UTF8);
    result_free(&r);
    run(b.d, first, 0, 0, 1, &r);
    cr_assert_eq(r.err, WSG_E_WS_UTF8);
    cr_assert_eq(r.at_err, 6 + 4, "failed after %zu bytes", r.at_err); /* on the bad byte */
    result_free(&r);
    free(b.d);
}

Test(frame_utf8, fails_mid_frame) {
    /* A 1000-byte unfragmented frame with a bad byte at 10: with only 30
     * payload bytes delivered it must already have failed. */
    uint8_t pl[1000];
    memset(pl, 'q', sizeof pl);
    pl[10] = 0xFF;
    bytes b = {0};
    frame(&b, true, WS_OP_TEXT, pl, sizeof pl);
    result r;
    run(b.d, 8 + 30, 0, 0, 0, &r);
    cr_assert_eq(r.err, WSG_E_WS_UTF8);
    result_free(&r);
    free(b.d);
}

/* ---- parser properties ---- */

Test(frame_parser, zero_copy_when_whole_frame_present) {
    bytes b = {0};
    frame_str(&b, true, WS_OP_TEXT, "zero copy please");
    ws_parser *p = ws_parser_new(0, 0);
    ws_event ev;
    ssize_t rc = ws_parser_feed(p, b.d, b.n, &ev);
    cr_assert_eq(rc, (ssize_t)b.n);
    cr_assert_eq(ev.type, WS_EV_MESSAGE);
    cr_assert_eq(ev.data, b.d + 6, "event should point into the input");
    cr_assert_eq(memcmp(ev.data, "zero copy please", 16), 0);
    cr_assert_eq(ws_parser_buffered(p), 0);
    ws_parser_free(p);
    free(b.d);
}

Test(frame_parser, buffered_counts_partial_message) {
    bytes b = {0};
    frame_str(&b, false, WS_OP_BINARY, "0123456789");
    frame_str(&b, true, WS_OP_CONTINUATION, "abcde");
    ws_parser *p = ws_parser_new(0, 0);
    ws_event ev;
    size_t first = 6 + 10;
    cr_assert_eq(ws_parser_feed(p, b.d, first + 8, &ev), (ssize_t)(first + 8));
    cr_assert_eq(ev.type, WS_EV_NONE);
    cr_assert_eq(ws_parser_buffered(p), 12);
    cr_assert_eq(ws_parser_feed(p, b.d + first + 8, b.n - first - 8, &ev),
                 (ssize_t)(b.n - first - 8));
    cr_assert_eq(ev.type, WS_EV_MESSAGE);
    cr_assert_eq(ev.len, 15);
    cr_assert_eq(memcmp(ev.data, "0123456789abcde", 15), 0);
    cr_assert_eq(ws_parser_buffered(p), 0);
    ws_parser_free(p);
    free(b.d);
}

Test(frame_parser, empty_feed) {
    ws_parser *p = ws_parser_new(0, 0);
    ws_event ev;
    uint8_t x = 0;
    cr_assert_eq(ws_parser_feed(p, &x, 0, &ev), 0);
    cr_assert_eq(ev.type, WS_EV_NONE);
    ws_parser_free(p);
    ws_parser_free(NULL);
}

Test(frame_parser, big_buffer_released_after_message) {
    /* After a large reassembled message the next feed may drop the buffer;
     * the following message must still parse. */
    uint8_t *pl = malloc(200000);
    memset(pl, 'm', 200000);
    bytes b = {0};
    frame(&b, false, WS_OP_BINARY, pl, 100000);
    frame(&b, true, WS_OP_CONTINUATION, pl, 100000);
    frame(&b, false, WS_OP_BINARY, pl, 10);
    frame(&b, true, WS_OP_CONTINUATION, pl, 10);
    result r;
    check(&b, 0, 0, &r);
    cr_assert_eq(r.err, 0);
    cr_assert_eq(r.n, 2);
    expect_msg(&r.ev[0], WS_OP_BINARY, pl, 200000);
    expect_msg(&r.ev[1], WS_OP_BINARY, pl, 20);
    result_free(&r);
    free(b.d);
    free(pl);
}

Test(frame_parser, unmask_every_offset) {
    /* Payload offsets 0..3 inside the mask and every tail length of the
     * word-at-a-time loop, delivered in pieces of every size 1..17. */
    uint8_t pl[64];
    for (size_t i = 0; i < sizeof pl; i++) pl[i] = (uint8_t)(i * 13 + 1);
    for (size_t len = 0; len <= 40; len++) {
        bytes b = {0};
        frame(&b, true, WS_OP_BINARY, pl, len);
        for (size_t chunk = 1; chunk <= 17; chunk++) {
            result r;
            run(b.d, b.n, 0, 0, chunk, &r);
            cr_assert_eq(r.err, 0);
            cr_assert_eq(r.n, 1);
            expect_msg(&r.ev[0], WS_OP_BINARY, pl, len);
            result_free(&r);
        }
        free(b.d);
    }
}

Test(frame_parser, guard_page_no_overread) {
    /* Every prefix of a stream of frames, ending exactly at a PROT_NONE page:
     * any read past the input faults. */
    bytes b = {0};
    frame_str(&b, false, WS_OP_TEXT, "frag\xe2\x82");
    frame_str(&b, true, WS_OP_PING, "p");
    frame_str(&b, true, WS_OP_CONTINUATION, "\xac tail of the message");
    uint8_t big[300];
    memset(big, 'B', sizeof big);
    frame(&b, true, WS_OP_BINARY, big, sizeof big);
    frame(&b, true, WS_OP_CLOSE,
          "\x03\xe8"
          "done",
          6);

    long pg = sysconf(_SC_PAGESIZE);
    cr_assert_gt(pg, 0);
    size_t pgs = (size_t)pg;
    uint8_t *m = mmap(NULL, 2 * pgs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    cr_assert_eq(mprotect(m + pgs, pgs, PROT_NONE), 0);
    cr_assert_lt(b.n, pgs);

    for (size_t k = 0; k <= b.n; k++) {
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            uint8_t *in = m + pgs - k;
            if (!bytewise) memcpy(in, b.d, k);
            ws_parser *p = ws_parser_new(0, 0);
            size_t off = 0;
            while (off < k) {
                /* bytewise: each byte is moved to the page end on its own */
                uint8_t *at = in + off;
                size_t left = k - off;
                if (bytewise) {
                    at = m + pgs - 1;
                    *at = b.d[off];
                    left = 1;
                }
                ws_event ev;
                ssize_t rc = ws_parser_feed(p, at, left, &ev);
                cr_assert_geq(rc, 0, "prefix %zu: error %zd", k, rc);
                off += (size_t)rc;
                if (bytewise) cr_assert_eq(rc, 1);
            }
            ws_parser_free(p);
        }
    }
    munmap(m, 2 * pgs);
    free(b.d);
}

/* ---- encoder ---- */

static void expect_header(size_t len, const uint8_t *want, size_t wlen) {
    uint8_t *pl = calloc(len ? len : 1, 1);
    for (size_t i = 0; i < len; i++) pl[i] = (uint8_t)i;
    ws_frame *f = ws_frame_new(WS_OP_BINARY, pl, len);
    cr_assert_eq(f->len, wlen + len, "len %zu", len);
    cr_assert_eq(memcmp(f->data, want, wlen), 0, "header for %zu", len);
    cr_assert_eq(ws_frame_payload(f), f->data + wlen);
    cr_assert_eq(memcmp(f->data + wlen, pl, len), 0);
    cr_assert_eq(ws_frame_refcount(f), 1);
    ws_frame_unref(f);
    free(pl);
}

Test(frame_encode, header_bytes) {
    expect_header(0, (const uint8_t[]){0x82, 0x00}, 2);
    expect_header(125, (const uint8_t[]){0x82, 0x7D}, 2);
    expect_header(126, (const uint8_t[]){0x82, 0x7E, 0x00, 0x7E}, 4);
    expect_header(65535, (const uint8_t[]){0x82, 0x7E, 0xFF, 0xFF}, 4);
    expect_header(65536, (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}, 10);
    expect_header(0x123456, (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56}, 10);
}

Test(frame_encode, opcodes_and_alloc) {
    ws_frame *t = ws_frame_new(WS_OP_TEXT, "hi", 2);
    cr_assert_eq(t->data[0], 0x81);
    cr_assert_eq(t->data[1], 0x02);
    cr_assert_eq(memcmp(t->data + 2, "hi", 2), 0);
    ws_frame_unref(t);
    ws_frame *p = ws_frame_new(WS_OP_PING, NULL, 0);
    cr_assert_eq(p->len, 2);
    cr_assert_eq(p->data[0], 0x89);
    ws_frame_unref(p);
    ws_frame *a = ws_frame_alloc(WS_OP_TEXT, 300);
    cr_assert_eq(a->len, 304);
    cr_assert_eq(ws_frame_payload(a), a->data + 4);
    memset(ws_frame_payload(a), 'x', 300);
    ws_frame_unref(a);
}

Test(frame_encode, close_frames) {
    ws_frame *e = ws_frame_close(0, "ignored");
    cr_assert_eq(e->len, 2);
    cr_assert_eq(e->data[0], 0x88);
    cr_assert_eq(e->data[1], 0x00);
    ws_frame_unref(e);

    ws_frame *c = ws_frame_close(1001, "going away");
    cr_assert_eq(c->len, 2 + 2 + 10);
    cr_assert_eq(c->data[1], 12);
    cr_assert_eq(c->data[2], 0x03);
    cr_assert_eq(c->data[3], 0xE9);
    cr_assert_eq(memcmp(c->data + 4, "going away", 10), 0);
    ws_frame_unref(c);

    ws_frame *n = ws_frame_close(1000, NULL);
    cr_assert_eq(n->len, 4);
    ws_frame_unref(n);
}

Test(frame_encode, close_reason_truncated_on_char_boundary) {
    char reason[400];
    /* ASCII: cut at exactly 123 bytes */
    memset(reason, 'r', 300);
    reason[300] = 0;
    ws_frame *a = ws_frame_close(1000, reason);
    cr_assert_eq(a->data[1], 125);
    ws_frame_unref(a);
    /* 2-, 3- and 4-byte characters, at every alignment against the cut */
    const char *chars[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    for (size_t c = 0; c < 3; c++) {
        for (size_t pre = 0; pre < 4; pre++) {
            size_t n = 0;
            for (size_t i = 0; i < pre; i++) reason[n++] = 'x';
            while (n + 4 < sizeof reason - 1) {
                size_t cl = strlen(chars[c]);
                memcpy(reason + n, chars[c], cl);
                n += cl;
            }
            reason[n] = 0;
            ws_frame *f = ws_frame_close(1000, reason);
            size_t plen = f->data[1];
            cr_assert_leq(plen, 125);
            cr_assert_geq(plen, 125 - 3);
            cr_assert(ws_utf8_valid(ws_frame_payload(f) + 2, plen - 2), "char %zu pre %zu", c, pre);
            ws_frame_unref(f);
        }
    }
}

Test(frame_encode, roundtrip_through_parser) {
    /* A server frame, masked as a client would send it, parses back. */
    const size_t lens[] = {0, 125, 126, 65535, 65536};
    for (size_t i = 0; i < 5; i++) {
        ws_frame *f = ws_frame_alloc(WS_OP_TEXT, lens[i]);
        memset(ws_frame_payload(f), 'k', lens[i]);
        size_t hlen = (size_t)(ws_frame_payload(f) - f->data);
        bytes b = {0};
        put8(&b, f->data[0]);
        put8(&b, f->data[1] | 0x80);
        put(&b, f->data + 2, hlen - 2);
        put(&b, MASK, 4);
        for (size_t j = 0; j < lens[i]; j++) put8(&b, (uint8_t)('k' ^ MASK[j & 3]));
        result r;
        run(b.d, b.n, 0, 0, 0, &r);
        cr_assert_eq(r.err, 0);
        cr_assert_eq(r.n, 1);
        cr_assert_eq(r.ev[0].len, lens[i]);
        result_free(&r);
        free(b.d);
        ws_frame_unref(f);
    }
}

/* ---- refcounting ---- */

Test(frame_refs, ref_unref) {
    ws_frame *f = ws_frame_new(WS_OP_TEXT, "x", 1);
    cr_assert_eq(ws_frame_ref(f), f);
    cr_assert_eq(ws_frame_ref(f), f);
    cr_assert_eq(ws_frame_refcount(f), 3);
    ws_frame_unref(f);
    ws_frame_unref(f);
    cr_assert_eq(ws_frame_refcount(f), 1);
    ws_frame_unref(f); /* freed here; LeakSanitizer / ASan check the rest */
    ws_frame_unref(NULL);
}

static void *ref_worker(void *arg) {
    ws_frame *f = arg;
    for (int i = 0; i < 100000; i++) {
        ws_frame_ref(f);
        ws_frame_unref(f);
    }
    ws_frame_unref(f); /* the reference handed to this thread */
    return NULL;
}

Test(frame_refs, concurrent) {
    ws_frame *f = ws_frame_new(WS_OP_TEXT, "shared", 6);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, ref_worker, ws_frame_ref(f)), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    cr_assert_eq(ws_frame_refcount(f), 1);
    ws_frame_unref(f);
}

/* Releasing the buffers between reads (ws_parser_trim), or the whole parser
 * when it is idle (ws_parser_idle), as the sweep does, changes nothing: a
 * message or control frame in progress keeps its bytes, whatever the
 * split. */
Test(frame_trim, trimming_between_reads_changes_nothing) {
    bytes in = {0};
    frame_str(&in, false, WS_OP_TEXT, "fragmented ");
    frame(&in, true, WS_OP_PING, "ping payload", 12);
    frame_str(&in, false, WS_OP_CONTINUATION, "text ");
    frame(&in, true, WS_OP_PONG, "", 0);
    frame_str(&in, true, WS_OP_CONTINUATION, "message \xc3\xa9");
    frame(&in, true, WS_OP_BINARY, "\x00\x01\x02", 3);
    frame(&in, true, WS_OP_PING, "0123456789012345678901234567890123456789", 40);
    frame_str(&in, true, WS_OP_TEXT, "last");
    for (size_t chunk = 0; chunk <= in.n; chunk++) {
        result plain, trimmed;
        TRIM = false;
        run(in.d, in.n, 0, 0, chunk, &plain);
        TRIM = true;
        run(in.d, in.n, 0, 0, chunk, &trimmed);
        TRIM = false;
        cr_assert_eq(plain.err, 0);
        cr_assert_eq(plain.n, 6);
        same(&plain, &trimmed, "trimmed between reads");
        result_free(&plain);
        result_free(&trimmed);
    }
    free(in.d);
}

Test(frame_trim, idle_only_between_frames) {
    ws_parser *p = ws_parser_new(0, 0);
    cr_assert(ws_parser_idle(p));
    bytes in = {0};
    frame_str(&in, false, WS_OP_TEXT, "part");
    ws_event ev;
    cr_assert_eq(ws_parser_feed(p, in.d, 1, &ev), 1); /* half a header */
    cr_assert_not(ws_parser_idle(p));
    cr_assert_eq(ws_parser_feed(p, in.d + 1, in.n - 1, &ev), (ssize_t)(in.n - 1));
    cr_assert_not(ws_parser_idle(p)); /* a message in progress */
    free(in.d);
    memset(&in, 0, sizeof(in));
    frame_str(&in, true, WS_OP_CONTINUATION, "!");
    cr_assert_eq(ws_parser_feed(p, in.d, in.n, &ev), (ssize_t)in.n);
    cr_assert_eq(ev.type, WS_EV_MESSAGE);
    cr_assert(ws_parser_idle(p));
    free(in.d);
    memset(&in, 0, sizeof(in));
    frame_str(&in, true, WS_OP_CLOSE, "");
    cr_assert_eq(ws_parser_feed(p, in.d, in.n, &ev), (ssize_t)in.n);
    cr_assert_eq(ev.type, WS_EV_CLOSE);
    cr_assert_not(ws_parser_idle(p)); /* after a close: keep the verdict */
    free(in.d);
    ws_parser_free(p);
}
