/* libFuzzer target for route selection (src/app/router.c).
 *
 * The input is a message body. It is routed as text and as binary with the
 * default expression ($request.body.type, with custom routes) and with a
 * nested one ($request.body.a.b); every result must be consistent with the
 * dispatch rules of PROTOCOL.md "Route selection" and with what jansson
 * itself makes of the bytes, and everything is freed. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/router.h"

#include "fuzz_require.h"

static router by_type, nested;
static char *custom[] = {"chat", "my_route", "join_room", "1"};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (router_init(&by_type, "$request.body.type", custom, 4) != 0 ||
        router_init(&nested, "$request.body.a.b", NULL, 0) != 0) {
        fprintf(stderr, "router_init failed\n");
        abort();
    }
    return 0;
}

/* The value the expression selects in obj, or NULL. */
static json_t *select_path(const router *r, json_t *obj) {
    json_t *v = obj;
    for (size_t i = 0; i < r->depth && v; i++)
        v = json_is_object(v) ? json_object_get(v, r->path[i]) : NULL;
    return v;
}

static void check(const router *r, const char *data, size_t size, bool binary) {
    route_match m;
    router_route(r, data, size, binary, &m);
    require(m.route_key != NULL);
    json_error_t jerr;
    json_t *ref = json_loadb(data, size, JSON_REJECT_DUPLICATES, &jerr);
    bool is_obj = ref && json_is_object(ref);
    switch (m.outcome) {
    case ROUTE_INVALID_JSON:
        require(!is_obj);
        require(m.body == NULL && m.selected == NULL && m.route == ROUTE_NONE);
        require(strcmp(m.route_key, "$default") == 0);
        break;
    case ROUTED:
    case ROUTE_UNKNOWN: {
        require(is_obj);
        require(json_is_object(m.body));
        require(json_equal(m.body, ref));
        json_t *v = select_path(r, ref);
        if (!v || json_is_null(v)) {
            /* Absent: handled as chat. */
            require(m.outcome == ROUTED && m.route == ROUTE_CHAT && m.selected == NULL);
            require(strcmp(m.route_key, "$default") == 0);
            break;
        }
        require(m.selected != NULL);
        if (json_is_string(v)) {
            require(strlen(m.selected) == json_string_length(v));
            require(memcmp(m.selected, json_string_value(v), json_string_length(v)) == 0);
            route_id want = router_builtin(m.selected);
            require(m.route == want);
            require(m.outcome == (want == ROUTE_NONE ? ROUTE_UNKNOWN : ROUTED));
            if (want != ROUTE_NONE) require(strcmp(router_route_name(want), m.selected) == 0);
            if (!binary && router_is_custom(r, m.selected))
                require(strcmp(m.route_key, m.selected) == 0);
            else require(strcmp(m.route_key, "$default") == 0);
        } else {
            /* Non-string: unknown, with its JSON text, which parses back. */
            require(m.outcome == ROUTE_UNKNOWN && m.route == ROUTE_NONE);
            require(strcmp(m.route_key, "$default") == 0);
            json_t *back = json_loads(m.selected, JSON_DECODE_ANY, &jerr);
            require(back != NULL);
            require(json_equal(back, v) || json_is_real(v));
            json_decref(back);
        }
        break;
    }
    default: require(0);
    }
    /* The route key is "$default" or one of the router's own custom keys. */
    if (strcmp(m.route_key, "$default") != 0) {
        bool own = false;
        for (size_t i = 0; i < r->ncustom; i++) own |= m.route_key == r->custom[i];
        require(own);
        require(!binary);
    }
    json_decref(ref);
    free(m.selected);
    json_decref(m.body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    check(&by_type, s, size, false);
    check(&by_type, s, size, true);
    check(&nested, s, size, false);
    check(&nested, s, size, true);

    /* Expressions built from fuzz bytes: accepted ones split into non-empty
     * segments, refused ones leave nothing allocated. */
    if (size <= 64) {
        char expr[128] = "$request.body.";
        memcpy(expr + 14, data, size);
        expr[14 + size] = 0;
        router r;
        int rc = router_init(&r, expr, NULL, 0);
        if (rc == 0) {
            require(r.depth >= 1);
            for (size_t i = 0; i < r.depth; i++) require(r.path[i][0] && !strchr(r.path[i], '.'));
            route_match m;
            router_route(&r, s, size, false, &m);
            free(m.selected);
            json_decref(m.body);
        } else {
            require((rc == WSG_E_ROUTER_EXPR || rc == WSG_E_ROUTER_EMPTY_SEGMENT) &&
                    r.path == NULL);
        }
        router_free(&r);
    }
    return 0;
}
