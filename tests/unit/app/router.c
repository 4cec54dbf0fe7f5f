/* Unit tests for route selection and dispatch (src/app/router.c), following
 * PROTOCOL.md "Route selection". */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "app/router.h"

static router R;

static void init_expr(const char *expr, char *const *custom, size_t n) {
    int rc = router_init(&R, expr, custom, n);
    cr_assert_eq(rc, 0, "%s: %s", expr, wsg_strerror(rc));
}

static void route(const char *msg, bool binary, route_match *m) {
    router_route(&R, msg, strlen(msg), binary, m);
    if (m->outcome == ROUTE_INVALID_JSON) {
        cr_assert_null(m->body);
        cr_assert_null(m->selected);
        cr_assert_eq(m->route, ROUTE_NONE);
    } else {
        cr_assert(json_is_object(m->body));
    }
    cr_assert_not_null(m->route_key);
}

static void done(route_match *m) {
    free(m->selected);
    json_decref(m->body);
}

static void fini(void) { router_free(&R); }

/* Expect: outcome, built-in route, route key, selected text (NULL: absent). */
static void expect(const char *msg, bool binary, route_outcome o, route_id id, const char *key,
                   const char *selected) {
    route_match m;
    route(msg, binary, &m);
    cr_assert_eq(m.outcome, o, "%s: outcome %d, want %d", msg, m.outcome, o);
    cr_assert_eq(m.route, id, "%s: route %d, want %d", msg, m.route, id);
    cr_assert_str_eq(m.route_key, key, "%s", msg);
    if (selected) {
        cr_assert_not_null(m.selected, "%s", msg);
        cr_assert_str_eq(m.selected, selected, "%s", msg);
    } else {
        cr_assert_null(m.selected, "%s: selected [%s]", msg, m.selected);
    }
    done(&m);
}

/* ---- names ---- */

Test(router, builtin_names) {
    static const char *const names[] = {
        "chat",      "join_room",        "leave_room", "private_message",
        "room_list", "typing_indicator", "history"};
    for (int i = 0; i < ROUTE_COUNT; i++) {
        cr_assert_str_eq(router_route_name((route_id)i), names[i]);
        cr_assert_eq(router_builtin(names[i]), (route_id)i);
    }
    cr_assert_str_eq(router_route_name(ROUTE_NONE), "$default");
    cr_assert_str_eq(router_route_name(ROUTE_COUNT), "$default");
    cr_assert_eq(router_builtin("Chat"), ROUTE_NONE);
    cr_assert_eq(router_builtin(""), ROUTE_NONE);
    cr_assert_eq(router_builtin("$default"), ROUTE_NONE);
    cr_assert_eq(router_builtin("chat "), ROUTE_NONE);
}

/* ---- expressions ---- */

Test(router, default_expression, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    cr_assert_eq(R.depth, 1);
    cr_assert_str_eq(R.path[0], "type");
    cr_assert_eq(R.ncustom, 0);
}

Test(router, nested_expression, .fini = fini) {
    init_expr("$request.body.a.b", NULL, 0);
    cr_assert_eq(R.depth, 2);
    cr_assert_str_eq(R.path[0], "a");
    cr_assert_str_eq(R.path[1], "b");
    expect("{\"a\":{\"b\":\"join_room\"}}", false, ROUTED, ROUTE_JOIN_ROOM, "$default",
           "join_room");
    expect("{\"a\":{\"b\":\"nope\"}}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "nope");
    /* A missing step anywhere on the path is an absent field. */
    expect("{\"a\":{}}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
    expect("{\"b\":\"join_room\"}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
    expect("{\"a\":\"join_room\"}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
    expect("{\"a\":[{\"b\":\"x\"}]}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
    expect("{\"a\":{\"b\":{\"c\":1}}}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "{\"c\":1}");
    /* "type" means nothing with this expression. */
    expect("{\"type\":\"room_list\"}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
}

Test(router, deep_expression, .fini = fini) {
    init_expr("$request.body.x.y.z.w", NULL, 0);
    cr_assert_eq(R.depth, 4);
    expect("{\"x\":{\"y\":{\"z\":{\"w\":\"room_list\"}}}}", false, ROUTED, ROUTE_ROOM_LIST,
           "$default", "room_list");
}

Test(router, bad_expressions_rejected) {
    static const char *const bad[] = {
        "$request.body.",
        "$request.header.x",
        "type",
        "$request.body.a..b",
        "$request.body.a.",
        "$request.body..a",
        "",
        "$request.body",
        "$request.bodytype",
        "request.body.type",
        "$request.body.a.b.",
        "$REQUEST.body.type",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        router r;
        int rc = router_init(&r, bad[i], NULL, 0);
        cr_assert(rc == WSG_E_ROUTER_EXPR || rc == WSG_E_ROUTER_EMPTY_SEGMENT, "[%s]: %d", bad[i],
                  rc);
        cr_assert(strncmp(wsg_strerror(rc), "route selection expression ", 27) == 0);
        /* Nothing is left allocated and the router is safe to free. */
        cr_assert_null(r.path);
        cr_assert_eq(r.depth, 0);
        router_free(&r);
    }
}

/* ---- dispatch ---- */

Test(router, builtins_route_without_custom_routes, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    expect("{\"type\":\"chat\",\"message\":\"Hello World!\"}", false, ROUTED, ROUTE_CHAT,
           "$default", "chat");
    expect("{\"type\": \"join_room\", \"roomId\": \"developers\"}", false, ROUTED, ROUTE_JOIN_ROOM,
           "$default", "join_room");
    expect("{\"type\":\"leave_room\"}", false, ROUTED, ROUTE_LEAVE_ROOM, "$default", "leave_room");
    expect("{\"type\": \"private_message\", \"targetUserId\": \"user2\", \"message\": \"hi\"}",
           false, ROUTED, ROUTE_PRIVATE_MESSAGE, "$default", "private_message");
    expect("{\"type\":\"room_list\"}", false, ROUTED, ROUTE_ROOM_LIST, "$default", "room_list");
    expect("{\"type\":\"typing_indicator\",\"isTyping\":false}", false, ROUTED,
           ROUTE_TYPING_INDICATOR, "$default", "typing_indicator");
}

Test(router, custom_route_key_vs_default, .fini = fini) {
    char *custom[] = {"chat", "my_route", "join_room"};
    init_expr("$request.body.type", custom, 3);
    cr_assert(router_is_custom(&R, "chat"));
    cr_assert(router_is_custom(&R, "my_route"));
    cr_assert(!router_is_custom(&R, "room_list"));
    cr_assert(!router_is_custom(&R, "$default"));
    /* A listed built-in: its own key, and its handler. */
    route_match m;
    route("{\"type\":\"chat\",\"message\":\"x\"}", false, &m);
    cr_assert_eq(m.outcome, ROUTED);
    cr_assert_eq(m.route, ROUTE_CHAT);
    cr_assert_str_eq(m.route_key, "chat");
    cr_assert_eq(m.route_key, R.custom[0], "route_key points into the router");
    done(&m);
    /* A listed key with no built-in handler: its own key, unknown to $default. */
    expect("{\"type\":\"my_route\"}", false, ROUTE_UNKNOWN, ROUTE_NONE, "my_route", "my_route");
    /* A built-in that is not listed: $default, but its handler still runs. */
    expect("{\"type\":\"room_list\"}", false, ROUTED, ROUTE_ROOM_LIST, "$default", "room_list");
    /* Neither. */
    expect("{\"type\":\"other\"}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "other");
    /* A missing field is chat for the handler, but not the custom "chat" key. */
    expect("{\"message\":\"x\"}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
}

Test(router, custom_routes_are_copied, .fini = fini) {
    char a[] = "mine";
    char *custom[] = {a};
    init_expr("$request.body.type", custom, 1);
    a[0] = 'X';
    cr_assert(router_is_custom(&R, "mine"));
    cr_assert(!router_is_custom(&R, "Xine"));
}

Test(router, missing_or_null_field_is_chat, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    expect("{}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
    expect("{\"message\":\"Hello\"}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
    expect("{\"type\":null}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
    expect("{\"Type\":\"room_list\"}", false, ROUTED, ROUTE_CHAT, "$default", NULL);
}

Test(router, non_string_selection_unknown_with_json_text, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    expect("{\"type\":1}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "1");
    expect("{\"type\":-2.5}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "-2.5");
    expect("{\"type\":true}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "true");
    expect("{\"type\":false}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "false");
    expect("{\"type\":[\"chat\"]}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "[\"chat\"]");
    expect("{\"type\":{\"a\": [1, 2]}}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default",
           "{\"a\":[1,2]}");
    expect("{\"type\":\"\"}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "");
    expect("{\"type\":\"Chat\"}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "Chat");
    expect("{\"type\":\"\\u00e9t\\u00e9\"}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default",
           "\xc3\xa9t\xc3\xa9");
}

Test(router, non_string_never_matches_custom_key, .fini = fini) {
    char *custom[] = {"1", "true"};
    init_expr("$request.body.type", custom, 2);
    expect("{\"type\":1}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "1");
    expect("{\"type\":true}", false, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "true");
    expect("{\"type\":\"1\"}", false, ROUTE_UNKNOWN, ROUTE_NONE, "1", "1");
}

Test(router, not_an_object_or_invalid_json, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    static const char *const bad[] = {
        "",
        "   ",
        "null",
        "1",
        "\"chat\"",
        "[]",
        "[{\"type\":\"chat\"}]",
        "true",
        "{",
        "{\"type\":}",
        "{\"type\":\"chat\"",
        "{'type':'chat'}",
        "{\"type\":\"chat\"} x",
        "hello",
        "{\"type\":\"chat\",}",
        "{\"a\":\"\\ud800\"}",
        "{\"type\":\"a\\u0000b\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        route_match m;
        route(bad[i], false, &m);
        cr_assert_eq(m.outcome, ROUTE_INVALID_JSON, "[%s]", bad[i]);
        cr_assert_str_eq(m.route_key, "$default");
        done(&m);
    }
}

Test(router, explicit_length_is_honoured, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    const char msg[] = "{\"type\":\"room_list\"}garbage";
    route_match m;
    router_route(&R, msg, strlen("{\"type\":\"room_list\"}"), false, &m);
    cr_assert_eq(m.outcome, ROUTED);
    cr_assert_eq(m.route, ROUTE_ROOM_LIST);
    done(&m);
    /* Embedded NUL bytes make it invalid, not truncated. */
    const char nul[] = "{\"type\":\"chat\"}\0{";
    router_route(&R, nul, sizeof nul - 1, false, &m);
    cr_assert_eq(m.outcome, ROUTE_INVALID_JSON);
    done(&m);
}

Test(router, duplicate_keys_are_invalid_json, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    expect("{\"type\":\"chat\",\"type\":\"room_list\"}", false, ROUTE_INVALID_JSON, ROUTE_NONE,
           "$default", NULL);
    expect("{\"a\":{\"x\":1,\"x\":2},\"type\":\"chat\"}", false, ROUTE_INVALID_JSON, ROUTE_NONE,
           "$default", NULL);
}

Test(router, binary_takes_default_route_key, .fini = fini) {
    char *custom[] = {"chat", "my_route"};
    init_expr("$request.body.type", custom, 2);
    expect("{\"type\":\"chat\",\"message\":\"m\"}", true, ROUTED, ROUTE_CHAT, "$default", "chat");
    expect("{\"type\":\"my_route\"}", true, ROUTE_UNKNOWN, ROUTE_NONE, "$default", "my_route");
    expect("\x01\x02\xff", true, ROUTE_INVALID_JSON, ROUTE_NONE, "$default", NULL);
    /* The same text message takes the custom key. */
    expect("{\"type\":\"my_route\"}", false, ROUTE_UNKNOWN, ROUTE_NONE, "my_route", "my_route");
}

Test(router, body_is_returned_for_handlers, .fini = fini) {
    init_expr("$request.body.type", NULL, 0);
    route_match m;
    route("{\"type\":\"join_room\",\"roomId\":\"developers\"}", false, &m);
    cr_assert_str_eq(json_string_value(json_object_get(m.body, "roomId")), "developers");
    done(&m);
}

Test(router, reinit_after_free, .fini = fini) {
    init_expr("$request.body.a.b", NULL, 0);
    router_free(&R);
    router_free(&R); /* freeing twice is harmless: it zeroes the router */
    init_expr("$request.body.type", NULL, 0);
    expect("{\"type\":\"leave_room\"}", false, ROUTED, ROUTE_LEAVE_ROOM, "$default", "leave_room");
}
