/* The field walkers (src/common/fields.c): what each field is, empty
 * fields, separators at either end, and HTTP list trimming. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/fields.h"

/* Join the fields of s with '|' into out, to compare in one assertion. */
static void walk(const char *s, char sep, bool list, char *out, size_t cap) {
    const char *p = s, *end = s + strlen(s), *f;
    size_t n, used = 0, count = 0;
    out[0] = '\0';
    while (list ? fields_next_list(&p, end, &f, &n) : fields_next(&p, end, sep, &f, &n)) {
        cr_assert(p <= end);
        if (list) cr_assert(n > 0);
        used += (size_t)snprintf(out + used, cap - used, "%s%.*s", count++ ? "|" : "", (int)n, f);
        cr_assert(used < cap);
    }
    cr_assert_eq(p, end);
}

Test(fields, split_on_a_separator_keeps_fields_as_they_are) {
    char out[128];
    walk("a=1&b&&c= 2 ", '&', false, out, sizeof out);
    cr_assert_str_eq(out, "a=1|b||c= 2 ");
    walk("host;x-amz-date", ';', false, out, sizeof out);
    cr_assert_str_eq(out, "host|x-amz-date");
    walk("", '&', false, out, sizeof out);
    cr_assert_str_eq(out, "");
    walk("a&", '&', false, out, sizeof out); /* no empty field after the last separator */
    cr_assert_str_eq(out, "a");
    walk("&a", '&', false, out, sizeof out);
    cr_assert_str_eq(out, "|a");
}

Test(fields, http_lists_skip_empty_elements_and_trim) {
    char out[128];
    walk("keep-alive, Upgrade", 0, true, out, sizeof out);
    cr_assert_str_eq(out, "keep-alive|Upgrade");
    walk(" ,\t, W/\"x\" ,,\"y\"\t, ", 0, true, out, sizeof out);
    cr_assert_str_eq(out, "W/\"x\"|\"y\"");
    walk("", 0, true, out, sizeof out);
    cr_assert_str_eq(out, "");
    walk(" , ,", 0, true, out, sizeof out);
    cr_assert_str_eq(out, "");
    walk("a b", 0, true, out, sizeof out); /* inner spaces stay */
    cr_assert_str_eq(out, "a b");
}
