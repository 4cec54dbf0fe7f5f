/* A compact hash table of pointers to values that carry their own string
 * key (a connection's id, a user entry's id): a slot is the value pointer
 * alone, 8 bytes, where a strmap slot is 24 (key, hash, value). Open
 * addressing with linear probing and backward-shift deletion (no
 * tombstones), power-of-two capacity, at most 3/4 full. The key is read
 * through the table's key function each time it is needed, so it must stay
 * unchanged while the value is in the table. Seeded hash (per process), as
 * strmap. Not thread-safe: the owner locks if it must. No I/O. */
#ifndef WSGATE_COMMON_KEYTAB_H
#define WSGATE_COMMON_KEYTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Return the key (NUL-terminated) of a value in the table. */
typedef const char *(*keytab_key_fn)(const void *value);

typedef struct keytab {
    void **slots; /* NULL: empty slot */
    keytab_key_fn key;
    size_t cap;   /* 0 or a power of two */
    size_t count; /* values in the table */
} keytab;

/* Initialise an empty table (no allocation until the first put). */
void keytab_init(keytab *t, keytab_key_fn key);
/* Release the slots (not the values); the table is empty and reusable. */
void keytab_free(keytab *t);
/* Return the value whose key is key, or NULL. */
void *keytab_get(const keytab *t, const char *key);
/* Add value (non-NULL) under its own key. A value already there with the
 * same key is replaced and returned; else NULL. The table borrows value. */
void *keytab_put(keytab *t, void *value);
/* Remove the value whose key is key; returns it, or NULL when absent. */
void *keytab_remove(keytab *t, const char *key);
/* Iteration: for (size_t i = 0; keytab_next(t, &i, &v);) ... The table
 * must not be changed during the loop. */
bool keytab_next(const keytab *t, size_t *iter, void **value);
/* Bytes the table itself holds (its slot array). */
static inline size_t keytab_bytes(const keytab *t) { return t->cap * sizeof(void *); }

#endif
