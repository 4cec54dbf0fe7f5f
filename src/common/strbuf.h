/* Appending text to a fixed buffer without printf. snprintf parses its
 * format on every call; on the paths that run once per message (frame
 * encoding, encryption AAD) that parsing cost more than the copying. The
 * result is exactly what snprintf would write: cut to fit, always
 * NUL-terminated. */
#ifndef WSGATE_COMMON_STRBUF_H
#define WSGATE_COMMON_STRBUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct strbuf {
    char *p;
    size_t cap; /* bytes at p, NUL included; at least 1 */
    size_t len; /* bytes written, at most cap - 1 */
} strbuf;

/* Start an empty string in p (cap bytes, cap >= 1). */
static inline void strbuf_init(strbuf *b, char *p, size_t cap) {
    b->p = p;
    b->cap = cap;
    b->len = 0;
    p[0] = '\0';
}

/* Append n bytes of s (as many as fit). */
static inline void strbuf_put(strbuf *b, const char *s, size_t n) {
    size_t space = b->cap - 1 - b->len;
    if (n > space) n = space;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Append the string s. */
static inline void strbuf_puts(strbuf *b, const char *s) { strbuf_put(b, s, strlen(s)); }

/* Append one character. */
static inline void strbuf_putc(strbuf *b, char c) { strbuf_put(b, &c, 1); }

/* Append v in decimal (as "%lld" would). */
static inline void strbuf_i64(strbuf *b, int64_t v) {
    char tmp[24];
    size_t i = sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[--i] = '-';
    strbuf_put(b, tmp + i, sizeof(tmp) - i);
}

#endif
