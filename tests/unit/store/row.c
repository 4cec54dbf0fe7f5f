/* Unit tests for src/store/row.c: the compact row's body codec and packed
 * message ids. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "store/row.h"

static void round_trip(const char *sender, const char *name, const char *text) {
    size_t n;
    uint8_t *body = store_row_encode(sender, name, text, &n);
    cr_assert_eq(n, strlen(sender) + strlen(name) + strlen(text) + 2 + (strlen(sender) > 127) +
                        (strlen(name) > 127));
    char *s, *nm, *t;
    cr_assert_eq(store_row_decode(body, n, &s, &nm, &t), 0);
    cr_assert_str_eq(s, sender);
    cr_assert_str_eq(nm, name);
    cr_assert_str_eq(t, text);
    free(s);
    free(nm);
    free(t);
    free(body);
}

Test(store_row, body_round_trip) {
    round_trip("alice", "Alice A.", "hello");
    round_trip("", "", "");
    round_trip("u", "", "text with \"quotes\", commas\nand a line break");
    char longs[300];
    memset(longs, 'x', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    round_trip(longs, longs, longs); /* two-byte lengths */
}

Test(store_row, body_layout) {
    size_t n;
    uint8_t *body = store_row_encode("ab", "c", "xyz", &n);
    static const uint8_t want[] = {2, 'a', 'b', 1, 'c', 'x', 'y', 'z'};
    cr_assert_eq(n, sizeof(want));
    cr_assert_eq(memcmp(body, want, n), 0);
    free(body);
}

Test(store_row, malformed_bodies_are_refused) {
    const struct {
        const char *what;
        const uint8_t *p;
        size_t n;
    } bad[] = {
        {"empty", (const uint8_t *)"", 0},
        {"sender past the end", (const uint8_t[]){5, 'a'}, 2},
        {"no name length", (const uint8_t[]){1, 'a'}, 2},
        {"name past the end", (const uint8_t[]){0, 3, 'a'}, 3},
        {"unterminated length", (const uint8_t[]){0x80, 0x80}, 2},
        {"over-long length", (const uint8_t[]){0x80, 0x80, 0x80, 0x80, 0x80, 0}, 6},
        {"NUL in the text", (const uint8_t[]){0, 0, 'a', 0, 'b'}, 5},
        {"NUL in the sender", (const uint8_t[]){1, 0, 0}, 3},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *s = (char *)1, *nm = (char *)1, *t = (char *)1;
        cr_assert_eq(store_row_decode(bad[i].p, bad[i].n, &s, &nm, &t), -1, "%s", bad[i].what);
        cr_assert(!s && !nm && !t, "%s", bad[i].what);
    }
}

Test(store_row, ids_pack_only_what_formats_back) {
    const char *uuid = "01a23910-fa0f-7286-8d2a-053f15a74f6f";
    uint8_t id[STORE_ROW_ID_LEN];
    cr_assert(store_row_id_pack(uuid, strlen(uuid), id));
    cr_assert_eq(id[0], 0x01);
    cr_assert_eq(id[15], 0x6f);
    char back[37];
    store_row_id_format(id, back);
    cr_assert_str_eq(back, uuid);
    static const char *const kept_as_text[] = {
        "01A23910-fa0f-7286-8d2a-053f15a74f6f", /* upper case would not come back */
        "01a23910fa0f72868d2a053f15a74f6f",     /* no dashes */
        "01a23910-fa0f-7286-8d2a-053f15a74f6",  /* short */
        "01a23910-fa0f-7286-8d2a_053f15a74f6f", /* a dash missing */
        "01a23910-fa0f-7286-8d2a-053f15a74f6g", /* not hex */
        "legacy-id-1",
    };
    for (size_t i = 0; i < sizeof(kept_as_text) / sizeof(kept_as_text[0]); i++)
        cr_assert(!store_row_id_pack(kept_as_text[i], strlen(kept_as_text[i]), id), "%s",
                  kept_as_text[i]);
}
