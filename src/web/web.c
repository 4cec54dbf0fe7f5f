#include "web/web.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/fields.h"

/* Every page and asset gets these. No inline script or style is allowed:
 * all JS and CSS are files from this origin. The chat page's WebSocket
 * goes to this host (ws: or wss:, which 'self' alone does not cover in
 * every browser). */
#define WEB_SECURITY_HEADERS                                                                       \
    "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "      \
    "form-action 'self'; frame-ancestors 'none'\r\n"                                               \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "Referrer-Policy: no-referrer\r\n"                                                             \
    "X-Frame-Options: DENY\r\n"

static bool path_is(const char *path, size_t len, const char *want) {
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

const web_asset *web_find(const char *path, size_t len) {
    if (path_is(path, len, "/")) return web_find("/index.html", 11);
    if (path_is(path, len, "/dashboard")) return web_find("/dashboard.html", 15);
    for (size_t i = 0; i < web_assets_count; i++)
        if (path_is(path, len, web_assets[i].path)) return &web_assets[i];
    return NULL;
}

/* True when If-None-Match lists etag (or is "*"). */
static bool etag_matches(const http_request *req, const char *etag) {
    size_t len;
    const char *inm = http_request_header(req, "If-None-Match", &len);
    if (!inm) return false;
    size_t el = strlen(etag);
    const char *p = inm, *end = inm + len, *s;
    size_t n;
    while (fields_next_list(&p, end, &s, &n)) {
        if (n >= 2 && s[0] == 'W' && s[1] == '/') { /* weak comparison */
            s += 2;
            n -= 2;
        }
        if ((n == 1 && *s == '*') || (n == el && memcmp(s, etag, el) == 0)) return true;
    }
    return false;
}

/* Queue the response; for HEAD and 304 only its head (the Content-Length
 * still tells the full body's size, as a GET would). */
static void web_send(conn *c, const http_request *req, int status, const char *extra,
                     const char *ctype, const char *body, size_t body_len, bool head_only) {
    bool keep = http_should_keep_alive(&req->parser) != 0;
    size_t len;
    char *resp = http_response_format(status, extra, ctype, body, body_len, !keep, &len);
    if (head_only && body) len -= body_len;
    conn_http_respond(c, resp, len, keep);
    free(resp);
}

bool web_handle(conn *c, const http_request *req, const char *stage) {
    size_t plen;
    const char *path = http_request_path(req, &plen);
    bool is_config = path_is(path, plen, "/web-config.json");
    const web_asset *a = is_config ? NULL : web_find(path, plen);
    if (!is_config && !a) return false;

    const char *method = http_request_method(req);
    bool head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        static const char msg[] = "{\"message\":\"Method not allowed\"}";
        web_send(c, req, 405, "Allow: GET, HEAD\r\n" WEB_SECURITY_HEADERS, "application/json", msg,
                 sizeof msg - 1, false);
        return true;
    }

    if (is_config) {
        json_t *j = json_pack("{s:s}", "stage", stage);
        char *txt = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        web_send(c, req, 200, WEB_SECURITY_HEADERS "Cache-Control: no-store\r\n",
                 "application/json", txt, strlen(txt), head);
        free(txt);
        return true;
    }

    /* Pages and assets are not fingerprinted: the browser may keep them
     * but must revalidate (cheap: the ETag is computed at build time). */
    char extra[768];
    snprintf(extra, sizeof extra, "%sCache-Control: no-cache\r\nETag: %s\r\n", WEB_SECURITY_HEADERS,
             a->etag);
    bool fresh = etag_matches(req, a->etag);
    web_send(c, req, fresh ? 304 : 200, extra, a->content_type, (const char *)a->data, a->len,
             head || fresh);
    return true;
}
