#include "log/log.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/json_escape.h"

static log_level current_level = LOG_INFO;
static int log_fd = -1;

/* Daily rotation state: the file in use, the directory it lives in, and the
 * UTC day (days since the epoch) its lines belong to. */
static pthread_mutex_t rotate_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_dir[4096];
static int retention_days;
static int64_t file_day = -1;
static _Atomic int64_t file_day_hint = -1; /* read without the lock on the hot path */

int log_init(log_level level, const char *path) {
    current_level = level;
    if (log_fd >= 0) close(log_fd);
    log_fd = -1;
    log_dir[0] = '\0';
    if (!path) return 0;
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    return log_fd >= 0 ? 0 : WSG_E_IO;
}

static int64_t day_of(time_t t) { return (int64_t)(t >= 0 ? t / 86400 : (t - 86399) / 86400); }

static void day_name(int64_t day, char *out, size_t len) {
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d", &tm);
}

/* Parse "wsgate-YYYY-MM-DD" at the start of name into a day number. */
static bool parse_rotated(const char *name, int64_t *day) {
    int y, m, d;
    char tail[8];
    if (sscanf(name, "wsgate-%4d-%2d-%2d%7s", &y, &m, &d, tail) < 4) return false;
    if (strncmp(tail, ".log", 4) != 0 && tail[0] != '.' && tail[0] != '-') return false;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return false;
    *day = day_of(t);
    return true;
}

/* Delete rotated files older than the retention period (lock held). */
static void prune(int64_t today) {
    DIR *dir = opendir(log_dir);
    if (!dir) return;
    struct dirent *de;
    while ((de = readdir(dir))) {
        int64_t day;
        if (!parse_rotated(de->d_name, &day)) continue;
        if (today - day > retention_days) {
            char path[8192];
            snprintf(path, sizeof(path), "%s/%s", log_dir, de->d_name);
            unlink(path);
        }
    }
    closedir(dir);
}

/* Move wsgate.log aside as wsgate-DAY.log (lock held). */
static void rotate_file(int64_t day) {
    char cur[8192], dst[8192], name[32];
    snprintf(cur, sizeof(cur), "%s/wsgate.log", log_dir);
    day_name(day, name, sizeof(name));
    snprintf(dst, sizeof(dst), "%s/wsgate-%s.log", log_dir, name);
    for (int i = 1; access(dst, F_OK) == 0 && i < 1000; i++)
        snprintf(dst, sizeof(dst), "%s/wsgate-%s.%d.log", log_dir, name, i);
    rename(cur, dst);
}

static void reopen(void) {
    char cur[8192];
    snprintf(cur, sizeof(cur), "%s/wsgate.log", log_dir);
    int fd = open(cur, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return;
    if (log_fd >= 0) {
        /* dup2 swaps the file under the same descriptor atomically, so a
         * thread writing without the lock never sees a closed one. */
        dup2(fd, log_fd);
        close(fd);
    } else {
        log_fd = fd;
    }
}

void log_rotate_check(time_t now) {
    if (!log_dir[0]) return;
    int64_t today = day_of(now);
    if (atomic_load_explicit(&file_day_hint, memory_order_relaxed) == today) return;
    pthread_mutex_lock(&rotate_lock);
    if (file_day != today) {
        if (file_day >= 0) rotate_file(file_day);
        reopen();
        file_day = today;
        atomic_store_explicit(&file_day_hint, today, memory_order_relaxed);
        prune(today);
    }
    pthread_mutex_unlock(&rotate_lock);
}

int log_open_dir(log_level level, const char *dir, int keep_days) {
    current_level = level;
    if (log_fd >= 0) close(log_fd);
    log_fd = -1;
    snprintf(log_dir, sizeof(log_dir), "%s", dir);
    retention_days = keep_days;
    file_day = -1;
    atomic_store(&file_day_hint, -1);
    /* A file left by an earlier run holds the lines of the day it was last
     * written: rotate it now when that day is over. */
    char cur[8192];
    snprintf(cur, sizeof(cur), "%s/wsgate.log", log_dir);
    struct stat st;
    time_t now = time(NULL);
    if (stat(cur, &st) == 0 && day_of(st.st_mtime) != day_of(now)) {
        pthread_mutex_lock(&rotate_lock);
        rotate_file(day_of(st.st_mtime));
        pthread_mutex_unlock(&rotate_lock);
    }
    log_rotate_check(now);
    return log_fd >= 0 ? 0 : WSG_E_IO;
}

void log_close(void) {
    if (log_fd >= 0) close(log_fd);
    log_fd = -1;
    log_dir[0] = '\0';
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

static void put_escaped(log_line *l, const char *s, size_t n) {
    size_t room = sizeof(l->buf) - l->len;
    if (l->truncated || room <= 24) {
        l->truncated = true;
        return;
    }
    size_t used;
    size_t w = json_escape(l->buf + l->len, room - 24, s, n, &used);
    l->len += w;
    /* Bug fixed: a value cut to fit used to be written as if whole. */
    if (used < n) l->truncated = true;
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

/* Write whole lines to stderr and the file. Buffers from several threads
 * are written one after the other, never interleaved within a line: stderr
 * may be a pipe, where a write over PIPE_BUF is not atomic. */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_lines(const char *buf, size_t len) {
    if (len == 0) return;
    pthread_mutex_lock(&write_lock);
    ssize_t w = write(STDERR_FILENO, buf, len);
    if (log_dir[0]) log_rotate_check(time(NULL));
    if (log_fd >= 0) w = write(log_fd, buf, len);
    (void)w;
    pthread_mutex_unlock(&write_lock);
}

/* A thread's buffered lines (see log_buffer_thread). */
#define LOG_THREAD_BUF_FLUSH (64 * 1024)
static _Thread_local struct {
    bool on;
    char *d;
    size_t len, cap;
} tbuf;

void log_buffer_thread(bool on) {
    if (!on) {
        log_flush_thread();
        free(tbuf.d);
        tbuf.d = NULL;
        tbuf.cap = 0;
    }
    tbuf.on = on;
}

void log_flush_thread(void) {
    if (tbuf.len == 0) return;
    write_lines(tbuf.d, tbuf.len);
    tbuf.len = 0;
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
    /* Errors go out at once (the process may be about to exit), after the
     * lines before them. */
    if (!tbuf.on || l->level == LOG_ERROR) {
        log_flush_thread();
        write_lines(l->buf, l->len);
        return;
    }
    if (tbuf.len + l->len > tbuf.cap) {
        size_t ncap = tbuf.cap ? tbuf.cap : 16 * 1024;
        while (ncap < tbuf.len + l->len) ncap *= 2;
        char *n = realloc(tbuf.d, ncap);
        if (!n) {
            log_flush_thread();
            write_lines(l->buf, l->len);
            return;
        }
        tbuf.d = n;
        tbuf.cap = ncap;
    }
    memcpy(tbuf.d + tbuf.len, l->buf, l->len);
    tbuf.len += l->len;
    if (tbuf.len >= LOG_THREAD_BUF_FLUSH) log_flush_thread();
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
