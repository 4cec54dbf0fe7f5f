/* RFC 6455 framing, as an I/O-free codec.
 *
 * Incoming: a ws_parser is fed bytes as they arrive from the socket and
 * yields events (a complete text/binary message, ping, pong, close) or an
 * error whose close code is what the connection must be closed with.
 *
 * Outgoing: ws_frame is an encoded server frame (header + payload) in one
 * reference-counted buffer, so a broadcast is encoded once and queued by
 * reference on any number of connections, in any thread. */
#ifndef WSGATE_WS_FRAME_H
#define WSGATE_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "ws/deflate.h"
#include "ws/utf8.h"

enum {
    WS_OP_CONTINUATION = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes (PROTOCOL.md). */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL_ERROR = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* never sent: a close frame without a code */
    WS_CLOSE_ABNORMAL = 1006,  /* never sent */
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL_ERROR = 1011,
    WS_CLOSE_TRY_AGAIN_LATER = 1013, /* IANA registry: a temporary server condition */
};

/* Parser errors are the WSG_E_WS_* codes of WSG_ERRNO_MAP
 * (common/error.h), each with its text (wsg_strerror) and the close code
 * (wsg_err_close_code: 1002, 1007, 1009) the connection must be closed
 * with. */

typedef enum ws_event_type {
    WS_EV_NONE = 0,
    WS_EV_MESSAGE, /* a complete text or binary message: opcode, data, len */
    WS_EV_PING,    /* data/len: the ping payload (<= 125 bytes) */
    WS_EV_PONG,    /* data/len: the pong payload */
    WS_EV_CLOSE,   /* close_code (1005 when the frame had no code), data/len: reason */
} ws_event_type;

typedef struct ws_event {
    ws_event_type type;
    uint8_t opcode;      /* WS_OP_TEXT or WS_OP_BINARY for WS_EV_MESSAGE */
    uint16_t close_code; /* for WS_EV_CLOSE */
    const uint8_t *data; /* valid until the next ws_parser_feed/free call */
    size_t len;
} ws_event;

typedef struct ws_parser ws_parser;

/* Return a new parser enforcing max_frame (bytes of one frame's payload) and
 * max_message (bytes of a reassembled message) limits; 0 means unlimited.
 * Caller owns it and releases it with ws_parser_free(). */
ws_parser *ws_parser_new(size_t max_frame, size_t max_message);
void ws_parser_free(ws_parser *p);

/* Consume bytes from in[0..len) until one event is complete or the input is
 * exhausted. Returns the number of bytes consumed (>= 0) and sets *ev (its
 * type is WS_EV_NONE when more input is needed), or a negative WSG_E_WS_* code after
 * which the parser must not be fed again. Input bytes may be unmasked in
 * place. The caller calls again with the rest of the input after handling
 * each event. Limits are enforced from the frame header, before any payload
 * is buffered. Text is UTF-8 validated as bytes arrive, across fragments,
 * so invalid text fails as soon as the offending byte is seen. After a close
 * event, any further input is WSG_E_WS_CLOSED. */
ssize_t ws_parser_feed(ws_parser *p, uint8_t *in, size_t len, ws_event *ev);

/* Bytes currently held for an unfinished message (for abuse limits). */
size_t ws_parser_buffered(const ws_parser *p);

/* Heap bytes p holds for a data message still being assembled: its
 * reassembly buffer's capacity while a message is in progress, 0 between
 * messages (what a bound on every connection's unfinished messages counts;
 * the buffer grows geometrically, so this is up to twice the bytes). */
size_t ws_parser_partial_bytes(const ws_parser *p);

/* Release the buffers p holds between messages (the reassembly buffer when
 * no message is in progress, the control-frame buffer when no control frame
 * is, the inflate state when it holds no window the next message needs)
 * so that an idle connection keeps none; they are allocated again when
 * needed. Invalidates the data of the last event. */
void ws_parser_trim(ws_parser *p);

/* Return true when p sits between frames with no message in progress, no
 * error, no close seen and no inflate window to keep (context takeover):
 * freeing it and starting a new parser with the same limits (and deflate
 * parameters) then changes nothing (so an idle connection need not keep
 * one). */
bool ws_parser_idle(const ws_parser *p);

/* Let p accept messages compressed with permessage-deflate as negotiated
 * in params (RFC 7692): RSV1 on the first frame of a data message (still a
 * protocol error on control and continuation frames, and on every frame of
 * a parser without this call). Such a message is inflated as its bytes
 * arrive into the message buffer, and the message limit (max_message)
 * applies to the inflated size, checked while inflating: the parser fails
 * with WSG_E_WS_MESSAGE_TOO_BIG (1009) before it holds more than the limit,
 * whatever the compression ratio. Invalid compressed data fails with
 * WSG_E_WS_DEFLATE (1007); text is UTF-8 checked after inflating. max_frame
 * still applies to the bytes on the wire. Call before the first feed. */
void ws_parser_enable_deflate(ws_parser *p, const ws_deflate_params *params);

/* Bytes p holds from the heap: the parser, its message and control buffers
 * and, with deflate, zlib's inflate state (about 7 KB) and 32 KiB window,
 * kept between messages only when the client takes over context. */
size_t ws_parser_memory(const ws_parser *p);

/* ---- outgoing frames ---- */

/* refs of a WebSocket frame (ws_frame_alloc/ws_frame_new) carries this bit;
 * a raw buffer (ws_frame_raw) does not, and never gets a compressed form.
 * Every ws_frame is built in frame.c. */
#define WS_FRAME_HAS_VARIANTS 0x80000000u

typedef struct ws_frame {
    _Atomic uint32_t refs; /* the count in the low 31 bits, + WS_FRAME_HAS_VARIANTS */
    uint32_t len;          /* bytes of data[] in use: header + payload */
    /* The compressed forms of this frame, one per distinct parameter set, in
     * a list published lock-free (see ws_frame_deflated); in a compressed
     * form, the next one. */
    _Atomic(struct ws_frame *) deflated;
    uint32_t variant; /* in a compressed form: the key of its parameters */
    uint8_t data[];   /* the encoded frame, ready for write(2) */
} ws_frame;

/* Return a new unmasked, FIN frame of `opcode` with a copy of payload
 * (len bytes), refcount 1. Never NULL (allocation failure aborts). */
ws_frame *ws_frame_new(uint8_t opcode, const void *payload, size_t len);

/* Return a new frame whose payload (len bytes) the caller fills in through
 * ws_frame_payload() before sharing it. Refcount 1. */
ws_frame *ws_frame_alloc(uint8_t opcode, size_t len);
/* Return a new raw byte buffer of len bytes (a copy of data, or left for
 * the caller to fill when data is NULL) in a frame's clothing, refcount 1:
 * HTTP responses and TLS records share the write queue with frames this
 * way. Never compressed. */
ws_frame *ws_frame_raw(const void *data, size_t len);
/* Return a pointer to the payload area of f. */
uint8_t *ws_frame_payload(ws_frame *f);

/* Return a close frame with `code` and an optional reason (truncated so the
 * payload stays within 125 bytes; NULL for none). code 0 = empty payload. */
ws_frame *ws_frame_close(uint16_t code, const char *reason);

/* Add a reference (thread-safe); returns f. */
ws_frame *ws_frame_ref(ws_frame *f);
/* Drop a reference (thread-safe); frees f when the last one goes, and its
 * compressed forms with it (those still queued keep their own references). */
void ws_frame_unref(ws_frame *f);
/* Return the number of references to f. */
uint32_t ws_frame_refcount(const ws_frame *f);

/* Return the frame to send f as on a connection that negotiated params
 * (a new reference; the caller unrefs it): f's compressed form (RSV1 set,
 * the message deflated with no context takeover), or f itself for control
 * frames, payloads shorter than params->min_size, payloads that do not
 * shrink, and frames not built by ws_frame_alloc. The compressed form is
 * made once per frame and parameter set, by the first caller that needs it
 * in any thread, and kept with f: every member of a broadcast that agreed
 * the same parameters gets the same bytes, the others the plain f. */
ws_frame *ws_frame_deflated(ws_frame *f, const ws_deflate_params *params);

/* Return true when `code` may appear in a close frame received from a peer
 * (RFC 6455 7.4: 1000-1003, 1007-1011, 3000-4999). */
bool ws_close_code_valid(uint16_t code);

#endif
