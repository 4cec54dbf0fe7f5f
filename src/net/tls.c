#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

struct tls_ctx {
    SSL_CTX *ssl_ctx;
};

struct tls_conn {
    SSL *ssl;
    BIO *in;                   /* ciphertext from the peer, read by OpenSSL */
    BIO *out;                  /* ciphertext for the peer, written by OpenSSL */
    struct ws_frame *inflight; /* see tls_conn_inflight */
};

/* TLS 1.2 suites: forward secret and AEAD only. TLS 1.3's are all AEAD. */
static const char TLS12_CIPHERS[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    /* A client offering only other protocols (h2) gets no ALPN answer and
     * may still speak HTTP/1.1. */
    return SSL_TLSEXT_ERR_NOACK;
}

static void openssl_error(wsg_error *err, const char *what, const char *file) {
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    wsg_error_set(err, WSG_E_NET_TLS_CONTEXT, "%s %s: %s", what, file, e ? buf : "unknown error");
    ERR_clear_error();
}

tls_ctx *tls_ctx_new(const char *cert_file, const char *key_file, wsg_error *err) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_error(err, "cannot create TLS context", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        openssl_error(err, "cannot set TLS ciphers", "");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        openssl_error(err, "cannot load TLS certificate", cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        openssl_error(err, "cannot load TLS key", key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_error(err, "TLS key does not match the certificate", cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    tls_ctx *t = xcalloc(1, sizeof(*t));
    t->ssl_ctx = ctx;
    return t;
}

void tls_ctx_free(tls_ctx *ctx) {
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl_ctx); /* live SSL objects hold their own reference */
    free(ctx);
}

tls_conn *tls_conn_new(tls_ctx *ctx) {
    tls_conn *t = xcalloc(1, sizeof(*t));
    t->ssl = SSL_new(ctx->ssl_ctx);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->in || !t->out) abort(); /* allocation failure */
    BIO_set_mem_eof_return(t->in, -1);
    SSL_set_bio(t->ssl, t->in, t->out);
    SSL_set_accept_state(t->ssl);
    return t;
}

struct ws_frame **tls_conn_inflight(tls_conn *t) {
    return &t->inflight;
}

void tls_conn_free(tls_conn *t) {
    if (!t) return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

void tls_conn_feed(tls_conn *t, const void *data, size_t len) { BIO_write(t->in, data, (int)len); }

int tls_conn_read(tls_conn *t, uint8_t *out, size_t cap) {
    int n = SSL_read(t->ssl, out, (int)cap);
    if (n > 0) return n;
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    ERR_clear_error();
    return e == SSL_ERROR_ZERO_RETURN ? WSG_E_NET_TLS_CLOSED : WSG_E_NET_TLS_RECORD;
}

int tls_conn_write(tls_conn *t, const void *data, size_t len) {
    if (!SSL_is_init_finished(t->ssl)) return 0;
    int n = SSL_write(t->ssl, data, (int)len);
    if (n > 0) return n;
    int e = SSL_get_error(t->ssl, n);
    ERR_clear_error();
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : WSG_E_NET_TLS_RECORD;
}

size_t tls_conn_pending_output(tls_conn *t) { return BIO_ctrl_pending(t->out); }

size_t tls_conn_take_output(tls_conn *t, uint8_t *out, size_t cap) {
    int n = BIO_read(t->out, out, (int)cap);
    return n > 0 ? (size_t)n : 0;
}

void tls_conn_shutdown(tls_conn *t) {
    if (SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl);
    ERR_clear_error();
}

bool tls_conn_established(tls_conn *t) { return SSL_is_init_finished(t->ssl); }

const char *tls_conn_version(tls_conn *t) {
    return SSL_is_init_finished(t->ssl) ? SSL_get_version(t->ssl) : "";
}
