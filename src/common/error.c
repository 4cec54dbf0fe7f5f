#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *wsg_strerror(int code) {
    if (code == 0) return "success";
    switch (code) {
#define WSG_ERRNO_TEXT(name, value, close, http, text)                                             \
    case value: return text;
        WSG_ERRNO_MAP(WSG_ERRNO_TEXT)
#undef WSG_ERRNO_TEXT
    }
    return "unknown error";
}

const char *wsg_err_name(int code) {
    if (code == 0) return "0";
    switch (code) {
#define WSG_ERRNO_NAME(name, value, close, http, text)                                             \
    case value: return "WSG_E_" #name;
        WSG_ERRNO_MAP(WSG_ERRNO_NAME)
#undef WSG_ERRNO_NAME
    }
    return "WSG_E_UNKNOWN";
}

uint16_t wsg_err_close_code(int code) {
    switch (code) {
#define WSG_ERRNO_CLOSE(name, value, close, http, text)                                            \
    case value: return close;
        WSG_ERRNO_MAP(WSG_ERRNO_CLOSE)
#undef WSG_ERRNO_CLOSE
    }
    return 0;
}

int wsg_err_http_status(int code) {
    switch (code) {
#define WSG_ERRNO_HTTP(name, value, close, http, text)                                             \
    case value: return http;
        WSG_ERRNO_MAP(WSG_ERRNO_HTTP)
#undef WSG_ERRNO_HTTP
    }
    return 0;
}

int wsg_error_vset_at(wsg_error *err, int code, int line, int column, const char *fmt, va_list ap) {
    if (!err) return code;
    /* Formatted aside first: an argument may be err->message itself (a
     * message wrapped with more context). */
    char msg[sizeof(err->message)];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    err->code = code;
    err->line = line;
    err->column = column;
    memcpy(err->message, msg, sizeof(msg));
    return code;
}

int wsg_error_set(wsg_error *err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    wsg_error_vset_at(err, code, 0, 0, fmt, ap);
    va_end(ap);
    return code;
}

int wsg_error_set_at(wsg_error *err, int code, int line, int column, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    wsg_error_vset_at(err, code, line, column, fmt, ap);
    va_end(ap);
    return code;
}
