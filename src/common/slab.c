#include "common/slab.h"

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/alloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_PLAIN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_PLAIN 1
#endif
#endif

/* A chunk: this header, then the slots. Aligned on its size, so a slot's
 * chunk is its address rounded down. */
typedef struct slab_chunk {
    struct slab_chunk *prev, *next; /* in the slab's partial list */
    void *free;                     /* freed slots (a list through their first word) */
    uint32_t used;                  /* slots handed out */
    uint32_t carved;                /* slots ever handed out from the fresh end */
} slab_chunk;

#define HEADER_BYTES ((sizeof(slab_chunk) + 15) & ~(size_t)15)

void slab_init(slab *s, size_t size) {
    memset(s, 0, sizeof(*s));
    s->size = (size + 15) & ~(size_t)15;
    assert(s->size >= sizeof(void *) && s->size <= SLAB_CHUNK_BYTES / 4);
    s->per_chunk = (SLAB_CHUNK_BYTES - HEADER_BYTES) / s->size;
}

#ifdef SLAB_PLAIN

void *slab_alloc(slab *s) {
    s->used++;
    return xcalloc(1, s->size);
}

void slab_free(slab *s, void *p) {
    if (!p) return;
    s->used--;
    free(p);
}

void slab_destroy(slab *s) { (void)s; }

#else

/* A chunk-aligned chunk straight from the kernel: map twice the size and
 * unmap the unaligned ends. Its pages count only once touched. */
static slab_chunk *chunk_new(void) {
    size_t n = SLAB_CHUNK_BYTES;
    uint8_t *m = mmap(NULL, 2 * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        fputs("wsgate: out of memory (slab)\n", stderr);
        abort();
    }
    uintptr_t a = ((uintptr_t)m + n - 1) & ~(uintptr_t)(n - 1);
    size_t head = a - (uintptr_t)m;
    if (head) munmap(m, head);
    munmap((uint8_t *)a + n, n - head);
    return (slab_chunk *)a; /* zeroed by the kernel */
}

static void unlink_partial(slab *s, slab_chunk *ch) {
    if (ch->prev) ch->prev->next = ch->next;
    else s->partial = ch->next;
    if (ch->next) ch->next->prev = ch->prev;
    ch->prev = ch->next = NULL;
}

static void push_partial(slab *s, slab_chunk *ch) {
    ch->prev = NULL;
    ch->next = s->partial;
    if (s->partial) s->partial->prev = ch;
    s->partial = ch;
}

void *slab_alloc(slab *s) {
    slab_chunk *ch = s->partial;
    if (!ch) {
        if (s->spare) {
            ch = s->spare;
            s->spare = NULL;
        } else {
            ch = chunk_new();
            s->chunks++;
        }
        push_partial(s, ch);
    }
    void *p;
    if (ch->free) {
        p = ch->free;
        ch->free = *(void **)p;
    } else {
        p = (uint8_t *)ch + HEADER_BYTES + (size_t)ch->carved * s->size;
        ch->carved++;
    }
    /* A fresh chunk is zero, but the reserve chunk is reused as it was. */
    memset(p, 0, s->size);
    ch->used++;
    s->used++;
    if (ch->used == s->per_chunk) unlink_partial(s, ch);
    return p;
}

void slab_free(slab *s, void *p) {
    if (!p) return;
    slab_chunk *ch = (slab_chunk *)((uintptr_t)p & ~(uintptr_t)(SLAB_CHUNK_BYTES - 1));
    assert(ch->used > 0);
    bool was_full = ch->used == s->per_chunk;
    *(void **)p = ch->free;
    ch->free = p;
    ch->used--;
    s->used--;
    if (ch->used == 0) {
        /* Empty: back to the kernel, so memory follows the connections
         * down, but one stays in reserve (fresh again: zero, uncarved). */
        if (!was_full) unlink_partial(s, ch);
        if (!s->spare) {
            /* Kept as it is (no madvise: a server whose last connection
             * comes and goes would pay a system call and page faults for
             * each); carving starts again from its first slot. */
            memset(ch, 0, HEADER_BYTES);
            s->spare = ch;
            return;
        }
        munmap(ch, SLAB_CHUNK_BYTES);
        s->chunks--;
        return;
    }
    if (was_full) push_partial(s, ch);
}

void slab_destroy(slab *s) {
    if (s->spare) {
        munmap(s->spare, SLAB_CHUNK_BYTES);
        s->spare = NULL;
        s->chunks--;
    }
}

#endif

size_t slab_bytes(const slab *s) {
#ifdef SLAB_PLAIN
    return s->used * s->size;
#else
    return s->chunks * SLAB_CHUNK_BYTES;
#endif
}
