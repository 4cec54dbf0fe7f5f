/* Consistent hashing of keys (room ids, user ids) over several Redis
 * servers (`redis_urls`), as Ketama does: each server owns
 * REDIS_RING_POINTS points on a 64-bit circle, placed by hashing its name
 * ("host:port/db", redis_url_name) with the point's number, and a key
 * belongs to the server owning the first point at or after the key's hash.
 * Adding a server moves only the keys that now fall on its points (about
 * 1/(n+1) of them, all to the new server); the mapping does not depend on
 * the order the servers are listed in. Every node must compute the same
 * mapping, so the hash is fixed here (FNV-1a 64 then MurmurHash3's
 * 64-bit finaliser) and must never change. No I/O. */
#ifndef WSGATE_ENGINE_REDIS_RING_H
#define WSGATE_ENGINE_REDIS_RING_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define REDIS_RING_POINTS 160 /* per server */

typedef struct redis_ring redis_ring;

/* Build a ring over the n servers named names[i] (copied). Returns the
 * ring (the caller's, for redis_ring_free), or NULL with *err (the
 * caller's; may be NULL) set to WSG_E_ENGINE_CONFIG when n is 0 or a name
 * repeats. */
redis_ring *redis_ring_new(const char *const *names, size_t n, wsg_error *err);

/* Return the index (into the names given to redis_ring_new) of the server
 * that owns key (len bytes). */
size_t redis_ring_shard(const redis_ring *r, const char *key, size_t len);

/* Return the ring's fixed 64-bit hash of len bytes of s. */
uint64_t redis_ring_hash(const void *s, size_t len);

/* Free the ring (NULL is a no-op). */
void redis_ring_free(redis_ring *r);

#endif
