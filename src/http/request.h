/* HTTP/1.1 request parsing on top of libhttp-parser, with no I/O: bytes in,
 * a parsed request (method, target, headers, body) out, under a header
 * budget and a body limit. Used for the WebSocket handshake and for the
 * plain HTTP endpoints served on the same listener. */
#ifndef WSGATE_HTTP_REQUEST_H
#define WSGATE_HTTP_REQUEST_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct http_header {
    size_t name_off, name_len; /* offsets into http_request.raw */
    size_t value_off, value_len;
} http_header;

struct http_request;

/* Called once a request's head is parsed, before any byte of its body is
 * read: returns the largest body the request may carry (0: none), or a
 * negative WSG_E_* code (WSG_E_HTTP_NOT_FOUND, _TOO_MANY...) to refuse it,
 * its body unread, with the code's HTTP status (400 when it has none). */
typedef long (*http_head_fn)(struct http_request *r, void *ctx);

typedef struct http_request {
    http_parser parser;
    size_t max_header_bytes; /* request line + headers budget */
    size_t max_headers;
    size_t max_body;

    char *raw; /* url, header names and values, NUL-separated */
    size_t raw_len, raw_cap;
    size_t url_off, url_len;
    http_header *headers;
    size_t nheaders, headers_cap;
    bool in_value; /* last header callback was a value */

    char *body;
    size_t body_len;

    size_t head_bytes; /* bytes of the request head seen so far */
    bool headers_complete;
    bool complete;    /* whole request (head, and body if any) parsed */
    bool upgrade;     /* the parser stopped at an Upgrade request */
    int error_status; /* HTTP status to answer a bad request with */
    int head_error;   /* on_head's refusal (a WSG_E_* code), 0 if none */

    http_head_fn on_head; /* optional; set after http_request_init */
    void *on_head_ctx;
} http_request;

/* Prepare r with the given limits. Owns nothing yet; release with
 * http_request_free(). */
void http_request_init(http_request *r, size_t max_header_bytes, size_t max_headers,
                       size_t max_body);
/* Release everything r owns; r may be re-initialised afterwards. */
void http_request_free(http_request *r);

/* Feed len bytes. Returns bytes consumed (>= 0): when r->complete is set,
 * the bytes after the consumed ones belong to what follows the request
 * (WebSocket frames after an upgrade). On a malformed or over-budget
 * request returns WSG_E_HTTP_MALFORMED (400), _BODY_TOO_LARGE (413) or
 * _HEAD_TOO_LARGE (431), and on a refusal by on_head that refusal's code;
 * r->error_status is then the status to answer with. */
ssize_t http_request_feed(http_request *r, const char *data, size_t len);

/* Return the value of header `name` (case-insensitive; the first if
 * repeated), NUL-terminated and owned by r, or NULL. *len gets its length
 * when len is not NULL. */
const char *http_request_header(const http_request *r, const char *name, size_t *len);

/* Return true when the comma-separated header `name` contains `token`
 * (case-insensitive), e.g. Connection: keep-alive, Upgrade. */
bool http_request_header_has_token(const http_request *r, const char *name, const char *token);

/* Return true when the parsed head announces a body (a Content-Length
 * above 0, or chunked). */
bool http_request_has_body(const http_request *r);

/* Return the heap bytes r holds (head, header index, body): what a
 * connection that has not upgraded costs beyond its fixed size. */
size_t http_request_held(const http_request *r);

/* Return the method name ("GET", ...). */
const char *http_request_method(const http_request *r);

/* Return the request target's path (owned by r, NUL-terminated, not decoded)
 * and its length in *len. */
const char *http_request_path(const http_request *r, size_t *len);
/* Return the query string after '?' (owned by r) or "" when absent. */
const char *http_request_query(const http_request *r, size_t *len);

/* Find `name` in the query string q (qlen bytes) and URL-decode its value
 * into a new malloc'd string in *out (caller frees). Returns true when
 * present (possibly empty), false when absent or badly encoded. */
bool http_query_param(const char *q, size_t qlen, const char *name, char **out);

/* URL-decode s (len bytes; %XX and '+' as space) into a new malloc'd string.
 * Returns NULL on a bad escape or an embedded NUL. */
char *http_url_decode(const char *s, size_t len);

/* URL-decode a path (len bytes; %XX only: '+' stays '+') into a new
 * malloc'd string. Returns NULL on a bad escape or an embedded NUL. */
char *http_path_decode(const char *s, size_t len);

/* Return the reason phrase of an HTTP status ("Not Found"). */
const char *http_status_text(int status);

/* Return a malloc'd complete HTTP/1.1 response (caller frees), its length in
 * *len: status line, `extra_headers` (each ending in CRLF, may be NULL),
 * Content-Type (when body is non-NULL), Content-Length, and the body. When
 * close is true, Connection: close is added. */
char *http_response_format(int status, const char *extra_headers, const char *content_type,
                           const char *body, size_t body_len, bool close, size_t *len);

/* Return a malloc'd response whose body is {"message": msg} (JSON-escaped). */
char *http_response_json_message(int status, const char *extra_headers, const char *msg,
                                 size_t *len);

#endif
