/* The seed's API as the server's application: $connect (authorizer,
 * welcome, user_joined), the message routes, $disconnect (user_left), the
 * registry of live connections and the store. Every worker runs it on its
 * own connections, with no lock shared by workers on the message path. */
#ifndef WSGATE_APP_APP_H
#define WSGATE_APP_APP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "app/auth.h"
#include "app/registry.h"
#include "app/router.h"
#include "config/config.h"
#include "engine/engine.h"
#include "metrics/metrics.h"
#include "mgmt/credentials.h"
#include "net/server.h"
#include "store/store.h"
#include "app/room_joins.h"
#include "throttle/throttle.h"
#include "trace/trace.h"

typedef struct hub hub;

/* What every worker shares: read-only once built (configuration, router,
 * authorizer, credentials), or safe from any thread by itself (the store's
 * queue, the throttle, the engine, the tracer). There is no application
 * lock: each worker runs the application on its own connections (its
 * hub), and what crosses workers goes through the engine. */
typedef struct app {
    const config *cfg;
    router routes;
    store *store;
    authorizer *auth;
    uv_loop_t *loop;             /* the first worker's (timers of the app) */
    mgmt_credentials mgmt_creds; /* the management API's keys */
    metrics *metrics;            /* the first worker's counters (see app_metrics) */
    int *custom_slots;           /* metrics slot of each custom route */
    engine *engine;              /* rooms, users and connections across workers */
    hub *hubs;                   /* one per worker */
    size_t nhubs;
    trace_exporter *tracer; /* NULL unless otlp_endpoint is set */
    throttle throttle;      /* stage, route, connection, address limits */
    crypto_keyring *keys;   /* encryption at rest, or NULL */
    uv_timer_t gc_timer;    /* forgets idle source addresses */
} app;

/* One worker's share of the application: its own connections' sessions,
 * indexed by id, user and room. Only the worker's thread touches it (the
 * server's `app` pointer is the hub). */
struct hub {
    app *app;
    server *srv;
    int index;
    registry reg;
    room_joins joins; /* rooms whose join went to the store recently */
};

/* Return worker i's hub (i < the nworkers given to app_init), to pass as
 * the server's app pointer. */
hub *app_hub(app *a, size_t i);

/* Tell the app that srv is worker i's server (before its loop runs). */
void app_attach(app *a, size_t i, server *srv);

/* On a worker's thread, before its loop runs: make srv the thread's server
 * and, unless it is the first worker (whose counters are a->metrics), give
 * the thread its own counters. app_worker_leave frees them once the loop
 * has stopped. */
void app_worker_enter(app *a, server *srv, bool first);
void app_worker_leave(app *a);

/* Return the calling worker's counters (counting is per thread). */
metrics *app_metrics(app *a);

/* Return when (clock_mono_ns) the calling thread read the message it is
 * handling now, before it waited for the app lock; 0 outside a message. */
uint64_t app_message_received_ns(void);

/* Initialise a for nworkers workers on loop (the first worker's): open
 * the store at store_path, build the router from cfg, start the engine.
 * Returns 0, or the failing step's negative code with *err (caller's)
 * filled: WSG_E_CONFIG_RULE (worker_threads), WSG_E_ROUTER_*, the
 * credentials' and the JWT authorizer's codes, WSG_E_CRYPTO_* (the key
 * file), WSG_E_STORE_* (the store cannot open), WSG_E_ENGINE_CONFIG (the
 * Redis engine's URLs),
 * WSG_E_INTERNAL (libcurl, the trace exporter). */
int app_init(app *a, const config *cfg, uv_loop_t *loop, const char *store_path, size_t nworkers,
             wsg_error *err);

/* Close the store (running its last completions) and free everything.
 * Call after the server's loop has stopped with no connections left; the
 * loop must run once more to finish closing handles. */
void app_close(app *a);

/* Return the server handlers of the API mode (static storage). The
 * server's `app` pointer must be the app. */
const server_handlers *app_handlers(void);

/* Route one message from session s of hub h (the built-in $default
 * handler and the custom routes), as a worker does. Exposed for the fuzzer
 * and tests. */
void app_handle_message(hub *h, session *s, uint8_t opcode, const uint8_t *data, size_t len);

#endif
