/* HTTP integrations: routes whose logic is the user's, reached over HTTP
 * with API Gateway's Lambda proxy event (route_integrations), two-way
 * routes (route_responses), and the HTTP REQUEST authorizer (auth_mode =
 * "http"). Each worker runs its own client (integ_http) on its own loop;
 * everything here runs on the thread of the connection's worker, and a
 * completion finds its connection again by id (the connection may have
 * gone meanwhile). Nothing here takes the application's lock. */
#ifndef WSGATE_INTEGRATIONS_INTEG_H
#define WSGATE_INTEGRATIONS_INTEG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/auth.h"
#include "config/config.h"
#include "http/request.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "net/conn.h"

/* What the application gives the integrations. */
typedef struct integ_hooks {
    /* A deferred $connect ended: status 0 accepts (the application then
     * calls server_authorize_done itself after its own bookkeeping), else
     * the HTTP status to refuse with and a static message. principal is the
     * authorizer's principalId or NULL. Runs on c's loop. */
    void (*connect_done)(conn *c, int status, const char *message, const char *principal);
    /* The calling worker's counters. */
    metrics *(*metrics)(void);
} integ_hooks;

/* Read the integration settings of cfg (borrowed: must outlive the
 * integrations) and initialise libcurl. Call once, before the workers
 * start. Returns 0, or WSG_E_INTERNAL with *err (caller's) filled when
 * libcurl cannot start. */
int integ_init(const config *cfg, const integ_hooks *hooks, wsg_error *err);

/* Forget the settings (after every worker's integ_worker_close). */
void integ_free(void);

/* Return true when `route_key` ("$connect", "$default", "chat"...) has an
 * integration. */
bool integ_route_has(const char *route_key);

/* Return true when connections need an integration's answer before their
 * 101 (a $connect integration or auth_mode "http"). */
bool integ_connect_deferred(void);

/* An authorizer that accepts every request, for auth_mode = "http" (the
 * decision is the HTTP authorizer's, made by integ_connect_start). */
authorizer *integ_passthrough_authorizer(void);

/* What integ_connect_start returns when the answer comes later (not an
 * error: > 0). */
#define INTEG_PENDING 1

/* Start the deferred $connect of c (the HTTP authorizer, then the
 * $connect integration), with req its upgrade request (c->req, which stays
 * set until the upgrade ends). Returns INTEG_PENDING when the answer comes
 * later through hooks->connect_done (never from inside this call), 0 to
 * accept now (a cached Allow and no $connect integration), or a negative
 * code to refuse with now, whose status and text are the answer: a missing
 * identity source WSG_E_AUTH_DENIED (401), a cached Deny
 * WSG_E_AUTH_FORBIDDEN (403), the concurrency bound WSG_E_HTTP_TOO_MANY
 * (429). */
int integ_connect_start(conn *c, const http_request *req);

/* c's upgrade was accepted: it is open (on_open, before its first
 * message; req is its upgrade request, for the Host). */
void integ_conn_open(conn *c, const http_request *req);

/* c ends (opened or abandoned while its $connect was pending): post the
 * $disconnect event when c was open and $disconnect has an integration,
 * then forget c. peer_code is the client's close code (0: none). */
void integ_conn_closed(conn *c, uint16_t peer_code);

/* Send one message of c (data, len; binary frames go base64) to the
 * integration of route_key; the answer, or the error API Gateway gives,
 * reaches c later. Returns true when the message was taken (the route has
 * an integration), false to let the built-in routes have it. */
bool integ_message(conn *c, const char *route_key, const uint8_t *data, size_t len, bool binary);

/* Add c's authorizer fields (principalId) to an access-log line. */
void integ_log_fields(log_line *l, const conn *c);

/* On a worker's thread once its loop has stopped: cancel its requests and
 * free its client (the loop must run once more to close its handles). */
void integ_worker_close(void);

#endif
