#include "http/handshake.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/error.h"
#include "common/strbuf.h"

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* SHA-1 fetched once: OpenSSL 3 looks the algorithm up again on every
 * EVP_Digest given EVP_sha1(), which cost more than the hash itself. */
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha1_md;
static void sha1_fetch(void) { sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL); }

void ws_handshake_accept(const char *key, size_t key_len, char out[29]) {
    /* SHA-1 is what RFC 6455 prescribes here; it is not used for security. */
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    char joined[128];
    if (key_len > sizeof(joined) - sizeof(WS_GUID)) key_len = sizeof(joined) - sizeof(WS_GUID);
    memcpy(joined, key, key_len);
    memcpy(joined + key_len, WS_GUID, sizeof(WS_GUID) - 1);
    pthread_once(&sha1_once, sha1_fetch);
    EVP_Digest(joined, key_len + sizeof(WS_GUID) - 1, digest, &dlen, sha1_md ? sha1_md : EVP_sha1(),
               NULL);
    base64_encode(digest, dlen, out, BASE64_STD);
}

/* RFC 6455 4.2.1: the key is the base64 of 16 bytes (canonical). */
static bool key_is_16_bytes_base64(const char *key, size_t len) {
    uint8_t raw[16];
    return base64_decode(key, len, raw, sizeof(raw), BASE64_STD) == (long)sizeof(raw);
}

/* How many times the header name appears in r. */
static size_t header_count(const http_request *r, const char *name) {
    size_t nl = strlen(name), n = 0;
    for (size_t i = 0; i < r->nheaders; i++)
        if (r->headers[i].name_len == nl &&
            strncasecmp(r->raw + r->headers[i].name_off, name, nl) == 0)
            n++;
    return n;
}

static int fail(ws_handshake_result *out, int code, const char *hdrs) {
    out->error = code;
    out->status = wsg_err_http_status(code);
    out->message = wsg_strerror(code);
    out->extra_headers = hdrs;
    return out->status;
}

int ws_handshake_check(const http_request *r, const char *path, ws_handshake_result *out) {
    memset(out, 0, sizeof(*out));
    size_t plen;
    const char *p = http_request_path(r, &plen);
    if (plen != strlen(path) || memcmp(p, path, plen) != 0)
        return fail(out, WSG_E_HS_NOT_FOUND, NULL);
    if (r->parser.method != HTTP_GET) return fail(out, WSG_E_HS_METHOD, "Allow: GET\r\n");
    if (r->parser.http_major != 1 || r->parser.http_minor < 1)
        return fail(out, WSG_E_HS_VERSION, NULL);
    if (!http_request_header_has_token(r, "Upgrade", "websocket"))
        return fail(out, WSG_E_HS_UPGRADE,
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
    if (!http_request_header_has_token(r, "Connection", "upgrade"))
        return fail(out, WSG_E_HS_CONNECTION, NULL);
    size_t vlen;
    const char *ver = http_request_header(r, "Sec-WebSocket-Version", &vlen);
    /* RFC 6455 11.3.1, 11.3.5: each at most once, so that no proxy can
     * read another key or version than the one answered. */
    if (!ver || vlen != 2 || memcmp(ver, "13", 2) != 0 ||
        header_count(r, "Sec-WebSocket-Version") != 1)
        return fail(out, WSG_E_HS_WS_VERSION, "Sec-WebSocket-Version: 13\r\n");
    size_t klen;
    const char *key = http_request_header(r, "Sec-WebSocket-Key", &klen);
    if (!key || !key_is_16_bytes_base64(key, klen) || header_count(r, "Sec-WebSocket-Key") != 1)
        return fail(out, WSG_E_HS_KEY, NULL);
    ws_handshake_accept(key, klen, out->accept);
    out->status = 101;
    return 101;
}

char *ws_handshake_response(const char *accept, const char *protocol, size_t *len) {
    return ws_handshake_response_ext(accept, protocol, NULL, len);
}

char *ws_handshake_response_ext(const char *accept, const char *protocol, const char *extensions,
                                size_t *len) {
    /* Written piece by piece (no format parsing: this runs per connect). */
    size_t cap = 160 + strlen(accept) + (protocol ? 32 + strlen(protocol) : 0) +
                 (extensions ? 32 + strlen(extensions) : 0);
    char *buf = xmalloc(cap);
    strbuf b;
    strbuf_init(&b, buf, cap);
    strbuf_puts(&b, "HTTP/1.1 101 Switching Protocols\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Accept: ");
    strbuf_puts(&b, accept);
    strbuf_puts(&b, "\r\n");
    if (protocol) {
        strbuf_puts(&b, "Sec-WebSocket-Protocol: ");
        strbuf_puts(&b, protocol);
        strbuf_puts(&b, "\r\n");
    }
    if (extensions) {
        strbuf_puts(&b, "Sec-WebSocket-Extensions: ");
        strbuf_puts(&b, extensions);
        strbuf_puts(&b, "\r\n");
    }
    strbuf_puts(&b, "\r\n");
    *len = b.len;
    return buf;
}

bool ws_handshake_deflate(const http_request *r, const ws_deflate_config *cfg,
                          ws_deflate_params *params, char *extensions) {
    if (!cfg->enabled) return false;
    /* The header may be repeated: its values form one list, in order. */
    enum { MAX_VALUES = 16 };
    const char *values[MAX_VALUES];
    size_t lens[MAX_VALUES], n = 0;
    for (size_t i = 0; i < r->nheaders && n < MAX_VALUES; i++) {
        const http_header *h = &r->headers[i];
        if (h->name_len != 24 ||
            strncasecmp(r->raw + h->name_off, "Sec-WebSocket-Extensions", 24) != 0)
            continue;
        values[n] = r->raw + h->value_off;
        lens[n++] = h->value_len;
    }
    return ws_deflate_negotiate(cfg, values, lens, n, params, extensions);
}
