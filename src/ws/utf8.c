/* Incremental UTF-8 validation.
 *
 * The state between calls is "how many continuation bytes are still owed"
 * plus the range the NEXT continuation byte must fall in. Only the first
 * continuation byte after a lead ever has a range narrower than 80..BF, and
 * that narrowing is exactly what rejects overlongs (E0, F0), surrogates (ED)
 * and code points above U+10FFFF (F4) at the first offending byte. */
#include "ws/utf8.h"

#include <string.h>

enum { UTF8_BOUNDARY = 0, UTF8_INSIDE = 1, UTF8_REJECT = 2 };

void ws_utf8_init(ws_utf8 *v) {
    v->state = UTF8_BOUNDARY;
    v->needed = 0;
    v->lower = 0x80;
    v->upper = 0xBF;
}

bool ws_utf8_feed(ws_utf8 *v, const uint8_t *s, size_t len) {
    if (v->state == UTF8_REJECT) return false;
    /* Work on locals so the loop stays in registers. */
    uint32_t needed = v->needed, lower = v->lower, upper = v->upper;
    size_t i = 0;
    while (i < len) {
        if (needed == 0) {
            /* Chat traffic is overwhelmingly ASCII: skip it a word at a time
             * (memcpy keeps the load legal at any alignment). */
            while (len - i >= 8) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & UINT64_C(0x8080808080808080)) break;
                i += 8;
            }
            if (i == len) break;
            uint8_t b = s[i++];
            if (b < 0x80) continue;
            if (b < 0xC2) goto reject; /* stray continuation, or C0/C1 overlong */
            if (b < 0xE0) {
                needed = 1;
            } else if (b < 0xF0) {
                needed = 2;
                if (b == 0xE0) lower = 0xA0; /* below: overlong 3-byte form */
                if (b == 0xED) upper = 0x9F; /* above: surrogates */
            } else if (b < 0xF5) {
                needed = 3;
                if (b == 0xF0) lower = 0x90; /* below: overlong 4-byte form */
                if (b == 0xF4) upper = 0x8F; /* above: beyond U+10FFFF */
            } else {
                goto reject;
            }
        } else {
            uint8_t b = s[i++];
            if (b < lower || b > upper) goto reject;
            lower = 0x80;
            upper = 0xBF;
            needed--;
        }
    }
    v->needed = needed;
    v->lower = lower;
    v->upper = upper;
    v->state = needed ? UTF8_INSIDE : UTF8_BOUNDARY;
    return true;
reject:
    v->state = UTF8_REJECT;
    return false;
}

bool ws_utf8_complete(const ws_utf8 *v) { return v->state == UTF8_BOUNDARY; }

bool ws_utf8_valid(const uint8_t *s, size_t len) {
    ws_utf8 v;
    ws_utf8_init(&v);
    return ws_utf8_feed(&v, s, len) && ws_utf8_complete(&v);
}

size_t ws_utf8_char_len(const uint8_t *s, size_t len) {
    if (len == 0) return 0;
    uint8_t b = s[0];
    size_t need = b < 0x80 ? 1 : b < 0xC2 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 0;
    if (need == 0 || need > len) return 0;
    /* The validator's own rules decide: one character fed, at a boundary. */
    ws_utf8 v;
    ws_utf8_init(&v);
    return ws_utf8_feed(&v, s, need) && ws_utf8_complete(&v) ? need : 0;
}

size_t ws_utf8_trim(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    /* Find the start of the last character: at most 3 continuation bytes. */
    size_t i = len, back = 0;
    while (i > 0 && back < 4 && (u[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0) return back ? 0 : len;
    unsigned char lead = u[i - 1];
    size_t need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    /* The last character is complete when its lead byte and continuation
     * bytes add up to its length; otherwise cut before the lead byte. */
    return back + 1 >= need ? len : i - 1;
}
