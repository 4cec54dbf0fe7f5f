/* Unit tests for the metrics module (src/metrics/metrics.c).
 *
 * Every rendering goes through parse(): a small Prometheus text-format
 * parser that checks each line (# HELP before # TYPE, one TYPE per family,
 * every sample `name{labels} value` belonging to the family declared last,
 * counters ending in _total, valid label names, escapes, no duplicate
 * series) and keeps the samples for the assertions. When promtool is
 * installed, a populated rendering is also checked by `promtool check
 * metrics`. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/redis_metrics.h"
#include "metrics/metrics.h"

/* ---- a tiny exposition parser ---- */

#define MAX_LABELS 16

typedef struct sample {
    char *name;
    char *family;
    int nlabels;
    char *lname[MAX_LABELS];
    char *lvalue[MAX_LABELS]; /* unescaped */
    double value;
    char *key; /* name + raw label text, for duplicate detection */
} sample;

typedef struct family_t {
    char *name;
    char *type;
    bool help;
} family_t;

typedef struct parsed {
    sample *s;
    size_t n;
    family_t *f;
    size_t nf;
} parsed;

static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

static char *dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    cr_assert_not_null(d);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static family_t *find_family(parsed *p, const char *name) {
    for (size_t i = 0; i < p->nf; i++)
        if (strcmp(p->f[i].name, name) == 0) return &p->f[i];
    return NULL;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Parse one sample line into *out; fails the test on any format error. */
static void parse_sample(const char *line, sample *out) {
    const char *p = line;
    cr_assert(is_name_start(*p), "bad metric name: %s", line);
    while (is_name_char(*p)) p++;
    out->name = dupn(line, (size_t)(p - line));
    if (*p == '{') {
        p++;
        while (*p != '}') {
            const char *ln = p;
            cr_assert(is_name_start(*p), "bad label name at '%s' in: %s", p, line);
            while (is_name_char(*p)) p++;
            cr_assert_lt(out->nlabels, MAX_LABELS);
            out->lname[out->nlabels] = dupn(ln, (size_t)(p - ln));
            for (int i = 0; i < out->nlabels; i++)
                cr_assert_str_neq(out->lname[i], out->lname[out->nlabels], "duplicate label in: %s",
                                  line);
            cr_assert_eq(*p, '=', "expected '=' in: %s", line);
            p++;
            cr_assert_eq(*p, '"', "expected '\"' in: %s", line);
            p++;
            char *v = malloc(strlen(p) + 1);
            size_t k = 0;
            while (*p != '"') {
                cr_assert_neq(*p, '\0', "unterminated label value in: %s", line);
                cr_assert_neq(*p, '\n', "raw newline in: %s", line);
                if (*p == '\\') {
                    p++;
                    if (*p == 'n') v[k++] = '\n';
                    else if (*p == '\\') v[k++] = '\\';
                    else if (*p == '"') v[k++] = '"';
                    else cr_assert_fail("bad escape \\%c in: %s", *p, line);
                    p++;
                } else {
                    v[k++] = *p++;
                }
            }
            v[k] = '\0';
            out->lvalue[out->nlabels++] = v;
            p++; /* closing quote */
            if (*p == ',') p++;
            else cr_assert_eq(*p, '}', "expected ',' or '}' in: %s", line);
        }
        p++;
    }
    out->key = dupn(line, (size_t)(p - line));
    cr_assert_eq(*p, ' ', "expected one space before the value in: %s", line);
    p++;
    char *end = NULL;
    if (strcmp(p, "+Inf") == 0) out->value = INFINITY;
    else if (strcmp(p, "-Inf") == 0) out->value = -INFINITY;
    else if (strcmp(p, "NaN") == 0) out->value = NAN;
    else {
        out->value = strtod(p, &end);
        cr_assert(end != p && *end == '\0', "bad value '%s' in: %s", p, line);
    }
}

static parsed parse(const char *text, size_t len) {
    parsed P = {0};
    cr_assert_eq(strlen(text), len, "length mismatch");
    cr_assert(len > 0 && text[len - 1] == '\n', "exposition must end with a newline");
    const char *cur = NULL; /* family of the latest TYPE line */
    const char *line = text;
    while (*line) {
        const char *nl = strchr(line, '\n');
        cr_assert_not_null(nl);
        char *l = dupn(line, (size_t)(nl - line));
        line = nl + 1;
        cr_assert_neq(l[0], '\0', "empty line");
        if (strncmp(l, "# HELP ", 7) == 0) {
            char *name = l + 7;
            char *sp = strchr(name, ' ');
            cr_assert_not_null(sp, "HELP without text: %s", l);
            *sp = '\0';
            cr_assert_null(find_family(&P, name), "HELP after TYPE or repeated: %s", name);
            P.f = realloc(P.f, (P.nf + 1) * sizeof *P.f);
            P.f[P.nf++] = (family_t){strdup(name), NULL, true};
        } else if (strncmp(l, "# TYPE ", 7) == 0) {
            char *name = l + 7;
            char *sp = strchr(name, ' ');
            cr_assert_not_null(sp, "TYPE without type: %s", l);
            *sp = '\0';
            const char *type = sp + 1;
            cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                          strcmp(type, "histogram") == 0,
                      "unexpected type %s", type);
            family_t *f = find_family(&P, name);
            cr_assert_not_null(f, "TYPE without HELP first: %s", name);
            cr_assert_null(f->type, "TYPE repeated: %s", name);
            f->type = strdup(type);
            if (strcmp(type, "counter") == 0)
                cr_assert(ends_with(name, "_total"), "counter %s", name);
            cur = f->name;
        } else {
            cr_assert_neq(l[0], '#', "unexpected comment: %s", l);
            sample s = {0};
            parse_sample(l, &s);
            cr_assert_not_null(cur, "sample before any TYPE: %s", l);
            family_t *f = find_family(&P, cur);
            if (strcmp(f->type, "histogram") == 0) {
                size_t fl = strlen(cur);
                cr_assert(strncmp(s.name, cur, fl) == 0 && (strcmp(s.name + fl, "_bucket") == 0 ||
                                                            strcmp(s.name + fl, "_sum") == 0 ||
                                                            strcmp(s.name + fl, "_count") == 0),
                          "%s is not a sample of histogram %s", s.name, cur);
            } else {
                cr_assert_str_eq(s.name, cur, "sample %s outside its family %s", s.name, cur);
            }
            for (size_t i = 0; i < P.n; i++)
                cr_assert_str_neq(P.s[i].key, s.key, "duplicate series %s", s.key);
            s.family = strdup(cur);
            P.s = realloc(P.s, (P.n + 1) * sizeof *P.s);
            P.s[P.n++] = s;
        }
        free(l);
    }
    for (size_t i = 0; i < P.nf; i++)
        cr_assert_not_null(P.f[i].type, "HELP without TYPE: %s", P.f[i].name);
    return P;
}

static void parsed_free(parsed *P) {
    for (size_t i = 0; i < P->n; i++) {
        sample *s = &P->s[i];
        free(s->name);
        free(s->family);
        free(s->key);
        for (int k = 0; k < s->nlabels; k++) {
            free(s->lname[k]);
            free(s->lvalue[k]);
        }
    }
    for (size_t i = 0; i < P->nf; i++) {
        free(P->f[i].name);
        free(P->f[i].type);
    }
    free(P->s);
    free(P->f);
}

static const char *label(const sample *s, const char *name) {
    for (int i = 0; i < s->nlabels; i++)
        if (strcmp(s->lname[i], name) == 0) return s->lvalue[i];
    return NULL;
}

/* Return the value of the one sample named `name` whose labels include the
 * NULL-terminated (label, value) pairs that follow; fails unless exactly one
 * matches. */
static double get(const parsed *P, const char *name, ...) {
    const sample *hit = NULL;
    for (size_t i = 0; i < P->n; i++) {
        const sample *s = &P->s[i];
        if (strcmp(s->name, name) != 0) continue;
        va_list ap;
        va_start(ap, name);
        bool ok = true;
        const char *k;
        while ((k = va_arg(ap, const char *)) != NULL) {
            const char *v = va_arg(ap, const char *);
            const char *have = label(s, k);
            if (!have || strcmp(have, v) != 0) ok = false;
        }
        va_end(ap);
        if (!ok) continue;
        cr_assert_null(hit, "more than one sample of %s matches", name);
        hit = s;
    }
    cr_assert_not_null(hit, "no sample of %s matches", name);
    return hit->value;
}

static size_t count_samples(const parsed *P, const char *name) {
    size_t n = 0;
    for (size_t i = 0; i < P->n; i++)
        if (strcmp(P->s[i].name, name) == 0) n++;
    return n;
}

static parsed render(char **text) {
    size_t len = 0;
    *text = metrics_render(&len);
    cr_assert_not_null(*text);
    return parse(*text, len);
}

/* ---- fixtures ---- */

static config C;

static void setup_cfg(bool detailed) {
    config_init_defaults(&C);
    C.enable_detailed_metrics = detailed;
}

static void init_detailed(void) {
    setup_cfg(true);
    metrics_global_init(&C, "9.9.9-test");
}

static void init_plain(void) {
    setup_cfg(false);
    metrics_global_init(&C, "9.9.9-test");
}

static void fini(void) {
    metrics_global_free();
    config_free(&C);
}

static const char *const FAMILIES[] = {
    "wsgate_up",
    "wsgate_build_info",
    "wsgate_connect_count_total",
    "wsgate_message_count_total",
    "wsgate_client_error_total",
    "wsgate_execution_error_total",
    "wsgate_integration_error_total",
    "wsgate_integration_errors_total",
    "wsgate_integration_latency_seconds",
    "wsgate_throttled_total",
    "wsgate_connections",
    "wsgate_rooms",
    "wsgate_queued_bytes",
    "wsgate_store_batch_latency_seconds",
    "wsgate_store_batch_size",
    "wsgate_store_pending_ops",
    "wsgate_store_rejected_total",
    "wsgate_parser_bytes",
    "wsgate_chat_phase_seconds",
    "wsgate_store_wal_pages",
    "wsgate_store_checkpoints_total",
    "wsgate_store_batches_total",
    "wsgate_store_inline_checkpoints_total",
    "wsgate_store_archive_syncs_total",
};

/* ---- tests ---- */

Test(metrics, every_family_present_and_typed, .init = init_detailed, .fini = fini) {
    char *t;
    parsed P = render(&t);
    for (size_t i = 0; i < sizeof FAMILIES / sizeof *FAMILIES; i++) {
        family_t *f = find_family(&P, FAMILIES[i]);
        cr_assert_not_null(f, "missing family %s", FAMILIES[i]);
    }
    cr_assert_eq(P.nf, sizeof FAMILIES / sizeof *FAMILIES, "unexpected extra families");
    cr_assert_str_eq(find_family(&P, "wsgate_integration_latency_seconds")->type, "histogram");
    cr_assert_str_eq(find_family(&P, "wsgate_connections")->type, "gauge");
    cr_assert_str_eq(find_family(&P, "wsgate_throttled_total")->type, "counter");
    cr_assert_str_eq(find_family(&P, "wsgate_store_rejected_total")->type, "counter");
    cr_assert_eq(get(&P, "wsgate_up", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_build_info", "version", "9.9.9-test", NULL), 1);
    /* constant labels from api_name and stage_name on every series */
    for (size_t i = 0; i < P.n; i++) {
        cr_assert_str_eq(label(&P.s[i], "api"), C.api_name, "%s", P.s[i].key);
        cr_assert_str_eq(label(&P.s[i], "stage"), C.stage_name, "%s", P.s[i].key);
    }
    parsed_free(&P);
    free(t);
}

Test(metrics, route_slots_and_other, .init = init_detailed, .fini = fini) {
    cr_assert_eq(metrics_route_slot("$connect"), METRICS_SLOT_CONNECT);
    cr_assert_eq(metrics_route_slot("$disconnect"), METRICS_SLOT_DISCONNECT);
    cr_assert_eq(metrics_route_slot("$default"), METRICS_SLOT_DEFAULT);
    int chat = metrics_route_slot("chat");
    cr_assert_geq(chat, 3);
    cr_assert_lt(chat, METRICS_ROUTE_NAMED);
    cr_assert_str_eq(metrics_route_name(chat), "chat");
    cr_assert_eq(metrics_route_slot("no_such_route"), METRICS_SLOT_OTHER);
    cr_assert_eq(metrics_route_slot(NULL), METRICS_SLOT_OTHER);
    cr_assert_str_eq(metrics_route_name(METRICS_SLOT_OTHER), "$other");
    cr_assert_null(metrics_route_name(-1));
    cr_assert_null(metrics_route_name(METRICS_ROUTE_NAMED - 1));

    metrics *m = metrics_thread_new();
    metrics_count_message(m, chat);
    metrics_count_message(m, chat);
    metrics_count_message(m, metrics_route_slot("no_such_route"));
    metrics_count_message(m, 9999);                    /* out of range: $other */
    metrics_count_message(m, METRICS_ROUTE_NAMED - 1); /* unassigned: $other */
    metrics_count_connect(m, METRICS_SLOT_CONNECT);

    char *t;
    parsed P = render(&t);
    cr_assert_eq(get(&P, "wsgate_message_count_total", "route", "chat", NULL), 2);
    cr_assert_eq(get(&P, "wsgate_message_count_total", "route", "$other", NULL), 3);
    cr_assert_eq(get(&P, "wsgate_message_count_total", "route", "$default", NULL), 0);
    cr_assert_eq(get(&P, "wsgate_connect_count_total", "route", "$connect", NULL), 1);
    /* 3 fixed + the default custom routes + $other */
    cr_assert_eq(count_samples(&P, "wsgate_message_count_total"), 3 + C.custom_routes_count + 1);
    parsed_free(&P);
    free(t);
    metrics_thread_free(m);
}

Test(metrics, more_routes_than_slots_fall_into_other, .fini = fini) {
    setup_cfg(true);
    char *names[21];
    char buf[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(buf[i], sizeof buf[i], "r%02d", i);
        names[i] = buf[i];
    }
    names[20] = NULL;
    char **saved = C.custom_routes;
    size_t savedn = C.custom_routes_count;
    C.custom_routes = names;
    C.custom_routes_count = 20;
    metrics_global_init(&C, NULL);
    C.custom_routes = saved;
    C.custom_routes_count = savedn;

    cr_assert_eq(metrics_route_slot("r00"), 3);
    cr_assert_eq(metrics_route_slot("r12"), 15);
    cr_assert_eq(metrics_route_slot("r13"), METRICS_SLOT_OTHER);
    char *t;
    parsed P = render(&t);
    cr_assert_eq(count_samples(&P, "wsgate_connect_count_total"), METRICS_ROUTE_SLOTS);
    parsed_free(&P);
    free(t);
}

typedef struct worker_arg {
    int n;
    int slot;
    metrics *m;
    pthread_barrier_t *bar;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    a->m = metrics_thread_new();
    pthread_barrier_wait(a->bar);
    for (int i = 0; i < a->n; i++) {
        metrics_count_message(a->m, a->slot);
        if (i % 10 == 0) metrics_count_client_error(a->m, a->slot);
        metrics_observe_latency_ns(a->m, a->slot, 1000000); /* exactly 0.001 */
    }
    metrics_count_throttled(a->m, METRICS_THROTTLE_CONNECTION);
    metrics_gauge_add(a->m, METRICS_GAUGE_CONNECTIONS, 5);
    pthread_barrier_wait(a->bar);
    /* stay registered until the main thread has rendered */
    pthread_barrier_wait(a->bar);
    return NULL;
}

Test(metrics, two_threads_are_summed, .init = init_detailed, .fini = fini) {
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, 3);
    int chat = metrics_route_slot("chat");
    worker_arg a = {100000, chat, NULL, &bar}, b = {50000, chat, NULL, &bar};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, worker, &a);
    pthread_create(&tb, NULL, worker, &b);
    pthread_barrier_wait(&bar);
    /* render while the workers count: must not crash or tear the format */
    for (int i = 0; i < 5; i++) {
        char *t;
        parsed P = render(&t);
        parsed_free(&P);
        free(t);
    }
    pthread_barrier_wait(&bar);

    char *t;
    parsed P = render(&t);
    cr_assert_eq(get(&P, "wsgate_message_count_total", "route", "chat", NULL), 150000);
    cr_assert_eq(get(&P, "wsgate_client_error_total", "route", "chat", NULL), 10000 + 5000);
    cr_assert_eq(get(&P, "wsgate_integration_latency_seconds_count", "route", "chat", NULL),
                 150000);
    cr_assert_eq(
        get(&P, "wsgate_integration_latency_seconds_bucket", "route", "chat", "le", "0.001", NULL),
        150000);
    cr_assert_eq(
        get(&P, "wsgate_integration_latency_seconds_bucket", "route", "chat", "le", "0.0005", NULL),
        0);
    cr_assert_float_eq(get(&P, "wsgate_integration_latency_seconds_sum", "route", "chat", NULL),
                       150.0, 1e-9);
    cr_assert_eq(get(&P, "wsgate_throttled_total", "scope", "connection", NULL), 2);
    cr_assert_eq(get(&P, "wsgate_connections", NULL), 10);
    parsed_free(&P);
    free(t);

    pthread_barrier_wait(&bar);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&bar);

    /* freeing a block keeps its counters, drops its gauge contribution */
    metrics_thread_free(a.m);
    P = render(&t);
    cr_assert_eq(get(&P, "wsgate_message_count_total", "route", "chat", NULL), 150000);
    cr_assert_eq(get(&P, "wsgate_throttled_total", "scope", "connection", NULL), 2);
    cr_assert_eq(get(&P, "wsgate_connections", NULL), 5);
    parsed_free(&P);
    free(t);
    metrics_thread_free(b.m);
    P = render(&t);
    cr_assert_eq(get(&P, "wsgate_message_count_total", "route", "chat", NULL), 150000);
    cr_assert_eq(get(&P, "wsgate_connections", NULL), 0);
    parsed_free(&P);
    free(t);
}

Test(metrics, histogram_cumulative_count_and_sum, .init = init_detailed, .fini = fini) {
    metrics *m = metrics_thread_new();
    int s = METRICS_SLOT_DEFAULT;
    const double obs[] = {0.00005, 0.0001, 0.0001001, 0.003, 0.003, 0.02,
                          0.7,     4.9,    5.0,       12.0,  -1.0,  NAN};
    double sum = 0;
    for (size_t i = 0; i < sizeof obs / sizeof *obs; i++) {
        metrics_observe_latency(m, s, obs[i]);
        if (obs[i] > 0) sum += obs[i];
    }
    char *t;
    parsed P = render(&t);
    static const char *const le[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
                                     "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
                                     "1",      "2.5",     "5",      "+Inf"};
    /* expected cumulative counts: -1 and NaN count as 0 s */
    static const double want[] = {4, 5, 5, 5, 5, 7, 7, 8, 8, 8, 8, 8, 9, 9, 11, 12};
    double prev = 0;
    for (int i = 0; i < 16; i++) {
        double v = get(&P, "wsgate_integration_latency_seconds_bucket", "route", "$default", "le",
                       le[i], NULL);
        cr_assert_eq(v, want[i], "le=%s: %g != %g", le[i], v, want[i]);
        cr_assert_geq(v, prev, "buckets must be cumulative");
        prev = v;
    }
    cr_assert_eq(count_samples(&P, "wsgate_integration_latency_seconds_bucket"),
                 16 * (size_t)(3 + C.custom_routes_count + 1));
    cr_assert_eq(get(&P, "wsgate_integration_latency_seconds_count", "route", "$default", NULL),
                 12);
    cr_assert_float_eq(get(&P, "wsgate_integration_latency_seconds_sum", "route", "$default", NULL),
                       sum, 1e-9);
    cr_assert_eq(get(&P, "wsgate_integration_latency_seconds_count", "route", "chat", NULL), 0);
    cr_assert_eq(get(&P, "wsgate_integration_latency_seconds_sum", "route", "chat", NULL), 0);
    /* the le label text is exactly as specified */
    cr_assert_not_null(strstr(t, "le=\"0.00025\"} 5\n"));
    cr_assert_not_null(strstr(t, "le=\"+Inf\"} 12\n"));
    parsed_free(&P);
    free(t);
    metrics_thread_free(m);
}

Test(metrics, chat_phases_per_thread_summed_cumulative, .init = init_detailed, .fini = fini) {
    metrics *m1 = metrics_thread_new(), *m2 = metrics_thread_new();
    metrics_observe_chat_stage(m1, METRICS_CHAT_COMMIT, 10000);    /* exactly 10 us */
    metrics_observe_chat_stage(m1, METRICS_CHAT_COMMIT, 300000);   /* 0.0003 s */
    metrics_observe_chat_stage(m2, METRICS_CHAT_COMMIT, 20000000); /* exactly 20 ms */
    metrics_observe_chat_stage(m2, METRICS_CHAT_COMMIT, 9000000000ull);
    metrics_observe_chat_stage(m2, METRICS_CHAT_FANOUT, 7000000);
    metrics_observe_chat_stage(m2, METRICS_CHAT_STAGES, 1); /* out of range: ignored */
    char *t;
    parsed P = render(&t);
    const char *h = "wsgate_chat_phase_seconds_bucket";
    cr_assert_eq(get(&P, h, "phase", "commit", "le", "0.00001", NULL), 1);
    cr_assert_eq(get(&P, h, "phase", "commit", "le", "0.00025", NULL), 1);
    cr_assert_eq(get(&P, h, "phase", "commit", "le", "0.0005", NULL), 2);
    cr_assert_eq(get(&P, h, "phase", "commit", "le", "0.015", NULL), 2);
    cr_assert_eq(get(&P, h, "phase", "commit", "le", "0.02", NULL), 3);
    cr_assert_eq(get(&P, h, "phase", "commit", "le", "5", NULL), 3);
    cr_assert_eq(get(&P, h, "phase", "commit", "le", "+Inf", NULL), 4);
    cr_assert_eq(get(&P, "wsgate_chat_phase_seconds_count", "phase", "commit", NULL), 4);
    cr_assert_float_eq(get(&P, "wsgate_chat_phase_seconds_sum", "phase", "commit", NULL), 9.02031,
                       1e-9);
    cr_assert_eq(get(&P, h, "phase", "fanout", "le", "0.005", NULL), 0);
    cr_assert_eq(get(&P, h, "phase", "fanout", "le", "0.0075", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_chat_phase_seconds_count", "phase", "queue", NULL), 0);
    /* every phase has its 25 buckets */
    cr_assert_eq(count_samples(&P, h), 8 * (size_t)METRICS_STAGE_BUCKETS);
    cr_assert_str_eq(find_family(&P, "wsgate_chat_phase_seconds")->type, "histogram");
    parsed_free(&P);
    free(t);
    metrics_thread_free(m1);
    metrics_thread_free(m2);
}

Test(metrics, not_detailed_is_one_unlabelled_series, .init = init_plain, .fini = fini) {
    cr_assert_not(metrics_detailed());
    metrics *m = metrics_thread_new();
    metrics_count_connect(m, METRICS_SLOT_CONNECT);
    metrics_count_message(m, metrics_route_slot("chat"));
    metrics_count_message(m, metrics_route_slot("join_room"));
    metrics_count_message(m, metrics_route_slot("nope"));
    metrics_count_execution_error(m, METRICS_SLOT_DEFAULT);
    metrics_count_integration_error(m, metrics_route_slot("chat"));
    metrics_observe_latency(m, metrics_route_slot("chat"), 0.002);
    metrics_observe_latency(m, METRICS_SLOT_OTHER, 0.02);
    char *t;
    parsed P = render(&t);
    for (size_t i = 0; i < P.n; i++) cr_assert_null(label(&P.s[i], "route"), "%s", P.s[i].key);
    cr_assert_eq(count_samples(&P, "wsgate_message_count_total"), 1);
    cr_assert_eq(count_samples(&P, "wsgate_integration_latency_seconds_bucket"), 16);
    cr_assert_eq(get(&P, "wsgate_connect_count_total", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_message_count_total", NULL), 3);
    cr_assert_eq(get(&P, "wsgate_execution_error_total", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_integration_error_total", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_client_error_total", NULL), 0);
    cr_assert_eq(get(&P, "wsgate_integration_latency_seconds_count", NULL), 2);
    cr_assert_eq(get(&P, "wsgate_integration_latency_seconds_bucket", "le", "0.0025", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_integration_latency_seconds_bucket", "le", "0.025", NULL), 2);
    cr_assert_float_eq(get(&P, "wsgate_integration_latency_seconds_sum", NULL), 0.022, 1e-12);
    parsed_free(&P);
    free(t);
    metrics_thread_free(m);
}

Test(metrics, tags_sanitised_and_escaped, .fini = fini) {
    setup_cfg(true);
    free(C.api_name);
    C.api_name = strdup("my \"api\"\\x\ny");
    config_kv tags[] = {
        {"Environment", "prod"},
        {"cost-center", "a\\b\"c\nd"},
        {"9lives", "cat"},
        {"aws:owner", "ops"},
        {"route", "clash"},       /* reserved: tag_route */
        {"cost_center", "dup"},   /* collides with sanitised cost-center: tag_cost_center */
        {"tag_cost_center", "x"}, /* collides and still collides after prefix: dropped */
        {"__meta", "m"},          /* reserved prefix: tag___meta */
        {"", "empty"},            /* "_" */
        {"bad", "\xff\xfe"},      /* not UTF-8 */
    };
    C.additional_tags = tags;
    C.additional_tags_count = sizeof tags / sizeof *tags;
    metrics_global_init(&C, "1.2.3\"q");
    C.additional_tags = NULL;
    C.additional_tags_count = 0;

    char *t;
    parsed P = render(&t);
    for (size_t i = 0; i < P.n; i++) {
        const sample *s = &P.s[i];
        cr_assert_str_eq(label(s, "api"), "my \"api\"\\x\ny");
        cr_assert_str_eq(label(s, "Environment"), "prod");
        cr_assert_str_eq(label(s, "cost_center"), "a\\b\"c\nd");
        cr_assert_str_eq(label(s, "_9lives"), "cat");
        cr_assert_str_eq(label(s, "aws_owner"), "ops");
        cr_assert_str_eq(label(s, "tag_route"), "clash");
        cr_assert_str_eq(label(s, "tag_cost_center"), "dup");
        cr_assert_str_eq(label(s, "tag___meta"), "m");
        cr_assert_str_eq(label(s, "_"), "empty");
        cr_assert_str_eq(label(s, "bad"), "??");
        if (strcmp(s->family, "wsgate_connect_count_total") == 0)
            cr_assert_not_null(label(s, "route"));
    }
    cr_assert_eq(get(&P, "wsgate_build_info", "version", "1.2.3\"q", NULL), 1);
    cr_assert_not_null(strstr(t, "cost_center=\"a\\\\b\\\"c\\nd\""), "raw escape text");
    parsed_free(&P);
    free(t);
}

static void source_a(metrics_gauges *g, void *ctx) {
    g->value[METRICS_GAUGE_ROOMS] = *(double *)ctx;
    g->value[METRICS_GAUGE_CONNECTIONS] += 100; /* sees the pre-filled value */
}

static void source_b(metrics_gauges *g, void *ctx) {
    g->value[METRICS_GAUGE_STORE_PENDING_OPS] = 7;
    g->value[METRICS_GAUGE_STORE_BATCH_SIZE] = NAN;
}

Test(metrics, gauges_set_thread_and_sources, .init = init_detailed, .fini = fini) {
    metrics *m = metrics_thread_new();
    metrics_gauge_add(m, METRICS_GAUGE_CONNECTIONS, 3);
    metrics_gauge_add(m, METRICS_GAUGE_CONNECTIONS, -1);
    metrics_gauge_add(m, METRICS_GAUGE_QUEUED_BYTES, 4096);
    metrics_set_gauge(METRICS_GAUGE_CONNECTIONS, 1);
    metrics_set_gauge(METRICS_GAUGE_STORE_BATCH_LATENCY, 0.0012);
    metrics_set_gauge(METRICS_GAUGE_STORE_BATCH_SIZE, 64);
    metrics_set_gauge(METRICS_GAUGE_COUNT, 5); /* ignored */

    char *t;
    parsed P = render(&t);
    cr_assert_eq(get(&P, "wsgate_connections", NULL), 3);
    cr_assert_eq(get(&P, "wsgate_queued_bytes", NULL), 4096);
    cr_assert_eq(get(&P, "wsgate_store_batch_latency_seconds", NULL), 0.0012);
    cr_assert_eq(get(&P, "wsgate_store_batch_size", NULL), 64);
    cr_assert_eq(get(&P, "wsgate_rooms", NULL), 0);
    cr_assert_not_null(strstr(t, "} 0.0012\n"));
    parsed_free(&P);
    free(t);

    double rooms = 42;
    cr_assert_eq(metrics_add_gauge_source(source_a, &rooms), 0);
    cr_assert_eq(metrics_add_gauge_source(source_b, NULL), 0);
    P = render(&t);
    cr_assert_eq(get(&P, "wsgate_rooms", NULL), 42);
    cr_assert_eq(get(&P, "wsgate_connections", NULL), 103);
    cr_assert_eq(get(&P, "wsgate_store_pending_ops", NULL), 7);
    cr_assert(isnan(get(&P, "wsgate_store_batch_size", NULL)));
    parsed_free(&P);
    free(t);

    metrics_remove_gauge_source(source_a, &rooms);
    metrics_remove_gauge_source(source_a, &rooms); /* absent: no-op */
    P = render(&t);
    cr_assert_eq(get(&P, "wsgate_rooms", NULL), 0);
    cr_assert_eq(get(&P, "wsgate_store_pending_ops", NULL), 7);
    parsed_free(&P);
    free(t);

    for (int i = 0; i < 7; i++) cr_assert_eq(metrics_add_gauge_source(source_b, NULL), 0);
    cr_assert_eq(metrics_add_gauge_source(source_b, NULL), WSG_E_FULL, "at most 8 sources");
    cr_assert_eq(metrics_add_gauge_source(NULL, NULL), WSG_E_INVAL);
    metrics_thread_free(m);
}

Test(metrics, throttle_scopes, .init = init_detailed, .fini = fini) {
    metrics *m = metrics_thread_new();
    metrics_count_throttled(m, METRICS_THROTTLE_STAGE);
    metrics_count_throttled(m, METRICS_THROTTLE_STAGE);
    metrics_count_throttled(m, METRICS_THROTTLE_ROUTE);
    metrics_count_throttled(m, METRICS_THROTTLE_ADDRESS);
    metrics_count_throttled(m, (metrics_throttle_scope)99); /* ignored */
    char *t;
    parsed P = render(&t);
    cr_assert_eq(count_samples(&P, "wsgate_throttled_total"), 4);
    cr_assert_eq(get(&P, "wsgate_throttled_total", "scope", "stage", NULL), 2);
    cr_assert_eq(get(&P, "wsgate_throttled_total", "scope", "route", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_throttled_total", "scope", "connection", NULL), 0);
    cr_assert_eq(get(&P, "wsgate_throttled_total", "scope", "address", NULL), 1);
    parsed_free(&P);
    free(t);
    metrics_thread_free(m);
}

Test(metrics, render_without_init) {
    metrics *m = metrics_thread_new();
    metrics_count_message(m, metrics_route_slot("chat")); /* $other before init */
    char *t;
    size_t len;
    t = metrics_render(&len);
    parsed P = parse(t, len);
    cr_assert_eq(get(&P, "wsgate_message_count_total", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_up", NULL), 1);
    parsed_free(&P);
    free(t);
    metrics_thread_free(m);
    metrics_global_free();
}

Test(metrics, reinit_keeps_counters, .init = init_detailed, .fini = fini) {
    metrics *m = metrics_thread_new();
    metrics_count_connect(m, METRICS_SLOT_CONNECT);
    metrics_global_init(&C, NULL);
    metrics_count_connect(m, METRICS_SLOT_CONNECT);
    char *t;
    parsed P = render(&t);
    cr_assert_eq(get(&P, "wsgate_connect_count_total", "route", "$connect", NULL), 2);
    parsed_free(&P);
    free(t);
    /* left registered on purpose: metrics_global_free releases it */
}

/* A populated registry through `promtool check metrics` when available. */
Test(metrics, promtool_check) {
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        cr_log_warn(
            "promtool not installed (apt-get install prometheus): skipping the promtool check");
        fprintf(stderr, "test_metrics: promtool not installed; promtool_check skipped\n");
        return;
    }
    for (int detailed = 0; detailed < 2; detailed++) {
        setup_cfg(detailed);
        config_kv tags[] = {{"team", "rt \"core\"\\\n"}, {"cost-center", "42"}};
        C.additional_tags = tags;
        C.additional_tags_count = 2;
        metrics_global_init(&C, NULL);
        C.additional_tags = NULL;
        C.additional_tags_count = 0;

        metrics *m = metrics_thread_new();
        for (int i = 0; i < METRICS_ROUTE_SLOTS; i++) {
            metrics_count_connect(m, i);
            metrics_count_message(m, i);
            metrics_count_client_error(m, i);
            metrics_count_execution_error(m, i);
            metrics_count_integration_error(m, i);
            metrics_observe_latency(m, i, 0.0001 * (i + 1) * (i + 1));
        }
        for (int i = 0; i < METRICS_THROTTLE_COUNT; i++) metrics_count_throttled(m, i);
        metrics_gauge_add(m, METRICS_GAUGE_CONNECTIONS, 12);
        metrics_set_gauge(METRICS_GAUGE_STORE_BATCH_LATENCY, 0.000321);

        size_t len;
        char *t = metrics_render(&len);
        parsed P = parse(t, len);
        parsed_free(&P);

        char path[] = "/tmp/wsgate_metrics_XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, t, len), (ssize_t)len);
        close(fd);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "promtool check metrics < %s 1>&2", path);
        int rc = system(cmd);
        if (rc != 0) {
            fprintf(stderr, "---- rendered (detailed=%d) ----\n%s", detailed, t);
        }
        cr_assert_eq(rc, 0, "promtool check metrics failed (detailed=%d), file %s", detailed, path);
        unlink(path);
        free(t);
        metrics_thread_free(m);
        metrics_global_free();
        config_free(&C);
        memset(&C, 0, sizeof C);
    }
}

/* ---- families from other modules (the Redis engine's) ---- */

static void redis_source(metrics_out *o, void *ctx) { redis_metrics_write(o, ctx); }

/* Remove the last family source of s: no Redis family is rendered after. */
static void remove_last_redis_source(redis_engine_stats *s) {
    metrics_remove_family_source(redis_source, s);
    char *t;
    parsed P = render(&t);
    cr_assert_null(strstr(t, "wsgate_redis_"));
    parsed_free(&P);
    free(t);
}

Test(metrics, family_sources_render_the_redis_engine, .init = init_detailed, .fini = fini) {
    redis_engine_stats s = {.published_chats = 5, .workers = 2, .workers_up = 2, .rooms = 3};
    redis_client_stats
        a = {.commands = 10, .reconnects = 1, .channels = 2, .rtt_count = 3, .rtt_sum_ms = 1.5},
        b = {.commands = 4, .timeouts = 2, .channels = 1, .rtt_count = 1, .rtt_sum_ms = 2000};
    a.rtt_buckets[0] = 2;                        /* <= 0.1 ms */
    a.rtt_buckets[3] = 1;                        /* <= 1 ms */
    b.rtt_buckets[REDIS_CLIENT_RTT_BUCKETS] = 1; /* > 1 s */
    redis_client_stats_add(&s.client, &a);
    redis_client_stats_add(&s.client, &b);
    cr_assert_eq(metrics_add_family_source(redis_source, &s), 0);

    char *t;
    parsed P = render(&t);
    cr_assert_eq(get(&P, "wsgate_redis_up", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_redis_commands_total", NULL), 14);
    cr_assert_eq(get(&P, "wsgate_redis_timeouts_total", NULL), 2);
    cr_assert_eq(get(&P, "wsgate_redis_reconnects_total", NULL), 1);
    cr_assert_eq(get(&P, "wsgate_redis_subscribed_channels", NULL), 3);
    cr_assert_eq(get(&P, "wsgate_redis_subscribed_rooms", NULL), 3);
    cr_assert_eq(get(&P, "wsgate_redis_published_chats_total", NULL), 5);
    /* the histogram: cumulative, in seconds, +Inf == _count */
    cr_assert_eq(get(&P, "wsgate_redis_rtt_seconds_bucket", "le", "0.0001", NULL), 2);
    cr_assert_eq(get(&P, "wsgate_redis_rtt_seconds_bucket", "le", "0.001", NULL), 3);
    cr_assert_eq(get(&P, "wsgate_redis_rtt_seconds_bucket", "le", "1", NULL), 3);
    cr_assert_eq(get(&P, "wsgate_redis_rtt_seconds_bucket", "le", "+Inf", NULL), 4);
    cr_assert_eq(get(&P, "wsgate_redis_rtt_seconds_count", NULL), 4);
    cr_assert_float_eq(get(&P, "wsgate_redis_rtt_seconds_sum", NULL), 2.0015, 1e-9);
    /* the constant labels reach the families of a source too */
    cr_assert_not_null(strstr(t, "wsgate_redis_up{api="));
    parsed_free(&P);
    free(t);

    s.workers_up = 1; /* one worker's client down */
    P = render(&t);
    cr_assert_eq(get(&P, "wsgate_redis_up", NULL), 0);
    cr_assert_eq(get(&P, "wsgate_redis_workers_up", NULL), 1);
    parsed_free(&P);
    free(t);

    remove_last_redis_source(&s);
}

/* Gauge and family sources are added and removed by one piece of code
 * (issue #17): each list keeps its own bound, and removing from one leaves
 * the other alone. */
Test(metrics, family_sources_bounded_and_apart_from_gauges, .init = init_detailed, .fini = fini) {
    redis_engine_stats s = {.workers = 1, .workers_up = 1};
    for (int i = 0; i < 8; i++) cr_assert_eq(metrics_add_family_source(redis_source, &s), 0);
    cr_assert_eq(metrics_add_family_source(redis_source, &s), WSG_E_FULL, "at most 8 sources");
    cr_assert_eq(metrics_add_family_source(NULL, &s), WSG_E_INVAL);
    cr_assert_eq(metrics_add_gauge_source(source_b, NULL), 0, "the gauge list is its own");
    metrics_remove_gauge_source(source_b, NULL);
    metrics_remove_gauge_source(NULL, &s); /* matches no family entry */
    for (int i = 0; i < 7; i++) metrics_remove_family_source(redis_source, &s);
    char *t;
    parsed P = render(&t);
    cr_assert_not_null(strstr(t, "wsgate_redis_up"), "one family source left");
    cr_assert_eq(get(&P, "wsgate_store_pending_ops", NULL), 0, "gauge source removed");
    parsed_free(&P);
    free(t);
    remove_last_redis_source(&s);
}
