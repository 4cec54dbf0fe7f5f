/* Unit tests for the incremental UTF-8 validator (src/ws/utf8.c). */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ws/utf8.h"

/* Independent reference: decode by the RFC 3629 definition (sequence length
 * from the lead, then range checks on the decoded value), which shares no
 * logic with the validator's byte-range table. */
static bool ref_valid(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        size_t n;
        uint32_t cp, min;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            n = 2, cp = b & 0x1F, min = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            n = 3, cp = b & 0x0F, min = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            n = 4, cp = b & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i < n) return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n;
    }
    return true;
}

/* Index of the byte at which byte-at-a-time feeding first fails, or -1. */
static long fail_pos(const uint8_t *s, size_t len) {
    ws_utf8 v;
    ws_utf8_init(&v);
    for (size_t i = 0; i < len; i++)
        if (!ws_utf8_feed(&v, s + i, 1)) return (long)i;
    return -1;
}

#define U(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static void expect_valid(const uint8_t *s, size_t len, bool want) {
    cr_assert_eq(ws_utf8_valid(s, len), want, "len %zu first %02x", len, len ? s[0] : 0);
    cr_assert_eq(ref_valid(s, len), want);
}

Test(utf8, valid_boundaries) {
    expect_valid((const uint8_t *)"", 0, true);
    expect_valid(U('h', 'i'), true);
    expect_valid(U(0x00), true);
    expect_valid(U(0x7F), true);
    expect_valid(U(0xC2, 0x80), true);             /* U+0080 */
    expect_valid(U(0xDF, 0xBF), true);             /* U+07FF */
    expect_valid(U(0xE0, 0xA0, 0x80), true);       /* U+0800 */
    expect_valid(U(0xED, 0x9F, 0xBF), true);       /* U+D7FF */
    expect_valid(U(0xEE, 0x80, 0x80), true);       /* U+E000 */
    expect_valid(U(0xEF, 0xBF, 0xBF), true);       /* U+FFFF */
    expect_valid(U(0xF0, 0x90, 0x80, 0x80), true); /* U+10000 */
    expect_valid(U(0xF4, 0x8F, 0xBF, 0xBF), true); /* U+10FFFF */
    const char *kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
    expect_valid((const uint8_t *)kosme, strlen(kosme), true);
}

Test(utf8, overlongs) {
    expect_valid(U(0xC0, 0x80), false);
    expect_valid(U(0xC1, 0xBF), false);
    expect_valid(U(0xE0, 0x80, 0x80), false);
    expect_valid(U(0xE0, 0x9F, 0xBF), false);
    expect_valid(U(0xF0, 0x80, 0x80, 0x80), false);
    expect_valid(U(0xF0, 0x8F, 0xBF, 0xBF), false);
    expect_valid(U(0xF8, 0x88, 0x80, 0x80, 0x80), false);
}

Test(utf8, surrogates) {
    expect_valid(U(0xED, 0xA0, 0x80), false); /* U+D800 */
    expect_valid(U(0xED, 0xAD, 0xBF), false);
    expect_valid(U(0xED, 0xBF, 0xBF), false);                   /* U+DFFF */
    expect_valid(U(0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80), false); /* a CESU-8 pair */
}

Test(utf8, above_max_and_bad_leads) {
    expect_valid(U(0xF4, 0x90, 0x80, 0x80), false); /* U+110000 */
    expect_valid(U(0xF5, 0x80, 0x80, 0x80), false);
    expect_valid(U(0xF7, 0xBF, 0xBF, 0xBF), false);
    expect_valid(U(0xFE), false);
    expect_valid(U(0xFF), false);
    expect_valid(U(0x80), false);
    expect_valid(U(0xBF), false);
    expect_valid(U('a', 0x80, 'b'), false);
}

Test(utf8, truncated) {
    expect_valid(U(0xC2), false);
    expect_valid(U(0xE2, 0x82), false);
    expect_valid(U(0xF0, 0x9F, 0x98), false);
    expect_valid(U(0xC2, 'A'), false);
    expect_valid(U(0xE2, 0x82, 'A'), false);
    /* a truncated sequence is not an error until the text ends */
    ws_utf8 v;
    ws_utf8_init(&v);
    cr_assert(ws_utf8_feed(&v, U(0xE2, 0x82)));
    cr_assert_not(ws_utf8_complete(&v));
    cr_assert(ws_utf8_feed(&v, U(0xAC)));
    cr_assert(ws_utf8_complete(&v));
}

Test(utf8, fails_at_first_impossible_byte) {
    cr_assert_eq(fail_pos(U(0xC0)), 0);
    cr_assert_eq(fail_pos(U(0xC1)), 0);
    cr_assert_eq(fail_pos(U(0xF5)), 0);
    cr_assert_eq(fail_pos(U(0xFF)), 0);
    cr_assert_eq(fail_pos(U(0xE0, 0x9F)), 1);
    cr_assert_eq(fail_pos(U(0xED, 0xA0)), 1);
    cr_assert_eq(fail_pos(U(0xF0, 0x8F)), 1);
    cr_assert_eq(fail_pos(U(0xF4, 0x90)), 1);
    cr_assert_eq(fail_pos(U(0xE2, 0x82, 'x')), 2);
    cr_assert_eq(fail_pos(U(0xF0, 0x9F, 0x98, 0x41)), 3);
    cr_assert_eq(fail_pos(U('a', 'b', 'c', 0x80)), 3);
    cr_assert_eq(fail_pos(U(0xE0, 0xA0, 0x80)), -1);
}

Test(utf8, every_split_of_valid_text) {
    const char *t = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z\xf4\x8f\xbf\xbf";
    size_t n = strlen(t);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            ws_utf8 v;
            ws_utf8_init(&v);
            cr_assert(ws_utf8_feed(&v, (const uint8_t *)t, a));
            cr_assert(ws_utf8_feed(&v, (const uint8_t *)t + a, b - a));
            cr_assert(ws_utf8_feed(&v, (const uint8_t *)t + b, n - b));
            cr_assert(ws_utf8_complete(&v));
        }
    }
}

Test(utf8, ascii_fast_path_positions) {
    /* The word-at-a-time skip must not step over a bad byte at any offset. */
    uint8_t buf[64];
    for (size_t bad = 0; bad < sizeof buf; bad++) {
        memset(buf, 'x', sizeof buf);
        buf[bad] = 0xC0;
        cr_assert_not(ws_utf8_valid(buf, sizeof buf), "bad at %zu", bad);
        cr_assert_eq(fail_pos(buf, sizeof buf), (long)bad);
        ws_utf8 v;
        ws_utf8_init(&v);
        cr_assert_not(ws_utf8_feed(&v, buf, sizeof buf));
    }
    memset(buf, 'x', sizeof buf);
    cr_assert(ws_utf8_valid(buf, sizeof buf));
}

Test(utf8, error_is_sticky_until_init) {
    ws_utf8 v;
    ws_utf8_init(&v);
    cr_assert_not(ws_utf8_feed(&v, U(0xFF)));
    cr_assert_not(ws_utf8_feed(&v, U('a')));
    cr_assert_not(ws_utf8_complete(&v));
    ws_utf8_init(&v);
    cr_assert(ws_utf8_feed(&v, U('a')));
    cr_assert(ws_utf8_complete(&v));
}

Test(utf8, exhaustive_up_to_three_bytes) {
    uint8_t s[3];
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        cr_assert_eq(ws_utf8_valid(s, 1), ref_valid(s, 1), "%02x", a);
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            cr_assert_eq(ws_utf8_valid(s, 2), ref_valid(s, 2), "%02x %02x", a, b);
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                if (ws_utf8_valid(s, 3) != ref_valid(s, 3))
                    cr_assert_fail("%02x %02x %02x", a, b, c);
            }
        }
    }
}

Test(utf8, four_byte_leads_exhaustive_tail) {
    /* All 4-byte strings starting with a 4-byte lead, last byte sampled. */
    uint8_t s[4];
    for (unsigned a = 0xF0; a < 0x100; a++)
        for (unsigned b = 0; b < 256; b++)
            for (unsigned c = 0x70; c < 0xD0; c++)
                for (unsigned d = 0x7E; d < 0xC2; d += 3) {
                    s[0] = (uint8_t)a, s[1] = (uint8_t)b, s[2] = (uint8_t)c, s[3] = (uint8_t)d;
                    if (ws_utf8_valid(s, 4) != ref_valid(s, 4))
                        cr_assert_fail("%02x %02x %02x %02x", a, b, c, d);
                }
}

Test(utf8, guard_page_no_overread) {
    long pg = sysconf(_SC_PAGESIZE);
    uint8_t *m =
        mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    cr_assert_eq(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    const char *t = "hello, w\xc3\xb6rld \xe2\x82\xac!";
    size_t n = strlen(t);
    for (size_t k = 0; k <= n; k++) {
        /* every suffix of t, ending exactly at the guard page */
        uint8_t *at = m + pg - (n - k);
        memcpy(at, t + k, n - k);
        (void)ws_utf8_valid(at, n - k);
    }
    for (size_t len = 0; len < 40; len++) {
        uint8_t *at = m + pg - len;
        memset(at, 'a', len);
        cr_assert(ws_utf8_valid(at, len));
    }
    munmap(m, 2 * (size_t)pg);
}

/* ws_utf8_trim: cutting valid text to a size never leaves half a character
 * (the bug: an error reply cut inside "é" could not be encoded and the
 * server aborted). */
Test(utf8, trim_never_splits_a_character) {
    const char *s = "ab\xc3\xa9"
                    "c\xe2\x82\xac"
                    "\xf0\x9f\x98\x80";
    size_t n = strlen(s);
    for (size_t cut = 0; cut <= n; cut++) {
        size_t t = ws_utf8_trim(s, cut);
        cr_assert_leq(t, cut);
        cr_assert(ws_utf8_valid((const uint8_t *)s, t), "cut %zu gave %zu", cut, t);
        /* Nothing whole is dropped: at most the partial character. */
        cr_assert_geq(t + 3, cut);
    }
    cr_assert_eq(ws_utf8_trim(s, 3), 2);
    cr_assert_eq(ws_utf8_trim(s, 4), 4);
    cr_assert_eq(ws_utf8_trim(s, n - 1), n - 4);
    cr_assert_eq(ws_utf8_trim("", 0), 0);
}

Test(utf8, char_len) {
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"a", 1), 1);
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\xc3\xa9", 2), 2);
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\xe2\x82\xac", 3), 3);
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\xf0\x9f\x98\x80", 4), 4);
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\xf0\x9f\x98", 3), 0); /* cut short */
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\xed\xa0\x80", 3), 0); /* surrogate */
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\xc0\xaf", 2), 0);     /* overlong */
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\xff\xa9\xa9", 3), 0);
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"\x80", 1), 0);
    cr_assert_eq(ws_utf8_char_len((const uint8_t *)"", 0), 0);
}
