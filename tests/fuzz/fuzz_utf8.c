/* libFuzzer target for the one UTF-8 validator (src/ws/utf8.c), which the
 * frame parser, the config and tfvars parsers, the logger's escaper and the
 * metrics labels all use. Whatever the input:
 * - validating it whole, fed in chunks split at every fuzzer-chosen point,
 *   and walked character by character (ws_utf8_char_len) agree;
 * - ws_utf8_trim of valid text cut anywhere backs off to a whole character;
 * - the logger's escape of valid text decodes (via jansson) back to it. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_require.h"
#include "common/json_escape.h"
#include "log/log.h"
#include "ws/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    /* The first byte chooses the chunk size of the streaming feed. */
    size_t chunk = (size_t)data[0] % 7 + 1;
    const uint8_t *s = data + 1;
    size_t n = size - 1;

    bool whole = ws_utf8_valid(s, n);

    ws_utf8 v;
    ws_utf8_init(&v);
    bool fed = true;
    for (size_t i = 0; i < n && fed; i += chunk)
        fed = ws_utf8_feed(&v, s + i, n - i < chunk ? n - i : chunk);
    require(whole == (fed && ws_utf8_complete(&v)));

    bool walked = true;
    for (size_t i = 0; i < n;) {
        size_t k = ws_utf8_char_len(s + i, n - i);
        if (k == 0) {
            walked = false;
            break;
        }
        i += k;
    }
    require(whole == walked);

    if (whole) {
        /* Cutting valid text anywhere, trim backs off to the last whole
         * character: at most 3 bytes, and what is left is valid. */
        require(ws_utf8_trim((const char *)s, n) == n);
        size_t cut = n ? (size_t)data[0] * 131 % n : 0;
        size_t t = ws_utf8_trim((const char *)s, cut);
        require(t <= cut && cut - t <= 3 && ws_utf8_valid(s, t));
    }

    if (whole && n < 4096 && !memchr(s, 0, n)) {
        char buf[4096 * 6 + 3];
        size_t used = 0;
        buf[0] = '"';
        size_t w = json_escape(buf + 1, sizeof(buf) - 2, (const char *)s, n, &used);
        require(used == n);
        buf[1 + w] = '"';
        json_error_t err;
        json_t *j = json_loadb(buf, w + 2, JSON_DECODE_ANY, &err);
        require(j && json_is_string(j));
        require(json_string_length(j) == n && memcmp(json_string_value(j), s, n) == 0);
        json_decref(j);
    }
    return 0;
}
