/* Hexadecimal digits, in one place: sigv4 signatures, tfvars escapes,
 * random ids, the store's blind index. No allocation, no I/O. */
#ifndef WSGATE_COMMON_HEX_H
#define WSGATE_COMMON_HEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Return the value of hex digit c (either case), or -1 when c is none. */
static inline int hex_digit_value(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Write the n bytes of in as 2n lowercase digits and a NUL into out
 * (2n + 1 bytes, the caller's). */
void hex_encode_lower(const uint8_t *in, size_t n, char *out);

/* Decode exactly 2n hex digits (either case) of s into out (n bytes).
 * Returns false, with out undefined, when len is not 2n or a digit is not
 * hex. */
bool hex_decode(const char *s, size_t len, uint8_t *out, size_t n);

#endif
