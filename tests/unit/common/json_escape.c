/* Unit tests for json_escape (src/common/json_escape.c): the fast copy of
 * plain ASCII runs must give exactly what escaping byte by byte gives, at
 * every output capacity (truncation stops on a character boundary and
 * reports how much input it covered). The oracle below is the byte-by-byte
 * rule written plainly. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/json_escape.h"
#include "ws/utf8.h"

/* The rule, one input character at a time. */
static size_t oracle(char *buf, size_t cap, const char *s, size_t len, size_t *consumed) {
    size_t o = 0, done = len;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
        char tmp[8];
        size_t tn, start = i;
        unsigned char c = u[i];
        if (c == '"' || c == '\\') tn = (size_t)snprintf(tmp, sizeof tmp, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) tn = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
        else if (c < 0x80) tn = (size_t)snprintf(tmp, sizeof tmp, "%c", c);
        else {
            size_t need = ws_utf8_char_len(u + i, len - i);
            if (need) {
                memcpy(tmp, u + i, need);
                tn = need;
                i += need - 1;
            } else {
                memcpy(tmp, "\xEF\xBF\xBD", 3);
                tn = 3;
            }
        }
        if (o + tn + 1 > cap) {
            done = start;
            break;
        }
        memcpy(buf + o, tmp, tn);
        o += tn;
    }
    if (cap) buf[o] = '\0';
    *consumed = done;
    return o;
}

static void same_at_every_cap(const char *s, size_t len) {
    for (size_t cap = 0; cap <= len * 6 + 2; cap++) {
        char a[512], b[512];
        memset(a, 'x', sizeof a);
        memset(b, 'x', sizeof b);
        size_t ca = 99, cb = 99;
        size_t na = json_escape(a, cap, s, len, &ca);
        size_t nb = oracle(b, cap, s, len, &cb);
        cr_assert_eq(na, nb, "length at cap %zu", cap);
        cr_assert_eq(ca, cb, "consumed at cap %zu", cap);
        cr_assert_eq(memcmp(a, b, cap ? na + 1 : 0), 0, "bytes at cap %zu", cap);
    }
}

Test(json_escape, plain_runs_equal_byte_by_byte) {
    same_at_every_cap("hello world", 11);
    same_at_every_cap("", 0);
    same_at_every_cap("a\"b\\c", 5);
    same_at_every_cap("tab\there\nnew\x01\x7f", 15);
    same_at_every_cap("caf\xC3\xA9 \xE2\x82\xAC ok", 12);
    same_at_every_cap("bad \xC3 end \xFF!", 12);
}

Test(json_escape, random_inputs) {
    unsigned x = 12345;
    const char alphabet[] = "ab \"\\\n\x01\x7f\xC3\xA9\xE2\x82\xAC\xFF";
    for (int round = 0; round < 300; round++) {
        char s[40];
        size_t len = (size_t)(round % 40);
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            s[i] = alphabet[(x >> 16) % (sizeof alphabet - 1)];
        }
        same_at_every_cap(s, len);
    }
}
