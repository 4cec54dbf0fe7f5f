/* The browser pages (chat at /, dashboard at /dashboard) served from files
 * embedded in the binary at build time (scripts/embed-web.sh writes the
 * table below from web/), with a strict Content-Security-Policy. The pages
 * are public; the data the dashboard shows stays behind management auth. */
#ifndef WSGATE_WEB_WEB_H
#define WSGATE_WEB_WEB_H

#include <stdbool.h>
#include <stddef.h>

#include "http/request.h"
#include "net/conn.h"

/* One embedded file. */
typedef struct web_asset {
    const char *path; /* URL path, "/chat.js" */
    const char *content_type;
    const char *etag; /* quoted strong validator, from a CRC and the size */
    const unsigned char *data;
    size_t len;
} web_asset;

/* The embedded files (generated into $(BUILD)/gen/web_assets.c). */
extern const web_asset web_assets[];
extern const size_t web_assets_count;

/* Return the embedded file at URL path `path` (len bytes, not decoded), or
 * NULL. "/" is index.html and "/dashboard" is dashboard.html. */
const web_asset *web_find(const char *path, size_t len);

/* Answer the plain HTTP request on c when its path is a page, an asset or
 * /web-config.json ({"stage": stage}, so the chat page learns the
 * WebSocket path). GET and HEAD are served (with If-None-Match answered
 * 304); another method gets 405. Returns true when answered (the response is
 * queued on c), false when the path is not one of ours. */
bool web_handle(conn *c, const http_request *req, const char *stage);

#endif
