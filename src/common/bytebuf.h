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
