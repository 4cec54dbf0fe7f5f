#include "common/json_escape.h"

#include <stdio.h>
#include <string.h>

#include "ws/utf8.h"

size_t json_escape(char *buf, size_t cap, const char *s, size_t len, size_t *consumed) {
    size_t o = 0, done = len;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
        /* Most text is printable ASCII with nothing to escape: copy each
         * such run at once (ids, names and chat text are encoded for every
         * event and log line). */
        size_t run = i;
        while (run < len && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '"' && u[run] != '\\')
            run++;
        if (run > i) {
            size_t n = run - i;
            if (o + n + 1 > cap) {
                n = cap > o + 1 ? cap - o - 1 : 0;
                memcpy(buf + o, u + i, n);
                o += n;
                done = i + n;
                break;
            }
            memcpy(buf + o, u + i, n);
            o += n;
            i = run;
            if (i == len) break;
        }
        size_t start = i;
        unsigned char c = u[i];
        char tmp[8];
        size_t tn = 0;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tn = 2;
        } else if (c < 0x20 || c == 0x7f) {
            tn = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", c);
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            tn = 1;
        } else {
            /* Copy a whole valid UTF-8 character, or U+FFFD for a bad byte. */
            size_t need = ws_utf8_char_len(u + i, len - i);
            if (need > 0) {
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
    if (consumed) *consumed = done;
    return o;
}
