/* JSON-lines logging: one event is always one line (control characters are
 * escaped), written to stderr and, when opened, to a file in the data
 * directory. Lines from several threads never interleave. An event loop
 * thread buffers its lines (log_buffer_thread) and writes them once per
 * loop turn, outside any lock of the application's: logging costs a
 * memcpy on the request path, and two write(2)s per turn instead of two per
 * line. Lines keep their order within a thread, so within a connection. */
#ifndef WSGATE_LOG_LOG_H
#define WSGATE_LOG_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"

/* The values of config_logging_level (logging_level, parsed once). */
typedef enum log_level { LOG_OFF = 0, LOG_ERROR = 1, LOG_INFO = 2 } log_level;

/* Set the level and open `path` for appending (NULL: stderr only). Returns 0,
 * or WSG_E_IO with errno set when the file cannot be opened (stderr logging
 * still works). */
int log_init(log_level level, const char *path);
/* Set the level and log to DIR/wsgate.log, rotated daily (UTC): the lines
 * of each past day move to DIR/wsgate-YYYY-MM-DD.log, and rotated files
 * older than keep_days are deleted (at start and at each rotation). A
 * wsgate.log left from an earlier day is rotated at once. Returns 0, or
 * WSG_E_IO with errno set when the file cannot be opened (stderr logging
 * still works). */
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
/* Finish the line and write it (if its level is enabled): at once, or into
 * the calling thread's buffer when it has one (ERROR lines always go out at
 * once, after what the buffer holds). */
void log_end(log_line *l);
/* Buffer the calling thread's lines (on) until log_flush_thread, or flush
 * and release its buffer and write directly again (off). A buffer that
 * reaches 64 KiB is written at once. */
void log_buffer_thread(bool on);
/* Write the calling thread's buffered lines now (no effect without any). */
void log_flush_thread(void);

/* Shorthand for a line with only "msg": printf-style text. */
void log_msg(log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
