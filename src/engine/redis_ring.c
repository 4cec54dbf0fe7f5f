/* The shard ring (redis_ring.h): a sorted array of points, searched by
 * bisection. */
#include "engine/redis_ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/bytebuf.h"
#include "common/hash.h"

typedef struct ring_point {
    uint64_t hash;
    uint32_t shard;
} ring_point;

struct redis_ring {
    size_t nshards;
    size_t npoints;
    ring_point *points; /* ascending by hash */
};

uint64_t redis_ring_hash(const void *s, size_t len) { return hash_bytes(s, len, HASH_FNV_BASIS); }

static int by_hash(const void *a, const void *b) {
    const ring_point *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    /* Equal hashes (improbable) are ordered by shard, so that every node
     * builds the same ring whatever the input order. */
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

redis_ring *redis_ring_new(const char *const *names, size_t n, wsg_error *err) {
    if (n == 0) {
        wsg_error_set(err, WSG_E_ENGINE_CONFIG, "no Redis server to shard over");
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[i], names[j]) == 0) {
                wsg_error_set(err, WSG_E_ENGINE_CONFIG, "Redis server %s is listed twice",
                              names[i]);
                return NULL;
            }
    redis_ring *r = xcalloc(1, sizeof *r);
    r->nshards = n;
    r->npoints = n * REDIS_RING_POINTS;
    r->points = xcalloc(r->npoints, sizeof *r->points);
    char buf[600];
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < REDIS_RING_POINTS; k++) {
            int len = snprintf(buf, sizeof buf, "%s#%zu", names[i], k);
            size_t used = len < 0 ? 0 : (size_t)len < sizeof buf ? (size_t)len : sizeof buf - 1;
            ring_point *p = &r->points[i * REDIS_RING_POINTS + k];
            p->hash = redis_ring_hash(buf, used);
            p->shard = (uint32_t)i;
        }
    qsort(r->points, r->npoints, sizeof *r->points, by_hash);
    return r;
}

size_t redis_ring_shard(const redis_ring *r, const char *key, size_t len) {
    if (r->nshards == 1) return 0;
    uint64_t h = redis_ring_hash(key, len);
    size_t lo = 0, hi = r->npoints; /* first point with hash >= h */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h) lo = mid + 1;
        else hi = mid;
    }
    return r->points[lo == r->npoints ? 0 : lo].shard;
}

void redis_ring_free(redis_ring *r) {
    if (!r) return;
    free(r->points);
    free(r);
}
