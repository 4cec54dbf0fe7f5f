/* wsgate metrics: per-thread counter blocks, summed at render time into the
 * Prometheus text format. See metrics.h. */
#include "metrics/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/bytebuf.h"
#include "common/version.h"
#include "ws/utf8.h"

#define METRICS_MAX_SOURCES 8

/* The latency buckets: bound in ns (used by the inline helper) and the `le`
 * label text, side by side. */
const uint64_t metrics_latency_bounds_ns[METRICS_LATENCY_BOUNDS] = {
    100000ull,    250000ull,    500000ull,     1000000ull,    2500000ull,
    5000000ull,   10000000ull,  25000000ull,   50000000ull,   100000000ull,
    250000000ull, 500000000ull, 1000000000ull, 2500000000ull, 5000000000ull,
};
static const char *const latency_le[METRICS_LATENCY_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "+Inf",
};

const uint64_t metrics_stage_bounds_ns[METRICS_STAGE_BOUNDS] = {
    10000ull,     25000ull,     50000ull,     100000ull,     250000ull,     500000ull,
    1000000ull,   2500000ull,   5000000ull,   7500000ull,    10000000ull,   15000000ull,
    20000000ull,  25000000ull,  30000000ull,  40000000ull,   50000000ull,   75000000ull,
    100000000ull, 250000000ull, 500000000ull, 1000000000ull, 2500000000ull, 5000000000ull,
};
static const char *const stage_le[METRICS_STAGE_BUCKETS] = {
    "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.0075",  "0.01",     "0.015",   "0.02",   "0.025",   "0.03",   "0.04",  "0.05",   "0.075",
    "0.1",     "0.25",     "0.5",     "1",      "2.5",     "5",      "+Inf",
};
static const char *const stage_name[METRICS_CHAT_STAGES] = {
    "handle", "queue", "apply", "commit", "wakeup", "first_write", "fanout", "total",
};

static const char *const throttle_scope_name[METRICS_THROTTLE_COUNT] = {
    "stage",
    "route",
    "connection",
    "address",
};

/* ---- the global registry ---- */

/* A render-time source: one of gauge and family is set. Gauge and family
 * sources sit in lists of their own (gauges run before the families render)
 * but are added and removed by the same code. */
typedef struct source {
    metrics_gauge_fn gauge;
    metrics_family_fn family;
    void *ctx;
} source;

typedef struct source_list {
    source at[METRICS_MAX_SOURCES];
    size_t n;
} source_list;

static struct {
    pthread_mutex_t mu; /* guards everything below except gauge_bits */
    bool detailed;
    char *const_labels;                     /* rendered `a="x",b="y"` (no braces), or NULL */
    char *version;                          /* escaped build_info version */
    char *route_names[METRICS_ROUTE_NAMED]; /* raw route keys, NULL = unused */
    int nroutes;
    metrics **threads;
    size_t nthreads, cap;
    metrics retired; /* counters of freed blocks (gauge unused) */
    source_list gauge_sources;
    source_list family_sources;
    uint64_t gauge_bits[METRICS_GAUGE_COUNT]; /* doubles, atomic bit patterns */
} G = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Append s as a label value body (no quotes): backslash, double quote and
 * newline escaped as the text format requires. A value that is not valid
 * UTF-8 has every byte >= 0x80 replaced by '?'. */
static void sb_put_label_value(bytebuf *b, const char *s) {
    size_t n = strlen(s);
    bool utf8 = ws_utf8_valid((const uint8_t *)s, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\') bytebuf_put(b, "\\\\", 2);
        else if (c == '"') bytebuf_put(b, "\\\"", 2);
        else if (c == '\n') bytebuf_put(b, "\\n", 2);
        else if (c >= 0x80 && !utf8) bytebuf_putc(b, '?');
        else bytebuf_putc(b, (char)c);
    }
}

/* Append a sample value: shortest of %.15g / %.17g that round-trips; NaN
 * and infinities as the text format spells them. */
static void sb_put_double(bytebuf *b, double v) {
    if (isnan(v)) {
        bytebuf_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        bytebuf_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.15g", v);
    if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
    bytebuf_puts(b, tmp);
}

/* ---- setup ---- */

static bool label_name_taken(const char *name, char **names, size_t n) {
    static const char *const reserved[] = {"api", "stage",   "route", "scope",
                                           "le",  "version", "phase"};
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (strcmp(name, reserved[i]) == 0) return true;
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0) return true;
    return false;
}

/* Return a malloc'd label name made of s: [a-zA-Z_][a-zA-Z0-9_]*. */
static char *sanitize_label_name(const char *s) {
    size_t n = strlen(s);
    char *out = xmalloc(n + 2);
    size_t k = 0;
    if (n == 0 || (s[0] >= '0' && s[0] <= '9')) out[k++] = '_';
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        out[k++] = ok ? c : '_';
    }
    out[k] = '\0';
    return out;
}

static void add_label(bytebuf *b, const char *name, const char *value) {
    if (b->n) bytebuf_putc(b, ',');
    bytebuf_puts(b, name);
    bytebuf_put(b, "=\"", 2);
    sb_put_label_value(b, value ? value : "");
    bytebuf_putc(b, '"');
}

/* Release the setup (labels, names), keeping counters and threads. Lock held. */
static void clear_setup_locked(void) {
    free(G.const_labels);
    G.const_labels = NULL;
    free(G.version);
    G.version = NULL;
    for (int i = 0; i < METRICS_ROUTE_NAMED; i++) {
        free(G.route_names[i]);
        G.route_names[i] = NULL;
    }
    G.nroutes = 0;
    G.detailed = false;
}

static void add_route_locked(const char *key) {
    if (!key) return;
    for (int i = 0; i < G.nroutes; i++)
        if (strcmp(G.route_names[i], key) == 0) return;
    if (strcmp(key, "$other") == 0 || G.nroutes >= METRICS_ROUTE_NAMED) return;
    G.route_names[G.nroutes++] = xstrdup(key);
}

void metrics_global_init(const config *cfg, const char *version) {
    pthread_mutex_lock(&G.mu);
    clear_setup_locked();

    bytebuf v = {0};
    bytebuf_puts(&v, "");
    sb_put_label_value(&v, version ? version : WSGATE_VERSION);
    G.version = v.d;

    add_route_locked("$connect");
    add_route_locked("$disconnect");
    add_route_locked("$default");

    if (cfg) {
        G.detailed = cfg->enable_detailed_metrics;
        for (size_t i = 0; i < cfg->custom_routes_count && cfg->custom_routes; i++)
            add_route_locked(cfg->custom_routes[i]);

        bytebuf l = {0};
        if (cfg->api_name) add_label(&l, "api", cfg->api_name);
        if (cfg->stage_name) add_label(&l, "stage", cfg->stage_name);
        size_t ntags = cfg->additional_tags ? cfg->additional_tags_count : 0;
        char **names = ntags ? xcalloc(ntags, sizeof *names) : NULL;
        size_t nnames = 0;
        for (size_t i = 0; i < ntags; i++) {
            const config_kv *kv = &cfg->additional_tags[i];
            if (!kv->key) continue;
            char *name = sanitize_label_name(kv->key);
            if (strncmp(name, "__", 2) == 0 || label_name_taken(name, names, nnames)) {
                char *p = xmalloc(strlen(name) + 5);
                memcpy(p, "tag_", 4);
                strcpy(p + 4, name);
                free(name);
                name = p;
                if (label_name_taken(name, names, nnames)) {
                    free(name);
                    continue;
                }
            }
            add_label(&l, name, kv->value);
            names[nnames++] = name;
        }
        for (size_t i = 0; i < nnames; i++) free(names[i]);
        free(names);
        G.const_labels = l.d; /* NULL when no label was added */
    }
    pthread_mutex_unlock(&G.mu);
}

void metrics_global_free(void) {
    pthread_mutex_lock(&G.mu);
    clear_setup_locked();
    for (size_t i = 0; i < G.nthreads; i++) free(G.threads[i]);
    free(G.threads);
    G.threads = NULL;
    G.nthreads = G.cap = 0;
    memset(&G.retired, 0, sizeof G.retired);
    memset(&G.gauge_sources, 0, sizeof G.gauge_sources);
    memset(&G.family_sources, 0, sizeof G.family_sources);
    for (int i = 0; i < METRICS_GAUGE_COUNT; i++)
        __atomic_store_n(&G.gauge_bits[i], 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&G.mu);
}

/* ---- threads ---- */

metrics *metrics_thread_new(void) {
    void *p = NULL;
    /* Cache-line aligned so two loops' blocks never share a line. */
    if (posix_memalign(&p, 64, sizeof(metrics)) != 0 || !p) {
        fputs("wsgate: out of memory (metrics)\n", stderr);
        abort();
    }
    memset(p, 0, sizeof(metrics));
    metrics *m = p;
    pthread_mutex_lock(&G.mu);
    if (G.nthreads == G.cap) {
        G.cap = G.cap ? G.cap * 2 : 8;
        G.threads = xrealloc(G.threads, G.cap * sizeof *G.threads);
    }
    G.threads[G.nthreads++] = m;
    pthread_mutex_unlock(&G.mu);
    return m;
}

static uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* dst += src for every counter (src read with relaxed atomic loads). */
static void add_counters(metrics *dst, const metrics *src) {
    for (int s = 0; s < METRICS_ROUTE_SLOTS; s++) {
        metrics_route_stats *d = &dst->route[s];
        const metrics_route_stats *r = &src->route[s];
        d->connect += ld(&r->connect);
        d->message += ld(&r->message);
        d->client_error += ld(&r->client_error);
        d->execution_error += ld(&r->execution_error);
        d->integration_error += ld(&r->integration_error);
        d->integration_call_error += ld(&r->integration_call_error);
        d->latency_sum_ns += ld(&r->latency_sum_ns);
        for (int i = 0; i < METRICS_LATENCY_BUCKETS; i++)
            d->latency_bucket[i] += ld(&r->latency_bucket[i]);
    }
    for (int i = 0; i < METRICS_THROTTLE_COUNT; i++) dst->throttled[i] += ld(&src->throttled[i]);
    for (int st = 0; st < METRICS_CHAT_STAGES; st++) {
        dst->stage_sum_ns[st] += ld(&src->stage_sum_ns[st]);
        for (int i = 0; i < METRICS_STAGE_BUCKETS; i++)
            dst->stage_bucket[st][i] += ld(&src->stage_bucket[st][i]);
    }
}

void metrics_thread_free(metrics *m) {
    if (!m) return;
    pthread_mutex_lock(&G.mu);
    for (size_t i = 0; i < G.nthreads; i++) {
        if (G.threads[i] == m) {
            add_counters(&G.retired, m);
            G.threads[i] = G.threads[--G.nthreads];
            break;
        }
    }
    pthread_mutex_unlock(&G.mu);
    free(m);
}

/* ---- slots ---- */

int metrics_route_slot(const char *route_key) {
    if (!route_key) return METRICS_SLOT_OTHER;
    for (int i = 0; i < G.nroutes; i++)
        if (strcmp(G.route_names[i], route_key) == 0) return i;
    return METRICS_SLOT_OTHER;
}

const char *metrics_route_name(int slot) {
    if (slot == METRICS_SLOT_OTHER) return "$other";
    if (slot < 0 || slot >= G.nroutes) return NULL;
    return G.route_names[slot];
}

bool metrics_detailed(void) { return G.detailed; }

/* ---- gauges ---- */

void metrics_set_gauge(metrics_gauge_id id, double value) {
    if ((unsigned)id >= METRICS_GAUGE_COUNT) return;
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    __atomic_store_n(&G.gauge_bits[id], bits, __ATOMIC_RELAXED);
}

static double gauge_global(int id) {
    uint64_t bits = __atomic_load_n(&G.gauge_bits[id], __ATOMIC_RELAXED);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Append x to l under the lock: 0, WSG_E_INVAL when x has no function,
 * WSG_E_FULL when l is full. */
static int sources_add(source_list *l, source x) {
    int rc = x.gauge || x.family ? WSG_E_FULL : WSG_E_INVAL;
    pthread_mutex_lock(&G.mu);
    if (rc == WSG_E_FULL && l->n < METRICS_MAX_SOURCES) {
        l->at[l->n++] = x;
        rc = 0;
    }
    pthread_mutex_unlock(&G.mu);
    return rc;
}

/* Remove the first entry of l equal to x, under the lock (no-op if absent). */
static void sources_remove(source_list *l, source x) {
    pthread_mutex_lock(&G.mu);
    for (size_t i = 0; i < l->n; i++) {
        source *e = &l->at[i];
        if (e->gauge == x.gauge && e->family == x.family && e->ctx == x.ctx) {
            memmove(e, e + 1, (l->n - i - 1) * sizeof *e);
            l->n--;
            break;
        }
    }
    pthread_mutex_unlock(&G.mu);
}

int metrics_add_gauge_source(metrics_gauge_fn fn, void *ctx) {
    return sources_add(&G.gauge_sources, (source){.gauge = fn, .ctx = ctx});
}

void metrics_remove_gauge_source(metrics_gauge_fn fn, void *ctx) {
    sources_remove(&G.gauge_sources, (source){.gauge = fn, .ctx = ctx});
}

int metrics_add_family_source(metrics_family_fn fn, void *ctx) {
    return sources_add(&G.family_sources, (source){.family = fn, .ctx = ctx});
}

void metrics_remove_family_source(metrics_family_fn fn, void *ctx) {
    sources_remove(&G.family_sources, (source){.family = fn, .ctx = ctx});
}

/* ---- rendering ---- */

/* A snapshot taken under the lock, rendered after it is released. */
typedef struct snapshot {
    metrics sum;
    bool detailed;
    int nroutes;
    char *route_names[METRICS_ROUTE_SLOTS]; /* copies; [METRICS_SLOT_OTHER] = "$other" */
    char *const_labels;
    char *version;
    source_list gauge_sources;
    source_list family_sources;
    metrics_gauges gauges;
} snapshot;

static void family(bytebuf *b, const char *name, const char *type, const char *help) {
    bytebuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Write `name{const,extra}` and a space; extra is a pre-rendered label list
 * or NULL. */
static void series(bytebuf *b, const snapshot *s, const char *name, const char *suffix,
                   const bytebuf *extra) {
    bytebuf_puts(b, name);
    if (suffix) bytebuf_puts(b, suffix);
    bool c = s->const_labels && *s->const_labels;
    bool e = extra && extra->n;
    if (c || e) {
        bytebuf_putc(b, '{');
        if (c) bytebuf_puts(b, s->const_labels);
        if (c && e) bytebuf_putc(b, ',');
        if (e) bytebuf_put(b, extra->d, extra->n);
        bytebuf_putc(b, '}');
    }
    bytebuf_putc(b, ' ');
}

static void route_label(bytebuf *l, const snapshot *s, int slot) {
    l->n = 0;
    if (l->d) l->d[0] = '\0';
    if (s->detailed) add_label(l, "route", s->route_names[slot]);
}

/* The slots to render: every named slot and $other when detailed; one
 * aggregate (all slots summed into slot 0 of `agg`) otherwise. */
static int slot_list(const snapshot *s, int *slots) {
    int n = 0;
    if (!s->detailed) {
        slots[n++] = 0;
        return n;
    }
    for (int i = 0; i < s->nroutes; i++) slots[n++] = i;
    slots[n++] = METRICS_SLOT_OTHER;
    return n;
}

/* A family source's view of the render under way. */
struct metrics_out {
    bytebuf *b;
    const snapshot *s;
};

void metrics_out_family(metrics_out *o, const char *name, const char *type, const char *help) {
    family(o->b, name, type, help);
}

void metrics_out_sample(metrics_out *o, const char *name, const char *labels, double value) {
    bytebuf extra = {0};
    if (labels && *labels) bytebuf_puts(&extra, labels);
    series(o->b, o->s, name, NULL, &extra);
    sb_put_double(o->b, value);
    bytebuf_putc(o->b, '\n');
    free(extra.d);
}

typedef enum { C_CONNECT, C_MESSAGE, C_CLIENT, C_EXEC, C_INTEG, C_INTEG_CALL } counter_kind;

static uint64_t counter_of(const metrics_route_stats *r, counter_kind k) {
    switch (k) {
    case C_CONNECT: return r->connect;
    case C_MESSAGE: return r->message;
    case C_CLIENT: return r->client_error;
    case C_EXEC: return r->execution_error;
    case C_INTEG: return r->integration_error;
    case C_INTEG_CALL: return r->integration_call_error;
    }
    return 0;
}

static const struct {
    counter_kind kind;
    const char *name;
    const char *help;
} route_counters[] = {
    {C_CONNECT, "wsgate_connect_count_total",
     "Connection requests sent to the $connect route (CloudWatch ConnectCount)."},
    {C_MESSAGE, "wsgate_message_count_total",
     "Messages received on routes or sent through the management API (CloudWatch MessageCount)."},
    {C_CLIENT, "wsgate_client_error_total",
     "Requests answered with a 4xx outcome before or by the route (CloudWatch ClientError)."},
    {C_EXEC, "wsgate_execution_error_total",
     "Requests that failed with a 5xx outcome or a handler failure (CloudWatch ExecutionError)."},
    {C_INTEG, "wsgate_integration_error_total",
     "Requests whose store or integration call failed (CloudWatch IntegrationError)."},
    {C_INTEG_CALL, "wsgate_integration_errors_total",
     "Calls to HTTP integrations (route_integrations, the HTTP authorizer) that failed, timed out "
     "or answered garbage."},
};

/* Values read at render time; most are gauges, a few are counters kept by
 * their owner (type says which). */
static const struct {
    metrics_gauge_id id;
    const char *name;
    const char *help;
    const char *type; /* NULL: "gauge" */
} gauge_families[METRICS_GAUGE_COUNT] = {
    {METRICS_GAUGE_CONNECTIONS, "wsgate_connections", "Live WebSocket connections.", NULL},
    {METRICS_GAUGE_ROOMS, "wsgate_rooms", "Rooms with at least one member.", NULL},
    {METRICS_GAUGE_QUEUED_BYTES, "wsgate_queued_bytes",
     "Bytes waiting in connections' write queues.", NULL},
    {METRICS_GAUGE_STORE_BATCH_LATENCY, "wsgate_store_batch_latency_seconds",
     "Commit time of the store's last group-commit batch.", NULL},
    {METRICS_GAUGE_STORE_BATCH_SIZE, "wsgate_store_batch_size",
     "Operations in the store's last group-commit batch.", NULL},
    {METRICS_GAUGE_STORE_PENDING_OPS, "wsgate_store_pending_ops",
     "Operations submitted to the store and not yet completed.", NULL},
    {METRICS_GAUGE_STORE_REJECTED, "wsgate_store_rejected_total",
     "Chats and history reads refused at once because store_max_pending operations were waiting.",
     "counter"},
    {METRICS_GAUGE_PARSER_BYTES, "wsgate_parser_bytes",
     "Bytes held by connections' frame parsers: partial messages and permessage-deflate inflate "
     "state.",
     NULL},
    {METRICS_GAUGE_STORE_WAL_PAGES, "wsgate_store_wal_pages",
     "Pages in the store's write-ahead log after its last commit.", NULL},
    {METRICS_GAUGE_STORE_CHECKPOINTS, "wsgate_store_checkpoints_total",
     "WAL checkpoints run by the store's checkpointer thread, off the commit path.", "counter"},
    {METRICS_GAUGE_STORE_BATCHES, "wsgate_store_batches_total",
     "Group-commit batches (transactions) the store has committed.", "counter"},
    {METRICS_GAUGE_STORE_INLINE_CKPTS, "wsgate_store_inline_checkpoints_total",
     "WAL checkpoints the store thread ran itself between two batches, so the WAL could restart.",
     "counter"},
    {METRICS_GAUGE_STORE_ARCHIVE_SYNCS, "wsgate_store_archive_syncs_total",
     "fdatasyncs of the point-in-time archive, each before a write that may restart the WAL.",
     "counter"},
};

static void add_stats(metrics_route_stats *a, const metrics_route_stats *r) {
    a->connect += r->connect;
    a->message += r->message;
    a->client_error += r->client_error;
    a->execution_error += r->execution_error;
    a->integration_error += r->integration_error;
    a->integration_call_error += r->integration_call_error;
    a->latency_sum_ns += r->latency_sum_ns;
    for (int k = 0; k < METRICS_LATENCY_BUCKETS; k++) a->latency_bucket[k] += r->latency_bucket[k];
}

/* Not detailed: sum every slot into slot 0. Detailed: slots never
 * assigned a route (a caller's stray slot number) count as $other. */
static void fold_slots(snapshot *s) {
    for (int i = 0; i < METRICS_ROUTE_SLOTS; i++) {
        int to = !s->detailed                                   ? 0
                 : (i >= s->nroutes && i != METRICS_SLOT_OTHER) ? METRICS_SLOT_OTHER
                                                                : i;
        if (to != i) add_stats(&s->sum.route[to], &s->sum.route[i]);
    }
}

/* A duration in nanoseconds as exact decimal seconds. */
static void put_seconds(bytebuf *b, uint64_t ns) {
    bytebuf_printf(b, "%llu.%09llu\n", (unsigned long long)(ns / 1000000000ull),
                   (unsigned long long)(ns % 1000000000ull));
}

/* wsgate_up and wsgate_build_info; l is scratch for the labels. */
static void render_up(bytebuf *b, const snapshot *s, bytebuf *l) {
    family(b, "wsgate_up", "gauge", "1 while the server is serving.");
    series(b, s, "wsgate_up", NULL, NULL);
    bytebuf_puts(b, "1\n");

    family(b, "wsgate_build_info", "gauge", "Build information; the value is always 1.");
    l->n = 0;
    bytebuf_puts(l, "version=\"");
    bytebuf_puts(l, s->version ? s->version : WSGATE_VERSION);
    bytebuf_putc(l, '"');
    series(b, s, "wsgate_build_info", NULL, l);
    bytebuf_puts(b, "1\n");
}

/* The per-route counters and the integration latency histogram. */
static void render_routes(bytebuf *b, const snapshot *s, bytebuf *l, const int *slots, int nslots) {
    for (size_t f = 0; f < sizeof route_counters / sizeof *route_counters; f++) {
        family(b, route_counters[f].name, "counter", route_counters[f].help);
        for (int i = 0; i < nslots; i++) {
            route_label(l, s, slots[i]);
            series(b, s, route_counters[f].name, NULL, l);
            bytebuf_printf(
                b, "%llu\n",
                (unsigned long long)counter_of(&s->sum.route[slots[i]], route_counters[f].kind));
        }
    }

    const char *h = "wsgate_integration_latency_seconds";
    family(b, h, "histogram",
           "Time between a route's request and its integration's response (CloudWatch "
           "IntegrationLatency).");
    for (int i = 0; i < nslots; i++) {
        const metrics_route_stats *r = &s->sum.route[slots[i]];
        uint64_t cum = 0;
        for (int k = 0; k < METRICS_LATENCY_BUCKETS; k++) {
            cum += r->latency_bucket[k];
            route_label(l, s, slots[i]);
            add_label(l, "le", latency_le[k]);
            series(b, s, h, "_bucket", l);
            bytebuf_printf(b, "%llu\n", (unsigned long long)cum);
        }
        route_label(l, s, slots[i]);
        series(b, s, h, "_sum", l);
        put_seconds(b, r->latency_sum_ns);
        series(b, s, h, "_count", l);
        bytebuf_printf(b, "%llu\n", (unsigned long long)cum);
    }
}

/* wsgate_chat_phase_seconds, one histogram per phase. */
static void render_phases(bytebuf *b, const snapshot *s, bytebuf *l) {
    const char *h = "wsgate_chat_phase_seconds";
    family(
        b, h, "histogram",
        "Where a durable chat's time goes, by phase: handle, queue (waiting for the store thread),"
        " apply (its batch's statements), commit (COMMIT: WAL write and fsync), wakeup (until its "
        "completion runs), first_write and fanout"
        " (completion to the first and last socket write of the flush after it), total.");
    for (int st = 0; st < METRICS_CHAT_STAGES; st++) {
        uint64_t cum = 0;
        for (int k = 0; k < METRICS_STAGE_BUCKETS; k++) {
            cum += s->sum.stage_bucket[st][k];
            l->n = 0;
            add_label(l, "phase", stage_name[st]);
            add_label(l, "le", stage_le[k]);
            series(b, s, h, "_bucket", l);
            bytebuf_printf(b, "%llu\n", (unsigned long long)cum);
        }
        l->n = 0;
        add_label(l, "phase", stage_name[st]);
        series(b, s, h, "_sum", l);
        put_seconds(b, s->sum.stage_sum_ns[st]);
        series(b, s, h, "_count", l);
        bytebuf_printf(b, "%llu\n", (unsigned long long)cum);
    }
}

/* wsgate_throttled_total by scope, and the gauges read at render time. */
static void render_gauges(bytebuf *b, const snapshot *s, bytebuf *l) {
    family(b, "wsgate_throttled_total", "counter",
           "Requests refused by a throttling token bucket, by scope.");
    for (int i = 0; i < METRICS_THROTTLE_COUNT; i++) {
        l->n = 0;
        add_label(l, "scope", throttle_scope_name[i]);
        series(b, s, "wsgate_throttled_total", NULL, l);
        bytebuf_printf(b, "%llu\n", (unsigned long long)s->sum.throttled[i]);
    }

    for (int g = 0; g < METRICS_GAUGE_COUNT; g++) {
        family(b, gauge_families[g].name, gauge_families[g].type ? gauge_families[g].type : "gauge",
               gauge_families[g].help);
        series(b, s, gauge_families[g].name, NULL, NULL);
        sb_put_double(b, s->gauges.value[gauge_families[g].id]);
        bytebuf_putc(b, '\n');
    }
}

static void render_snapshot(bytebuf *b, snapshot *s) {
    bytebuf l = {0}; /* one label buffer, reused by every series */
    int slots[METRICS_ROUTE_SLOTS];
    int nslots = slot_list(s, slots);
    fold_slots(s);
    render_up(b, s, &l);
    render_routes(b, s, &l, slots, nslots);
    render_phases(b, s, &l);
    render_gauges(b, s, &l);
    free(l.d);
}

char *metrics_render(size_t *len) {
    snapshot *s = xcalloc(1, sizeof *s);

    pthread_mutex_lock(&G.mu);
    s->sum = G.retired;
    int64_t gsum[METRICS_GAUGE_COUNT] = {0};
    for (size_t t = 0; t < G.nthreads; t++) {
        add_counters(&s->sum, G.threads[t]);
        for (int g = 0; g < METRICS_GAUGE_COUNT; g++)
            gsum[g] += (int64_t)__atomic_load_n(&G.threads[t]->gauge[g], __ATOMIC_RELAXED);
    }
    s->detailed = G.detailed;
    s->nroutes = G.nroutes;
    for (int i = 0; i < G.nroutes; i++) s->route_names[i] = xstrdup(G.route_names[i]);
    s->route_names[METRICS_SLOT_OTHER] = xstrdup("$other");
    s->const_labels = G.const_labels ? xstrdup(G.const_labels) : NULL;
    s->version = G.version ? xstrdup(G.version) : NULL;
    s->gauge_sources = G.gauge_sources;
    s->family_sources = G.family_sources;
    pthread_mutex_unlock(&G.mu);

    for (int g = 0; g < METRICS_GAUGE_COUNT; g++)
        s->gauges.value[g] = gauge_global(g) + (double)gsum[g];
    for (size_t i = 0; i < s->gauge_sources.n; i++)
        s->gauge_sources.at[i].gauge(&s->gauges, s->gauge_sources.at[i].ctx);

    bytebuf b = {0};
    bytebuf_reserve(&b, 8192);
    render_snapshot(&b, s);
    metrics_out o = {&b, s};
    for (size_t i = 0; i < s->family_sources.n; i++)
        s->family_sources.at[i].family(&o, s->family_sources.at[i].ctx);

    for (int i = 0; i < METRICS_ROUTE_SLOTS; i++) free(s->route_names[i]);
    free(s->const_labels);
    free(s->version);
    free(s);
    if (len) *len = b.n;
    return b.d;
}
