#include "common/base64.h"

#include "common/error.h"

static const char std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int digit_value(unsigned char c, base64_variant v) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (v == BASE64_URL ? '-' : '+')) return 62;
    if (c == (v == BASE64_URL ? '_' : '/')) return 63;
    return -1;
}

size_t base64_encoded_len(size_t n, base64_variant v) {
    if (v == BASE64_STD) return (n + 2) / 3 * 4;
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

void base64_encode(const uint8_t *in, size_t n, char *out, base64_variant v) {
    const char *a = v == BASE64_URL ? url_alphabet : std_alphabet;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[w >> 18];
        out[o++] = a[(w >> 12) & 63];
        out[o++] = a[(w >> 6) & 63];
        out[o++] = a[w & 63];
    }
    if (i < n) {
        uint32_t w = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = a[w >> 18];
        out[o++] = a[(w >> 12) & 63];
        if (i + 1 < n) out[o++] = a[(w >> 6) & 63];
        else if (v == BASE64_STD) out[o++] = '=';
        if (v == BASE64_STD) out[o++] = '=';
    }
    out[o] = '\0';
}

long base64_decode(const char *s, size_t len, uint8_t *out, size_t cap, base64_variant v) {
    size_t data = len;
    if (v == BASE64_STD) {
        if (len % 4 != 0) return WSG_E_PARSE;
        if (data > 0 && s[data - 1] == '=') data--;
        if (data > 0 && s[data - 1] == '=') data--;
    }
    /* One character alone carries 6 bits: no byte. With padding, the data
     * characters of the last group must be exactly what the '='s leave. */
    if (data % 4 == 1) return WSG_E_PARSE;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < data; i++) {
        int d = digit_value((unsigned char)s[i], v);
        if (d < 0) return WSG_E_PARSE; /* also a '=' before the end */
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap) return WSG_E_INVAL;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Non-zero leftover bits: a second text for the same bytes. */
    if (acc != 0) return WSG_E_PARSE;
    return (long)o;
}
