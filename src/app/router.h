/* Route selection (API Gateway's route_selection_expression) and the
 * dispatch rules of PROTOCOL.md, with no I/O: a message body in, the route
 * key and the built-in route to run out. Routes are a table. */
#ifndef WSGATE_APP_ROUTER_H
#define WSGATE_APP_ROUTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* Built-in routes (the seed's message handler's types). */
typedef enum route_id {
    ROUTE_NONE = -1,
    ROUTE_CHAT = 0,
    ROUTE_JOIN_ROOM,
    ROUTE_LEAVE_ROOM,
    ROUTE_PRIVATE_MESSAGE,
    ROUTE_ROOM_LIST,
    ROUTE_TYPING_INDICATOR,
    ROUTE_HISTORY,
    ROUTE_COUNT
} route_id;

/* Return the route key of a built-in route ("chat", ...). */
const char *router_route_name(route_id id);
/* Return the built-in route named key, or ROUTE_NONE. */
route_id router_builtin(const char *key);

typedef struct router {
    char **path; /* the $request.body.a.b path, split; owned */
    size_t depth;
    char **custom; /* custom_routes, owned copies */
    size_t ncustom;
    size_t max_depth; /* JSON nesting limit (0 = jansson's own) */
} router;

/* Parse expr ("$request.body.type", nested paths allowed) and keep a copy of
 * the custom route keys. Returns 0, or a negative WSG_E_ROUTER_* code (its
 * text names the rule) with *r holding nothing. */
int router_init(router *r, const char *expr, char *const *custom, size_t ncustom);
void router_free(router *r);

typedef enum route_outcome {
    ROUTED,             /* run `route` */
    ROUTE_INVALID_JSON, /* body not a JSON object: "Invalid JSON format" */
    ROUTE_UNKNOWN,      /* no built-in handler for `selected` */
    ROUTE_TOO_DEEP,     /* JSON nested deeper than the router's limit */
    ROUTE_THROTTLED,    /* set by the caller: refused by a token bucket */
} route_outcome;

typedef struct route_match {
    route_outcome outcome;
    route_id route;
    /* The route key for logs and metrics: a custom route's own key, or
     * "$default" (points into the router or static storage). */
    const char *route_key;
    /* Index of route_key in the custom routes, -1 for $default. */
    int custom_index;
    /* The selected value as text (for "Unknown message type: KEY"); NULL
     * when the selection field is absent. Malloc'd, caller frees. */
    char *selected;
    /* The parsed body (a JSON object) when outcome is not
     * ROUTE_INVALID_JSON; caller releases it with json_decref. */
    json_t *body;
} route_match;

/* Parse `data` (len bytes) as JSON and route it. `binary` bodies always
 * take the $default route key. Fills *m; caller frees m->selected and
 * decrefs m->body. */
void router_route(const router *r, const char *data, size_t len, bool binary, route_match *m);

/* Return true when data (len bytes) nests arrays and objects no deeper than
 * max_depth, judging brackets outside strings only (a pre-check so that
 * hostile nesting never reaches the JSON parser). */
bool router_depth_ok(const char *data, size_t len, size_t max_depth);

/* Return true when key is one of the custom routes. */
bool router_is_custom(const router *r, const char *key);

#endif
