/* Fixed-size slots carved from 64 KiB chunks, for the long-lived objects
 * a server holds one of per connection (the connection, its session): no
 * malloc header per object, and no interleaving with the short-lived
 * blocks of a connect (request, parser, frames), whose holes would
 * otherwise pin heap pages under the objects that stay. Emptied chunks
 * go back to the system (one is kept against connect/close churn until
 * slab_destroy). One owner
 * thread at a time (the worker that owns the objects); no locks. Built
 * with AddressSanitizer, every slot is a plain calloc so that use after
 * free and leaks are still caught per object. */
#ifndef WSGATE_COMMON_SLAB_H
#define WSGATE_COMMON_SLAB_H

#include <stddef.h>

#define SLAB_CHUNK_BYTES (64 * 1024)

struct slab_chunk;

typedef struct slab {
    size_t size;                /* bytes per slot (a multiple of 16) */
    size_t per_chunk;           /* slots in a chunk */
    struct slab_chunk *partial; /* chunks with a free slot */
    struct slab_chunk *spare;   /* one empty chunk kept against churn */
    size_t chunks;              /* chunks held */
    size_t used;                /* slots handed out */
} slab;

/* Initialise s for objects of `size` bytes (at most a quarter of a chunk).
 * No memory is taken until the first slab_alloc. */
void slab_init(slab *s, size_t size);
/* Return a zeroed slot of s; owned by the caller until slab_free. Aborts
 * when out of memory, as xcalloc. */
void *slab_alloc(slab *s);
/* Give p (from slab_alloc on s, or NULL) back to s. */
void slab_free(slab *s, void *p);
/* Release the chunk s keeps in reserve (call once every slot is freed;
 * a slot freed later still returns its chunk when that empties). */
void slab_destroy(slab *s);
/* Bytes s holds from the system (its chunks), for the memory table. */
size_t slab_bytes(const slab *s);

#endif
