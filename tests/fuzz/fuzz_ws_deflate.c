/* libFuzzer target for the permessage-deflate inflate path of the RFC 6455
 * parser (src/ws/frame.c, src/ws/deflate.c).
 *
 * Byte 0 picks a chunking, byte 1 the negotiated parameters (client window
 * 8..15, client_no_context_takeover); the rest is the client byte stream.
 * It is parsed whole, one byte at a time and in the chosen chunks: every
 * run must satisfy the event invariants and the memory bound (a bomb must
 * not make the parser hold more than the limit), and all runs must agree.
 * Then the stream, as one message, is compressed the server's way and
 * must inflate back to itself. */
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
    uint64_t hash;
    size_t events;
    int err;
} outcome;

static uint64_t mix(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

static ws_deflate_params params_from(uint8_t b) {
    return (ws_deflate_params){.server_max_window_bits = (uint8_t)(8 + (b >> 4 & 7)),
                               .client_max_window_bits = (uint8_t)(8 + (b & 7)),
                               .client_no_context_takeover = b & 8,
                               .level = (uint8_t)(1 + (b >> 4) % 9),
                               .min_size = 0};
}

static void run(const uint8_t *in, size_t n, int mode, uint8_t seed, const ws_deflate_params *dp,
                outcome *out) {
    uint8_t *buf = malloc(n ? n : 1);
    if (n) memcpy(buf, in, n);
    ws_parser *p = ws_parser_new(MAX_FRAME, MAX_MESSAGE);
    ws_parser_enable_deflate(p, dp);
    /* zlib's inflate state is about 7 KB, its window 32 KiB. */
    size_t bound = MAX_MESSAGE + 125 + 1024 + 12 * 1024 + 32768;
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
            require(ws_parser_memory(p) <= bound);
            if (rc < 0) {
                out->err = (int)rc;
                uint16_t cc = wsg_err_close_code((int)rc);
                require(cc == 1002 || cc == 1007 || cc == 1009);
                goto done;
            }
            require((size_t)rc <= left);
            if (ev.type != WS_EV_NONE) {
                require(ev.data != NULL);
                if (ev.type == WS_EV_MESSAGE) {
                    require(ev.len <= MAX_MESSAGE);
                    if (ev.opcode == WS_OP_TEXT) require(ws_utf8_valid(ev.data, ev.len));
                }
                out->events++;
                uint32_t fields[4] = {ev.type, ev.opcode, ev.close_code, (uint32_t)ev.len};
                out->hash = mix(out->hash, fields, sizeof fields);
                out->hash = mix(out->hash, ev.data, ev.len);
            }
            require(ws_parser_buffered(p) <= MAX_MESSAGE + 125 + 14);
            at += rc;
            left -= (size_t)rc;
            /* The sweep's trim between reads must change nothing. */
            if (mode == 2 && (rng & 0x100)) ws_parser_trim(p);
        }
        off += c;
    }
done:
    ws_parser_free(p);
    free(buf);
}

/* Server compression -> client frame -> parser gives back the input. */
static void check_roundtrip(const uint8_t *data, size_t size, const ws_deflate_params *dp) {
    ws_frame *f = ws_frame_new(WS_OP_BINARY, data, size);
    ws_frame *z = ws_frame_deflated(f, dp);
    ws_frame *again = ws_frame_deflated(f, dp);
    require(again == z);
    ws_frame_unref(again);
    uint8_t *pl = ws_frame_payload(z);
    size_t plen = z->len - (size_t)(pl - z->data), hlen = (size_t)(pl - z->data);
    uint8_t *c = malloc(z->len + 4);
    static const uint8_t mask[4] = {0xA1, 0x00, 0x5E, 0x33};
    memcpy(c, z->data, hlen);
    c[1] |= 0x80;
    memcpy(c + hlen, mask, 4);
    for (size_t i = 0; i < plen; i++) c[hlen + 4 + i] = pl[i] ^ mask[i & 3];
    ws_parser *p = ws_parser_new(0, 0);
    /* The client side of the same agreement: our window is its window. */
    ws_deflate_params cp = *dp;
    cp.client_max_window_bits = dp->server_max_window_bits;
    ws_parser_enable_deflate(p, &cp);
    ws_event ev;
    ssize_t rc = ws_parser_feed(p, c, z->len + 4, &ev);
    require(rc == (ssize_t)(z->len + 4));
    require(ev.type == WS_EV_MESSAGE && ev.len == size);
    require(size == 0 || memcmp(ev.data, data, size) == 0);
    ws_parser_free(p);
    free(c);
    ws_frame_unref(z);
    ws_frame_unref(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t seed = data[0];
    ws_deflate_params dp = params_from(data[1]);
    const uint8_t *in = data + 2;
    size_t n = size - 2;

    outcome whole, other;
    run(in, n, 0, seed, &dp, &whole);
    if (n <= 8192 || (seed & 1)) {
        run(in, n, 1, seed, &dp, &other);
        require(other.err == whole.err && other.events == whole.events && other.hash == whole.hash);
    }
    run(in, n, 2, seed, &dp, &other);
    require(other.err == whole.err && other.events == whole.events && other.hash == whole.hash);

    check_roundtrip(in, n, &dp);
    return 0;
}
