#include "common/fields.h"

#include <string.h>

bool fields_next(const char **p, const char *end, char sep, const char **field, size_t *len) {
    if (*p >= end) return false;
    const char *s = *p;
    const char *e = memchr(s, sep, (size_t)(end - s));
    *field = s;
    *len = (size_t)((e ? e : end) - s);
    *p = e ? e + 1 : end;
    return true;
}

static bool ows(char c) { return c == ' ' || c == '\t'; }

bool fields_next_list(const char **p, const char *end, const char **elem, size_t *len) {
    const char *v = *p;
    while (v < end && (ows(*v) || *v == ',')) v++;
    if (v >= end) {
        *p = end;
        return false;
    }
    const char *s = v;
    while (v < end && *v != ',') v++;
    const char *e = v;
    while (e > s && ows(e[-1])) e--;
    *elem = s;
    *len = (size_t)(e - s);
    *p = v;
    return true;
}
