/* JSON string escaping, for every writer of JSON text by hand: the log
 * lines and the wire events. No allocation, no I/O. */
#ifndef WSGATE_COMMON_JSON_ESCAPE_H
#define WSGATE_COMMON_JSON_ESCAPE_H

#include <stddef.h>

/* Append s (len bytes) to buf as JSON string contents (no quotes), escaping
 * quotes, backslashes and control characters, and replacing invalid UTF-8
 * with U+FFFD. Writes at most cap-1 bytes and NUL-terminates; returns the
 * bytes written, and in *consumed (when not NULL) how many input bytes they
 * cover (less than len when the output did not fit; never a partial
 * character). */
size_t json_escape(char *buf, size_t cap, const char *s, size_t len, size_t *consumed);

#endif
