/* Unit tests for handlers_rooms_page (src/app/handlers.c), the paged room
 * listing of room_list: whatever the budget, count and starting point, the
 * pages cover the sorted listing exactly once, each page's JSON fits its
 * byte budget (escaped ids included), and every page holds at least one
 * room so that paging always advances. The rooms live in a local engine's
 * directory, as a server's do. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/handlers.h"

#define NROOMS 60

static engine *eng;
static char *ids[NROOMS];

/* One page of the engine's listing. */
static json_t *page(const char *after, size_t limit, size_t max_bytes, char **next) {
    directory_room_entry *rooms;
    size_t n = engine_rooms(eng, &rooms);
    json_t *arr = handlers_rooms_page(rooms, n, after, limit, max_bytes, next);
    directory_rooms_free(rooms, n);
    return arr;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* NROOMS rooms of varied lengths, some ids full of characters JSON
 * escapes; the first room has two members. */
static void setup(void) {
    eng = engine_local_new(1, handlers_deliver(), NULL);
    for (int i = 0; i < NROOMS; i++) {
        char buf[200];
        int len = 1 + (i * 37) % 120;
        snprintf(buf, sizeof buf, "%02d", i);
        for (int k = 2; k < len && k < (int)sizeof buf - 1; k++)
            buf[k] = (i % 3 == 0) ? '"' : (i % 3 == 1 ? '\\' : 'a');
        buf[len < 2 ? 2 : len] = '\0';
        ids[i] = strdup(buf);
    }
    for (int i = 0; i <= NROOMS; i++) {
        char cid[CONN_ID_LEN + 1];
        snprintf(cid, sizeof cid, "c%d", i);
        engine_room_joined(eng, cid, ids[i == NROOMS ? 0 : i], 0, i < NROOMS);
    }
    qsort(ids, NROOMS, sizeof ids[0], cmp_str);
}

static void teardown(void) {
    engine_free(eng);
    for (int i = 0; i < NROOMS; i++) free(ids[i]);
}

TestSuite(rooms_page, .init = setup, .fini = teardown);

/* Page through with (limit, max_bytes); check every page and the whole. */
static void walk(size_t limit, size_t max_bytes) {
    size_t seen = 0;
    char *after = NULL;
    for (int pages = 0; pages <= NROOMS; pages++) {
        char *next;
        json_t *arr = page(after, limit, max_bytes, &next);
        size_t n = json_array_size(arr);
        cr_assert_geq(n, 1, "a page advances");
        cr_assert_leq(n, limit);
        if (n > 1) {
            char *txt = json_dumps(arr, JSON_COMPACT);
            cr_assert_leq(strlen(txt), max_bytes, "page of %zu rooms is %zu bytes, budget %zu", n,
                          strlen(txt), max_bytes);
            free(txt);
        }
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(arr, i);
            cr_assert_lt(seen, NROOMS);
            cr_assert_str_eq(json_string_value(json_object_get(e, "roomId")), ids[seen]);
            cr_assert_eq(json_integer_value(json_object_get(e, "activeUsers")),
                         strcmp(ids[seen], "00") == 0 ? 2 : 1);
            seen++;
        }
        if (next) cr_assert_str_eq(next, ids[seen - 1]);
        json_decref(arr);
        free(after);
        after = next;
        if (!next) break;
    }
    free(after);
    cr_assert_eq(seen, NROOMS, "limit %zu, budget %zu: %zu rooms listed", limit, max_bytes, seen);
}

Test(rooms_page, pages_cover_the_listing_within_budget) {
    size_t budgets[] = {0, 1, 100, 300, 1000, 4096, SIZE_MAX};
    size_t limits[] = {1, 2, 7, 1000, SIZE_MAX};
    for (size_t b = 0; b < sizeof budgets / sizeof budgets[0]; b++)
        for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) walk(limits[l], budgets[b]);
}

Test(rooms_page, after_need_not_be_a_room) {
    char *next;
    json_t *arr = page("01", 3, SIZE_MAX, &next); /* sorts between "00" and "01..." */
    cr_assert_eq(json_array_size(arr), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 0), "roomId")), ids[1]);
    cr_assert_str_eq(next, ids[3]);
    free(next);
    json_decref(arr);
    arr = page("\x7f", 3, SIZE_MAX, &next);
    cr_assert_eq(json_array_size(arr), 0);
    cr_assert_null(next);
    json_decref(arr);
    arr = page("", SIZE_MAX, SIZE_MAX, &next);
    cr_assert_eq(json_array_size(arr), NROOMS);
    cr_assert_null(next);
    json_decref(arr);
    /* @rooms' whole listing is the one unbounded page. */
    json_t *all = handlers_rooms_json(eng);
    arr = page(NULL, SIZE_MAX, SIZE_MAX, &next);
    cr_assert(json_equal(all, arr));
    cr_assert_null(next);
    json_decref(arr);
    json_decref(all);
}
