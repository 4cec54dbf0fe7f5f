#include "app/auth.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/fields.h"
#include "ws/utf8.h"

#define AUTH_MAX_ID 128

int auth_valid_id(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > AUTH_MAX_ID) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 0;
    /* Bug fix: ids go into JSON (welcome, presence, listings), which must be
     * UTF-8: ?roomId=%C0%80 made json_pack fail and the server abort. */
    return ws_utf8_valid((const uint8_t *)s, n);
}

void auth_identity_clear(auth_identity *id) {
    free(id->user_id);
    free(id->username);
    free(id->room_id);
    free(id->subprotocol);
    memset(id, 0, sizeof(*id));
}

/* True when parameter `name` is in the query at all: http_query_param()
 * answers false both for an absent name and for a badly encoded value. */
static bool query_has(const char *q, size_t qlen, const char *name) {
    size_t nl = strlen(name), fl;
    const char *p = q, *f;
    while (fields_next(&p, q + qlen, '&', &f, &fl)) {
        const char *eq = memchr(f, '=', fl);
        size_t kl = eq ? (size_t)(eq - f) : fl;
        if (kl == nl && memcmp(f, name, nl) == 0) return true;
    }
    return false;
}

/* Set *out to the decoded, non-empty value of `name` (left NULL when absent
 * or empty). Returns false when the value is present but badly encoded. */
static bool query_value(const char *q, size_t qlen, const char *name, char **out) {
    char *v = NULL;
    if (http_query_param(q, qlen, name, &v)) {
        if (*v) *out = v;
        else free(v);
        return true;
    }
    return !query_has(q, qlen, name);
}

int auth_identity_from_query(const http_request *req, auth_identity *id) {
    size_t qlen;
    const char *q = http_request_query(req, &qlen);
    memset(id, 0, sizeof(*id));
    bool user_ok = query_value(q, qlen, "userId", &id->user_id);
    bool name_ok = query_value(q, qlen, "username", &id->username);
    bool room_ok = query_value(q, qlen, "roomId", &id->room_id);
    if (!id->user_id) id->user_id = xstrdup("anonymous");
    if (!id->username) id->username = xstrdup(id->user_id);
    if (!id->room_id) id->room_id = xstrdup("general");
    if (!user_ok || !auth_valid_id(id->user_id)) {
        return WSG_E_AUTH_USER_ID;
    }
    if (!name_ok || !auth_valid_id(id->username)) {
        return WSG_E_AUTH_USERNAME;
    }
    if (!room_ok || !auth_valid_id(id->room_id)) {
        return WSG_E_AUTH_ROOM_ID;
    }
    return 0;
}

static int demo_authorize(const authorizer *self, const http_request *req, auth_identity *id) {
    size_t qlen;
    const char *q = http_request_query(req, &qlen);
    char *token = NULL;
    int rc = 0;
    /* The seed's connect handler (`if token and not token.startswith(...)`):
     * no token or an empty one is fine (demo), a token must
     * start with "valid_". */
    bool present = http_query_param(q, qlen, "token", &token) || query_has(q, qlen, "token");
    if (present &&
        (!token || (*token && strncmp(token, "valid_", 6) != 0))) { /* !token: badly encoded */
        rc = WSG_E_AUTH_DENIED;
    }
    free(token);
    return rc;
}

static void demo_destroy(authorizer *self) {}

static authorizer demo = {
    .name = "demo",
    .authorize = demo_authorize,
    .destroy = demo_destroy,
};

authorizer *auth_demo(void) { return &demo; }

int auth_http_status(int rc, const char **message) {
    if (rc >= 0) return 0;
    *message = wsg_strerror(rc);
    int status = wsg_err_http_status(rc);
    return status ? status : 500;
}
