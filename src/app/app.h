/* The seed's API as the server's application: $connect (authorizer,
 * welcome, user_joined), the message routes, $disconnect (user_left), the
 * registry of live connections and the store. Runs on one loop thread. */
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
#include "metrics/metrics.h"
#include "mgmt/credentials.h"
#include "net/server.h"
#include "store/store.h"
#include "throttle/throttle.h"
#include "trace/trace.h"

typedef struct app {
    const config *cfg;
    registry reg;
    router router;
    store *store;
    authorizer *auth;
    uv_loop_t *loop;
    mgmt_credentials mgmt_creds; /* the management API's keys */
    metrics *metrics;            /* the first worker's counters (see app_metrics) */
    int *custom_slots;           /* metrics slot of each custom route */
    server **srvs;               /* every worker's server (app_attach) */
    size_t nsrvs;
    /* Every worker thread runs the application (registry, throttles, store
     * submissions, completions) under this one lock; their reads, frame
     * parsing and writes run in parallel. Recursive. */
    pthread_mutex_t lock;
    trace_exporter *tracer; /* NULL unless otlp_endpoint is set */
    throttle throttle;      /* stage, route, connection, address limits */
    crypto_keyring *keys;   /* encryption at rest, or NULL */
    uv_timer_t gc_timer;    /* forgets idle source addresses */
} app;

/* Tell the app about a server that carries it (one per worker; for gauges
 * read at scrape time). */
void app_attach(app *a, server *srv);

/* Take and release the application lock (recursive). The server callbacks
 * and store completions take it themselves. */
void app_lock(app *a);
void app_unlock(app *a);
/* Return true when the calling thread holds the application lock (for
 * asserts on the functions whose contract is "under the app lock"). */
bool app_locked(const app *a);

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

/* Initialise a on loop: open the store at store_path, build the router
 * from cfg. Returns 0, or -1 with a message in err. */
int app_init(app *a, const config *cfg, uv_loop_t *loop, const char *store_path, char *err,
             size_t errlen);

/* Close the store (running its last completions) and free everything.
 * Call after the server's loop has stopped with no connections left; the
 * loop must run once more to finish closing handles. */
void app_close(app *a);

/* Return the server handlers of the API mode (static storage). The
 * server's `app` pointer must be the app. */
const server_handlers *app_handlers(void);

/* Route one message from session s (the built-in $default handler and the
 * custom routes), under the app lock, as a worker does. Exposed for the
 * fuzzer and tests. */
void app_handle_message(app *a, session *s, uint8_t opcode, const uint8_t *data, size_t len);

#endif
