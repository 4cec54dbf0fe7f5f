/* Unit tests for src/common/bytebuf.h: the one growth rule (bytebuf_grow)
 * that the HTTP request's header store, the integration client's response
 * buffer and bytebuf itself share. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/bytebuf.h"

Test(bytebuf, grow_doubles_from_first_until_need_fits) {
    size_t cap = 0;
    char *p = bytebuf_grow(NULL, &cap, 1, 512);
    cr_assert_eq(cap, 512);
    memset(p, 'a', cap);
    char *q = bytebuf_grow(p, &cap, 512, 512);
    cr_assert_eq(q, p, "no reallocation while need fits");
    cr_assert_eq(cap, 512);
    q = bytebuf_grow(q, &cap, 513, 512);
    cr_assert_eq(cap, 1024);
    cr_assert_eq(q[511], 'a', "contents kept");
    q = bytebuf_grow(q, &cap, 5000, 512);
    cr_assert_eq(cap, 8192);
    free(q);
}

Test(bytebuf, put_keeps_a_nul_after_the_bytes) {
    bytebuf b = {0};
    for (int i = 0; i < 1000; i++) bytebuf_put(&b, "xyz", 3);
    cr_assert_eq(b.n, 3000);
    cr_assert_geq(b.cap, 3001);
    cr_assert_eq(b.d[3000], '\0');
    cr_assert_eq(memcmp(b.d + 2997, "xyz", 3), 0);
    char *s = bytebuf_take(&b);
    cr_assert_eq(b.d, NULL);
    cr_assert_eq(strlen(s), 3000);
    free(s);
}
