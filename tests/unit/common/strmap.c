/* Unit tests for src/common/strmap.c: the string-keyed open-addressing map
 * behind the registry and the store's caches, in its two modes (keys
 * copied, keys borrowed from the caller). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strmap.h"

/* Insert n keys, replace some, remove every third, check the rest; the map
 * grows (and rehashes over tombstones) along the way. */
static void exercise(strmap *m, char keys[][16], size_t n) {
    for (size_t i = 0; i < n; i++) {
        void *old = (void *)1;
        strmap_put(m, keys[i], (void *)(i + 1), &old);
        cr_assert_null(old);
    }
    cr_assert_eq(m->count, n);
    void *old = NULL;
    strmap_put(m, keys[5], (void *)500, &old);
    cr_assert_eq((size_t)old, 6);
    cr_assert_eq(m->count, n);
    for (size_t i = 0; i < n; i += 3) cr_assert_not_null(strmap_remove(m, keys[i]));
    cr_assert_null(strmap_remove(m, "absent"));
    for (size_t i = 0; i < n; i++) {
        void *v = strmap_get(m, keys[i]);
        if (i % 3 == 0) cr_assert_null(v, "%s", keys[i]);
        else cr_assert_eq((size_t)v, i == 5 ? 500 : i + 1, "%s", keys[i]);
    }
    size_t it = 0, seen = 0;
    const char *k;
    while (strmap_next(m, &it, &k, NULL)) seen++;
    cr_assert_eq(seen, n - (n + 2) / 3);
}

Test(strmap, copies_keys_by_default) {
    static char keys[1000][16];
    for (size_t i = 0; i < 1000; i++) snprintf(keys[i], sizeof(keys[i]), "key-%zu", i);
    strmap m;
    strmap_init(&m);
    const char *stored = strmap_put(&m, keys[1], (void *)1, NULL);
    cr_assert_neq(stored, keys[1]); /* a copy */
    strmap_remove(&m, keys[1]);
    exercise(&m, keys, 1000);
    /* The caller's buffer may change: the map kept its own copy. */
    strcpy(keys[1], "changed");
    cr_assert_eq((size_t)strmap_get(&m, "key-1"), 2);
    strmap_free(&m);
}

Test(strmap, borrowed_keys_are_the_callers) {
    static char keys[1000][16];
    for (size_t i = 0; i < 1000; i++) snprintf(keys[i], sizeof(keys[i]), "key-%zu", i);
    strmap m;
    strmap_init_borrowed(&m);
    cr_assert_eq(strmap_put(&m, keys[7], (void *)1, NULL), keys[7]);
    strmap_remove(&m, keys[7]);
    exercise(&m, keys, 1000);
    /* Lookups with another pointer to the same text find it. */
    cr_assert_eq((size_t)strmap_get(&m, "key-2"), 3);
    size_t it = 0;
    const char *k;
    while (strmap_next(&m, &it, &k, NULL)) {
        cr_assert_geq((const char *)k, (const char *)keys);
        cr_assert_lt((const char *)k, (const char *)keys + sizeof(keys));
    }
    /* Freed and used again, the map stays in borrowed mode. */
    strmap_free(&m);
    cr_assert_eq(strmap_put(&m, keys[9], (void *)9, NULL), keys[9]);
    strmap_free(&m);
}

/* strmap_free_values hands each live value over exactly once (none of a
 * removed key), and a value may own its borrowed key. */
static size_t freed;
static void count_free(void *v) {
    freed++;
    free(v);
}

Test(strmap, free_values_frees_each_live_value_once) {
    strmap m;
    strmap_init_borrowed(&m);
    for (int i = 0; i < 100; i++) {
        char *id = malloc(16);
        snprintf(id, 16, "id-%d", i);
        strmap_put(&m, id, id, NULL);
    }
    for (int i = 0; i < 100; i += 4) {
        char k[16];
        snprintf(k, sizeof k, "id-%d", i);
        free(strmap_remove(&m, k));
    }
    freed = 0;
    strmap_free_values(&m, count_free);
    cr_assert_eq(freed, 75);
    cr_assert_eq(m.count, 0);
    strmap_free_values(&m, count_free); /* empty: nothing */
    cr_assert_eq(freed, 75);
}
