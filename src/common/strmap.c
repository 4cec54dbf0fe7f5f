#include "common/strmap.h"

#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"

static char tombstone_mark;
#define STRMAP_TOMBSTONE (&tombstone_mark)

/* Set once, by whichever thread hashes first. Bug fix: a plain variable
 * let two workers starting together each pick a seed, so maps filled
 * under one were searched under the other (and TSan reported the race):
 * the first seed stored wins and every thread uses it. */
static _Atomic uint64_t strmap_seed;

static uint64_t seed_get(void) {
    uint64_t cur = atomic_load_explicit(&strmap_seed, memory_order_relaxed);
    if (cur) return cur;
    uint64_t seed = 0;
    if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1) seed = 0x9e3779b97f4a7c15ULL;
    seed |= 1;
    if (atomic_compare_exchange_strong_explicit(&strmap_seed, &cur, seed, memory_order_relaxed,
                                                memory_order_relaxed))
        return seed;
    return cur; /* another thread's, stored first */
}

static uint64_t hash_key(const char *s) {
    return hash_bytes(s, strlen(s), HASH_FNV_BASIS ^ seed_get());
}

void strmap_init(strmap *m) { memset(m, 0, sizeof(*m)); }

void strmap_init_borrowed(strmap *m) {
    memset(m, 0, sizeof(*m));
    m->borrowed = true;
}

void strmap_free(strmap *m) {
    for (size_t i = 0; i < m->cap && !m->borrowed; i++) {
        char *k = m->slots[i].key;
        if (k && k != STRMAP_TOMBSTONE) free(k);
    }
    free(m->slots);
    bool borrowed = m->borrowed;
    memset(m, 0, sizeof(*m));
    m->borrowed = borrowed;
}

void strmap_free_values(strmap *m, void (*free_value)(void *)) {
    for (size_t i = 0; i < m->cap; i++) {
        char *k = m->slots[i].key;
        if (k && k != STRMAP_TOMBSTONE) free_value(m->slots[i].value);
    }
    strmap_free(m);
}

static strmap_slot *find(const strmap *m, const char *key, uint64_t h) {
    if (m->cap == 0) return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        strmap_slot *s = &m->slots[i];
        if (!s->key) return NULL;
        if (s->key != STRMAP_TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0) return s;
    }
}

static void grow(strmap *m) {
    size_t ncap = m->cap ? m->cap * 2 : 16;
    /* Only tombstones: rehash at the same size. */
    if (m->count * 2 < m->cap) ncap = m->cap;
    strmap_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = xcalloc(ncap, sizeof(*m->slots));
    m->cap = ncap;
    m->used = m->count;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i].key || old[i].key == STRMAP_TOMBSTONE) continue;
        size_t mask = ncap - 1;
        size_t j = old[i].hash & mask;
        while (m->slots[j].key) j = (j + 1) & mask;
        m->slots[j] = old[i];
    }
    free(old);
}

void *strmap_get(const strmap *m, const char *key) {
    strmap_slot *s = find(m, key, hash_key(key));
    return s ? s->value : NULL;
}

const char *strmap_put(strmap *m, const char *key, void *value, void **old) {
    uint64_t h = hash_key(key);
    strmap_slot *s = find(m, key, h);
    if (s) {
        if (old) *old = s->value;
        s->value = value;
        return s->key;
    }
    if (old) *old = NULL;
    if ((m->used + 1) * 4 > m->cap * 3) grow(m);
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key && m->slots[i].key != STRMAP_TOMBSTONE) i = (i + 1) & mask;
    if (!m->slots[i].key) m->used++;
    m->slots[i].key = m->borrowed ? (char *)key : xstrdup(key);
    m->slots[i].hash = h;
    m->slots[i].value = value;
    m->count++;
    return m->slots[i].key;
}

void *strmap_remove(strmap *m, const char *key) {
    strmap_slot *s = find(m, key, hash_key(key));
    if (!s) return NULL;
    void *v = s->value;
    if (!m->borrowed) free(s->key);
    s->key = STRMAP_TOMBSTONE;
    s->value = NULL;
    m->count--;
    return v;
}

bool strmap_next(const strmap *m, size_t *iter, const char **key, void **value) {
    for (size_t i = *iter; i < m->cap; i++) {
        const strmap_slot *s = &m->slots[i];
        if (s->key && s->key != STRMAP_TOMBSTONE) {
            *iter = i + 1;
            if (key) *key = s->key;
            if (value) *value = s->value;
            return true;
        }
    }
    *iter = m->cap;
    return false;
}
