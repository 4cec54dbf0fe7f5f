/* A connection's write queue: a ring of shared frames, written once per
 * loop turn with one writev (uv_try_write, then uv_write for the rest), the
 * slow-consumer rule, and the TLS write path (the queue holds plaintext). */
#include "net/conn.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "http/handshake.h"
#include "log/log.h"
#include "net/conn_internal.h"
#include "net/server.h"

/* ---- write queue ---- */

/* Only c's thread writes wq_bytes; other workers read it (the management
 * API's queue check, gauges), so every write is a relaxed atomic store. */
/* Frames queued on c (0 with no ring). */
static inline uint32_t wq_len(const conn *c) { return c->wq ? c->wq->count : 0; }

/* Only while c has a ring (something is or was just queued). */
static inline void wq_bytes_set(conn *c, size_t v) {
    __atomic_store_n(&c->wq_bytes, v, __ATOMIC_RELAXED);
    /* The slow-consumer clock runs while the queue is above the limit and
     * restarts whenever it has drained to the limit. */
    if (v <= (size_t)c->srv->cfg->max_queued_bytes) c->wq->backlog_since_ms = 0;
    else if (!c->wq->backlog_since_ms) c->wq->backlog_since_ms = uv_now(c->srv->loop) | 1;
}

static void wq_push(conn *c, ws_frame *f) {
    conn_wq *q = c->wq;
    if (!q || q->count == q->cap) {
        uint32_t ncap = q ? q->cap * 2 : 8;
        conn_wq *n = xmalloc(sizeof(*n) + ncap * sizeof(n->frames[0]));
        n->head = 0;
        n->count = q ? q->count : 0;
        n->cap = ncap;
        n->head_off = q ? q->head_off : 0;
        n->backlog_since_ms = q ? q->backlog_since_ms : 0;
        for (uint32_t i = 0; i < n->count; i++)
            n->frames[i] = q->frames[(q->head + i) & (q->cap - 1)];
        free(q);
        c->wq = q = n;
    }
    q->frames[(q->head + q->count) & (q->cap - 1)] = f;
    q->count++;
    wq_bytes_set(c, c->wq_bytes + f->len);
}

static ws_frame *wq_at(const conn *c, uint32_t i) {
    return c->wq->frames[(c->wq->head + i) & (c->wq->cap - 1)];
}

static void wq_pop(conn *c) {
    conn_wq *q = c->wq;
    ws_frame *f = wq_at(c, 0);
    wq_bytes_set(c, c->wq_bytes - (f->len - q->head_off));
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->head_off = 0;
    ws_frame_unref(f);
}

/* Account for n bytes written from the head of the queue. */
static void wq_advance(conn *c, size_t n) {
    while (n > 0 && wq_len(c) > 0) {
        ws_frame *f = wq_at(c, 0);
        size_t left = f->len - c->wq->head_off;
        if (n >= left) {
            n -= left;
            wq_pop(c);
        } else {
            c->wq->head_off += (uint32_t)n;
            wq_bytes_set(c, c->wq_bytes - n);
            n = 0;
        }
    }
}

/* Drop every frame not yet handed to the kernel or to an in-flight write. */
static void wq_drop_unsent(conn *c) {
    if (!c->wq) return;
    uint32_t keep = c->writing ? c->writing : (c->wq->head_off ? 1 : 0);
    while (c->wq->count > keep) {
        uint32_t last = c->wq->count - 1;
        ws_frame *f = wq_at(c, last);
        wq_bytes_set(c, c->wq_bytes - f->len);
        c->wq->count--;
        ws_frame_unref(f);
    }
}

void conn_wq_clear(conn *c) {
    while (wq_len(c)) wq_pop(c);
    free(c->wq);
    c->wq = NULL;
}

bool conn_wq_release_idle(conn *c) {
    if (!c->wq || c->wq->count > 0 || c->writing) return false;
    free(c->wq);
    c->wq = NULL;
    return true;
}

static uint32_t wq_gather(conn *c, uv_buf_t *bufs, uint32_t max) {
    uint32_t n = wq_len(c) < max ? wq_len(c) : max;
    for (uint32_t i = 0; i < n; i++) {
        ws_frame *f = wq_at(c, i);
        uint32_t off = i == 0 ? c->wq->head_off : 0;
        bufs[i] = uv_buf_init((char *)f->data + off, f->len - off);
    }
    return n;
}

void conn_enqueue(conn *c, ws_frame *f) {
    /* The contract of this file: only c's own loop thread touches c. */
    assert(server_owns(c));
    wq_push(c, f);
    if (!c->dirty) server_mark_dirty(c->srv, c);
}

/* Offer the queue to the kernel now, without closing on error (callers may
 * be walking a list of connections); conn_flush handles errors later. */
static void wq_try_push(conn *c) {
    if (c->tls) return; /* plaintext must go through the TLS engine first */
    uv_buf_t bufs[CONN_IOV_MAX];
    while (wq_len(c) > 0 && !c->writing && c->state != CONN_CLOSED) {
        uint32_t n = wq_gather(c, bufs, CONN_IOV_MAX);
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r <= 0) return;
        size_t want = 0;
        for (uint32_t i = 0; i < n; i++) want += bufs[i].len;
        wq_advance(c, (size_t)r);
        if ((size_t)r < want) return;
    }
}

/* Log why c is cut as a slow consumer and close it with 1008. */
void conn_slow_consumer(conn *c, const char *why, size_t frame_len) {
    uint64_t now = uv_now(c->srv->loop);
    log_line l;
    log_begin(&l, LOG_INFO, "slow_consumer");
    log_str(&l, "connectionId", c->id);
    log_str(&l, "identity.sourceIp", c->source_ip);
    log_str(&l, "reason", why);
    log_int(&l, "queuedBytes", (int64_t)c->wq_bytes);
    uint64_t since = c->wq ? c->wq->backlog_since_ms : 0;
    log_int(&l, "frames", (int64_t)wq_len(c));
    log_int(&l, "stuckMs", since && now >= since ? (int64_t)(now - since) : 0);
    if (frame_len) log_int(&l, "frameBytes", (int64_t)frame_len);
    log_end(&l);
    wq_drop_unsent(c);
    conn_close(c, WS_CLOSE_POLICY, "slow consumer: send queue not drained");
}

/* True when a backlogged queue has outlived slow_consumer_timeout_ms. */
bool conn_backlog_expired(const conn *c, uint64_t now) {
    /* since is uv_now | 1, a millisecond past now when the clock read even:
     * unchecked, the subtraction wrapped and a backlog begun in this loop
     * turn was already 2^64 - 1 ms old (cut at once, not after the grace). */
    return c->wq && c->wq->backlog_since_ms && now >= c->wq->backlog_since_ms &&
           now - c->wq->backlog_since_ms >= (uint64_t)c->srv->cfg->slow_consumer_timeout_ms;
}

int conn_send(conn *c, ws_frame *f) {
    /* Other threads reach c through its worker's inbox, by id. */
    assert(server_owns(c));
    if (c->state != CONN_OPEN || c->close_sent) return WSG_E_NET_NOT_OPEN;
    /* With permessage-deflate, the frame's compressed form: made once per
     * broadcast and parameter set, whichever member needs it first. */
    f = c->deflate ? ws_frame_deflated(f, &c->deflate_params) : ws_frame_ref(f);
    size_t limit = (size_t)c->srv->cfg->max_queued_bytes;
    /* Frames queued in this loop turn (a batch of broadcasts) have not been
     * offered to the kernel yet: count only what the kernel will not take. */
    if (c->wq_bytes + f->len > limit) wq_try_push(c);
    /* Bug fix (issue 18): the limit used to be checked against the queue
     * plus the new frame, so one frame bigger than the limit cut even a
     * fast reader with an empty queue. What judges a consumer is what it
     * leaves queued: any frame is taken while the queue is within the
     * limit; beyond it, only until the deadline or the ceiling. */
    if (c->wq_bytes > limit) {
        const char *why = c->wq_bytes + f->len > limit * CONN_QUEUE_CEILING ? "queue ceiling"
                          : conn_backlog_expired(c, uv_now(c->srv->loop))   ? "not drained"
                                                                            : NULL;
        if (why) {
            conn_slow_consumer(c, why, f->len);
            ws_frame_unref(f);
            return WSG_E_NET_SLOW_CONSUMER;
        }
    }
    conn_enqueue(c, f);
    return 0;
}

int conn_send_data(conn *c, uint8_t opcode, const void *payload, size_t len) {
    ws_frame *f = ws_frame_new(opcode, payload, len);
    int r = conn_send(c, f);
    ws_frame_unref(f);
    return r;
}

/* libuv's write and shutdown requests (272 bytes together) are allocated
 * only while one is in flight, not kept in every idle connection: most
 * writes complete in uv_try_write and need none. */
static void *request_new(size_t size, conn *c) {
    uv_req_t *r = xmalloc(size);
    r->data = c;
    return r;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    conn *c = req->data;
    free(req);
    conn_abort(c);
}

static void start_shutdown(conn *c) {
    if (c->state == CONN_CLOSED) return;
    uv_shutdown_t *req = request_new(sizeof(*req), c);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_abort(c);
        return;
    }
    /* Stop reading: nothing more from the peer matters now. */
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->close_after_flush = false;
    c->state = CONN_CLOSING;
    c->close_deadline_ms = uv_now(c->srv->loop) + CONN_CLOSE_WAIT_MS;
}

static void on_write(uv_write_t *req, int status) {
    conn *c = req->data;
    free(req);
    uint32_t n = c->writing;
    c->writing = 0;
    if (status < 0) {
        /* Cancelled by close or failed: the frames are released with the
         * queue when the connection is freed. */
        conn_abort(c);
        return;
    }
    for (uint32_t i = 0; i < n; i++) wq_pop(c);
    if (c->state == CONN_CLOSED) return;
    if (wq_len(c) > 0) {
        if (!c->dirty) server_mark_dirty(c->srv, c);
    } else if (c->close_after_flush) {
        start_shutdown(c);
    }
}

/* ---- TLS write path: the queue holds plaintext frames (still shared by
 * reference); they are encrypted into the engine and the ciphertext is
 * written from a buffer of its own. ---- */

static void tls_flush(conn *c);

static void on_tls_write(uv_write_t *req, int status) {
    conn *c = req->data;
    free(req);
    ws_frame **inflight = tls_conn_inflight(c->tls);
    ws_frame_unref(*inflight);
    *inflight = NULL;
    c->writing = 0;
    if (status < 0) {
        conn_abort(c);
        return;
    }
    if (c->state != CONN_CLOSED) tls_flush(c);
}

static void tls_flush(conn *c) {
    if (c->state == CONN_CLOSED || c->writing) return;
    while (wq_len(c) > 0) {
        ws_frame *f = wq_at(c, 0);
        int n = tls_conn_write(c->tls, f->data + c->wq->head_off, f->len - c->wq->head_off);
        if (n < 0) {
            conn_abort(c);
            return;
        }
        if (n == 0) break; /* handshake still running */
        wq_advance(c, (size_t)n);
    }
    if (wq_len(c) == 0 && c->close_after_flush && !c->tls_shutdown_sent) {
        tls_conn_shutdown(c->tls);
        c->tls_shutdown_sent = true;
    }
    size_t pending = tls_conn_pending_output(c->tls);
    if (pending > 0) {
        ws_frame *out = ws_frame_raw(NULL, pending);
        out->len = (uint32_t)tls_conn_take_output(c->tls, out->data, pending);
        uv_buf_t b = uv_buf_init((char *)out->data, out->len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
            ws_frame_unref(out);
            conn_abort(c);
            return;
        }
        size_t done = r > 0 ? (size_t)r : 0;
        if (done < out->len) {
            b = uv_buf_init((char *)out->data + done, out->len - (uint32_t)done);
            *tls_conn_inflight(c->tls) = out;
            uv_write_t *req = request_new(sizeof(*req), c);
            if (uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, on_tls_write) != 0) {
                free(req);
                conn_abort(c);
                return;
            }
            c->writing = 1;
            return;
        }
        ws_frame_unref(out);
    }
    if (wq_len(c) == 0 && c->close_after_flush) start_shutdown(c);
}

void conn_flush(conn *c) {
    assert(server_owns(c));
    if (c->state == CONN_CLOSED || c->writing) return;
    if (c->tls) {
        tls_flush(c);
        return;
    }
    uv_buf_t bufs[CONN_IOV_MAX];
    while (wq_len(c) > 0) {
        uint32_t n = wq_gather(c, bufs, CONN_IOV_MAX);
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r == UV_EAGAIN || r == UV_ENOSYS) break;
        if (r < 0) {
            conn_abort(c);
            return;
        }
        size_t want = 0;
        for (uint32_t i = 0; i < n; i++) want += bufs[i].len;
        wq_advance(c, (size_t)r);
        if ((size_t)r < want) break; /* the kernel buffer is full */
    }
    if (wq_len(c) > 0) {
        /* Hand the rest to libuv: it writes when the socket is writable. */
        uint32_t n = wq_gather(c, bufs, CONN_IOV_MAX);
        uv_write_t *req = request_new(sizeof(*req), c);
        if (uv_write(req, (uv_stream_t *)&c->tcp, bufs, n, on_write) != 0) {
            free(req);
            conn_abort(c);
            return;
        }
        c->writing = n;
        return;
    }
    if (c->close_after_flush) start_shutdown(c);
}
