/* What permessage-deflate costs, without the network: the bytes and time of
 * compressing a ~1 KB chat message once (ws_frame_deflated), and the
 * inflate state a connection holds. Build and run from the repository:
 *   make all && cc -O2 -Isrc bench/deflate_cost.c build/libwsgate.a -lz -lpthread \
 *       -o build/deflate_cost && build/deflate_cost */
#include <stdio.h>
#include <time.h>

#include "ws/frame.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(void) {
    char msg[2048];
    size_t n =
        (size_t)snprintf(msg, sizeof msg,
                         "{\"type\":\"chat_message\",\"data\":{\"messageId\":\"7f3c2a9e-1b4d-4c8e-"
                         "9a6f-2d5e8b1c0a47\",\"roomId\":\"general\",\"userId\":\"user-1234\","
                         "\"username\":\"alice\",\"timestamp\":\"2026-12-02T19:20:00.123Z\","
                         "\"seq\":4711,\"text\":\"");
    while (n < 1000)
        n += (size_t)snprintf(msg + n, sizeof msg - n,
                              "Hello everyone, the build is green again and the release goes out "
                              "tonight. ");
    n += (size_t)snprintf(msg + n, sizeof msg - n, "\"}}");
    const int iters = 20000;
    for (int level = 1; level <= 9; level += 4) {
        ws_deflate_params p = {
            .server_max_window_bits = 15, .client_max_window_bits = 15, .level = (uint8_t)level};
        size_t wire = 0;
        double t0 = now();
        for (int i = 0; i < iters; i++) {
            ws_frame *f = ws_frame_new(WS_OP_TEXT, msg, n);
            ws_frame *z = ws_frame_deflated(f, &p);
            wire = z->len;
            ws_frame_unref(z);
            ws_frame_unref(f);
        }
        double t1 = now();
        printf("level %d: %zu-byte message, frame %zu -> %zu bytes, %.1f us per compression\n",
               level, n, n + 4, wire, (t1 - t0) / iters * 1e6);
    }
    for (int nct = 0; nct < 2; nct++) {
        ws_deflate_params p = {.server_max_window_bits = 15,
                               .client_max_window_bits = 15,
                               .client_no_context_takeover = nct,
                               .level = 6};
        ws_parser *ps = ws_parser_new(0, 0);
        size_t idle = ws_parser_memory(ps);
        ws_parser_enable_deflate(ps, &p);
        /* RFC 7692 7.2.3.1 "Hello", masked with a zero key */
        uint8_t fr[] = {0xC1, 0x87, 0, 0, 0, 0, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
        ws_event ev;
        ws_parser_feed(ps, fr, sizeof fr, &ev);
        size_t busy = ws_parser_memory(ps);
        ws_parser_trim(ps);
        printf("client_no_context_takeover=%d: parser %zu B, %zu B after a compressed message, "
               "%zu B after the idle trim\n",
               nct, idle, busy, ws_parser_memory(ps));
        ws_parser_free(ps);
    }
    return 0;
}
