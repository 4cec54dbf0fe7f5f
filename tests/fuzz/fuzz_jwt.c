/* libFuzzer target for the JWT authorizer (src/app/auth_jwt.c).
 *
 * The input is a token as a client sends it: percent-encoded into the
 * `token` query parameter, as `Authorization: Bearer <input>` and as
 * `Sec-WebSocket-Protocol: bearer, <input>` (the last two when the input
 * fits in a header line). Each request goes through the HTTP parser and
 * then through an HS256 authorizer (secret below, issuer and audience
 * checked) and an RS256 authorizer (the public key below; the corpus's
 * RS256 token was signed with its throwaway private key, not kept).
 * Invariants: the answer is 0 or 401; a 401 carries one of the static
 * messages; an accepted identity has valid ids, and the subprotocol is
 * "bearer" exactly when the token came from Sec-WebSocket-Protocol. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/auth.h"
#include "http/request.h"

#include "fuzz_require.h"

#define SECRET "fuzz-secret-0123456789abcdef012345"

static const char RSA_PUBLIC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAjQ9HHCKF85NOch/Eb1qJ\n"
    "+2wxxZlANUtGojVvUehei0kQ0kNXkNBMSA/4d3Obv7A6rvinLpLp8VQAzCuTCAiR\n"
    "Jy3CjVWBykVWkJhYix6OL/Kr+yGJN2pUXcQDqnQMYK62r0UihgWSAXQbWawlcESB\n"
    "nxnL1il72oSJES77q6AfX7SpC8Jfsb7ujIZ6Cylg5hViI6UU09YTpq5bTMYTrzij\n"
    "o3wDhZQtQcIkd4A8ACosVRuGRvLE/M/iM9KsvA14xJTpFovNLot2ZWsYSAVG2oOG\n"
    "N1414KuDpiiu8g6FsjNlYrfD0hjt0y0zV2E5NkVOrUcPohhYI8NG8Pq/tky2FOKL\n"
    "7QIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static authorizer *HS, *RS;

static void make_authorizers(void) {
    wsg_error err;
    config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.auth_mode = (char *)"jwt";
    cfg.jwt_algorithm = (char *)"HS256";
    cfg.jwt_secret = (char *)SECRET;
    cfg.jwt_issuer = (char *)"fuzz-issuer";
    cfg.jwt_audience = (char *)"fuzz-aud";
    cfg.jwt_leeway_s = 30;
    HS = auth_jwt_new(&cfg, &err);
    require(HS != NULL);

    char path[] = "/tmp/fuzz_jwt_key_XXXXXX";
    int fd = mkstemp(path);
    require(fd >= 0);
    require(write(fd, RSA_PUBLIC_PEM, sizeof(RSA_PUBLIC_PEM) - 1) ==
            (ssize_t)sizeof(RSA_PUBLIC_PEM) - 1);
    close(fd);
    memset(&cfg, 0, sizeof(cfg)); /* NULL issuer, audience and claim names */
    cfg.jwt_algorithm = (char *)"RS256";
    cfg.jwt_public_key_file = path;
    RS = auth_jwt_new(&cfg, &err);
    unlink(path);
    require(RS != NULL);
}

static void free_authorizers(void) {
    HS->destroy(HS);
    RS->destroy(RS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    make_authorizers();
    atexit(free_authorizers);
    return 0;
}

static const char *const MESSAGES[] = {"Missing token",        "Invalid token", "Token expired",
                                       "Token not yet valid",  "Wrong issuer",  "Wrong audience",
                                       "Algorithm not allowed"};

static void check(const authorizer *a, const http_request *req, bool via_protocol) {
    auth_identity id;
    if (auth_identity_from_query(req, &id) != 0) {
        auth_identity_clear(&id);
        return;
    }
    int rc = a->authorize(a, req, &id);
    const char *msg = NULL;
    int st = auth_http_status(rc, &msg);
    if (st == 0) {
        require(id.user_id && auth_valid_id(id.user_id));
        require(id.username && auth_valid_id(id.username));
        require(id.room_id && strcmp(id.room_id, "r") == 0);
        require(via_protocol ? id.subprotocol && strcmp(id.subprotocol, "bearer") == 0
                             : id.subprotocol == NULL);
    } else {
        require(st == 401);
        require(rc <= WSG_E_AUTH_TOKEN_MISSING && rc >= WSG_E_AUTH_TOKEN_AUDIENCE);
        require(msg == wsg_strerror(rc));
        bool known = false;
        for (size_t i = 0; i < sizeof(MESSAGES) / sizeof(*MESSAGES); i++)
            known |= strcmp(msg, MESSAGES[i]) == 0;
        require(known);
        require(id.subprotocol == NULL);
    }
    auth_identity_clear(&id);
}

/* Parse the request text and run both authorizers on it. */
static void run(const char *text, size_t n, bool via_protocol) {
    http_request req;
    http_request_init(&req, 65536, 64, 0);
    if (http_request_feed(&req, text, n) >= 0 && req.complete) {
        check(HS, &req, via_protocol);
        check(RS, &req, via_protocol);
    }
    http_request_free(&req);
}

static const char HEAD[] = "GET /staging?roomId=r&userId=q HTTP/1.1\r\nHost: x\r\n";
static const char TAIL[] = "\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 16384) return 0;
    char *buf = malloc(size * 3 + 256);
    /* 1: the query parameter, every byte but the unreserved ones escaped */
    size_t n = (size_t)sprintf(buf, "GET /staging?roomId=r&userId=q&token=");
    for (size_t i = 0; i < size; i++) {
        unsigned char c = data[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~')
            buf[n++] = (char)c;
        else n += (size_t)sprintf(buf + n, "%%%02X", c);
    }
    n += (size_t)sprintf(buf + n, " HTTP/1.1\r\nHost: x\r\n\r\n");
    run(buf, n, false);
    free(buf);

    /* 2 and 3: header values, when the input fits in one header line */
    if (memchr(data, '\r', size) || memchr(data, '\n', size) || memchr(data, '\0', size)) return 0;
    const char *const forms[] = {"Authorization: Bearer ", "Sec-WebSocket-Protocol: bearer, "};
    for (int f = 0; f < 2; f++) {
        /* the protocol form reads the entry up to a comma: only whole tokens */
        if (f == 1 && memchr(data, ',', size)) continue;
        size_t fl = strlen(forms[f]);
        buf = malloc(sizeof(HEAD) + fl + size + 2 + sizeof(TAIL));
        n = 0;
        memcpy(buf + n, HEAD, sizeof(HEAD) - 1);
        n += sizeof(HEAD) - 1;
        memcpy(buf + n, forms[f], fl);
        n += fl;
        memcpy(buf + n, data, size);
        n += size;
        memcpy(buf + n, "\r\n", 2);
        n += 2;
        memcpy(buf + n, TAIL, sizeof(TAIL) - 1);
        n += sizeof(TAIL) - 1;
        run(buf, n, f == 1);
        free(buf);
    }
    return 0;
}
