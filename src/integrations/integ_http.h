/* An HTTP client for integrations on one worker's libuv loop: libcurl's
 * multi interface driven by the loop (its sockets are uv_poll handles and
 * its timeout one uv_timer), so a request costs no thread and never stalls
 * the loop. Connections are kept alive and reused across requests. One
 * client per loop, used only from that loop's thread. */
#ifndef WSGATE_INTEGRATIONS_INTEG_HTTP_H
#define WSGATE_INTEGRATIONS_INTEG_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/error.h"

typedef struct integ_http integ_http;

typedef enum integ_http_error {
    INTEG_HTTP_OK = 0,    /* an answer arrived (any status) */
    INTEG_HTTP_TIMEOUT,   /* no whole answer before the request's timeout */
    INTEG_HTTP_FAILED,    /* connection refused, reset, bad URL, TLS... */
    INTEG_HTTP_TOO_LARGE, /* the answer's body passed the size limit */
} integ_http_error;

typedef struct integ_http_response {
    integ_http_error error;
    const char *error_text; /* libcurl's words for the failure, static or owned by the client */
    long status;            /* HTTP status when error is INTEG_HTTP_OK */
    const char *body;       /* valid during the callback */
    size_t len;
    double seconds; /* from the post to the answer */
} integ_http_response;

/* Called once per request on the loop's thread: with the response, or with
 * NULL when the client is closed before it answered (free ctx then). */
typedef void (*integ_http_done)(void *ctx, const integ_http_response *r);

/* Return a new client on loop whose answers may hold at most
 * max_response_bytes of body. Call curl_global_init first (integ_init). */
integ_http *integ_http_new(uv_loop_t *loop, size_t max_response_bytes);

/* POST body (len bytes, copied) as application/json to url, allowing
 * timeout_ms for the whole exchange; done(ctx, response) runs later on the
 * loop, never from inside this call. Returns 0, or WSG_E_INTEG_HTTP when
 * libcurl refuses the request (done is then not called). */
int integ_http_post(integ_http *h, const char *url, const char *body, size_t len, long timeout_ms,
                    integ_http_done done, void *ctx);

/* Requests in flight. */
size_t integ_http_in_flight(const integ_http *h);

/* Cancel every request (each done gets NULL), close the loop handles and
 * free h once libuv has closed them (the loop must run again). */
void integ_http_close(integ_http *h);

#endif
