/* The Redis engine (engine = "redis", docs/redis.md): several wsgate nodes
 * on one Redis behave as one. It wraps a local engine, which keeps serving
 * this node's own workers exactly as it does alone, and adds Redis:
 *
 * - One redis_client per worker loop (its pool and its pub/sub
 *   connection), used only on that worker's thread. A worker subscribes a
 *   room's channel while it has members there and delivers what arrives
 *   straight to its own hub: no cross-thread hand-off on the message path.
 *   Work asked from another thread is posted to the right worker's inbox.
 * - Room events (presence, typing, POST @rooms): delivered at once to the
 *   node's own members through the local engine, and PUBLISHed with the
 *   node's id, which the node's own workers skip.
 * - Chats: the chat script sequences, keeps and PUBLISHes each one; every
 *   node, the sender's included, delivers it from pub/sub, so every member
 *   sees one order. The completion runs on the sender's worker when the
 *   script answers.
 * - Counts: each worker writes its own rooms and users (member counts) to
 *   two hashes in Redis and announces room changes on the room's channel;
 *   worker 0 reads every live worker's hashes once a second.
 * - Resumes: a resume's last page is answered only once the live chats it
 *   covers have passed the worker's subscription (no gap, no duplicate).
 * - Dead workers: each worker records its connections' rooms; a worker
 *   silent past redis_node_timeout_s is reaped by one surviving node,
 *   which sends its connections' user_left. */
#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "app/events.h"
#include "common/alloc.h"
#include "common/clock.h"
#include "common/random.h"
#include "common/strmap.h"
#include "engine/engine.h"
#include "engine/redis_client.h"
#include "engine/redis_script.h"
#include "engine/redis.h"
#include "log/log.h"
#include "crypto/crypto.h"

#define HEARTBEAT_MS 1000
/* Chats and history reads waiting for Redis per worker, at most, when the
 * caller asks for a bound (engine_submit's `bounded`). */
#define MAX_INFLIGHT 10000
/* A field of the per-room announcements and of the live-worker set:
 * "<node>.<worker>". */
#define FIELD_LEN 48

typedef struct redis_engine redis_engine;

/* One worker's share: touched on that worker's thread only (the atomics
 * excepted). */
typedef struct rworker {
    redis_engine *re;
    int index;
    server *srv;
    redis_client *client;
    uv_timer_t timer;
    bool timer_open, closing, said_goodbye;
    unsigned ticks;
    atomic_bool up;
    char field[FIELD_LEN];
    strmap rooms;   /* room id -> wroom*: this worker's rooms */
    strmap users;   /* user id -> (uintptr_t) this worker's connections of the user */
    strmap members; /* connection id -> wmember: this worker's connections */
    size_t inflight;
    char *room_prefix; /* "wsgate:<db>:room:" */
    size_t room_prefix_len;
} rworker;

/* One of this worker's connections, as a surviving node needs it to tell
 * its room the connection left should this node die (its thread only). */
typedef struct wmember {
    const char *user_id, *username; /* borrowed: see engine_conn_opened */
    char *room_id;                  /* malloc'd, NULL: in no room */
} wmember;

/* A room this worker has members in (its thread only). */
typedef struct wroom {
    uintptr_t count; /* this worker's members */
    /* The room's counter when this worker's subscription was seen to be
     * active (its own marker came back on the channel; -1: not yet): every
     * chat past it reaches this worker, in seq order. */
    int64_t base;
    int64_t seen; /* the highest chat seq delivered here from the channel */
    /* Resumes whose last page is read but not yet answered: held until
     * every chat the page covers has passed here (see hold_resume). */
    store_op **waiting;
    size_t nwaiting, capwaiting;
    /* Chats of this worker's members held until base >= 0 (hold_chat). */
    store_op **held;
    size_t nheld, capheld;
} wroom;

/* What other workers (of any node) have: one entry per "<node>.<w>". */
typedef struct remote_count {
    char field[FIELD_LEN];
    int64_t count;
    int64_t announced_ms; /* set by an announcement on the room's channel (0: by a read) */
} remote_count;

typedef struct remote_room {
    size_t n, cap;
    remote_count *v;
} remote_room;

struct redis_engine {
    engine base;
    engine *local;
    const engine_deliver *d;
    const config *cfg;
    crypto_keyring *keys;
    redis_url url;
    size_t nworkers;
    rworker w[DIRECTORY_MAX_WORKERS];
    char node[17]; /* this process's random id */
    char bus[96];  /* node-level channel: private messages */
    /* Other workers' counts, guarded by mu. */
    pthread_mutex_t mu;
    strmap rooms;    /* room id -> remote_room* */
    strmap users;    /* user id -> (uintptr_t) connections on other nodes */
    bool refreshing; /* worker 0's read of every worker's hashes is in flight */
    /* This node's live connection ids (open to close), so that an id the
     * local engine calls gone is told apart from one that is not here. */
    pthread_mutex_t conns_mu;
    strmap conns;
};

static redis_engine *R(engine *e) { return (redis_engine *)e; }

static int64_t now_ms(void) { return clock_wall_ms(); }

static int current_worker(redis_engine *re) {
    server *cur = server_current();
    for (size_t i = 0; cur && i < re->nworkers; i++)
        if (re->w[i].srv == cur) return (int)i;
    return -1;
}

/* ---- running something on a given worker ---- */

typedef void (*on_worker_fn)(rworker *w, void *arg, bool dropped);

typedef struct worker_call {
    rworker *w;
    on_worker_fn fn;
    void *arg;
} worker_call;

static void run_worker_call(void *hub, void *arg) {
    worker_call *wc = arg;
    wc->fn(wc->w, wc->arg, hub == NULL);
    free(wc);
}

static void run_inbox_call(server *srv, server_inbox_item *it, bool dropped) {
    it->call(dropped ? NULL : srv->app, it->arg);
}

/* Run fn(w, arg) on w's thread: now when this is it, else posted. */
static void on_worker(rworker *w, on_worker_fn fn, void *arg) {
    if (w->srv == server_current()) {
        fn(w, arg, false);
        return;
    }
    worker_call *wc = xmalloc(sizeof(*wc));
    *wc = (worker_call){w, fn, arg};
    server_inbox_item it = {.run = run_inbox_call, .call = run_worker_call, .arg = wc};
    server_post(w->srv, &it);
}

/* ---- names ---- */

static char *key_of(const char *fmt, const char *a, const char *b) {
    size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *k = xmalloc(n);
    snprintf(k, n, fmt, a, b ? b : "");
    return k;
}

static char *worker_rooms_key(const rworker *w) {
    return key_of("wsgate:w:%s:rooms%s", w->field, NULL);
}
static char *worker_users_key(const rworker *w) {
    return key_of("wsgate:w:%s:users%s", w->field, NULL);
}
static char *worker_members_key(const char *field) {
    return key_of("wsgate:w:%s:members%s", field, NULL);
}
#define WORKERS_KEY "wsgate:workers"

static bool field_is_ours(const redis_engine *re, const char *field, size_t len) {
    size_t n = strlen(re->node);
    return len > n && memcmp(field, re->node, n) == 0 && field[n] == '.';
}

/* ---- fire-and-forget commands ---- */

static void ignore_reply(redis_client *c, const redisReply *r, const char *err, void *data) {}

static void cmd(rworker *w, uint32_t affinity, int argc, const char **argv, const size_t *lens) {
    if (w->client && !w->closing)
        redis_client_command_argv(w->client, affinity, ignore_reply, NULL, argc, argv, lens);
}

/* Write this worker's count of room_id (0: remove it) and announce it on
 * the room's channel, on the room's connection (in order). */
static void write_room_count(rworker *w, const char *room_id, uintptr_t n) {
    char *key = worker_rooms_key(w);
    char num[24];
    snprintf(num, sizeof(num), "%" PRIuPTR, n);
    uint32_t aff = redis_client_affinity(room_id, strlen(room_id));
    if (n) cmd(w, aff, 4, (const char *[]){"HSET", key, room_id, num}, NULL);
    else cmd(w, aff, 3, (const char *[]){"HDEL", key, room_id}, NULL);
    char *channel = redis_script_channel(w->re->url.db, room_id);
    char msg[FIELD_LEN + 32];
    snprintf(msg, sizeof(msg), "M%s\n%s", w->field, num);
    cmd(w, aff, 3, (const char *[]){"PUBLISH", channel, msg}, NULL);
    free(channel);
    free(key);
}

static void write_user_count(rworker *w, const char *user_id, uintptr_t n) {
    char *key = worker_users_key(w);
    char num[24];
    snprintf(num, sizeof(num), "%" PRIuPTR, n);
    if (n) cmd(w, REDIS_CLIENT_ANY, 4, (const char *[]){"HSET", key, user_id, num}, NULL);
    else cmd(w, REDIS_CLIENT_ANY, 3, (const char *[]){"HDEL", key, user_id}, NULL);
    free(key);
}

/* Publish "S<field>\n<room counter>" on the room's channel, atomically
 * (one script): when it comes back, this worker's subscription is active
 * and every chat with a larger seq will reach it. */
static const char MARKER_LUA[] = "return redis.call('PUBLISH', KEYS[2], 'S' .. ARGV[1] .. '\\n' .. "
                                 "(redis.call('GET', KEYS[1]) or '0'))";

static void send_marker(rworker *w, const char *room_id) {
    char *seq = redis_script_seq_key(room_id);
    char *channel = redis_script_channel(w->re->url.db, room_id);
    cmd(w, redis_client_affinity(room_id, strlen(room_id)), 6,
        (const char *[]){"EVAL", MARKER_LUA, "2", seq, channel, w->field}, NULL);
    free(seq);
    free(channel);
}

/* Record (room_id) or forget (NULL) where connection conn_id is. */
static void write_member(rworker *w, const char *conn_id, const wmember *m) {
    char *key = worker_members_key(w->field);
    if (m && m->room_id) {
        size_t n = strlen(m->room_id) + strlen(m->user_id) + strlen(m->username) + 3;
        char *v = xmalloc(n);
        snprintf(v, n, "%s\n%s\n%s", m->room_id, m->user_id, m->username);
        cmd(w, REDIS_CLIENT_ANY, 4, (const char *[]){"HSET", key, conn_id, v}, NULL);
        free(v);
    } else {
        cmd(w, REDIS_CLIENT_ANY, 3, (const char *[]){"HDEL", key, conn_id}, NULL);
    }
    free(key);
}

static void resync(rworker *w);

/* ZADD answers 1 when the field was not there: this worker was taken for
 * dead (silent past redis_node_timeout_s) and its records removed, or
 * Redis restarted: write them again. */
static void on_zadd(redis_client *c, const redisReply *r, const char *err, void *data) {
    rworker *w = data;
    if (!err && r && r->type == REDIS_REPLY_INTEGER && r->integer == 1 && !w->closing) resync(w);
}

/* Say this worker is alive, and keep its hashes while it is. */
static void heartbeat(rworker *w) {
    char score[24], ttl[24];
    snprintf(score, sizeof(score), "%" PRId64, now_ms());
    snprintf(ttl, sizeof(ttl), "%" PRId64, (int64_t)w->re->cfg->redis_node_timeout_s * 2000);
    char *rk = worker_rooms_key(w), *uk = worker_users_key(w), *mk = worker_members_key(w->field);
    cmd(w, REDIS_CLIENT_ANY, 3, (const char *[]){"PEXPIRE", rk, ttl}, NULL);
    cmd(w, REDIS_CLIENT_ANY, 3, (const char *[]){"PEXPIRE", uk, ttl}, NULL);
    cmd(w, REDIS_CLIENT_ANY, 3, (const char *[]){"PEXPIRE", mk, ttl}, NULL);
    if (w->client && !w->closing)
        redis_client_command_argv(w->client, REDIS_CLIENT_ANY, on_zadd, w, 4,
                                  (const char *[]){"ZADD", WORKERS_KEY, score, w->field}, NULL);
    free(rk);
    free(uk);
    free(mk);
}

/* After (re)connecting: Redis may have lost or never had this worker's
 * counts (a restart, writes that failed while it was down): write them
 * all again. */
static void resync(rworker *w) {
    char *rk = worker_rooms_key(w), *uk = worker_users_key(w), *mk = worker_members_key(w->field);
    cmd(w, REDIS_CLIENT_ANY, 2, (const char *[]){"DEL", rk}, NULL);
    cmd(w, REDIS_CLIENT_ANY, 2, (const char *[]){"DEL", uk}, NULL);
    cmd(w, REDIS_CLIENT_ANY, 2, (const char *[]){"DEL", mk}, NULL);
    free(rk);
    free(uk);
    free(mk);
    size_t it = 0;
    const char *k;
    void *v;
    while (strmap_next(&w->members, &it, &k, &v)) write_member(w, k, v);
    it = 0;
    while (strmap_next(&w->rooms, &it, &k, &v)) {
        wroom *r = v;
        r->base = -1; /* chats were lost while down: know the subscription again */
        write_room_count(w, k, r->count);
        send_marker(w, k);
    }
    it = 0;
    while (strmap_next(&w->users, &it, &k, &v)) write_user_count(w, k, (uintptr_t)v);
    heartbeat(w);
}

/* ---- other workers' counts ---- */

static void remote_room_free(remote_room *r) {
    if (!r) return;
    free(r->v);
    free(r);
}

/* Set field's count in room_id (0: remove). announced: from the
 * room's channel (newer than a read of the hashes sent before it). */
static void remote_set(strmap *rooms, const char *room_id, const char *field, int64_t count,
                       int64_t announced_ms) {
    remote_room *r = strmap_get(rooms, room_id);
    if (!r) {
        if (count <= 0) return;
        r = xcalloc(1, sizeof(*r));
        strmap_put(rooms, room_id, r, NULL);
    }
    size_t i = 0;
    while (i < r->n && strcmp(r->v[i].field, field) != 0) i++;
    if (i == r->n) {
        if (count <= 0) return;
        if (r->n == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 4;
            r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
        }
        r->n++;
        snprintf(r->v[i].field, FIELD_LEN, "%s", field);
    }
    r->v[i].count = count;
    r->v[i].announced_ms = announced_ms;
    if (count <= 0) {
        r->v[i] = r->v[--r->n];
        if (r->n == 0) remote_room_free(strmap_remove(rooms, room_id));
    }
}

static size_t remote_room_count(redis_engine *re, const char *room_id) {
    pthread_mutex_lock(&re->mu);
    remote_room *r = strmap_get(&re->rooms, room_id);
    int64_t n = 0;
    for (size_t i = 0; r && i < r->n; i++) n += r->v[i].count;
    pthread_mutex_unlock(&re->mu);
    return n > 0 ? (size_t)n : 0;
}

/* Other nodes' members as far as this node knows, or 1 when it knows of
 * none: a member who joined elsewhere a moment ago is not counted here
 * yet, and the application asks (room_count, room_left) to decide whether
 * anyone must hear a presence event. Publishing to nobody costs one
 * PUBLISH; not publishing to somebody loses an event. */
static size_t others_at_least(redis_engine *re, const char *room_id) {
    size_t n = remote_room_count(re, room_id);
    return n ? n : 1;
}

static bool remote_has_user(redis_engine *re, const char *user_id) {
    pthread_mutex_lock(&re->mu);
    bool has = strmap_get(&re->users, user_id) != NULL;
    pthread_mutex_unlock(&re->mu);
    return has;
}

/* Worker 0's read of every live worker's hashes: ZRANGEBYSCORE, then two
 * HGETALL per other node's worker; the new maps replace the old ones when
 * the last reply is in. */
typedef struct refresh {
    redis_engine *re;
    int64_t sent_ms;
    size_t pending;
    bool failed;
    strmap rooms; /* room -> remote_room* */
    strmap users; /* user -> count */
} refresh;

static void refresh_finish(refresh *rf) {
    redis_engine *re = rf->re;
    pthread_mutex_lock(&re->mu);
    if (!rf->failed) {
        /* Announcements newer than the read win over what it read. */
        size_t it = 0;
        const char *k;
        void *v;
        while (strmap_next(&re->rooms, &it, &k, &v)) {
            remote_room *old = v;
            for (size_t i = 0; i < old->n; i++)
                if (old->v[i].announced_ms >= rf->sent_ms)
                    remote_set(&rf->rooms, k, old->v[i].field, old->v[i].count,
                               old->v[i].announced_ms);
        }
        strmap swap = re->rooms;
        re->rooms = rf->rooms;
        rf->rooms = swap;
        swap = re->users;
        re->users = rf->users;
        rf->users = swap;
    }
    re->refreshing = false;
    pthread_mutex_unlock(&re->mu);
    size_t it = 0;
    void *v;
    while (strmap_next(&rf->rooms, &it, NULL, &v)) remote_room_free(v);
    strmap_free(&rf->rooms);
    strmap_free(&rf->users);
    free(rf);
}

typedef struct refresh_read {
    refresh *rf;
    char field[FIELD_LEN];
    bool users;
} refresh_read;

static void on_hash(redis_client *c, const redisReply *r, const char *err, void *data) {
    refresh_read *rr = data;
    refresh *rf = rr->rf;
    if (err || !r || r->type != REDIS_REPLY_ARRAY) rf->failed = true;
    else
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const redisReply *k = r->element[i], *v = r->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
            int64_t n = strtoll(v->str, NULL, 10);
            if (n <= 0) continue;
            if (rr->users) {
                uintptr_t old = (uintptr_t)strmap_get(&rf->users, k->str);
                strmap_put(&rf->users, k->str, (void *)(old + (uintptr_t)n), NULL);
            } else {
                remote_set(&rf->rooms, k->str, rr->field, n, 0);
            }
        }
    free(rr);
    if (--rf->pending == 0) refresh_finish(rf);
}

static void on_workers(redis_client *c, const redisReply *r, const char *err, void *data) {
    refresh *rf = data;
    redis_engine *re = rf->re;
    if (err || !r || r->type != REDIS_REPLY_ARRAY) {
        rf->failed = true;
        refresh_finish(rf);
        return;
    }
    rf->pending = 1; /* this callback's own share, released below */
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *f = r->element[i];
        if (f->type != REDIS_REPLY_STRING || f->len >= FIELD_LEN) continue;
        if (field_is_ours(re, f->str, f->len)) continue;
        for (int u = 0; u < 2; u++) {
            refresh_read *rr = xcalloc(1, sizeof(*rr));
            rr->rf = rf;
            rr->users = u;
            memcpy(rr->field, f->str, f->len);
            char *key = key_of(u ? "wsgate:w:%s:users%s" : "wsgate:w:%s:rooms%s", rr->field, NULL);
            rf->pending++;
            redis_client_command_argv(c, REDIS_CLIENT_ANY, on_hash, rr, 2,
                                      (const char *[]){"HGETALL", key}, NULL);
            free(key);
        }
    }
    if (--rf->pending == 0) refresh_finish(rf);
}

static void refresh_start(rworker *w) {
    redis_engine *re = w->re;
    pthread_mutex_lock(&re->mu);
    bool busy = re->refreshing;
    re->refreshing = true;
    pthread_mutex_unlock(&re->mu);
    if (busy) return;
    refresh *rf = xcalloc(1, sizeof(*rf));
    rf->re = re;
    rf->sent_ms = now_ms();
    strmap_init(&rf->rooms);
    strmap_init(&rf->users);
    char min[24];
    snprintf(min, sizeof(min), "%" PRId64, rf->sent_ms - re->cfg->redis_node_timeout_s * 1000);
    redis_client_command_argv(w->client, REDIS_CLIENT_ANY, on_workers, rf, 4,
                              (const char *[]){"ZRANGEBYSCORE", WORKERS_KEY, min, "+inf"}, NULL);
}

/* ---- workers that died ----
 *
 * A worker whose heartbeat is older than redis_node_timeout_s is gone (its
 * process died, or lost Redis for that long). Worker 0 of every live node
 * looks for such workers at each refresh; the first to remove one from
 * the live set (ZREM answers 1 to one caller only) tells each room it had
 * members in that they left (user_left, as their own node would have),
 * then deletes its records. */

typedef struct reap {
    rworker *w;
    char field[FIELD_LEN];
} reap;

static void publish_left(rworker *w, const char *room, const char *user_id, const char *username) {
    const event_field data[] = {
        EVENT_FIELD_STR("userId", user_id), EVENT_FIELD_STR("username", username),
        EVENT_FIELD_STR("roomId", room), EVENT_FIELD_INT("timestamp", time(NULL))};
    ws_frame *f = event_frame("user_left", data, sizeof(data) / sizeof(data[0]));
    engine_publish_room(&w->re->base, room, NULL, f, NULL, 0);
    ws_frame_unref(f);
}

static void on_dead_members(redis_client *c, const redisReply *r, const char *err, void *data) {
    reap *rp = data;
    rworker *w = rp->w;
    if (!err && r && r->type == REDIS_REPLY_ARRAY) {
        size_t n = 0;
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const redisReply *v = r->element[i + 1];
            if (v->type != REDIS_REPLY_STRING) continue;
            char *copy = xstrndup(v->str, v->len);
            char *user = strchr(copy, '\n');
            char *name = user ? strchr(user + 1, '\n') : NULL;
            if (name) {
                *user++ = '\0';
                *name++ = '\0';
                publish_left(w, copy, user, name);
                n++;
            }
            free(copy);
        }
        log_msg(LOG_INFO, "redis_worker_gone",
                "worker %s stopped answering: %zu of its connections left their rooms", rp->field,
                n);
    }
    char *rk = key_of("wsgate:w:%s:rooms%s", rp->field, NULL);
    char *uk = key_of("wsgate:w:%s:users%s", rp->field, NULL);
    char *mk = worker_members_key(rp->field);
    cmd(w, REDIS_CLIENT_ANY, 4, (const char *[]){"DEL", rk, uk, mk}, NULL);
    free(rk);
    free(uk);
    free(mk);
    free(rp);
}

static void on_claim(redis_client *c, const redisReply *r, const char *err, void *data) {
    reap *rp = data;
    if (err || !r || r->type != REDIS_REPLY_INTEGER || r->integer != 1 || rp->w->closing) {
        free(rp); /* another node took it, or it came back */
        return;
    }
    char *mk = worker_members_key(rp->field);
    redis_client_command_argv(c, REDIS_CLIENT_ANY, on_dead_members, rp, 2,
                              (const char *[]){"HGETALL", mk}, NULL);
    free(mk);
}

static void on_dead(redis_client *c, const redisReply *r, const char *err, void *data) {
    rworker *w = data;
    if (err || !r || r->type != REDIS_REPLY_ARRAY || w->closing) return;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *f = r->element[i];
        if (f->type != REDIS_REPLY_STRING || f->len >= FIELD_LEN) continue;
        if (field_is_ours(w->re, f->str, f->len)) continue; /* ours come back by themselves */
        reap *rp = xcalloc(1, sizeof(*rp));
        rp->w = w;
        memcpy(rp->field, f->str, f->len);
        redis_client_command_argv(c, REDIS_CLIENT_ANY, on_claim, rp, 3,
                                  (const char *[]){"ZREM", WORKERS_KEY, rp->field}, NULL);
    }
}

static void reap_start(rworker *w) {
    char max[24];
    snprintf(max, sizeof(max), "(%" PRId64, now_ms() - w->re->cfg->redis_node_timeout_s * 1000);
    redis_client_command_argv(w->client, REDIS_CLIENT_ANY, on_dead, w, 4,
                              (const char *[]){"ZRANGEBYSCORE", WORKERS_KEY, "-inf", max}, NULL);
}

/* ---- values: what a chat keeps in Redis ---- */

/* aad = "redis.v:<room>:<messageId>": a sealed value opens only as the
 * message it was written for. */
static void value_aad(char *out, size_t len, const char *room, const char *mid, size_t midlen) {
    snprintf(out, len, "redis.v:%s:%.*s", room, (int)midlen, mid);
}

/* The chat's fields as Redis keeps them (sealed when encryption is on).
 * Returns malloc'd bytes (*len), or NULL when sealing failed. */
static char *value_make(redis_engine *re, const store_op *op, size_t *len) {
    json_t *j = json_pack("{s:s,s:s,s:s,s:I}", "s", op->user_id, "n", op->username, "m",
                          op->message, "t", (json_int_t)op->timestamp);
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!txt) return NULL;
    *len = strlen(txt);
    if (!re->keys) return txt;
    char aad[600];
    value_aad(aad, sizeof(aad), op->room_id, op->message_id, strlen(op->message_id));
    size_t sl;
    uint8_t *sealed = crypto_seal(re->keys, txt, *len, aad, strlen(aad), &sl);
    free(txt);
    *len = sl;
    return (char *)sealed;
}

/* Open a kept value into its fields. Returns the JSON object (the caller
 * decrefs) or NULL (logged). */
static json_t *value_open(redis_engine *re, const char *room, const char *mid, size_t midlen,
                          const char *v, size_t vlen) {
    char *plain = NULL;
    size_t plen = vlen;
    if (re->keys) {
        char aad[600];
        value_aad(aad, sizeof(aad), room, mid, midlen);
        int rc = crypto_open(re->keys, (const uint8_t *)v, vlen, aad, strlen(aad), &plain, &plen);
        if (rc != 0) {
            char buf[200];
            log_msg(LOG_ERROR, "store_error", "cannot read a message of room %s from Redis: %s",
                    room, crypto_open_errmsg(rc, (const uint8_t *)v, vlen, buf, sizeof(buf)));
            return NULL;
        }
    }
    json_t *j = json_loadb(plain ? plain : v, plen, 0, NULL);
    free(plain);
    if (!json_is_object(j) || !json_is_string(json_object_get(j, "s")) ||
        !json_is_string(json_object_get(j, "n")) || !json_is_string(json_object_get(j, "m"))) {
        log_msg(LOG_ERROR, "store_error", "a message of room %s in Redis is malformed", room);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* The chat data object the SQLite store answers history with. */
static json_t *chat_object(const char *room, const char *mid, size_t midlen, int64_t seq,
                           json_t *v) {
    return json_pack("{s:s%,s:s,s:I,s:O,s:O,s:O,s:I}", "messageId", mid, midlen, "roomId", room,
                     "seq", (json_int_t)seq, "senderId", json_object_get(v, "s"), "senderName",
                     json_object_get(v, "n"), "message", json_object_get(v, "m"), "timestamp",
                     json_integer_value(json_object_get(v, "t")));
}

/* ---- resumes: no gap, no duplicate ----
 *
 * A resume reads pages of the room's Stream on a command connection while
 * live chats come on the pub/sub connection: two sockets, so a chat may
 * arrive before or after the page that holds it. While a session resumes,
 * live chats skip it (ENGINE_SKIP_RESUMING); its last page, read when the
 * room's counter was C, is answered only once every chat up to C that
 * will ever come on the channel has passed (seen >= C, or the
 * subscription is known to postdate C), and before any chat past C is
 * delivered. The session then has everything up to C from the page and
 * everything after from the channel. */

static void complete(rworker *w, store_op *op);

#define RESUME_HOLD_MAX_MS 3000 /* an answer is never held longer than this */

static bool covered(const wroom *r, int64_t c) {
    return r->seen >= c || (r->base >= 0 && r->base >= c);
}

/* Answer the held resumes of r whose counter is below `below` or already
 * covered. The completions may change w->rooms: r is not used after. */
static void release_waiting(rworker *w, wroom *r, int64_t below) {
    store_op *ready[64];
    size_t n = 0;
    for (size_t i = 0; i < r->nwaiting && n < 64;) {
        store_op *op = r->waiting[i];
        if (op->last_seq < below || covered(r, op->last_seq)) {
            ready[n++] = op;
            r->waiting[i] = r->waiting[--r->nwaiting];
        } else {
            i++;
        }
    }
    for (size_t i = 0; i < n; i++) complete(w, ready[i]);
}

/* The last page of a resume of op->room_id, read at counter op->last_seq:
 * answer now, or hold it (true). */
static bool hold_resume(rworker *w, store_op *op) {
    wroom *r = strmap_get(&w->rooms, op->room_id);
    if (!r || covered(r, op->last_seq)) return false;
    if (r->nwaiting == r->capwaiting) {
        r->capwaiting = r->capwaiting ? r->capwaiting * 2 : 4;
        r->waiting = xrealloc(r->waiting, r->capwaiting * sizeof(*r->waiting));
    }
    op->t_applied = clock_mono_ns(); /* when it began to wait */
    r->waiting[r->nwaiting++] = op;
    return true;
}

/* A chat's acknowledgement is its echo, which its sender's worker gets from
 * the room's channel: a chat run before that worker's subscription is
 * active (right after its first member joined, or after a reconnect) would
 * be stored and reach every other member but never its sender, which gets
 * neither the echo nor an error. Such a chat waits here until the worker's
 * marker comes back (one round trip; base >= 0), at most CHAT_HOLD_MAX_MS,
 * then fails with "Failed to store message". While the worker's client is
 * not up (its pub/sub connection may be down while a command connection
 * works) nothing waits: the chat fails at once (run_submit). Returns true
 * when op was held. */
#define CHAT_HOLD_MAX_MS 3000

static bool hold_chat(rworker *w, store_op *op) {
    wroom *r = strmap_get(&w->rooms, op->room_id);
    if (!r || r->base >= 0 || !atomic_load(&w->up)) return false;
    if (r->nheld == r->capheld) {
        r->capheld = r->capheld ? r->capheld * 2 : 4;
        r->held = xrealloc(r->held, r->capheld * sizeof(*r->held));
    }
    op->t_submitted = clock_mono_ns(); /* when it began to wait */
    r->held[r->nheld++] = op;
    return true;
}

/* Detach r's held chats (the caller runs them with run_held: their
 * completions may change w->rooms). */
static store_op **take_held(wroom *r, size_t *n) {
    store_op **held = r->held;
    *n = r->nheld;
    r->held = NULL;
    r->nheld = r->capheld = 0;
    return held;
}

static void submit_chat(rworker *w, store_op *op);

static store_op **dup_one(store_op *op) {
    store_op **one = xmalloc(sizeof(*one));
    one[0] = op;
    return one;
}

/* Run detached held chats in order, or (fail: why) answer them with the
 * error. Frees the array. */
static void run_held(rworker *w, store_op **held, size_t n, const char *fail) {
    for (size_t i = 0; i < n; i++) {
        if (fail) {
            log_msg(LOG_ERROR, "store_error", "message %s of room %s: %s", held[i]->message_id,
                    held[i]->room_id, fail);
            held[i]->status = 1;
            complete(w, held[i]);
        } else {
            submit_chat(w, held[i]);
        }
    }
    free(held);
}

/* Timer: answer what waited too long (a chat lost in an outage, a
 * subscription that came after the chats it waits for and no marker). */
static void release_overdue(rworker *w) {
    uint64_t now = clock_mono_ns();
    size_t it = 0;
    void *v;
    const char *k;
    while (strmap_next(&w->rooms, &it, &k, &v)) {
        wroom *r = v;
        bool down = !atomic_load(&w->up);
        if (r->nheld &&
            (down || now - r->held[0]->t_submitted > (uint64_t)CHAT_HOLD_MAX_MS * 1000000)) {
            size_t n;
            store_op **held = take_held(r, &n);
            /* Fail them rather than risk a silent success. */
            run_held(w, held, n, "room not subscribed in time");
            return; /* the map may have changed */
        }
    }
    it = 0;
    while (strmap_next(&w->rooms, &it, &k, &v)) {
        wroom *r = v;
        if (r->base < 0) send_marker(w, k);
        for (size_t i = 0; i < r->nwaiting; i++)
            if (now - r->waiting[i]->t_applied > (uint64_t)RESUME_HOLD_MAX_MS * 1000000) {
                release_waiting(w, r, INT64_MAX);
                return; /* the map may have changed */
            }
    }
}

static void note_marker(rworker *w, const char *room, const char *p, size_t n) {
    /* "S<field>\n<room counter>" */
    const char *nl = memchr(p, '\n', n);
    size_t flen = nl ? (size_t)(nl - p - 1) : 0;
    if (!nl) return;
    if (flen != strlen(w->field) || memcmp(p + 1, w->field, flen) != 0) {
        /* Another node's worker has just subscribed: it missed this
         * worker's earlier announcement, so say the count again (its
         * room_list is then exact at once, not after the next read). */
        wroom *mine = strmap_get(&w->rooms, room);
        if (mine && mine->count && !field_is_ours(w->re, p + 1, flen))
            write_room_count(w, room, mine->count);
        return;
    }
    wroom *r = strmap_get(&w->rooms, room);
    if (!r || r->base >= 0) return;
    r->base = strtoll(nl + 1, NULL, 10);
    size_t nheld;
    store_op **held = take_held(r, &nheld);
    release_waiting(w, r, INT64_MIN);
    run_held(w, held, nheld, NULL);
}

/* ---- what arrives from Redis ---- */

static void deliver_chat(rworker *w, const char *room, const char *p, size_t n) {
    /* "C<messageId>\n<seq>\n<value>" */
    const char *nl = memchr(p, '\n', n);
    if (!nl) return;
    const char *mid = p + 1;
    size_t midlen = (size_t)(nl - mid);
    const char *sp = nl + 1;
    const char *nl2 = memchr(sp, '\n', n - (size_t)(sp - p));
    if (!nl2 || midlen >= 37) return;
    int64_t seq = strtoll(sp, NULL, 10);
    json_t *v = value_open(w->re, room, mid, midlen, nl2 + 1, n - (size_t)(nl2 + 1 - p));
    if (!v) return;
    store_op op = {.room_id = (char *)room,
                   .user_id = (char *)json_string_value(json_object_get(v, "s")),
                   .username = (char *)json_string_value(json_object_get(v, "n")),
                   .message = (char *)json_string_value(json_object_get(v, "m")),
                   .timestamp = json_integer_value(json_object_get(v, "t")),
                   .seq = seq};
    memcpy(op.message_id, mid, midlen);
    /* Resumes whose pages end before this chat are answered first: their
     * sessions then get it live. */
    wroom *r = strmap_get(&w->rooms, room);
    if (r && r->nwaiting) release_waiting(w, r, seq);
    ws_frame *f = event_chat_frame(&op);
    w->re->d->room(w->srv->app, room, f, NULL, ENGINE_SKIP_RESUMING);
    ws_frame_unref(f);
    json_decref(v);
    r = strmap_get(&w->rooms, room);
    if (r && seq > r->seen) {
        r->seen = seq;
        if (r->nwaiting) release_waiting(w, r, INT64_MIN);
    }
}

/* Split "<a>\n<b>\n..." : returns the position after the n-th newline. */
static const char *skip_lines(const char *p, const char *end, int lines) {
    for (; lines > 0 && p; lines--) {
        p = memchr(p, '\n', (size_t)(end - p));
        if (p) p++;
    }
    return p;
}

static void deliver_event(rworker *w, const char *room, const char *p, size_t n) {
    /* "E<node>\n<flags>\n<except>\n<opcode><payload>" */
    const char *end = p + n, *node = p + 1;
    const char *body = skip_lines(p, end, 3);
    if (!body || body >= end) return;
    size_t nodelen = strlen(w->re->node);
    if ((size_t)(end - node) > nodelen && memcmp(node, w->re->node, nodelen) == 0 &&
        node[nodelen] == '\n')
        return; /* ours: the local engine delivered it already */
    const char *fl = skip_lines(p, end, 1), *ex = skip_lines(p, end, 2);
    unsigned flags = (unsigned)strtoul(fl, NULL, 10);
    char except[CONN_ID_LEN + 1] = "";
    size_t exlen = (size_t)(body - 1 - ex);
    if (exlen > 0 && exlen <= CONN_ID_LEN) memcpy(except, ex, exlen);
    ws_frame *f = ws_frame_new((uint8_t)body[0], body + 1, (size_t)(end - body - 1));
    w->re->d->room(w->srv->app, room, f, except[0] ? except : NULL, flags);
    ws_frame_unref(f);
}

static void note_announcement(rworker *w, const char *room, const char *p, size_t n) {
    /* "M<node>.<worker>\n<count>" */
    const char *nl = memchr(p, '\n', n);
    if (!nl || (size_t)(nl - p - 1) >= FIELD_LEN ||
        field_is_ours(w->re, p + 1, (size_t)(nl - p - 1)))
        return;
    char field[FIELD_LEN];
    memcpy(field, p + 1, (size_t)(nl - p - 1));
    field[nl - p - 1] = '\0';
    redis_engine *re = w->re;
    pthread_mutex_lock(&re->mu);
    remote_set(&re->rooms, room, field, strtoll(nl + 1, NULL, 10), now_ms());
    pthread_mutex_unlock(&re->mu);
}

static void deliver_private(rworker *w, const char *p, size_t n) {
    /* "P<node>\n<userId>\n<opcode><payload>" */
    const char *end = p + n, *node = p + 1;
    const char *user = skip_lines(p, end, 1), *body = skip_lines(p, end, 2);
    if (!user || !body || body >= end) return;
    size_t nodelen = strlen(w->re->node);
    if ((size_t)(user - 1 - node) == nodelen && memcmp(node, w->re->node, nodelen) == 0) return;
    char *uid = xstrndup(user, (size_t)(body - 1 - user));
    ws_frame *f = ws_frame_new((uint8_t)body[0], body + 1, (size_t)(end - body - 1));
    engine_publish_user(w->re->local, uid, f);
    ws_frame_unref(f);
    free(uid);
}

static void on_message(redis_client *c, const char *ch, size_t chlen, const char *p, size_t n,
                       void *data) {
    rworker *w = data;
    if (n == 0) return;
    if (chlen > w->room_prefix_len && memcmp(ch, w->room_prefix, w->room_prefix_len) == 0) {
        char *room = xstrndup(ch + w->room_prefix_len, chlen - w->room_prefix_len);
        if (p[0] == 'C') deliver_chat(w, room, p, n);
        else if (p[0] == 'E') deliver_event(w, room, p, n);
        else if (p[0] == 'M') note_announcement(w, room, p, n);
        else if (p[0] == 'S') note_marker(w, room, p, n);
        free(room);
    } else if (chlen == strlen(w->re->bus) && memcmp(ch, w->re->bus, chlen) == 0 && p[0] == 'P') {
        deliver_private(w, p, n);
    }
}

static void on_state(redis_client *c, bool up, void *data) {
    rworker *w = data;
    atomic_store(&w->up, up);
    if (up) resync(w);
}

static void on_timer(uv_timer_t *t) {
    rworker *w = t->data;
    if (w->srv->shutting_down && w->srv->nconns > 0 && w->client) {
        release_overdue(w); /* its connections are closing: their user_left goes out */
        return;
    }
    if (w->srv->shutting_down && w->client && !w->said_goodbye) {
        /* Every connection is gone: take this worker out of the live set
         * (no survivor needs to reap it) and give the commands a turn to
         * leave before the client closes. */
        w->said_goodbye = true;
        char *rk = worker_rooms_key(w), *uk = worker_users_key(w),
             *mk = worker_members_key(w->field);
        cmd(w, REDIS_CLIENT_ANY, 3, (const char *[]){"ZREM", WORKERS_KEY, w->field}, NULL);
        cmd(w, REDIS_CLIENT_ANY, 4, (const char *[]){"DEL", rk, uk, mk}, NULL);
        free(rk);
        free(uk);
        free(mk);
        return;
    }
    if (w->srv->shutting_down) {
        /* Let the loop end: the client's handles would keep it running. */
        if (!w->closing) {
            w->closing = true;
            atomic_store(&w->up, false);
            redis_client_close(w->client);
            w->client = NULL;
        }
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        return;
    }
    release_overdue(w);
    if (!redis_client_up(w->client) || ++w->ticks % 4 != 0) return;
    heartbeat(w);
    if (w->index == 0) {
        refresh_start(w);
        reap_start(w);
    }
}

/* ---- membership ---- */

static uintptr_t count_add(strmap *m, const char *key, int delta) {
    uintptr_t n = (uintptr_t)strmap_get(m, key);
    n = delta > 0 ? n + 1 : (n ? n - 1 : 0);
    if (n) strmap_put(m, key, (void *)n, NULL);
    else strmap_remove(m, key);
    return n;
}

static void r_conn_opened(engine *e, directory_conn *rec, conn *c, int worker, const char *user_id,
                          const char *username, bool first) {
    redis_engine *re = R(e);
    engine_conn_opened(re->local, rec, c, worker, user_id, username, first);
    pthread_mutex_lock(&re->conns_mu);
    strmap_put(&re->conns, c->id, (void *)1, NULL);
    pthread_mutex_unlock(&re->conns_mu);
    rworker *w = &re->w[worker];
    write_user_count(w, user_id, count_add(&w->users, user_id, +1));
    wmember *m = xcalloc(1, sizeof(*m));
    m->user_id = user_id;
    m->username = username;
    strmap_put(&w->members, c->id, m, NULL);
}

static void r_conn_closed(engine *e, const char *conn_id, const char *user_id, int worker,
                          bool last) {
    redis_engine *re = R(e);
    engine_conn_closed(re->local, conn_id, user_id, worker, last);
    pthread_mutex_lock(&re->conns_mu);
    strmap_remove(&re->conns, conn_id);
    pthread_mutex_unlock(&re->conns_mu);
    rworker *w = &re->w[worker];
    write_user_count(w, user_id, count_add(&w->users, user_id, -1));
    wmember *m = strmap_remove(&w->members, conn_id);
    if (m && m->room_id) write_member(w, conn_id, NULL);
    if (m) free(m->room_id);
    free(m);
}

static engine_room *r_room_joined(engine *e, const char *conn_id, const char *room_id, int worker,
                                  bool first) {
    redis_engine *re = R(e);
    engine_room *er = engine_room_joined(re->local, conn_id, room_id, worker, first);
    rworker *w = &re->w[worker];
    wroom *r = strmap_get(&w->rooms, room_id);
    if (!r) {
        r = xcalloc(1, sizeof(*r));
        r->base = -1;
        strmap_put(&w->rooms, room_id, r, NULL);
        if (w->client) {
            char *channel = redis_script_channel(re->url.db, room_id);
            redis_client_subscribe(w->client, channel);
            free(channel);
        }
        send_marker(w, room_id);
    }
    write_room_count(w, room_id, ++r->count);
    wmember *m = strmap_get(&w->members, conn_id);
    if (m) {
        free(m->room_id);
        m->room_id = xstrdup(room_id);
        write_member(w, conn_id, m);
    }
    return er;
}

static size_t r_room_left(engine *e, const char *conn_id, const char *room_id, int worker,
                          bool last) {
    redis_engine *re = R(e);
    size_t left = engine_room_left(re->local, conn_id, room_id, worker, last);
    rworker *w = &re->w[worker];
    wroom *r = strmap_get(&w->rooms, room_id);
    uintptr_t still = r && r->count ? r->count - 1 : 0;
    size_t nheld = 0;
    store_op **held = NULL;
    if (r && --r->count == 0) {
        held = take_held(r, &nheld);
        strmap_remove(&w->rooms, room_id);
        if (w->client) {
            char *channel = redis_script_channel(re->url.db, room_id);
            redis_client_unsubscribe(w->client, channel);
            free(channel);
        }
        release_waiting(w, r, INT64_MAX); /* their sessions left: nothing to hold for */
        free(r->waiting);
        free(r);
    }
    run_held(w, held, nheld, NULL); /* sent before their senders left */
    write_room_count(w, room_id, still);
    wmember *m = strmap_get(&w->members, conn_id);
    if (m && m->room_id) {
        free(m->room_id);
        m->room_id = NULL;
        write_member(w, conn_id, NULL);
    }
    return left + others_at_least(re, room_id);
}

/* ---- messages ---- */

typedef struct publish_job {
    char *channel;
    char *msg;
    size_t len;
    uint32_t affinity;
} publish_job;

static void run_publish(rworker *w, void *arg, bool dropped) {
    publish_job *j = arg;
    if (!dropped)
        cmd(w, j->affinity, 3, (const char *[]){"PUBLISH", j->channel, j->msg},
            (const size_t[]){7, strlen(j->channel), j->len});
    free(j->channel);
    free(j->msg);
    free(j);
}

/* PUBLISH header + f's opcode and payload on channel, from this worker
 * (or worker 0 when the caller is no worker). */
static void publish_frame(redis_engine *re, const char *channel, uint32_t affinity,
                          const char *header, ws_frame *f) {
    uint8_t *payload = ws_frame_payload(f);
    size_t plen = f->len - (size_t)(payload - f->data);
    size_t hlen = strlen(header);
    publish_job *j = xmalloc(sizeof(*j));
    j->channel = xstrdup(channel);
    j->len = hlen + 1 + plen;
    j->msg = xmalloc(j->len);
    memcpy(j->msg, header, hlen);
    j->msg[hlen] = (char)(f->data[0] & 0x0f);
    memcpy(j->msg + hlen + 1, payload, plen);
    j->affinity = affinity;
    int self = current_worker(re);
    on_worker(&re->w[self >= 0 ? self : 0], run_publish, j);
}

static size_t r_publish_room(engine *e, const char *room_id, engine_room *pinned, ws_frame *f,
                             const char *except, unsigned flags) {
    redis_engine *re = R(e);
    size_t local = engine_publish_room(re->local, room_id, pinned, f, except, flags);
    char header[160];
    snprintf(header, sizeof(header), "E%s\n%u\n%s\n", re->node, flags, except ? except : "");
    char *channel = redis_script_channel(re->url.db, room_id);
    publish_frame(re, channel, redis_client_affinity(room_id, strlen(room_id)), header, f);
    free(channel);
    return local + remote_room_count(re, room_id);
}

static int r_publish_user(engine *e, const char *user_id, ws_frame *f) {
    redis_engine *re = R(e);
    int local = engine_publish_user(re->local, user_id, f);
    bool remote = remote_has_user(re, user_id);
    if (remote) {
        char *header = key_of("P%s\n%s\n", re->node, user_id);
        publish_frame(re, re->bus, REDIS_CLIENT_ANY, header, f);
        free(header);
    }
    return local == 0 || remote ? 0 : -1;
}

/* A connection this node does not hold may be on another node: the
 * management API says so (501) rather than "gone". One this node holds
 * but the local engine calls gone (closed by a DELETE) is gone. */
static int here_or_elsewhere(redis_engine *re, const char *conn_id, int rc) {
    if (rc != -1) return rc;
    pthread_mutex_lock(&re->conns_mu);
    bool here = strmap_get(&re->conns, conn_id) != NULL;
    pthread_mutex_unlock(&re->conns_mu);
    return here ? -1 : ENGINE_E_ELSEWHERE;
}

static int r_send_conn(engine *e, const char *conn_id, ws_frame *f, size_t max_queued) {
    return here_or_elsewhere(R(e), conn_id, engine_send_conn(R(e)->local, conn_id, f, max_queued));
}

static int r_close_conn(engine *e, const char *conn_id, uint16_t code, const char *reason) {
    return here_or_elsewhere(R(e), conn_id, engine_close_conn(R(e)->local, conn_id, code, reason));
}

static int r_call_owner(engine *e, const char *conn_id, engine_call_fn fn, void *arg) {
    return engine_call_owner(R(e)->local, conn_id, fn, arg);
}

/* ---- stored messages ---- */

/* An op's end, on its owner worker: as the store would have run it. */
static void complete(rworker *w, store_op *op) {
    if (w->inflight) w->inflight--;
    if (op->done) {
        op->ctx = w->srv->app;
        op->done(op);
    }
    store_op_free(op);
}

static void chat_replied(redis_client *c, const redis_chat_result *res, const char *err,
                         void *data) {
    store_op *op = data;
    rworker *w = op->ctx;
    uint64_t now = clock_mono_ns();
    op->t_batch = op->t_applied = op->t_committed = now;
    if (err) {
        /* Not stored, or not known to be: the sender gets "Failed to store
         * message", and its retry with the same clientMessageId is safe. */
        log_msg(LOG_ERROR, "store_error", "message %s of room %s: %s", op->message_id, op->room_id,
                err);
        op->status = 1;
    } else {
        op->seq = res->seq;
        op->duplicate = res->duplicate;
        if (res->duplicate) {
            snprintf(op->message_id, sizeof(op->message_id), "%.36s", res->message_id);
            op->timestamp = res->ts_ms / 1000;
            json_t *v = res->value_len
                            ? value_open(w->re, op->room_id, res->message_id,
                                         strlen(res->message_id), res->value, res->value_len)
                            : NULL;
            if (v) {
                free(op->message);
                op->message = xstrdup(json_string_value(json_object_get(v, "m")));
                json_decref(v);
            }
        }
    }
    complete(w, op);
}

static void submit_chat(rworker *w, store_op *op) {
    redis_engine *re = w->re;
    size_t vlen = 0;
    char *value = value_make(re, op, &vlen);
    if (!value) {
        op->status = 1;
        complete(w, op);
        return;
    }
    char sender[CRYPTO_INDEX_HEX_LEN + 1];
    if (re->keys)
        crypto_blind_index(re->keys, "redis.sender", op->user_id, strlen(op->user_id), sender);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "C%s\n", op->message_id);
    int64_t ms = now_ms();
    redis_chat chat = {
        .room = op->room_id,
        .sender = re->keys ? sender : op->user_id,
        .client_message_id = op->client_message_id,
        .idempotency_window_s = op->client_message_id ? re->cfg->idempotency_window_s : 0,
        .message_id = op->message_id,
        .ts_ms = op->timestamp * 1000,
        .value = value,
        .value_len = vlen,
        .cutoff_ms = re->cfg->message_ttl_days > 0 ? ms - re->cfg->message_ttl_days * 86400000 : 0,
        .db = re->url.db,
        .publish = true,
        .publish_prefix = prefix,
        .publish_prefix_len = strlen(prefix),
        .min_replicas = (int)re->cfg->redis_min_replicas,
    };
    op->ctx = w;
    op->t_submitted = clock_mono_ns();
    /* Failing fast still answers (REDIS_CLIENT_E_DOWN) on a later turn. */
    redis_script_chat(w->client, &chat, chat_replied, op);
    free(value);
}

static void history_replied(redis_client *c, const redis_history_result *res, const char *err,
                            void *data) {
    store_op *op = data;
    rworker *w = op->ctx;
    if (err) {
        log_msg(LOG_ERROR, "store_error", "cannot read room %s from Redis: %s", op->room_id, err);
        op->status = 1;
        complete(w, op);
        return;
    }
    json_t *rows = json_array();
    for (size_t i = 0; i < res->count; i++) {
        const redis_history_entry *h = &res->entries[i];
        json_t *v = value_open(w->re, op->room_id, h->message_id, h->message_id_len, h->value,
                               h->value_len);
        if (!v) {
            op->status = 1;
            break;
        }
        json_array_append_new(
            rows, chat_object(op->room_id, h->message_id, h->message_id_len, h->seq, v));
        json_decref(v);
    }
    if (op->status) json_decref(rows);
    else {
        op->messages = rows;
        op->has_more = res->has_more;
        op->last_seq = res->last_seq;
        op->oldest_seq = res->oldest_seq;
        if (op->after_seq >= 0 && !op->has_more && hold_resume(w, op)) return;
    }
    complete(w, op);
}

static void submit_history(rworker *w, store_op *op) {
    redis_engine *re = w->re;
    redis_history h = {
        .room = op->room_id,
        .after_seq = op->after_seq,
        .before_seq = op->before_seq,
        .limit = op->limit > 0 ? op->limit : 50,
        .max_bytes = op->max_bytes,
        .cutoff_ms =
            re->cfg->message_ttl_days > 0 ? now_ms() - re->cfg->message_ttl_days * 86400000 : 0,
    };
    op->ctx = w;
    redis_script_history(w->client, &h, history_replied, op);
}

static void run_submit(rworker *w, void *arg, bool dropped) {
    store_op *op = arg;
    if (dropped || !w->client) {
        op->done = NULL; /* the owner is gone */
        store_op_free(op);
        return;
    }
    w->inflight++;
    if (op->kind == STORE_OP_CHAT) {
        if (!atomic_load(&w->up))
            run_held(w, dup_one(op), 1, "redis client not up"); /* see hold_chat */
        else if (!hold_chat(w, op)) submit_chat(w, op);
    } else {
        submit_history(w, op);
    }
}

static int r_submit(engine *e, store_op *op, bool bounded) {
    redis_engine *re = R(e);
    /* A room's join is recorded by the node's SQLite store, as alone. */
    if (op->kind == STORE_OP_ROOM_JOIN) return engine_submit(re->local, op, bounded);
    int owner = conn_id_worker(op->conn_id);
    if (owner < 0 || (size_t)owner >= re->nworkers) owner = 0;
    rworker *w = &re->w[owner];
    if (bounded && w->srv == server_current() && w->inflight >= MAX_INFLIGHT) return -1;
    on_worker(w, run_submit, op);
    return 0;
}

/* ---- presence and lookups ---- */

static size_t r_room_count(engine *e, const char *room_id, engine_room *pinned) {
    redis_engine *re = R(e);
    return engine_room_count(re->local, room_id, pinned) + others_at_least(re, room_id);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const directory_room_entry *)a)->id, ((const directory_room_entry *)b)->id);
}

static size_t r_rooms(engine *e, directory_room_entry **out) {
    redis_engine *re = R(e);
    directory_room_entry *local;
    size_t n = engine_rooms(re->local, &local);
    pthread_mutex_lock(&re->mu);
    size_t cap = n + re->rooms.count;
    directory_room_entry *all = xmalloc((cap ? cap : 1) * sizeof(*all));
    if (n) memcpy(all, local, n * sizeof(*all)); /* local is NULL when n is 0 */
    free(local);
    size_t m = n, it = 0;
    const char *k;
    void *v;
    while (strmap_next(&re->rooms, &it, &k, &v)) {
        remote_room *r = v;
        int64_t c = 0;
        for (size_t i = 0; i < r->n; i++) c += r->v[i].count;
        if (c <= 0) continue;
        /* In this node's listing too (sorted): add the counts. */
        directory_room_entry key = {.id = (char *)k};
        directory_room_entry *hit = n ? bsearch(&key, all, n, sizeof(*all), cmp_entry) : NULL;
        if (hit) hit->count += (size_t)c;
        else all[m++] = (directory_room_entry){xstrdup(k), (size_t)c};
    }
    pthread_mutex_unlock(&re->mu);
    qsort(all, m, sizeof(*all), cmp_entry);
    *out = all;
    return m;
}

static int r_conn_info(engine *e, const char *conn_id, engine_conn_info *out) {
    return here_or_elsewhere(R(e), conn_id, engine_conn_lookup(R(e)->local, conn_id, out));
}

static void r_conn_each(engine *e, void (*fn)(const directory_conn *rec, void *ctx), void *ctx) {
    engine_conn_each(R(e)->local, fn, ctx);
}

static size_t r_conn_total(engine *e) { return engine_conn_total(R(e)->local); }
static size_t r_room_total(engine *e) { return engine_room_total(R(e)->local); }

static int r_health(engine *e, char *why, size_t len) {
    redis_engine *re = R(e);
    for (size_t i = 0; i < re->nworkers; i++)
        if (!atomic_load(&re->w[i].up)) {
            char name[REDIS_URL_MAX_HOST + 32];
            snprintf(why, len, "redis %s unreachable (worker %zu)",
                     redis_url_name(&re->url, name, sizeof(name)), i);
            return -1;
        }
    return 0;
}

static void r_free(engine *e) {
    redis_engine *re = R(e);
    for (size_t i = 0; i < re->nworkers; i++) {
        size_t it = 0;
        void *v;
        while (strmap_next(&re->w[i].rooms, &it, NULL, &v)) {
            wroom *r = v;
            for (size_t j = 0; j < r->nwaiting; j++) store_op_free(r->waiting[j]);
            for (size_t j = 0; j < r->nheld; j++) store_op_free(r->held[j]);
            free(r->waiting);
            free(r->held);
            free(r);
        }
        strmap_free(&re->w[i].rooms);
        it = 0;
        while (strmap_next(&re->w[i].members, &it, NULL, &v)) {
            wmember *m = v;
            free(m->room_id);
            free(m);
        }
        strmap_free(&re->w[i].members);
        strmap_free(&re->w[i].users);
        free(re->w[i].room_prefix);
    }
    size_t it = 0;
    void *v;
    while (strmap_next(&re->rooms, &it, NULL, &v)) remote_room_free(v);
    strmap_free(&re->rooms);
    strmap_free(&re->users);
    pthread_mutex_destroy(&re->mu);
    strmap_free(&re->conns);
    pthread_mutex_destroy(&re->conns_mu);
    engine_free(re->local);
    free(re);
}

static const engine_ops redis_ops = {
    .name = "redis",
    .free = r_free,
    .conn_opened = r_conn_opened,
    .conn_closed = r_conn_closed,
    .room_joined = r_room_joined,
    .room_left = r_room_left,
    .publish_room = r_publish_room,
    .publish_user = r_publish_user,
    .send_conn = r_send_conn,
    .close_conn = r_close_conn,
    .call_owner = r_call_owner,
    .submit = r_submit,
    .room_count = r_room_count,
    .rooms = r_rooms,
    .conn_info = r_conn_info,
    .conn_each = r_conn_each,
    .conn_total = r_conn_total,
    .room_total = r_room_total,
    .health = r_health,
};

engine *engine_redis_new(size_t nworkers, const engine_deliver *d, store *st, const config *cfg,
                         crypto_keyring *keys, char *err, size_t errlen) {
    assert(nworkers >= 1 && nworkers <= DIRECTORY_MAX_WORKERS);
    redis_url url;
    if (redis_url_parse(cfg->redis_url, strlen(cfg->redis_url), &url, err, errlen) != 0)
        return NULL;
    redis_engine *re = xcalloc(1, sizeof(*re));
    re->base.ops = &redis_ops;
    re->local = engine_local_new(nworkers, d, st);
    re->d = d;
    re->cfg = cfg;
    re->keys = keys;
    re->url = url;
    re->nworkers = nworkers;
    random_hex(re->node, 8);
    snprintf(re->bus, sizeof(re->bus), "wsgate:%d:bus", url.db);
    pthread_mutex_init(&re->mu, NULL);
    pthread_mutex_init(&re->conns_mu, NULL);
    strmap_init(&re->conns);
    strmap_init(&re->rooms);
    strmap_init(&re->users);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "wsgate:%d:room:", url.db);
    for (size_t i = 0; i < nworkers; i++) {
        rworker *w = &re->w[i];
        w->re = re;
        w->index = (int)i;
        snprintf(w->field, sizeof(w->field), "%s.%zu", re->node, i);
        strmap_init(&w->rooms);
        strmap_init(&w->users);
        strmap_init(&w->members);
        w->room_prefix = xstrdup(prefix);
        w->room_prefix_len = strlen(prefix);
    }
    char name[REDIS_URL_MAX_HOST + 32];
    log_msg(LOG_INFO, "engine_redis", "node %s on redis %s", re->node,
            redis_url_name(&url, name, sizeof(name)));
    return &re->base;
}

void engine_redis_attach(engine *e, int index, server *srv) {
    redis_engine *re = R(e);
    assert(index >= 0 && (size_t)index < re->nworkers);
    engine_local_attach(re->local, index, srv);
    re->w[index].srv = srv;
}

void engine_redis_start(engine *e, int index) {
    redis_engine *re = R(e);
    assert(index >= 0 && (size_t)index < re->nworkers);
    rworker *w = &re->w[index];
    assert(w->srv && w->srv == server_current());
    redis_client_options o = {.url = re->url,
                              .preload_scripts = redis_script_sources(),
                              .on_message = on_message,
                              .on_state = on_state,
                              .data = w};
    w->client = redis_client_new(w->srv->loop, &o);
    if (index == 0) redis_client_subscribe(w->client, re->bus);
    uv_timer_init(w->srv->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_timer, HEARTBEAT_MS / 4, HEARTBEAT_MS / 4);
    w->timer_open = true;
}
