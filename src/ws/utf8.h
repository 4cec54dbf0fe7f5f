/* Incremental UTF-8 validation (RFC 3629): rejects overlong forms,
 * surrogates (U+D800..U+DFFF) and code points above U+10FFFF, and detects
 * the error at the first byte that makes the sequence invalid, so a text
 * message split across frames fails as early as possible. */
#ifndef WSGATE_WS_UTF8_H
#define WSGATE_WS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ws_utf8 {
    uint32_t state;  /* 0 = at a character boundary; internal otherwise */
    uint32_t needed; /* internal */
    uint32_t lower;  /* internal */
    uint32_t upper;  /* internal */
} ws_utf8;

/* Reset v to the start of a new text. */
void ws_utf8_init(ws_utf8 *v);
/* Feed len bytes. Returns false as soon as the input can no longer be valid
 * UTF-8 (v is then in an error state until reset). */
bool ws_utf8_feed(ws_utf8 *v, const uint8_t *s, size_t len);
/* Return true when the bytes fed so far end at a character boundary. */
bool ws_utf8_complete(const ws_utf8 *v);
/* Return the length of the longest prefix of s[0..len) that does not end
 * inside a multi-byte sequence (for cutting valid UTF-8 text to a size
 * without leaving half a character). */
size_t ws_utf8_trim(const char *s, size_t len);

/* Return the length (1 to 4) of the valid character that starts s[0..len),
 * or 0 when s starts with a byte that begins no valid character or with a
 * character cut short by len (for copying text character by character,
 * replacing what is not UTF-8). */
size_t ws_utf8_char_len(const uint8_t *s, size_t len);

/* Return true when s[0..len) is complete, valid UTF-8. */
bool ws_utf8_valid(const uint8_t *s, size_t len);

#endif
