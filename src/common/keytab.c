#include "common/keytab.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/random.h"

static uint64_t keytab_seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

/* One secret seed for every table: clients choose room and user ids, and
 * must not be able to aim them at one probe run. */
static void seed_init(void) {
    uint64_t s = 0;
    random_bytes(&s, sizeof(s));
    keytab_seed = s | 1;
}

static uint64_t hash_key(const char *k) {
    return hash_bytes(k, strlen(k), HASH_FNV_BASIS ^ keytab_seed);
}

void keytab_init(keytab *t, keytab_key_fn key) {
    pthread_once(&seed_once, seed_init);
    memset(t, 0, sizeof(*t));
    t->key = key;
}

void keytab_free(keytab *t) {
    free(t->slots);
    t->slots = NULL;
    t->cap = 0;
    t->count = 0;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t find(const keytab *t, const char *key, uint64_t h) {
    size_t mask = t->cap - 1;
    size_t i = h & mask;
    while (t->slots[i] && strcmp(t->key(t->slots[i]), key) != 0) i = (i + 1) & mask;
    return i;
}

static void resize(keytab *t, size_t ncap) {
    void **old = t->slots;
    size_t ocap = t->cap;
    t->slots = xcalloc(ncap, sizeof(*t->slots));
    t->cap = ncap;
    size_t mask = ncap - 1;
    for (size_t i = 0; i < ocap; i++) {
        if (!old[i]) continue;
        size_t j = hash_key(t->key(old[i])) & mask;
        while (t->slots[j]) j = (j + 1) & mask;
        t->slots[j] = old[i];
    }
    free(old);
}

void *keytab_get(const keytab *t, const char *key) {
    if (t->count == 0) return NULL;
    return t->slots[find(t, key, hash_key(key))];
}

void *keytab_put(keytab *t, void *value) {
    if ((t->count + 1) * 4 > t->cap * 3) resize(t, t->cap ? t->cap * 2 : 8);
    size_t i = find(t, t->key(value), hash_key(t->key(value)));
    void *old = t->slots[i];
    t->slots[i] = value;
    if (!old) t->count++;
    return old;
}

void *keytab_remove(keytab *t, const char *key) {
    if (t->count == 0) return NULL;
    size_t mask = t->cap - 1;
    size_t i = find(t, key, hash_key(key));
    void *v = t->slots[i];
    if (!v) return NULL;
    /* Backward shift: pull later members of the probe run into the hole
     * when their home slot is not after it, so lookups never need
     * tombstones. */
    for (size_t j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
        size_t home = hash_key(t->key(t->slots[j])) & mask;
        /* j's value may fill hole i unless its home lies in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        t->slots[i] = t->slots[j];
        i = j;
    }
    t->slots[i] = NULL;
    t->count--;
    /* Give memory back as a table empties: an idle server's tables follow
     * its connections down. */
    if (t->count == 0) keytab_free(t);
    else if (t->cap > 64 && t->count * 8 < t->cap) resize(t, t->cap / 2);
    return v;
}

bool keytab_next(const keytab *t, size_t *iter, void **value) {
    for (size_t i = *iter; i < t->cap; i++) {
        if (t->slots[i]) {
            *iter = i + 1;
            *value = t->slots[i];
            return true;
        }
    }
    *iter = t->cap;
    return false;
}
