/* Unit tests for the connection identity and the demo authorizer
 * (src/app/auth.c). Requests are built by feeding request text to
 * http_request_feed, as the server does. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/auth.h"
#include "http/request.h"

static http_request REQ;
static bool loaded;

/* Parse "GET /staging?<query> HTTP/1.1" into REQ (freed by fini). */
static void load(const char *target) {
    char *text = NULL;
    cr_assert_gt(asprintf(&text,
                          "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                          target),
                 0);
    if (loaded) http_request_free(&REQ);
    http_request_init(&REQ, 8192, 100, 0);
    loaded = true;
    ssize_t n = http_request_feed(&REQ, text, strlen(text));
    cr_assert_eq(n, (ssize_t)strlen(text), "status %d for %s", REQ.error_status, target);
    cr_assert(REQ.complete);
    free(text);
}

static void fini(void) {
    if (loaded) http_request_free(&REQ);
    loaded = false;
}

/* Identity of target; returns the HTTP status its code maps to, fills *id
 * (caller clears). */
static int identity(const char *target, auth_identity *id, const char **msg) {
    load(target);
    *msg = NULL;
    int rc = auth_identity_from_query(&REQ, id);
    cr_assert(rc == 0 || rc == WSG_E_AUTH_USER_ID || rc == WSG_E_AUTH_USERNAME ||
                  rc == WSG_E_AUTH_ROOM_ID,
              "%s: %d", target, rc);
    int st = auth_http_status(rc, msg);
    if (st == 0) {
        cr_assert_null(*msg);
        cr_assert_not_null(id->user_id);
        cr_assert_not_null(id->username);
        cr_assert_not_null(id->room_id);
    } else {
        cr_assert_eq(st, 400);
        cr_assert_not_null(*msg);
    }
    return st;
}

static void expect_id(const char *target, const char *user, const char *name, const char *room) {
    auth_identity id;
    const char *msg;
    cr_assert_eq(identity(target, &id, &msg), 0, "%s: %s", target, msg ? msg : "");
    cr_assert_str_eq(id.user_id, user, "%s", target);
    cr_assert_str_eq(id.username, name, "%s", target);
    cr_assert_str_eq(id.room_id, room, "%s", target);
    auth_identity_clear(&id);
    cr_assert_null(id.user_id);
    cr_assert_null(id.username);
    cr_assert_null(id.room_id);
}

static void expect_400(const char *target, const char *message) {
    auth_identity id;
    const char *msg;
    cr_assert_eq(identity(target, &id, &msg), 400, "%s accepted", target);
    cr_assert_str_eq(msg, message, "%s", target);
    auth_identity_clear(&id);
}

/* ---- identity ---- */

Test(auth_identity, defaults, .fini = fini) {
    expect_id("/staging", "anonymous", "anonymous", "general");
    expect_id("/staging?", "anonymous", "anonymous", "general");
    expect_id("/staging?other=1&token=valid_x", "anonymous", "anonymous", "general");
    /* username defaults to the userId. */
    expect_id("/staging?userId=testuser", "testuser", "testuser", "general");
    expect_id("/staging?roomId=developers", "anonymous", "anonymous", "developers");
    /* Empty values take the defaults too. */
    expect_id("/staging?userId=&username=&roomId=", "anonymous", "anonymous", "general");
    expect_id("/staging?userId&roomId", "anonymous", "anonymous", "general");
}

Test(auth_identity, the_seed_example, .fini = fini) {
    expect_id("/staging?userId=testuser&username=TestUser&roomId=general&token=valid_test_token",
              "testuser", "TestUser", "general");
}

Test(auth_identity, url_encoded_values, .fini = fini) {
    expect_id("/staging?userId=J%C3%BCrgen&username=John+Q%20Public&roomId=dev%2Fops%3F%26",
              "J\xc3\xbcrgen", "John Q Public", "dev/ops?&");
    expect_id("/staging?username=%2b%2B", "anonymous", "++", "general");
    /* Names are matched exactly (no decoding, case-sensitive). */
    expect_id("/staging?userid=x&UserId=y&user%49d=z", "anonymous", "anonymous", "general");
    /* The first occurrence wins. */
    expect_id("/staging?roomId=a&roomId=b", "anonymous", "anonymous", "a");
}

Test(auth_identity, invalid_ids_400, .fini = fini) {
    expect_400("/staging?userId=a%01b", "Invalid userId");
    expect_400("/staging?userId=%0A", "Invalid userId");
    expect_400("/staging?userId=ok&username=tab%09", "Invalid username");
    expect_400("/staging?roomId=del%7F", "Invalid roomId");
    expect_400("/staging?roomId=%1F", "Invalid roomId");
    /* A username given as only the default of a bad userId fails on the
     * userId first. */
    expect_400("/staging?userId=%1B", "Invalid userId");
}

Test(auth_identity, id_length_limit, .fini = fini) {
    char long_id[200], target[600];
    memset(long_id, 'a', sizeof long_id);
    long_id[128] = 0;
    snprintf(target, sizeof target, "/staging?userId=%s&roomId=%s", long_id, long_id);
    expect_id(target, long_id, long_id, long_id);

    long_id[128] = 'a';
    long_id[129] = 0;
    snprintf(target, sizeof target, "/staging?userId=%s", long_id);
    expect_400(target, "Invalid userId");
    snprintf(target, sizeof target, "/staging?username=%s", long_id);
    expect_400(target, "Invalid username");
    snprintf(target, sizeof target, "/staging?roomId=%s", long_id);
    expect_400(target, "Invalid roomId");

    /* The limit is in decoded bytes: 43 "%C3%A9" are 86 bytes, fine; 65
     * are 130, too long. */
    char enc[600] = "/staging?userId=", dec[200] = "";
    for (int i = 0; i < 43; i++) {
        strcat(enc, "%C3%A9");
        strcat(dec, "\xc3\xa9");
    }
    expect_id(enc, dec, dec, "general");
    for (int i = 43; i < 65; i++) strcat(enc, "%C3%A9");
    expect_400(enc, "Invalid userId");
}

Test(auth_identity, badly_encoded_values_400, .fini = fini) {
    /* A value that is present but cannot be decoded is refused, not
     * silently replaced by the default. */
    expect_400("/staging?userId=%zz", "Invalid userId");
    expect_400("/staging?userId=a%00b", "Invalid userId");
    expect_400("/staging?userId=ok&username=%4", "Invalid username");
    expect_400("/staging?roomId=%", "Invalid roomId");
    /* A bad escape in a parameter we do not read does not matter. */
    expect_id("/staging?x=%zz&userId=u", "u", "u", "general");
}

Test(auth_identity, valid_id_function) {
    cr_assert(auth_valid_id("a"));
    cr_assert(auth_valid_id("user name with spaces"));
    cr_assert(auth_valid_id("\xc3\xa9"));
    /* Regression: ids go into JSON, so they must be UTF-8 (?roomId=%C0%80
     * aborted the server). */
    cr_assert(!auth_valid_id("\xc3\xa9\xff"));
    cr_assert(!auth_valid_id("\xc0\x80"));
    cr_assert(!auth_valid_id("\xed\xa0\x80"));
    cr_assert(!auth_valid_id(""));
    cr_assert(!auth_valid_id("a\x01"));
    cr_assert(!auth_valid_id("\x7f"));
    cr_assert(!auth_valid_id("tab\there"));
    char s[130];
    memset(s, 'x', sizeof s);
    s[128] = 0;
    cr_assert(auth_valid_id(s));
    s[128] = 'x';
    s[129] = 0;
    cr_assert(!auth_valid_id(s));
}

/* ---- demo authorizer ---- */

static int demo(const char *target, const char **msg) {
    load(target);
    authorizer *a = auth_demo();
    cr_assert_not_null(a);
    cr_assert_str_eq(a->name, "demo");
    auth_identity id;
    cr_assert_eq(auth_identity_from_query(&REQ, &id), 0);
    *msg = NULL;
    int rc = a->authorize(a, &REQ, &id);
    cr_assert(rc == 0 || rc == WSG_E_AUTH_DENIED, "%d", rc);
    int st = auth_http_status(rc, msg);
    /* The demo authorizer never changes who the connection is. */
    auth_identity want;
    cr_assert_eq(auth_identity_from_query(&REQ, &want), 0);
    cr_assert_str_eq(id.user_id, want.user_id);
    cr_assert_str_eq(id.username, want.username);
    cr_assert_str_eq(id.room_id, want.room_id);
    auth_identity_clear(&want);
    auth_identity_clear(&id);
    if (st == 0) cr_assert_null(*msg);
    else cr_assert_not_null(*msg);
    return st;
}

Test(auth_demo, tokens, .fini = fini) {
    const char *msg;
    cr_assert_eq(demo("/staging", &msg), 0);
    cr_assert_eq(demo("/staging?userId=u", &msg), 0);
    cr_assert_eq(demo("/staging?token=valid_x", &msg), 0);
    cr_assert_eq(demo("/staging?token=valid_test_token&userId=testuser", &msg), 0);
    cr_assert_eq(demo("/staging?token=valid%5Fx", &msg), 0); /* decoded first */
    cr_assert_eq(demo("/staging?token=valid_", &msg), 0);
    cr_assert_eq(demo("/staging?token=", &msg), 0); /* empty: as if absent, like the seed */

    cr_assert_eq(demo("/staging?token=bad", &msg), 401);
    cr_assert_str_eq(msg, "Unauthorized");
    cr_assert_eq(demo("/staging?token=valid", &msg), 401);
    cr_assert_eq(demo("/staging?token=VALID_x", &msg), 401);
    cr_assert_eq(demo("/staging?token=xvalid_x", &msg), 401);
    cr_assert_eq(demo("/staging?token=valid-x", &msg), 401);
    /* A token that cannot be decoded is a bad token, not a missing one. */
    cr_assert_eq(demo("/staging?token=bad%zz", &msg), 401);
    cr_assert_eq(demo("/staging?token=valid_%00", &msg), 401);
}

Test(auth_demo, destroy_is_a_noop) {
    authorizer *a = auth_demo();
    a->destroy(a);
    cr_assert_eq(auth_demo(), a);
    cr_assert_not_null(a->authorize);
}
