/* The access log: one line per request ($connect, a message,
 * $disconnect) with API Gateway's $context fields, and its span for the
 * trace exporter. */
#include "app/access_log.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/random.h"
#include "integrations/integ.h"
#include "net/server.h"
#include "log/access_line.h"
#include "log/log.h"

void access_start(const config *cfg, access_record *r, const char *event_type,
                  const char *traceparent, size_t tp_len) {
    memset(r, 0, sizeof(*r));
    r->event_type = event_type;
    r->status = 200;
    r->start_epoch_ms = clock_wall_ms();
    r->start_mono_ms = clock_mono_ms();
    if (cfg->enable_xray_tracing) {
        r->traced = true;
        r->start_ns = trace_now_ns();
        trace_start(&r->trace, traceparent, tp_len);
    }
}

/* Finish r: one access-log line with API Gateway's $context fields (and the
 * trace ids), and its span for the exporter. Returns the latency in ms. */
double access_finish(const config *cfg, trace_exporter *tracer, conn *c, access_record *r) {
    double latency_ms = clock_mono_ms() - r->start_mono_ms;
    if (r->traced && tracer) {
        trace_span sp = {.ctx = r->trace,
                         .name = r->route_key,
                         .start_unix_ns = r->start_ns,
                         .end_unix_ns = trace_now_ns(),
                         .error = r->status >= 400,
                         .connection_id = c->id,
                         .route_key = r->route_key,
                         .status = r->status};
        trace_export(tracer, &sp);
    }
    if (!log_enabled(LOG_INFO)) return latency_ms;
    char request_id[37];
    random_uuid(request_id);
    log_line l;
    log_begin(&l, LOG_INFO, "access");
    access_line_context(&l, cfg,
                        &(access_line){.request_id = request_id,
                                       .connection_id = c->id,
                                       .event_type = r->event_type,
                                       .route_key = r->route_key,
                                       .status = r->status,
                                       .request_time_epoch = r->start_epoch_ms,
                                       .latency_ms = latency_ms,
                                       .source_ip = c->source_ip,
                                       .user_agent = c->user_agent,
                                       .worker = c->srv->worker_index});
    /* Which clients compress: said once per connection, on its connect. */
    if (c->deflate && strcmp(r->event_type, "CONNECT") == 0)
        log_str(&l, "extensions", "permessage-deflate");
    if (r->traced) {
        log_str(&l, "traceId", r->trace.trace_id);
        log_str(&l, "spanId", r->trace.span_id);
        if (r->trace.parent_span_id[0]) log_str(&l, "parentSpanId", r->trace.parent_span_id);
    }
    access_line_tags(&l, cfg);
    if (r->error) log_str(&l, "error.message", r->error);
    if (r->body && cfg->enable_data_trace)
        log_strn(&l, "body", r->body, r->body_len, ACCESS_LINE_TRACE_MAX);
    integ_log_fields(&l, c); /* [integrations] the HTTP authorizer's principalId */
    log_end(&l);
    return latency_ms;
}

/* Text a private message's data trace shows instead of the message. */
#define TRACE_REDACTED "<redacted>"

/* The body the data trace logs for m: NULL to log it as received, else a
 * malloc'd text the caller frees. A private message is logged with its
 * "message" replaced by TRACE_REDACTED: the store never keeps private
 * messages and encrypts chats, so the log must not be where their text
 * lives in the clear. Any body whose type says private_message counts, so
 * that one refused (throttled, bad fields) is not logged either. */
char *access_redacted_body(const route_match *m) {
    json_t *type = json_is_object(m->body) ? json_object_get(m->body, "type") : NULL;
    bool private_route = m->outcome == ROUTED && m->route == ROUTE_PRIVATE_MESSAGE;
    bool private_type =
        json_is_string(type) && strcmp(json_string_value(type), "private_message") == 0;
    if (!private_route && !private_type) return NULL;
    if (!json_is_object(m->body)) return xstrdup(TRACE_REDACTED);
    json_t *copy = json_copy(m->body); /* shallow: only the top member changes */
    if (json_object_get(copy, "message"))
        json_object_set_new(copy, "message", json_string(TRACE_REDACTED));
    char *txt = json_dumps(copy, JSON_COMPACT);
    json_decref(copy);
    if (!txt) abort(); /* only on allocation failure */
    return txt;
}
