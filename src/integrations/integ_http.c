#include "integrations/integ_http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/bytebuf.h"
#include "common/clock.h"

/* Idle connections libcurl keeps for reuse on one loop. */
#define INTEG_HTTP_MAX_IDLE 64
/* Easy handles kept for the next requests (an easy handle is several
 * allocations; reset, it is ready again). */
#define INTEG_HTTP_POOL 64

typedef struct http_req {
    integ_http *h;
    CURL *easy;
    char *body;
    bytebuf resp;
    bool too_large;
    uint64_t start_ns;
    integ_http_done done;
    void *ctx;
    struct http_req *prev, *next;
} http_req;

typedef struct http_sock {
    uv_poll_t poll; /* first: the handle is the socket's address */
    integ_http *h;
    curl_socket_t fd;
    struct http_sock *prev, *next;
} http_sock;

struct integ_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    size_t max_response;
    http_req *reqs;             /* in flight */
    http_sock *socks;           /* polled for libcurl */
    struct curl_slist *headers; /* the same for every request */
    CURL *pool[INTEG_HTTP_POOL];
    size_t npool;
    size_t nreqs;
    size_t handles_open; /* timer + polls not yet closed: h is freed at 0 */
    bool closing;
    char error_text[CURL_ERROR_SIZE];
};

static void handle_released(integ_http *h) {
    if (--h->handles_open == 0 && h->closing) free(h);
}

static void timer_closed(uv_handle_t *hd) { handle_released(hd->data); }

static void poll_closed(uv_handle_t *hd) {
    http_sock *s = (http_sock *)hd;
    integ_http *h = s->h;
    free(s);
    handle_released(h);
}

static void sock_close(http_sock *s) {
    integ_http *h = s->h;
    if (s->prev) s->prev->next = s->next;
    else h->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, poll_closed);
}

static void req_free(http_req *r) {
    integ_http *h = r->h;
    if (h->npool < INTEG_HTTP_POOL && !h->closing) {
        curl_easy_reset(r->easy);
        h->pool[h->npool++] = r->easy;
    } else {
        curl_easy_cleanup(r->easy);
    }
    free(r->body);
    free(r->resp.d);
    free(r);
}

static void req_unlink(integ_http *h, http_req *r) {
    if (r->prev) r->prev->next = r->next;
    else h->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    h->nreqs--;
}

/* Finish every transfer libcurl says is done. */
static void check_done(integ_http *h) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        http_req *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode rc = m->data.result;
        curl_multi_remove_handle(h->multi, r->easy);
        req_unlink(h, r);
        integ_http_response resp = {.error = INTEG_HTTP_OK};
        resp.seconds = (double)(clock_mono_ns() - r->start_ns) / 1e9;
        if (r->too_large) {
            resp.error = INTEG_HTTP_TOO_LARGE;
            resp.error_text = "response body too large";
        } else if (rc == CURLE_OPERATION_TIMEDOUT) {
            resp.error = INTEG_HTTP_TIMEOUT;
            resp.error_text = "timed out";
        } else if (rc != CURLE_OK) {
            resp.error = INTEG_HTTP_FAILED;
            resp.error_text = curl_easy_strerror(rc);
        } else {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
            resp.body = r->resp.d ? r->resp.d : "";
            resp.len = r->resp.n;
        }
        r->done(r->ctx, &resp);
        req_free(r);
    }
}

static void on_poll(uv_poll_t *p, int status, int events) {
    http_sock *s = p->data;
    integ_http *h = s->h;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    check_done(h);
}

static void on_timer(uv_timer_t *t) {
    integ_http *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    integ_http *h = userp;
    http_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(h->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof(*s));
        s->h = h;
        s->fd = fd;
        if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        uv_unref((uv_handle_t *)&s->poll);
        h->handles_open++;
        s->next = h->socks;
        if (h->socks) h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    integ_http *h = userp;
    if (timeout_ms < 0) uv_timer_stop(&h->timer);
    else uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp) {
    http_req *r = userp;
    size_t len = size * n;
    if (r->resp.n + len > r->h->max_response) {
        r->too_large = true;
        return 0; /* libcurl ends the transfer with CURLE_WRITE_ERROR */
    }
    bytebuf_put(&r->resp, data, len);
    return len;
}

integ_http *integ_http_new(uv_loop_t *loop, size_t max_response_bytes) {
    integ_http *h = xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->max_response = max_response_bytes;
    h->multi = curl_multi_init();
    if (!h->multi) abort(); /* only on allocation failure */
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)INTEG_HTTP_MAX_IDLE);
    h->headers = curl_slist_append(NULL, "Content-Type: application/json");
    /* No "Expect: 100-continue" round trip before a large event. */
    h->headers = curl_slist_append(h->headers, "Expect:");
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    /* Integrations never keep a stopping loop alive: the server's own
     * handles decide when it ends, and integ_http_close cleans up. */
    uv_unref((uv_handle_t *)&h->timer);
    h->handles_open = 1;
    return h;
}

int integ_http_post(integ_http *h, const char *url, const char *body, size_t len, long timeout_ms,
                    integ_http_done done, void *ctx) {
    http_req *r = xcalloc(1, sizeof(*r));
    r->h = h;
    r->done = done;
    r->ctx = ctx;
    r->easy = h->npool ? h->pool[--h->npool] : curl_easy_init();
    if (!r->easy) abort();
    r->body = xmalloc(len + 1);
    memcpy(r->body, body, len);
    r->body[len] = '\0';
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    r->start_ns = clock_mono_ns();
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) {
        req_free(r);
        return WSG_E_INTEG_HTTP;
    }
    r->next = h->reqs;
    if (h->reqs) h->reqs->prev = r;
    h->reqs = r;
    h->nreqs++;
    return 0;
}

size_t integ_http_in_flight(const integ_http *h) { return h->nreqs; }

void integ_http_close(integ_http *h) {
    h->closing = true; /* req_free no longer pools */
    while (h->reqs) {
        http_req *r = h->reqs;
        curl_multi_remove_handle(h->multi, r->easy);
        req_unlink(h, r);
        r->done(r->ctx, NULL);
        req_free(r);
    }
    /* Closes the kept-alive connections: their sockets leave through
     * socket_cb with CURL_POLL_REMOVE. */
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    while (h->npool) curl_easy_cleanup(h->pool[--h->npool]);
    curl_slist_free_all(h->headers);
    h->headers = NULL;
    while (h->socks) sock_close(h->socks);
    uv_close((uv_handle_t *)&h->timer, timer_closed);
}
