/* RFC 6455 codec: incremental parser for client frames, encoder for server
 * frames.
 *
 * Parser layout: a frame header (at most 14 bytes) is validated as its bytes
 * arrive, so a bad frame fails on the byte that makes it bad and limits are
 * enforced before any payload is held. Payload then goes to one of three
 * places:
 *   - nowhere: an unfragmented data frame or a control frame that is wholly
 *     in the caller's input is unmasked in place and the event points at it
 *     (the common case for small messages: no copy, no allocation);
 *   - ctl[]: a control frame split across feeds, kept apart from msg so it
 *     can arrive in the middle of a fragmented message;
 *   - msg: data being reassembled, grown geometrically up to the limits.
 * A compressed message (permessage-deflate) always takes the third way: its
 * bytes are unmasked in place and inflated into msg as they arrive, so the
 * compressed bytes are never held and the limit bounds the inflated ones. */
#include "ws/frame.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#define WS_CTL_MAX     125
#define WS_HDR_MAX     14
#define WS_MSG_MIN_CAP 256
/* A reassembly buffer bigger than this is released once its message has been
 * delivered, so an idle connection does not pin its largest message. */
#define WS_MSG_KEEP_CAP (64 * 1024)

bool ws_close_code_valid(uint16_t code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* ------------------------------------------------------------------ parser */

typedef enum { ST_HEADER, ST_PAYLOAD } parse_state;

struct ws_parser {
    size_t max_frame;   /* 0 = unlimited */
    size_t max_message; /* 0 = unlimited */
    int err;            /* sticky: once failed, always failed */
    bool closed;
    parse_state state;

    /* partial header, only used when a header straddles feeds */
    uint8_t hdr[WS_HDR_MAX];
    size_t hdr_have;
    size_t hdr_need;

    /* current frame */
    uint8_t op;
    bool fin;
    uint8_t mask[4];
    uint64_t remaining; /* payload bytes of the current frame still to come */
    uint64_t frame_off; /* payload bytes of the current frame already seen */

    /* message being reassembled; msg_op is 0 outside a message */
    uint8_t msg_op;
    bool msg_compressed; /* RSV1 on its first frame: inflate its payload */
    uint8_t *msg;
    size_t msg_len;
    size_t msg_cap;
    ws_utf8 utf8;

    /* control frame split across feeds */
    uint8_t *ctl; /* WS_CTL_MAX bytes, allocated by the first control
                         * frame with a payload (idle connections have none) */
    size_t ctl_len;

    ws_inflater *inflater; /* set by ws_parser_enable_deflate */
};

typedef struct {
    bool fin;
    bool rsv1; /* a compressed message starts */
    uint8_t op;
    size_t hlen;
    uint64_t len;
    uint8_t mask[4];
} frame_hdr;

static inline bool op_is_control(uint8_t op) { return op & 0x8; }

ws_parser *ws_parser_new(size_t max_frame, size_t max_message) {
    ws_parser *p = xcalloc(1, sizeof *p);
    p->max_frame = max_frame;
    p->max_message = max_message;
    p->state = ST_HEADER;
    p->hdr_need = 2;
    ws_utf8_init(&p->utf8);
    return p;
}

void ws_parser_free(ws_parser *p) {
    if (!p) return;
    free(p->msg);
    free(p->ctl);
    ws_inflater_free(p->inflater);
    free(p);
}

void ws_parser_enable_deflate(ws_parser *p, const ws_deflate_params *params) {
    ws_inflater_free(p->inflater);
    p->inflater = ws_inflater_new(params);
}

size_t ws_parser_memory(const ws_parser *p) {
    size_t n = sizeof *p + p->msg_cap + (p->ctl ? WS_CTL_MAX : 0);
    if (p->inflater) n += ws_inflater_memory(p->inflater);
    return n;
}

bool ws_parser_idle(const ws_parser *p) {
    /* A window the client's next message may refer to must be kept. */
    return !p->err && !p->closed && p->state == ST_HEADER && p->hdr_have == 0 && p->msg_op == 0 &&
           !(p->inflater && ws_inflater_has_context(p->inflater));
}

void ws_parser_trim(ws_parser *p) {
    if (p->msg_op == 0 && p->msg) {
        free(p->msg);
        p->msg = NULL;
        p->msg_cap = 0;
        p->msg_len = 0;
    }
    if (p->ctl && !(p->state == ST_PAYLOAD && op_is_control(p->op))) {
        free(p->ctl);
        p->ctl = NULL;
        p->ctl_len = 0;
    }
    if (p->inflater && p->msg_op == 0) ws_inflater_trim(p->inflater);
}

/* What an event with no payload points at: never NULL, so callers may
 * memcmp/memcpy it. */
static const uint8_t no_bytes[1];

size_t ws_parser_buffered(const ws_parser *p) { return p->msg_len + p->ctl_len + p->hdr_have; }

size_t ws_parser_partial_bytes(const ws_parser *p) { return p->msg_op ? p->msg_cap : 0; }

/* Check the first `have` bytes of a header. Returns 1 with *out filled when
 * the header is complete, 0 when more bytes are needed (*need = the header
 * length as far as it is known), or a negative WSG_E_WS_* code. Checks run in byte
 * order, so the verdict does not depend on how the input was split. */
static int header_scan(const ws_parser *p, const uint8_t *h, size_t have, frame_hdr *out,
                       size_t *need) {
    *need = 2;
    if (have < 1) return 0;
    uint8_t b0 = h[0];
    bool fin = b0 & 0x80;
    uint8_t op = b0 & 0x0F;
    /* RSV1 marks a compressed message (RFC 7692 6): only on its first
     * frame, only when negotiated. */
    bool rsv1 = false;
    if (b0 & 0x70) {
        if ((b0 & 0x70) != 0x40 || !p->inflater || (op != WS_OP_TEXT && op != WS_OP_BINARY))
            return WSG_E_WS_RSV;
        rsv1 = true;
    }
    switch (op) {
    case WS_OP_CONTINUATION:
        if (!p->msg_op) return WSG_E_WS_UNEXPECTED_CONTINUATION;
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (p->msg_op) return WSG_E_WS_EXPECTED_CONTINUATION;
        break;
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!fin) return WSG_E_WS_CONTROL_FRAGMENTED;
        break;
    default: return WSG_E_WS_OPCODE;
    }
    if (have < 2) return 0;

    uint8_t b1 = h[1];
    if (!(b1 & 0x80)) return WSG_E_WS_UNMASKED;
    uint8_t len7 = b1 & 0x7F;
    if (op_is_control(op) && len7 > WS_CTL_MAX) return WSG_E_WS_CONTROL_TOO_LONG;
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t hlen = 2 + ext + 4;
    *need = hlen;
    if (have < 2 + ext) return 0;

    uint64_t len = len7;
    if (ext == 2) {
        len = (uint64_t)h[2] << 8 | h[3];
        if (len < 126) return WSG_E_WS_NON_MINIMAL_LENGTH;
    } else if (ext == 8) {
        len = 0;
        for (size_t i = 0; i < 8; i++) len = len << 8 | h[2 + i];
        if (len >> 63) return WSG_E_WS_LENGTH_TOP_BIT;
        if (len < 65536) return WSG_E_WS_NON_MINIMAL_LENGTH;
    }
    if (p->max_frame && len > p->max_frame) return WSG_E_WS_FRAME_TOO_BIG;
#if SIZE_MAX < UINT64_MAX
    if (len > SIZE_MAX) return WSG_E_WS_FRAME_TOO_BIG; /* could never be held */
#endif
    /* A compressed message's limit is on its inflated size, checked while
     * inflating. */
    bool compressed = rsv1 || (op == WS_OP_CONTINUATION && p->msg_compressed);
    if (!op_is_control(op) && p->max_message && !compressed) {
        size_t held = op == WS_OP_CONTINUATION ? p->msg_len : 0;
        if (len > p->max_message - held) return WSG_E_WS_MESSAGE_TOO_BIG;
    }
    if (have < hlen) return 0;

    out->fin = fin;
    out->rsv1 = rsv1;
    out->op = op;
    out->hlen = hlen;
    out->len = len;
    memcpy(out->mask, h + hlen - 4, 4);
    return 1;
}

/* XOR n bytes of src with the mask, starting at payload offset `off`; dst may
 * equal src. Eight bytes per step: unmasking is on every byte a client
 * sends, so it must not cost a branch and a load per byte. */
static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                        uint64_t off) {
    uint8_t rot[8];
    for (size_t i = 0; i < 8; i++) rot[i] = mask[(off + i) & 3];
    uint64_t key;
    memcpy(&key, rot, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= key;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ rot[i & 7];
}

static ssize_t fail(ws_parser *p, int err) {
    p->err = err;
    return err;
}

/* Make room for `extra` more message bytes. The header check already bounded
 * msg_len + extra by max_message, so capping the doubling there never
 * leaves the buffer short. */
static void msg_reserve(ws_parser *p, size_t extra) {
    size_t need = p->msg_len + extra;
    if (need <= p->msg_cap) return;
    size_t cap = p->msg_cap ? p->msg_cap : WS_MSG_MIN_CAP;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (p->max_message && cap > p->max_message) cap = p->max_message;
    if (cap < need) cap = need;
    p->msg = xrealloc(p->msg, cap);
    p->msg_cap = cap;
}

/* Inflate in[0..n) (compressed payload, unmasked) onto the message. The
 * buffer grows geometrically up to max_message; once it is full at the
 * limit, one more byte of output means the message is over it, so no more
 * than the limit is ever held however much the input would inflate to. */
static int inflate_onto_msg(ws_parser *p, const uint8_t *in, size_t n) {
    for (;;) {
        size_t got, left = n;
        int rc;
        if (p->msg_len == p->msg_cap && p->max_message && p->msg_cap >= p->max_message) {
            uint8_t probe;
            rc = ws_inflater_feed(p->inflater, in, &left, &probe, 1, &got);
            if (rc < 0) return rc;
            if (got) return WSG_E_WS_MESSAGE_TOO_BIG;
            return 0;
        }
        if (p->msg_len == p->msg_cap) msg_reserve(p, 1);
        uint8_t *dst = p->msg + p->msg_len;
        rc = ws_inflater_feed(p->inflater, in, &left, dst, p->msg_cap - p->msg_len, &got);
        p->msg_len += got;
        if (p->msg_op == WS_OP_TEXT && got && !ws_utf8_feed(&p->utf8, dst, got))
            return WSG_E_WS_UTF8;
        if (rc < 0) return rc;
        if (rc != 1) return 0;
        in += n - left;
        n = left;
    }
}

/* Turn a complete control payload into its event. */
static int control_event(ws_parser *p, uint8_t op, const uint8_t *data, size_t len, ws_event *ev) {
    ev->data = len ? data : no_bytes;
    ev->len = len;
    if (op == WS_OP_PING) {
        ev->type = WS_EV_PING;
    } else if (op == WS_OP_PONG) {
        ev->type = WS_EV_PONG;
    } else {
        if (len == 1) return WSG_E_WS_CLOSE_PAYLOAD;
        uint16_t code = WS_CLOSE_NO_STATUS;
        if (len >= 2) {
            code = (uint16_t)(data[0] << 8 | data[1]);
            if (!ws_close_code_valid(code)) return WSG_E_WS_CLOSE_CODE;
            if (!ws_utf8_valid(data + 2, len - 2)) return WSG_E_WS_CLOSE_UTF8;
            ev->data = data + 2;
            ev->len = len - 2;
        }
        ev->type = WS_EV_CLOSE;
        ev->close_code = code;
        p->closed = true;
    }
    return 0;
}

/* The last payload byte of the current frame has been seen. Returns 1 when
 * *ev holds an event, 0 when the frame only extended a message, or an
 * error. */
static int frame_done(ws_parser *p, ws_event *ev) {
    p->state = ST_HEADER;
    p->hdr_need = 2;
    if (op_is_control(p->op)) {
        size_t n = p->ctl_len;
        p->ctl_len = 0; /* the bytes stay in ctl[] for the event */
        int rc = control_event(p, p->op, p->ctl, n, ev);
        return rc < 0 ? rc : 1;
    }
    if (!p->fin) return 0;
    if (p->msg_compressed) {
        /* RFC 7692 7.2.2: the sender removed the sync flush's tail. */
        static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
        int rc = inflate_onto_msg(p, tail, sizeof tail);
        if (rc < 0) return rc;
        p->msg_compressed = false;
        rc = ws_inflater_end_message(p->inflater);
        if (rc < 0) return rc;
    }
    if (p->msg_op == WS_OP_TEXT && !ws_utf8_complete(&p->utf8)) return WSG_E_WS_UTF8;
    ev->type = WS_EV_MESSAGE;
    ev->opcode = p->msg_op;
    ev->data = p->msg ? p->msg : no_bytes;
    ev->len = p->msg_len;
    p->msg_op = 0;
    p->msg_len = 0; /* the bytes stay in msg for the event */
    return 1;
}

ssize_t ws_parser_feed(ws_parser *p, uint8_t *in, size_t len, ws_event *ev) {
    ev->type = WS_EV_NONE;
    ev->opcode = 0;
    ev->close_code = 0;
    ev->data = NULL;
    ev->len = 0;
    if (p->err) return p->err;
    if (p->closed) return len ? fail(p, WSG_E_WS_CLOSED) : 0;
    /* The previous event's data is dead now, so a big idle buffer can go. */
    if (!p->msg_op && p->msg_cap > WS_MSG_KEEP_CAP) {
        free(p->msg);
        p->msg = NULL;
        p->msg_cap = 0;
    }

    size_t pos = 0;
    while (pos < len) {
        if (p->state == ST_HEADER) {
            frame_hdr h;
            size_t need;
            int rc;
            if (p->hdr_have == 0) {
                /* Usual case: scan the header where it lies, no copy. */
                rc = header_scan(p, in + pos, len - pos, &h, &need);
                if (rc < 0) return fail(p, rc);
                if (rc == 0) {
                    /* Validated but short: keep it (len - pos < need <= 14). */
                    memcpy(p->hdr, in + pos, len - pos);
                    p->hdr_have = len - pos;
                    p->hdr_need = need;
                    return (ssize_t)len;
                }
                pos += h.hlen;
            } else {
                size_t k = p->hdr_need - p->hdr_have;
                if (k > len - pos) k = len - pos;
                memcpy(p->hdr + p->hdr_have, in + pos, k);
                p->hdr_have += k;
                pos += k;
                rc = header_scan(p, p->hdr, p->hdr_have, &h, &need);
                if (rc < 0) return fail(p, rc);
                if (rc == 0) {
                    p->hdr_need = need;
                    continue;
                }
                p->hdr_have = 0;
            }

            bool control = op_is_control(h.op);
            /* Zero copy: the whole frame is here and needs no reassembly. */
            if (h.len <= len - pos && !h.rsv1 &&
                (control || (h.fin && h.op != WS_OP_CONTINUATION))) {
                uint8_t *data = in + pos;
                size_t n = (size_t)h.len;
                unmask_copy(data, data, n, h.mask, 0);
                pos += n;
                if (control) {
                    rc = control_event(p, h.op, data, n, ev);
                    if (rc < 0) return fail(p, rc);
                    return (ssize_t)pos;
                }
                if (h.op == WS_OP_TEXT && !ws_utf8_valid(data, n)) return fail(p, WSG_E_WS_UTF8);
                ev->type = WS_EV_MESSAGE;
                ev->opcode = h.op;
                ev->data = data;
                ev->len = n;
                return (ssize_t)pos;
            }

            p->op = h.op;
            p->fin = h.fin;
            memcpy(p->mask, h.mask, 4);
            p->remaining = h.len;
            p->frame_off = 0;
            p->state = ST_PAYLOAD;
            if (h.op == WS_OP_TEXT || h.op == WS_OP_BINARY) {
                p->msg_op = h.op;
                p->msg_compressed = h.rsv1;
                p->msg_len = 0;
                if (h.op == WS_OP_TEXT) ws_utf8_init(&p->utf8);
            } else if (control) {
                p->ctl_len = 0;
                if (h.len > 0 && !p->ctl) p->ctl = xmalloc(WS_CTL_MAX);
            }
            if (h.len == 0) {
                rc = frame_done(p, ev);
                if (rc < 0) return fail(p, rc);
                if (rc > 0) return (ssize_t)pos;
            }
            continue;
        }

        /* ST_PAYLOAD */
        size_t n = len - pos;
        if (n > p->remaining) n = (size_t)p->remaining;
        if (op_is_control(p->op)) {
            unmask_copy(p->ctl + p->ctl_len, in + pos, n, p->mask, p->frame_off);
            p->ctl_len += n;
        } else if (p->msg_compressed) {
            uint8_t *src = in + pos;
            unmask_copy(src, src, n, p->mask, p->frame_off);
            int rc = inflate_onto_msg(p, src, n);
            if (rc < 0) return fail(p, rc);
        } else {
            msg_reserve(p, n);
            uint8_t *dst = p->msg + p->msg_len;
            unmask_copy(dst, in + pos, n, p->mask, p->frame_off);
            p->msg_len += n;
            /* Validate as it arrives: a bad byte fails now, not at FIN. */
            if (p->msg_op == WS_OP_TEXT && !ws_utf8_feed(&p->utf8, dst, n))
                return fail(p, WSG_E_WS_UTF8);
        }
        pos += n;
        p->remaining -= n;
        p->frame_off += n;
        if (p->remaining == 0) {
            int rc = frame_done(p, ev);
            if (rc < 0) return fail(p, rc);
            if (rc > 0) return (ssize_t)pos;
        }
    }
    return (ssize_t)pos;
}

/* ----------------------------------------------------------------- encoder */

static size_t header_len(size_t len) { return len < 126 ? 2 : len <= 0xFFFF ? 4 : 10; }

ws_frame *ws_frame_alloc(uint8_t opcode, size_t len) {
    size_t hlen = header_len(len);
    if (len > UINT32_MAX - hlen) {
        /* ws_frame.len is 32-bit; no configured limit comes near this. */
        fprintf(stderr, "wsgate: frame of %zu bytes is too large to encode\n", len);
        abort();
    }
    ws_frame *f = xmalloc(sizeof *f + hlen + len);
    atomic_init(&f->refs, 1 | WS_FRAME_HAS_VARIANTS);
    f->len = (uint32_t)(hlen + len);
    atomic_init(&f->deflated, NULL);
    f->variant = 0;
    uint8_t *h = f->data;
    h[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (hlen == 2) {
        h[1] = (uint8_t)len;
    } else if (hlen == 4) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
    } else {
        h[1] = 127;
        uint64_t l = len;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(l >> (56 - 8 * i));
    }
    return f;
}

ws_frame *ws_frame_raw(const void *data, size_t len) {
    ws_frame *f = xmalloc(sizeof *f + len);
    atomic_init(&f->refs, 1); /* no WS_FRAME_HAS_VARIANTS: never compressed */
    f->len = (uint32_t)len;
    atomic_init(&f->deflated, NULL);
    f->variant = 0;
    if (data && len) memcpy(f->data, data, len);
    return f;
}

uint8_t *ws_frame_payload(ws_frame *f) {
    uint8_t len7 = f->data[1] & 0x7F;
    return f->data + (len7 < 126 ? 2 : len7 == 126 ? 4 : 10);
}

ws_frame *ws_frame_new(uint8_t opcode, const void *payload, size_t len) {
    ws_frame *f = ws_frame_alloc(opcode, len);
    if (len) memcpy(ws_frame_payload(f), payload, len);
    return f;
}

ws_frame *ws_frame_close(uint16_t code, const char *reason) {
    if (code == 0) return ws_frame_alloc(WS_OP_CLOSE, 0);
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > WS_CTL_MAX - 2) {
        rlen = WS_CTL_MAX - 2;
        /* Back up over continuation bytes so the peer's UTF-8 check (which
         * fails the connection) never sees a cut character. */
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80) rlen--;
    }
    ws_frame *f = ws_frame_alloc(WS_OP_CLOSE, 2 + rlen);
    uint8_t *pl = ws_frame_payload(f);
    pl[0] = (uint8_t)(code >> 8);
    pl[1] = (uint8_t)code;
    if (rlen) memcpy(pl + 2, reason, rlen);
    return f;
}

ws_frame *ws_frame_ref(ws_frame *f) {
    /* Relaxed is enough: a new reference is only ever made from one the
     * caller already holds, so the count cannot reach zero meanwhile. */
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void ws_frame_unref(ws_frame *f) {
    while (f) {
        /* Release publishes this thread's use of the frame; acquire on the
         * last drop makes every other thread's use happen before the free. */
        uint32_t old = atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel);
        if ((old & ~WS_FRAME_HAS_VARIANTS) != 1) return;
        ws_frame *next = NULL;
        if (old & WS_FRAME_HAS_VARIANTS)
            next = atomic_load_explicit(&f->deflated, memory_order_acquire);
        free(f);
        f = next; /* the list holds one reference to each form */
    }
}

uint32_t ws_frame_refcount(const ws_frame *f) {
    return atomic_load_explicit(&f->refs, memory_order_relaxed) & ~WS_FRAME_HAS_VARIANTS;
}

/* A compressed form's variant: the parameters that shape its bytes, and
 * whether compressing did not pay (then the plain frame is sent). */
#define VARIANT_SET      0x10000u
#define VARIANT_PLAIN    0x20000u
#define VARIANT_KEY_MASK 0xFFFFu

static ws_frame *find_variant(ws_frame *head, uint32_t key) {
    for (ws_frame *v = head; v; v = atomic_load_explicit(&v->deflated, memory_order_acquire))
        if ((v->variant & VARIANT_KEY_MASK) == key) return v;
    return NULL;
}

static ws_frame *pick(ws_frame *f, ws_frame *v) {
    return ws_frame_ref(v->variant & VARIANT_PLAIN ? f : v);
}

ws_frame *ws_frame_deflated(ws_frame *f, const ws_deflate_params *params) {
    uint8_t op = f->data[0] & 0x0F;
    if (!(atomic_load_explicit(&f->refs, memory_order_relaxed) & WS_FRAME_HAS_VARIANTS) ||
        (f->data[0] & 0x70) || op_is_control(op))
        return ws_frame_ref(f);
    const uint8_t *payload = ws_frame_payload(f);
    size_t plen = f->len - (size_t)(payload - f->data);
    if (plen < params->min_size) return ws_frame_ref(f);

    uint32_t key = (uint32_t)ws_deflate_compress_bits(params) << 8 | params->level;
    ws_frame *head = atomic_load_explicit(&f->deflated, memory_order_acquire);
    ws_frame *v = find_variant(head, key);
    if (v) return pick(f, v);

    size_t clen;
    uint8_t *c = ws_deflate_compress(params, payload, plen, &clen);
    ws_frame *n;
    if (clen < plen) {
        n = ws_frame_new(op, c, clen);
        n->data[0] |= 0x40; /* RSV1: a compressed message */
        n->variant = key | VARIANT_SET;
    } else {
        n = ws_frame_alloc(op, 0);
        n->variant = key | VARIANT_SET | VARIANT_PLAIN;
    }
    free(c);
    /* Publish; another thread may have published the same form meanwhile,
     * and then its copy wins so that every recipient shares one. */
    for (;;) {
        v = find_variant(head, key);
        if (v) {
            atomic_store_explicit(&n->deflated, NULL, memory_order_relaxed);
            ws_frame_unref(n);
            return pick(f, v);
        }
        atomic_store_explicit(&n->deflated, head, memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&f->deflated, &head, n, memory_order_acq_rel,
                                                  memory_order_acquire))
            return pick(f, n);
    }
}
