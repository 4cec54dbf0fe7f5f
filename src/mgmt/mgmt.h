/* The management API on the client listener: API Gateway's @connections
 * paths and status codes (so boto3's apigatewaymanagementapi client works
 * with only its endpoint changed), wsgate's extensions (@rooms broadcast,
 * connection and room listings), and the unauthenticated operational
 * endpoints (/healthz, /readyz, /metrics). */
#ifndef WSGATE_MGMT_MGMT_H
#define WSGATE_MGMT_MGMT_H

#include <stdbool.h>

#include "app/app.h"
#include "mgmt/credentials.h"

/* Answer the plain HTTP request on c when it is one of the management or
 * operational paths. Returns true when answered (the response is queued on
 * c), false to let the caller answer 404. */
bool mgmt_handle(app *a, conn *c, const http_request *req);

/* The largest body a management route takes: API Gateway's 128 KB
 * message limit (POST @connections, POST @rooms). */
#define MGMT_MAX_BODY (128 * 1024)

/* Route a plain HTTP request on its head, before its body is read (see
 * server_handlers.on_http_head): MGMT_MAX_BODY for a POST route whose
 * headers carry our credentials, 0 for the other known routes and for
 * requests without a body, -404/-405 for an unknown path or method with a
 * body, SERVER_HTTP_ANSWERED after a 403 for a POST route without valid
 * credentials. */
long mgmt_http_head(app *a, conn *c, const http_request *req);

/* c's request waited for another node's answer (server_http_defer) and c
 * ended first: forget it (server_handlers.on_http_abandoned). On c's
 * loop. */
void mgmt_http_abandoned(conn *c);

/* Format Unix time t (seconds) with milliseconds ms as ISO-8601 UTC
 * ("2026-11-25T21:05:00.123Z") into out (at least 32 bytes). */
void mgmt_iso8601(int64_t t, int ms, char *out, size_t len);

#endif
