/* Authorizers: who may connect, decided at $connect before the 101. Each
 * authorizer implements one interface; the demo authorizer reproduces the
 * seed's handler (no token is accepted; a token not starting with "valid_"
 * is refused), and the JWT and HTTP authorizers will implement the same
 * interface. */
#ifndef WSGATE_APP_AUTH_H
#define WSGATE_APP_AUTH_H

#include <stddef.h>

#include "common/error.h"
#include "config/config.h"
#include "http/request.h"

/* Who a connection is. Strings are malloc'd and owned by the identity. */
typedef struct auth_identity {
    char *user_id;
    char *username;
    char *room_id;
    /* The Sec-WebSocket-Protocol value the 101 must answer with, when the
     * authorizer took the token from that header; NULL otherwise. */
    char *subprotocol;
} auth_identity;

typedef struct authorizer authorizer;

struct authorizer {
    const char *name;
    /* Decide on the upgrade request `req`. `id` arrives filled from the
     * query string (userId, username, roomId with their defaults); an
     * authorizer that knows better (JWT claims) replaces its fields.
     * Returns 0 to accept, or a negative WSG_E_AUTH_* code (its HTTP status
     * and text are the answer: auth_http_status). Must not keep pointers
     * into req. */
    int (*authorize)(const authorizer *self, const http_request *req, auth_identity *id);
    void (*destroy)(authorizer *self);
    void *state;
};

/* Return the demo authorizer (static storage; destroy is a no-op). */
authorizer *auth_demo(void);

/* Return a new JWT authorizer (auth_mode = "jwt") configured from cfg's jwt_*
 * variables (NULL strings are taken as ""), freed by its destroy; or NULL
 * with *err filled (WSG_E_CONFIG_VALUE and a one-line message: missing
 * secret, unreadable key file, key of the wrong type for jwt_algorithm). The algorithm is pinned: a token
 * whose header names another one is refused. The token is taken from
 * `Authorization: Bearer`, else from `Sec-WebSocket-Protocol: bearer, <jwt>`
 * (the 101 then answers `bearer`), else from the `token` query parameter;
 * its claims replace the query's userId and username. */
authorizer *auth_jwt_new(const config *cfg, wsg_error *err);

/* Fill id from the request's query string: userId (default "anonymous"),
 * username (default: the userId), roomId (default "general"). Returns 0, or
 * WSG_E_AUTH_USER_ID, _USERNAME or _ROOM_ID (HTTP 400) when that value is
 * badly encoded or not a valid id. id is filled either way (the caller
 * clears it). */
int auth_identity_from_query(const http_request *req, auth_identity *id);

/* Map an authorizer's or auth_identity_from_query's result to the $connect
 * answer: 0 for rc >= 0; else the code's HTTP status (500 if it has none)
 * with *message set to its static text. */
int auth_http_status(int rc, const char **message);

/* Free the strings of id (not id itself). */
void auth_identity_clear(auth_identity *id);

/* Return true when s is a usable user or room id: 1..128 bytes of valid
 * UTF-8, no control characters. */
int auth_valid_id(const char *s);

#endif
