/* A hash map from strings to pointers (open addressing, linear probing,
 * power-of-two capacity). Keys are copied and owned by the map; values are
 * the caller's. The hash is keyed with a per-process random seed so that
 * clients choosing room names or user ids cannot aim at collisions. */
#ifndef WSGATE_COMMON_STRMAP_H
#define WSGATE_COMMON_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct strmap_slot {
    char *key; /* NULL: empty; STRMAP_TOMBSTONE: deleted */
    uint64_t hash;
    void *value;
} strmap_slot;

typedef struct strmap {
    strmap_slot *slots;
    size_t cap;    /* 0 or a power of two */
    size_t count;  /* live keys */
    size_t used;   /* live keys + tombstones */
    bool borrowed; /* keys are the caller's, never copied or freed */
} strmap;

/* Initialise an empty map (no allocation until the first insert). */
void strmap_init(strmap *m);
/* Initialise an empty map that keeps the caller's key pointers instead of
 * copies: each key must stay unchanged in memory until its entry is
 * removed (e.g. the id stored inside the value). */
void strmap_init_borrowed(strmap *m);
/* Release the map's slots and keys (not the values). */
void strmap_free(strmap *m);
/* Pass each value to free_value (which must not use the map), then
 * release the map as strmap_free does: for maps that own their values. */
void strmap_free_values(strmap *m, void (*free_value)(void *));
/* Return the value stored under key, or NULL. */
void *strmap_get(const strmap *m, const char *key);
/* Store value under key (replacing any old value, which is returned through
 * *old when old is not NULL). Returns the map's own copy of the key (the
 * caller's pointer for a borrowed map). */
const char *strmap_put(strmap *m, const char *key, void *value, void **old);
/* Remove key; returns its value or NULL when absent. */
void *strmap_remove(strmap *m, const char *key);

/* Iteration: for (size_t i = 0; strmap_next(m, &i, &k, &v);) ... The map
 * must not be changed during the loop. */
bool strmap_next(const strmap *m, size_t *iter, const char **key, void **value);

#endif
