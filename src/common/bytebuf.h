/* A growable byte string, always NUL-terminated after its n bytes (so it
 * can be used as a C string when it holds text). Zero-initialise it
 * (`bytebuf b = {0};`); allocation failure aborts. */
#ifndef WSGATE_COMMON_BYTEBUF_H
#define WSGATE_COMMON_BYTEBUF_H

#include <stddef.h>

typedef struct bytebuf {
    char *d;  /* NULL until the first append */
    size_t n; /* bytes held, NUL not counted */
    size_t cap;
} bytebuf;

/* The growth rule every growable array of bytes shares: return p
 * reallocated (failure aborts) so that it holds at least need bytes, *cap
 * doubled from its value (or from first when it is 0) until it does, and
 * *cap updated; p itself when *cap already suffices. The caller owns the
 * result, as it owned p. For buffers that cannot be a bytebuf (their fields
 * are read elsewhere under other names). */
void *bytebuf_grow(void *p, size_t *cap, size_t need, size_t first);

/* Make room for `extra` more bytes (and the NUL) without appending. */
void bytebuf_reserve(bytebuf *b, size_t extra);

/* Append n bytes of s (s may be NULL when n is 0). */
void bytebuf_put(bytebuf *b, const void *s, size_t n);

/* Append one byte, or the C string s. */
void bytebuf_putc(bytebuf *b, char c);
void bytebuf_puts(bytebuf *b, const char *s);

/* Append printf-style formatted text. */
void bytebuf_printf(bytebuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Return b's NUL-terminated contents (never NULL), now owned by the
 * caller; b is empty again. */
char *bytebuf_take(bytebuf *b);

#endif
