/* Allocation wrappers: every allocation in wsgate goes through these, and an
 * allocation failure aborts the process with a message (as Redis's zmalloc
 * does) instead of being handled at every call site. */
#ifndef WSGATE_COMMON_ALLOC_H
#define WSGATE_COMMON_ALLOC_H

#include <stddef.h>

/* Return a new block of n bytes (never NULL; aborts on failure). */
void *xmalloc(size_t n);
/* Return n*size zeroed bytes (never NULL; aborts on overflow or failure). */
void *xcalloc(size_t n, size_t size);
/* Resize p to n bytes; returns the new block (never NULL). */
void *xrealloc(void *p, size_t n);
/* Return a malloc'd copy of s (caller frees). */
char *xstrdup(const char *s);
/* Return a malloc'd NUL-terminated copy of the first n bytes of s. */
char *xstrndup(const char *s, size_t n);

#endif
