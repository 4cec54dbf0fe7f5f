/* The fields every access line starts with: API Gateway's $context
 * variables, in the one order the access log documents (docs/operations.md,
 * "Access log"). The built-in routes' lines (app/access_log.c) and the
 * integration calls' lines (integrations/integ.c) both write them here. */
#ifndef WSGATE_LOG_ACCESS_LINE_H
#define WSGATE_LOG_ACCESS_LINE_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "log/log.h"

/* Bytes of a message body an access line shows when enable_data_trace. */
#define ACCESS_LINE_TRACE_MAX 1024

/* One request's $context values; the strings are borrowed. */
typedef struct access_line {
    const char *request_id;
    const char *connection_id;
    const char *event_type;
    const char *route_key;
    int status;
    int64_t request_time_epoch; /* ms */
    double latency_ms;
    const char *source_ip;
    const char *user_agent;
    bool user_agent_optional; /* leave identity.userAgent out when NULL (else null) */
    int worker;
} access_line;

/* Append a's fields, from requestId to worker, to l (stage from cfg). */
void access_line_context(log_line *l, const config *cfg, const access_line *a);

/* Append cfg's additional_tags to l, each as its own field. */
void access_line_tags(log_line *l, const config *cfg);

#endif
