/* The JWT authorizer (auth_mode = "jwt"): a signed token, checked at
 * $connect before the 101, names the user.
 *
 * The algorithm is pinned by configuration and checked on the token's own
 * header before libjwt sees it (libjwt 1.x verifies with whatever the header
 * asks for that the key allows: an HS256 token "signed" with an RS256
 * public key's PEM text would pass). HS256 signatures are also compared here
 * in constant time. Claims are read from the payload bytes that were
 * signed, with duplicate members refused, so no two parsers can disagree on
 * them. Failures answer a short static text; the token itself is never
 * logged or echoed. */
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/auth.h"
#include "common/alloc.h"
#include "common/base64.h"

#define JWT_MAX_TOKEN    8192        /* bytes; far above any sane token */
#define JWT_MAX_KEY_FILE (64 * 1024) /* PEM public key file */
#define JWT_MAX_LEEWAY   300

typedef struct jwt_auth {
    authorizer base;
    jwt_alg_t alg;
    const char *alg_name; /* "HS256", "RS256" or "ES256" (static) */
    unsigned char *key;   /* the HS256 secret or the PEM text */
    size_t key_len;
    char *issuer;   /* "" = not checked */
    char *audience; /* "" = not checked */
    char *user_claim;
    char *name_claim;
    int64_t leeway;
} jwt_auth;

static const char *str_or_empty(const char *s) { return s ? s : ""; }

/* ---------------------------------------------------------------- base64url */

/* Decode the unpadded base64url text s (n bytes) into a new buffer (*out,
 * caller frees; NUL-terminated for convenience) of *outlen bytes. Strict
 * (common/base64.h): one byte string has one encoding. */
static bool b64url_decode(const char *s, size_t n, unsigned char **out, size_t *outlen) {
    size_t cap = n / 4 * 3 + 3;
    unsigned char *buf = xmalloc(cap + 1);
    long got = base64_decode(s, n, buf, cap, BASE64_URL);
    if (got < 0) {
        free(buf);
        return false;
    }
    buf[got] = '\0';
    *out = buf;
    *outlen = (size_t)got;
    return true;
}

/* Decode a base64url segment holding a JSON object. Returns a new reference
 * or NULL. */
static json_t *b64url_json_object(const char *s, size_t n) {
    unsigned char *raw;
    size_t rawlen;
    if (!b64url_decode(s, n, &raw, &rawlen)) return NULL;
    json_t *j = json_loadb((const char *)raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ---------------------------------------------------------------- token location */

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* Token from `Authorization: Bearer <token>` (scheme case-insensitive).
 * Returns a new string, "" for a Bearer header without a token, or NULL when
 * there is no Bearer Authorization header. */
static char *token_from_authorization(const http_request *req) {
    size_t len;
    const char *v = http_request_header(req, "Authorization", &len);
    if (!v) return NULL;
    const char *end = v + len;
    while (v < end && is_ows(*v)) v++;
    if ((size_t)(end - v) < 6 || strncasecmp(v, "bearer", 6) != 0) return NULL;
    v += 6;
    if (v < end && !is_ows(*v)) return NULL; /* "Bearerx..." is another scheme */
    while (v < end && is_ows(*v)) v++;
    while (end > v && is_ows(end[-1])) end--;
    return xstrndup(v, (size_t)(end - v));
}

/* Token from the subprotocols offered: the entry right after an entry
 * `bearer` (browsers cannot set Authorization, so they offer
 * `Sec-WebSocket-Protocol: bearer, <token>`). Entries of every
 * Sec-WebSocket-Protocol header count, in order. Returns a new string or
 * NULL. */
static char *token_from_protocol(const http_request *req) {
    bool after_bearer = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header *h = &req->headers[i];
        if (h->name_len != 22 ||
            strncasecmp(req->raw + h->name_off, "Sec-WebSocket-Protocol", 22) != 0)
            continue;
        const char *p = req->raw + h->value_off, *end = p + h->value_len;
        while (p <= end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            const char *b = p;
            while (b < e && is_ows(*b)) b++;
            const char *t = e;
            while (t > b && is_ows(t[-1])) t--;
            if (t > b) { /* empty list elements are skipped (RFC 9110 #rule) */
                if (after_bearer) return xstrndup(b, (size_t)(t - b));
                after_bearer = (size_t)(t - b) == 6 && memcmp(b, "bearer", 6) == 0;
            }
            if (!comma) break;
            p = comma + 1;
        }
    }
    return NULL;
}

typedef enum token_source { TOKEN_NONE, TOKEN_HEADER, TOKEN_PROTOCOL, TOKEN_QUERY } token_source;

/* Find the token: Authorization, then Sec-WebSocket-Protocol, then the
 * `token` query parameter. *out gets a new string (possibly "") unless the
 * answer is TOKEN_NONE; *bad is set when the query value is badly encoded. */
static token_source find_token(const http_request *req, char **out, bool *bad) {
    *bad = false;
    if ((*out = token_from_authorization(req))) return TOKEN_HEADER;
    if ((*out = token_from_protocol(req))) return TOKEN_PROTOCOL;
    size_t qlen;
    const char *q = http_request_query(req, &qlen);
    if (http_query_param(q, qlen, "token", out)) return TOKEN_QUERY;
    /* Present but badly encoded ("token=%zz") is refused, not "missing". */
    for (const char *p = q, *end = q + qlen; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if ((eq ? eq : pe) - p == 5 && memcmp(p, "token", 5) == 0) {
            *bad = true;
            break;
        }
        if (!amp) break;
        p = amp + 1;
    }
    return TOKEN_NONE;
}

/* ---------------------------------------------------------------- verification */

/* HMAC-SHA256 of the signing input, compared in constant time with the
 * decoded signature. */
static bool hs256_ok(const jwt_auth *st, const char *token, size_t signing_len, const char *sig,
                     size_t sig_len) {
    unsigned char *want;
    size_t want_len;
    if (!b64url_decode(sig, sig_len, &want, &want_len)) return false;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    bool ok = HMAC(EVP_sha256(), st->key, (int)st->key_len, (const unsigned char *)token,
                   signing_len, mac, &mac_len) != NULL &&
              mac_len == 32 && want_len == 32 && CRYPTO_memcmp(mac, want, 32) == 0;
    free(want);
    return ok;
}

static bool claim_is_time(const json_t *v) { return json_is_integer(v) || json_is_real(v); }

/* The string form of a user id claim: a string, or a whole number written
 * in decimal. Returns a new string or NULL. */
static char *claim_id(const json_t *v) {
    if (json_is_string(v)) /* an embedded NUL (never loaded without JSON_ALLOW_NUL) is refused */
        return strlen(json_string_value(v)) == json_string_length(v) ? xstrdup(json_string_value(v))
                                                                     : NULL;
    if (json_is_integer(v)) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        return xstrdup(buf);
    }
    return NULL;
}

static bool audience_ok(const json_t *aud, const char *want) {
    if (json_is_string(aud)) return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud)) return false;
    size_t i;
    const json_t *v;
    json_array_foreach(aud, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0) return true;
    }
    return false;
}

/* Check the claims (already signature-checked). On success fills *user and
 * *name (new strings) and returns 0; else a negative WSG_E_AUTH_TOKEN_* code. */
static int check_claims(const jwt_auth *st, const json_t *claims, char **user, char **name) {
    double now = (double)time(NULL);
    double leeway = (double)st->leeway;
    const json_t *exp = json_object_get(claims, "exp");
    if (!claim_is_time(exp)) goto invalid;
    if (now > json_number_value(exp) + leeway) {
        return WSG_E_AUTH_TOKEN_EXPIRED;
    }
    const json_t *nbf = json_object_get(claims, "nbf");
    if (nbf) {
        if (!claim_is_time(nbf)) goto invalid;
        if (now + leeway < json_number_value(nbf)) {
            return WSG_E_AUTH_TOKEN_EARLY;
        }
    }
    if (st->issuer[0]) {
        const json_t *iss = json_object_get(claims, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), st->issuer) != 0) {
            return WSG_E_AUTH_TOKEN_ISSUER;
        }
    }
    if (st->audience[0] && !audience_ok(json_object_get(claims, "aud"), st->audience)) {
        return WSG_E_AUTH_TOKEN_AUDIENCE;
    }
    char *u = claim_id(json_object_get(claims, st->user_claim));
    if (!u || !auth_valid_id(u)) {
        free(u);
        goto invalid;
    }
    const json_t *nv = json_object_get(claims, st->name_claim);
    char *n = NULL;
    if (nv && !json_is_null(nv)) {
        if (!json_is_string(nv) || strlen(json_string_value(nv)) != json_string_length(nv) ||
            !auth_valid_id(json_string_value(nv))) {
            free(u);
            goto invalid;
        }
        n = xstrdup(json_string_value(nv));
    } else {
        n = xstrdup(u);
    }
    *user = u;
    *name = n;
    return 0;
invalid:
    return WSG_E_AUTH_TOKEN_INVALID;
}

/* Verify token (NUL-terminated) and fill *user / *name. Returns 0 or a
 * negative WSG_E_AUTH_TOKEN_* code. */
static int verify_token(const jwt_auth *st, const char *token, char **user, char **name) {
    size_t len = strlen(token);
    if (len == 0) return WSG_E_AUTH_TOKEN_MISSING;
    if (len > JWT_MAX_TOKEN) return WSG_E_AUTH_TOKEN_INVALID;
    const char *dot1 = memchr(token, '.', len);
    if (!dot1) return WSG_E_AUTH_TOKEN_INVALID;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return WSG_E_AUTH_TOKEN_INVALID;
    const char *sig = dot2 + 1;
    size_t sig_len = len - (size_t)(sig - token);
    size_t head_len = (size_t)(dot1 - token), body_len = (size_t)(dot2 - dot1 - 1);
    if (head_len == 0 || body_len == 0) return WSG_E_AUTH_TOKEN_INVALID;

    /* The header's alg must be the configured one before anything is
     * verified: this refuses "none" and algorithm confusion whatever the
     * library would allow. */
    json_t *head = b64url_json_object(token, head_len);
    if (!head) return WSG_E_AUTH_TOKEN_INVALID;
    const json_t *alg = json_object_get(head, "alg");
    bool alg_ok = json_is_string(alg) && strcmp(json_string_value(alg), st->alg_name) == 0;
    bool has_alg = json_is_string(alg);
    bool crit = json_object_get(head, "crit") != NULL; /* no extension is understood */
    json_decref(head);
    if (!has_alg) return WSG_E_AUTH_TOKEN_INVALID;
    if (!alg_ok) {
        return WSG_E_AUTH_TOKEN_ALG;
    }
    if (crit || sig_len == 0) return WSG_E_AUTH_TOKEN_INVALID;
    if (st->alg == JWT_ALG_HS256 && !hs256_ok(st, token, (size_t)(dot2 - token), sig, sig_len))
        return WSG_E_AUTH_TOKEN_INVALID;

    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, st->key, (int)st->key_len) != 0 || !jwt) {
        if (jwt) jwt_free(jwt);
        return WSG_E_AUTH_TOKEN_INVALID;
    }
    jwt_alg_t got = jwt_get_alg(jwt);
    jwt_free(jwt);
    if (got != st->alg) {
        return WSG_E_AUTH_TOKEN_ALG;
    }
    /* Claims from exactly the bytes that were signed. */
    json_t *claims = b64url_json_object(dot1 + 1, body_len);
    if (!claims) return WSG_E_AUTH_TOKEN_INVALID;
    int status = check_claims(st, claims, user, name);
    json_decref(claims);
    return status;
}

static int jwt_authorize(const authorizer *self, const http_request *req, auth_identity *id) {
    const jwt_auth *st = self->state;
    char *token = NULL;
    bool bad = false;
    token_source src = find_token(req, &token, &bad);
    if (src == TOKEN_NONE) return bad ? WSG_E_AUTH_TOKEN_INVALID : WSG_E_AUTH_TOKEN_MISSING;
    char *user = NULL, *name = NULL;
    int status = verify_token(st, token, &user, &name);
    /* Wipe the bearer credential before the memory is reused. */
    OPENSSL_cleanse(token, strlen(token));
    free(token);
    if (status != 0) return status;
    free(id->user_id);
    free(id->username);
    id->user_id = user;
    id->username = name;
    free(id->subprotocol);
    id->subprotocol = src == TOKEN_PROTOCOL ? xstrdup("bearer") : NULL;
    return 0;
}

static void jwt_destroy(authorizer *self) {
    if (!self) return;
    jwt_auth *st = self->state;
    if (st->key) OPENSSL_cleanse(st->key, st->key_len);
    free(st->key);
    free(st->issuer);
    free(st->audience);
    free(st->user_claim);
    free(st->name_claim);
    free(st);
}

/* ---------------------------------------------------------------- construction */

/* Read the PEM public key file and check it suits alg. Fills st->key. */
static int load_public_key(jwt_auth *st, const char *path, wsg_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        return wsg_error_set(err, WSG_E_CONFIG_VALUE, "jwt_public_key_file %s: %s", path,
                             strerror(errno));
    }
    unsigned char *buf = xmalloc(JWT_MAX_KEY_FILE + 1);
    size_t n = fread(buf, 1, JWT_MAX_KEY_FILE + 1, f);
    bool read_error = ferror(f);
    fclose(f);
    if (read_error || n == 0 || n > JWT_MAX_KEY_FILE) {
        free(buf);
        return wsg_error_set(err, WSG_E_CONFIG_VALUE, "jwt_public_key_file %s: %s", path,
                             read_error ? "cannot be read"
                             : n == 0   ? "is empty"
                                        : "is too large");
    }
    buf[n] = '\0';
    BIO *bio = BIO_new_mem_buf(buf, (int)n);
    EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    const char *problem = NULL;
    if (!pk) {
        problem = "is not a PEM public key (-----BEGIN PUBLIC KEY-----)";
    } else if (st->alg == JWT_ALG_RS256) {
        if (EVP_PKEY_base_id(pk) != EVP_PKEY_RSA) problem = "is not an RSA key (RS256 needs one)";
        else if (EVP_PKEY_bits(pk) < 2048) problem = "is an RSA key shorter than 2048 bits";
    } else {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_base_id(pk) != EVP_PKEY_EC) problem = "is not an EC key (ES256 needs P-256)";
        else if (!EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) ||
                 strcmp(group, "prime256v1") != 0)
            problem = "is not a P-256 EC key (ES256 needs P-256)";
    }
    EVP_PKEY_free(pk);
    if (problem) {
        free(buf);
        return wsg_error_set(err, WSG_E_CONFIG_VALUE, "jwt_public_key_file %s %s", path, problem);
    }
    st->key = buf;
    st->key_len = n;
    return 0;
}

static char *claim_name(const char *configured, const char *def) {
    return xstrdup(configured && *configured ? configured : def);
}

authorizer *auth_jwt_new(const config *cfg, wsg_error *err) {
    const char *alg = str_or_empty(cfg->jwt_algorithm);
    jwt_auth *st = xcalloc(1, sizeof(*st));
    if (!*alg || strcmp(alg, "HS256") == 0) {
        st->alg = JWT_ALG_HS256;
        st->alg_name = "HS256";
    } else if (strcmp(alg, "RS256") == 0) {
        st->alg = JWT_ALG_RS256;
        st->alg_name = "RS256";
    } else if (strcmp(alg, "ES256") == 0) {
        st->alg = JWT_ALG_ES256;
        st->alg_name = "ES256";
    } else {
        wsg_error_set(err, WSG_E_CONFIG_VALUE, "jwt_algorithm must be HS256, RS256 or ES256");
        free(st);
        return NULL;
    }
    if (st->alg == JWT_ALG_HS256) {
        const char *secret = str_or_empty(cfg->jwt_secret);
        if (!*secret) {
            wsg_error_set(err, WSG_E_CONFIG_VALUE,
                          "auth_mode = \"jwt\" with HS256 requires jwt_secret");
            free(st);
            return NULL;
        }
        st->key_len = strlen(secret);
        st->key = (unsigned char *)xstrdup(secret);
    } else {
        const char *path = str_or_empty(cfg->jwt_public_key_file);
        if (!*path) {
            wsg_error_set(err, WSG_E_CONFIG_VALUE,
                          "auth_mode = \"jwt\" with %s requires jwt_public_key_file", st->alg_name);
            free(st);
            return NULL;
        }
        if (load_public_key(st, path, err) < 0) {
            free(st);
            return NULL;
        }
    }
    st->issuer = xstrdup(str_or_empty(cfg->jwt_issuer));
    st->audience = xstrdup(str_or_empty(cfg->jwt_audience));
    st->user_claim = claim_name(cfg->jwt_user_id_claim, "sub");
    st->name_claim = claim_name(cfg->jwt_username_claim, "name");
    st->leeway = cfg->jwt_leeway_s < 0                ? 0
                 : cfg->jwt_leeway_s > JWT_MAX_LEEWAY ? JWT_MAX_LEEWAY
                                                      : cfg->jwt_leeway_s;
    st->base.name = "jwt";
    st->base.authorize = jwt_authorize;
    st->base.destroy = jwt_destroy;
    st->base.state = st;
    return &st->base;
}
