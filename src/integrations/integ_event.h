/* The JSON that crosses an HTTP integration, with no I/O: the event API
 * Gateway gives a Lambda proxy integration of a WebSocket API (built from
 * plain fields), and the Lambda proxy result read back from the answer.
 * Also the REQUEST authorizer's event and its answer (IAM policy or the
 * simple form). See docs/integrations.md for every field. */
#ifndef WSGATE_INTEGRATIONS_INTEG_EVENT_H
#define WSGATE_INTEGRATIONS_INTEG_EVENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* One request header as received (name and value need no NUL). */
typedef struct integ_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} integ_header;

/* What an event says. Strings are borrowed for the call; NULL strings are
 * written as absent or null as AWS does. */
typedef struct integ_event {
    const char *route_key;  /* "$connect", "$disconnect", "$default", a custom route */
    const char *event_type; /* "CONNECT", "MESSAGE" or "DISCONNECT" */
    const char *connection_id;
    const char *request_id;
    const char *extended_request_id;
    const char *message_id; /* MESSAGE only */
    const char *domain_name;
    const char *stage;
    const char *api_id;
    int64_t connected_at_ms;
    int64_t request_time_ms;
    const char *source_ip;
    const char *user_agent;
    const json_t *authorizer;   /* an object (principalId and context), or NULL */
    int disconnect_status_code; /* DISCONNECT */
    const char *disconnect_reason;
    const uint8_t *body; /* MESSAGE; NULL: no body member */
    size_t body_len;
    bool binary;                 /* body is sent base64 with isBase64Encoded true */
    const integ_header *headers; /* CONNECT, DISCONNECT */
    size_t nheaders;
    const char *query; /* CONNECT: the raw query string (without '?'), or NULL */
    size_t query_len;
} integ_event;

/* Return the event as compact JSON text (malloc'd, caller frees), its
 * length in *len. Text that is not UTF-8 (a header, a query value) has its
 * bad bytes replaced by '?'. Never fails. */
char *integ_event_json(const integ_event *ev, size_t *len);

/* Write t (Unix ms) as API Gateway's requestTime, "02/Dec/2026:23:02:01
 * +0000", into out (at least 32 bytes). */
void integ_request_time(int64_t t_ms, char out[32]);

/* A Lambda proxy result. */
typedef struct integ_result {
    int status; /* statusCode, or the HTTP status of a plain answer */
    char *body; /* malloc'd (caller frees with integ_result_free), NULL: none */
    size_t body_len;
    bool binary;     /* the body was base64 (isBase64Encoded) and is decoded */
    json_t *headers; /* the result's headers object (a reference), or NULL */
} integ_result;

/* Read an integration's answer: HTTP status http_status and body data
 * (len bytes, need not be NUL-terminated). A 2xx answer must be a Lambda
 * proxy result (a JSON object with an integer statusCode 100..599, a
 * string or null body, an object of string headers, a boolean
 * isBase64Encoded), JSON null, or empty (both: status 200, no body). Any
 * other status is the plain HTTP form: out->status is that status, the
 * body ignored. Returns 0 with *out filled, or WSG_E_INTEG_RESULT
 * (garbage: the caller answers "Internal server error") with *out empty. */
int integ_result_parse(long http_status, const char *data, size_t len, integ_result *out);

/* Release what integ_result_parse put in r (not r). */
void integ_result_free(integ_result *r);

/* The REQUEST authorizer's event: type REQUEST, methodArn, headers,
 * multiValueHeaders, queryStringParameters, multiValueQueryStringParameters,
 * stageVariables {} and requestContext (as a CONNECT event's, without
 * authorizer). ev gives the request. Returns compact JSON (malloc'd, caller
 * frees), its length in *len. */
char *integ_authorizer_event_json(const integ_event *ev, const char *method_arn, size_t *len);

/* An authorizer's decision. */
typedef struct integ_auth_decision {
    bool allow;
    json_t *context; /* {"principalId": ..., context members...}: a new reference, or NULL */
} integ_auth_decision;

/* Read an authorizer's answer (a 2xx body, len bytes): the simple form
 * {"isAuthorized": bool, "context": {...}} or an IAM policy
 * {"principalId", "policyDocument": {"Statement": [{"Action":
 * "execute-api:Invoke", "Effect": "Allow"|"Deny", "Resource": ...}]},
 * "context"}. Allow needs an Allow statement and no Deny. Context values
 * must be strings, numbers or booleans (as AWS requires). Returns 0 with
 * *out filled (the caller releases out->context), or WSG_E_INTEG_AUTH_RESULT
 * when the answer is neither form (the caller refuses with 500). */
int integ_auth_parse(const char *data, size_t len, integ_auth_decision *out);

#endif
