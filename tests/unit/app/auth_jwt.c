/* Unit tests for the JWT authorizer (src/app/auth_jwt.c). Good tokens are
 * made with libjwt; malicious ones (alg none, algorithm confusion, odd
 * encodings, duplicate claims) by hand. RSA and EC keys are generated per
 * test with OpenSSL into a temporary directory. Requests are built by
 * feeding request text to http_request_feed, as the server does. */
#include <criterion/criterion.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/auth.h"
#include "http/request.h"

#define SECRET "test-secret-0123456789abcdef0123456789"

static http_request REQ;
static bool loaded;
static char tmpdir[64];
static authorizer *AUTH;

static void fini(void) {
    if (loaded) http_request_free(&REQ);
    loaded = false;
    if (AUTH) AUTH->destroy(AUTH);
    AUTH = NULL;
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
        tmpdir[0] = '\0';
    }
}

/* ---------------------------------------------------------------- helpers */

/* A configuration with the given values; NULL stays NULL (as in a config
 * that does not know the variables yet). */
typedef struct jcfg {
    const char *alg, *secret, *key_file, *issuer, *audience, *user_claim, *name_claim;
    int64_t leeway;
} jcfg;

static authorizer *make_auth(jcfg j, char *err, size_t errlen) {
    config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.auth_mode = (char *)"jwt";
    cfg.jwt_algorithm = (char *)j.alg;
    cfg.jwt_secret = (char *)j.secret;
    cfg.jwt_public_key_file = (char *)j.key_file;
    cfg.jwt_issuer = (char *)j.issuer;
    cfg.jwt_audience = (char *)j.audience;
    cfg.jwt_user_id_claim = (char *)j.user_claim;
    cfg.jwt_username_claim = (char *)j.name_claim;
    cfg.jwt_leeway_s = j.leeway;
    err[0] = '\0';
    wsg_error e = {0};
    authorizer *a = auth_jwt_new(&cfg, &e);
    if (!a) {
        cr_assert_eq(e.code, WSG_E_CONFIG_VALUE);
        snprintf(err, errlen, "%s", e.message);
    }
    return a;
}

/* Set AUTH from j; the test fails when it cannot be built. */
static void use(jcfg j) {
    char err[512];
    if (AUTH) AUTH->destroy(AUTH);
    AUTH = make_auth(j, err, sizeof(err));
    cr_assert_not_null(AUTH, "auth_jwt_new: %s", err);
    cr_assert_str_eq(AUTH->name, "jwt");
}

/* auth_jwt_new must refuse j with a message containing `part`. */
static void refused(jcfg j, const char *part) {
    char err[512];
    authorizer *a = make_auth(j, err, sizeof(err));
    cr_assert_null(a, "accepted, wanted: %s", part);
    cr_assert(strstr(err, part), "message \"%s\" lacks \"%s\"", err, part);
}

static void load(const char *target, const char *headers) {
    char *text = NULL;
    cr_assert_gt(asprintf(&text,
                          "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n%s\r\n",
                          target, headers ? headers : ""),
                 0);
    if (loaded) http_request_free(&REQ);
    http_request_init(&REQ, 16384, 100, 0);
    loaded = true;
    ssize_t n = http_request_feed(&REQ, text, strlen(text));
    cr_assert_eq(n, (ssize_t)strlen(text), "status %d", REQ.error_status);
    cr_assert(REQ.complete);
    free(text);
}

/* Run AUTH on the request; returns the status and fills *id (caller
 * clears) and *msg. */
static int run(const char *target, const char *headers, auth_identity *id, const char **msg) {
    load(target, headers);
    *msg = NULL;
    int rc = auth_identity_from_query(&REQ, id);
    cr_assert_eq(rc, 0, "query refused: %s", wsg_strerror(rc));
    rc = AUTH->authorize(AUTH, &REQ, id);
    cr_assert((rc <= WSG_E_AUTH_TOKEN_MISSING && rc >= WSG_E_AUTH_TOKEN_AUDIENCE) || rc == 0, "%d",
              rc);
    int st = auth_http_status(rc, msg);
    if (st) {
        cr_assert_eq(st, 401);
        cr_assert_not_null(*msg);
    }
    return st;
}

static char *q_target(const char *token, const char *more) {
    char *t = NULL;
    cr_assert_gt(asprintf(&t, "/staging?token=%s%s", token, more ? more : ""), 0);
    return t;
}

/* The token in the query is refused with `message`. */
static void expect_refused(const char *token, const char *message) {
    auth_identity id;
    const char *msg;
    char *t = q_target(token, NULL);
    cr_assert_eq(run(t, NULL, &id, &msg), 401, "accepted: %s", token);
    cr_assert_str_eq(msg, message, "token %s", token);
    cr_assert_null(id.subprotocol);
    auth_identity_clear(&id);
    free(t);
}

/* The token in the query is accepted as user/name. */
static void expect_user(const char *token, const char *user, const char *name) {
    auth_identity id;
    const char *msg;
    char *t = q_target(token, "&roomId=lobby&userId=mallory&username=Mallory");
    cr_assert_eq(run(t, NULL, &id, &msg), 0, "refused (%s): %s", msg, token);
    cr_assert_str_eq(id.user_id, user);
    cr_assert_str_eq(id.username, name);
    cr_assert_str_eq(id.room_id, "lobby");
    cr_assert_null(id.subprotocol);
    auth_identity_clear(&id);
    free(t);
}

static char *b64url(const void *data, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = malloc(n / 3 * 4 + 5), *o = out;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = abc[(v >> 6) & 63];
        *o++ = abc[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = abc[(v >> 6) & 63];
    }
    *o = '\0';
    return out;
}

/* header.payload.sig from text, sig given already encoded (may be ""). */
static char *raw_token(const char *header, const char *payload, const char *sig) {
    char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload)), *t = NULL;
    cr_assert_gt(asprintf(&t, "%s.%s.%s", h, p, sig), 0);
    free(h);
    free(p);
    return t;
}

/* A hand-made HS256 token: the header and payload exactly as given. */
static char *hmac_token(const char *header, const char *payload, const void *key, size_t keylen) {
    char *unsigned_tok = raw_token(header, payload, "");
    size_t n = strlen(unsigned_tok) - 1; /* without the last '.' */
    unsigned char mac[32];
    unsigned int maclen = 0;
    cr_assert_not_null(
        HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)unsigned_tok, n, mac, &maclen));
    char *sig = b64url(mac, maclen), *t = NULL;
    cr_assert_gt(asprintf(&t, "%.*s.%s", (int)n, unsigned_tok, sig), 0);
    free(sig);
    free(unsigned_tok);
    return t;
}

/* A token made by libjwt: claims is a JSON object text. */
static char *lib_token(jwt_alg_t alg, const void *key, size_t keylen, const char *claims) {
    jwt_t *j = NULL;
    cr_assert_eq(jwt_new(&j), 0);
    cr_assert_eq(jwt_add_grants_json(j, claims), 0, "claims %s", claims);
    cr_assert_eq(jwt_set_alg(j, alg, key, (int)keylen), 0);
    char *t = jwt_encode_str(j);
    cr_assert_not_null(t);
    jwt_free(j);
    char *copy = strdup(t);
    free(t);
    return copy;
}

/* A claims object text with exp = now + exp_delta and `more` members
 * (",\"k\":v" form, may be ""). */
static char *claims(long exp_delta, const char *more) {
    char *c = NULL;
    cr_assert_gt(asprintf(&c, "{\"sub\":\"alice\",\"name\":\"Alice\",\"exp\":%ld%s}",
                          (long)time(NULL) + exp_delta, more),
                 0);
    return c;
}

static char *hs(const char *more) {
    char *c = claims(3600, more);
    char *t = lib_token(JWT_ALG_HS256, SECRET, strlen(SECRET), c);
    free(c);
    return t;
}

/* ---- keys ---- */

typedef struct keypair {
    char *priv; /* PEM private key text */
    size_t priv_len;
    char pub_path[128];
    char *pub; /* PEM public key text */
    size_t pub_len;
} keypair;

static char *bio_text(BIO *b, size_t *len) {
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    return out;
}

static void write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, n, f), n);
    fclose(f);
}

static const char *tmp(void) {
    if (!tmpdir[0]) {
        strcpy(tmpdir, "/tmp/wsgate-jwt-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
    }
    return tmpdir;
}

/* Generate an RSA (bits > 0) or P-256 EC (bits == 0) key pair; the public
 * key is written to <tmp>/<name>.pem. */
static keypair genkey(const char *name, int bits) {
    keypair k;
    memset(&k, 0, sizeof(k));
    EVP_PKEY *pk = bits ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits)
                        : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    cr_assert_not_null(pk);
    BIO *b = BIO_new(BIO_s_mem());
    cr_assert(PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL));
    k.priv = bio_text(b, &k.priv_len);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    cr_assert(PEM_write_bio_PUBKEY(b, pk));
    k.pub = bio_text(b, &k.pub_len);
    BIO_free(b);
    EVP_PKEY_free(pk);
    snprintf(k.pub_path, sizeof(k.pub_path), "%s/%s.pem", tmp(), name);
    write_file(k.pub_path, k.pub, k.pub_len);
    return k;
}

static void keypair_free(keypair *k) {
    free(k->priv);
    free(k->pub);
}

/* ---------------------------------------------------------------- HS256 */

Test(jwt_hs256, valid_token_replaces_query_identity, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs("");
    expect_user(t, "alice", "Alice");
    free(t);
}

Test(jwt_hs256, wrong_secret, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *c = claims(3600, "");
    char *t = lib_token(JWT_ALG_HS256, "another-secret", 14, c);
    expect_refused(t, "Invalid token");
    free(t);
    free(c);
}

Test(jwt_hs256, tampered_payload, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *good = hs("");
    char *evil = hs(",\"admin\":true");
    /* evil's header and payload with good's signature */
    char *sig = strrchr(good, '.') + 1;
    *strrchr(evil, '.') = '\0';
    char *t = NULL;
    cr_assert_gt(asprintf(&t, "%s.%s", evil, sig), 0);
    expect_refused(t, "Invalid token");
    free(t);
    free(good);
    free(evil);
}

Test(jwt_hs256, alg_none_refused, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *c = claims(3600, "");
    char *t = raw_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", c, "");
    expect_refused(t, "Algorithm not allowed");
    free(t);
    /* with a signature that is the HMAC anyway */
    t = hmac_token("{\"alg\":\"none\"}", c, SECRET, strlen(SECRET));
    expect_refused(t, "Algorithm not allowed");
    free(t);
    /* other spellings and neighbours */
    const char *heads[] = {"{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}", "{\"alg\":\"HS512\"}",
                           "{\"alg\":\"hs256\"}", "{\"alg\":\"HS256 \"}"};
    for (size_t i = 0; i < sizeof(heads) / sizeof(*heads); i++) {
        t = hmac_token(heads[i], c, SECRET, strlen(SECRET));
        expect_refused(t, "Algorithm not allowed");
        free(t);
    }
    /* no alg, or not a string */
    t = hmac_token("{\"typ\":\"JWT\"}", c, SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    t = hmac_token("{\"alg\":null}", c, SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    free(c);
}

Test(jwt_hs256, hand_made_token_accepted, .fini = fini) {
    /* the hand-made path matches libjwt's: a correct HMAC token passes */
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *c = claims(3600, "");
    char *t = hmac_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", c, SECRET, strlen(SECRET));
    expect_user(t, "alice", "Alice");
    free(t);
    free(c);
}

Test(jwt_hs256, malformed_tokens, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *good = hs("");
    char *t = NULL;
    /* two and four segments */
    *strrchr(good, '.') = '\0';
    expect_refused(good, "Invalid token");
    free(good);
    good = hs("");
    cr_assert_gt(asprintf(&t, "%s.xyz", good), 0);
    expect_refused(t, "Invalid token");
    free(t);
    /* padding, a character outside base64url, truncation */
    cr_assert_gt(asprintf(&t, "%s%%3D", good), 0);
    expect_refused(t, "Invalid token");
    free(t);
    t = strdup(good);
    t[3] = '*';
    expect_refused(t, "Invalid token");
    free(t);
    t = strndup(good, strlen(good) - 5);
    expect_refused(t, "Invalid token");
    free(t);
    free(good);
    /* header not JSON, not an object; payload not JSON */
    char *c = claims(3600, "");
    t = hmac_token("not json", c, SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    t = hmac_token("[\"HS256\"]", c, SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    t = hmac_token("{\"alg\":\"HS256\"}", "{\"sub\":", SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    /* a crit header names an extension nobody here understands */
    t = hmac_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", c, SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    /* duplicate header alg, duplicate claims */
    t = hmac_token("{\"alg\":\"none\",\"alg\":\"HS256\"}", c, SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    char *dup = claims(3600, ",\"sub\":\"root\"");
    t = hmac_token("{\"alg\":\"HS256\"}", dup, SECRET, strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    free(dup);
    /* dots only, empty segments */
    expect_refused("..", "Invalid token");
    expect_refused("a..b", "Invalid token");
    expect_refused("abc", "Invalid token");
    free(c);
}

Test(jwt_hs256, non_canonical_signature, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs("");
    /* A 32-byte signature is 43 characters whose last one carries 2 unused
     * bits; setting them makes another text for the same bytes. */
    char *last = t + strlen(t) - 1;
    const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(abc, *last) - abc);
    *last = abc[v | 1];
    expect_refused(t, "Invalid token");
    free(t);
}

/* ---------------------------------------------------------------- RS256 / ES256 */

Test(jwt_rs256, valid_and_wrong_key, .fini = fini) {
    keypair k = genkey("rsa", 2048), other = genkey("rsa2", 2048);
    use((jcfg){.alg = "RS256", .key_file = k.pub_path, .leeway = 30});
    char *c = claims(3600, "");
    char *t = lib_token(JWT_ALG_RS256, k.priv, k.priv_len, c);
    expect_user(t, "alice", "Alice");
    free(t);
    t = lib_token(JWT_ALG_RS256, other.priv, other.priv_len, c);
    expect_refused(t, "Invalid token");
    free(t);
    /* RS512 by the right key is still another algorithm */
    t = lib_token(JWT_ALG_RS512, k.priv, k.priv_len, c);
    expect_refused(t, "Algorithm not allowed");
    free(t);
    free(c);
    keypair_free(&k);
    keypair_free(&other);
}

Test(jwt_es256, valid_and_wrong_key, .fini = fini) {
    keypair k = genkey("ec", 0), other = genkey("ec2", 0);
    use((jcfg){.alg = "ES256", .key_file = k.pub_path, .leeway = 30});
    char *c = claims(3600, "");
    char *t = lib_token(JWT_ALG_ES256, k.priv, k.priv_len, c);
    expect_user(t, "alice", "Alice");
    free(t);
    t = lib_token(JWT_ALG_ES256, other.priv, other.priv_len, c);
    expect_refused(t, "Invalid token");
    free(t);
    free(c);
    keypair_free(&k);
    keypair_free(&other);
}

Test(jwt_rs256, algorithm_confusion_refused, .fini = fini) {
    keypair k = genkey("rsa", 2048);
    use((jcfg){.alg = "RS256", .key_file = k.pub_path, .leeway = 30});
    char *c = claims(3600, "");
    /* HS256 "signed" with the public key's PEM text, as libjwt 1.x would
     * verify it against that same text */
    char *t = lib_token(JWT_ALG_HS256, k.pub, k.pub_len, c);
    expect_refused(t, "Algorithm not allowed");
    free(t);
    t = hmac_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", c, k.pub, k.pub_len);
    expect_refused(t, "Algorithm not allowed");
    free(t);
    t = raw_token("{\"alg\":\"none\"}", c, "");
    expect_refused(t, "Algorithm not allowed");
    free(t);
    free(c);
    keypair_free(&k);
}

Test(jwt_es256, algorithm_confusion_refused, .fini = fini) {
    keypair k = genkey("ec", 0), r = genkey("rsa", 2048);
    use((jcfg){.alg = "ES256", .key_file = k.pub_path, .leeway = 30});
    char *c = claims(3600, "");
    char *t = lib_token(JWT_ALG_HS256, k.pub, k.pub_len, c);
    expect_refused(t, "Algorithm not allowed");
    free(t);
    t = lib_token(JWT_ALG_RS256, r.priv, r.priv_len, c);
    expect_refused(t, "Algorithm not allowed");
    free(t);
    free(c);
    keypair_free(&k);
    keypair_free(&r);
}

Test(jwt_hs256, asymmetric_tokens_refused, .fini = fini) {
    keypair k = genkey("rsa", 2048);
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *c = claims(3600, "");
    char *t = lib_token(JWT_ALG_RS256, k.priv, k.priv_len, c);
    expect_refused(t, "Algorithm not allowed");
    free(t);
    free(c);
    keypair_free(&k);
}

Test(jwt_keys, construction_errors, .fini = fini) {
    keypair rsa = genkey("rsa", 2048), ec = genkey("ec", 0), small = genkey("small", 1024);
    refused((jcfg){.alg = "RS256", .key_file = ec.pub_path}, "not an RSA key");
    refused((jcfg){.alg = "ES256", .key_file = rsa.pub_path}, "not an EC key");
    refused((jcfg){.alg = "RS256", .key_file = small.pub_path}, "2048");
    char path[160];
    snprintf(path, sizeof(path), "%s/private.pem", tmp());
    write_file(path, rsa.priv, rsa.priv_len);
    refused((jcfg){.alg = "RS256", .key_file = path}, "not a PEM public key");
    snprintf(path, sizeof(path), "%s/empty.pem", tmp());
    write_file(path, "", 0);
    refused((jcfg){.alg = "RS256", .key_file = path}, "empty");
    snprintf(path, sizeof(path), "%s/garbage.pem", tmp());
    write_file(path, "hello\n", 6);
    refused((jcfg){.alg = "ES256", .key_file = path}, "not a PEM public key");
    refused((jcfg){.alg = "RS256", .key_file = "/nonexistent/key.pem"}, "/nonexistent/key.pem");
    refused((jcfg){.alg = "RS256"}, "jwt_public_key_file");
    refused((jcfg){.alg = "ES256", .key_file = ""}, "jwt_public_key_file");
    refused((jcfg){.alg = "HS256"}, "jwt_secret");
    refused((jcfg){.alg = "HS256", .secret = ""}, "jwt_secret");
    refused((jcfg){.alg = "PS256", .secret = SECRET}, "jwt_algorithm");
    refused((jcfg){.alg = "none", .secret = SECRET}, "jwt_algorithm");
    /* a secret does not stand in for a key file */
    refused((jcfg){.alg = "RS256", .secret = SECRET}, "jwt_public_key_file");
    keypair_free(&rsa);
    keypair_free(&ec);
    keypair_free(&small);
}

/* ---------------------------------------------------------------- time claims */

static char *hs_exp(long exp_delta, const char *more) {
    char *c = claims(exp_delta, more);
    char *t = lib_token(JWT_ALG_HS256, SECRET, strlen(SECRET), c);
    free(c);
    return t;
}

Test(jwt_time, exp, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs_exp(-100, "");
    expect_refused(t, "Token expired");
    free(t);
    t = hs_exp(-10, ""); /* within the leeway */
    expect_user(t, "alice", "Alice");
    free(t);
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 0});
    t = hs_exp(-5, "");
    expect_refused(t, "Token expired");
    free(t);
    /* leeway is bounded to 300 s */
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 100000});
    t = hs_exp(-250, "");
    expect_user(t, "alice", "Alice");
    free(t);
    t = hs_exp(-400, "");
    expect_refused(t, "Token expired");
    free(t);
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = -50});
    t = hs_exp(-5, "");
    expect_refused(t, "Token expired");
    free(t);
}

Test(jwt_time, exp_required_and_numeric, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = lib_token(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"alice\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = lib_token(JWT_ALG_HS256, SECRET, strlen(SECRET),
                  "{\"sub\":\"alice\",\"exp\":\"9999999999\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = lib_token(JWT_ALG_HS256, SECRET, strlen(SECRET),
                  "{\"sub\":\"alice\",\"exp\":9999999999.5}");
    expect_user(t, "alice", "alice");
    free(t);
    t = lib_token(JWT_ALG_HS256, SECRET, strlen(SECRET), "{\"sub\":\"alice\",\"exp\":1e300}");
    expect_user(t, "alice", "alice");
    free(t);
}

Test(jwt_time, nbf, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char more[64];
    snprintf(more, sizeof(more), ",\"nbf\":%ld", (long)time(NULL) + 120);
    char *t = hs_exp(3600, more);
    expect_refused(t, "Token not yet valid");
    free(t);
    snprintf(more, sizeof(more), ",\"nbf\":%ld", (long)time(NULL) + 10);
    t = hs_exp(3600, more);
    expect_user(t, "alice", "Alice");
    free(t);
    snprintf(more, sizeof(more), ",\"nbf\":%ld", (long)time(NULL) - 10);
    t = hs_exp(3600, more);
    expect_user(t, "alice", "Alice");
    free(t);
    t = hs_exp(3600, ",\"nbf\":\"soon\"");
    expect_refused(t, "Invalid token");
    free(t);
}

/* ---------------------------------------------------------------- iss / aud */

Test(jwt_claims, issuer, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .issuer = "https://idp.example", .leeway = 30});
    char *t = hs(",\"iss\":\"https://idp.example\"");
    expect_user(t, "alice", "Alice");
    free(t);
    t = hs(",\"iss\":\"https://evil.example\"");
    expect_refused(t, "Wrong issuer");
    free(t);
    t = hs("");
    expect_refused(t, "Wrong issuer");
    free(t);
    t = hs(",\"iss\":[\"https://idp.example\"]");
    expect_refused(t, "Wrong issuer");
    free(t);
}

Test(jwt_claims, audience, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .audience = "wsgate", .leeway = 30});
    char *t = hs(",\"aud\":\"wsgate\"");
    expect_user(t, "alice", "Alice");
    free(t);
    t = hs(",\"aud\":[\"other\",\"wsgate\"]");
    expect_user(t, "alice", "Alice");
    free(t);
    t = hs(",\"aud\":\"other\"");
    expect_refused(t, "Wrong audience");
    free(t);
    t = hs(",\"aud\":[\"other\",\"wsgate2\",7]");
    expect_refused(t, "Wrong audience");
    free(t);
    t = hs(",\"aud\":[]");
    expect_refused(t, "Wrong audience");
    free(t);
    t = hs("");
    expect_refused(t, "Wrong audience");
    free(t);
    t = hs(",\"aud\":{\"wsgate\":1}");
    expect_refused(t, "Wrong audience");
    free(t);
}

Test(jwt_claims, not_checked_when_unset, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .issuer = "", .audience = "", .leeway = 30});
    char *t = hs(",\"iss\":\"anyone\",\"aud\":\"anything\"");
    expect_user(t, "alice", "Alice");
    free(t);
}

/* ---------------------------------------------------------------- user claims */

static char *hs_claims(const char *json) {
    return lib_token(JWT_ALG_HS256, SECRET, strlen(SECRET), json);
}

Test(jwt_claims, user_id, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs_claims("{\"exp\":9999999999,\"name\":\"Alice\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"al\\u0001ice\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"al\\nice\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"al\\u007fice\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":[\"alice\"]}");
    expect_refused(t, "Invalid token");
    free(t);
    char big[400];
    snprintf(big, sizeof(big), "{\"exp\":9999999999,\"sub\":\"%0129d\"}", 0);
    t = hs_claims(big);
    expect_refused(t, "Invalid token");
    free(t);
    /* a NUL escape in a claim */
    char *c = claims(3600, "");
    t = hmac_token("{\"alg\":\"HS256\"}", "{\"exp\":9999999999,\"sub\":\"a\\u0000b\"}", SECRET,
                   strlen(SECRET));
    expect_refused(t, "Invalid token");
    free(t);
    free(c);
    /* numbers are written in decimal; UTF-8 is kept */
    t = hs_claims("{\"exp\":9999999999,\"sub\":42}");
    expect_user(t, "42", "42");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"j\\u00fcrgen\"}");
    expect_user(t, "j\xc3\xbcrgen", "j\xc3\xbcrgen");
    free(t);
}

Test(jwt_claims, username, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs_claims("{\"exp\":9999999999,\"sub\":\"u1\"}");
    expect_user(t, "u1", "u1");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"u1\",\"name\":null}");
    expect_user(t, "u1", "u1");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"u1\",\"name\":\"bad\\u0007name\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"u1\",\"name\":5}");
    expect_refused(t, "Invalid token");
    free(t);
}

Test(jwt_claims, custom_claim_names, .fini = fini) {
    use((jcfg){.alg = "HS256",
               .secret = SECRET,
               .user_claim = "uid",
               .name_claim = "display_name",
               .leeway = 30});
    char *t = hs_claims("{\"exp\":9999999999,\"sub\":\"ignored\",\"name\":\"Ignored\","
                        "\"uid\":\"u-7\",\"display_name\":\"Seven\"}");
    expect_user(t, "u-7", "Seven");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"sub\":\"alice\",\"name\":\"Alice\"}");
    expect_refused(t, "Invalid token");
    free(t);
    t = hs_claims("{\"exp\":9999999999,\"uid\":\"u-7\",\"name\":\"Ignored\"}");
    expect_user(t, "u-7", "u-7");
    free(t);
}

/* ---------------------------------------------------------------- token locations */

Test(jwt_location, missing, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    auth_identity id;
    const char *msg;
    cr_assert_eq(run("/staging?userId=alice", NULL, &id, &msg), 401);
    cr_assert_str_eq(msg, "Missing token");
    auth_identity_clear(&id);
    cr_assert_eq(run("/staging?token=", NULL, &id, &msg), 401);
    cr_assert_str_eq(msg, "Missing token");
    auth_identity_clear(&id);
    cr_assert_eq(run("/staging?token=%zz", NULL, &id, &msg), 401);
    cr_assert_str_eq(msg, "Invalid token");
    auth_identity_clear(&id);
    cr_assert_eq(run("/staging", "Authorization: Bearer \r\n", &id, &msg), 401);
    cr_assert_str_eq(msg, "Missing token");
    auth_identity_clear(&id);
    /* another scheme is not a bearer token */
    cr_assert_eq(run("/staging", "Authorization: Basic YWxpY2U6eA==\r\n", &id, &msg), 401);
    cr_assert_str_eq(msg, "Missing token");
    auth_identity_clear(&id);
    cr_assert_eq(run("/staging", "Authorization: Bearerx\r\n", &id, &msg), 401);
    cr_assert_str_eq(msg, "Missing token");
    auth_identity_clear(&id);
    /* "bearer" offered without a token after it */
    cr_assert_eq(run("/staging", "Sec-WebSocket-Protocol: chat, bearer\r\n", &id, &msg), 401);
    cr_assert_str_eq(msg, "Missing token");
    cr_assert_null(id.subprotocol);
    auth_identity_clear(&id);
}

Test(jwt_location, authorization_header, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs("");
    const char *forms[] = {"Authorization: Bearer %s\r\n", "Authorization: bearer   %s  \r\n",
                           "authorization: BEARER\t%s\r\n"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(*forms); i++) {
        char *h = NULL;
        cr_assert_gt(asprintf(&h, forms[i], t), 0);
        auth_identity id;
        const char *msg;
        /* the header wins over a bad query token */
        cr_assert_eq(run("/staging?roomId=r1&userId=mallory&token=garbage", h, &id, &msg), 0,
                     "%s: %s", forms[i], msg);
        cr_assert_str_eq(id.user_id, "alice");
        cr_assert_str_eq(id.username, "Alice");
        cr_assert_str_eq(id.room_id, "r1");
        cr_assert_null(id.subprotocol);
        auth_identity_clear(&id);
        free(h);
    }
    char *h = NULL;
    cr_assert_gt(asprintf(&h, "Authorization: Bearer %s.x\r\n", t), 0);
    auth_identity id;
    const char *msg;
    cr_assert_eq(run("/staging", h, &id, &msg), 401);
    cr_assert_str_eq(msg, "Invalid token");
    auth_identity_clear(&id);
    free(h);
    free(t);
}

Test(jwt_location, subprotocol, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs("");
    const char *forms[] = {"Sec-WebSocket-Protocol: bearer, %s\r\n",
                           "Sec-WebSocket-Protocol: chat,bearer,%s\r\n",
                           "Sec-WebSocket-Protocol: bearer\r\nSec-WebSocket-Protocol: %s\r\n",
                           "Sec-WebSocket-Protocol: , bearer ,  %s , v2\r\n"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(*forms); i++) {
        char *h = NULL;
        cr_assert_gt(asprintf(&h, forms[i], t), 0);
        auth_identity id;
        const char *msg;
        cr_assert_eq(run("/staging?roomId=r2", h, &id, &msg), 0, "%s: %s", forms[i], msg);
        cr_assert_str_eq(id.user_id, "alice");
        cr_assert_str_eq(id.room_id, "r2");
        cr_assert_not_null(id.subprotocol);
        cr_assert_str_eq(id.subprotocol, "bearer");
        auth_identity_clear(&id);
        free(h);
    }
    /* an invalid token there: refused, no subprotocol */
    auth_identity id;
    const char *msg;
    cr_assert_eq(run("/staging", "Sec-WebSocket-Protocol: bearer, abc.def.ghi\r\n", &id, &msg),
                 401);
    cr_assert_str_eq(msg, "Invalid token");
    cr_assert_null(id.subprotocol);
    auth_identity_clear(&id);
    /* "Bearer" is not "bearer": the client would not accept that answer */
    char *h = NULL;
    cr_assert_gt(asprintf(&h, "Sec-WebSocket-Protocol: Bearer, %s\r\n", t), 0);
    cr_assert_eq(run("/staging", h, &id, &msg), 401);
    cr_assert_str_eq(msg, "Missing token");
    auth_identity_clear(&id);
    free(h);
    free(t);
}

Test(jwt_location, query, .fini = fini) {
    use((jcfg){.alg = "HS256", .secret = SECRET, .leeway = 30});
    char *t = hs("");
    expect_user(t, "alice", "Alice");
    free(t);
}

/* ---------------------------------------------------------------- NULL / empty configuration */

Test(jwt_config, null_values, .fini = fini) {
    wsg_error err;
    config cfg;
    memset(&cfg, 0, sizeof(cfg));
    /* nothing at all: HS256 without a secret */
    cr_assert_null(auth_jwt_new(&cfg, &err));
    cr_assert_eq(err.code, WSG_E_CONFIG_VALUE);
    cr_assert(strstr(err.message, "jwt_secret"), "%s", err.message);
    /* only the secret: HS256, sub/name, no iss/aud, leeway 0 */
    use((jcfg){.secret = SECRET});
    char *t = hs(",\"iss\":\"x\",\"aud\":\"y\"");
    expect_user(t, "alice", "Alice");
    free(t);
    t = hs_exp(-2, "");
    expect_refused(t, "Token expired");
    free(t);
    /* empty strings behave as NULL */
    use((jcfg){.alg = "",
               .secret = SECRET,
               .key_file = "",
               .issuer = "",
               .audience = "",
               .user_claim = "",
               .name_claim = "",
               .leeway = 30});
    t = hs("");
    expect_user(t, "alice", "Alice");
    free(t);
}
