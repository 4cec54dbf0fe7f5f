/* TLS to Redis (rediss://) for hiredis 0.14, which has no TLS of its own.
 *
 * A bridge per Redis connection: hiredis talks plain RESP over a private
 * Unix stream connection inside the process, and the bridge pumps those
 * bytes through an OpenSSL client connection to the server, on the same
 * libuv loop (uv_poll on both sockets, non-blocking SSL_read/SSL_write, no
 * thread). hiredis 0.14 can only open its own sockets, so the inner
 * connection is made by a listener that lives for the duration of one
 * call: bound in a fresh 0700 directory, accepted once, checked to be this
 * process (SO_PEERCRED), then closed and unlinked before the call returns.
 *
 * Backpressure: each direction holds at most one 16 KiB buffer; while it is
 * not drained the bridge stops reading the side that fills it, so a slow
 * server or a slow hiredis stalls in the kernel's socket buffers, not in
 * memory.
 *
 * Single-threaded: every function must be called on the loop's thread. */
#ifndef WSGATE_ENGINE_REDIS_TLS_H
#define WSGATE_ENGINE_REDIS_TLS_H

#include <hiredis/async.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/error.h"

typedef struct redis_tls_ctx redis_tls_ctx;
typedef struct redis_tls redis_tls;

/* The strings are pointed to, not copied: they must outlive the client. */
typedef struct redis_tls_options {
    const char *ca_file;       /* PEM CA bundle; NULL or "": the system's CA store */
    const char *cert_file;     /* PEM client certificate chain; NULL or "": none */
    const char *key_file;      /* its private key (with cert_file) */
    const char *server_name;   /* the name to verify and send as SNI; NULL or "": the URL host */
    bool insecure_skip_verify; /* accept any server certificate (tests, never production) */
} redis_tls_options;

/* The bridge failed (connect, handshake, verification, I/O): why is a
 * one-line reason, valid during the call only. Called at most once, from
 * the loop, never from inside redis_tls_open or redis_tls_close; hiredis
 * sees its connection closed right after. */
typedef void (*redis_tls_error_cb)(const char *why, void *data);

/* The bridge's handles are closed and its memory freed (after
 * redis_tls_close): the owner may now let its loop end. */
typedef void (*redis_tls_closed_cb)(void *data);

/* Build the TLS settings shared by a client's connections: the trust store
 * (ca_file or the system's), the client certificate, TLS 1.2 at least.
 * Returns the context (the caller's, free with redis_tls_ctx_free), or NULL
 * with *err (the caller's; may be NULL) set to WSG_E_ENGINE_CONFIG and a
 * one-line reason naming the file. */
redis_tls_ctx *redis_tls_ctx_new(const redis_tls_options *opt, wsg_error *err);

/* Release the caller's reference; bridges still open keep theirs. */
void redis_tls_ctx_free(redis_tls_ctx *ctx);

/* Open a bridge to ip:port (a numeric IPv4 or IPv6 address) whose server
 * certificate must name server_name (a host name or an IP address; also
 * sent as SNI when it is a name), and a hiredis context connected to it.
 * Returns 0 with *ac (hiredis's, to attach to the loop; hiredis frees it)
 * and *out (call redis_tls_close when hiredis frees *ac), or WSG_E_IO with
 * the reason in *err (the caller's; may be NULL) and nothing to free. on_error, on_closed and data are kept
 * for the bridge's life. */
int redis_tls_open(uv_loop_t *loop, redis_tls_ctx *ctx, const char *ip, int port,
                   const char *server_name, redis_tls_error_cb on_error,
                   redis_tls_closed_cb on_closed, void *data, redisAsyncContext **ac,
                   redis_tls **out, wsg_error *err);

/* Move what hiredis has written to the bridge on to the server now,
 * rather than on the loop's next poll (redis_client_flush). Nothing while
 * the bridge is not open (connecting, handshake, failed). b may be NULL. */
void redis_tls_flush(redis_tls *b);

/* Close the bridge (hiredis's side is gone or going): no callback but
 * on_closed runs after this, on a later loop turn. */
void redis_tls_close(redis_tls *b);

#endif
