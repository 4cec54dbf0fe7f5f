/* Base64 (RFC 4648), in one place: the store's key file and the WebSocket
 * handshake use the standard alphabet with padding, JWTs base64url without
 * it. Decoding is strict, so that one byte string has one text: no
 * whitespace, no stray padding, and the unused bits of the last character
 * must be zero. No I/O. */
#ifndef WSGATE_COMMON_BASE64_H
#define WSGATE_COMMON_BASE64_H

#include <stddef.h>
#include <stdint.h>

typedef enum base64_variant {
    BASE64_STD, /* A-Z a-z 0-9 + /, padded with '=' to a multiple of 4 */
    BASE64_URL, /* A-Z a-z 0-9 - _, no padding (JWT, RFC 7515) */
} base64_variant;

/* Return the length of the encoding of n bytes in `v`, without a NUL. */
size_t base64_encoded_len(size_t n, base64_variant v);

/* Encode the n bytes of in into out (base64_encoded_len + 1 bytes, the
 * caller's), NUL-terminated. */
void base64_encode(const uint8_t *in, size_t n, char *out, base64_variant v);

/* Decode the len characters of s into out (cap bytes, the caller's).
 * Returns the decoded length, or WSG_E_PARSE when s is not canonical base64
 * of the variant, WSG_E_INVAL when it would decode to more than cap bytes
 * (out is then undefined).
 * Decoded bits pass through no other buffer: safe for key material. */
long base64_decode(const char *s, size_t len, uint8_t *out, size_t cap, base64_variant v);

#endif
