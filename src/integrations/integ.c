#include "integrations/integ.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/random.h"
#include "common/strmap.h"
#include "cli/outputs.h"
#include "integrations/integ_event.h"
#include "integrations/integ_http.h"
#include "log/access_line.h"
#include "net/server.h"

/* One route's integration. */
typedef struct route_integ {
    const char *key; /* borrowed from the config */
    const char *url;
    bool two_way;
    int slot; /* metrics route slot */
} route_integ;

/* Settings, read-only once integ_init returned (every worker reads them). */
static struct {
    const config *cfg;
    integ_hooks hooks;
    route_integ *routes;
    size_t nroutes;
    int connect, disconnect, def; /* index in routes, -1: none */
    bool http_auth;
    char api_id[11]; /* websocket_api_id */
} G = {.connect = -1, .disconnect = -1, .def = -1};

/* Index of the authorizer's in-flight counter (after the routes'). */
#define AUTH_SLOT (G.nroutes)
/* Authorizer answers one worker keeps at most; when full it starts over. */
#define AUTH_CACHE_MAX 10000

/* What a worker knows of one of its connections. */
typedef struct conn_rec {
    conn *c; /* valid while the record is in the worker's map */
    char id[CONN_ID_LEN + 1];
    char *domain; /* the Host of its upgrade request */
    int64_t connected_at_ms;
    json_t *authorizer;          /* {"principalId", context...} or NULL */
    bool open;                   /* past the 101 */
    uint32_t messages_in_flight; /* its message calls not answered yet */
} conn_rec;

typedef struct auth_entry {
    bool allow;
    json_t *context;
    uint64_t expires_ms;
} auth_entry;

/* One worker's integrations: its client, its connections by id, its
 * authorizer cache. Only its own thread touches it. */
typedef struct integ_worker {
    uv_loop_t *loop;
    integ_http *http;
    strmap conns;      /* connection id -> conn_rec */
    size_t *in_flight; /* per route, then the authorizer */
    strmap auth_cache; /* identity -> auth_entry */
} integ_worker;

static _Thread_local integ_worker *W;

typedef enum call_kind { CALL_AUTH, CALL_CONNECT, CALL_MESSAGE, CALL_DISCONNECT } call_kind;

/* One request in flight: what its completion needs, with the connection
 * named by id only. */
typedef struct call {
    call_kind kind;
    size_t slot; /* in_flight index */
    char conn_id[CONN_ID_LEN + 1];
    char request_id[37];
    const char *route_key;
    const char *event_type;
    char *cache_key; /* CALL_AUTH */
    int64_t start_epoch_ms;
    char source_ip[46];
    int worker;       /* the worker's index, for the log */
    char *trace_body; /* a message's body for the data trace (enable_data_trace), or NULL */
    size_t trace_len;
    bool counted; /* CALL_MESSAGE: in its connection's messages_in_flight */
} call;

/* ---- settings ---- */

static int route_index(const char *key) {
    for (size_t i = 0; i < G.nroutes; i++)
        if (strcmp(G.routes[i].key, key) == 0) return (int)i;
    return -1;
}

int integ_init(const config *cfg, const integ_hooks *hooks, wsg_error *err) {
    G.cfg = cfg;
    G.hooks = *hooks;
    G.nroutes = cfg->route_integrations_count;
    G.routes = xcalloc(G.nroutes + 1, sizeof(*G.routes));
    for (size_t i = 0; i < G.nroutes; i++) {
        route_integ *r = &G.routes[i];
        r->key = cfg->route_integrations[i].key;
        r->url = cfg->route_integrations[i].value;
        r->slot = metrics_route_slot(r->key);
        for (size_t k = 0; k < cfg->route_responses_count; k++)
            if (strcmp(cfg->route_responses[k], r->key) == 0) r->two_way = true;
    }
    G.connect = route_index("$connect");
    G.disconnect = route_index("$disconnect");
    G.def = route_index("$default");
    G.http_auth = cfg->auth_mode_id == CONFIG_AUTH_HTTP;
    outputs_api_id(cfg, G.api_id);
    if ((G.nroutes || G.http_auth) && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return wsg_error_set(err, WSG_E_INTERNAL, "integrations: libcurl failed to initialise");
    }
    return 0;
}

void integ_free(void) {
    if (G.nroutes || G.http_auth) curl_global_cleanup();
    free(G.routes);
    G.routes = NULL;
    G.nroutes = 0;
    G.connect = G.disconnect = G.def = -1;
    G.http_auth = false;
}

bool integ_route_has(const char *route_key) { return route_index(route_key) >= 0; }

bool integ_connect_deferred(void) { return G.connect >= 0 || G.http_auth; }

static int pass_authorize(const authorizer *self, const http_request *req, auth_identity *id) {
    return 0;
}

static void pass_destroy(authorizer *self) {}

authorizer *integ_passthrough_authorizer(void) {
    static authorizer a = {.name = "http", .authorize = pass_authorize, .destroy = pass_destroy};
    return &a;
}

/* ---- the worker's state ---- */

static integ_worker *worker_for(uv_loop_t *loop) {
    if (W) return W;
    W = xcalloc(1, sizeof(*W));
    W->loop = loop;
    W->http = integ_http_new(loop, (size_t)G.cfg->integration_max_response_bytes);
    strmap_init(&W->conns);
    strmap_init(&W->auth_cache);
    W->in_flight = xcalloc(G.nroutes + 1, sizeof(*W->in_flight));
    return W;
}

static void auth_entry_free(auth_entry *e) {
    json_decref(e->context);
    free(e);
}

static void auth_cache_clear(strmap *m) {
    const char *k;
    void *v;
    for (size_t i = 0; strmap_next(m, &i, &k, &v);) auth_entry_free(v);
    strmap_free(m);
    strmap_init(m);
}

static void rec_free(conn_rec *r) {
    free(r->domain);
    json_decref(r->authorizer);
    free(r);
}

void integ_worker_close(void) {
    if (!W) return;
    integ_http_close(W->http); /* each call's done gets NULL and frees it */
    const char *k;
    void *v;
    for (size_t i = 0; strmap_next(&W->conns, &i, &k, &v);) rec_free(v);
    strmap_free(&W->conns);
    auth_cache_clear(&W->auth_cache);
    strmap_free(&W->auth_cache);
    free(W->in_flight);
    free(W);
    W = NULL;
}

static conn_rec *rec_get(const char *id) { return W ? strmap_get(&W->conns, id) : NULL; }

static conn_rec *rec_new(conn *c, const http_request *req) {
    conn_rec *r = xcalloc(1, sizeof(*r));
    r->c = c;
    memcpy(r->id, c->id, sizeof(r->id));
    size_t hl = 0;
    const char *host = req ? http_request_header(req, "Host", &hl) : NULL;
    if (G.cfg->integration_domain_name[0]) r->domain = xstrdup(G.cfg->integration_domain_name);
    else r->domain = host ? xstrndup(host, hl) : xstrdup("localhost");
    r->connected_at_ms = clock_wall_ms();
    strmap_put(&W->conns, r->id, r, NULL);
    return r;
}

/* ---- events ---- */

/* API Gateway's ids: extendedRequestId and messageId are short opaque
 * base64-like tokens. */
static void short_id(char out[17]) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t b[15];
    random_bytes(b, sizeof b);
    for (int i = 0; i < 15; i++) out[i] = abc[b[i] & 63];
    out[15] = '=';
    out[16] = '\0';
}

static void event_base(integ_event *ev, const conn *c, const conn_rec *r, call *k, char xid[17]) {
    memset(ev, 0, sizeof(*ev));
    short_id(xid);
    ev->route_key = k->route_key;
    ev->event_type = k->event_type;
    ev->connection_id = c->id;
    ev->request_id = k->request_id;
    ev->extended_request_id = xid;
    ev->domain_name = r ? r->domain : "localhost";
    ev->stage = G.cfg->stage_name;
    ev->api_id = G.api_id;
    ev->connected_at_ms = r ? r->connected_at_ms : k->start_epoch_ms;
    ev->request_time_ms = k->start_epoch_ms;
    ev->source_ip = c->source_ip;
    ev->user_agent = c->user_agent;
    ev->authorizer = r ? r->authorizer : NULL;
}

/* The upgrade request's headers, borrowed from req. Caller frees the array. */
static integ_header *req_headers(const http_request *req, size_t *n) {
    integ_header *h = xcalloc(req->nheaders + 1, sizeof(*h));
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header *x = &req->headers[i];
        h[i] = (integ_header){req->raw + x->name_off, x->name_len, req->raw + x->value_off,
                              x->value_len};
    }
    *n = req->nheaders;
    return h;
}

static call *call_new(call_kind kind, size_t slot, const conn *c, const char *route_key,
                      const char *event_type) {
    call *k = xcalloc(1, sizeof(*k));
    k->kind = kind;
    k->slot = slot;
    memcpy(k->conn_id, c->id, sizeof(k->conn_id));
    random_uuid(k->request_id);
    k->route_key = route_key;
    k->event_type = event_type;
    k->start_epoch_ms = clock_wall_ms();
    snprintf(k->source_ip, sizeof(k->source_ip), "%s", c->source_ip);
    k->worker = c->srv->worker_index;
    return k;
}

static void call_free(call *k) {
    free(k->trace_body);
    free(k->cache_key);
    free(k);
}

static void on_done(void *ctx, const integ_http_response *resp);

/* Post json to url for k, within the per-integration bound. Returns 0,
 * WSG_E_HTTP_TOO_MANY when the bound is reached, or integ_http_post's code
 * (k is then the caller's). */
static int post(call *k, const char *url, char *json, size_t len, int64_t timeout_s) {
    if (W->in_flight[k->slot] >= (size_t)G.cfg->integration_max_concurrency) {
        free(json);
        return WSG_E_HTTP_TOO_MANY;
    }
    int rc = integ_http_post(W->http, url, json, len, (long)(timeout_s * 1000), on_done, k);
    free(json);
    if (rc == 0) W->in_flight[k->slot]++;
    return rc;
}

/* ---- logs ---- */

/* The HTTP authorizer's principalId of r (NULL: none), when it gave one. */
static void log_principal(log_line *l, const conn_rec *r) {
    json_t *p = r && r->authorizer ? json_object_get(r->authorizer, "principalId") : NULL;
    if (json_is_string(p)) log_str(l, "authorizer.principalId", json_string_value(p));
}

static void log_call(const call *k, int status, const char *error, double seconds) {
    if (!log_enabled(LOG_INFO)) return;
    log_line l;
    /* A message's integration call is its access line (the built-in
     * route's would be); the calls around a connection's life are their own
     * event, besides the CONNECT and DISCONNECT access lines. */
    log_begin(&l, LOG_INFO, k->kind == CALL_MESSAGE ? "access" : "integration");
    conn_rec *r = rec_get(k->conn_id);
    access_line_context(&l, G.cfg,
                        &(access_line){.request_id = k->request_id,
                                       .connection_id = k->conn_id,
                                       .event_type = k->event_type,
                                       .route_key = k->route_key,
                                       .status = status,
                                       .request_time_epoch = k->start_epoch_ms,
                                       .latency_ms = seconds * 1000.0,
                                       .source_ip = k->source_ip,
                                       .user_agent = r ? r->c->user_agent : NULL,
                                       .user_agent_optional = true,
                                       .worker = k->worker});
    access_line_tags(&l, G.cfg);
    if (k->trace_body) log_strn(&l, "body", k->trace_body, k->trace_len, ACCESS_LINE_TRACE_MAX);
    log_principal(&l, r);
    if (error) log_str(&l, "error.message", error);
    log_end(&l);
}

void integ_log_fields(log_line *l, const conn *c) { log_principal(l, rec_get(c->id)); }

/* ---- the client-facing error of a message route ---- */

static void send_error(conn *c, const char *message, const call *k) {
    json_t *j = json_pack("{s:s,s:s,s:s}", "message", message, "connectionId", k->conn_id,
                          "requestId", k->request_id);
    char *txt = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!txt) abort();
    conn_send_data(c, WS_OP_TEXT, txt, strlen(txt));
    free(txt);
}

/* ---- $connect ---- */

static void connect_finish(conn_rec *r, int status, const char *message) {
    conn *c = r->c;
    const char *principal = NULL;
    json_t *p = r->authorizer ? json_object_get(r->authorizer, "principalId") : NULL;
    if (json_is_string(p)) principal = json_string_value(p);
    if (status != 0) {
        /* Refused: the connection never opens, so nothing else forgets it. */
        strmap_remove(&W->conns, r->id);
        rec_free(r);
        principal = NULL;
    }
    G.hooks.connect_done(c, status, message, principal);
}

/* The $connect integration for r (after the authorizer, when there is
 * one). Returns 0 when there is none, INTEG_PENDING, or
 * WSG_E_HTTP_TOO_MANY at the concurrency bound. */
static int connect_integration(conn_rec *r, const http_request *req) {
    if (G.connect < 0) return 0;
    call *k = call_new(CALL_CONNECT, (size_t)G.connect, r->c, "$connect", "CONNECT");
    integ_event ev;
    char xid[17];
    event_base(&ev, r->c, r, k, xid);
    size_t n;
    integ_header *h = req_headers(req, &n);
    ev.headers = h;
    ev.nheaders = n;
    size_t ql;
    ev.query = http_request_query(req, &ql);
    ev.query_len = ql;
    size_t len;
    char *json = integ_event_json(&ev, &len);
    free(h);
    if (post(k, G.routes[G.connect].url, json, len, G.cfg->lambda_timeout) != 0) {
        metrics_count_integration_call_error(G.hooks.metrics(), G.routes[G.connect].slot);
        log_call(k, 429, "integration concurrency limit reached", 0);
        call_free(k);
        return WSG_E_HTTP_TOO_MANY;
    }
    return INTEG_PENDING;
}

/* The value of identity source src in req (malloc'd), or NULL when absent
 * or empty (API Gateway then answers 401 without asking the authorizer). */
static char *identity_value(const http_request *req, const char *src) {
    static const char h[] = "route.request.header.", q[] = "route.request.querystring.";
    if (strncmp(src, h, sizeof h - 1) == 0) {
        size_t len;
        const char *v = http_request_header(req, src + sizeof h - 1, &len);
        return v && len ? xstrndup(v, len) : NULL;
    }
    if (strncmp(src, q, sizeof q - 1) == 0) {
        size_t ql;
        const char *qs = http_request_query(req, &ql);
        char *v = NULL;
        if (!http_query_param(qs, ql, src + sizeof q - 1, &v)) return NULL;
        if (!*v) {
            free(v);
            return NULL;
        }
        return v;
    }
    return NULL;
}

/* The authorizer's cache key: each identity value as "LENGTH:VALUE", so
 * that no two lists of values make the same key; NULL (and *missing set)
 * when one is missing, or when there are no identity sources (nothing to
 * cache by). */
static char *identity_key(const http_request *req, bool *missing) {
    *missing = false;
    /* Without identity sources there is nothing to tell callers apart:
     * every connect is asked. */
    if (G.cfg->authorizer_identity_sources_count == 0) return NULL;
    size_t cap = 64, len = 0;
    char *key = xmalloc(cap);
    key[0] = '\0';
    for (size_t i = 0; i < G.cfg->authorizer_identity_sources_count; i++) {
        char *v = identity_value(req, G.cfg->authorizer_identity_sources[i]);
        if (!v) {
            *missing = true;
            free(key);
            return NULL;
        }
        size_t vl = strlen(v);
        while (len + vl + 32 > cap) cap *= 2;
        key = xrealloc(key, cap);
        len += (size_t)snprintf(key + len, cap - len, "%zu:", vl);
        memcpy(key + len, v, vl + 1);
        len += vl;
        free(v);
    }
    return key;
}

/* The authorizer's decision for r. Returns as connect_integration, or
 * WSG_E_AUTH_FORBIDDEN for a Deny. */
static int decide(conn_rec *r, bool allow, const json_t *context, const http_request *req) {
    if (!allow) return WSG_E_AUTH_FORBIDDEN;
    json_decref(r->authorizer);
    r->authorizer = context ? json_deep_copy(context) : json_object();
    return connect_integration(r, req);
}

int integ_connect_start(conn *c, const http_request *req) {
    worker_for(c->srv->loop);
    conn_rec *r = rec_get(c->id);
    if (!r) r = rec_new(c, req);
    int st = 0;
    if (G.http_auth) {
        bool missing = false;
        char *key = identity_key(req, &missing);
        auth_entry *e =
            key && G.cfg->authorizer_cache_ttl_s > 0 ? strmap_get(&W->auth_cache, key) : NULL;
        if (missing) {
            st = WSG_E_AUTH_DENIED;
        } else if (e && e->expires_ms > (uint64_t)clock_mono_ms()) {
            st = decide(r, e->allow, e->context, req);
        } else {
            call *k = call_new(CALL_AUTH, AUTH_SLOT, c, "$connect", "CONNECT");
            k->cache_key = key;
            key = NULL;
            integ_event ev;
            char xid[17];
            event_base(&ev, c, NULL, k, xid);
            ev.domain_name = r->domain;
            size_t n, ql, len;
            integ_header *h = req_headers(req, &n);
            ev.headers = h;
            ev.nheaders = n;
            ev.query = http_request_query(req, &ql);
            ev.query_len = ql;
            char arn[600];
            snprintf(arn, sizeof arn, "arn:aws:execute-api:%s:000000000000:%s/%s/$connect",
                     G.cfg->aws_region, G.api_id, G.cfg->stage_name);
            char *json = integ_authorizer_event_json(&ev, arn, &len);
            free(h);
            if (post(k, G.cfg->authorizer_url, json, len, G.cfg->lambda_timeout) != 0) {
                log_call(k, 429, "authorizer concurrency limit reached", 0);
                call_free(k);
                st = WSG_E_HTTP_TOO_MANY;
            } else {
                st = INTEG_PENDING;
            }
        }
        free(key);
    } else {
        st = connect_integration(r, req);
    }
    if (st < 0) {
        strmap_remove(&W->conns, r->id);
        rec_free(r);
    }
    return st;
}

void integ_conn_open(conn *c, const http_request *req) {
    if (!G.nroutes && !G.http_auth) return; /* nothing to remember */
    worker_for(c->srv->loop);
    conn_rec *r = rec_get(c->id);
    if (!r) r = rec_new(c, req);
    r->open = true;
}

void integ_conn_closed(conn *c, uint16_t peer_code) {
    conn_rec *r = W ? strmap_remove(&W->conns, c->id) : NULL;
    if (!r) return;
    if (r->open && G.disconnect >= 0) {
        call *k = call_new(CALL_DISCONNECT, (size_t)G.disconnect, c, "$disconnect", "DISCONNECT");
        integ_event ev;
        char xid[17];
        event_base(&ev, c, r, k, xid);
        ev.disconnect_status_code = peer_code ? peer_code : 1006;
        ev.disconnect_reason = "";
        integ_header host = {"Host", 4, r->domain, strlen(r->domain)};
        ev.headers = &host;
        ev.nheaders = 1;
        size_t len;
        char *json = integ_event_json(&ev, &len);
        if (post(k, G.routes[G.disconnect].url, json, len, G.cfg->lambda_timeout) != 0) {
            metrics_count_integration_call_error(G.hooks.metrics(), G.routes[G.disconnect].slot);
            log_call(k, 429, "integration concurrency limit reached", 0);
            call_free(k);
        }
    }
    rec_free(r);
}

/* ---- messages ---- */

bool integ_message(conn *c, const char *custom_route, const uint8_t *data, size_t len,
                   bool binary) {
    int idx = custom_route ? route_index(custom_route) : G.def;
    if (idx < 0) return false;
    worker_for(c->srv->loop);
    route_integ *ri = &G.routes[idx];
    conn_rec *r = rec_get(c->id);
    call *k = call_new(CALL_MESSAGE, (size_t)idx, c, ri->key, "MESSAGE");
    if (G.cfg->enable_data_trace && !binary && log_enabled(LOG_INFO)) {
        k->trace_len = len < ACCESS_LINE_TRACE_MAX ? len : ACCESS_LINE_TRACE_MAX;
        k->trace_body = xmalloc(k->trace_len + 1);
        memcpy(k->trace_body, data, k->trace_len);
        k->trace_body[k->trace_len] = '\0';
    }
    integ_event ev;
    char xid[17], mid[17];
    event_base(&ev, c, r, k, xid);
    short_id(mid);
    ev.message_id = mid;
    ev.body = data;
    ev.body_len = len;
    ev.binary = binary;
    /* One connection may not take the whole worker's concurrency: the
     * others would all get 429 while its calls wait on a slow backend. */
    if (r && r->messages_in_flight >= (uint64_t)G.cfg->integration_connection_concurrency) {
        metrics_count_integration_call_error(G.hooks.metrics(), ri->slot);
        log_call(k, 429, "integration concurrency limit per connection reached", 0);
        send_error(c, "Too Many Requests", k);
        call_free(k);
        return true;
    }
    size_t jlen;
    char *json = integ_event_json(&ev, &jlen);
    if (post(k, ri->url, json, jlen, G.cfg->lambda_message_timeout) != 0) {
        metrics_count_integration_call_error(G.hooks.metrics(), ri->slot);
        log_call(k, 429, "integration concurrency limit reached", 0);
        send_error(c, "Too Many Requests", k);
        call_free(k);
    } else if (r) {
        r->messages_in_flight++;
        k->counted = true;
    }
    return true;
}

/* ---- completions ---- */

static const char *http_error_text(const integ_http_response *resp) {
    return resp->error == INTEG_HTTP_TIMEOUT ? "Endpoint request timed out"
                                             : "Internal server error";
}

static void auth_done(call *k, const integ_http_response *resp) {
    int status = 0;
    const char *message = NULL, *error = NULL;
    integ_auth_decision d = {0};
    if (resp->error != INTEG_HTTP_OK) {
        error = resp->error_text;
        status = 500;
    } else if (resp->status == 401 || resp->status == 403) {
        status = (int)resp->status;
    } else if (resp->status < 200 || resp->status > 299) {
        error = "authorizer answered with an error status";
        status = 500;
    } else if (integ_auth_parse(resp->body, resp->len, &d) != 0) {
        error = "authorizer answer is neither a policy nor the simple form";
        status = 500;
    } else {
        status = d.allow ? 200 : 403;
        /* Only decisions are cached: an error is asked again next time. */
        if (k->cache_key && G.cfg->authorizer_cache_ttl_s > 0) {
            if (W->auth_cache.count >= AUTH_CACHE_MAX) auth_cache_clear(&W->auth_cache);
            auth_entry *e = xcalloc(1, sizeof(*e));
            e->allow = d.allow;
            e->context = d.context ? json_incref(d.context) : NULL;
            e->expires_ms =
                (uint64_t)clock_mono_ms() + (uint64_t)G.cfg->authorizer_cache_ttl_s * 1000;
            void *old = NULL;
            strmap_put(&W->auth_cache, k->cache_key, e, &old);
            if (old) auth_entry_free(old);
        }
    }
    log_call(k, status, error, resp->seconds);
    conn_rec *r = rec_get(k->conn_id);
    if (r) {
        int st = status;
        if (st == 200) {
            int rc = decide(r, true, d.context, r->c->req);
            st = rc < 0 ? wsg_err_http_status(rc) : rc;
            if (rc < 0) message = wsg_strerror(rc);
        } else {
            message = st == 401   ? "Unauthorized"
                      : st == 403 ? "Forbidden"
                                  : "Internal Server Error";
        }
        if (st != INTEG_PENDING) connect_finish(r, st, message);
    }
    json_decref(d.context);
}

/* $connect and $disconnect: their latency is observed by the application
 * for the whole request (the CONNECT and DISCONNECT access lines), so only
 * errors are counted here; the call's own latency is in its log line. */
static void connect_done(call *k, const integ_http_response *resp) {
    route_integ *ri = &G.routes[k->slot];
    metrics *m = G.hooks.metrics();
    int status;
    const char *error = NULL, *message = NULL;
    integ_result res;
    if (resp->error != INTEG_HTTP_OK) {
        error = resp->error_text;
        status = resp->error == INTEG_HTTP_TIMEOUT ? 504 : 500;
        message = http_error_text(resp);
    } else if (integ_result_parse(resp->status, resp->body, resp->len, &res) != 0) {
        error = "integration answer is not a Lambda proxy result";
        status = 500;
        message = "Internal server error";
    } else {
        status = res.status;
        integ_result_free(&res);
        if (status >= 500) error = "integration answered with an error status";
        else if (status >= 300) message = http_status_text(status);
    }
    if (error) metrics_count_integration_call_error(m, ri->slot);
    log_call(k, status, error, resp->seconds);
    conn_rec *r = rec_get(k->conn_id);
    if (!r) return;
    if (status >= 500 && !message) message = "Internal server error";
    connect_finish(r, status >= 200 && status <= 299 ? 0 : status, message);
}

static void message_done(call *k, const integ_http_response *resp) {
    route_integ *ri = &G.routes[k->slot];
    metrics *m = G.hooks.metrics();
    metrics_observe_latency(m, ri->slot, resp->seconds);
    integ_result res = {0};
    const char *error = NULL, *client = NULL;
    int status;
    if (resp->error != INTEG_HTTP_OK) {
        error = resp->error_text;
        client = http_error_text(resp);
        status = resp->error == INTEG_HTTP_TIMEOUT ? 504 : 500;
    } else if (integ_result_parse(resp->status, resp->body, resp->len, &res) != 0) {
        error = "integration answer is not a Lambda proxy result";
        client = "Internal server error";
        status = 500;
    } else if (resp->status < 200 || resp->status > 299) {
        error = "integration answered with an error status";
        client = "Internal server error";
        status = 500;
    } else {
        status = res.status;
    }
    if (error) metrics_count_integration_call_error(m, ri->slot);
    log_call(k, status, error, resp->seconds);
    conn_rec *r = rec_get(k->conn_id);
    if (r && r->open) {
        if (client) send_error(r->c, client, k);
        else if (ri->two_way && res.body)
            conn_send_data(r->c, res.binary ? WS_OP_BINARY : WS_OP_TEXT, res.body, res.body_len);
    }
    integ_result_free(&res);
}

static void disconnect_done(call *k, const integ_http_response *resp) {
    route_integ *ri = &G.routes[k->slot];
    metrics *m = G.hooks.metrics();
    integ_result res;
    const char *error = NULL;
    int status = 200;
    if (resp->error != INTEG_HTTP_OK) {
        error = resp->error_text;
        status = resp->error == INTEG_HTTP_TIMEOUT ? 504 : 500;
    } else if (integ_result_parse(resp->status, resp->body, resp->len, &res) != 0) {
        error = "integration answer is not a Lambda proxy result";
        status = 500;
    } else {
        status = res.status;
        integ_result_free(&res);
    }
    if (error) metrics_count_integration_call_error(m, ri->slot);
    log_call(k, status, error, resp->seconds);
}

static void on_done(void *ctx, const integ_http_response *resp) {
    call *k = ctx;
    if (resp) {
        W->in_flight[k->slot]--;
        conn_rec *r = k->counted ? rec_get(k->conn_id) : NULL;
        if (r) r->messages_in_flight--;
        switch (k->kind) {
        case CALL_AUTH: auth_done(k, resp); break;
        case CALL_CONNECT: connect_done(k, resp); break;
        case CALL_MESSAGE: message_done(k, resp); break;
        case CALL_DISCONNECT: disconnect_done(k, resp); break;
        }
    }
    call_free(k);
}
