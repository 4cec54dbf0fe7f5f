#include "store/row.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hex.h"

/* Where the dashes of a canonical UUID are. */
static bool uuid_dash_at(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

bool store_row_id_pack(const char *text, size_t len, uint8_t out[STORE_ROW_ID_LEN]) {
    if (len != 36) return false;
    size_t o = 0;
    for (size_t i = 0; i < 36;) {
        if (uuid_dash_at(i)) {
            if (text[i] != '-') return false;
            i++;
            continue;
        }
        /* Upper case would not come back as written. */
        int hi = hex_digit_value(text[i]), lo = hex_digit_value(text[i + 1]);
        if (hi < 0 || lo < 0 || (text[i] >= 'A' && text[i] <= 'F') ||
            (text[i + 1] >= 'A' && text[i + 1] <= 'F'))
            return false;
        out[o++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return true;
}

void store_row_id_format(const uint8_t id[STORE_ROW_ID_LEN], char out[37]) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < STORE_ROW_ID_LEN; i++) {
        if (uuid_dash_at(o)) out[o++] = '-';
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 15];
    }
    out[36] = '\0';
}

static size_t put_leb128(uint8_t *p, size_t v) {
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        p[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

/* Read a LEB128 length of at most 5 bytes (< 2^35) at *pos. Returns false
 * when it runs past n or is longer. */
static bool get_leb128(const uint8_t *p, size_t n, size_t *pos, size_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 5; i++) {
        if (*pos >= n) return false;
        uint8_t b = p[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = (size_t)v;
            return true;
        }
    }
    return false;
}

uint8_t *store_row_encode(const char *sender, const char *name, const char *text, size_t *len) {
    size_t s = strlen(sender), nm = strlen(name), t = strlen(text);
    uint8_t *p = xmalloc(s + nm + t + 20);
    size_t o = put_leb128(p, s);
    memcpy(p + o, sender, s);
    o += s;
    o += put_leb128(p + o, nm);
    memcpy(p + o, name, nm);
    o += nm;
    memcpy(p + o, text, t);
    *len = o + t;
    return p;
}

/* Copy n bytes at p as a string, or NULL when they hold a NUL (a C string
 * could not carry them back out). */
static char *take(const uint8_t *p, size_t n) {
    if (n && memchr(p, 0, n)) return NULL;
    return xstrndup((const char *)p, n);
}

int store_row_decode(const uint8_t *p, size_t n, char **sender, char **name, char **text) {
    *sender = *name = *text = NULL;
    size_t pos = 0, s, nm;
    if (!get_leb128(p, n, &pos, &s) || s > n - pos) return -1;
    size_t s_at = pos;
    pos += s;
    if (!get_leb128(p, n, &pos, &nm) || nm > n - pos) return -1;
    size_t n_at = pos;
    pos += nm;
    *sender = take(p + s_at, s);
    *name = take(p + n_at, nm);
    *text = take(p + pos, n - pos);
    if (!*sender || !*name || !*text) {
        free(*sender);
        free(*name);
        free(*text);
        *sender = *name = *text = NULL;
        return -1;
    }
    return 0;
}
