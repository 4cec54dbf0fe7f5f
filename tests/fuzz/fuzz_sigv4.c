/* libFuzzer target for SigV4 verification and signing (src/http/sigv4.c).
 *
 * The input is what a client sends: it is parsed as an HTTP request
 * (src/http/request.c) and, when complete, verified with fixed credentials
 * (AKIDTEST / secretTEST, service execute-api) at the time the seed corpus
 * was signed (tests/unit/http/gen_sigv4_vectors.py), so mutations of valid
 * requests reach every check. Invariants: verify gives 0 or -1 with a
 * reason exactly when it fails, the same answer twice; the canonical query
 * is a fixed point of itself; and a request re-signed by sigv4_sign with
 * the input's method, path, query and body always verifies. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/request.h"
#include "common/error.h"
#include "http/sigv4.h"

#include "fuzz_require.h"

#define NOW  ((time_t)1709618828) /* 2024-03-05T06:07:08Z */
#define SKEW 900

static const sigv4_credentials CREDS[] = {
    {"AKIDOTHER", "other"}, {"AKIDTEST", "secretTEST"}, {"AKIDTEST", "rotatedTEST"}};

static void parse(http_request *r, const char *in, size_t n) {
    http_request_init(r, 8192, 64, 65536);
    if (n) http_request_feed(r, in, n);
}

static void check_canonical(const http_request *r) {
    size_t pl, ql;
    const char *p = http_request_path(r, &pl);
    const char *q = http_request_query(r, &ql);
    char *u = sigv4_canonical_uri(p, pl);
    /* Only a path that is not absolute can normalise to nothing ("x/.."),
     * as in botocore. */
    if (pl == 0 || p[0] == '/') require(u[0] == '/');
    for (const char *c = u; *c; c++) require(*c > ' ' && *c < 0x7f);
    free(u);
    char *cq = sigv4_canonical_query(q, ql);
    char *again = sigv4_canonical_query(cq, strlen(cq));
    require(strcmp(cq, again) == 0);
    free(again);
    free(cq);
}

/* Re-sign the request's own target and body, send it through the parser
 * again and require it to verify. */
static void check_round_trip(const http_request *r) {
    const char *m = http_request_method(r);
    if (strcmp(m, "GET") && strcmp(m, "POST") && strcmp(m, "PUT") && strcmp(m, "DELETE")) return;
    size_t pl, ql;
    const char *p = http_request_path(r, &pl);
    const char *q = http_request_query(r, &ql);
    if (pl == 0 || p[0] != '/') return;
    char *path = strndup(p, pl), *query = strndup(q, ql);
    require(path && query);
    sigv4_header h[] = {{"Host", "fuzz.example"}, {"X-Tag", "  a\t b  "}};
    sigv4_request sr = {m, path, query, h, 2, r->body, r->body_len};
    char date[SIGV4_AMZ_DATE_LEN + 1];
    char *auth = sigv4_sign(&sr, &CREDS[1], "us-west-2", "execute-api", NOW - 5, date);
    require(auth != NULL);
    size_t cap = 512 + pl + ql + strlen(auth) + r->body_len;
    char *w = malloc(cap);
    require(w);
    int n = snprintf(w, cap,
                     "%s %s%s%s HTTP/1.1\r\nHost: fuzz.example\r\nX-Tag: a b\r\n"
                     "X-Amz-Date: %s\r\nAuthorization: %s\r\nContent-Length: %zu\r\n\r\n",
                     m, path, ql ? "?" : "", query, date, auth, r->body_len);
    require(n > 0 && (size_t)n + r->body_len < cap);
    if (r->body_len) memcpy(w + n, r->body, r->body_len);
    http_request r2;
    http_request_init(&r2, 1 << 20, 64, 1 << 20);
    ssize_t got = http_request_feed(&r2, w, (size_t)n + r->body_len);
    require(got == (ssize_t)((size_t)n + r->body_len) && r2.complete);
    int rc = sigv4_verify(&r2, CREDS, 3, "execute-api", NOW, SKEW);
    if (rc != 0) fprintf(stderr, "re-signed request refused: %s\n%.*s\n", wsg_strerror(rc), n, w);
    require(rc == 0);
    http_request_free(&r2);
    free(w);
    free(auth);
    free(path);
    free(query);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    http_request r;
    parse(&r, (const char *)data, size);
    if (r.complete) {
        int rc = sigv4_verify(&r, CREDS, 3, "execute-api", NOW, SKEW);
        require(rc <= 0);
        require(rc == 0 || strcmp(wsg_strerror(rc), "unknown error") != 0);
        require(rc == 0 || wsg_err_http_status(rc) == 403);
        require(sigv4_verify(&r, CREDS, 3, "execute-api", NOW, SKEW) == rc);
        /* No credentials, no success. */
        require(sigv4_verify(&r, NULL, 0, "execute-api", NOW, SKEW) < 0);
        check_canonical(&r);
        check_round_trip(&r);
    }
    http_request_free(&r);
    return 0;
}
