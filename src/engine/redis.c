/* The Redis engine (engine = "redis", docs/redis.md): several wsgate nodes
 * on one Redis behave as one. It wraps a local engine, which keeps serving
 * this node's own workers exactly as it does alone, and adds Redis:
 *
 * - One redis_client per worker loop and Redis server (its pool and its
 *   pub/sub connection), used only on that worker's thread. With
 *   redis_urls, rooms and users are sharded over the servers by the ring
 *   (redis_ring.h); node-level keys and channels live on the first, the
 *   home Redis (home()). A worker subscribes a room's channel while it has
 *   members there, and a user's while it has connections of the user, and
 *   delivers what arrives straight to its own hub: no cross-thread
 *   hand-off on the message path. Work asked from another thread is
 *   posted to the right worker's inbox.
 * - Room events (presence, typing, POST @rooms): delivered at once to the
 *   node's own members through the local engine, and PUBLISHed with the
 *   node's id, which the node's own workers skip.
 * - Chats: the chat script sequences, keeps and PUBLISHes each one; every
 *   node, the sender's included, delivers it from pub/sub, so every member
 *   sees one order. The completion runs on the sender's worker when the
 *   script answers.
 * - Private messages: PUBLISHed once on the user's channel.
 * - Counts: each worker writes its own rooms and users (member counts) to
 *   two hashes on each server (the rooms and users living there) and
 *   announces room changes on the room's channel; worker 0 reads every
 *   live worker's hashes once a second.
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
#include "engine/redis_counts.h"
#include "engine/redis_forward.h"
#include "engine/redis_ring.h"
#include "engine/redis_script.h"
#include "engine/redis.h"
#include "engine/redis_metrics.h"
#include "engine/redis_nodes.h"
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
typedef struct rworker rworker;

/* One worker's client of one Redis server of redis_urls (a shard; with
 * redis_url alone there is one). Shard 0, the first listed, is the home
 * Redis: it also holds the node-level keys and channels. */
typedef struct wshard {
    rworker *w;
    size_t index;
    redis_client *client;
    atomic_bool up;
    char room_prefix[40]; /* "wsgate:<db>:room:" */
    char user_prefix[40]; /* "wsgate:<db>:user:" */
    size_t room_prefix_len, user_prefix_len;
} wshard;

/* One worker's share: touched on that worker's thread only (the atomics
 * excepted). */
struct rworker {
    redis_engine *re;
    int index;
    server *srv;
    redis_client *client; /* the home Redis's client: shards[0].client */
    wshard *shards;       /* one per server of redis_urls */
    uv_timer_t timer;
    bool timer_open, closing, said_goodbye;
    unsigned ticks;
    char field[FIELD_LEN];
    strmap rooms;   /* room id -> wroom*: this worker's rooms */
    strmap users;   /* user id -> (uintptr_t) this worker's connections of the user */
    strmap members; /* connection id -> wmember: this worker's connections */
    size_t inflight;
    redis_fwd *fwd; /* [forward] @connections across nodes (redis_forward.h) */
    /* /metrics: counted on this thread, copied to `snap` (under
     * re->stats_mu) by stats_snapshot. */
    uint64_t pub_chats, pub_events, pub_private;
    redis_engine_stats snap;
    unsigned fill_gens; /* [rjoin] the last fill_gen given */
    /* [roomsq] room_list asks: one count read in flight per worker; the
     * asks made meanwhile wait for the next (see r_rooms_ask). */
    bool rooms_reading;
    struct rooms_ask *rooms_next, *rooms_next_tail;
};

/* One of this worker's connections, as a surviving node needs it to tell
 * its room the connection left should this node die (its thread only). */
typedef struct wmember {
    const char *user_id, *username; /* borrowed: see engine_conn_opened */
    char *room_id;                  /* malloc'd, NULL: in no room */
    int64_t joined_us;              /* [presence] when it joined room_id (wall clock) */
} wmember;

/* A room this worker has members in (its thread only). */
typedef struct wroom {
    uintptr_t count; /* this worker's members */
    /* The room's counter when this worker's subscription was seen to be
     * active (its own marker came back on the channel; -1: not yet): every
     * chat past it reaches this worker, in seq order. */
    int64_t base;
    int64_t seen;         /* the highest chat seq delivered here from the channel */
    int64_t last_join_us; /* [presence] the newest join here (wall clock, µs) */
    /* Resumes whose last page is read but not yet answered: held until
     * every chat the page covers has passed here (see hold_resume). */
    store_op **waiting;
    size_t nwaiting, capwaiting;
    /* Chats of this worker's members held until base >= 0 (hold_chat). */
    store_op **held;
    size_t nheld, capheld;
    /* [rjoin] Joins made before this worker's subscription was known
     * active, and the live chats held meanwhile (see "joins before the
     * subscription" below). */
    bool filling, reading;
    unsigned fill_gen;      /* names this fill to its replies */
    uint64_t fill_since_ns; /* when it began (a fill never lasts past FILL_MAX_MS) */
    size_t jwait;           /* join counters still to come */
    struct fill_join *pending;
    size_t npending, cappending;
    struct fill_live *live;
    size_t nlive, caplive;
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
    redis_url url;    /* the home Redis: urls[0] */
    redis_url *urls;  /* the shards, as listed */
    size_t nshards;   /* 1 with redis_url */
    redis_ring *ring; /* rooms and users -> shard; NULL with one shard */
    size_t nworkers;
    rworker w[DIRECTORY_MAX_WORKERS];
    char node[17]; /* this process's random id */
    char bus[96];  /* node-level channel: private messages */
    /* Other workers' counts, guarded by mu. */
    pthread_mutex_t mu;
    strmap rooms;    /* room id -> remote_room* */
    strmap users;    /* user id -> (uintptr_t) connections on other nodes */
    bool refreshing; /* worker 0's read of every worker's hashes is in flight */
    /* Every live node, from that read (engine_redis_nodes). */
    redis_nodes nodes;
    /* This node's live connection ids (open to close), so that an id the
     * local engine calls gone is told apart from one that is not here. */
    pthread_mutex_t conns_mu;
    strmap conns;
    pthread_mutex_t stats_mu; /* guards every worker's snap */
};

static redis_engine *R(engine *e) { return (redis_engine *)e; }

static int64_t now_ms(void) { return clock_wall_ms(); }

/* Wall clock in µs: presence ordering across nodes (NTP, as the join-gap
 * fill) needs finer than ms on one machine, where a join can follow an
 * event within the same millisecond. */
static int64_t clock_wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- shards ----
 *
 * A room's keys, script runs, channel, marker and count announcements
 * live on the room's server; a user's channel and counts on the user's;
 * the node-level keys and channels (heartbeats, the live-worker set, the
 * members records, the bus) on the home Redis, the first of redis_urls. */

static size_t shard_of(const redis_engine *re, const char *key) {
    return re->ring ? redis_ring_shard(re->ring, key, strlen(key)) : 0;
}

static wshard *shard_for(rworker *w, const char *key) { return &w->shards[shard_of(w->re, key)]; }

/* The worker's client of the home Redis (node-level keys and channels);
 * NULL before its loop starts and once it closes. */
static redis_client *home(rworker *w) { return w->client; }

/* [forward] The home client for @connections forwarding: NULL once the
 * worker closes, so no request is sent that could not be answered. */
static redis_client *home_client(rworker *w) { return w->closing ? NULL : home(w); }

static char *room_channel(const wshard *s, const char *room_id) {
    return redis_script_channel(s->w->re->urls[s->index].db, room_id);
}

/* "wsgate:<db>:user:<userId>", a user's private messages (malloc'd).
 * Pub/sub ignores the database number, so the channel carries it. */
static char *user_channel_name(int db, const char *user_id) {
    size_t n = strlen(user_id) + 40;
    char *ch = xmalloc(n);
    snprintf(ch, n, "wsgate:%d:user:%s", db, user_id);
    return ch;
}

static char *user_channel(const wshard *s, const char *user_id) {
    return user_channel_name(s->w->re->urls[s->index].db, user_id);
}

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

static void cmd_to(const wshard *s, uint32_t affinity, int argc, const char **argv,
                   const size_t *lens) {
    if (s->client && !s->w->closing)
        redis_client_command_argv(s->client, affinity, ignore_reply, NULL, argc, argv, lens);
}

/* On the home Redis. */
static void cmd(rworker *w, uint32_t affinity, int argc, const char **argv, const size_t *lens) {
    cmd_to(&w->shards[0], affinity, argc, argv, lens);
}

/* Write this worker's count of room_id (0: remove it) and announce it on
 * the room's channel, on the room's connection (in order). */
static void write_room_count(rworker *w, const char *room_id, uintptr_t n) {
    wshard *s = shard_for(w, room_id);
    char *key = worker_rooms_key(w);
    char num[24];
    snprintf(num, sizeof(num), "%" PRIuPTR, n);
    uint32_t aff = redis_client_affinity(room_id, strlen(room_id));
    if (n) cmd_to(s, aff, 4, (const char *[]){"HSET", key, room_id, num}, NULL);
    else cmd_to(s, aff, 3, (const char *[]){"HDEL", key, room_id}, NULL);
    char *channel = room_channel(s, room_id);
    char msg[FIELD_LEN + 32];
    snprintf(msg, sizeof(msg), "M%s\n%s", w->field, num);
    cmd_to(s, aff, 3, (const char *[]){"PUBLISH", channel, msg}, NULL);
    free(channel);
    free(key);
}

/* On the user's server, which also carries the user's channel. */
static void write_user_count(rworker *w, const char *user_id, uintptr_t n) {
    char *key = worker_users_key(w);
    char num[24];
    snprintf(num, sizeof(num), "%" PRIuPTR, n);
    wshard *s = shard_for(w, user_id);
    if (n) cmd_to(s, REDIS_CLIENT_ANY, 4, (const char *[]){"HSET", key, user_id, num}, NULL);
    else cmd_to(s, REDIS_CLIENT_ANY, 3, (const char *[]){"HDEL", key, user_id}, NULL);
    free(key);
}

/* Publish "S<field>\n<room counter>" on the room's channel, atomically
 * (one script): when it comes back, this worker's subscription is active
 * and every chat with a larger seq will reach it. */
static const char MARKER_LUA[] = "return redis.call('PUBLISH', KEYS[2], 'S' .. ARGV[1] .. '\\n' .. "
                                 "(redis.call('GET', KEYS[1]) or '0'))";

static void send_marker(rworker *w, const char *room_id) {
    wshard *s = shard_for(w, room_id);
    char *seq = redis_script_seq_key(room_id);
    char *channel = room_channel(s, room_id);
    cmd_to(s, redis_client_affinity(room_id, strlen(room_id)), 6,
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

#define ALL_SHARDS SIZE_MAX
static void resync(rworker *w, size_t shard);

/* ZADD answers 1 when the field was not there: this worker was taken for
 * dead (silent past redis_node_timeout_s) and its records removed, or
 * the home Redis restarted: write them again, on every shard. */
static void on_zadd(redis_client *c, const redisReply *r, const char *err, void *data) {
    rworker *w = data;
    /* A stopping worker writes nothing back: its goodbye deletes it all. */
    if (!err && r && r->type == REDIS_REPLY_INTEGER && r->integer == 1 && !w->closing &&
        !w->srv->shutting_down)
        resync(w, ALL_SHARDS);
}

/* Say this worker is alive (home), and keep its hashes (every shard)
 * while it is. */
static void heartbeat(rworker *w) {
    char score[24], ttl[24];
    snprintf(score, sizeof(score), "%" PRId64, now_ms());
    snprintf(ttl, sizeof(ttl), "%" PRId64, (int64_t)w->re->cfg->redis_node_timeout_s * 2000);
    char *rk = worker_rooms_key(w), *uk = worker_users_key(w), *mk = worker_members_key(w->field);
    for (size_t i = 0; i < w->re->nshards; i++) {
        cmd_to(&w->shards[i], REDIS_CLIENT_ANY, 3, (const char *[]){"PEXPIRE", rk, ttl}, NULL);
        cmd_to(&w->shards[i], REDIS_CLIENT_ANY, 3, (const char *[]){"PEXPIRE", uk, ttl}, NULL);
    }
    cmd(w, REDIS_CLIENT_ANY, 3, (const char *[]){"PEXPIRE", mk, ttl}, NULL);
    redis_fwd_heartbeat(w->fwd, home_client(w), (int64_t)w->re->cfg->redis_node_timeout_s * 2000);
    if (home(w) && !w->closing)
        redis_client_command_argv(home(w), REDIS_CLIENT_ANY, on_zadd, w, 4,
                                  (const char *[]){"ZADD", WORKERS_KEY, score, w->field}, NULL);
    free(rk);
    free(uk);
    free(mk);
}

/* After shard `shard` (re)connected (ALL_SHARDS: after this worker was
 * taken for dead): that Redis may have lost or never had this worker's
 * counts (a restart, writes that failed while it was down): write again
 * what lives there. */
static void resync(rworker *w, size_t shard) {
    redis_engine *re = w->re;
    char *rk = worker_rooms_key(w), *uk = worker_users_key(w), *mk = worker_members_key(w->field);
    for (size_t i = 0; i < re->nshards; i++)
        if (shard == ALL_SHARDS || shard == i)
            cmd_to(&w->shards[i], REDIS_CLIENT_ANY, 3, (const char *[]){"DEL", rk, uk}, NULL);
    bool home_too = shard == ALL_SHARDS || shard == 0;
    if (home_too) cmd(w, REDIS_CLIENT_ANY, 2, (const char *[]){"DEL", mk}, NULL);
    free(rk);
    free(uk);
    free(mk);
    size_t it = 0;
    const char *k;
    void *v;
    while (home_too && strmap_next(&w->members, &it, &k, &v)) write_member(w, k, v);
    if (home_too) redis_fwd_resync(w->fwd, home_client(w));
    it = 0;
    while (strmap_next(&w->rooms, &it, &k, &v)) {
        if (shard != ALL_SHARDS && shard_of(re, k) != shard) continue;
        wroom *r = v;
        r->base = -1; /* chats were lost while down: know the subscription again */
        write_room_count(w, k, r->count);
        send_marker(w, k);
    }
    it = 0;
    while (strmap_next(&w->users, &it, &k, &v))
        if (shard == ALL_SHARDS || shard_of(re, k) == shard) write_user_count(w, k, (uintptr_t)v);
    if (home_too) heartbeat(w);
}

/* ---- other workers' counts ---- */

static void remote_room_free(void *p) {
    remote_room *r = p;
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

/* Worker 0's read of every live worker's hashes: ZRANGEBYSCORE on the
 * home Redis, then two HGETALL per other node's worker on every shard;
 * the new maps replace the old ones when the last reply is in. */
typedef struct refresh {
    redis_engine *re;
    rworker *w;
    int64_t sent_ms;
    size_t pending;
    bool failed;        /* the live set could not be read: keep everything */
    bool *shard_failed; /* a shard's hashes could not be read: keep its part */
    strmap rooms;       /* room -> remote_room* */
    strmap users;       /* user -> count */
    redis_nodes nodes;
} refresh;

/* Each node's rooms: those where one of its workers has members (a room
 * counted once per node). */
static void count_node_rooms(refresh *rf) {
    size_t it = 0;
    void *v;
    while (strmap_next(&rf->rooms, &it, NULL, &v)) {
        remote_room *r = v;
        for (size_t i = 0; i < r->n; i++) {
            const char *dot = strrchr(r->v[i].field, '.');
            size_t nl = dot ? (size_t)(dot - r->v[i].field) : 0;
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++)
                seen = strncmp(r->v[j].field, r->v[i].field, nl + 1) == 0;
            redis_node_info *ni =
                seen ? NULL
                     : redis_nodes_of_field(&rf->nodes, r->v[i].field, strlen(r->v[i].field));
            if (ni) ni->rooms++;
        }
    }
}

/* What rf could not read from shard s (down): the rooms and users that
 * live there keep their previous counts rather than vanish. mu held. */
static void refresh_keep_shard(refresh *rf, size_t s) {
    redis_engine *re = rf->re;
    size_t it = 0;
    const char *k;
    void *v;
    while (strmap_next(&rf->rooms, &it, &k, &v))
        if (shard_of(re, k) == s) {
            remote_room_free(strmap_remove(&rf->rooms, k));
            it = 0; /* the map changed under the iteration */
        }
    it = 0;
    while (strmap_next(&re->rooms, &it, &k, &v)) {
        remote_room *old = v;
        if (shard_of(re, k) != s) continue;
        for (size_t i = 0; i < old->n; i++)
            remote_set(&rf->rooms, k, old->v[i].field, old->v[i].count, old->v[i].announced_ms);
    }
    it = 0;
    while (strmap_next(&re->users, &it, &k, &v))
        if (shard_of(re, k) == s) strmap_put(&rf->users, k, v, NULL);
}

static void refresh_finish(refresh *rf) {
    redis_engine *re = rf->re;
    pthread_mutex_lock(&re->mu);
    if (!rf->failed) {
        for (size_t s = 0; s < re->nshards; s++)
            if (rf->shard_failed[s]) refresh_keep_shard(rf, s);
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
        count_node_rooms(rf);
        strmap swap = re->rooms;
        re->rooms = rf->rooms;
        rf->rooms = swap;
        swap = re->users;
        re->users = rf->users;
        rf->users = swap;
        redis_nodes ns = re->nodes;
        re->nodes = rf->nodes;
        rf->nodes = ns;
    }
    re->refreshing = false;
    pthread_mutex_unlock(&re->mu);
    strmap_free_values(&rf->rooms, remote_room_free);
    strmap_free(&rf->users);
    free(rf->shard_failed);
    redis_nodes_free(&rf->nodes);
    free(rf);
}

typedef struct refresh_read {
    refresh *rf;
    char field[FIELD_LEN];
    bool users;
    size_t shard;
} refresh_read;

static void on_hash(redis_client *c, const redisReply *r, const char *err, void *data) {
    refresh_read *rr = data;
    refresh *rf = rr->rf;
    if (err || !r || r->type != REDIS_REPLY_ARRAY) rf->shard_failed[rr->shard] = true;
    else
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const redisReply *k = r->element[i], *v = r->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
            int64_t n = strtoll(v->str, NULL, 10);
            if (n <= 0) continue;
            if (rr->users) {
                uintptr_t old = (uintptr_t)strmap_get(&rf->users, k->str);
                strmap_put(&rf->users, k->str, (void *)(old + (uintptr_t)n), NULL);
                redis_node_info *ni =
                    redis_nodes_of_field(&rf->nodes, rr->field, strlen(rr->field));
                if (ni) ni->connections += (uint64_t)n;
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
    for (size_t i = 0; i + 1 < r->elements; i += 2) { /* field, score (WITHSCORES) */
        const redisReply *f = r->element[i], *score = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || f->len >= FIELD_LEN) continue;
        redis_node_info *ni = redis_nodes_of_field(&rf->nodes, f->str, f->len);
        if (ni) {
            ni->workers++;
            int64_t hb = score->type == REDIS_REPLY_STRING ? strtoll(score->str, NULL, 10) : 0;
            if (hb > ni->heartbeat_ms) ni->heartbeat_ms = hb;
        }
        if (field_is_ours(re, f->str, f->len)) continue;
        for (size_t s = 0; s < re->nshards; s++)
            for (int u = 0; u < 2; u++) {
                refresh_read *rr = xcalloc(1, sizeof(*rr));
                rr->rf = rf;
                rr->users = u;
                rr->shard = s;
                memcpy(rr->field, f->str, f->len);
                char *key =
                    key_of(u ? "wsgate:w:%s:users%s" : "wsgate:w:%s:rooms%s", rr->field, NULL);
                rf->pending++;
                redis_client *sc = rf->w->shards[s].client;
                if (!sc || rf->w->closing) on_hash(c, NULL, "redis: closing", rr);
                else
                    redis_client_command_argv(sc, REDIS_CLIENT_ANY, on_hash, rr, 2,
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
    rf->w = w;
    rf->shard_failed = xcalloc(re->nshards, sizeof(*rf->shard_failed));
    rf->sent_ms = now_ms();
    strmap_init(&rf->rooms);
    strmap_init(&rf->users);
    char min[24];
    snprintf(min, sizeof(min), "%" PRId64, rf->sent_ms - re->cfg->redis_node_timeout_s * 1000);
    redis_client_command_argv(
        home(w), REDIS_CLIENT_ANY, on_workers, rf, 5,
        (const char *[]){"ZRANGEBYSCORE", WORKERS_KEY, min, "+inf", "WITHSCORES"}, NULL);
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
    for (size_t i = 0; i < w->re->nshards; i++)
        cmd_to(&w->shards[i], REDIS_CLIENT_ANY, 3, (const char *[]){"DEL", rk, uk}, NULL);
    cmd(w, REDIS_CLIENT_ANY, 2, (const char *[]){"DEL", mk}, NULL);
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
    redis_client_command_argv(home(w), REDIS_CLIENT_ANY, on_dead, w, 4,
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
            /* Most often a node started without the others' key file. */
            log_msg(LOG_ERROR, "store_error",
                    "cannot read a message of room %s from Redis: %s (every node must use the "
                    "same key file: set kms_key_file to the first node's keys.json)",
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
    if (r->filling) return false; /* held live chats have not passed yet */
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
    if (!r || r->base >= 0 || !atomic_load(&shard_for(w, op->room_id)->up)) return false;
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

/* [rjoin] joins before the subscription (below). */
static void fill_step(rworker *w, const char *room, wroom *r);
static bool fill_overdue(rworker *w, uint64_t now);

/* Timer: answer what waited too long (a chat lost in an outage, a
 * subscription that came after the chats it waits for and no marker). */
static void release_overdue(rworker *w) {
    uint64_t now = clock_mono_ns();
    if (fill_overdue(w, now)) return; /* [rjoin] the map may have changed */
    size_t it = 0;
    void *v;
    const char *k;
    while (strmap_next(&w->rooms, &it, &k, &v)) {
        wroom *r = v;
        bool down = !atomic_load(&shard_for(w, k)->up);
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
    fill_step(w, room, r); /* [rjoin] may end the fill: r is looked up again */
    r = strmap_get(&w->rooms, room);
    if (r) release_waiting(w, r, INT64_MIN);
    run_held(w, held, nheld, NULL);
}

/* ---- what arrives from Redis ---- */

static void fill_hold_live(wroom *r, const char *p, size_t n);

static void deliver_chat(rworker *w, const char *room, const char *p, size_t n) {
    /* "C<messageId>\n<seq>\n<value>" */
    const char *nl = memchr(p, '\n', n);
    if (!nl) return;
    wroom *fr = strmap_get(&w->rooms, room);
    if (fr && fr->filling) {
        fill_hold_live(fr, p, n); /* after the gap of the joins made meanwhile */
        return;
    }
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

/* ---- [rjoin] joins before the subscription ----
 *
 * A worker hears a room's chats only once its SUBSCRIBE is active, which
 * it learns when its marker comes back (base >= 0), a round trip or more
 * after the first join: a chat another node published in between would
 * never reach a member who joined then (its welcome already went out). So
 * each join made while base < 0 asks the room's server for the room's
 * counter J as the joiner saw it (FILL_JOIN_LUA, on the room's command
 * connection, sent in the welcome's loop turn), and the room is
 * *filling*: live chats arriving meanwhile are held (they form one
 * contiguous run, the subscription being active). When the marker and
 * every J are in, the chats (J, first held - 1] (or (J, base] when none is
 * held) are read from the Stream and sent to each such member alone, in
 * order; then the held chats go to the room as if they arrived then. Each
 * member so gets every chat sequenced after its J once, in seq order. A
 * member that resumes (sinceSeq) gets its gap from its replay instead. A
 * fill never lasts past FILL_MAX_MS (Redis down): its members then get
 * the held chats only, as before. */

#define FILL_MAX_MS    3000
#define FILL_PAGE      500
#define FILL_MAX_BYTES (1024 * 1024)
/* A chat received (by its node's clock, in ms) at or after the join's
 * own clock's ms counts as after the join. Nodes on several machines need
 * their clocks in step (NTP): a skew of d ms can add (a clock behind) or
 * lose (ahead) the chats of d ms around a join made before the worker's
 * subscription is active. */
#define FILL_CLOCK_SLACK_MS 0
/* How many of the newest Stream entries the join's script looks at. */
#define FILL_LOOKBACK "1000"

/* The room's counter at a join, as the joiner saw it: its welcome left
 * before any command could reach Redis, so the counter Redis has when
 * this runs may already hold chats sent after the welcome. Those are
 * told apart by their time (the Stream's ts: when their node received
 * them, in ms): the answer is the seq before the oldest of the newest
 * FILL_LOOKBACK entries received at or after ARGV[1]. KEYS: the room's
 * counter, its Stream. */
static const char FILL_JOIN_LUA[] =
    "local j = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local e = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])\n"
    "for i = 1, #e do\n"
    "  local f, ts = e[i][2], 0\n"
    "  for k = 1, #f, 2 do if f[k] == 'ts' then ts = tonumber(f[k + 1]) end end\n"
    "  if ts < tonumber(ARGV[1]) then break end\n"
    "  j = tonumber(string.match(e[i][1], '^(%d+)')) - 1\n"
    "end\n"
    "return j\n";

typedef struct fill_join {
    char conn_id[CONN_ID_LEN + 1];
    int64_t j; /* the room's counter at the join; -1: not read yet */
} fill_join;

typedef struct fill_live {
    int64_t seq;
    char *p; /* the channel message, malloc'd */
    size_t n;
} fill_live;

/* What a reply of a fill needs to find its room again (which may be gone,
 * or filling again under another generation). */
typedef struct fill_ref {
    rworker *w;
    unsigned gen;
    int64_t from, to; /* a gap read: the seqs it covers, (from, to] */
    char conn_id[CONN_ID_LEN + 1];
    char room[];
} fill_ref;

static fill_ref *fill_ref_new(rworker *w, const wroom *r, const char *room, const char *conn_id) {
    size_t len = strlen(room);
    fill_ref *f = xcalloc(1, sizeof(*f) + len + 1);
    f->w = w;
    f->gen = r->fill_gen;
    memcpy(f->room, room, len + 1);
    if (conn_id) snprintf(f->conn_id, sizeof(f->conn_id), "%s", conn_id);
    return f;
}

/* The room of ref if it is still in the same fill, else NULL. */
static wroom *fill_room(const fill_ref *f) {
    wroom *r = strmap_get(&f->w->rooms, f->room);
    return r && r->filling && r->fill_gen == f->gen ? r : NULL;
}

static void fill_hold_live(wroom *r, const char *p, size_t n) {
    const char *nl = memchr(p, '\n', n);
    if (r->nlive == r->caplive) {
        r->caplive = r->caplive ? r->caplive * 2 : 8;
        r->live = xrealloc(r->live, r->caplive * sizeof(*r->live));
    }
    fill_live *l = &r->live[r->nlive++];
    l->seq = nl ? strtoll(nl + 1, NULL, 10) : 0;
    l->p = xmalloc(n);
    memcpy(l->p, p, n);
    l->n = n;
}

/* Forget conn_id's pending join in room (it left, closed or resumes). */
static void fill_forget(rworker *w, const char *room, const char *conn_id) {
    wroom *r = room ? strmap_get(&w->rooms, room) : NULL;
    for (size_t i = 0; r && i < r->npending; i++)
        if (strcmp(r->pending[i].conn_id, conn_id) == 0) {
            r->pending[i] = r->pending[--r->npending];
            return;
        }
}

/* Free what a room's fill holds (the room goes). */
static void fill_free(wroom *r) {
    for (size_t i = 0; i < r->nlive; i++) free(r->live[i].p);
    free(r->live);
    free(r->pending);
}

/* End the fill of room: the held chats go to the room, in order, then the
 * resumes waiting for them are answered. Deliveries may change w->rooms:
 * r is looked up again. */
static void fill_finish(rworker *w, const char *room, wroom *r) {
    fill_live *live = r->live;
    size_t nlive = r->nlive;
    r->live = NULL;
    r->nlive = r->caplive = 0;
    r->npending = 0;
    r->filling = r->reading = false;
    r->jwait = 0;
    char *name = xstrdup(room); /* room may be the map's key, gone with r */
    for (size_t i = 0; i < nlive; i++) {
        deliver_chat(w, name, live[i].p, live[i].n);
        free(live[i].p);
    }
    free(live);
    r = strmap_get(&w->rooms, name);
    if (r && r->nwaiting) release_waiting(w, r, INT64_MIN);
    free(name);
}

static void fill_gap_replied(redis_client *c, const redis_history_result *res, const char *err,
                             void *data) {
    fill_ref *f = data;
    rworker *w = f->w;
    wroom *r = fill_room(f);
    if (!r) {
        free(f);
        return;
    }
    r->reading = false;
    if (err) {
        log_msg(LOG_ERROR, "store_error", "cannot read room %s from Redis: %s", f->room, err);
        r->npending = 0; /* they get the held chats, as before this fill existed */
        fill_finish(w, f->room, r);
        free(f);
        return;
    }
    int64_t last = -1;
    for (size_t i = 0; i < res->count && res->entries[i].seq <= f->to; i++) {
        const redis_history_entry *h = &res->entries[i];
        last = h->seq;
        json_t *v =
            value_open(w->re, f->room, h->message_id, h->message_id_len, h->value, h->value_len);
        if (!v) continue;
        store_op op = {.room_id = f->room,
                       .user_id = (char *)json_string_value(json_object_get(v, "s")),
                       .username = (char *)json_string_value(json_object_get(v, "n")),
                       .message = (char *)json_string_value(json_object_get(v, "m")),
                       .timestamp = json_integer_value(json_object_get(v, "t")),
                       .seq = h->seq};
        memcpy(op.message_id, h->message_id,
               h->message_id_len < sizeof(op.message_id) ? h->message_id_len
                                                         : sizeof(op.message_id) - 1);
        ws_frame *fr = event_chat_frame(&op);
        /* Sending to a connection never changes w->rooms here: a failed
         * write closes it later, on the loop. */
        for (size_t k = 0; k < r->npending; k++)
            if (r->pending[k].j >= f->from && r->pending[k].j < h->seq)
                w->re->d->conn(w->srv->app, r->pending[k].conn_id, fr, false);
        ws_frame_unref(fr);
        json_decref(v);
    }
    /* What the members read so far have: up to the page's end, or all of
     * the range (entries trimmed from the Stream are not waited for). A
     * join whose counter came meanwhile (j still -1, or lower) is read
     * for by the next step. */
    int64_t mark = res->has_more && last >= 0 && last < f->to ? last : f->to;
    for (size_t k = 0; k < r->npending; k++)
        if (r->pending[k].j >= f->from && r->pending[k].j < mark) r->pending[k].j = mark;
    fill_step(w, f->room, r);
    free(f);
}

/* Go on with the fill of room when what it waits for is in. */
static void fill_step(rworker *w, const char *room, wroom *r) {
    if (!r->filling || r->base < 0 || r->jwait || r->reading) return;
    int64_t from = INT64_MAX;
    for (size_t i = 0; i < r->npending; i++)
        if (r->pending[i].j >= 0 && r->pending[i].j < from) from = r->pending[i].j;
    int64_t to = r->nlive ? r->live[0].seq - 1 : r->base;
    if (from >= to) {
        fill_finish(w, room, r);
        return;
    }
    redis_engine *re = w->re;
    redis_history h = {
        .room = room,
        .after_seq = from,
        .limit = to - from < FILL_PAGE ? (int)(to - from) : FILL_PAGE,
        .max_bytes = FILL_MAX_BYTES,
        .cutoff_ms =
            re->cfg->message_ttl_days > 0 ? now_ms() - re->cfg->message_ttl_days * 86400000 : 0,
    };
    fill_ref *f = fill_ref_new(w, r, room, NULL);
    f->from = from;
    f->to = to;
    r->reading = true;
    redis_script_history(shard_for(w, room)->client, &h, fill_gap_replied, f);
}

static void fill_counter_replied(redis_client *c, const redisReply *rep, const char *err,
                                 void *data) {
    fill_ref *f = data;
    wroom *r = fill_room(f);
    if (r) {
        r->jwait--;
        int64_t j = -1;
        if (!err && rep && rep->type == REDIS_REPLY_INTEGER && rep->integer >= 0) j = rep->integer;
        for (size_t i = 0; i < r->npending; i++)
            if (strcmp(r->pending[i].conn_id, f->conn_id) == 0) {
                if (j < 0) r->pending[i] = r->pending[--r->npending]; /* cannot fill it */
                else r->pending[i].j = j;
                break;
            }
        fill_step(f->w, f->room, r);
    }
    free(f);
}

/* conn_id joined room while this worker's subscription is not known
 * active: read the room's counter now and fill its gap later. */
static void fill_join_start(rworker *w, const char *room, wroom *r, const char *conn_id) {
    wshard *s = shard_for(w, room);
    if (!s->client || w->closing) return;
    if (!r->filling) {
        r->filling = true;
        r->fill_gen = ++w->fill_gens;
        r->fill_since_ns = clock_mono_ns();
    }
    if (r->npending == r->cappending) {
        r->cappending = r->cappending ? r->cappending * 2 : 4;
        r->pending = xrealloc(r->pending, r->cappending * sizeof(*r->pending));
    }
    fill_join *p = &r->pending[r->npending++];
    snprintf(p->conn_id, sizeof(p->conn_id), "%s", conn_id);
    p->j = -1;
    r->jwait++;
    char *seq = redis_script_seq_key(room), *log = redis_script_log_key(room);
    char since[24];
    snprintf(since, sizeof(since), "%lld", (long long)(now_ms() - FILL_CLOCK_SLACK_MS));
    /* The room's affinity: the same connection as its marker and chats. */
    redis_client_command_argv(
        s->client, redis_client_affinity(room, strlen(room)), fill_counter_replied,
        fill_ref_new(w, r, room, conn_id), 7,
        (const char *[]){"EVAL", FILL_JOIN_LUA, "2", seq, log, since, FILL_LOOKBACK}, NULL);
    free(seq);
    free(log);
}

/* Timer: a fill that waited too long (no marker: Redis down) ends with
 * the held chats only. Returns true when it ended one (w->rooms may have
 * changed). */
static bool fill_overdue(rworker *w, uint64_t now) {
    size_t it = 0;
    void *v;
    const char *k;
    while (strmap_next(&w->rooms, &it, &k, &v)) {
        wroom *r = v;
        if (r->filling && now - r->fill_since_ns > (uint64_t)FILL_MAX_MS * 1000000) {
            log_msg(LOG_ERROR, "redis_fill_timeout",
                    "room %s: %zu joins not filled in time (chats may be missing; resume with "
                    "sinceSeq)",
                    k, r->npending);
            r->npending = 0;
            fill_finish(w, k, r);
            return true;
        }
    }
    return false;
}

/* Split "<a>\n<b>\n..." : returns the position after the n-th newline. */
static const char *skip_lines(const char *p, const char *end, int lines) {
    for (; lines > 0 && p; lines--) {
        p = memchr(p, '\n', (size_t)(end - p));
        if (p) p++;
    }
    return p;
}

/* [presence] An event made at `made_us` on another node reaches only the
 * members that were here then, as on one node, where a member hears only
 * what happens after its join: a PUBLISH sent right after the event's
 * node answered its client can reach Redis after a later join here (that
 * node's thread was slow, or its command connection busy), and that
 * joiner got, say, the user_joined of someone who joined before it. A
 * room with no join since the event takes the usual path; otherwise the
 * event goes to each member that joined at or before it (this worker's
 * connections are walked: only events in flight across a join here). */
static void deliver_event_before(rworker *w, const char *room, ws_frame *f, const char *except,
                                 int64_t made_us) {
    size_t it = 0;
    const char *id;
    void *v;
    while (strmap_next(&w->members, &it, &id, &v)) {
        const wmember *m = v;
        if (!m->room_id || m->joined_us > made_us || strcmp(m->room_id, room) != 0) continue;
        if (except && strcmp(id, except) == 0) continue;
        w->re->d->conn(w->srv->app, id, f, false);
    }
}

static void deliver_event(rworker *w, const char *room, const char *p, size_t n) {
    /* "E<node>[ <made_us>]\n<flags>\n<except>\n<opcode><payload>" (nodes
     * of the previous release send no time) */
    const char *end = p + n, *node = p + 1;
    const char *body = skip_lines(p, end, 3);
    if (!body || body >= end) return;
    size_t nodelen = strlen(w->re->node);
    if ((size_t)(end - node) > nodelen && memcmp(node, w->re->node, nodelen) == 0 &&
        (node[nodelen] == '\n' || node[nodelen] == ' '))
        return; /* ours: the local engine delivered it already */
    const char *fl = skip_lines(p, end, 1), *ex = skip_lines(p, end, 2);
    const char *sp = memchr(node, ' ', (size_t)(fl - node));
    int64_t made_us = sp ? strtoll(sp + 1, NULL, 10) : 0;
    unsigned flags = (unsigned)strtoul(fl, NULL, 10);
    char except[CONN_ID_LEN + 1] = "";
    size_t exlen = (size_t)(body - 1 - ex);
    if (exlen > 0 && exlen <= CONN_ID_LEN) memcpy(except, ex, exlen);
    ws_frame *f = ws_frame_new((uint8_t)body[0], body + 1, (size_t)(end - body - 1));
    const wroom *r = strmap_get(&w->rooms, room);
    /* ENGINE_SKIP_RESUMING needs the room's walk (who resumes is the hub's). */
    if (made_us > 0 && r && r->last_join_us > made_us && !(flags & ENGINE_SKIP_RESUMING))
        deliver_event_before(w, room, f, except[0] ? except : NULL, made_us);
    else w->re->d->room(w->srv->app, room, f, except[0] ? except : NULL, flags);
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

/* From a user's channel: "P<node>\n<opcode><payload>", to this worker's
 * connections of the user (the sender's node delivered to its own at
 * once). */
static void deliver_user(rworker *w, const char *user, size_t ulen, const char *p, size_t n) {
    const char *end = p + n, *node = p + 1;
    const char *body = skip_lines(p, end, 1);
    if (!body || body >= end) return;
    size_t nodelen = strlen(w->re->node);
    if ((size_t)(body - 1 - node) == nodelen && memcmp(node, w->re->node, nodelen) == 0) return;
    char *uid = xstrndup(user, ulen);
    ws_frame *f = ws_frame_new((uint8_t)body[0], body + 1, (size_t)(end - body - 1));
    w->re->d->user(w->srv->app, uid, f);
    ws_frame_unref(f);
    free(uid);
}

/* A private message on the home Redis's bus, as nodes of the previous
 * release send them during a rolling upgrade. */
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
    wshard *s = data;
    rworker *w = s->w;
    if (n == 0) return;
    if (chlen > s->user_prefix_len && memcmp(ch, s->user_prefix, s->user_prefix_len) == 0) {
        if (p[0] == 'P') deliver_user(w, ch + s->user_prefix_len, chlen - s->user_prefix_len, p, n);
    } else if (chlen > s->room_prefix_len && memcmp(ch, s->room_prefix, s->room_prefix_len) == 0) {
        char *room = xstrndup(ch + s->room_prefix_len, chlen - s->room_prefix_len);
        if (p[0] == 'C') deliver_chat(w, room, p, n);
        else if (p[0] == 'E') deliver_event(w, room, p, n);
        else if (p[0] == 'M') note_announcement(w, room, p, n);
        else if (p[0] == 'S') note_marker(w, room, p, n);
        free(room);
    } else if (chlen == strlen(w->re->bus) && memcmp(ch, w->re->bus, chlen) == 0 && p[0] == 'P') {
        deliver_private(w, p, n);
    } else if (s->index == 0) {
        redis_fwd_on_message(w->fwd, home_client(w), ch, chlen, p, n);
    }
}

static void on_state(redis_client *c, bool up, void *data) {
    wshard *s = data;
    atomic_store(&s->up, up);
    if (up) resync(s->w, s->index);
}

/* On w's thread: copy its counters and its clients' where
 * engine_redis_stats reads them. A sharded worker adds each client's. */
/* Whether every one of the worker's Redis connections is up (any thread). */
static bool worker_up(rworker *w) {
    if (!w->shards) return false;
    for (size_t i = 0; i < w->re->nshards; i++)
        if (!atomic_load(&w->shards[i].up)) return false;
    return true;
}

static void stats_snapshot(rworker *w) {
    redis_engine_stats s = {.published_chats = w->pub_chats,
                            .published_events = w->pub_events,
                            .published_private = w->pub_private,
                            .rooms = w->rooms.count};
    for (size_t i = 0; w->shards && i < w->re->nshards; i++) {
        if (!w->shards[i].client) continue;
        redis_client_stats cs;
        redis_client_get_stats(w->shards[i].client, &cs);
        redis_client_stats_add(&s.client, &cs);
    }
    pthread_mutex_lock(&w->re->stats_mu);
    w->snap = s;
    pthread_mutex_unlock(&w->re->stats_mu);
}

void engine_redis_stats(engine *e, redis_engine_stats *out) {
    redis_engine *re = R(e);
    memset(out, 0, sizeof(*out));
    out->workers = re->nworkers;
    pthread_mutex_lock(&re->stats_mu);
    for (size_t i = 0; i < re->nworkers; i++) {
        const redis_engine_stats *s = &re->w[i].snap;
        redis_client_stats_add(&out->client, &s->client);
        out->published_chats += s->published_chats;
        out->published_events += s->published_events;
        out->published_private += s->published_private;
        out->rooms += s->rooms;
        out->workers_up += worker_up(&re->w[i]) ? 1 : 0;
    }
    pthread_mutex_unlock(&re->stats_mu);
}

const char *engine_redis_node(engine *e) { return R(e)->node; }

size_t engine_redis_nodes(engine *e, redis_nodes *out) {
    redis_engine *re = R(e);
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&re->mu);
    for (size_t i = 0; i < re->nodes.n; i++) {
        char field[FIELD_LEN];
        snprintf(field, sizeof(field), "%s.0", re->nodes.v[i].node);
        *redis_nodes_of_field(out, field, strlen(field)) = re->nodes.v[i];
    }
    pthread_mutex_unlock(&re->mu);
    /* This node's own numbers are exact here, not a second old. */
    redis_node_info *me = redis_nodes_of_field(out, re->w[0].field, strlen(re->w[0].field));
    me->self = true;
    me->connections = engine_conn_total(re->local);
    me->rooms = engine_room_total(re->local);
    if (!me->workers)
        for (size_t i = 0; i < re->nworkers; i++) me->workers += worker_up(&re->w[i]) ? 1 : 0;
    redis_nodes_sort(out);
    return out->n;
}

static void on_timer(uv_timer_t *t) {
    rworker *w = t->data;
    if (w->client) stats_snapshot(w);
    if (w->srv->shutting_down && w->srv->nconns > 0 && w->client) {
        release_overdue(w); /* its connections are closing: their user_left goes out */
        /* Still alive until the goodbye below: a client that does not answer
         * the close holds the drain for its close wait, longer than a
         * redis_node_timeout_s, and a silent worker would be reaped (its
         * clean stop taken for a death). */
        if (redis_client_up(home(w)) && ++w->ticks % 4 == 0) heartbeat(w);
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
        cmd(w, REDIS_CLIENT_ANY, 2, (const char *[]){"DEL", mk}, NULL);
        for (size_t i = 0; i < w->re->nshards; i++)
            cmd_to(&w->shards[i], REDIS_CLIENT_ANY, 3, (const char *[]){"DEL", rk, uk}, NULL);
        free(rk);
        free(uk);
        free(mk);
        return;
    }
    if (w->srv->shutting_down) {
        /* Let the loop end: the client's handles would keep it running. */
        if (!w->closing) {
            w->closing = true;
            for (size_t i = 0; i < w->re->nshards; i++) {
                atomic_store(&w->shards[i].up, false);
                redis_client_close(w->shards[i].client);
                w->shards[i].client = NULL;
            }
            w->client = NULL;
        }
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        return;
    }
    release_overdue(w);
    redis_fwd_tick(w->fwd);
    if (!redis_client_up(home(w)) || ++w->ticks % 4 != 0) return;
    heartbeat(w);
    if (w->index == 0) {
        refresh_start(w);
        reap_start(w);
    }
}

/* ---- membership ---- */

/* [async] Send the membership writes of this turn (counts, subscriptions,
 * records) on the key's server and the home Redis at once: the worker
 * writes its client's welcome or answer before its loop next polls the
 * Redis sockets, and a client told "joined" could otherwise ask another
 * node, which asks Redis, before Redis has heard of the join. */
static void flush_now(rworker *w, const char *key) {
    if (w->closing) return;
    redis_client_flush(shard_for(w, key)->client);
    redis_client_flush(home(w));
}

static uintptr_t count_add(strmap *m, const char *key, int delta) {
    uintptr_t n = (uintptr_t)strmap_get(m, key);
    n = delta > 0 ? n + 1 : (n ? n - 1 : 0);
    if (n) strmap_put(m, key, (void *)n, NULL);
    else strmap_remove(m, key);
    return n;
}

/* Subscribe (on) or unsubscribe the user's channel, on the user's server:
 * a worker hears a user's private messages while it has connections of
 * the user, as it hears a room while it has members there. */
static void watch_user(rworker *w, const char *user_id, bool on) {
    wshard *s = shard_for(w, user_id);
    if (!s->client) return;
    char *ch = user_channel(s, user_id);
    if (on) redis_client_subscribe(s->client, ch);
    else redis_client_unsubscribe(s->client, ch);
    free(ch);
}

static void r_conn_opened(engine *e, directory_conn *rec, conn *c, int worker, const char *user_id,
                          const char *username, bool first) {
    redis_engine *re = R(e);
    engine_conn_opened(re->local, rec, c, worker, user_id, username, first);
    pthread_mutex_lock(&re->conns_mu);
    strmap_put(&re->conns, c->id, (void *)1, NULL);
    pthread_mutex_unlock(&re->conns_mu);
    rworker *w = &re->w[worker];
    uintptr_t n = count_add(&w->users, user_id, +1);
    write_user_count(w, user_id, n);
    if (n == 1) watch_user(w, user_id, true);
    wmember *m = xcalloc(1, sizeof(*m));
    m->user_id = user_id;
    m->username = username;
    strmap_put(&w->members, c->id, m, NULL);
    redis_fwd_conn_opened(w->fwd, home_client(w), c->id, user_id, c->connected_at);
    flush_now(w, user_id);
}

static void r_conn_closed(engine *e, const char *conn_id, const char *user_id, int worker,
                          bool last) {
    redis_engine *re = R(e);
    engine_conn_closed(re->local, conn_id, user_id, worker, last);
    pthread_mutex_lock(&re->conns_mu);
    strmap_remove(&re->conns, conn_id);
    pthread_mutex_unlock(&re->conns_mu);
    rworker *w = &re->w[worker];
    uintptr_t n = count_add(&w->users, user_id, -1);
    write_user_count(w, user_id, n);
    if (n == 0) watch_user(w, user_id, false);
    wmember *m = strmap_remove(&w->members, conn_id);
    if (m) fill_forget(w, m->room_id, conn_id); /* [rjoin] */
    if (m && m->room_id) write_member(w, conn_id, NULL);
    if (m) free(m->room_id);
    free(m);
    redis_fwd_conn_closed(w->fwd, home_client(w), conn_id);
    flush_now(w, user_id);
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
        wshard *s = shard_for(w, room_id);
        if (s->client) {
            char *channel = room_channel(s, room_id);
            redis_client_subscribe(s->client, channel);
            free(channel);
        }
        send_marker(w, room_id);
    }
    /* [rjoin] not hearing the room yet: fill this member's gap later */
    if (r->base < 0 || r->filling) fill_join_start(w, room_id, r, conn_id);
    write_room_count(w, room_id, ++r->count);
    wmember *m = strmap_get(&w->members, conn_id);
    int64_t joined_us = clock_wall_us(); /* [presence] */
    if (joined_us > r->last_join_us) r->last_join_us = joined_us;
    if (m) {
        free(m->room_id);
        m->room_id = xstrdup(room_id);
        m->joined_us = joined_us;
        write_member(w, conn_id, m);
    }
    flush_now(w, room_id);
    return er;
}

static size_t r_room_left(engine *e, const char *conn_id, const char *room_id, int worker,
                          bool last) {
    redis_engine *re = R(e);
    size_t left = engine_room_left(re->local, conn_id, room_id, worker, last);
    rworker *w = &re->w[worker];
    fill_forget(w, room_id, conn_id); /* [rjoin] */
    wroom *r = strmap_get(&w->rooms, room_id);
    uintptr_t still = r && r->count ? r->count - 1 : 0;
    size_t nheld = 0;
    store_op **held = NULL;
    if (r && --r->count == 0) {
        held = take_held(r, &nheld);
        strmap_remove(&w->rooms, room_id);
        wshard *s = shard_for(w, room_id);
        if (s->client) {
            char *channel = room_channel(s, room_id);
            redis_client_unsubscribe(s->client, channel);
            free(channel);
        }
        release_waiting(w, r, INT64_MAX); /* their sessions left: nothing to hold for */
        free(r->waiting);
        fill_free(r);
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
    flush_now(w, room_id);
    return left + others_at_least(re, room_id);
}

/* ---- messages ---- */

typedef struct publish_job {
    char *channel;
    char *msg;
    size_t len;
    uint32_t affinity;
    size_t shard;
} publish_job;

static void run_publish(rworker *w, void *arg, bool dropped) {
    publish_job *j = arg;
    if (!dropped) {
        wshard *sh = &w->shards[j->shard];
        cmd_to(sh, j->affinity, 3, (const char *[]){"PUBLISH", j->channel, j->msg},
               (const size_t[]){7, strlen(j->channel), j->len});
        if (strncmp(j->channel, sh->user_prefix, sh->user_prefix_len) == 0 ||
            strcmp(j->channel, w->re->bus) == 0)
            w->pub_private++;
        else w->pub_events++;
    }
    free(j->channel);
    free(j->msg);
    free(j);
}

/* PUBLISH header + f's opcode and payload on channel of shard `shard`,
 * from this worker (or worker 0 when the caller is no worker). */
static void publish_frame(redis_engine *re, size_t shard, const char *channel, uint32_t affinity,
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
    j->shard = shard;
    int self = current_worker(re);
    on_worker(&re->w[self >= 0 ? self : 0], run_publish, j);
}

static size_t r_publish_room(engine *e, const char *room_id, engine_room *pinned, ws_frame *f,
                             const char *except, unsigned flags) {
    redis_engine *re = R(e);
    size_t local = engine_publish_room(re->local, room_id, pinned, f, except, flags);
    char header[160];
    /* [presence] when the event was made: see deliver_event_before */
    snprintf(header, sizeof(header), "E%s %" PRId64 "\n%u\n%s\n", re->node, clock_wall_us(), flags,
             except ? except : "");
    size_t shard = shard_of(re, room_id);
    char *channel = redis_script_channel(re->urls[shard].db, room_id);
    publish_frame(re, shard, channel, redis_client_affinity(room_id, strlen(room_id)), header, f);
    free(channel);
    return local + remote_room_count(re, room_id);
}

/* Published once on the user's channel, which only workers holding the
 * user subscribe, whenever the user is known anywhere: also when this node
 * has the user, since another node may have connected it since the last
 * read of the counts. */
/* PUBLISH f on the user's channel, fire and forget. */
static void publish_user_channel(redis_engine *re, const char *user_id, ws_frame *f) {
    size_t shard = shard_of(re, user_id);
    char *channel = user_channel_name(re->urls[shard].db, user_id);
    char header[40];
    snprintf(header, sizeof(header), "P%s\n", re->node);
    /* The user's connection: one worker's messages to a user stay in order. */
    publish_frame(re, shard, channel, redis_client_affinity(user_id, strlen(user_id)), header, f);
    free(channel);
}

static int r_publish_user(engine *e, const char *user_id, ws_frame *f) {
    redis_engine *re = R(e);
    int local = engine_publish_user(re->local, user_id, f);
    bool remote = remote_has_user(re, user_id);
    if (local != 0 && !remote) return -1;
    publish_user_channel(re, user_id, f);
    return 0;
}

/* A connection this node does not hold may be on another node: the
 * management API asks that node (engine_remote) rather than answer
 * "gone". One this node holds
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
        if (!res->duplicate) w->pub_chats++;
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
    size_t shard = shard_of(re, op->room_id);
    redis_chat chat = {
        .room = op->room_id,
        .sender = re->keys ? sender : op->user_id,
        .client_message_id = op->client_message_id,
        .idempotency_window_s = op->client_message_id ? re->cfg->idempotency_window_s : 0,
        .message_id = op->message_id,
        /* [rjoin] in ms (a join's fill compares it), within the second the
         * chat was received in, so that ts_ms / 1000 stays its timestamp */
        .ts_ms = ms < op->timestamp * 1000         ? op->timestamp * 1000
                 : ms > op->timestamp * 1000 + 999 ? op->timestamp * 1000 + 999
                                                   : ms,
        .value = value,
        .value_len = vlen,
        .cutoff_ms = re->cfg->message_ttl_days > 0 ? ms - re->cfg->message_ttl_days * 86400000 : 0,
        .db = re->urls[shard].db,
        .publish = true,
        .publish_prefix = prefix,
        .publish_prefix_len = strlen(prefix),
        .min_replicas = (int)re->cfg->redis_min_replicas,
    };
    op->ctx = w;
    op->t_submitted = clock_mono_ns();
    /* Failing fast still answers (REDIS_CLIENT_E_DOWN) on a later turn. */
    redis_script_chat(w->shards[shard].client, &chat, chat_replied, op);
    free(value);
}

static void submit_history(rworker *w, store_op *op);

/* A resume's last page, read at counter op->last_seq, came after chats
 * past that counter were delivered here (two sockets: nothing orders the
 * page's reply before later publications). */
static bool overtaken(rworker *w, const store_op *op) {
    const wroom *r = strmap_get(&w->rooms, op->room_id);
    return r && r->seen > op->last_seq;
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
        if (op->after_seq >= 0 && !op->has_more && overtaken(w, op)) {
            /* Chats past the page came first on the pub/sub socket and
             * skipped the resuming session: have it read on from the
             * page's end (a small page), or read again when the page is
             * empty. */
            if (json_array_size(rows) > 0) {
                op->has_more = true;
            } else {
                json_decref(rows);
                op->messages = NULL;
                submit_history(w, op);
                return;
            }
        }
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
    redis_script_history(shard_for(w, op->room_id)->client, &h, history_replied, op);
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
        if (!atomic_load(&shard_for(w, op->room_id)->up))
            run_held(w, dup_one(op), 1, "redis client not up"); /* see hold_chat */
        else if (!hold_chat(w, op)) submit_chat(w, op);
    } else {
        /* [rjoin] a resume replays the joiner's gap itself */
        if (op->after_seq >= 0) fill_forget(w, op->room_id, op->conn_id);
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
    /* [rjoin] forget the joiner's fill now, before its gap can be sent */
    if (op->kind == STORE_OP_HISTORY && op->after_seq >= 0 && w->srv == server_current())
        fill_forget(w, op->room_id, op->conn_id);
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

/* [forward] Ask the node holding conn_id (redis_forward.h). */
static int r_remote(engine *e, const engine_remote_req *r) {
    redis_engine *re = R(e);
    int self = current_worker(re);
    if (self < 0) return ENGINE_E_UNAVAILABLE;
    rworker *w = &re->w[self];
    return redis_fwd_ask(w->fwd, home_client(w), r);
}

static void r_conn_each(engine *e, void (*fn)(const directory_conn *rec, void *ctx), void *ctx) {
    engine_conn_each(R(e)->local, fn, ctx);
}

static size_t r_conn_total(engine *e) { return engine_conn_total(R(e)->local); }
static size_t r_room_total(engine *e) { return engine_room_total(R(e)->local); }

static int r_health(engine *e, char *why, size_t len) {
    redis_engine *re = R(e);
    /* Any shard: the rooms on a shard that is down cannot store a chat. */
    for (size_t i = 0; i < re->nworkers; i++)
        for (size_t s = 0; s < re->nshards; s++)
            if (!atomic_load(&re->w[i].shards[s].up)) {
                char name[REDIS_URL_MAX_HOST + 32];
                snprintf(why, len, "redis %s unreachable (worker %zu)",
                         redis_url_name(&re->urls[s], name, sizeof(name)), i);
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
            fill_free(r);
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
        free(re->w[i].shards);
        redis_fwd_free(re->w[i].fwd);
    }
    strmap_free_values(&re->rooms, remote_room_free);
    strmap_free(&re->users);
    redis_ring_free(re->ring);
    free(re->urls);
    redis_nodes_free(&re->nodes);
    pthread_mutex_destroy(&re->mu);
    strmap_free(&re->conns);
    pthread_mutex_destroy(&re->conns_mu);
    metrics_remove_family_source(redis_metrics_source, &re->base);
    pthread_mutex_destroy(&re->stats_mu);
    engine_free(re->local);
    free(re);
}

/* ---- [async] answers that wait for Redis ----
 *
 * room_list and @rooms for rooms with no member here, and whether a
 * private message's target is online anywhere, are asked of Redis when
 * they are asked of the engine (engine_rooms_ask, engine_publish_user_ask)
 * and answered on the asking worker's thread when Redis replies (within
 * the client's command timeout): a room joined or a user connected on
 * another node a moment ago is there, as on one node. */

typedef struct rooms_ask {
    rworker *w;
    engine_rooms_fn done;
    void *arg;
    struct rooms_ask *next; /* [roomsq] the asks one read answers, in order */
} rooms_ask;

/* [roomsq] Answer every ask of the list `a` with the same result, freeing
 * them (done borrows `all`). */
static void rooms_answer(rooms_ask *a, void *hub, int rc, const directory_room_entry *all,
                         size_t n) {
    while (a) {
        rooms_ask *next = a->next;
        a->done(hub, a->arg, rc, all, n);
        free(a);
        a = next;
    }
}

static void rooms_read(void *data, int rc, const char *err, const strmap *sums);

/* [roomsq] Start the count read that answers the asks of list `a`. */
static void rooms_start(rworker *w, rooms_ask *a) {
    redis_engine *re = w->re;
    redis_client **shards = xmalloc(re->nshards * sizeof(*shards));
    for (size_t i = 0; i < re->nshards; i++) shards[i] = w->shards[i].client;
    w->rooms_reading = true;
    redis_counts_rooms(home(w), shards, re->nshards, re->node,
                       now_ms() - (int64_t)re->cfg->redis_node_timeout_s * 1000, rooms_read, a);
    free(shards);
}

/* This node's exact counts (the local engine) plus the others' sums. */
static void rooms_read(void *data, int rc, const char *err, const strmap *sums) {
    rooms_ask *a = data;
    rworker *w = a->w;
    void *hub = w->closing ? NULL : w->srv->app;
    /* [roomsq] The asks made while this read was out get a read of their
     * own, begun after their ask (a room joined just before it counts). */
    rooms_ask *waiting = w->rooms_next;
    w->rooms_next = w->rooms_next_tail = NULL;
    w->rooms_reading = false;
    if (waiting && hub && home_client(w)) rooms_start(w, waiting);
    else if (waiting) rooms_answer(waiting, hub, ENGINE_E_UNAVAILABLE, NULL, 0);
    if (rc != 0 || !hub) {
        rooms_answer(a, hub,
                     err == REDIS_CLIENT_E_TIMEOUT ? ENGINE_E_TIMEOUT : ENGINE_E_UNAVAILABLE, NULL,
                     0);
        return;
    }
    directory_room_entry *local;
    size_t n = engine_rooms(w->re->local, &local);
    directory_room_entry *all = xmalloc((n + sums->count + 1) * sizeof(*all));
    if (n) memcpy(all, local, n * sizeof(*all));
    free(local);
    size_t m = n, it = 0;
    const char *k;
    void *v;
    while (strmap_next(sums, &it, &k, &v)) {
        directory_room_entry key = {.id = (char *)k};
        directory_room_entry *hit = n ? bsearch(&key, all, n, sizeof(*all), cmp_entry) : NULL;
        if (hit) hit->count += (uintptr_t)v;
        else all[m++] = (directory_room_entry){xstrdup(k), (uintptr_t)v};
    }
    qsort(all, m, sizeof(*all), cmp_entry);
    rooms_answer(a, hub, 0, all, m);
    directory_rooms_free(all, m);
}

static int r_rooms_ask(engine *e, engine_rooms_fn done, void *arg) {
    redis_engine *re = R(e);
    int self = current_worker(re);
    if (self < 0 || !home_client(&re->w[self])) return 0; /* not a worker: the last read's */
    rworker *w = &re->w[self];
    rooms_ask *a = xmalloc(sizeof(*a));
    *a = (rooms_ask){w, done, arg, NULL};
    /* [roomsq] Each read runs a script over every live worker's rooms on
     * every server: a client's room_list (100 a second under its bucket)
     * was one read each. While one is out the asks queue for the next, so
     * a worker has at most one read out and one waiting whatever its
     * clients send. */
    if (w->rooms_reading) {
        if (w->rooms_next_tail) w->rooms_next_tail->next = a;
        else w->rooms_next = a;
        w->rooms_next_tail = a;
        return ENGINE_PENDING;
    }
    rooms_start(w, a);
    return ENGINE_PENDING;
}

typedef struct user_ask {
    rworker *w;
    engine_sent_fn done;
    void *arg;
} user_ask;

/* PUBLISH's answer: how many subscriptions got it. Only workers holding
 * the user subscribe its channel (and this node holds none of its
 * connections, or it would not have asked), so 0 is "offline". */
static void user_published(redis_client *c, const redisReply *r, const char *err, void *data) {
    user_ask *a = data;
    int rc = err == REDIS_CLIENT_E_TIMEOUT                 ? ENGINE_E_TIMEOUT
             : err || !r || r->type != REDIS_REPLY_INTEGER ? ENGINE_E_UNAVAILABLE
             : r->integer > 0                              ? 0
                                                           : -1;
    a->done(a->w->closing ? NULL : a->w->srv->app, a->arg, rc);
    free(a);
}

static int r_publish_user_ask(engine *e, const char *user_id, ws_frame *f, engine_sent_fn done,
                              void *arg) {
    redis_engine *re = R(e);
    int self = current_worker(re);
    wshard *sh = self >= 0 ? shard_for(&re->w[self], user_id) : NULL;
    if (!sh || !sh->client || re->w[self].closing) return r_publish_user(e, user_id, f);
    if (engine_publish_user(re->local, user_id, f) == 0) {
        /* Held here: delivered at once, and published for the other nodes
         * that may hold the user too; the answer is known. */
        publish_user_channel(re, user_id, f);
        return 0;
    }
    rworker *w = &re->w[self];
    char *channel = user_channel(sh, user_id);
    char header[40];
    int hlen = snprintf(header, sizeof(header), "P%s\n", re->node);
    uint8_t *payload = ws_frame_payload(f);
    size_t plen = f->len - (size_t)(payload - f->data);
    size_t len = (size_t)hlen + 1 + plen;
    char *msg = xmalloc(len);
    memcpy(msg, header, (size_t)hlen);
    msg[hlen] = (char)(f->data[0] & 0x0f);
    memcpy(msg + hlen + 1, payload, plen);
    user_ask *a = xmalloc(sizeof(*a));
    *a = (user_ask){w, done, arg};
    /* The user's connection, as r_publish_user: one worker's messages to
     * a user stay in order. */
    redis_client_command_argv(sh->client, redis_client_affinity(user_id, strlen(user_id)),
                              user_published, a, 3, (const char *[]){"PUBLISH", channel, msg},
                              (const size_t[]){7, strlen(channel), len});
    w->pub_private++;
    free(channel);
    free(msg);
    return ENGINE_PENDING;
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
    .remote = r_remote,
    .rooms_ask = r_rooms_ask,
    .publish_user_ask = r_publish_user_ask,
};

/* The servers of cfg (redis_urls, else redis_url) into *urls (malloc'd).
 * Returns how many, or 0 with *err set. */
static size_t parse_urls(const config *cfg, redis_url **urls, wsg_error *err) {
    size_t n = cfg->redis_urls_count ? cfg->redis_urls_count : 1;
    *urls = xcalloc(n, sizeof(**urls));
    for (size_t i = 0; i < n; i++) {
        const char *u = cfg->redis_urls_count ? cfg->redis_urls[i] : cfg->redis_url;
        if (redis_url_parse(u, strlen(u), &(*urls)[i], err) != 0) {
            free(*urls);
            *urls = NULL;
            return 0;
        }
    }
    return n;
}

engine *engine_redis_new(size_t nworkers, const engine_deliver *d, store *st, const config *cfg,
                         crypto_keyring *keys, wsg_error *err) {
    assert(nworkers >= 1 && nworkers <= DIRECTORY_MAX_WORKERS);
    redis_url *urls;
    size_t nshards = parse_urls(cfg, &urls, err);
    if (!nshards) return NULL;
    redis_ring *ring = NULL;
    if (nshards > 1) {
        char(*names)[REDIS_URL_MAX_HOST + 32] = xcalloc(nshards, sizeof(*names));
        const char **np = xcalloc(nshards, sizeof(*np));
        for (size_t i = 0; i < nshards; i++)
            np[i] = redis_url_name(&urls[i], names[i], sizeof(names[i]));
        ring = redis_ring_new(np, nshards, err);
        free(np);
        free(names);
        if (!ring) {
            free(urls);
            return NULL;
        }
    }
    redis_engine *re = xcalloc(1, sizeof(*re));
    re->base.ops = &redis_ops;
    re->local = engine_local_new(nworkers, d, st);
    re->d = d;
    re->cfg = cfg;
    re->keys = keys;
    re->urls = urls;
    re->nshards = nshards;
    re->ring = ring;
    re->url = urls[0];
    re->nworkers = nworkers;
    random_hex(re->node, 8);
    snprintf(re->bus, sizeof(re->bus), "wsgate:%d:bus", re->url.db);
    pthread_mutex_init(&re->mu, NULL);
    pthread_mutex_init(&re->conns_mu, NULL);
    pthread_mutex_init(&re->stats_mu, NULL);
    metrics_add_family_source(redis_metrics_source, &re->base);
    strmap_init(&re->conns);
    strmap_init(&re->rooms);
    strmap_init(&re->users);
    for (size_t i = 0; i < nworkers; i++) {
        rworker *w = &re->w[i];
        w->re = re;
        w->index = (int)i;
        snprintf(w->field, sizeof(w->field), "%s.%zu", re->node, i);
        strmap_init(&w->rooms);
        strmap_init(&w->users);
        strmap_init(&w->members);
        w->shards = xcalloc(nshards, sizeof(*w->shards));
        for (size_t k = 0; k < nshards; k++) {
            wshard *sh = &w->shards[k];
            sh->w = w;
            sh->index = k;
            snprintf(sh->room_prefix, sizeof(sh->room_prefix), "wsgate:%d:room:", urls[k].db);
            snprintf(sh->user_prefix, sizeof(sh->user_prefix), "wsgate:%d:user:", urls[k].db);
            sh->room_prefix_len = strlen(sh->room_prefix);
            sh->user_prefix_len = strlen(sh->user_prefix);
        }
    }
    char name[REDIS_URL_MAX_HOST + 32];
    log_msg(LOG_INFO, "engine_redis", "node %s on redis %s (home) and %zu other shard(s)", re->node,
            redis_url_name(&re->url, name, sizeof(name)), nshards - 1);
    return &re->base;
}

void engine_redis_attach(engine *e, int index, server *srv) {
    redis_engine *re = R(e);
    assert(index >= 0 && (size_t)index < re->nworkers);
    engine_local_attach(re->local, index, srv);
    re->w[index].srv = srv;
    re->w[index].fwd = redis_fwd_new(re->local, srv, re->url.db, re->w[index].field,
                                     (int64_t)re->cfg->redis_node_timeout_s * 1000);
}

void engine_redis_start(engine *e, int index) {
    redis_engine *re = R(e);
    assert(index >= 0 && (size_t)index < re->nworkers);
    rworker *w = &re->w[index];
    assert(w->srv && w->srv == server_current());
    for (size_t k = 0; k < re->nshards; k++) {
        redis_client_options o = {
            .url = re->urls[k],
            .preload_scripts = redis_script_sources(),
            .on_message = on_message,
            .on_state = on_state,
            .data = &w->shards[k],
            .tls = {.ca_file = re->cfg->redis_tls_ca_file,
                    .cert_file = re->cfg->redis_tls_cert_file,
                    .key_file = re->cfg->redis_tls_key_file,
                    .server_name = re->cfg->redis_tls_server_name,
                    .insecure_skip_verify = re->cfg->redis_tls_insecure_skip_verify}};
        w->shards[k].client = redis_client_new(w->srv->loop, &o);
    }
    w->client = w->shards[0].client;
    if (index == 0) redis_client_subscribe(home(w), re->bus);
    redis_fwd_start(w->fwd, home_client(w));
    uv_timer_init(w->srv->loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, on_timer, HEARTBEAT_MS / 4, HEARTBEAT_MS / 4);
    w->timer_open = true;
}
