/* Shared by the fuzz targets that drive the application (fuzz_app,
 * fuzz_mgmt): a configuration in a temporary data directory, invariant
 * checks, and releasing what a fake connection queued (nothing writes it).
 * Fake connection ids start with 'A': worker 0 owns them (conn_id_worker). */
#ifndef WSGATE_FUZZ_HARNESS_H
#define WSGATE_FUZZ_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/handlers.h"
#include "config/config.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "ws/frame.h"

#include "fuzz_require.h"

static config harness_cfg;
static char harness_dir[] = "/tmp/wsgate_fuzz.XXXXXX";

/* Apply one `name=value` to the harness configuration or abort. */
static void harness_set(const char *assignment) {
    wsg_error err;
    if (config_set(&harness_cfg, assignment, &err) != 0) {
        fprintf(stderr, "fuzz: %s: %s\n", assignment, err.message);
        abort();
    }
}

static void harness_rmtree(void) {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", harness_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: cannot remove %s\n", harness_dir);
}

/* Defaults in a fresh temporary data directory (removed at exit), logging
 * off, tracing off, fixed management keys (so nothing is generated) and a
 * large queue cap. Callers add their own settings, then call
 * harness_finish(). */
static void harness_begin(void) {
    log_init(LOG_OFF, NULL);
    if (!mkdtemp(harness_dir)) {
        perror("mkdtemp");
        abort();
    }
    atexit(harness_rmtree);
    config_init_defaults(&harness_cfg);
    char a[300];
    snprintf(a, sizeof(a), "data_dir=%s", harness_dir);
    harness_set(a);
    harness_set("management_access_key_id=AKIAFUZZFUZZFUZZFUZZ");
    harness_set("management_secret_access_key=fuzzsecretfuzzsecretfuzzsecretfuzzsecret");
    harness_set("management_bearer_key=fuzz-bearer-key");
    harness_set("logging_level=OFF");
    harness_set("enable_xray_tracing=false");
    harness_set("max_queued_bytes=67108864");
}

/* Validate the configuration and start the metrics registry. */
static void harness_finish(void) {
    wsg_error err;
    if (config_validate(&harness_cfg, &err) != 0) {
        fprintf(stderr, "fuzz: %s\n", err.message);
        abort();
    }
    metrics_global_init(&harness_cfg, "fuzz");
}

static ws_frame *harness_queued(const conn *c, uint32_t i) {
    return c->wq->frames[(c->wq->head + i) & (c->wq->cap - 1)];
}

/* Frames queued on c. */
static uint32_t harness_queue_len(const conn *c) { return c->wq ? c->wq->count : 0; }

/* Forget c's queue (after its frames were checked and released). */
static void harness_reset_queue(conn *c) {
    free(c->wq);
    c->wq = NULL;
    c->wq_bytes = 0;
    c->dirty = false;
    c->dirty_next = NULL;
}

/* A new app on loop with the harness configuration and an in-memory store
 * (caller closes and frees it); aborts when it cannot start. */
static app *harness_app_new(uv_loop_t *loop) {
    app *a = calloc(1, sizeof(*a));
    wsg_error err;
    if (!a || app_init(a, &harness_cfg, loop, ":memory:", 1, &err) < 0) {
        fprintf(stderr, "fuzz: app_init: %s\n", a ? err.message : "out of memory");
        abort();
    }
    return a;
}

/* A zeroed server on loop carrying app a with the API's handlers, as
 * server_start would leave it but with no socket (caller frees). */
static server *harness_server(uv_loop_t *loop, app *a) {
    server *srv = calloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->cfg = &harness_cfg;
    srv->app = app_hub(a, 0);
    srv->handlers = app_handlers();
    snprintf(srv->stage_path, sizeof(srv->stage_path), "/%s", harness_cfg.stage_name);
    server_inbox_init(srv, loop);
    app_attach(a, 0, srv);
    server_enter(srv); /* this thread owns the fake connections */
    return srv;
}

/* Give fake connection c (of the harness server, its id set) a session of
 * user_id in room_id, as $connect does: in the worker's index and the
 * engine's. Returns the session. */
static session *harness_open(app *a, conn *c, const char *user_id, const char *username,
                             const char *room_id) {
    hub *h = app_hub(a, 0);
    session *s = registry_add(&h->reg, c, user_id, username);
    throttle_connection_init(&a->throttle, &s->bucket, throttle_now_ms());
    throttle_opened(&a->throttle, c->source_ip, throttle_now_ms());
    engine_conn_opened(a->engine, &s->record, c, 0, s->user_id, s->username,
                       registry_user_alone(s));
    handlers_join(h, s, room_id);
    c->app = s;
    return s;
}

/* After app_close: release the harness server (its inbox handle closed on
 * the loop, which the caller runs once more). */
static void harness_server_close(server *srv) { uv_close((uv_handle_t *)&srv->inbox_async, NULL); }

#endif
