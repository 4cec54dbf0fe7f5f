/* TLS for wss://: an OpenSSL server context (TLS 1.2 and 1.3 only, AEAD
 * ciphers, ALPN http/1.1) and per-connection engines over memory BIOs, so
 * the event loop keeps doing all socket I/O: ciphertext in, plaintext out,
 * and the reverse. */
#ifndef WSGATE_NET_TLS_H
#define WSGATE_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

/* Load cert_file (PEM chain) and key_file (PEM) into a new context.
 * Returns it (refcount 1), or NULL with *err (caller's) filled:
 * WSG_E_NET_TLS_CONTEXT, the message naming the file and OpenSSL's
 * reason. */
tls_ctx *tls_ctx_new(const char *cert_file, const char *key_file, wsg_error *err);
/* Drop a reference; connections made from ctx keep it alive until they end. */
void tls_ctx_free(tls_ctx *ctx);

/* Return a new server-side engine on ctx (caller frees with tls_conn_free). */
tls_conn *tls_conn_new(tls_ctx *ctx);
void tls_conn_free(tls_conn *t);

struct ws_frame;
/* Return where the connection keeps the ciphertext frame being written
 * (NULL when none): with its TLS state, so plain connections carry no
 * field for it. The frame is the connection's (tls_conn_free leaves it). */
struct ws_frame **tls_conn_inflight(tls_conn *t);

/* Hand len bytes of ciphertext from the socket to the engine. */
void tls_conn_feed(tls_conn *t, const void *data, size_t len);

/* Decrypt into out (cap bytes). Returns bytes of plaintext (> 0), 0 when
 * more ciphertext is needed, WSG_E_NET_TLS_CLOSED after the peer's
 * close_notify or WSG_E_NET_TLS_RECORD on a fatal error. Runs the
 * handshake as needed: check tls_conn_pending_output() afterwards. */
int tls_conn_read(tls_conn *t, uint8_t *out, size_t cap);

/* Encrypt len bytes of plaintext. Returns bytes taken (all of them, or 0
 * while the handshake is not finished), or WSG_E_NET_TLS_RECORD on a fatal
 * error. */
int tls_conn_write(tls_conn *t, const void *data, size_t len);

/* Return bytes of ciphertext waiting to be sent. */
size_t tls_conn_pending_output(tls_conn *t);
/* Move up to cap bytes of waiting ciphertext into out; returns the count. */
size_t tls_conn_take_output(tls_conn *t, uint8_t *out, size_t cap);

/* Queue a close_notify alert (sent with the next output). */
void tls_conn_shutdown(tls_conn *t);

/* Return true once the handshake has completed. */
bool tls_conn_established(tls_conn *t);

/* Return the negotiated protocol version ("TLSv1.3") or "" before it is. */
const char *tls_conn_version(tls_conn *t);

#endif
