#include "trace/trace.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/random.h"
#include "log/log.h"

#define TRACE_QUEUE_MAX 10000
#define TRACE_BATCH_MAX 512
#define TRACE_FLUSH_MS  1000

static bool is_hex_run(const char *s, size_t n) {
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        if (c != '0') nonzero = true;
    }
    return nonzero; /* all-zero ids are invalid in W3C trace context */
}

bool trace_parse_traceparent(const char *s, size_t len, char trace_id[33], char parent_id[17]) {
    /* version(2) - trace-id(32) - parent-id(16) - flags(2) */
    if (len < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-') return false;
    if (s[0] == 'f' && s[1] == 'f') return false;
    if (!(s[0] >= '0' && s[0] <= '9') && !(s[0] >= 'a' && s[0] <= 'f')) return false;
    if (len > 55 && (s[0] == '0' && s[1] == '0')) return false; /* version 00 is exactly 55 */
    if (!is_hex_run(s + 3, 32) || !is_hex_run(s + 36, 16)) return false;
    memcpy(trace_id, s + 3, 32);
    trace_id[32] = '\0';
    memcpy(parent_id, s + 36, 16);
    parent_id[16] = '\0';
    return true;
}

void trace_start(trace_ctx *t, const char *traceparent, size_t len) {
    if (!traceparent ||
        !trace_parse_traceparent(traceparent, len, t->trace_id, t->parent_span_id)) {
        random_hex(t->trace_id, 16);
        t->parent_span_id[0] = '\0';
    }
    random_hex(t->span_id, 8);
}

void trace_format(const trace_ctx *t, char out[56]) {
    snprintf(out, 56, "00-%s-%s-01", t->trace_id, t->span_id);
}

uint64_t trace_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- exporter ---- */

typedef struct queued_span {
    struct queued_span *next;
    trace_ctx ctx;
    char name[128];
    char connection_id[32];
    char route_key[128];
    uint64_t start_ns, end_ns;
    int status;
    bool error;
} queued_span;

struct trace_exporter {
    char *url;
    char *service;
    char *stage;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    queued_span *head, *tail;
    size_t queued;
    uint64_t dropped;
    bool stopping;
};

static json_t *attr_str(const char *k, const char *v) {
    return json_pack("{s:s,s:{s:s}}", "key", k, "value", "stringValue", v);
}

static json_t *batch_json(trace_exporter *e, queued_span *list) {
    json_t *spans = json_array();
    char num[32];
    for (queued_span *s = list; s; s = s->next) {
        json_t *attrs = json_array();
        json_array_append_new(attrs, attr_str("wsgate.connection_id", s->connection_id));
        json_array_append_new(attrs, attr_str("wsgate.route_key", s->route_key));
        json_array_append_new(attrs, json_pack("{s:s,s:{s:I}}", "key", "wsgate.status", "value",
                                               "intValue", (json_int_t)s->status));
        json_t *span = json_pack("{s:s,s:s,s:s,s:i,s:o,s:{s:i}}", "traceId", s->ctx.trace_id,
                                 "spanId", s->ctx.span_id, "name", s->name, "kind", 2, "attributes",
                                 attrs, "status", "code", s->error ? 2 : 1);
        if (s->ctx.parent_span_id[0])
            json_object_set_new(span, "parentSpanId", json_string(s->ctx.parent_span_id));
        /* OTLP/JSON carries 64-bit integers as strings. */
        snprintf(num, sizeof(num), "%llu", (unsigned long long)s->start_ns);
        json_object_set_new(span, "startTimeUnixNano", json_string(num));
        snprintf(num, sizeof(num), "%llu", (unsigned long long)s->end_ns);
        json_object_set_new(span, "endTimeUnixNano", json_string(num));
        json_array_append_new(spans, span);
    }
    json_t *res_attrs = json_array();
    json_array_append_new(res_attrs, attr_str("service.name", e->service));
    json_array_append_new(res_attrs, attr_str("wsgate.stage", e->stage));
    return json_pack("{s:[{s:{s:o},s:[{s:{s:s},s:o}]}]}", "resourceSpans", "resource", "attributes",
                     res_attrs, "scopeSpans", "scope", "name", "wsgate", "spans", spans);
}

static size_t discard(char *p, size_t size, size_t n, void *ud) { return size * n; }

static void post_batch(trace_exporter *e, CURL *curl, queued_span *list, size_t n) {
    json_t *doc = batch_json(e, list);
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, e->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(curl);
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK || code < 200 || code >= 300)
        log_msg(LOG_ERROR, "trace_export_error", "%zu spans not exported to %s: %s (HTTP %ld)", n,
                e->url, rc != CURLE_OK ? curl_easy_strerror(rc) : "bad status", code);
    curl_slist_free_all(hdrs);
    free(body);
}

static void *exporter_thread(void *arg) {
    trace_exporter *e = arg;
    CURL *curl = curl_easy_init();
    for (;;) {
        pthread_mutex_lock(&e->lock);
        if (!e->stopping && e->queued < TRACE_BATCH_MAX) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += (long)TRACE_FLUSH_MS * 1000000L;
            until.tv_sec += until.tv_nsec / 1000000000L;
            until.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&e->wake, &e->lock, &until);
        }
        queued_span *list = e->head, *last = list;
        size_t n = list ? 1 : 0;
        while (last && last->next && n < TRACE_BATCH_MAX) {
            last = last->next;
            n++;
        }
        if (last) {
            e->head = last->next;
            if (!e->head) e->tail = NULL;
            last->next = NULL;
            e->queued -= n;
        }
        bool stop = e->stopping && !e->head;
        pthread_mutex_unlock(&e->lock);
        if (list) {
            if (curl) post_batch(e, curl, list, n);
            while (list) {
                queued_span *next = list->next;
                free(list);
                list = next;
            }
        }
        if (stop) break;
    }
    if (curl) curl_easy_cleanup(curl);
    return NULL;
}

trace_exporter *trace_exporter_start(const char *endpoint, const char *service_name,
                                     const char *stage, wsg_error *err) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        wsg_error_set(err, WSG_E_INTERNAL, "cannot initialise libcurl");
        return NULL;
    }
    trace_exporter *e = xcalloc(1, sizeof(*e));
    size_t n = strlen(endpoint);
    const char *suffix = "/v1/traces";
    bool has_suffix = n >= strlen(suffix) && strcmp(endpoint + n - strlen(suffix), suffix) == 0;
    e->url = xmalloc(n + strlen(suffix) + 1);
    snprintf(e->url, n + strlen(suffix) + 1, "%.*s%s",
             (int)(n && endpoint[n - 1] == '/' && !has_suffix ? n - 1 : n), endpoint,
             has_suffix ? "" : suffix);
    e->service = xstrdup(service_name);
    e->stage = xstrdup(stage);
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    if (pthread_create(&e->thread, NULL, exporter_thread, e) != 0) {
        wsg_error_set(err, WSG_E_INTERNAL, "cannot start the trace exporter thread");
        free(e->url);
        free(e->service);
        free(e->stage);
        free(e);
        curl_global_cleanup();
        return NULL;
    }
    return e;
}

void trace_export(trace_exporter *e, const trace_span *span) {
    queued_span *q = xcalloc(1, sizeof(*q));
    q->ctx = span->ctx;
    snprintf(q->name, sizeof(q->name), "%s", span->name ? span->name : "");
    snprintf(q->connection_id, sizeof(q->connection_id), "%s",
             span->connection_id ? span->connection_id : "");
    snprintf(q->route_key, sizeof(q->route_key), "%s", span->route_key ? span->route_key : "");
    q->start_ns = span->start_unix_ns;
    q->end_ns = span->end_unix_ns;
    q->status = span->status;
    q->error = span->error;
    pthread_mutex_lock(&e->lock);
    if (e->queued >= TRACE_QUEUE_MAX) {
        e->dropped++;
        pthread_mutex_unlock(&e->lock);
        free(q);
        return;
    }
    if (e->tail) e->tail->next = q;
    else e->head = q;
    e->tail = q;
    e->queued++;
    if (e->queued >= TRACE_BATCH_MAX) pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
}

void trace_exporter_stop(trace_exporter *e) {
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    if (e->dropped)
        log_msg(LOG_ERROR, "trace_export_error", "%llu spans dropped (queue full)",
                (unsigned long long)e->dropped);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    free(e->url);
    free(e->service);
    free(e->stage);
    free(e);
    curl_global_cleanup();
}
