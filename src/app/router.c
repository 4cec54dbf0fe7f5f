#include "app/router.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

static const char *const route_names[ROUTE_COUNT] = {
    [ROUTE_CHAT] = "chat",
    [ROUTE_JOIN_ROOM] = "join_room",
    [ROUTE_LEAVE_ROOM] = "leave_room",
    [ROUTE_PRIVATE_MESSAGE] = "private_message",
    [ROUTE_ROOM_LIST] = "room_list",
    [ROUTE_TYPING_INDICATOR] = "typing_indicator",
    [ROUTE_HISTORY] = "history",
};

const char *router_route_name(route_id id) {
    return id >= 0 && id < ROUTE_COUNT ? route_names[id] : "$default";
}

route_id router_builtin(const char *key) {
    for (int i = 0; i < ROUTE_COUNT; i++)
        if (strcmp(route_names[i], key) == 0) return (route_id)i;
    return ROUTE_NONE;
}

static const char PREFIX[] = "$request.body.";

int router_init(router *r, const char *expr, char *const *custom, size_t ncustom) {
    memset(r, 0, sizeof(*r));
    size_t pl = sizeof(PREFIX) - 1;
    if (strncmp(expr, PREFIX, pl) != 0 || expr[pl] == '\0') {
        return WSG_E_ROUTER_EXPR;
    }
    const char *p = expr + pl;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0) {
            router_free(r);
            return WSG_E_ROUTER_EMPTY_SEGMENT;
        }
        r->path = xrealloc(r->path, (r->depth + 1) * sizeof(*r->path));
        r->path[r->depth++] = xstrndup(p, n);
        if (!dot) break;
        p = dot + 1;
    }
    r->custom = xcalloc(ncustom + 1, sizeof(*r->custom));
    for (size_t i = 0; i < ncustom; i++) r->custom[i] = xstrdup(custom[i]);
    r->ncustom = ncustom;
    return 0;
}

void router_free(router *r) {
    for (size_t i = 0; i < r->depth; i++) free(r->path[i]);
    free(r->path);
    for (size_t i = 0; i < r->ncustom; i++) free(r->custom[i]);
    free(r->custom);
    memset(r, 0, sizeof(*r));
}

bool router_is_custom(const router *r, const char *key) {
    for (size_t i = 0; i < r->ncustom; i++)
        if (strcmp(r->custom[i], key) == 0) return true;
    return false;
}

void router_route(const router *r, const char *data, size_t len, bool binary, route_match *m) {
    memset(m, 0, sizeof(*m));
    m->route = ROUTE_NONE;
    m->route_key = "$default";
    m->custom_index = -1;
    if (r->max_depth && !router_depth_ok(data, len, r->max_depth)) {
        m->outcome = ROUTE_TOO_DEEP;
        return;
    }
    json_error_t jerr;
    json_t *body = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body || !json_is_object(body)) {
        json_decref(body);
        m->outcome = ROUTE_INVALID_JSON;
        return;
    }
    m->body = body;
    json_t *v = body;
    for (size_t i = 0; i < r->depth && v; i++)
        v = json_is_object(v) ? json_object_get(v, r->path[i]) : NULL;
    if (!v || json_is_null(v)) {
        /* The seed's handler: body.get('type', 'chat'). */
        m->outcome = ROUTED;
        m->route = ROUTE_CHAT;
        return;
    }
    if (json_is_string(v)) {
        m->selected = xstrndup(json_string_value(v), json_string_length(v));
    } else {
        char *txt = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        m->selected = xstrdup(txt ? txt : "");
        free(txt);
    }
    if (!binary && json_is_string(v)) {
        for (size_t i = 0; i < r->ncustom; i++)
            if (strcmp(r->custom[i], m->selected) == 0) {
                m->route_key = r->custom[i];
                m->custom_index = (int)i;
            }
    }
    m->route = json_is_string(v) ? router_builtin(m->selected) : ROUTE_NONE;
    m->outcome = m->route == ROUTE_NONE ? ROUTE_UNKNOWN : ROUTED;
}

bool router_depth_ok(const char *data, size_t len, size_t max_depth) {
    size_t depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) return false;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return true;
}
