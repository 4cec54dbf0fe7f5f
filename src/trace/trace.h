/* Tracing, standing in for X-Ray: a W3C trace context for every connect and
 * message (an incoming `traceparent` is continued), carried in log lines,
 * and spans exported as OTLP/HTTP JSON by a background thread when an
 * endpoint is configured. */
#ifndef WSGATE_TRACE_TRACE_H
#define WSGATE_TRACE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct trace_ctx {
    char trace_id[33];       /* 32 lowercase hex digits */
    char span_id[17];        /* 16 lowercase hex digits: this span */
    char parent_span_id[17]; /* "" when the trace starts here */
} trace_ctx;

/* Start a span in *t: a child of `traceparent` (len bytes; a W3C header
 * "00-<trace-id>-<parent-id>-<flags>") when it is valid, else the root of a
 * new trace. Never fails. */
void trace_start(trace_ctx *t, const char *traceparent, size_t len);

/* Return true when s (len bytes) is a valid W3C traceparent. */
bool trace_parse_traceparent(const char *s, size_t len, char trace_id[33], char parent_id[17]);

/* Write the traceparent header value for t ("00-...-...-01") into out. */
void trace_format(const trace_ctx *t, char out[56]);

/* One finished span for export. Strings are copied. */
typedef struct trace_span {
    trace_ctx ctx;
    const char *name; /* "$connect", the route key, ... */
    uint64_t start_unix_ns, end_unix_ns;
    bool error;
    const char *connection_id;
    const char *route_key;
    int status; /* the access log's status */
} trace_span;

typedef struct trace_exporter trace_exporter;

/* Start the exporter thread posting batches to `endpoint` (an OTLP/HTTP
 * traces URL; "/v1/traces" is appended to a bare base URL) as service
 * `service_name`. Returns NULL, with *err (caller's) filled
 * (WSG_E_INTERNAL), when libcurl or the thread cannot start. The caller
 * owns it and stops it with trace_exporter_stop(). */
trace_exporter *trace_exporter_start(const char *endpoint, const char *service_name,
                                     const char *stage, wsg_error *err);

/* Queue a copy of span for export (any thread). Spans beyond the queue's
 * bound (10,000) are dropped and counted. */
void trace_export(trace_exporter *e, const trace_span *span);

/* Post what is queued, stop the thread and free e. */
void trace_exporter_stop(trace_exporter *e);

/* Return the Unix time now in nanoseconds. */
uint64_t trace_now_ns(void);

#endif
