/* wsgate metrics: API Gateway's CloudWatch metrics (ConnectCount,
 * MessageCount, ClientError, ExecutionError, IntegrationError,
 * IntegrationLatency) and wsgate's own, exposed in the Prometheus text
 * format (0.0.4).
 *
 * Counting costs nothing measurable: each event loop thread owns one
 * `metrics` block and bumps plain uint64_t fields in it with the inline
 * helpers below (a relaxed atomic store of `x + 1`, which compiles to an
 * ordinary add/store: no lock prefix, no fence; it only keeps the concurrent
 * reads of metrics_render() free of data races for TSan/UBSan). Only the
 * owning thread may call the helpers on its block.
 *
 * Rendering sums every registered block (plus the totals of blocks already
 * freed, so counters never go backwards) under a mutex that is taken only by
 * metrics_thread_new/free, metrics_render and metrics_global_init/free.
 *
 * Series are labelled by `route` (one slot per route key fixed at
 * metrics_global_init: $connect, $disconnect, $default, the custom routes,
 * and $other for anything else) when enable_detailed_metrics is true, or
 * summed into one unlabelled series when it is false. Every series carries
 * the constant labels api (api_name), stage (stage_name) and the
 * additional_tags. */
#ifndef WSGATE_METRICS_METRICS_H
#define WSGATE_METRICS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "config/config.h"

/* ---- route slots ---- */

/* Named route slots (0..METRICS_ROUTE_NAMED-1) plus the $other slot. */
#define METRICS_ROUTE_NAMED 16
#define METRICS_ROUTE_SLOTS (METRICS_ROUTE_NAMED + 1)

enum {
    METRICS_SLOT_CONNECT = 0,    /* "$connect" */
    METRICS_SLOT_DISCONNECT = 1, /* "$disconnect" */
    METRICS_SLOT_DEFAULT = 2,    /* "$default" */
    /* 3.. : the custom routes, in config order (duplicates share a slot) */
    METRICS_SLOT_OTHER = METRICS_ROUTE_NAMED, /* "$other" */
};

/* ---- histogram buckets of wsgate_integration_latency_seconds ---- */

/* Finite upper bounds: 0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025
 * 0.05 0.1 0.25 0.5 1 2.5 5 (seconds); the last bucket is +Inf. */
#define METRICS_LATENCY_BOUNDS  15
#define METRICS_LATENCY_BUCKETS (METRICS_LATENCY_BOUNDS + 1)

/* The finite bounds in nanoseconds (value <= bound falls in the bucket). */
extern const uint64_t metrics_latency_bounds_ns[METRICS_LATENCY_BOUNDS];

/* ---- stages of a durable chat (wsgate_chat_phase_seconds{phase}) ---- */

typedef enum metrics_chat_stage {
    METRICS_CHAT_HANDLE = 0,  /* "handle": read -> submitted to the store (app lock, handler) */
    METRICS_CHAT_QUEUE,       /* "queue": submitted -> its batch began */
    METRICS_CHAT_APPLY,       /* "apply": batch began -> its statements ran */
    METRICS_CHAT_COMMIT,      /* "commit": COMMIT called -> returned (WAL write, fsync) */
    METRICS_CHAT_WAKEUP,      /* "wakeup": committed -> its completion ran on loop 0 */
    METRICS_CHAT_FIRST_WRITE, /* "first_write": completion -> first socket write after it */
    METRICS_CHAT_FANOUT,      /* "fanout": completion -> last socket write of that flush */
    METRICS_CHAT_TOTAL,       /* "total": read -> last socket write */
    METRICS_CHAT_STAGES
} metrics_chat_stage;

/* Finite bounds of the stage histogram: 10 us to 5 s, finer between 1 and
 * 100 ms where a chat's latency lives. The last bucket is +Inf. */
#define METRICS_STAGE_BOUNDS  24
#define METRICS_STAGE_BUCKETS (METRICS_STAGE_BOUNDS + 1)
extern const uint64_t metrics_stage_bounds_ns[METRICS_STAGE_BOUNDS];

/* ---- throttling scopes (label `scope` of wsgate_throttled_total) ---- */

typedef enum metrics_throttle_scope {
    METRICS_THROTTLE_STAGE = 0,  /* "stage" */
    METRICS_THROTTLE_ROUTE,      /* "route" */
    METRICS_THROTTLE_CONNECTION, /* "connection" */
    METRICS_THROTTLE_ADDRESS,    /* "address" */
    METRICS_THROTTLE_COUNT
} metrics_throttle_scope;

/* ---- gauges ---- */

typedef enum metrics_gauge_id {
    METRICS_GAUGE_CONNECTIONS = 0,     /* wsgate_connections */
    METRICS_GAUGE_ROOMS,               /* wsgate_rooms */
    METRICS_GAUGE_QUEUED_BYTES,        /* wsgate_queued_bytes */
    METRICS_GAUGE_STORE_BATCH_LATENCY, /* wsgate_store_batch_latency_seconds (last batch) */
    METRICS_GAUGE_STORE_BATCH_SIZE,    /* wsgate_store_batch_size (last batch) */
    METRICS_GAUGE_STORE_PENDING_OPS,   /* wsgate_store_pending_ops */
    METRICS_GAUGE_STORE_REJECTED,      /* wsgate_store_rejected_total (a counter,
                                          * read from the store at render time) */
    METRICS_GAUGE_PARSER_BYTES,        /* wsgate_parser_bytes */
    METRICS_GAUGE_STORE_WAL_PAGES,     /* wsgate_store_wal_pages (after the last commit) */
    METRICS_GAUGE_STORE_CHECKPOINTS,   /* wsgate_store_checkpoints_total (a counter) */
    METRICS_GAUGE_STORE_BATCHES,       /* wsgate_store_batches_total (a counter) */
    METRICS_GAUGE_STORE_INLINE_CKPTS,  /* wsgate_store_inline_checkpoints_total (a counter) */
    METRICS_GAUGE_STORE_ARCHIVE_SYNCS, /* wsgate_store_archive_syncs_total (a counter) */
    METRICS_GAUGE_COUNT
} metrics_gauge_id;

/* Gauge values handed to a gauge source at render time. */
typedef struct metrics_gauges {
    double value[METRICS_GAUGE_COUNT];
} metrics_gauges;

/* A render-time gauge source: called by metrics_render() (from the
 * rendering thread, without the metrics mutex held) with *g pre-filled with
 * each gauge's value so far (global value + per-thread contributions); it
 * may overwrite any entry. Must be thread-safe with respect to `ctx`. */
typedef void (*metrics_gauge_fn)(metrics_gauges *g, void *ctx);

/* ---- the per-thread block ---- */

typedef struct metrics_route_stats {
    uint64_t connect;                /* wsgate_connect_count_total */
    uint64_t message;                /* wsgate_message_count_total */
    uint64_t client_error;           /* wsgate_client_error_total (4xx) */
    uint64_t execution_error;        /* wsgate_execution_error_total (5xx, handler failures) */
    uint64_t integration_error;      /* wsgate_integration_error_total (store/integration) */
    uint64_t integration_call_error; /* wsgate_integration_errors_total (HTTP integrations only) */
    uint64_t latency_sum_ns;         /* histogram _sum, in nanoseconds */
    /* Per-bucket counts, NOT cumulative (render accumulates); the last one
     * is the +Inf bucket. The histogram's _count is their sum. */
    uint64_t latency_bucket[METRICS_LATENCY_BUCKETS];
} metrics_route_stats;

typedef struct metrics {
    metrics_route_stats route[METRICS_ROUTE_SLOTS];
    uint64_t throttled[METRICS_THROTTLE_COUNT];
    /* Stage histograms, per-bucket counts as in metrics_route_stats. */
    uint64_t stage_bucket[METRICS_CHAT_STAGES][METRICS_STAGE_BUCKETS];
    uint64_t stage_sum_ns[METRICS_CHAT_STAGES];
    /* This thread's contribution to each gauge (e.g. +1/-1 per connection
     * opened/closed by this loop). Dropped when the block is freed. */
    int64_t gauge[METRICS_GAUGE_COUNT];
} metrics;

/* ---- lifecycle ---- */

/* Set up the global registry from cfg: enable_detailed_metrics, the route
 * slots ($connect, $disconnect, $default, then cfg->custom_routes; beyond
 * METRICS_ROUTE_NAMED names, the rest fall into $other), and the constant
 * labels api=api_name, stage=stage_name and every additional_tags pair
 * (names sanitised to [a-zA-Z_][a-zA-Z0-9_]*; a name that collides with
 * api/stage/route/scope/le/version/phase, an earlier tag, or starts with "__" is
 * prefixed with "tag_", and dropped if it still collides). `version` is the
 * wsgate_build_info version (NULL: WSGATE_VERSION, common/version.h). cfg may be
 * NULL (no constant labels, not detailed). Nothing of cfg is kept. Calling
 * it again replaces the previous setup (counters are kept). Not thread-safe
 * against the slot lookup: call before starting the loops. Never fails. */
void metrics_global_init(const config *cfg, const char *version);

/* Free the global registry: every block still registered is freed too (so
 * call it after the worker threads have stopped), gauges and gauge sources
 * are cleared and counters reset to zero. */
void metrics_global_free(void);

/* Return a new zeroed block registered for rendering, owned by the calling
 * thread (one per event loop). Never NULL (aborts on allocation failure).
 * May be called before or after metrics_global_init. */
metrics *metrics_thread_new(void);

/* Unregister and free m (NULL is ignored). Its counters are folded into the
 * global totals so rendered counters never decrease; its gauge
 * contributions are dropped. Call from the owning thread, or after it has
 * stopped. */
void metrics_thread_free(metrics *m);

/* Return the slot of route_key: its named slot, or METRICS_SLOT_OTHER for
 * an unknown key, NULL, or before metrics_global_init. A linear search with
 * strcmp: resolve once at startup (or per route table), not per message. */
int metrics_route_slot(const char *route_key);

/* Return the route key of slot ("$other" for METRICS_SLOT_OTHER), or NULL
 * for an unassigned or out-of-range slot. */
const char *metrics_route_name(int slot);

/* Return true when enable_detailed_metrics was set at init. */
bool metrics_detailed(void);

/* ---- counting (owner thread only; slot out of range counts as $other) ---- */

static inline void metrics_inc_(uint64_t *p, uint64_t n) {
    __atomic_store_n(p, *p + n, __ATOMIC_RELAXED);
}

static inline metrics_route_stats *metrics_slot_(metrics *m, int slot) {
    return &m->route[(unsigned)slot < METRICS_ROUTE_SLOTS ? (unsigned)slot : METRICS_SLOT_OTHER];
}

/* ConnectCount: a $connect request (accepted or not). */
static inline void metrics_count_connect(metrics *m, int slot) {
    metrics_inc_(&metrics_slot_(m, slot)->connect, 1);
}
/* MessageCount: a message received on a route (or sent by the management API). */
static inline void metrics_count_message(metrics *m, int slot) {
    metrics_inc_(&metrics_slot_(m, slot)->message, 1);
}
/* ClientError: a 4xx outcome. */
static inline void metrics_count_client_error(metrics *m, int slot) {
    metrics_inc_(&metrics_slot_(m, slot)->client_error, 1);
}
/* ExecutionError: a 5xx outcome or a handler failure. */
static inline void metrics_count_execution_error(metrics *m, int slot) {
    metrics_inc_(&metrics_slot_(m, slot)->execution_error, 1);
}
/* IntegrationError: the store or an HTTP integration failed. */
static inline void metrics_count_integration_error(metrics *m, int slot) {
    metrics_inc_(&metrics_slot_(m, slot)->integration_error, 1);
}

/* A call to an HTTP integration (a route's or the authorizer's) failed or
 * timed out: counts in wsgate_integration_errors_total and, as any
 * IntegrationError, in wsgate_integration_error_total. */
static inline void metrics_count_integration_call_error(metrics *m, int slot) {
    metrics_route_stats *r = metrics_slot_(m, slot);
    metrics_inc_(&r->integration_error, 1);
    metrics_inc_(&r->integration_call_error, 1);
}

/* IntegrationLatency: observe ns nanoseconds. */
static inline void metrics_observe_latency_ns(metrics *m, int slot, uint64_t ns) {
    metrics_route_stats *r = metrics_slot_(m, slot);
    unsigned i = 0;
    while (i < METRICS_LATENCY_BOUNDS && ns > metrics_latency_bounds_ns[i]) i++;
    metrics_inc_(&r->latency_bucket[i], 1);
    metrics_inc_(&r->latency_sum_ns, ns);
}

/* IntegrationLatency: observe `seconds` (negative or NaN count as 0,
 * rounded to the nanosecond). */
static inline void metrics_observe_latency(metrics *m, int slot, double seconds) {
    uint64_t ns;
    if (!(seconds > 0)) ns = 0;
    else if (seconds >= 1.8e10) ns = (uint64_t)1.8e19; /* clamp: ~570 years */
    else ns = (uint64_t)(seconds * 1e9 + 0.5);
    metrics_observe_latency_ns(m, slot, ns);
}

/* A durable chat spent ns nanoseconds in `stage`. */
static inline void metrics_observe_chat_stage(metrics *m, metrics_chat_stage stage, uint64_t ns) {
    if ((unsigned)stage >= METRICS_CHAT_STAGES) return;
    unsigned i = 0;
    while (i < METRICS_STAGE_BOUNDS && ns > metrics_stage_bounds_ns[i]) i++;
    metrics_inc_(&m->stage_bucket[stage][i], 1);
    metrics_inc_(&m->stage_sum_ns[stage], ns);
}

/* A request refused by the token bucket of `scope`. */
static inline void metrics_count_throttled(metrics *m, metrics_throttle_scope scope) {
    if ((unsigned)scope < METRICS_THROTTLE_COUNT) metrics_inc_(&m->throttled[scope], 1);
}

/* Add delta to this thread's contribution to gauge id (e.g.
 * METRICS_GAUGE_CONNECTIONS +1 on open, -1 on close). */
static inline void metrics_gauge_add(metrics *m, metrics_gauge_id id, int64_t delta) {
    if ((unsigned)id < METRICS_GAUGE_COUNT)
        __atomic_store_n(&m->gauge[id], m->gauge[id] + delta, __ATOMIC_RELAXED);
}

/* ---- global gauges (any thread) ---- */

/* Set the global value of gauge id (rendered as value + the per-thread
 * contributions, before gauge sources run). Lock-free; any thread. */
void metrics_set_gauge(metrics_gauge_id id, double value);

/* Register a render-time gauge source (at most 8; returns 0, WSG_E_FULL
 * when full, WSG_E_INVAL for a NULL fn). The same fn/ctx pair registered
 * twice runs twice. */
int metrics_add_gauge_source(metrics_gauge_fn fn, void *ctx);

/* Unregister the first source matching fn and ctx (no-op if absent). After
 * it returns, fn is not called again with ctx by a render that starts later
 * (a render already running may still be calling it). */
void metrics_remove_gauge_source(metrics_gauge_fn fn, void *ctx);

/* ---- families rendered by other modules ---- */

/* Where a family source writes (opaque): the output and the constant
 * labels every series carries. */
typedef struct metrics_out metrics_out;

/* A render-time family source: writes whole families with
 * metrics_out_family and metrics_out_sample, after wsgate's own. Called by
 * metrics_render() from the rendering thread without the metrics mutex:
 * must be thread-safe with respect to ctx. */
typedef void (*metrics_family_fn)(metrics_out *o, void *ctx);

/* Register / unregister a family source (at most 8; returns 0, WSG_E_FULL
 * when full, WSG_E_INVAL for a NULL fn). Unregistering has the guarantee of
 * metrics_remove_gauge_source. */
int metrics_add_family_source(metrics_family_fn fn, void *ctx);
void metrics_remove_family_source(metrics_family_fn fn, void *ctx);

/* Write a family's # HELP and # TYPE lines (type: "counter", "gauge",
 * "histogram"). name and help are written as given. */
void metrics_out_family(metrics_out *o, const char *name, const char *type, const char *help);

/* Write one sample `name{const labels,labels} value`. labels: NULL, or a
 * pre-rendered list such as `le="0.5"` (the caller escapes values). */
void metrics_out_sample(metrics_out *o, const char *name, const char *labels, double value);

/* ---- exposition ---- */

/* Render every family (with # HELP and # TYPE lines) in the Prometheus text
 * format 0.0.4. Returns a malloc'd NUL-terminated string (caller frees) and
 * stores its length in *len when len is not NULL. Never NULL. Any thread.
 * Content-Type: "text/plain; version=0.0.4; charset=utf-8". */
char *metrics_render(size_t *len);

/* The Content-Type of metrics_render()'s output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
