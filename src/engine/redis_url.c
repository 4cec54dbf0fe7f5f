/* The Redis URL parser (redis_url.h). Strict on purpose: a URL that could
 * mean two things (a raw '@' in a password, a query string we would
 * ignore) is refused with the reason, so that `wsgate check` catches it
 * before a node starts talking to the wrong server. */
#include "engine/redis_url.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/hex.h"
#include "common/strbuf.h"

/* Percent-decode s[0..n) into out (cap bytes with the NUL). Returns 0, or
 * WSG_E_ENGINE_CONFIG with err naming `what`. */
static int decode(const char *s, size_t n, char *out, size_t cap, const char *what,
                  wsg_error *err) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 1 < n ? hex_digit_value(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_digit_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                     "redis URL: bad percent escape in the %s", what);
            c = (unsigned char)(hi << 4 | lo);
            if (c == 0)
                return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                     "redis URL: the %s holds a NUL byte (%%00)", what);
            i += 2;
        } else if (c <= ' ' || c == 0x7f) {
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                 "redis URL: the %s holds a space or control character", what);
        }
        if (o + 1 >= cap)
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis URL: the %s is too long", what);
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static bool host_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

/* Parse decimal digits s[0..n) within 0..max into *out. */
static bool parse_uint(const char *s, size_t n, long max, int *out) {
    if (n == 0 || n > 6) return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) return false;
    *out = (int)v;
    return true;
}

int redis_url_parse(const char *s, size_t len, redis_url *out, wsg_error *err) {
    memset(out, 0, sizeof *out);
    out->port = REDIS_URL_DEFAULT_PORT;
    if (len > REDIS_URL_MAX_LEN)
        return wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis URL: longer than %d bytes",
                             REDIS_URL_MAX_LEN);
    if (memchr(s, '\0', len))
        return wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis URL: holds a NUL byte");
    static const char scheme[] = "redis://", tls_scheme[] = "rediss://";
    size_t skip;
    if (len >= sizeof tls_scheme - 1 && strncasecmp(s, tls_scheme, sizeof tls_scheme - 1) == 0) {
        out->tls = true;
        skip = sizeof tls_scheme - 1;
    } else if (len >= sizeof scheme - 1 && strncasecmp(s, scheme, sizeof scheme - 1) == 0) {
        skip = sizeof scheme - 1;
    } else {
        return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                             "redis URL: must start with redis:// or rediss://");
    }
    const char *p = s + skip, *end = s + len;

    /* The authority ends at the path; a query or fragment is refused. */
    if (memchr(p, '?', (size_t)(end - p)) || memchr(p, '#', (size_t)(end - p)))
        return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                             "redis URL: query strings and fragments are not supported");
    const char *auth_end = p;
    while (auth_end < end && *auth_end != '/') auth_end++;

    const char *at = memchr(p, '@', (size_t)(auth_end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return wsg_error_set(
                err, WSG_E_ENGINE_CONFIG,
                "redis URL: credentials need a password (user:password@ or :password@)");
        if (decode(p, (size_t)(colon - p), out->user, sizeof out->user, "user", err) < 0 ||
            decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password,
                   "password", err) < 0)
            return WSG_E_ENGINE_CONFIG; /* decode said why */
        out->has_password = true;
        p = at + 1;
    }

    /* host, then an optional :port */
    const char *host_end;
    if (p < auth_end && *p == '[') {
        const char *close = memchr(p, ']', (size_t)(auth_end - p));
        if (!close)
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                 "redis URL: '[' without ']' around an IPv6 address");
        size_t n = (size_t)(close - p - 1);
        if (n == 0 || n >= sizeof out->host)
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis URL: bad IPv6 address");
        memcpy(out->host, p + 1, n);
        out->host[n] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, out->host, &a6) != 1)
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                 "redis URL: \"%s\" is not an IPv6 address", out->host);
        out->ipv6 = true;
        host_end = close + 1;
        if (host_end < auth_end && *host_end != ':')
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis URL: unexpected text after ']'");
    } else {
        host_end = p;
        while (host_end < auth_end && *host_end != ':') {
            unsigned char c = (unsigned char)*host_end;
            if (c == '@')
                return wsg_error_set(
                    err, WSG_E_ENGINE_CONFIG,
                    "redis URL: '@' in the host (write '@' in a password as %%40)");
            if (!host_char(c))
                return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                     "redis URL: invalid character in the host name");
            host_end++;
        }
        size_t n = (size_t)(host_end - p);
        if (n == 0) return wsg_error_set(err, WSG_E_ENGINE_CONFIG, "redis URL: no host");
        if (n > 253)
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                 "redis URL: host name longer than 253 bytes");
        memcpy(out->host, p, n);
        out->host[n] = '\0';
    }
    if (host_end < auth_end) { /* at ':' */
        if (!parse_uint(host_end + 1, (size_t)(auth_end - host_end - 1), 65535, &out->port) ||
            out->port == 0)
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                 "redis URL: the port must be a number from 1 to 65535");
    }

    /* "" or "/" is db 0; "/N" is db N. */
    if (auth_end < end) {
        const char *db = auth_end + 1;
        if (db < end && !parse_uint(db, (size_t)(end - db), 65535, &out->db))
            return wsg_error_set(err, WSG_E_ENGINE_CONFIG,
                                 "redis URL: the path must be a database number (/0 to /65535)");
    }
    return 0;
}

char *redis_url_name(const redis_url *u, char *out, size_t len) {
    strbuf b;
    strbuf_init(&b, out, len);
    if (u->ipv6) strbuf_putc(&b, '[');
    strbuf_puts(&b, u->host);
    if (u->ipv6) strbuf_putc(&b, ']');
    strbuf_putc(&b, ':');
    strbuf_i64(&b, u->port);
    strbuf_putc(&b, '/');
    strbuf_i64(&b, u->db);
    return out;
}

bool redis_url_check(const char *s) {
    redis_url u;
    return *s == '\0' || redis_url_parse(s, strlen(s), &u, NULL) == 0;
}
