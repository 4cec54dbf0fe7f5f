/* libFuzzer target for the RFC 6455 parser (src/ws/frame.c).
 *
 * The first input byte picks a chunking; the rest is the client byte
 * stream. It is parsed whole, one byte at a time and in the chosen chunks:
 * every run must satisfy the event invariants and all runs must agree
 * exactly (a split-dependent result is a bug even when nothing crashes). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws/frame.h"

#define MAX_FRAME   4096
#define MAX_MESSAGE 16384

#include "fuzz_chunks.h"
#include "fuzz_require.h"

typedef struct {
    uint64_t hash; /* over every event's fields and bytes, in order */
    size_t events;
    int err;
} outcome;

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

static void check_event(const ws_event *ev) {
    require(ev->data != NULL);
    switch (ev->type) {
    case WS_EV_MESSAGE:
        require(ev->opcode == WS_OP_TEXT || ev->opcode == WS_OP_BINARY);
        require(ev->len <= MAX_MESSAGE);
        if (ev->opcode == WS_OP_TEXT) require(ws_utf8_valid(ev->data, ev->len));
        break;
    case WS_EV_PING:
    case WS_EV_PONG: require(ev->len <= 125); break;
    case WS_EV_CLOSE:
        require(ev->len <= 123);
        if (ev->close_code == WS_CLOSE_NO_STATUS) require(ev->len == 0);
        else require(ws_close_code_valid(ev->close_code));
        require(ws_utf8_valid(ev->data, ev->len));
        break;
    default: require(0);
    }
}

/* Feed in[0..n) with chunk sizes from next_chunk (0 = the rest). */
static void run(const uint8_t *in, size_t n, int mode, uint8_t seed, outcome *out) {
    uint8_t *buf = malloc(n ? n : 1); /* the parser may unmask in place */
    if (n) memcpy(buf, in, n);
    ws_parser *p = ws_parser_new(MAX_FRAME, MAX_MESSAGE);
    uint32_t rng = fuzz_chunks_init(seed);
    out->hash = UINT64_C(0xcbf29ce484222325);
    out->events = 0;
    out->err = 0;
    size_t off = 0;
    while (off < n) {
        size_t c = fuzz_next_chunk(mode, seed, &rng, n - off);
        uint8_t *at = buf + off;
        size_t left = c;
        while (left) {
            ws_event ev;
            ssize_t rc = ws_parser_feed(p, at, left, &ev);
            if (rc < 0) {
                out->err = (int)rc;
                require(strcmp(wsg_strerror((int)rc), "unknown error") != 0);
                uint16_t cc = wsg_err_close_code((int)rc);
                require(cc == 1002 || cc == 1007 || cc == 1009);
                ws_event again;
                require(ws_parser_feed(p, at, left, &again) == rc); /* sticky */
                goto done;
            }
            require((size_t)rc <= left);
            if (ev.type == WS_EV_NONE) {
                require((size_t)rc == left);
            } else {
                check_event(&ev);
                out->events++;
                uint32_t fields[4] = {ev.type, ev.opcode, ev.close_code, (uint32_t)ev.len};
                out->hash = mix(out->hash, fields, sizeof fields);
                out->hash = mix(out->hash, ev.data, ev.len);
            }
            require(ws_parser_buffered(p) <= MAX_MESSAGE + 125 + 14);
            at += rc;
            left -= (size_t)rc;
        }
        off += c;
    }
done:
    ws_parser_free(p);
    free(buf);
}

/* The encoder side: a close frame built from fuzz bytes stays in bounds and
 * never cuts a character of a valid reason. */
static void check_close_encoder(const uint8_t *data, size_t size) {
    if (size < 2) return;
    char reason[300];
    size_t rl = size - 2 < sizeof reason - 1 ? size - 2 : sizeof reason - 1;
    memcpy(reason, data + 2, rl);
    reason[rl] = 0;
    for (size_t i = 0; i < rl; i++)
        if (!reason[i]) rl = i;
    uint16_t code = (uint16_t)(data[0] << 8 | data[1]);
    ws_frame *f = ws_frame_close(code, reason);
    uint8_t *pl = ws_frame_payload(f);
    size_t plen = f->len - (size_t)(pl - f->data);
    require(plen <= 125);
    if (code == 0) require(plen == 0);
    else if (ws_utf8_valid((const uint8_t *)reason, rl)) require(ws_utf8_valid(pl + 2, plen - 2));
    ws_frame_unref(ws_frame_ref(f));
    ws_frame_unref(f);
}

/* Encoder and parser agree: the input as a server frame, masked the way a
 * client would, parses back to the same bytes through every header size. */
static void check_roundtrip(const uint8_t *data, size_t size, uint8_t seed) {
    ws_frame *f = ws_frame_new(seed & 1 ? WS_OP_BINARY : WS_OP_TEXT, data, size);
    if (!(seed & 1) && !ws_utf8_valid(data, size)) {
        ws_frame_unref(f);
        return;
    }
    size_t hlen = (size_t)(ws_frame_payload(f) - f->data);
    uint8_t *c = malloc(f->len + 4);
    uint8_t mask[4] = {seed, (uint8_t)(seed * 3), (uint8_t)(seed + 0x5A), 0xA5};
    memcpy(c, f->data, hlen);
    c[1] |= 0x80;
    memcpy(c + hlen, mask, 4);
    for (size_t i = 0; i < size; i++) c[hlen + 4 + i] = data[i] ^ mask[i & 3];
    ws_parser *p = ws_parser_new(0, 0);
    ws_event ev;
    ssize_t rc = ws_parser_feed(p, c, f->len + 4, &ev);
    require(rc == (ssize_t)(f->len + 4));
    require(ev.type == WS_EV_MESSAGE && ev.len == size);
    require(size == 0 || memcmp(ev.data, data, size) == 0);
    ws_parser_free(p);
    free(c);
    ws_frame_unref(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t seed = data[0];
    const uint8_t *in = data + 1;
    size_t n = size - 1;

    outcome whole, other;
    run(in, n, 0, seed, &whole);
    /* Byte-at-a-time costs one call per byte; keep it for modest inputs so
     * the fuzzer stays fast on big ones. */
    if (n <= 8192 || (seed & 1)) {
        run(in, n, 1, seed, &other);
        require(other.err == whole.err && other.events == whole.events && other.hash == whole.hash);
    }
    run(in, n, 2, seed, &other);
    require(other.err == whole.err && other.events == whole.events && other.hash == whole.hash);

    check_close_encoder(in, n);
    check_roundtrip(in, n, seed);
    return 0;
}
