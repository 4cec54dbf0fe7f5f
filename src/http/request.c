#include "http/request.h"

#include <ctype.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/bytebuf.h"
#include "common/error.h"
#include "common/fields.h"

/* What the last data callback was, so a change of kind closes the previous
 * string with a NUL (http-parser may split one string over many calls). */
enum { PIECE_NONE, PIECE_URL, PIECE_FIELD, PIECE_VALUE };

static void raw_append(http_request *r, const char *at, size_t n) {
    r->raw = bytebuf_grow(r->raw, &r->raw_cap, r->raw_len + n + 1, 512);
    memcpy(r->raw + r->raw_len, at, n);
    r->raw_len += n;
    r->raw[r->raw_len] = '\0';
}

static void raw_terminate(http_request *r) {
    raw_append(r, "", 0);
    r->raw_len++; /* keep the NUL written by raw_append */
}

static int over_budget(http_request *r, size_t n) {
    r->head_bytes += n;
    if (r->head_bytes > r->max_header_bytes) {
        r->error_status = 431;
        return 1;
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
    http_request *r = p->data;
    if (over_budget(r, n)) return 1;
    if (r->url_len == 0) r->url_off = r->raw_len;
    raw_append(r, at, n);
    r->url_len += n;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
    http_request *r = p->data;
    /* A name may arrive in several pieces: ": " and CRLF count once per
     * header, so the budget does not depend on how the bytes were split. */
    bool starts = r->nheaders == 0 || r->in_value;
    if (over_budget(r, n + (starts ? 4 : 0))) return 1;
    if (starts) {
        if (r->nheaders >= r->max_headers) {
            r->error_status = 431;
            return 1;
        }
        raw_terminate(r);
        if (r->nheaders == r->headers_cap) {
            r->headers_cap = r->headers_cap ? r->headers_cap * 2 : 16;
            r->headers = xrealloc(r->headers, r->headers_cap * sizeof(*r->headers));
        }
        http_header *h = &r->headers[r->nheaders++];
        memset(h, 0, sizeof(*h));
        h->name_off = r->raw_len;
        r->in_value = false;
    }
    raw_append(r, at, n);
    r->headers[r->nheaders - 1].name_len += n;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
    http_request *r = p->data;
    if (over_budget(r, n)) return 1;
    /* http-parser lets a control character (NUL included) through as the
     * first byte of a value; values are handed out as C strings. */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)at[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            r->error_status = 400;
            return 1;
        }
    }
    http_header *h = &r->headers[r->nheaders - 1];
    if (!r->in_value) {
        raw_terminate(r);
        h->value_off = r->raw_len;
        r->in_value = true;
    }
    raw_append(r, at, n);
    h->value_len += n;
    return 0;
}

/* Optional whitespace after a value is not part of it (RFC 7230 3.2.4;
 * http-parser drops only the leading one). Run when the headers are
 * complete, and again at the end for a chunked body's trailer fields,
 * which http-parser reports as more headers. */
static void trim_values(http_request *r) {
    for (size_t i = 0; i < r->nheaders; i++) {
        http_header *h = &r->headers[i];
        while (h->value_len > 0 && (r->raw[h->value_off + h->value_len - 1] == ' ' ||
                                    r->raw[h->value_off + h->value_len - 1] == '\t'))
            r->raw[h->value_off + --h->value_len] = '\0';
    }
}

static int on_headers_complete(http_parser *p) {
    http_request *r = p->data;
    raw_terminate(r);
    r->headers_complete = true;
    trim_values(r);
    if (r->on_head) {
        /* Routed before the body: a request nobody will read a body for
         * is refused here, and the body is never buffered. */
        long limit = r->on_head(r, r->on_head_ctx);
        if (limit < 0) {
            int st = wsg_err_http_status((int)limit);
            r->head_error = (int)limit;
            r->error_status = st ? st : 400;
            return -1;
        }
        r->max_body = (size_t)limit;
    }
    if (p->content_length != UINT64_MAX && p->content_length > r->max_body) {
        r->error_status = 413;
        return -1; /* 1 would mean "no body follows", not an error */
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
    http_request *r = p->data;
    if (r->body_len + n > r->max_body) {
        r->error_status = 413;
        return 1;
    }
    r->body = xrealloc(r->body, r->body_len + n + 1);
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p) {
    http_request *r = p->data;
    r->complete = true;
    trim_values(r);
    /* One request at a time: stop so pipelined bytes stay unparsed. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings request_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void http_request_init(http_request *r, size_t max_header_bytes, size_t max_headers,
                       size_t max_body) {
    memset(r, 0, sizeof(*r));
    http_parser_init(&r->parser, HTTP_REQUEST);
    r->parser.data = r;
    r->max_header_bytes = max_header_bytes;
    r->max_headers = max_headers;
    r->max_body = max_body;
}

void http_request_free(http_request *r) {
    free(r->raw);
    free(r->headers);
    free(r->body);
    r->raw = NULL;
    r->headers = NULL;
    r->body = NULL;
}

/* The code of the failure recorded by the parser's callbacks (as
 * r->error_status) or by on_head's refusal. */
static ssize_t feed_error(const http_request *r) {
    if (r->head_error) return r->head_error;
    switch (r->error_status) {
    case 413: return WSG_E_HTTP_BODY_TOO_LARGE;
    case 431: return WSG_E_HTTP_HEAD_TOO_LARGE;
    default: return WSG_E_HTTP_MALFORMED;
    }
}

ssize_t http_request_feed(http_request *r, const char *data, size_t len) {
    if (r->error_status) return feed_error(r);
    if (r->complete) return 0;
    size_t n = http_parser_execute(&r->parser, &request_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&r->parser, 0);
        /* Every request ends here, an upgrade too (message_complete pauses;
         * http-parser stops after it). parser.upgrade is already set once
         * an upgrade's head is parsed, so it means nothing before that: a
         * body may still follow, e.g. when the head ends a chunk. */
        if (r->parser.upgrade) r->upgrade = true;
        return (ssize_t)n;
    }
    if (e != HPE_OK) {
        if (!r->error_status) r->error_status = (e == HPE_HEADER_OVERFLOW) ? 431 : 400;
        return feed_error(r);
    }
    if (!r->headers_complete && r->head_bytes + (len - n) > r->max_header_bytes + 1024) {
        r->error_status = 431;
        return feed_error(r);
    }
    return (ssize_t)n;
}

const char *http_request_header(const http_request *r, const char *name, size_t *len) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->name_len == nl && strncasecmp(r->raw + h->name_off, name, nl) == 0) {
            if (len) *len = h->value_len;
            if (h->value_len == 0) return "";
            return r->raw + h->value_off;
        }
    }
    return NULL;
}

bool http_request_header_has_token(const http_request *r, const char *name, const char *token) {
    size_t tl = strlen(token);
    size_t nl = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->name_len != nl || strncasecmp(r->raw + h->name_off, name, nl) != 0) continue;
        const char *v = r->raw + h->value_off, *end = v + h->value_len, *s;
        size_t n;
        while (fields_next_list(&v, end, &s, &n))
            if (n == tl && strncasecmp(s, token, tl) == 0) return true;
    }
    return false;
}

bool http_request_has_body(const http_request *r) {
    if (r->parser.flags & F_CHUNKED) return true;
    return r->parser.content_length != UINT64_MAX && r->parser.content_length > 0;
}

size_t http_request_held(const http_request *r) {
    return r->raw_cap + r->headers_cap * sizeof(*r->headers) + (r->body ? r->body_len + 1 : 0);
}

const char *http_request_method(const http_request *r) {
    return http_method_str((enum http_method)r->parser.method);
}

const char *http_request_path(const http_request *r, size_t *len) {
    const char *u = r->url_len ? r->raw + r->url_off : "";
    const char *q = memchr(u, '?', r->url_len);
    *len = q ? (size_t)(q - u) : r->url_len;
    return u;
}

const char *http_request_query(const http_request *r, size_t *len) {
    const char *u = r->url_len ? r->raw + r->url_off : "";
    const char *q = memchr(u, '?', r->url_len);
    if (!q) {
        *len = 0;
        return "";
    }
    *len = r->url_len - (size_t)(q + 1 - u);
    return q + 1;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static char *percent_decode(const char *s, size_t len, bool plus_is_space) {
    char *out = xmalloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < len ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < len ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(out);
                return NULL;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') {
            free(out);
            return NULL;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

char *http_url_decode(const char *s, size_t len) { return percent_decode(s, len, true); }

char *http_path_decode(const char *s, size_t len) { return percent_decode(s, len, false); }

bool http_query_param(const char *q, size_t qlen, const char *name, char **out) {
    size_t nl = strlen(name);
    const char *p = q, *end = q + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : pe;
            *out = http_url_decode(v, (size_t)(pe - v));
            return *out != NULL;
        }
        p = pe + 1;
    }
    *out = NULL;
    return false;
}

const char *http_status_text(int status) {
    switch (status) {
#define WSGATE_STATUS_CASE(num, name, string)                                                      \
    case num: return #string;
        HTTP_STATUS_MAP(WSGATE_STATUS_CASE)
#undef WSGATE_STATUS_CASE
    default: return "Unknown";
    }
}

char *http_response_format(int status, const char *extra_headers, const char *content_type,
                           const char *body, size_t body_len, bool close, size_t *len) {
    char head[1024];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\n%s%s%s%sContent-Length: %zu\r\n%s\r\n",
                     status, http_status_text(status), extra_headers ? extra_headers : "",
                     content_type ? "Content-Type: " : "", content_type ? content_type : "",
                     content_type ? "\r\n" : "", body ? body_len : 0,
                     close ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head)) abort(); /* extra headers are ours, never huge */
    size_t total = (size_t)n + (body ? body_len : 0);
    char *out = xmalloc(total + 1);
    memcpy(out, head, (size_t)n);
    if (body) memcpy(out + n, body, body_len);
    out[total] = '\0';
    *len = total;
    return out;
}

char *http_response_json_message(int status, const char *extra_headers, const char *msg,
                                 size_t *len) {
    size_t ml = strlen(msg);
    char *body = xmalloc(ml * 6 + 32);
    size_t o = 0;
    o += (size_t)sprintf(body, "{\"message\":\"");
    for (size_t i = 0; i < ml; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '"' || c == '\\') {
            body[o++] = '\\';
            body[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)sprintf(body + o, "\\u%04x", c);
        } else {
            body[o++] = (char)c;
        }
    }
    o += (size_t)sprintf(body + o, "\"}");
    char *out = http_response_format(status, extra_headers, "application/json", body, o, true, len);
    free(body);
    return out;
}
