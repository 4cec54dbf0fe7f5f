#include "mgmt/mgmt.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/handlers.h"
#include "common/alloc.h"
#include "common/strmap.h"
#include "http/sigv4.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "mgmt/nodes.h"
#include "web/web.h"
#include "ws/utf8.h"

/* How far a SigV4 request's X-Amz-Date may be from our clock (AWS's own
 * window). */
#define MGMT_MAX_SKEW_S (15 * 60)

void mgmt_iso8601(int64_t t, int ms, char *out, size_t len) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03dZ", ms);
}

/* ---- responses ---- */

static void respond(conn *c, const http_request *req, int status, const char *extra,
                    const char *ctype, const char *body, size_t body_len) {
    bool keep = http_should_keep_alive(&req->parser) != 0;
    size_t len;
    char *resp = http_response_format(status, extra, ctype, body, body_len, !keep, &len);
    if (c->http_deferred) server_http_answer(c, resp, len, keep); /* see forward() */
    else conn_http_respond(c, resp, len, keep);
    free(resp);
}

static void respond_error(conn *c, const http_request *req, int status, const char *type,
                          const char *message);

static void respond_json(conn *c, const http_request *req, int status, json_t *j) {
    if (!j) {
        /* A value json_pack refused (not UTF-8): a bug, never a crash. */
        log_msg(LOG_ERROR, "internal_error", "a management response could not be encoded as JSON");
        respond_error(c, req, 500, "InternalServerErrorException", "Internal server error");
        return;
    }
    char *txt = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    respond(c, req, status, NULL, "application/json", txt, strlen(txt));
    free(txt);
}

/* An error as API Gateway answers it: botocore reads the exception class
 * from x-amzn-ErrorType and the text from the body's "message". */
static void respond_error(conn *c, const http_request *req, int status, const char *type,
                          const char *message) {
    char hdr[128];
    snprintf(hdr, sizeof(hdr), "x-amzn-ErrorType: %s\r\n", type);
    json_t *j = json_pack("{s:s}", "message", message);
    char *txt = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    respond(c, req, status, hdr, "application/json", txt, strlen(txt));
    free(txt);
}

/* ---- authentication ---- */

static void denied(conn *c, const http_request *req, int code);

static bool authenticated(app *a, conn *c, const http_request *req) {
    size_t alen;
    const char *auth = http_request_header(req, "Authorization", &alen);
    int rc = WSG_E_MGMT_NO_TOKEN;
    if (auth && alen > 7 && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *key = auth + 7;
        size_t klen = alen - 7;
        size_t want = strlen(a->mgmt_creds.bearer_key);
        if (want > 0 && klen == want && CRYPTO_memcmp(key, a->mgmt_creds.bearer_key, want) == 0)
            return true;
        rc = WSG_E_MGMT_BEARER;
    } else if (auth) {
        sigv4_credentials cred = {a->mgmt_creds.access_key_id, a->mgmt_creds.secret_access_key};
        rc = sigv4_verify(req, &cred, 1, "execute-api", time(NULL), MGMT_MAX_SKEW_S);
        if (rc == 0) return true;
    }
    denied(c, req, rc);
    return false;
}

/* What the headers alone can tell before a body is read: the bearer key in
 * full; for SigV4 (whose signature covers the body's hash) that it names
 * our access key id, the signature being checked once the body is in.
 * Returns 0, or a WSG_E_MGMT_* code saying why the request is refused. */
static int head_credentials_refused(app *a, const http_request *req) {
    size_t alen;
    const char *auth = http_request_header(req, "Authorization", &alen);
    if (!auth) return WSG_E_MGMT_NO_TOKEN;
    if (alen > 7 && strncasecmp(auth, "Bearer ", 7) == 0) {
        size_t want = strlen(a->mgmt_creds.bearer_key);
        if (want > 0 && alen - 7 == want &&
            CRYPTO_memcmp(auth + 7, a->mgmt_creds.bearer_key, want) == 0)
            return 0;
        return WSG_E_MGMT_BEARER;
    }
    const char *cred = strstr(auth, "Credential=");
    size_t kl = strlen(a->mgmt_creds.access_key_id);
    if (cred && kl > 0 && strncmp(cred + 11, a->mgmt_creds.access_key_id, kl) == 0 &&
        cred[11 + kl] == '/')
        return 0;
    return WSG_E_MGMT_TOKEN_INVALID;
}

/* Log a refused management request and answer it with the code's status
 * (403 for every code the callers pass) and text. */
static void denied(conn *c, const http_request *req, int code) {
    log_line l;
    log_begin(&l, LOG_INFO, "management_denied");
    log_str(&l, "identity.sourceIp", c->source_ip);
    log_str(&l, "reason", wsg_strerror(code));
    log_end(&l);
    respond_error(c, req, wsg_err_http_status(code), "ForbiddenException", wsg_strerror(code));
}

/* ---- @connections ---- */

static json_t *connection_json(int64_t connected_at, int64_t last_active_at, const char *source_ip,
                               const char *user_agent) {
    char connected[40], active[40];
    mgmt_iso8601(connected_at, 0, connected, sizeof(connected));
    mgmt_iso8601(last_active_at, 0, active, sizeof(active));
    return json_pack("{s:s,s:{s:s,s:s?},s:s}", "connectedAt", connected, "identity", "sourceIp",
                     source_ip, "userAgent", user_agent, "lastActiveAt", active);
}

static void gone(conn *c, const http_request *req) {
    respond_error(c, req, 410, "GoneException", "Connection not found or gone");
}

/* ---- @connections held by another node ----
 *
 * A connection the engine says is elsewhere (ENGINE_E_ELSEWHERE) is asked
 * of its node through engine_remote; the request then waits, deferred in
 * the net layer (server_http_defer), for the engine's answer, which comes
 * on this worker's thread within the engine's bound. The waiting requests
 * are this worker's (a thread-local map by the HTTP connection's id): the
 * engine carries a tag "<id>.<serial>", never a pointer, and a client that
 * went away meanwhile is no longer in the map (mgmt_http_abandoned), so its
 * answer is dropped. */

typedef struct waiting {
    conn *c; /* removed from the map before c is freed */
    uint64_t serial;
    engine_remote_kind kind;
} waiting;

static _Thread_local strmap waiting_map;
static _Thread_local uint64_t waiting_serial;

/* What a call answered rc (from this node or the owner) means to the
 * client. */
static void answer(conn *c, const http_request *req, engine_remote_kind kind, int rc,
                   const engine_conn_info *info) {
    if (rc == ENGINE_E_TIMEOUT)
        respond_error(c, req, 504, "GatewayTimeoutException",
                      "The node that holds the connection did not answer in time");
    else if (rc == ENGINE_E_UNAVAILABLE || rc == ENGINE_E_ELSEWHERE)
        respond_error(c, req, 503, "ServiceUnavailableException",
                      "The connection is on another node, which cannot be asked now");
    else if (rc == -2 && kind == ENGINE_REMOTE_SEND)
        respond_error(c, req, 429, "LimitExceededException",
                      "The connection's send queue is full; retry later");
    else if (rc != 0) gone(c, req);
    else if (kind == ENGINE_REMOTE_SEND) respond(c, req, 200, NULL, NULL, NULL, 0);
    else if (kind == ENGINE_REMOTE_CLOSE) respond(c, req, 204, NULL, NULL, NULL, 0);
    else if (info)
        respond_json(c, req, 200,
                     connection_json(info->connected_at, info->last_active_at, info->source_ip,
                                     info->user_agent));
    else gone(c, req);
}

/* The request waiting under tag "<id>.<serial>", taken out of the map;
 * NULL when it went (or a later request of that connection waits). */
static conn *waiting_take_kind(const char *tag, engine_remote_kind *kind) {
    char id[CONN_ID_LEN + 1];
    if (strlen(tag) <= CONN_ID_LEN || tag[CONN_ID_LEN] != '.') return NULL;
    memcpy(id, tag, CONN_ID_LEN);
    id[CONN_ID_LEN] = '\0';
    waiting *wt = strmap_get(&waiting_map, id);
    if (!wt || wt->serial != strtoull(tag + CONN_ID_LEN + 1, NULL, 10)) return NULL; /* it left */
    strmap_remove(&waiting_map, id);
    conn *c = wt->c;
    if (kind) *kind = wt->kind;
    free(wt);
    if (waiting_map.count == 0) strmap_free(&waiting_map);
    return c;
}

static conn *waiting_take(const char *tag) { return waiting_take_kind(tag, NULL); }

/* Defer c's request (complete, in on_http) until waiting_take. */
static void waiting_add(conn *c, uint64_t serial, engine_remote_kind kind) {
    server_http_defer(c); /* on_http, with its request complete: it takes */
    assert(c->http_deferred);
    waiting *wt = xmalloc(sizeof(*wt));
    *wt = (waiting){c, serial, kind};
    void *old = NULL;
    strmap_put(&waiting_map, c->id, wt, &old);
    free(old); /* one request waits per connection: the net layer reads no other meanwhile */
}

/* engine_remote's answer, on this worker's thread. */
static void forwarded(void *owner_hub, const char *tag, int rc, const engine_conn_info *info) {
    engine_remote_kind kind;
    conn *c = waiting_take_kind(tag, &kind);
    if (c && c->http_deferred && c->req) answer(c, c->req, kind, rc, info);
}

void mgmt_http_abandoned(conn *c) {
    free(strmap_remove(&waiting_map, c->id));
    if (waiting_map.count == 0) strmap_free(&waiting_map);
}

/* Ask the connection's node; the answer comes later (forwarded). */
static void forward(app *a, conn *c, const http_request *req, engine_remote_req *r) {
    uint64_t serial = ++waiting_serial;
    char tag[ENGINE_REMOTE_TAG_MAX];
    snprintf(tag, sizeof(tag), "%s.%" PRIu64, c->id, serial);
    r->done = forwarded;
    r->tag = tag;
    int rc = engine_remote(a->engine, r);
    if (rc != 0) {
        answer(c, req, r->kind, rc, NULL);
        return;
    }
    waiting_add(c, serial, r->kind);
}

/* The connection may be on any worker: the engine posts to its owner. */
static void post_to_connection(app *a, conn *c, const http_request *req, const char *id) {
    /* Text when the bytes are UTF-8 (what API Gateway's clients expect),
     * binary otherwise. */
    const uint8_t *body = (const uint8_t *)(req->body ? req->body : "");
    uint8_t op = ws_utf8_valid(body, req->body_len) ? WS_OP_TEXT : WS_OP_BINARY;
    ws_frame *f = ws_frame_new(op, body, req->body_len);
    /* The send rule's: a frame of any size joins a queue within the limit;
     * one already past it is backlogged, and the caller retries later. */
    int rc = engine_send_conn(a->engine, id, f, (size_t)a->cfg->max_queued_bytes);
    if (rc == ENGINE_E_ELSEWHERE) {
        engine_remote_req r = {.kind = ENGINE_REMOTE_SEND,
                               .conn_id = id,
                               .f = f,
                               .max_queued = (size_t)a->cfg->max_queued_bytes};
        forward(a, c, req, &r);
    } else {
        answer(c, req, ENGINE_REMOTE_SEND, rc, NULL);
    }
    ws_frame_unref(f);
}

static void get_connection(app *a, conn *c, const http_request *req, const char *id) {
    engine_conn_info info;
    int rc = engine_conn_lookup(a->engine, id, &info);
    if (rc == ENGINE_E_ELSEWHERE) {
        engine_remote_req r = {.kind = ENGINE_REMOTE_INFO, .conn_id = id};
        forward(a, c, req, &r);
        return;
    }
    answer(c, req, ENGINE_REMOTE_INFO, rc, rc == 0 ? &info : NULL);
    if (rc == 0) free(info.user_agent);
}

static void delete_connection(app *a, conn *c, const http_request *req, const char *id) {
    /* Gone to the management API from here on, though the owner's loop has
     * not finished the close handshake yet (API Gateway answers a call in
     * between with GoneException, not 200). */
    const char *reason = "closed by the management API";
    int rc = engine_close_conn(a->engine, id, WS_CLOSE_NORMAL, reason);
    if (rc == ENGINE_E_ELSEWHERE) {
        engine_remote_req r = {
            .kind = ENGINE_REMOTE_CLOSE, .conn_id = id, .code = WS_CLOSE_NORMAL, .reason = reason};
        forward(a, c, req, &r);
        return;
    }
    answer(c, req, ENGINE_REMOTE_CLOSE, rc, NULL);
}

typedef struct listing {
    json_t *arr;
    const char *user, *room_id; /* filters, NULL or "" for none */
} listing;

/* Under the record's shard lock (see directory_conn). */
static void listing_add(const directory_conn *rec, void *ctx) {
    listing *l = ctx;
    if (l->user && *l->user && strcmp(rec->user_id, l->user) != 0) return;
    const char *room_id = rec->room ? rec->room->id : NULL;
    if (l->room_id && *l->room_id && (!room_id || strcmp(room_id, l->room_id) != 0)) return;
    json_t *j = connection_json(rec->c->connected_at, conn_last_active_at(rec->c),
                                rec->c->source_ip, rec->c->user_agent);
    json_object_set_new(j, "connectionId", json_string(rec->c->id));
    json_object_set_new(j, "userId", json_string(rec->user_id));
    json_object_set_new(j, "username", json_string(rec->username));
    json_object_set_new(j, "roomId", room_id ? json_string(room_id) : json_null());
    json_array_append_new(l->arr, j);
}

static void list_connections(app *a, conn *c, const http_request *req) {
    size_t qlen;
    const char *q = http_request_query(req, &qlen);
    char *user = NULL, *room_id = NULL;
    http_query_param(q, qlen, "userId", &user);
    http_query_param(q, qlen, "roomId", &room_id);
    listing l = {.arr = json_array(), .user = user, .room_id = room_id};
    engine_conn_each(a->engine, listing_add, &l);
    free(user);
    free(room_id);
    respond_json(c, req, 200, json_pack("{s:o}", "connections", l.arr));
}

/* ---- @rooms ---- */

/* The engine's later answer to a listing (rooms of other nodes are
 * counted in Redis): arg is "<id>.<serial>" (malloc'd), the waiting
 * request's, which may have gone meanwhile. */
static void rooms_counted(void *worker_hub, void *arg, int rc, const directory_room_entry *rooms,
                          size_t n) {
    char *tag = arg;
    conn *c = worker_hub ? waiting_take(tag) : NULL;
    free(tag);
    if (!c || !c->http_deferred || !c->req) return;
    if (rc == ENGINE_E_TIMEOUT)
        respond_error(c, c->req, 504, "GatewayTimeoutException",
                      "The room counts could not be read in time");
    else if (rc != 0)
        respond_error(c, c->req, 503, "ServiceUnavailableException",
                      "The room counts cannot be read now");
    else respond_json(c, c->req, 200, json_pack("{s:o}", "rooms", handlers_rooms_array(rooms, n)));
}

static void list_rooms(app *a, conn *c, const http_request *req) {
    uint64_t serial = ++waiting_serial;
    char tag[ENGINE_REMOTE_TAG_MAX];
    snprintf(tag, sizeof(tag), "%s.%" PRIu64, c->id, serial);
    char *arg = xstrdup(tag);
    if (engine_rooms_ask(a->engine, rooms_counted, arg) != ENGINE_PENDING) {
        free(arg);
        respond_json(c, req, 200, json_pack("{s:o}", "rooms", handlers_rooms_json(a->engine)));
        return;
    }
    waiting_add(c, serial, ENGINE_REMOTE_INFO);
}

static void post_to_room(app *a, conn *c, const http_request *req, const char *room_id) {
    /* Bug fix: the id is echoed in JSON, which cannot hold invalid UTF-8
     * (POST @rooms/%C0 crashed the server); no room has such an id. */
    if (!ws_utf8_valid((const uint8_t *)room_id, strlen(room_id))) {
        respond_error(c, req, 400, "BadRequestException", "Invalid room ID");
        return;
    }
    const uint8_t *body = (const uint8_t *)(req->body ? req->body : "");
    uint8_t op = ws_utf8_valid(body, req->body_len) ? WS_OP_TEXT : WS_OP_BINARY;
    ws_frame *f = ws_frame_new(op, body, req->body_len);
    size_t delivered = engine_publish_room(a->engine, room_id, NULL, f, NULL, 0);
    ws_frame_unref(f);
    respond_json(c, req, 200,
                 json_pack("{s:s,s:I}", "roomId", room_id, "delivered", (json_int_t)delivered));
}

/* ---- operational endpoints ---- */

static void healthz(app *a, conn *c, const http_request *req) {
    respond_json(c, req, 200, json_pack("{s:s}", "status", "ok"));
}

static void readyz(app *a, conn *c, const http_request *req) {
    /* Ready means a chat sent now can be stored: the store is open and its
     * writes commit (not failing, not stuck past store_stall_ms). */
    char why[160] = "store not open";
    bool store_ok =
        a->store != NULL && store_health(a->store, a->cfg->store_stall_ms, why, sizeof(why)) == 0;
    /* ... and the engine can reach what keeps chats (the Redis engine). */
    if (store_ok && a->engine && engine_health(a->engine, why, sizeof(why)) != 0) store_ok = false;
    bool listening = !c->srv->shutting_down;
    json_t *j = json_pack("{s:s,s:b,s:b}", "status", store_ok && listening ? "ready" : "not ready",
                          "store", store_ok, "listening", listening);
    if (!store_ok) json_object_set_new(j, "reason", json_string(why));
    else if (!listening) json_object_set_new(j, "reason", json_string("shutting down"));
    respond_json(c, req, store_ok && listening ? 200 : 503, j);
}

static void metrics_page(app *a, conn *c, const http_request *req) {
    size_t len;
    char *txt = metrics_render(&len);
    respond(c, req, 200, NULL, "text/plain; version=0.0.4; charset=utf-8", txt, len);
    free(txt);
}

/* The configuration in effect, secrets masked (for the dashboard). */
static void get_config(app *a, conn *c, const http_request *req) {
    respond_json(c, req, 200, json_pack("{s:o}", "variables", config_to_json(a->cfg)));
}

/* Every node serving this API (the dashboard's node table; mgmt/nodes.c). */
static void list_nodes(app *a, conn *c, const http_request *req) {
    respond_json(c, req, 200, mgmt_nodes_json(a));
}

/* ---- routing ---- */

typedef enum { ARG_NONE, ARG_ID } arg_kind;

typedef struct mgmt_route {
    const char *method;
    const char *prefix; /* after "/{stage}", or the whole path when !staged */
    bool staged;
    arg_kind arg; /* ARG_ID: one path segment follows the prefix */
    bool auth;
    void (*plain)(app *a, conn *c, const http_request *req);
    void (*with_id)(app *a, conn *c, const http_request *req, const char *id);
} mgmt_route;

/* The route table. */
static const mgmt_route mgmt_routes[] = {
    {"GET", "/healthz", false, ARG_NONE, false, healthz, NULL},
    {"GET", "/readyz", false, ARG_NONE, false, readyz, NULL},
    {"GET", "/metrics", false, ARG_NONE, false, metrics_page, NULL},
    {"POST", "/@connections/", true, ARG_ID, true, NULL, post_to_connection},
    {"GET", "/@connections/", true, ARG_ID, true, NULL, get_connection},
    {"DELETE", "/@connections/", true, ARG_ID, true, NULL, delete_connection},
    {"GET", "/@connections", true, ARG_NONE, true, list_connections, NULL},
    {"GET", "/@rooms", true, ARG_NONE, true, list_rooms, NULL},
    {"GET", "/@config", true, ARG_NONE, true, get_config, NULL},
    {"GET", "/@nodes", true, ARG_NONE, true, list_nodes, NULL},
    {"POST", "/@rooms/", true, ARG_ID, true, NULL, post_to_room},
};

/* Find req's route in mgmt_routes. Returns it (with *id pointing into
 * *path for ARG_ID routes) or NULL; *path_known tells whether some route
 * has that path with another method. *path is the decoded path (caller
 * frees; NULL when it does not decode, and then no route matches). */
static const mgmt_route *match_route(app *a, const http_request *req, char **path, const char **id,
                                     bool *path_known) {
    size_t plen;
    const char *raw = http_request_path(req, &plen);
    *path_known = false;
    *id = NULL;
    /* Decode once: boto3 sends "@" as %40 and ids may be escaped. */
    *path = http_path_decode(raw, plen);
    if (!*path) return NULL;
    const char *stage = a->cfg->stage_name;
    size_t sl = strlen(stage);
    const char *after_stage = NULL;
    if ((*path)[0] == '/' && strncmp(*path + 1, stage, sl) == 0 && (*path)[1 + sl] == '/')
        after_stage = *path + 1 + sl;
    const char *method = http_request_method(req);
    for (size_t i = 0; i < sizeof(mgmt_routes) / sizeof(mgmt_routes[0]); i++) {
        const mgmt_route *r = &mgmt_routes[i];
        const char *p = r->staged ? after_stage : *path;
        if (!p) continue;
        size_t pl = strlen(r->prefix);
        if (r->arg == ARG_ID) {
            if (strncmp(p, r->prefix, pl) != 0 || !p[pl] || strchr(p + pl, '/')) continue;
        } else if (strcmp(p, r->prefix) != 0) {
            continue;
        }
        *path_known = true;
        if (strcmp(method, r->method) != 0) continue;
        if (r->arg == ARG_ID) *id = p + pl;
        return r;
    }
    return NULL;
}

long mgmt_http_head(app *a, conn *c, const http_request *req) {
    char *path;
    const char *id;
    bool path_known;
    const mgmt_route *r = match_route(a, req, &path, &id, &path_known);
    free(path);
    /* Only the POST routes take a body; any other request that announces
     * one is answered from its head, the body unread. */
    if (!r)
        return http_request_has_body(req) ? (path_known ? WSG_E_HTTP_METHOD : WSG_E_HTTP_NOT_FOUND)
                                          : 0;
    if (strcmp(r->method, "POST") != 0) return 0;
    int refused = head_credentials_refused(a, req);
    if (refused < 0) {
        denied(c, req, refused);
        return SERVER_HTTP_ANSWERED;
    }
    return MGMT_MAX_BODY;
}

bool mgmt_handle(app *a, conn *c, const http_request *req) {
    if (web_handle(c, req, a->cfg->stage_name)) return true; /* the browser pages */
    char *path;
    const char *id;
    bool path_known;
    const mgmt_route *r = match_route(a, req, &path, &id, &path_known);
    if (r) {
        if (!r->auth || authenticated(a, c, req)) {
            if (r->plain) r->plain(a, c, req);
            else r->with_id(a, c, req, id);
        }
        free(path);
        return true;
    }
    free(path);
    if (path_known) {
        respond_error(c, req, 405, "MethodNotAllowedException", "Method not allowed");
        return true;
    }
    return false;
}
