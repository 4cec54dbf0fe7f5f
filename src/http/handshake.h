/* The server side of the RFC 6455 opening handshake (section 4.2): checks a
 * parsed request and builds the 101 answer. No I/O. */
#ifndef WSGATE_HTTP_HANDSHAKE_H
#define WSGATE_HTTP_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "http/request.h"
#include "ws/deflate.h"

typedef struct ws_handshake_result {
    int error;                 /* 0, or the WSG_E_HS_* code the request fails with */
    int status;                /* 101, or the code's HTTP status (wsg_err_http_status) */
    const char *message;       /* the code's text, for the JSON body (status != 101) */
    const char *extra_headers; /* static headers to add to the error response, or NULL */
    char accept[29];           /* Sec-WebSocket-Accept value (status == 101) */
} ws_handshake_result;

/* Check that r is a valid WebSocket upgrade for `path` (e.g. "/staging"):
 * GET (else 405), the path (else 404), Upgrade/Connection tokens (else 400),
 * version 13 (else 426 with Sec-WebSocket-Version: 13), a key that is base64
 * of 16 bytes (else 400), each failure a WSG_E_HS_* code whose status and
 * text come from the one list. Fills *out; returns out->status (101 or the
 * error's status: src/net tests it against 101). */
int ws_handshake_check(const http_request *r, const char *path, ws_handshake_result *out);

/* Compute the Sec-WebSocket-Accept value for `key` (key_len bytes) into
 * out (28 characters and a NUL). */
void ws_handshake_accept(const char *key, size_t key_len, char out[29]);

/* Return a malloc'd 101 response for `accept` (caller frees); its length in
 * *len. `protocol` is the chosen subprotocol or NULL. */
char *ws_handshake_response(const char *accept, const char *protocol, size_t *len);

/* Negotiate permessage-deflate from every Sec-WebSocket-Extensions header
 * of r, in order, under cfg (ws_deflate_negotiate). Returns true when an
 * offer was accepted: *params holds what was agreed and `extensions` (at
 * least WS_DEFLATE_RESPONSE_MAX bytes) the value to answer in
 * ws_handshake_response_ext. Returns false when there is nothing to
 * answer (no header, disabled, or every offer declined). */
bool ws_handshake_deflate(const http_request *r, const ws_deflate_config *cfg,
                          ws_deflate_params *params, char *extensions);

/* ws_handshake_response with a Sec-WebSocket-Extensions header holding
 * `extensions` (NULL: none). Returns a malloc'd response (caller frees). */
char *ws_handshake_response_ext(const char *accept, const char *protocol, const char *extensions,
                                size_t *len);

#endif
