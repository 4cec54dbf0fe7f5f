#include "common/bytebuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

void *bytebuf_grow(void *p, size_t *cap, size_t need, size_t first) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : first;
    while (c < need) c *= 2;
    *cap = c;
    return xrealloc(p, c);
}

void bytebuf_reserve(bytebuf *b, size_t extra) {
    b->d = bytebuf_grow(b->d, &b->cap, b->n + extra + 1, 64);
}

void bytebuf_put(bytebuf *b, const void *s, size_t n) {
    bytebuf_reserve(b, n);
    if (n) memcpy(b->d + b->n, s, n);
    b->n += n;
    b->d[b->n] = '\0';
}

void bytebuf_putc(bytebuf *b, char c) { bytebuf_put(b, &c, 1); }

void bytebuf_puts(bytebuf *b, const char *s) { bytebuf_put(b, s, strlen(s)); }

void bytebuf_printf(bytebuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k <= 0) return;
    bytebuf_reserve(b, (size_t)k);
    va_start(ap, fmt);
    vsnprintf(b->d + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

char *bytebuf_take(bytebuf *b) {
    if (!b->d) bytebuf_put(b, "", 0);
    char *d = b->d;
    memset(b, 0, sizeof(*b));
    return d;
}
