/* JSON-lines logging: one event is always one line (control characters are
 * escaped), written to stderr and, when opened, to a file in the data
 * directory. Each line is written with a single write(2), so lines from
 * several threads never interleave. */
#ifndef WSGATE_LOG_LOG_H
#define WSGATE_LOG_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef enum log_level { LOG_OFF = 0, LOG_ERROR = 1, LOG_INFO = 2 } log_level;

/* Return the level named "OFF", "ERROR" or "INFO" (case-insensitive);
 * LOG_INFO for anything else. */
log_level log_level_parse(const char *name);

/* Set the level and open `path` for appending (NULL: stderr only). Returns 0,
 * or -1 when the file cannot be opened (stderr logging still works). */
int log_init(log_level level, const char *path);
/* Set the level and log to DIR/wsgate.log, rotated daily (UTC): the lines
 * of each past day move to DIR/wsgate-YYYY-MM-DD.log, and rotated files
 * older than keep_days are deleted (at start and at each rotation). A
 * wsgate.log left from an earlier day is rotated at once. Returns 0, or -1
 * when the file cannot be opened (stderr logging still works). */
int log_open_dir(log_level level, const char *dir, int keep_days);

/* Rotate and prune as if the time were `now` (called before each file
 * write; exposed so tests can move the clock). */
void log_rotate_check(time_t now);

/* Close the log file. */
void log_close(void);
/* Return true when events of `level` are written. */
bool log_enabled(log_level level);

/* A log line under construction. Fields are appended in order; an overlong
 * line is truncated, never split. */
typedef struct log_line {
    char buf[8192];
    size_t len;
    size_t last_field_end; /* where the line is cut back to when truncated */
    bool truncated;
    log_level level;
} log_line;

/* Start a line with time, level and event name. */
void log_begin(log_line *l, log_level level, const char *event);
/* Append "key": "value" with JSON escaping; value NULL writes null. */
void log_str(log_line *l, const char *key, const char *value);
/* Append "key": "value" for len bytes of value, escaped, cut at max bytes
 * (max 0 = no cut) with "truncated" noted in the value. */
void log_strn(log_line *l, const char *key, const char *value, size_t len, size_t max);
/* Append "key": integer. */
void log_int(log_line *l, const char *key, int64_t v);
/* Append "key": number with 3 decimals. */
void log_num(log_line *l, const char *key, double v);
/* Finish the line and write it (if its level is enabled). */
void log_end(log_line *l);

/* Shorthand for a line with only "msg": printf-style text. */
void log_msg(log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append s (len bytes) to buf as JSON string contents (no quotes), escaping
 * quotes, backslashes and control characters, and replacing invalid UTF-8
 * with U+FFFD. Writes at most cap-1 bytes and NUL-terminates; returns the
 * bytes written, and in *consumed (when not NULL) how many input bytes they
 * cover (less than len when the output did not fit; never a partial
 * character). */
size_t log_json_escape(char *buf, size_t cap, const char *s, size_t len, size_t *consumed);

#endif
