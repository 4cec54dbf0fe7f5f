/* wsgate's one error convention, as libuv's: every failure is a negative
 * code from one list, WSG_ERRNO_MAP, which gives for each code its name,
 * its value, the WebSocket close code a connection failing with it is
 * closed with (0: not a connection error), the HTTP status a request
 * refused with it is answered with (0: not a request error) and its text.
 * The texts are the ones users see (close reasons, JSON error bodies, log
 * lines), so a text changes only with the behaviour.
 *
 * A function reports an error by returning the negative code (success is 0
 * or a count >= 0, or a non-NULL pointer); its caller maps it with
 * wsg_strerror, wsg_err_close_code or wsg_err_http_status, never with its
 * own table. Where the text alone is not enough (a file name, a variable,
 * a line and column), the function also fills a wsg_error. */
#ifndef WSGATE_COMMON_ERROR_H
#define WSGATE_COMMON_ERROR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* X(name, value, close code, HTTP status, text). Values are grouped by
 * layer, 100 apart, so a new code joins its group without renumbering. */
#define WSG_ERRNO_MAP(X)                                                                             \
    /* generic */                                                                                    \
    X(INVAL, -1, 0, 400, "invalid argument")                                                         \
    X(PARSE, -2, 0, 400, "syntax error")                                                             \
    X(IO, -3, 0, 500, "input/output error")                                                          \
    X(INTERNAL, -4, 1011, 500, "internal error")                                                     \
    X(FULL, -5, 0, 0, "no room left")                                                                \
    /* src/ws: frames (RFC 6455, RFC 7692) */                                                        \
    X(WS_UNMASKED, -101, 1002, 0, "client frame is not masked")                                      \
    X(WS_RSV, -102, 1002, 0, "reserved bits set")                                                    \
    X(WS_OPCODE, -103, 1002, 0, "unknown opcode")                                                    \
    X(WS_CONTROL_FRAGMENTED, -104, 1002, 0, "fragmented control frame")                              \
    X(WS_CONTROL_TOO_LONG, -105, 1002, 0, "control frame payload over 125 bytes")                    \
    X(WS_NON_MINIMAL_LENGTH, -106, 1002, 0, "payload length not minimally encoded")                  \
    X(WS_LENGTH_TOP_BIT, -107, 1002, 0, "64-bit payload length has its top bit set")                 \
    X(WS_UNEXPECTED_CONTINUATION, -108, 1002, 0, "continuation without a message")                   \
    X(WS_EXPECTED_CONTINUATION, -109, 1002, 0, "new data frame inside a fragmented message")         \
    X(WS_CLOSE_PAYLOAD, -110, 1002, 0, "close frame payload of 1 byte")                              \
    X(WS_CLOSE_CODE, -111, 1002, 0, "invalid close code")                                            \
    X(WS_UTF8, -112, 1007, 0, "invalid UTF-8 in text message")                                       \
    X(WS_CLOSE_UTF8, -113, 1007, 0, "invalid UTF-8 in close reason")                                 \
    X(WS_FRAME_TOO_BIG, -114, 1009, 0, "frame over the size limit")                                  \
    X(WS_MESSAGE_TOO_BIG, -115, 1009, 0, "message over the size limit")                              \
    X(WS_CLOSED, -116, 1002, 0, "data after close frame")                                            \
    X(WS_DEFLATE, -117, 1007, 0, "invalid compressed data")                                          \
    /* src/http/handshake.c: the opening handshake (RFC 6455 4.2) */                                 \
    X(HS_NOT_FOUND, -201, 0, 404, "Not Found")                                                       \
    X(HS_METHOD, -202, 0, 405, "Method Not Allowed")                                                 \
    X(HS_VERSION, -203, 0, 400, "HTTP/1.1 or later required")                                        \
    X(HS_UPGRADE, -204, 0, 426, "Upgrade to websocket required")                                     \
    X(HS_CONNECTION, -205, 0, 400, "Connection: Upgrade required")                                   \
    X(HS_WS_VERSION, -206, 0, 426, "Unsupported WebSocket version")                                  \
    X(HS_KEY, -207, 0, 400, "Invalid Sec-WebSocket-Key")                                             \
    /* src/http/request.c: a request refused before it is handled */                                 \
    X(HTTP_MALFORMED, -211, 0, 400, "malformed HTTP request")                                        \
    X(HTTP_BODY_TOO_LARGE, -212, 0, 413, "request body too large")                                   \
    X(HTTP_HEAD_TOO_LARGE, -213, 0, 431, "request header fields too large")                          \
    /* a request refused from its head, its body unread (http_head_fn) */                            \
    X(HTTP_NOT_FOUND, -214, 0, 404, "Not Found")                                                     \
    X(HTTP_METHOD, -215, 0, 405, "Method Not Allowed")                                               \
    X(HTTP_TOO_MANY, -216, 0, 429, "Too Many Requests")                                              \
    X(HTTP_ANSWERED, -217, 0, 0, "request answered from its head")                                   \
    /* src/http/sigv4.c: why a SigV4 signature is refused (the management                          \
     * API answers 403 with the text) */ \
    X(SIGV4_NO_AUTH, -301, 0, 403, "missing Authorization header")                                   \
    X(SIGV4_MALFORMED, -302, 0, 403, "malformed Authorization header")                               \
    X(SIGV4_ALGORITHM, -303, 0, 403,                                                                 \
      "unsupported Authorization scheme (expected AWS4-HMAC-SHA256)")                                \
    X(SIGV4_SERVICE, -304, 0, 403, "credential scope names the wrong service")                       \
    X(SIGV4_UNKNOWN_KEY, -305, 0, 403, "unknown access key")                                         \
    X(SIGV4_NO_DATE, -306, 0, 403, "missing X-Amz-Date or Date header")                              \
    X(SIGV4_BAD_DATE, -307, 0, 403, "malformed X-Amz-Date or Date header")                           \
    X(SIGV4_SCOPE_DATE, -308, 0, 403, "credential scope date does not match the request date")       \
    X(SIGV4_SKEW, -309, 0, 403, "request time is too skewed (signature expired or not yet valid)")   \
    X(SIGV4_HOST_UNSIGNED, -310, 0, 403, "host header is not signed")                                \
    X(SIGV4_DATE_UNSIGNED, -311, 0, 403, "request date header is not signed")                        \
    X(SIGV4_MISSING_HEADER, -312, 0, 403, "a signed header is missing from the request")             \
    X(SIGV4_UNSIGNED_PAYLOAD, -313, 0, 403, "unsigned payloads are not accepted")                    \
    X(SIGV4_PAYLOAD_HASH, -314, 0, 403, "x-amz-content-sha256 does not match the body")              \
    X(SIGV4_CRYPTO, -315, 0, 403, "signature computation failed")                                    \
    X(SIGV4_SIGNATURE, -316, 0, 403, "signature does not match")                                     \
    /* src/app/auth*.c: $connect refused (the text is the JSON body) */                              \
    X(AUTH_USER_ID, -401, 0, 400, "Invalid userId")                                                  \
    X(AUTH_USERNAME, -402, 0, 400, "Invalid username")                                               \
    X(AUTH_ROOM_ID, -403, 0, 400, "Invalid roomId")                                                  \
    X(AUTH_DENIED, -404, 0, 401, "Unauthorized")                                                     \
    X(AUTH_TOKEN_MISSING, -405, 0, 401, "Missing token")                                             \
    X(AUTH_TOKEN_INVALID, -406, 0, 401, "Invalid token")                                             \
    X(AUTH_TOKEN_ALG, -407, 0, 401, "Algorithm not allowed")                                         \
    X(AUTH_TOKEN_EXPIRED, -408, 0, 401, "Token expired")                                             \
    X(AUTH_TOKEN_EARLY, -409, 0, 401, "Token not yet valid")                                         \
    X(AUTH_TOKEN_ISSUER, -410, 0, 401, "Wrong issuer")                                               \
    X(AUTH_TOKEN_AUDIENCE, -411, 0, 401, "Wrong audience")                                           \
    X(AUTH_FORBIDDEN, -412, 0, 403, "Forbidden") /* the HTTP authorizer's Deny */                    \
    /* src/app/router.c: route_selection_expression */                                               \
    X(ROUTER_EXPR, -501, 0, 0, "route selection expression must be $request.body.PATH")              \
    X(ROUTER_EMPTY_SEGMENT, -502, 0, 0, "route selection expression has an empty path segment")      \
    /* src/crypto: opening a sealed value */                                                         \
    X(CRYPTO_SHORT, -601, 0, 0, "encrypted value is too short to be valid")                          \
    X(CRYPTO_VERSION, -602, 0, 0, "encrypted value has an unknown format version")                   \
    X(CRYPTO_UNKNOWN_KEY, -603, 0, 0, "encrypted with a key which is not in the key file")           \
    X(CRYPTO_AUTH, -604, 0, 0, "authentication failed: wrong key or tampered data")                  \
    X(CRYPTO_INTERNAL, -605, 0, 0, "internal cryptographic library failure")                         \
    /* src/crypto/keyring.c: the key file (the wsg_error message names it) */                        \
    X(CRYPTO_KEY_FILE, -606, 0, 0, "invalid key file")                                               \
    X(CRYPTO_NO_KEY_FILE, -607, 0, 0, "key file does not exist")                                     \
    X(CRYPTO_KEY_FILE_CHANGED, -608, 0, 0, "key file changed on disk")                               \
    X(CRYPTO_RING_FULL, -609, 0, 0, "no room for another key")                                       \
    /* src/config: a configuration refused (the wsg_error message says                             \
     * where and why) */ \
    X(CONFIG_SYNTAX, -701, 0, 0, "tfvars syntax error")                                              \
    X(CONFIG_VALUE, -702, 0, 0, "invalid configuration value")                                       \
    X(CONFIG_UNKNOWN, -703, 0, 0, "unknown configuration variable")                                  \
    X(CONFIG_RULE, -704, 0, 0, "configuration rule broken")                                          \
    X(CONFIG_LISTEN, -705, 0, 0, "listen address cannot be used")                                    \
    /* src/mgmt: a management request refused (403 with the text, as API                          \
     * Gateway words it), the credentials file */  \
    X(MGMT_NO_TOKEN, -801, 0, 403, "Missing Authentication Token")                                   \
    X(MGMT_BEARER, -802, 0, 403, "The bearer key is not valid")                                      \
    X(MGMT_TOKEN_INVALID, -803, 0, 403, "The security token included in the request is invalid")     \
    X(MGMT_CREDENTIALS, -804, 0, 0, "management credentials cannot be used")                         \
    X(MGMT_NO_CREDENTIALS, -805, 0, 0, "no management credentials in the data directory")            \
    /* src/net: TLS (the wsg_error message names the file and OpenSSL's                            \
     * reason) */ \
    X(NET_TLS_CONTEXT, -901, 0, 0, "TLS certificate or key cannot be used")                          \
    X(NET_TLS_CLOSED, -902, 0, 0, "peer sent close_notify")                                          \
    X(NET_TLS_RECORD, -903, 0, 0, "TLS handshake or record error")                                   \
    X(NET_NOT_OPEN, -904, 0, 0, "connection is not open for writing")                                \
    X(NET_SLOW_CONSUMER, -905, 1008, 0, "slow consumer")                                             \
    /* src/integrations: what an integration or the HTTP authorizer answered */                      \
    X(INTEG_RESULT, -1001, 0, 500, "integration answered with an invalid result")                    \
    X(INTEG_AUTH_RESULT, -1002, 0, 500, "authorizer answered with an invalid result")                \
    X(INTEG_HTTP, -1003, 0, 500, "the HTTP client refused the request")                              \
    /* src/cli */                                                                                    \
    X(CLI_DATA_LOCKED, -1101, 0, 0, "data directory is in use by another wsgate")                    \
    /* src/engine: a connection another node holds (the management API                            \
     * answers with the status), a Redis engine that cannot be set up */  \
    X(ENGINE_ELSEWHERE, -1201, 0, 503, "connection is held by another node")                         \
    X(ENGINE_TIMEOUT, -1202, 0, 504, "the node holding the connection did not answer in time")       \
    X(ENGINE_UNAVAILABLE, -1203, 0, 503, "the node holding the connection cannot be asked now")      \
    X(ENGINE_CONFIG, -1204, 0, 0, "Redis engine cannot be set up")                                   \
    /* src/store: the database and its point-in-time archive (the                                  \
     * wsg_error message names the file and SQLite's reason) */ \
    X(STORE_OPEN, -1301, 0, 0, "store cannot be opened")                                             \
    X(STORE_DAMAGED, -1302, 0, 0, "store failed its integrity check")                                \
    X(STORE_KEYS, -1303, 0, 0, "stored values cannot be opened with the configured keys")            \
    X(STORE_MISSING, -1304, 0, 0, "no store at the path")                                            \
    X(STORE_READ, -1305, 0, 0, "store cannot be read")                                               \
    X(STORE_WRITE, -1306, 0, 0, "copy of the store cannot be written")                               \
    X(STORE_WINDOW, -1307, 0, 0, "time is outside the recovery window")                              \
    X(STORE_ARCHIVE, -1308, 0, 0, "point-in-time archive cannot be read")

typedef enum wsg_errno {
#define WSG_ERRNO_ENUM(name, value, close, http, text) WSG_E_##name = (value),
    WSG_ERRNO_MAP(WSG_ERRNO_ENUM)
#undef WSG_ERRNO_ENUM
} wsg_errno;

/* Return the static text of code: "success" for 0, "unknown error" for a
 * value not in WSG_ERRNO_MAP. */
const char *wsg_strerror(int code);

/* Return the static name of code ("WSG_E_WS_UTF8"), "0" for 0, or
 * "WSG_E_UNKNOWN" for a value not in the list; for logs and tests. */
const char *wsg_err_name(int code);

/* Return the close code a connection failing with code is closed with,
 * or 0 when code is not a connection error (the caller picks its own). */
uint16_t wsg_err_close_code(int code);

/* Return the HTTP status a request refused with code is answered with, or
 * 0 when code is not a request error (the caller picks its own, usually
 * 500). */
int wsg_err_http_status(int code);

/* The detail of an error whose text is not enough: which file, variable,
 * value, line and column. Filled by the function that fails; owned by the
 * caller (usually on its stack). `message` is one line, complete by itself
 * (it already names the position when there is one). */
typedef struct wsg_error {
    int code;   /* a WSG_E_* code, 0 before any failure */
    int line;   /* 1-based, 0 when there is no position */
    int column; /* 1-based, 0 when there is no position */
    char message[512];
} wsg_error;

/* Fill *err (when not NULL) with code, no position and the formatted
 * message (truncated to fit), and return code, so a function can fail with
 * `return wsg_error_set(err, WSG_E_..., "...", ...);`. */
int wsg_error_set(wsg_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As wsg_error_set, also recording line and column (1-based). An argument
 * may be err->message itself (the message is formatted aside first). */
int wsg_error_set_at(wsg_error *err, int code, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* As wsg_error_set_at with a va_list, for a module's own failure helper
 * (a parser that adds its position). */
int wsg_error_vset_at(wsg_error *err, int code, int line, int column, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

#endif
