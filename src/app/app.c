#include "app/app.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/access_log.h"
#include "app/handlers.h"
#include "app/presence_limit.h"
#include "common/alloc.h"
#include "common/random.h"
#include "common/clock.h"
#include "engine/redis.h"
#include "integrations/integ.h"
#include "log/log.h"
#include "mgmt/mgmt.h"

static hub *hub_of(conn *c) { return c->srv->app; }
static app *app_of(conn *c) { return hub_of(c)->app; }

hub *app_hub(app *a, size_t i) {
    assert(i < a->nhubs);
    return &a->hubs[i];
}

/* This thread's counters when it is a worker other than the first. */
static _Thread_local metrics *worker_metrics;

metrics *app_metrics(app *a) { return worker_metrics ? worker_metrics : a->metrics; }

/* The read time of the message being handled, for the chat's phases. */
static _Thread_local uint64_t message_received_ns;

uint64_t app_message_received_ns(void) { return message_received_ns; }

/* [integrations] Whether the message being handled came as a binary frame
 * (an integration's event then carries it base64). */
static _Thread_local bool message_binary;

void app_worker_enter(app *a, server *srv, bool first) {
    server_enter(srv);
    assert(((hub *)srv->app)->srv == srv);
    if (a->cfg->engine_id == CONFIG_ENGINE_REDIS)
        engine_redis_start(a->engine, ((hub *)srv->app)->index);
    if (!first) worker_metrics = metrics_thread_new();
}

void app_worker_leave(app *a) {
    integ_worker_close(); /* [integrations] */
    metrics_thread_free(worker_metrics);
    worker_metrics = NULL;
}

/* What authorize hands to on_open. */
typedef struct pending_connect {
    auth_identity id;
    access_record rec;
} pending_connect;

/* The Origin allow-list (against cross-site WebSocket hijacking): with
 * allowed_origins set, the Origin header must be one of them exactly. */
static bool origin_allowed(const app *a, const http_request *req) {
    if (a->cfg->allowed_origins_count == 0) return true;
    size_t olen;
    const char *origin = http_request_header(req, "Origin", &olen);
    if (!origin) return false;
    for (size_t i = 0; i < a->cfg->allowed_origins_count; i++) {
        const char *ok = a->cfg->allowed_origins[i];
        if (strlen(ok) == olen && memcmp(ok, origin, olen) == 0) return true;
    }
    return false;
}

static int app_authorize(conn *c, const http_request *req, const char **message) {
    app *a = app_of(c);
    server_run_own_inbox();
    pending_connect *p = xcalloc(1, sizeof(*p));
    size_t tpl = 0;
    const char *tp = http_request_header(req, "traceparent", &tpl);
    access_start(a->cfg, &p->rec, "CONNECT", tp, tpl);
    p->rec.route_key = "$connect";
    metrics_count_connect(app_metrics(a), METRICS_SLOT_CONNECT);
    uint64_t now = throttle_now_ms();
    int st = origin_allowed(a, req) ? 0 : 403;
    if (st) *message = "Origin not allowed";
    throttle_verdict tv = st ? THROTTLE_OK : throttle_connect(&a->throttle, c->source_ip, now);
    if (tv != THROTTLE_OK) {
        st = 429;
        *message = "Too Many Requests";
        metrics_count_throttled(app_metrics(a), tv == THROTTLE_STAGE ? METRICS_THROTTLE_STAGE
                                                                     : METRICS_THROTTLE_ADDRESS);
    }
    if (st == 0) st = auth_http_status(auth_identity_from_query(req, &p->id), message);
    if (st == 0) {
        st = auth_http_status(a->auth->authorize(a->auth, req, &p->id), message);
        if (st == 401 || st == 403) throttle_auth_failed(&a->throttle, c->source_ip, now);
    }
    /* [integrations] the HTTP authorizer and the $connect integration may
     * answer later (integ_connect_answered). */
    if (st == 0 && integ_connect_deferred()) {
        int rc = integ_connect_start(c, req);
        st = rc == INTEG_PENDING ? INTEG_PENDING : auth_http_status(rc, message);
        if (st == 401 || st == 403) throttle_auth_failed(&a->throttle, c->source_ip, now);
    }
    if (st != 0 && st != INTEG_PENDING) {
        metrics_count_client_error(app_metrics(a), METRICS_SLOT_CONNECT);
        p->rec.status = st;
        p->rec.error = *message;
        access_finish(a->cfg, a->tracer, c, &p->rec);
        auth_identity_clear(&p->id);
        free(p);
        return st;
    }
    c->subprotocol = p->id.subprotocol; /* answered in the 101 */
    p->id.subprotocol = NULL;
    c->app = p; /* taken over by on_open */
    return st == INTEG_PENDING ? SERVER_AUTH_PENDING : 0;
}

static void app_open(conn *c, const http_request *req) {
    hub *h = hub_of(c);
    app *a = h->app;
    server_run_own_inbox();
    pending_connect *p = c->app;
    session *s = registry_add(&h->reg, c, p->id.user_id, p->id.username);
    c->app = s;
    uint64_t now = throttle_now_ms();
    throttle_connection_init(&a->throttle, &s->bucket, now);
    throttle_opened(&a->throttle, c->source_ip, now);
    engine_conn_opened(a->engine, &s->record, c, h->index, s->user_id, s->username,
                       registry_user_alone(s));
    /* [integrations] A $connect integration replaces the built-in one
     * (room, welcome, user_joined, resume). */
    integ_conn_open(c, req);
    if (!integ_route_has("$connect")) {
        handlers_join(h, s, p->id.room_id);
        handlers_room_join(a, s, p->id.room_id);
        handlers_welcome(s);
        handlers_presence(h, s->room->id, s, "user_joined", c->id);
        /* Resume after a reconnect: ?sinceSeq=S replays the room from S. */
        size_t qlen;
        const char *q = http_request_query(req, &qlen);
        char *since = NULL;
        if (http_query_param(q, qlen, "sinceSeq", &since) && *since) {
            char *end;
            errno = 0;
            long long v = strtoll(since, &end, 10);
            /* Digits only, within range: strtoll alone took "+5", " 5" and
             * saturated 99999999999999999999 to another number. */
            bool digits = *since >= '0' && *since <= '9';
            if (digits && *end == '\0' && errno == 0) handlers_resume(h, s, v);
            else handlers_send_error(c, "sinceSeq must be a non-negative integer", "BAD_REQUEST");
        }
        free(since);
    }
    double dt = access_finish(a->cfg, a->tracer, c, &p->rec);
    metrics_observe_latency(app_metrics(a), METRICS_SLOT_CONNECT, dt / 1000.0);
    auth_identity_clear(&p->id);
    free(p);
}

/* Handle one message of session s that the router has parsed into m
 * (whose body and selected key are released here), on s's worker. */
static void handle_routed(hub *h, session *s, route_match *mp, const uint8_t *data, size_t len) {
    app *a = h->app;
    route_match m = *mp;
    /* A message may carry its own W3C trace context. */
    json_t *tp = m.body ? json_object_get(m.body, "traceparent") : NULL;
    access_record rec;
    access_start(a->cfg, &rec, "MESSAGE", json_is_string(tp) ? json_string_value(tp) : NULL,
                 json_is_string(tp) ? json_string_length(tp) : 0);
    rec.route_key = m.route_key;
    char *redacted =
        a->cfg->enable_data_trace && log_enabled(LOG_INFO) ? access_redacted_body(&m) : NULL;
    rec.body = redacted ? redacted : (const char *)data;
    rec.body_len = redacted ? strlen(redacted) : len;
    handler_result res = {200, NULL};
    /* The same monotonic clock as throttle_now_ms, read once per message. */
    uint64_t now = message_received_ns ? message_received_ns / 1000000u : throttle_now_ms();
    throttle_verdict tv = throttle_message(&a->throttle, &s->bucket, NULL, now);
    if (tv == THROTTLE_OK && m.outcome == ROUTED)
        tv = throttle_message(&a->throttle, NULL,
                              m.selected ? m.selected : router_route_name(m.route), now);
    if (tv == THROTTLE_OK && m.outcome == ROUTED && presence_limit_applies(m.route) &&
        !presence_limit_take(a->cfg, &s->presence, now))
        tv = THROTTLE_CONNECTION;
    if (tv != THROTTLE_OK) {
        static const metrics_throttle_scope scope[] = {
            [THROTTLE_STAGE] = METRICS_THROTTLE_STAGE,
            [THROTTLE_ROUTE] = METRICS_THROTTLE_ROUTE,
            [THROTTLE_CONNECTION] = METRICS_THROTTLE_CONNECTION,
            [THROTTLE_ADDRESS] = METRICS_THROTTLE_ADDRESS};
        metrics_count_throttled(app_metrics(a), scope[tv]);
        handlers_send_error(s->c, "Too Many Requests", "THROTTLED");
        res.status = 429;
        res.error = "Too Many Requests";
        m.outcome = ROUTE_THROTTLED;
    }
    /* [integrations] A route with an HTTP integration goes there: its
     * access line, latency and errors are written when it answers. */
    if (m.outcome != ROUTE_THROTTLED &&
        integ_message(s->c, m.custom_index >= 0 ? m.route_key : NULL, data, len, message_binary)) {
        metrics_count_message(app_metrics(a), m.custom_index >= 0 ? a->custom_slots[m.custom_index]
                                                                  : METRICS_SLOT_DEFAULT);
        free(redacted);
        free(m.selected);
        json_decref(m.body);
        return;
    }
    switch (m.outcome) {
    case ROUTE_THROTTLED: break;
    case ROUTE_TOO_DEEP:
        handlers_send_error(s->c, "JSON nesting too deep", "BAD_REQUEST");
        res.status = 400;
        res.error = "JSON nesting too deep";
        break;
    case ROUTE_INVALID_JSON:
        handlers_send_error(s->c, "Invalid JSON format", "BAD_REQUEST");
        res.status = 400;
        res.error = "Invalid JSON format";
        break;
    case ROUTE_UNKNOWN:
        handlers_send_errorf(s->c, "BAD_REQUEST", "Unknown message type: %s", m.selected);
        res.status = 400;
        res.error = "Unknown message type";
        break;
    case ROUTED: handlers_run(h, s, m.route, m.body, &res); break;
    }
    rec.status = res.status;
    rec.error = res.error;
    double dt = access_finish(a->cfg, a->tracer, s->c, &rec);
    free(redacted);
    int slot = m.custom_index >= 0 ? a->custom_slots[m.custom_index] : METRICS_SLOT_DEFAULT;
    metrics_count_message(app_metrics(a), slot);
    if (res.status >= 500) metrics_count_execution_error(app_metrics(a), slot);
    else if (res.status >= 400) metrics_count_client_error(app_metrics(a), slot);
    metrics_observe_latency(app_metrics(a), slot, dt / 1000.0);
    free(m.selected);
    json_decref(m.body);
}

void app_handle_message(hub *h, session *s, uint8_t opcode, const uint8_t *data, size_t len) {
    uint64_t outer = message_received_ns;
    message_received_ns = clock_mono_ns();
    message_binary = opcode == WS_OP_BINARY; /* [integrations] */
    /* What other threads posted to this worker is queued on its
     * connections before anything this message makes is sent. */
    server_run_own_inbox();
    route_match m;
    router_route(&h->app->routes, (const char *)data, len, opcode == WS_OP_BINARY, &m);
    handle_routed(h, s, &m, data, len);
    message_received_ns = outer;
}

static void app_message(conn *c, uint8_t opcode, const uint8_t *data, size_t len) {
    app_handle_message(hub_of(c), c->app, opcode, data, len);
}

static void app_closed(conn *c) {
    hub *h = hub_of(c);
    app *a = h->app;
    session *s = c->app;
    if (!s) return;
    server_run_own_inbox();
    access_record rec;
    access_start(a->cfg, &rec, "DISCONNECT", NULL, 0);
    rec.route_key = "$disconnect";
    /* Leave every index first ($disconnect sees a registry without this
     * connection), then tell the room. */
    if (s->room) {
        char *room_id = xstrdup(s->room->id);
        if (handlers_leave(h, s) > 0) handlers_presence(h, room_id, s, "user_left", NULL);
        free(room_id);
    }
    engine_conn_closed(a->engine, c->id, s->user_id, h->index, registry_user_alone(s));
    registry_remove(&h->reg, s);
    c->app = NULL;
    throttle_closed(&a->throttle, c->source_ip, throttle_now_ms());
    double dt = access_finish(a->cfg, a->tracer, c, &rec);
    metrics_observe_latency(app_metrics(a), METRICS_SLOT_DISCONNECT, dt / 1000.0);
    integ_conn_closed(c, c->peer_close_code); /* [integrations] the $disconnect event */
}

/* Plain HTTP: the management API, health, metrics and the web pages, on
 * the worker that accepted the request, with no lock. */
static bool app_http(conn *c, const http_request *req) {
    server_run_own_inbox();
    return mgmt_handle(app_of(c), c, req);
}

/* Plain HTTP is routed on its head first: only the management API's POST
 * routes read a body, and only with our credentials in the headers. */
static long app_http_head(conn *c, const http_request *req) {
    return mgmt_http_head(app_of(c), c, req);
}

/* ---- [integrations] the application's side of src/integrations ---- */

/* The one application, for integ_metrics (integrations run outside any
 * server callback). */
static app *integ_app;

static metrics *integ_metrics(void) { return app_metrics(integ_app); }

/* A deferred $connect ended (on c's loop): refused, its access line; else
 * the authorizer's principalId becomes the user id; then the net layer
 * sends the 101 (on_open) or the refusal. */
static void integ_connect_answered(conn *c, int status, const char *message,
                                   const char *principal) {
    app *a = app_of(c);
    pending_connect *p = c->app;
    if (p && status != 0) {
        if (status == 401 || status == 403)
            throttle_auth_failed(&a->throttle, c->source_ip, throttle_now_ms());
        metrics_count_client_error(app_metrics(a), METRICS_SLOT_CONNECT);
        p->rec.status = status;
        p->rec.error = message;
        access_finish(a->cfg, a->tracer, c, &p->rec);
        auth_identity_clear(&p->id);
        free(p);
        c->app = NULL;
    } else if (p && principal && auth_valid_id(principal)) {
        free(p->id.user_id);
        p->id.user_id = xstrdup(principal);
    }
    server_authorize_done(c, status, message);
}

/* The client left while its $connect was pending. */
static void app_auth_abandoned(conn *c) {
    pending_connect *p = c->app;
    if (p) {
        auth_identity_clear(&p->id);
        free(p);
        c->app = NULL;
    }
    integ_conn_closed(c, 0);
}

/* ---- end [integrations] ---- */

/* The net layer refused a socket of an address over max_connections_per_ip. */
static void app_refused(conn *c, int status) {
    if (status == 429) metrics_count_throttled(app_metrics(app_of(c)), METRICS_THROTTLE_ADDRESS);
}

static const server_handlers api_handlers = {
    .on_http = app_http,
    .on_http_head = app_http_head,
    .on_refused = app_refused,
    .on_auth_abandoned = app_auth_abandoned,  /* [integrations] */
    .on_http_abandoned = mgmt_http_abandoned, /* [forward] @connections on another node */
    .authorize = app_authorize,
    .on_open = app_open,
    .on_message = app_message,
    .on_close = app_closed,
};

const server_handlers *app_handlers(void) { return &api_handlers; }

/* Gauges read when /metrics is rendered (on any worker's thread), so
 * counting them costs nothing per message. */
static void app_gauges(metrics_gauges *g, void *ctx) {
    app *a = ctx;
    g->value[METRICS_GAUGE_ROOMS] = (double)engine_room_total(a->engine);
    if (a->store) {
        store_stats st;
        store_get_stats(a->store, &st);
        g->value[METRICS_GAUGE_STORE_BATCH_LATENCY] = st.last_batch_ms / 1000.0;
        g->value[METRICS_GAUGE_STORE_BATCH_SIZE] = st.last_batch_size;
        g->value[METRICS_GAUGE_STORE_PENDING_OPS] = (double)store_pending(a->store);
        g->value[METRICS_GAUGE_STORE_REJECTED] = (double)st.rejected;
        g->value[METRICS_GAUGE_STORE_WAL_PAGES] = st.wal_pages;
        g->value[METRICS_GAUGE_STORE_CHECKPOINTS] = (double)st.checkpoints;
        g->value[METRICS_GAUGE_STORE_BATCHES] = (double)st.batches;
        g->value[METRICS_GAUGE_STORE_INLINE_CKPTS] = (double)st.inline_checkpoints;
        g->value[METRICS_GAUGE_STORE_ARCHIVE_SYNCS] = (double)st.archive_syncs;
    }
    size_t queued = 0, parsers = 0;
    for (size_t i = 0; i < a->nhubs; i++) {
        if (!a->hubs[i].srv) continue;
        queued += server_queued_bytes(a->hubs[i].srv);
        parsers += server_parser_bytes(a->hubs[i].srv);
    }
    g->value[METRICS_GAUGE_CONNECTIONS] = (double)server_open_total();
    g->value[METRICS_GAUGE_QUEUED_BYTES] = (double)queued;
    g->value[METRICS_GAUGE_PARSER_BYTES] = (double)parsers;
}

/* A source address with no connection is forgotten after this long quiet
 * (its connect bucket and auth-failure window go with it). */
#define APP_ADDR_IDLE_MS 60000
/* How often quiet addresses are looked for. */
#define APP_GC_INTERVAL_MS 10000

static void on_gc(uv_timer_t *t) {
    app *a = t->data;
    throttle_gc(&a->throttle, throttle_now_ms(), APP_ADDR_IDLE_MS);
}

/* Is key_id still used by a stored value? (for destroying retired keys) */
static bool key_in_use(uint32_t key_id, void *ctx) { return store_key_in_use(ctx, key_id) != 0; }

/* The key ring (encryption at rest) and the store. Returns 0, or the key
 * ring's code or the store's (WSG_E_STORE_*) with *err filled. */
static int open_store(app *a, const config *cfg, uv_loop_t *loop, const char *store_path,
                      wsg_error *err) {
    if (cfg->enable_encryption) {
        char *kpath = crypto_key_file_path(cfg->data_dir, cfg->kms_key_file);
        /* A configured key file must exist (a missing KMS key is an error);
         * the default one is created on first start. */
        bool create = !cfg->kms_key_file || !cfg->kms_key_file[0];
        wsg_error kerr;
        int krc = crypto_keyring_open(kpath, create, &a->keys, &kerr);
        free(kpath);
        if (krc < 0) return wsg_error_set(err, krc, "%s", kerr.message);
        int destroyed =
            crypto_keyring_destroy_expired(a->keys, time(NULL), cfg->kms_key_deletion_window,
                                           key_in_use, (void *)store_path, &kerr);
        if (destroyed > 0)
            log_msg(LOG_INFO, "key_destroyed", "%d retired keys destroyed", destroyed);
        else if (destroyed < 0) log_msg(LOG_ERROR, "key_error", "%s", kerr.message);
    }
    char pitr_dir[4096];
    snprintf(pitr_dir, sizeof(pitr_dir), "%s/pitr", cfg->data_dir);
    store_options so = {
        .sync_full = cfg->store_sync_id == CONFIG_SYNC_FULL,
        .ttl_days = cfg->message_ttl_days,
        .idempotency_window_s = cfg->idempotency_window_s,
        .pitr = cfg->enable_dynamodb_point_in_time_recovery,
        .pitr_retention_days = cfg->pitr_retention_days,
        .pitr_dir = pitr_dir,
        .pitr_snapshot_interval_s = (int)cfg->pitr_snapshot_interval_s,
        .keys = a->keys,
        .max_pending = (size_t)cfg->store_max_pending,
        .max_pending_bytes = (size_t)cfg->store_max_pending_bytes,
        .on_commit = handlers_store_committed,
        .on_commit_ctx = a,
    };
    a->store = store_open(store_path, loop, &so, err);
    if (!a->store) {
        crypto_keyring_free(a->keys);
        a->keys = NULL;
        return err ? err->code : WSG_E_STORE_OPEN;
    }
    return 0;
}

/* The $connect authorizer auth_mode names. Returns 0, or the JWT
 * authorizer's code with *err filled. */
static int open_auth(app *a, const config *cfg, wsg_error *err) {
    if (cfg->auth_mode_id == CONFIG_AUTH_JWT) {
        wsg_error jerr;
        a->auth = auth_jwt_new(cfg, &jerr);
        if (!a->auth) return wsg_error_set(err, jerr.code, "%s", jerr.message);
    } else if (cfg->auth_mode_id == CONFIG_AUTH_HTTP) {
        a->auth = integ_passthrough_authorizer(); /* [integrations] decided by integ */
    } else {
        a->auth = auth_demo();
    }
    return 0;
}

int app_init(app *a, const config *cfg, uv_loop_t *loop, const char *store_path, size_t nworkers,
             wsg_error *err) {
    memset(a, 0, sizeof(*a));
    if (nworkers < 1 || nworkers > DIRECTORY_MAX_WORKERS)
        return wsg_error_set(err, WSG_E_CONFIG_RULE,
                             "worker_threads must be from 1 to %d in api mode",
                             DIRECTORY_MAX_WORKERS);
    a->cfg = cfg;
    a->loop = loop;
    int rrc = router_init(&a->routes, cfg->route_selection_expression, cfg->custom_routes,
                          cfg->custom_routes_count);
    if (rrc < 0) return wsg_error_set(err, rrc, "%s", wsg_strerror(rrc));
    int rc = mgmt_credentials_load(cfg, &a->mgmt_creds, err);
    if (rc < 0) {
        router_free(&a->routes);
        return rc;
    }
    rc = open_auth(a, cfg, err);
    if (rc < 0) {
        router_free(&a->routes);
        return rc;
    }
    /* [integrations] */
    integ_app = a;
    static const integ_hooks hooks = {.connect_done = integ_connect_answered,
                                      .metrics = integ_metrics};
    rc = integ_init(cfg, &hooks, err);
    if (rc < 0) {
        router_free(&a->routes);
        a->auth->destroy(a->auth);
        return rc;
    }
    rc = open_store(a, cfg, loop, store_path, err);
    if (rc < 0) {
        router_free(&a->routes);
        a->auth->destroy(a->auth);
        a->auth = NULL;
        return rc;
    }
    a->routes.max_depth = (size_t)cfg->max_json_depth;
    a->engine = cfg->engine_id == CONFIG_ENGINE_REDIS
                    ? engine_redis_new(nworkers, handlers_deliver(), a->store, cfg, a->keys, err)
                    : engine_local_new(nworkers, handlers_deliver(), a->store);
    if (!a->engine) {
        store_close(a->store);
        a->store = NULL;
        crypto_keyring_free(a->keys);
        a->keys = NULL;
        router_free(&a->routes);
        a->auth->destroy(a->auth);
        a->auth = NULL;
        return err ? err->code : WSG_E_ENGINE_CONFIG;
    }
    a->nhubs = nworkers;
    a->hubs = xcalloc(nworkers, sizeof(*a->hubs));
    for (size_t i = 0; i < nworkers; i++) {
        a->hubs[i].app = a;
        a->hubs[i].index = (int)i;
        registry_init(&a->hubs[i].reg);
        room_joins_init(&a->hubs[i].joins);
    }
    throttle_init(&a->throttle, cfg, throttle_now_ms());
    uv_timer_init(loop, &a->gc_timer);
    a->gc_timer.data = a;
    uv_timer_start(&a->gc_timer, on_gc, APP_GC_INTERVAL_MS, APP_GC_INTERVAL_MS);
    uv_unref((uv_handle_t *)&a->gc_timer);
    a->metrics = metrics_thread_new();
    a->custom_slots = xcalloc(cfg->custom_routes_count + 1, sizeof(int));
    for (size_t i = 0; i < cfg->custom_routes_count; i++)
        a->custom_slots[i] = metrics_route_slot(cfg->custom_routes[i]);
    metrics_add_gauge_source(app_gauges, a);
    if (cfg->enable_xray_tracing && cfg->otlp_endpoint[0]) {
        a->tracer = trace_exporter_start(cfg->otlp_endpoint, cfg->api_name, cfg->stage_name, err);
        if (!a->tracer) {
            app_close(a);
            return err ? err->code : WSG_E_INTERNAL;
        }
    }
    return 0;
}

void app_attach(app *a, size_t i, server *srv) {
    assert(i < a->nhubs);
    a->hubs[i].srv = srv;
    if (a->cfg->engine_id == CONFIG_ENGINE_REDIS) engine_redis_attach(a->engine, (int)i, srv);
    else engine_local_attach(a->engine, (int)i, srv);
}

void app_close(app *a) {
    integ_worker_close(); /* [integrations] loop 0's requests (this thread's) */
    integ_free();
    metrics_remove_gauge_source(app_gauges, a);
    if (a->tracer) trace_exporter_stop(a->tracer);
    a->tracer = NULL;
    if (a->store) store_close(a->store);
    a->store = NULL;
    crypto_keyring_free(a->keys);
    a->keys = NULL;
    for (size_t i = 0; i < a->nhubs; i++) {
        registry_free(&a->hubs[i].reg);
        room_joins_free(&a->hubs[i].joins);
    }
    free(a->hubs);
    a->hubs = NULL;
    a->nhubs = 0;
    if (a->engine) engine_free(a->engine);
    a->engine = NULL;
    router_free(&a->routes);
    if (a->auth && a->auth->destroy) a->auth->destroy(a->auth);
    metrics_thread_free(a->metrics);
    free(a->custom_slots);
    throttle_free(&a->throttle);
    uv_close((uv_handle_t *)&a->gc_timer, NULL);
}
