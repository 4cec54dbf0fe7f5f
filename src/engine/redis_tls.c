/* The rediss:// bridge (redis_tls.h). One state machine per connection:
 * CONNECTING (our non-blocking TCP connect) -> HANDSHAKE (SSL_do_handshake)
 * -> OPEN (pumping) -> FAILED or CLOSING. hiredis's writes made before
 * OPEN wait in the inner socket's kernel buffer: the bridge does not read
 * them until the TLS session can carry them. */
#include "engine/redis_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/netaddr.h"

#define BRIDGE_BUF 16384

struct redis_tls_ctx {
    SSL_CTX *ssl;
    bool insecure;
};

typedef enum bstate { B_CONNECTING, B_HANDSHAKE, B_OPEN, B_FAILED, B_CLOSING } bstate;

struct redis_tls {
    uv_poll_t inner_h, outer_h; /* hiredis's side (Unix), the server's side (TCP) */
    int inner, outer;
    SSL *ssl;
    bstate state;
    bool insecure;
    bool want_read, want_write; /* what the last SSL call waits for on outer */
    unsigned open_handles;
    size_t up_off, up_len;     /* hiredis -> server, not yet taken by SSL_write */
    size_t down_off, down_len; /* server -> hiredis, not yet written to inner */
    redis_tls_error_cb on_error;
    redis_tls_closed_cb on_closed;
    void *data;
    char up[BRIDGE_BUF];
    char down[BRIDGE_BUF];
};

/* OpenSSL's first queued error as text ("" when none), clearing the queue. */
static void ssl_queue_text(char *out, size_t n) {
    unsigned long e = ERR_get_error();
    out[0] = '\0';
    if (e) {
        const char *r = ERR_reason_error_string(e);
        if (r) snprintf(out, n, "%s", r);
        else ERR_error_string_n(e, out, n);
    }
    ERR_clear_error();
}

/* ---- the shared context ---- */

redis_tls_ctx *redis_tls_ctx_new(const redis_tls_options *opt, wsg_error *err) {
    char why[256];
    ERR_clear_error();
    SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
    if (!ssl) {
        ssl_queue_text(why, sizeof why);
        wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis TLS: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    /* Partial writes let SSL_write take what fits and return, like write(). */
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const char *what = NULL, *file = NULL;
    if (opt->ca_file && opt->ca_file[0]) {
        if (SSL_CTX_load_verify_locations(ssl, opt->ca_file, NULL) != 1)
            what = "cannot load the CA file", file = opt->ca_file;
    } else if (SSL_CTX_set_default_verify_paths(ssl) != 1) {
        what = "cannot load the system CA store", file = "";
    }
    if (!what && opt->cert_file && opt->cert_file[0]) {
        if (SSL_CTX_use_certificate_chain_file(ssl, opt->cert_file) != 1)
            what = "cannot load the client certificate", file = opt->cert_file;
        else if (!opt->key_file || !opt->key_file[0] ||
                 SSL_CTX_use_PrivateKey_file(ssl, opt->key_file, SSL_FILETYPE_PEM) != 1)
            what = "cannot load the client key", file = opt->key_file ? opt->key_file : "";
        else if (SSL_CTX_check_private_key(ssl) != 1)
            what = "the client key does not match the certificate", file = opt->key_file;
    }
    if (what) {
        ssl_queue_text(why, sizeof why);
        wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis TLS: %s %s: %s", what, file, why);
        SSL_CTX_free(ssl);
        return NULL;
    }
    SSL_CTX_set_verify(ssl, opt->insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    redis_tls_ctx *ctx = xcalloc(1, sizeof *ctx);
    ctx->ssl = ssl;
    ctx->insecure = opt->insecure_skip_verify;
    return ctx;
}

void redis_tls_ctx_free(redis_tls_ctx *ctx) {
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

/* ---- the inner connection ---- */

/* Give hiredis a context connected to a Unix socket whose other end is
 * *mine. The listener exists only inside this call. */
static int inner_connect(int *mine, redisAsyncContext **ac, wsg_error *err) {
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !tmp[0] || strlen(tmp) > 64) tmp = "/tmp";
    char dir[96], path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    snprintf(dir, sizeof dir, "%s/wsgate-rtls-XXXXXX", tmp);
    if (!mkdtemp(dir))
        return wsg_error_set(err, WSG_E_IO,
                             "redis TLS: cannot create a private directory in %s: %s", tmp,
                             strerror(errno));
    snprintf(path, sizeof path, "%s/s", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 1) != 0) {
        int e = errno;
        if (lfd >= 0) close(lfd);
        unlink(path);
        rmdir(dir);
        return wsg_error_set(err, WSG_E_IO, "redis TLS: cannot listen on %s: %s", path,
                             strerror(e));
    }
    /* A Unix connect completes into the backlog at once. */
    redisAsyncContext *c = redisAsyncConnectUnix(path);
    unlink(path);
    rmdir(dir);
    int fd = -1;
    if (c && !c->err) fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    close(lfd);
    const char *why = !c ? "out of memory" : c->err ? c->errstr : fd < 0 ? strerror(errno) : NULL;
    if (!why) {
        /* Only this process could reach a 0700 directory of ours, but say
         * so rather than assume it. */
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != getpid())
            why = "the inner connection is not from this process";
    }
    if (why) {
        char copy[160];
        snprintf(copy, sizeof copy, "%s", why);
        if (fd >= 0) close(fd);
        if (c) redisAsyncFree(c);
        return wsg_error_set(err, WSG_E_IO, "redis TLS: cannot open the inner connection: %s",
                             copy);
    }
    *mine = fd;
    *ac = c;
    return 0;
}

/* ---- the pump ---- */

static void poll_cb(uv_poll_t *h, int status, int events);
static void handle_closed(uv_handle_t *h);

static void set_poll(uv_poll_t *h, int events) {
    if (events) uv_poll_start(h, events, poll_cb);
    else uv_poll_stop(h);
}

static void update_polls(redis_tls *b) {
    int in = 0, out = 0;
    if (b->state == B_CONNECTING) out = UV_WRITABLE;
    if (b->state == B_HANDSHAKE || b->state == B_OPEN)
        out = (b->want_read ? UV_READABLE : 0) | (b->want_write ? UV_WRITABLE : 0);
    if (b->state == B_OPEN)
        in = (b->up_len == 0 ? UV_READABLE : 0) | (b->down_len ? UV_WRITABLE : 0);
    set_poll(&b->inner_h, in);
    set_poll(&b->outer_h, out);
}

/* The bridge is dead: tell the owner why, then close hiredis's side so
 * that hiredis sees the connection end. */
static void bridge_fail(redis_tls *b, const char *why) {
    if (b->state >= B_FAILED) return;
    b->state = B_FAILED;
    uv_poll_stop(&b->inner_h);
    uv_poll_stop(&b->outer_h);
    b->on_error(why, b->data);
    shutdown(b->inner, SHUT_RDWR);
}

/* Why the SSL call that returned r failed, as one line into out. */
static void ssl_failure(redis_tls *b, int r, const char *stage, char *out, size_t n) {
    int e = SSL_get_error(b->ssl, r);
    int saved = errno;
    char q[200];
    ssl_queue_text(q, sizeof q);
    long v = SSL_get_verify_result(b->ssl);
    if (b->state == B_HANDSHAKE && !b->insecure && v != X509_V_OK)
        snprintf(out, n, "TLS %s failed: certificate verify failed: %s", stage,
                 X509_verify_cert_error_string(v));
    else if (q[0]) snprintf(out, n, "TLS %s failed: %s", stage, q);
    else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && saved == 0))
        snprintf(out, n, "TLS %s failed: the server closed the connection", stage);
    else if (e == SSL_ERROR_SYSCALL) snprintf(out, n, "TLS %s failed: %s", stage, strerror(saved));
    else snprintf(out, n, "TLS %s failed: SSL error %d", stage, e);
}

/* Run an SSL call's outcome into the want flags. Returns 1 when it only
 * has to wait, 0 when it failed (the bridge is failed). */
static int ssl_wait(redis_tls *b, int r, const char *stage) {
    int e = SSL_get_error(b->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        b->want_read = true;
        return 1;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        b->want_write = true;
        return 1;
    }
    char why[320];
    ssl_failure(b, r, stage, why, sizeof why);
    bridge_fail(b, why);
    return 0;
}

/* Move bytes both ways until every side would block. Each direction
 * holds one buffer; a full buffer stops reading its source. */
static void pump(redis_tls *b) {
    if (b->state == B_CONNECTING) {
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(b->outer, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
        if (soerr) {
            char why[160];
            snprintf(why, sizeof why, "connect failed: %s", strerror(soerr));
            bridge_fail(b, why);
            return;
        }
        b->state = B_HANDSHAKE;
    }
    if (b->state == B_HANDSHAKE) {
        b->want_read = b->want_write = false;
        ERR_clear_error();
        int r = SSL_do_handshake(b->ssl);
        if (r != 1) {
            if (ssl_wait(b, r, "handshake")) update_polls(b);
            return;
        }
        b->state = B_OPEN;
    }
    bool progress = true;
    while (b->state == B_OPEN && progress) {
        progress = false;
        b->want_read = b->want_write = false;
        if (b->down_len == 0) {
            ERR_clear_error();
            int r = SSL_read(b->ssl, b->down, sizeof b->down);
            if (r > 0) {
                b->down_off = 0;
                b->down_len = (size_t)r;
                progress = true;
            } else if (!ssl_wait(b, r, "read")) {
                return;
            }
        }
        if (b->down_len) {
            ssize_t w = send(b->inner, b->down + b->down_off, b->down_len, MSG_NOSIGNAL);
            if (w > 0) {
                b->down_off += (size_t)w;
                b->down_len -= (size_t)w;
                progress = true;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                bridge_fail(b, "hiredis closed its side");
                return;
            }
        }
        if (b->up_len == 0) {
            ssize_t r = recv(b->inner, b->up, sizeof b->up, 0);
            if (r > 0) {
                b->up_off = 0;
                b->up_len = (size_t)r;
                progress = true;
            } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                bridge_fail(b, "hiredis closed its side");
                return;
            }
        }
        if (b->up_len) {
            ERR_clear_error();
            int r = SSL_write(b->ssl, b->up + b->up_off, (int)b->up_len);
            if (r > 0) {
                b->up_off += (size_t)r;
                b->up_len -= (size_t)r;
                progress = true;
            } else if (!ssl_wait(b, r, "write")) {
                return;
            }
        }
    }
    if (b->state == B_OPEN) {
        /* SSL_read is retried whenever the down buffer is empty, so it is
         * what waits on the server when nothing else does. */
        if (b->down_len == 0 && !b->want_write) b->want_read = true;
        update_polls(b);
    }
}

void redis_tls_flush(redis_tls *b) {
    if (b && b->state == B_OPEN) pump(b);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
    (void)events;
    redis_tls *b = h->data;
    if (b->state >= B_FAILED) return;
    if (status < 0) {
        /* libuv reports a socket error (POLLERR: a reset, a refused
         * connect) as EBADF and stops the handle. What came before the
         * error is still readable and says why (the TLS alert of a server
         * that refused us, sent just before its reset): read it first,
         * then name the socket's own error. */
        pump(b);
        if (b->state >= B_FAILED) return;
        int fd = h == &b->outer_h ? b->outer : b->inner, soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
        char why[160];
        snprintf(why, sizeof why, "socket error: %s",
                 soerr ? strerror(soerr) : uv_strerror(status));
        bridge_fail(b, why);
        return;
    }
    pump(b);
}

/* ---- life ---- */

static void set_tcp_options(int fd) {
    int one = 1, idle = 15, intvl = 5, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* Start the TCP connect to ip:port. Returns the socket or -1 (err set). */
static int outer_connect(const char *ip, int port, wsg_error *err) {
    struct sockaddr_storage ss;
    socklen_t len = netaddr_numeric(ip, port, &ss);
    if (len == 0) return wsg_error_set(err, WSG_E_IO, "redis TLS: \"%s\" is not an IP address", ip);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return wsg_error_set(err, WSG_E_IO, "redis TLS: socket: %s", strerror(errno));
    set_tcp_options(fd);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return wsg_error_set(err, WSG_E_IO, "connect failed: %s", strerror(e));
    }
    return fd;
}

static SSL *ssl_for(redis_tls_ctx *ctx, int fd, const char *name, wsg_error *err) {
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx->ssl);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) goto fail;
    unsigned char addr[sizeof(struct in6_addr)];
    bool is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
    /* SNI carries host names only (RFC 6066). */
    if (!is_ip && SSL_set_tlsext_host_name(ssl, name) != 1) goto fail;
    if (!ctx->insecure) {
        X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, name) : SSL_set1_host(ssl, name);
        if (ok != 1) goto fail;
    }
    SSL_set_connect_state(ssl);
    return ssl;
fail:;
    char why[200];
    ssl_queue_text(why, sizeof why);
    if (ssl) SSL_free(ssl);
    wsg_error_set(err, WSG_E_IO, "redis TLS: cannot set up a session for %s: %s", name, why);
    return NULL;
}

int redis_tls_open(uv_loop_t *loop, redis_tls_ctx *ctx, const char *ip, int port,
                   const char *server_name, redis_tls_error_cb on_error,
                   redis_tls_closed_cb on_closed, void *data, redisAsyncContext **ac,
                   redis_tls **out, wsg_error *err) {
    int outer = outer_connect(ip, port, err);
    if (outer < 0) return outer;
    SSL *ssl = ssl_for(ctx, outer, server_name, err);
    int inner = -1;
    redisAsyncContext *c = NULL;
    if (!ssl || inner_connect(&inner, &c, err) != 0) {
        if (ssl) SSL_free(ssl);
        close(outer);
        return WSG_E_IO;
    }
    redis_tls *b = xcalloc(1, sizeof *b);
    b->inner = inner;
    b->outer = outer;
    b->ssl = ssl;
    b->insecure = ctx->insecure;
    b->on_error = on_error;
    b->on_closed = on_closed;
    b->data = data;
    int rc = uv_poll_init(loop, &b->inner_h, inner);
    b->inner_h.data = b;
    if (rc == 0 && (rc = uv_poll_init(loop, &b->outer_h, outer)) != 0) {
        /* inner_h belongs to the loop now: it is freed by its close. */
        b->on_closed = NULL;
        b->open_handles = 1;
        b->state = B_CLOSING;
        uv_close((uv_handle_t *)&b->inner_h, handle_closed);
        b = NULL;
    }
    if (rc != 0) {
        wsg_error_set(err, WSG_E_IO, "redis TLS: cannot poll the bridge's sockets: %s",
                      uv_strerror(rc));
        redisAsyncFree(c);
        if (b) {
            SSL_free(ssl);
            close(inner);
            close(outer);
            free(b);
        }
        return WSG_E_IO;
    }
    b->outer_h.data = b;
    b->open_handles = 2;
    b->state = B_CONNECTING;
    update_polls(b);
    *ac = c;
    *out = b;
    return 0;
}

static void handle_closed(uv_handle_t *h) {
    redis_tls *b = h->data;
    if (--b->open_handles) return;
    SSL_free(b->ssl);
    close(b->inner);
    close(b->outer);
    redis_tls_closed_cb cb = b->on_closed;
    void *data = b->data;
    free(b);
    if (cb) cb(data);
}

void redis_tls_close(redis_tls *b) {
    if (b->state == B_CLOSING) return;
    b->state = B_CLOSING;
    uv_close((uv_handle_t *)&b->inner_h, handle_closed);
    uv_close((uv_handle_t *)&b->outer_h, handle_closed);
}
