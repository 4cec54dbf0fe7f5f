/* Unit tests for handlers_rooms_page (src/app/handlers.c), the paged room
 * listing of room_list: whatever the budget, count and starting point, the
 * pages cover the sorted listing exactly once, each page's JSON fits its
 * byte budget (escaped ids included), and every page holds at least one
 * room so that paging always advances. Connections are fake `conn` structs
 * with only the id set: the registry reads nothing else. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/handlers.h"

#define NROOMS 60

static registry reg;
static conn *conns[NROOMS + 1];
static char *ids[NROOMS];

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* NROOMS rooms of varied lengths, some ids full of characters JSON
 * escapes; the first room has two members. */
static void setup(void) {
    registry_init(&reg);
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
        conns[i] = calloc(1, sizeof(conn));
        snprintf(conns[i]->id, sizeof conns[i]->id, "c%d", i);
        session *s = registry_add(&reg, conns[i], "u", "u");
        registry_join(&reg, s, ids[i == NROOMS ? 0 : i]);
    }
    qsort(ids, NROOMS, sizeof ids[0], cmp_str);
}

static void teardown(void) {
    registry_free(&reg);
    for (int i = 0; i <= NROOMS; i++) free(conns[i]);
    for (int i = 0; i < NROOMS; i++) free(ids[i]);
}

TestSuite(rooms_page, .init = setup, .fini = teardown);

/* Page through with (limit, max_bytes); check every page and the whole. */
static void walk(size_t limit, size_t max_bytes) {
    size_t seen = 0;
    char *after = NULL;
    for (int pages = 0; pages <= NROOMS; pages++) {
        char *next;
        json_t *arr = handlers_rooms_page(&reg, after, limit, max_bytes, &next);
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
    json_t *arr =
        handlers_rooms_page(&reg, "01", 3, SIZE_MAX, &next); /* sorts between "00" and "01..." */
    cr_assert_eq(json_array_size(arr), 3);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 0), "roomId")), ids[1]);
    cr_assert_str_eq(next, ids[3]);
    free(next);
    json_decref(arr);
    arr = handlers_rooms_page(&reg, "\x7f", 3, SIZE_MAX, &next);
    cr_assert_eq(json_array_size(arr), 0);
    cr_assert_null(next);
    json_decref(arr);
    arr = handlers_rooms_page(&reg, "", SIZE_MAX, SIZE_MAX, &next);
    cr_assert_eq(json_array_size(arr), NROOMS);
    cr_assert_null(next);
    json_decref(arr);
    /* @rooms' whole listing is the one unbounded page. */
    json_t *all = handlers_rooms_json(&reg);
    arr = handlers_rooms_page(&reg, NULL, SIZE_MAX, SIZE_MAX, &next);
    cr_assert(json_equal(all, arr));
    cr_assert_null(next);
    json_decref(arr);
    json_decref(all);
}
