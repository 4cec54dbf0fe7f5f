/* The access log of the API: one line per request ($connect, a message,
 * $disconnect) with API Gateway's $context fields, the trace ids and, with
 * enable_data_trace, the body (private messages redacted); and the
 * request's span for the trace exporter. */
#ifndef WSGATE_APP_ACCESS_LOG_H
#define WSGATE_APP_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "app/router.h"
#include "config/config.h"
#include "net/conn.h"
#include "trace/trace.h"

/* One request ($connect, a message, $disconnect) as it is logged and
 * traced. */
typedef struct access_record {
    const char *event_type; /* CONNECT, MESSAGE, DISCONNECT */
    const char *route_key;
    int status;
    const char *error;
    const char *body; /* message body for the data trace, or NULL */
    size_t body_len;
    int64_t start_epoch_ms;
    uint64_t start_ns; /* Unix ns, for the span */
    double start_mono_ms;
    trace_ctx trace;
    bool traced;
} access_record;

/* Start r for a request of event_type (CONNECT, MESSAGE, DISCONNECT) now,
 * continuing the W3C trace context traceparent (tp_len bytes, may be NULL)
 * when enable_xray_tracing. The caller sets route_key, status, error and
 * body before access_finish. */
void access_start(const config *cfg, access_record *r, const char *event_type,
                  const char *traceparent, size_t tp_len);

/* Finish r on connection c: its access-log line (when INFO is logged) and
 * its span (when tracer is not NULL). Returns the latency in ms. */
double access_finish(const config *cfg, trace_exporter *tracer, conn *c, access_record *r);

/* The body the data trace logs for message m: NULL to log it as received,
 * else a malloc'd text the caller frees, with a private message's
 * "message" replaced by "<redacted>". */
char *access_redacted_body(const route_match *m);

#endif
