#include "app/auth.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#define AUTH_MAX_ID 128

int auth_valid_id(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > AUTH_MAX_ID) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 0;
    return 1;
}

void auth_identity_clear(auth_identity *id) {
    free(id->user_id);
    free(id->username);
    free(id->room_id);
    memset(id, 0, sizeof(*id));
}

int auth_identity_from_query(const http_request *req, auth_identity *id, const char **message) {
    size_t qlen;
    const char *q = http_request_query(req, &qlen);
    char *v = NULL;
    memset(id, 0, sizeof(*id));
    if (http_query_param(q, qlen, "userId", &v) && *v) id->user_id = v;
    else free(v);
    v = NULL;
    if (http_query_param(q, qlen, "username", &v) && *v) id->username = v;
    else free(v);
    v = NULL;
    if (http_query_param(q, qlen, "roomId", &v) && *v) id->room_id = v;
    else free(v);
    if (!id->user_id) id->user_id = xstrdup("anonymous");
    if (!id->username) id->username = xstrdup(id->user_id);
    if (!id->room_id) id->room_id = xstrdup("general");
    if (!auth_valid_id(id->user_id)) {
        *message = "Invalid userId";
        return 400;
    }
    if (!auth_valid_id(id->username)) {
        *message = "Invalid username";
        return 400;
    }
    if (!auth_valid_id(id->room_id)) {
        *message = "Invalid roomId";
        return 400;
    }
    return 0;
}

static int demo_authorize(const authorizer *self, const http_request *req, auth_identity *id,
                          const char **message) {
    size_t qlen;
    const char *q = http_request_query(req, &qlen);
    char *token = NULL;
    int status = 0;
    /* The seed's connect handler: no token is fine (demo), a token must
     * start with "valid_". */
    if (http_query_param(q, qlen, "token", &token) && strncmp(token, "valid_", 6) != 0) {
        *message = "Unauthorized";
        status = 401;
    }
    free(token);
    return status;
}

static void demo_destroy(authorizer *self) {}

static authorizer demo = {
    .name = "demo",
    .authorize = demo_authorize,
    .destroy = demo_destroy,
};

authorizer *auth_demo(void) { return &demo; }
