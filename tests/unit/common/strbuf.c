/* Unit tests for src/common/strbuf.h: appending without printf must write
 * exactly what snprintf writes, cut included. The store's encryption AAD
 * (store_message_aad) is built with it, and stored values are bound to
 * those bytes: it must match the snprintf format it replaced. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/strbuf.h"
#include "store/store.h"

static void expect_like_snprintf(size_t cap, const char *room, char col, int64_t seq) {
    char want[600], got[600];
    memset(want, 'x', sizeof(want));
    memset(got, 'x', sizeof(got));
    snprintf(want, cap, "messages.%c:%s:%lld", col, room, (long long)seq);
    store_message_aad(got, cap, col, room, seq);
    cr_assert_eq(memcmp(got, want, sizeof(want)), 0, "cap %zu room %s seq %" PRId64 ": %s vs %s",
                 cap, room, seq, got, want);
}

Test(strbuf, same_bytes_as_snprintf) {
    const int64_t seqs[] = {0, 1, 9, 10, 42, -1, -10, 1234567890123LL, INT64_MAX, INT64_MIN};
    const char *rooms[] = {"", "general", "café", "a:b", "long-room-name-0123456789"};
    for (size_t r = 0; r < sizeof(rooms) / sizeof(rooms[0]); r++)
        for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++)
            for (size_t cap = 1; cap <= 64; cap++)
                expect_like_snprintf(cap, rooms[r], 'm', seqs[i]);
    expect_like_snprintf(512, "general", 's', 7);
}

Test(strbuf, appends_and_cuts) {
    char buf[8];
    strbuf b;
    strbuf_init(&b, buf, sizeof(buf));
    cr_assert_str_eq(buf, "");
    strbuf_puts(&b, "ab");
    strbuf_putc(&b, '-');
    strbuf_i64(&b, -12);
    cr_assert_str_eq(buf, "ab--12");
    cr_assert_eq(b.len, 6);
    strbuf_puts(&b, "xyz"); /* only one byte fits */
    cr_assert_str_eq(buf, "ab--12x");
    cr_assert_eq(b.len, 7);
    strbuf_i64(&b, 5);
    cr_assert_str_eq(buf, "ab--12x");
    char one[1];
    strbuf_init(&b, one, 1);
    strbuf_puts(&b, "nothing fits");
    cr_assert_eq(one[0], '\0');
}
