/* permessage-deflate (RFC 7692), as I/O-free pieces:
 *
 *   - negotiation: the Sec-WebSocket-Extensions offers of a handshake in,
 *     the agreed parameters and the response header value out;
 *   - compression: one whole message at a time, with no context takeover
 *     (the server always negotiates server_no_context_takeover), so one
 *     compressed frame can be shared by every recipient of a broadcast;
 *   - the inflater a ws_parser uses for compressed client messages, with
 *     its memory counted.
 *
 * The frame codec (ws/frame.h) builds on these: ws_frame_deflated() and
 * ws_parser_enable_deflate(). */
#ifndef WSGATE_WS_DEFLATE_H
#define WSGATE_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The server's side of the negotiation (from the permessage_deflate and
 * deflate_* configuration variables). */
typedef struct ws_deflate_config {
    bool enabled;
    uint8_t server_max_window_bits;  /* 8..15: largest window our compressor uses */
    uint8_t client_max_window_bits;  /* 8..15: largest window we let clients use (their
                                       * memory; we inflate with 32 KiB); below 15, offers
                                       * that cannot limit it are declined */
    uint8_t level;                   /* zlib level 1..9 */
    uint32_t min_size;               /* messages shorter than this go uncompressed */
    bool client_no_context_takeover; /* ask clients to reset per message, so the
                                       * inflate state can be released between messages */
} ws_deflate_config;

/* What one connection agreed. server_no_context_takeover is always in
 * force (shared frames), so it has no field. */
typedef struct ws_deflate_params {
    uint8_t server_max_window_bits;  /* the value we answered (8..15) */
    uint8_t client_max_window_bits;  /* window the client may use */
    bool client_no_context_takeover; /* the client resets after each message */
    uint8_t level;                   /* copied from the config */
    uint32_t min_size;               /* copied from the config */
} ws_deflate_params;

/* Longest Sec-WebSocket-Extensions value ws_deflate_negotiate writes. */
#define WS_DEFLATE_RESPONSE_MAX 160

/* Choose the response to the Sec-WebSocket-Extensions headers values[i]
 * (lens[i] bytes each, n headers, in order) under cfg. Offers are tried in
 * order; one with an unknown, duplicate or malformed parameter, or one cfg
 * cannot honour, is declined and the next is tried. Returns true when an
 * offer was accepted: *out holds the agreed parameters and response (at
 * least WS_DEFLATE_RESPONSE_MAX bytes) the NUL-terminated header value,
 * e.g. "permessage-deflate; server_no_context_takeover". Returns false
 * (nothing to answer) when cfg is disabled or no offer is acceptable. */
bool ws_deflate_negotiate(const ws_deflate_config *cfg, const char *const *values,
                          const size_t *lens, size_t n, ws_deflate_params *out, char *response);

/* The window bits zlib compresses with for a negotiated value: zlib's raw
 * deflate cannot use 8, and with 9 it never emits a distance over 250
 * (512 minus its 262-byte lookahead), which a 256-byte window decodes. */
int ws_deflate_compress_bits(const ws_deflate_params *params);

/* Compress one whole message in[0..len) with no context takeover under
 * params (window and level): a sync-flushed raw DEFLATE stream without its
 * trailing 00 00 ff ff, as RFC 7692 7.2.1 sends it. Returns a malloc'd
 * buffer (the caller frees it) and its length in *out_len. Uses a
 * compressor kept per thread (released when the thread exits), so it may
 * run in any thread. */
uint8_t *ws_deflate_compress(const ws_deflate_params *params, const uint8_t *in, size_t len,
                             size_t *out_len);

/* ---- the inflater of one connection ---- */

typedef struct ws_inflater ws_inflater;

/* Return a new inflater for params (the caller owns it; ws_inflater_free).
 * Its zlib state is allocated on first use. */
ws_inflater *ws_inflater_new(const ws_deflate_params *params);
void ws_inflater_free(ws_inflater *z);

/* Inflate in[0..*in_len) into out[0..out_cap). Returns 0 when all input
 * was consumed and all output it yields fits (*in_len = 0), 1 when out is
 * full and output may remain (*in_len = input left, call again with more
 * room), 2 when the stream ended with a final block (the rest of the
 * message is to be ignored), or WSG_E_WS_DEFLATE on invalid data. *out_len gets the
 * bytes written. */
int ws_inflater_feed(ws_inflater *z, const uint8_t *in, size_t *in_len, uint8_t *out,
                     size_t out_cap, size_t *out_len);

/* The message ended (its tail 00 00 ff ff fed): clear what must not
 * survive it (all of it when the client does not take over context, only
 * the end-of-stream mark otherwise). Returns 0, or WSG_E_WS_DEFLATE when
 * the message's data stopped inside a DEFLATE block (invalid data). */
int ws_inflater_end_message(ws_inflater *z);

/* Return true when z holds a window the next message may refer to (context
 * takeover with a message seen): it must then be kept. */
bool ws_inflater_has_context(const ws_inflater *z);

/* Release z's zlib state when it holds no context (it is allocated again
 * by the next message). */
void ws_inflater_trim(ws_inflater *z);

/* Bytes z holds from the heap: zlib's inflate state (about 7 KB) and its
 * window (32 KiB whatever client_max_window_bits says, allocated when the
 * first output is produced). */
size_t ws_inflater_memory(const ws_inflater *z);

#endif
