/* The Redis client (redis_client.h). Each connection is a slot that cycles
 * IDLE -> CONNECTING -> HANDSHAKE (AUTH, SELECT) -> READY and back to IDLE
 * when hiredis reports it gone; a slot's one timer is its connect timeout,
 * its backoff, or a deferred drop. hiredis is attached to the loop by the
 * small adapter below (hiredis's own adapters/libuv.h leaks its poll state
 * when uv_poll_init fails and ignores poll errors; ours also counts writes,
 * which is how the tests see pipelining). */
#include "engine/redis_client.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "common/hash.h"
#include "common/clock.h"
#include "common/random.h"
#include "common/strbuf.h"
#include "common/strmap.h"
#include "log/log.h"

const char REDIS_CLIENT_E_DOWN[] = "redis: not connected";
const char REDIS_CLIENT_E_LOST[] = "redis: connection lost before the reply";
const char REDIS_CLIENT_E_TIMEOUT[] = "redis: no reply in time";
const char REDIS_CLIENT_E_CLOSED[] = "redis: client closed";

const double redis_client_rtt_bounds_ms[REDIS_CLIENT_RTT_BUCKETS] = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000};

#define SUBSCRIBE_BATCH 128 /* channels per SUBSCRIBE after a reconnect */

typedef enum slot_state {
    SLOT_IDLE,
    SLOT_RESOLVING,
    SLOT_CONNECTING,
    SLOT_HANDSHAKE,
    SLOT_READY
} slot_state;

typedef struct rc_slot rc_slot;

/* A host name lookup on libuv's thread pool (hiredis would call a blocking
 * getaddrinfo on the loop). It holds the client alive until its callback,
 * which may come after the slot gave up on it. */
typedef struct rc_resolve {
    uv_getaddrinfo_t req;
    rc_slot *slot;
} rc_resolve;

/* One command in flight (in its slot's FIFO) or failed fast (in the
 * client's failed list). Replies come in order, so the FIFO's head is the
 * oldest unanswered command. */
typedef struct rc_req {
    struct rc_req *prev, *next;
    redis_client *c;
    rc_slot *slot; /* NULL on the failed list */
    redis_client_reply_cb cb;
    void *data;
    uint64_t t_sent;
    const char *fail;
} rc_req;

struct rc_slot {
    redis_client *c;
    bool pubsub;
    redisAsyncContext *ac; /* NULL when the slot has no context */
    rc_resolve *resolving; /* the lookup in progress, or NULL */
    slot_state state;
    bool ever_ready;
    bool drop;               /* the timer drops the context (a handshake failed) */
    bool outage_logged;      /* redis_down was logged since the slot was last ready */
    unsigned attempts;       /* failed attempts since it was last ready */
    unsigned handshake_left; /* AUTH/SELECT replies still awaited */
    char tls_why[200];       /* why the TLS bridge failed, for the next redis_down */
    uv_timer_t timer;
    rc_req inflight; /* sentinel of the FIFO */
};

typedef enum chan_state {
    CHAN_NONE,
    CHAN_SUBSCRIBING,
    CHAN_SUBSCRIBED,
    CHAN_UNSUBSCRIBING
} chan_state;

/* A channel's wish and what Redis was last told. At most one SUBSCRIBE or
 * UNSUBSCRIBE is in flight per channel: hiredis 0.14 keys its pub/sub
 * callbacks by channel and drops the entry when an UNSUBSCRIBE reply
 * arrives, so an UNSUBSCRIBE still in flight when the channel is wanted
 * again would silently swallow the new subscription's messages. */
typedef struct rc_chan {
    bool wanted;
    chan_state state;
} rc_chan;

/* Our libuv adapter's state: one per hiredis context. */
typedef struct rc_poll {
    uv_poll_t h;
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    redis_client *c;
    redis_tls *tls; /* the context's TLS bridge (rediss://), or NULL */
    int events;
} rc_poll;

struct redis_client {
    uv_loop_t *loop;
    redis_client_options opt;
    char name[REDIS_URL_MAX_HOST + 32];
    rc_slot *slots; /* pool_size command slots, then the pub/sub slot */
    unsigned pool;
    unsigned rr;
    uv_timer_t tick; /* command timeouts; the close step once closing */
    uv_idle_t idle;  /* delivers the failed list */
    rc_req failed;   /* sentinel */
    strmap channels; /* channel -> rc_chan */
    const char *kill_reason;
    bool up, closing;
    redis_tls_ctx *tls; /* rediss://: the shared TLS settings, or NULL */
    wsg_error tls_err;  /* ... or why they could not be built */
    unsigned handles;   /* open libuv handles; the client is freed at 0 once closing */
    redis_client_stats st;
};

static void slot_connect(rc_slot *s);
static void slot_schedule(rc_slot *s, uint64_t delay_ms);
static void send_subscribe(redis_client *c, const char **channels, size_t n, bool sub);

/* ---- lists ---- */

static void list_init(rc_req *h) { h->prev = h->next = h; }
static bool list_empty(const rc_req *h) { return h->next == h; }
static void list_push(rc_req *h, rc_req *q) {
    q->prev = h->prev;
    q->next = h;
    h->prev->next = q;
    h->prev = q;
}
static void list_remove(rc_req *q) {
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->prev = q->next = q;
}

/* ---- handles ---- */

static void client_free(redis_client *c) {
    /* Commands sent after the close step (a misuse, but cheap to answer). */
    while (!list_empty(&c->failed)) {
        rc_req *q = c->failed.next;
        list_remove(q);
        q->cb(c, NULL, REDIS_CLIENT_E_CLOSED, q->data);
        free(q);
    }
    size_t it = 0;
    const char *k;
    void *v;
    while (strmap_next(&c->channels, &it, &k, &v)) free(v);
    strmap_free(&c->channels);
    redis_tls_ctx_free(c->tls);
    free(c->slots);
    free(c);
}

static void handle_closed(uv_handle_t *h) {
    redis_client *c = h->data;
    if (--c->handles == 0) client_free(c);
}

/* ---- the libuv adapter ---- */

static void poll_cb(uv_poll_t *h, int status, int events) {
    rc_poll *p = h->data;
    /* A poll error (the socket is gone) is handed to hiredis as a read, so
     * that its read fails and it disconnects. */
    if (status < 0) events = UV_READABLE;
    if (p->ac && (events & UV_READABLE)) redisAsyncHandleRead(p->ac);
    if (p->ac && (events & UV_WRITABLE)) {
        p->c->st.writes++;
        redisAsyncHandleWrite(p->ac);
    }
}

static void poll_update(rc_poll *p) {
    if (p->events) uv_poll_start(&p->h, p->events, poll_cb);
    else uv_poll_stop(&p->h);
}
static void ev_add_read(void *d) {
    rc_poll *p = d;
    p->events |= UV_READABLE;
    poll_update(p);
}
static void ev_del_read(void *d) {
    rc_poll *p = d;
    p->events &= ~UV_READABLE;
    poll_update(p);
}
static void ev_add_write(void *d) {
    rc_poll *p = d;
    p->events |= UV_WRITABLE;
    poll_update(p);
}
static void ev_del_write(void *d) {
    rc_poll *p = d;
    p->events &= ~UV_WRITABLE;
    poll_update(p);
}

static void poll_closed(uv_handle_t *h) {
    rc_poll *p = h->data;
    redis_client *c = p->c;
    free(p);
    if (--c->handles == 0) client_free(c);
}

/* hiredis is freeing the context: it calls no callback of ours after this. */
static void ev_cleanup(void *d) {
    rc_poll *p = d;
    p->ac = NULL;
    if (p->tls) redis_tls_close(p->tls);
    uv_close((uv_handle_t *)&p->h, poll_closed);
}

static int attach(redis_client *c, redisAsyncContext *ac, redis_tls *tls) {
    rc_poll *p = xcalloc(1, sizeof *p);
    if (uv_poll_init(c->loop, &p->h, ac->c.fd) != 0) {
        free(p);
        return -1;
    }
    p->h.data = p;
    p->ac = ac;
    p->c = c;
    p->tls = tls;
    c->handles++;
    ac->ev.data = p;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- state ---- */

static const char *slot_kind(const rc_slot *s) { return s->pubsub ? "pubsub" : "command"; }

static void update_up(redis_client *c) {
    bool cmd = false;
    for (unsigned i = 0; i < c->pool; i++) cmd = cmd || c->slots[i].state == SLOT_READY;
    bool up = !c->closing && cmd && c->slots[c->pool].state == SLOT_READY;
    if (up == c->up) return;
    c->up = up;
    if (c->opt.on_state) c->opt.on_state(c, up, c->opt.data);
}

/* Exponential backoff with jitter: the n-th failed attempt waits between
 * half and all of min(max, min * 2^n), so that nodes restarted together
 * do not reconnect in step. */
static uint64_t backoff_ms(const redis_client *c, unsigned attempts) {
    uint64_t d = c->opt.backoff_min_ms;
    for (unsigned i = 0; i < attempts && d < c->opt.backoff_max_ms; i++) d *= 2;
    if (d > c->opt.backoff_max_ms) d = c->opt.backoff_max_ms;
    uint32_t r;
    random_bytes(&r, sizeof r);
    return d / 2 + (d / 2 ? r % (d / 2 + 1) : 0);
}

static void log_down(rc_slot *s, const char *why, uint64_t retry_ms) {
    log_line l;
    log_begin(&l, LOG_ERROR, "redis_down");
    log_str(&l, "server", s->c->name);
    log_str(&l, "connection", slot_kind(s));
    log_str(&l, "msg", why);
    log_int(&l, "retry_ms", (int64_t)retry_ms);
    log_end(&l);
}

/* The slot's context is gone (hiredis reported it, or we freed it): plan
 * the next attempt. The first failure of an outage is logged; the
 * failures that follow are only counted. */
static void slot_lost(rc_slot *s, const char *why) {
    redis_client *c = s->c;
    bool was_ready = s->state == SLOT_READY;
    if (s->tls_why[0]) why = s->tls_why; /* hiredis only saw the bridge close */
    s->ac = NULL;
    s->state = SLOT_IDLE;
    s->drop = false;
    if (s->pubsub) {
        /* What Redis knew died with the connection: keep what is wanted,
         * forget the rest. */
        size_t it = 0, ngone = 0;
        const char *k;
        void *v;
        char **gone = xcalloc(c->channels.count + 1, sizeof *gone);
        while (strmap_next(&c->channels, &it, &k, &v)) {
            rc_chan *ch = v;
            ch->state = CHAN_NONE;
            if (!ch->wanted) gone[ngone++] = xstrdup(k);
        }
        for (size_t i = 0; i < ngone; i++) {
            free(strmap_remove(&c->channels, gone[i]));
            free(gone[i]);
        }
        free(gone);
    }
    update_up(c);
    if (c->closing) return;
    if (!was_ready) {
        c->st.connect_failures++;
        s->attempts++;
    }
    uint64_t delay = backoff_ms(c, was_ready ? 0 : s->attempts);
    if (!s->outage_logged) log_down(s, why, delay);
    s->outage_logged = true;
    s->tls_why[0] = '\0';
    slot_schedule(s, delay);
}

/* Free the slot's context now (outside any of its callbacks): its
 * unanswered commands get c->kill_reason. */
static void slot_kill(rc_slot *s, const char *why) {
    redisAsyncContext *ac = s->ac;
    if (!ac) return;
    redisAsyncFree(ac);
    /* hiredis calls the disconnect callback only for a context that had
     * connected; otherwise the slot is ours to reset. */
    if (s->ac == ac) slot_lost(s, why);
}

static void slot_timer_cb(uv_timer_t *t) {
    rc_slot *s = t->data;
    redis_client *c = s->c;
    if (c->closing) return;
    if (s->drop) {
        c->kill_reason = REDIS_CLIENT_E_LOST;
        slot_kill(s, "handshake refused");
    } else if (s->state == SLOT_RESOLVING) {
        uv_cancel((uv_req_t *)&s->resolving->req);
        s->resolving = NULL; /* its callback only frees it now */
        slot_lost(s, "host name lookup timed out");
    } else if (s->state == SLOT_CONNECTING || s->state == SLOT_HANDSHAKE) {
        c->kill_reason = REDIS_CLIENT_E_LOST;
        slot_kill(s, "connect timed out");
    } else if (s->state == SLOT_IDLE) {
        slot_connect(s);
    }
}

static void slot_schedule(rc_slot *s, uint64_t delay_ms) {
    uv_timer_start(&s->timer, slot_timer_cb, delay_ms, 0);
}

static void slot_ready(rc_slot *s) {
    redis_client *c = s->c;
    uv_timer_stop(&s->timer);
    s->state = SLOT_READY;
    s->attempts = 0;
    s->outage_logged = false;
    c->st.connects++;
    if (s->ever_ready) c->st.reconnects++;
    s->ever_ready = true;
    log_line l;
    log_begin(&l, LOG_INFO, "redis_up");
    log_str(&l, "server", c->name);
    log_str(&l, "connection", slot_kind(s));
    log_end(&l);
    if (s->pubsub) {
        const char *batch[SUBSCRIBE_BATCH];
        size_t n = 0, it = 0;
        const char *k;
        void *v;
        while (strmap_next(&c->channels, &it, &k, &v)) {
            rc_chan *ch = v;
            if (!ch->wanted) continue;
            ch->state = CHAN_SUBSCRIBING;
            batch[n++] = k;
            if (n == SUBSCRIBE_BATCH) {
                send_subscribe(c, batch, n, true);
                n = 0;
            }
        }
        if (n) send_subscribe(c, batch, n, true);
    }
    update_up(c);
}

static void handshake_cb(redisAsyncContext *ac, void *r, void *priv) {
    rc_slot *s = priv;
    redisReply *reply = r;
    if (!reply || s->ac != ac || s->state != SLOT_HANDSHAKE || s->drop) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* A refused AUTH makes the commands after it fail too (NOAUTH):
         * the first error is the one to report, once per outage. */
        if (!s->outage_logged) {
            log_line l;
            log_begin(&l, LOG_ERROR, "redis_down");
            log_str(&l, "server", s->c->name);
            log_str(&l, "connection", slot_kind(s));
            log_strn(&l, "msg", reply->str, reply->len, 200);
            log_end(&l);
            s->outage_logged = true;
        }
        /* Not from inside the context's own callback: on the next turn. */
        s->drop = true;
        slot_schedule(s, 0);
        return;
    }
    if (--s->handshake_left == 0) slot_ready(s);
}

static void on_connect(const redisAsyncContext *cac, int status) {
    rc_slot *s = cac->data;
    redisAsyncContext *ac = s->ac;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        slot_lost(s, cac->errstr[0] ? cac->errstr : "connect failed");
        return;
    }
    redis_client *c = s->c;
    s->state = SLOT_HANDSHAKE;
    s->handshake_left = 0;
    const redis_url *u = &c->opt.url;
    if (u->has_password) {
        const char *argv[3] = {"AUTH", u->user, u->password};
        int argc = 3;
        if (!u->user[0]) {
            argv[1] = u->password;
            argc = 2;
        }
        redisAsyncCommandArgv(ac, handshake_cb, s, argc, argv, NULL);
        s->handshake_left++;
    }
    if (u->db != 0) {
        char db[8];
        snprintf(db, sizeof db, "%d", u->db);
        const char *argv[2] = {"SELECT", db};
        redisAsyncCommandArgv(ac, handshake_cb, s, 2, argv, NULL);
        s->handshake_left++;
    }
    for (size_t i = 0; !s->pubsub && c->opt.preload_scripts && c->opt.preload_scripts[i]; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", c->opt.preload_scripts[i]};
        redisAsyncCommandArgv(ac, handshake_cb, s, 3, argv, NULL);
        s->handshake_left++;
    }
    /* Last, so that ready means the server answers commands (a paused or
     * loading server accepts connections long before). */
    const char *ping[1] = {"PING"};
    redisAsyncCommandArgv(ac, handshake_cb, s, 1, ping, NULL);
    s->handshake_left++;
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
    rc_slot *s = cac->data;
    slot_lost(s, status == REDIS_OK ? "disconnected" : cac->errstr);
}

/* ---- rediss:// (redis_tls.h) ---- */

static void tls_failed(const char *why, void *data) {
    rc_slot *s = data;
    snprintf(s->tls_why, sizeof s->tls_why, "%s", why);
}

static void tls_closed(void *data) {
    redis_client *c = ((rc_slot *)data)->c;
    if (--c->handles == 0) client_free(c);
}

/* Copy a wsg_error's message into a slot's reason, cut to fit as the
 * reason has always been. */
static void copy_why(char *why, size_t whylen, const char *msg) {
    strbuf b;
    strbuf_init(&b, why, whylen);
    strbuf_puts(&b, msg);
}

/* A hiredis context for ip: plain TCP, or through a new TLS bridge (then
 * *tls is set and owned by the context's adapter). NULL with why. */
static redisAsyncContext *open_context(rc_slot *s, const char *ip, redis_tls **tls, char *why,
                                       size_t whylen) {
    redis_client *c = s->c;
    *tls = NULL;
    if (!c->opt.url.tls) {
        redisAsyncContext *ac = redisAsyncConnect(ip, c->opt.url.port);
        if (ac && !ac->err) {
            redisEnableKeepAlive(&ac->c);
            return ac;
        }
        snprintf(why, whylen, "%s", ac ? ac->errstr : "cannot start a connection");
        if (ac) redisAsyncFree(ac);
        return NULL;
    }
    if (!c->tls) {
        copy_why(why, whylen, c->tls_err.message);
        return NULL;
    }
    const char *name = c->opt.tls.server_name && c->opt.tls.server_name[0] ? c->opt.tls.server_name
                                                                           : c->opt.url.host;
    redisAsyncContext *ac;
    s->tls_why[0] = '\0';
    wsg_error e = {0};
    if (redis_tls_open(c->loop, c->tls, ip, c->opt.url.port, name, tls_failed, tls_closed, s, &ac,
                       tls, &e) != 0) {
        copy_why(why, whylen, e.message);
        return NULL;
    }
    c->handles++; /* the bridge, until tls_closed */
    return ac;
}

static void slot_connect_addr(rc_slot *s, const char *ip) {
    redis_client *c = s->c;
    char why[256];
    redis_tls *tls;
    redisAsyncContext *ac = open_context(s, ip, &tls, why, sizeof why);
    if (!ac || attach(c, ac, tls) != 0) {
        if (ac) {
            snprintf(why, sizeof why, "cannot start a connection");
            redisAsyncFree(ac);
            if (tls) redis_tls_close(tls);
        }
        s->state = SLOT_CONNECTING; /* counts as a failed attempt */
        slot_lost(s, why);
        return;
    }
    ac->data = s;
    s->ac = ac;
    s->state = SLOT_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    uv_timer_start(&s->timer, slot_timer_cb, c->opt.connect_timeout_ms, 0);
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    rc_resolve *r = (rc_resolve *)req;
    rc_slot *s = r->slot;
    redis_client *c = s->c;
    bool current = s->resolving == r;
    if (current) s->resolving = NULL;
    free(r);
    /* IPv4 first, as hiredis itself prefers. */
    char ip[INET6_ADDRSTRLEN] = "";
    for (int pass = 0; pass < 2 && !ip[0]; pass++)
        for (const struct addrinfo *ai = res; ai && !ip[0]; ai = ai->ai_next) {
            if (pass == 0 && ai->ai_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, ip,
                          sizeof ip);
            else if (pass == 1 && ai->ai_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip,
                          sizeof ip);
        }
    if (res) uv_freeaddrinfo(res);
    if (--c->handles == 0) { /* closing, and this was the last thing open */
        client_free(c);
        return;
    }
    if (!current || c->closing) return;
    if (status < 0 || !ip[0]) {
        char why[160];
        snprintf(why, sizeof why, "host name lookup failed: %s",
                 status < 0 ? uv_strerror(status) : "no address");
        slot_lost(s, why);
        return;
    }
    slot_connect_addr(s, ip);
}

static void slot_connect(rc_slot *s) {
    redis_client *c = s->c;
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, c->opt.url.host, addr) == 1 ||
        inet_pton(AF_INET6, c->opt.url.host, addr) == 1) {
        slot_connect_addr(s, c->opt.url.host);
        return;
    }
    rc_resolve *r = xcalloc(1, sizeof *r);
    r->slot = s;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    s->state = SLOT_RESOLVING;
    int rc = uv_getaddrinfo(c->loop, &r->req, resolved, c->opt.url.host, NULL, &hints);
    if (rc != 0) {
        free(r);
        slot_lost(s, uv_strerror(rc));
        return;
    }
    c->handles++;
    s->resolving = r;
    uv_timer_start(&s->timer, slot_timer_cb, c->opt.connect_timeout_ms, 0);
}

/* ---- commands ---- */

static void idle_cb(uv_idle_t *h) {
    redis_client *c = h->data;
    rc_req batch;
    list_init(&batch);
    /* Take the list as it is: callbacks that fail again land on a new
     * list, delivered on the next turn. */
    if (!list_empty(&c->failed)) {
        batch.next = c->failed.next;
        batch.prev = c->failed.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        list_init(&c->failed);
    }
    uv_idle_stop(&c->idle);
    while (!list_empty(&batch)) {
        rc_req *q = batch.next;
        list_remove(q);
        q->cb(c, NULL, q->fail, q->data);
        free(q);
    }
}

static void fail_later(redis_client *c, rc_req *q, const char *why) {
    q->fail = why;
    list_push(&c->failed, q);
    if (!c->closing) uv_idle_start(&c->idle, idle_cb);
}

static void reply_cb(redisAsyncContext *ac, void *r, void *priv) {
    rc_req *q = priv;
    redis_client *c = q->c;
    redisReply *reply = r;
    list_remove(q);
    if (reply) {
        double ms = (double)(clock_mono_ns() - q->t_sent) / 1e6;
        c->st.rtt_count++;
        c->st.rtt_sum_ms += ms;
        unsigned b = 0;
        while (b < REDIS_CLIENT_RTT_BUCKETS && ms > redis_client_rtt_bounds_ms[b]) b++;
        c->st.rtt_buckets[b]++;
        if (reply->type == REDIS_REPLY_ERROR) c->st.error_replies++;
        q->cb(c, reply, NULL, q->data);
    } else {
        c->st.dropped++;
        q->cb(c, NULL, c->closing ? REDIS_CLIENT_E_CLOSED : c->kill_reason, q->data);
    }
    free(q);
}

uint32_t redis_client_affinity(const char *key, size_t len) {
    uint32_t h = (uint32_t)hash_bytes(key, len, HASH_FNV_BASIS);
    return h == REDIS_CLIENT_ANY ? 0 : h;
}

static rc_slot *pick(redis_client *c, uint32_t affinity) {
    unsigned first = affinity == REDIS_CLIENT_ANY ? c->rr++ % c->pool : affinity % c->pool;
    for (unsigned i = 0; i < c->pool; i++) {
        rc_slot *s = &c->slots[(first + i) % c->pool];
        if (s->state == SLOT_READY && s->ac && !s->drop) return s;
    }
    return NULL;
}

int redis_client_command_argv(redis_client *c, uint32_t affinity, redis_client_reply_cb cb,
                              void *data, int argc, const char **argv, const size_t *argvlen) {
    rc_req *q = xcalloc(1, sizeof *q);
    q->c = c;
    q->cb = cb;
    q->data = data;
    list_init(q);
    rc_slot *s = c->closing ? NULL : pick(c, affinity);
    if (s && redisAsyncCommandArgv(s->ac, reply_cb, q, argc, argv, argvlen) == REDIS_OK) {
        q->slot = s;
        q->t_sent = clock_mono_ns();
        list_push(&s->inflight, q);
        c->st.commands++;
        return 0;
    }
    c->st.failed_fast++;
    fail_later(c, q, c->closing ? REDIS_CLIENT_E_CLOSED : REDIS_CLIENT_E_DOWN);
    return -1;
}

/* A command that has waited longer than command_timeout_ms means the
 * server stopped answering (or the network dropped it without a reset):
 * every connection is reopened, the pub/sub one included, since it would
 * otherwise wait for TCP keepalive to notice. */
static void tick_cb(uv_timer_t *t) {
    redis_client *c = t->data;
    uint64_t now = clock_mono_ns(), limit = (uint64_t)c->opt.command_timeout_ms * 1000000u;
    bool stuck = false;
    for (unsigned i = 0; i < c->pool && !stuck; i++) {
        rc_slot *s = &c->slots[i];
        stuck = s->ac && !list_empty(&s->inflight) && now - s->inflight.next->t_sent > limit;
    }
    if (!stuck) return;
    c->st.timeouts++;
    c->kill_reason = REDIS_CLIENT_E_TIMEOUT;
    for (unsigned i = 0; i <= c->pool; i++) {
        uv_timer_stop(&c->slots[i].timer);
        slot_kill(&c->slots[i], "no reply in time");
    }
    c->kill_reason = REDIS_CLIENT_E_LOST;
}

/* ---- pub/sub ---- */

static void sub_cb(redisAsyncContext *ac, void *r, void *priv) {
    rc_slot *s = priv;
    redis_client *c = s->c;
    redisReply *reply = r;
    if (!reply || s->ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
    redisReply *kind = reply->element[0], *chn = reply->element[1];
    if (kind->type != REDIS_REPLY_STRING || chn->type != REDIS_REPLY_STRING) return;
    /* Channel names are C strings (subscribe takes them so). */
    char *name = xstrndup(chn->str, chn->len);
    rc_chan *ch = strmap_get(&c->channels, name);
    if (strcasecmp(kind->str, "message") == 0) {
        redisReply *payload = reply->element[2];
        if (ch && ch->wanted && payload->type == REDIS_REPLY_STRING && c->opt.on_message) {
            c->st.messages++;
            c->opt.on_message(c, chn->str, chn->len, payload->str, payload->len, c->opt.data);
        }
    } else if (ch && strcasecmp(kind->str, "subscribe") == 0) {
        ch->state = CHAN_SUBSCRIBED;
        if (!ch->wanted) {
            ch->state = CHAN_UNSUBSCRIBING;
            const char *one = name;
            send_subscribe(c, &one, 1, false);
        }
    } else if (ch && strcasecmp(kind->str, "unsubscribe") == 0) {
        ch->state = CHAN_NONE;
        if (ch->wanted) {
            ch->state = CHAN_SUBSCRIBING;
            const char *one = name;
            send_subscribe(c, &one, 1, true);
        } else {
            free(strmap_remove(&c->channels, name));
        }
    }
    free(name);
}

static void send_subscribe(redis_client *c, const char **channels, size_t n, bool sub) {
    rc_slot *s = &c->slots[c->pool];
    const char *argv[SUBSCRIBE_BATCH + 1];
    argv[0] = sub ? "SUBSCRIBE" : "UNSUBSCRIBE";
    for (size_t i = 0; i < n; i++) argv[i + 1] = channels[i];
    redisAsyncCommandArgv(s->ac, sub_cb, s, (int)n + 1, argv, NULL);
}

void redis_client_subscribe(redis_client *c, const char *channel) {
    if (c->closing) return;
    rc_chan *ch = strmap_get(&c->channels, channel);
    if (!ch) {
        ch = xcalloc(1, sizeof *ch);
        strmap_put(&c->channels, channel, ch, NULL);
    }
    if (ch->wanted) return;
    ch->wanted = true;
    c->st.channels++;
    if (ch->state == CHAN_NONE && c->slots[c->pool].state == SLOT_READY) {
        ch->state = CHAN_SUBSCRIBING;
        send_subscribe(c, &channel, 1, true);
    }
}

void redis_client_unsubscribe(redis_client *c, const char *channel) {
    rc_chan *ch = strmap_get(&c->channels, channel);
    if (!ch || !ch->wanted) return;
    ch->wanted = false;
    c->st.channels--;
    if (ch->state == CHAN_SUBSCRIBED) {
        ch->state = CHAN_UNSUBSCRIBING;
        send_subscribe(c, &channel, 1, false);
    } else if (ch->state == CHAN_NONE) {
        free(strmap_remove(&c->channels, channel));
    }
}

bool redis_client_subscribed(const redis_client *c, const char *channel) {
    const rc_chan *ch = strmap_get(&c->channels, channel);
    return ch && ch->wanted && ch->state == CHAN_SUBSCRIBED;
}

/* ---- life ---- */

redis_client *redis_client_new(uv_loop_t *loop, const redis_client_options *opt) {
    redis_client *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    c->opt = *opt;
    if (!c->opt.pool_size) c->opt.pool_size = 2;
    if (c->opt.pool_size > 16) c->opt.pool_size = 16;
    if (!c->opt.connect_timeout_ms) c->opt.connect_timeout_ms = 2000;
    if (!c->opt.command_timeout_ms) c->opt.command_timeout_ms = 5000;
    if (!c->opt.backoff_min_ms) c->opt.backoff_min_ms = 100;
    if (!c->opt.backoff_max_ms) c->opt.backoff_max_ms = 5000;
    if (c->opt.backoff_max_ms < c->opt.backoff_min_ms)
        c->opt.backoff_max_ms = c->opt.backoff_min_ms;
    redis_url_name(&c->opt.url, c->name, sizeof c->name);
    if (c->opt.url.tls) {
        c->tls = redis_tls_ctx_new(&c->opt.tls, &c->tls_err);
        /* Once per process: every worker has a client per server. The log
         * has no WARN level; ERROR keeps it visible at the default level. */
        static atomic_bool warned;
        if (c->opt.tls.insecure_skip_verify && !atomic_exchange(&warned, true)) {
            log_line l;
            log_begin(&l, LOG_ERROR, "redis_tls_insecure");
            log_str(&l, "server", c->name);
            log_str(&l, "msg", "rediss:// without verifying the server's certificate");
            log_end(&l);
        }
    }
    c->pool = c->opt.pool_size;
    c->slots = xcalloc(c->pool + 1, sizeof *c->slots);
    c->kill_reason = REDIS_CLIENT_E_LOST;
    strmap_init(&c->channels);
    list_init(&c->failed);
    for (unsigned i = 0; i <= c->pool; i++) {
        rc_slot *s = &c->slots[i];
        s->c = c;
        s->pubsub = i == c->pool;
        list_init(&s->inflight);
        uv_timer_init(loop, &s->timer);
        s->timer.data = s;
        c->handles++;
        slot_schedule(s, 0);
    }
    uv_timer_init(loop, &c->tick);
    c->tick.data = c;
    c->handles++;
    uint64_t every = c->opt.command_timeout_ms / 4 > 50 ? c->opt.command_timeout_ms / 4 : 50;
    uv_timer_start(&c->tick, tick_cb, every, every);
    uv_idle_init(loop, &c->idle);
    c->idle.data = c;
    c->handles++;
    return c;
}

static void close_step(uv_timer_t *t) {
    redis_client *c = t->data;
    for (unsigned i = 0; i <= c->pool; i++) {
        rc_slot *s = &c->slots[i];
        uv_timer_stop(&s->timer);
        if (s->resolving) {
            uv_cancel((uv_req_t *)&s->resolving->req);
            s->resolving = NULL;
        }
        slot_kill(s, "closed");
    }
    /* Commands failed before (or by callbacks run just now) are answered
     * here: the idle handle closes with the client. */
    while (!list_empty(&c->failed)) {
        rc_req *q = c->failed.next;
        list_remove(q);
        q->cb(c, NULL, q->fail, q->data);
        free(q);
    }
    for (unsigned i = 0; i <= c->pool; i++) {
        c->slots[i].timer.data = c;
        uv_close((uv_handle_t *)&c->slots[i].timer, handle_closed);
    }
    uv_close((uv_handle_t *)&c->tick, handle_closed);
    uv_close((uv_handle_t *)&c->idle, handle_closed);
}

void redis_client_close(redis_client *c) {
    if (c->closing) return;
    c->closing = true;
    update_up(c);
    uv_idle_stop(&c->idle);
    uv_timer_start(&c->tick, close_step, 0, 0);
}

bool redis_client_up(const redis_client *c) { return c->up; }

void redis_client_flush(redis_client *c) {
    if (!c || c->closing) return;
    /* The pub/sub slot first: a SUBSCRIBE must reach Redis before a
     * command sent after it that publishes on its channel (the engine's
     * marker says "subscribed" by coming back), as Redis runs what
     * arrives in order of arrival. */
    for (unsigned k = 0; k <= c->pool; k++) {
        rc_slot *s = &c->slots[(k + c->pool) % (c->pool + 1)];
        /* Ready slots only: a context still connecting would run its
         * connect step from here. hiredis writes nothing when its output
         * buffer is empty, so a second flush in a turn costs no syscall. */
        if (s->state != SLOT_READY || !s->ac || s->drop) continue;
        rc_poll *p = s->ac->ev.data;
        redisAsyncHandleWrite(s->ac);
        /* rediss://: hiredis wrote to the bridge; on to the server too.
         * A failed write lost the context (s->ac NULL): nothing to pump. */
        if (s->ac && p->tls) redis_tls_flush(p->tls);
    }
}

void redis_client_get_stats(const redis_client *c, redis_client_stats *out) { *out = c->st; }

const char *redis_client_name(const redis_client *c) { return c->name; }
