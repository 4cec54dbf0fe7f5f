#include "log/log.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static log_level current_level = LOG_INFO;
static int log_fd = -1;

log_level log_level_parse(const char *name) {
    if (name && strcasecmp(name, "OFF") == 0) return LOG_OFF;
    if (name && strcasecmp(name, "ERROR") == 0) return LOG_ERROR;
    return LOG_INFO;
}

int log_init(log_level level, const char *path) {
    current_level = level;
    if (log_fd >= 0) close(log_fd);
    log_fd = -1;
    if (!path) return 0;
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    return log_fd >= 0 ? 0 : -1;
}

void log_close(void) {
    if (log_fd >= 0) close(log_fd);
    log_fd = -1;
}

bool log_enabled(log_level level) { return level != LOG_OFF && level <= current_level; }

static void put(log_line *l, const char *s, size_t n) {
    /* Keep room for the closing ,"truncated":true}\n. */
    if (l->truncated || l->len + n + 24 > sizeof(l->buf)) {
        l->truncated = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

size_t log_json_escape(char *buf, size_t cap, const char *s, size_t len) {
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len; i++) {
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
            /* Copy a whole valid UTF-8 sequence, or U+FFFD for a bad byte. */
            size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
            bool ok = need > 0 && i + need <= len;
            for (size_t k = 1; ok && k < need; k++) ok = (u[i + k] & 0xC0) == 0x80;
            if (ok && need == 3) {
                ok = !(c == 0xE0 && u[i + 1] < 0xA0) && !(c == 0xED && u[i + 1] > 0x9F);
            } else if (ok && need == 4) {
                ok = !(c == 0xF0 && u[i + 1] < 0x90) && !(c == 0xF4 && u[i + 1] > 0x8F);
            }
            if (ok) {
                memcpy(tmp, u + i, need);
                tn = need;
                i += need - 1;
            } else {
                memcpy(tmp, "\xEF\xBF\xBD", 3);
                tn = 3;
            }
        }
        if (o + tn + 1 > cap) break;
        memcpy(buf + o, tmp, tn);
        o += tn;
    }
    if (cap) buf[o] = '\0';
    return o;
}

static void put_escaped(log_line *l, const char *s, size_t n) {
    size_t room = sizeof(l->buf) - l->len;
    if (l->truncated || room <= 24) {
        l->truncated = true;
        return;
    }
    size_t w = log_json_escape(l->buf + l->len, room - 24, s, n);
    l->len += w;
}

static void put_key(log_line *l, const char *key) {
    if (!l->truncated) l->last_field_end = l->len;
    put(l, ",\"", 2);
    put(l, key, strlen(key));
    put(l, "\":", 2);
}

void log_begin(log_line *l, log_level level, const char *event) {
    l->len = 0;
    l->truncated = false;
    l->level = level;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    put(l, "{\"time\":\"", 9);
    put(l, ts, strlen(ts));
    put(l, "\",\"level\":\"", 11);
    const char *lv = level == LOG_ERROR ? "ERROR" : "INFO";
    put(l, lv, strlen(lv));
    put(l, "\",\"event\":\"", 11);
    put_escaped(l, event, strlen(event));
    put(l, "\"", 1);
    l->last_field_end = l->len;
}

void log_str(log_line *l, const char *key, const char *value) {
    put_key(l, key);
    if (!value) {
        put(l, "null", 4);
        return;
    }
    put(l, "\"", 1);
    put_escaped(l, value, strlen(value));
    put(l, "\"", 1);
    l->last_field_end = l->len;
}

void log_strn(log_line *l, const char *key, const char *value, size_t len, size_t max) {
    put_key(l, key);
    put(l, "\"", 1);
    bool cut = max && len > max;
    put_escaped(l, value, cut ? max : len);
    if (cut) put(l, "...(truncated)", 14);
    put(l, "\"", 1);
}

void log_int(log_line *l, const char *key, int64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
    put_key(l, key);
    put(l, tmp, (size_t)n);
}

void log_num(log_line *l, const char *key, double v) {
    char tmp[48];
    int n = snprintf(tmp, sizeof(tmp), "%.3f", v);
    put_key(l, key);
    put(l, tmp, (size_t)n);
}

void log_end(log_line *l) {
    if (!log_enabled(l->level)) return;
    if (l->truncated) {
        l->len = l->last_field_end;
        memcpy(l->buf + l->len, ",\"truncated\":true", 17);
        l->len += 17;
    }
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    ssize_t w = write(STDERR_FILENO, l->buf, l->len);
    if (log_fd >= 0) w = write(log_fd, l->buf, l->len);
    (void)w;
}

void log_msg(log_level level, const char *event, const char *fmt, ...) {
    if (!log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_line l;
    log_begin(&l, level, event);
    log_str(&l, "msg", msg);
    log_end(&l);
}
