/* The one string hash: FNV-1a over the bytes, then a 64-bit finaliser so
 * that every input bit reaches every output bit (FNV alone spreads keys
 * that differ in their last byte poorly). Used by the maps (seeded), the
 * directory's shards, the Redis shard ring (unseeded: every node must
 * agree) and the Redis client's connection affinity. No I/O. */
#ifndef WSGATE_COMMON_HASH_H
#define WSGATE_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV_BASIS 0xcbf29ce484222325ULL

/* Return the hash of len bytes at s, starting from basis (HASH_FNV_BASIS,
 * or it XOR a secret seed for maps that clients can aim at). */
static inline uint64_t hash_bytes(const void *s, size_t len, uint64_t basis) {
    const unsigned char *p = s;
    uint64_t h = basis;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

#endif
