/* The local engine: one process, its workers, no network. Facts that cross
 * workers live in the sharded directory; deliveries are posted to the
 * owning workers' inboxes (server_post), one post per worker and frame
 * whatever the number of members there, and the calling worker's own share
 * is delivered at once. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "engine/engine.h"

typedef struct local_engine {
    engine base;
    const engine_deliver *d;
    size_t nworkers;
    store *store;
    server *workers[DIRECTORY_MAX_WORKERS];
    directory dir;
} local_engine;

static local_engine *L(engine *e) { return (local_engine *)e; }

#define ITEM_COUNTED 1u /* a connection frame whose bytes are in posted_bytes */

/* ---- what runs on the worker ---- */

static const engine_deliver *deliver_of(server_inbox_item *it) { return it->arg; }

static void run_room(server *srv, server_inbox_item *it, bool dropped) {
    if (!dropped)
        deliver_of(it)->room(srv->app, it->key, it->f, it->except[0] ? it->except : NULL,
                             it->flags);
}

static void run_user(server *srv, server_inbox_item *it, bool dropped) {
    if (!dropped) deliver_of(it)->user(srv->app, it->key, it->f);
}

static void run_conn(server *srv, server_inbox_item *it, bool dropped) {
    if (!dropped) deliver_of(it)->conn(srv->app, it->conn_id, it->f, it->flags & ITEM_COUNTED);
}

static void run_close(server *srv, server_inbox_item *it, bool dropped) {
    if (!dropped) deliver_of(it)->close(srv->app, it->conn_id, it->code, it->key);
}

static void run_call(server *srv, server_inbox_item *it, bool dropped) {
    it->call(dropped ? NULL : srv->app, it->arg);
}

/* The worker the calling thread runs, or -1 (the store thread, a tool). */
static int current_worker(local_engine *le) {
    server *cur = server_current();
    for (size_t i = 0; cur && i < le->nworkers; i++)
        if (le->workers[i] == cur) return (int)i;
    return -1;
}

static server *worker_of_id(local_engine *le, const char *conn_id) {
    int w = conn_id_worker(conn_id);
    return w >= 0 && (size_t)w < le->nworkers ? le->workers[w] : NULL;
}

static void post(server *srv, server_inbox_fn run, const engine_deliver *d, ws_frame *f,
                 const char *key, const char *conn_id, const char *except, unsigned flags,
                 uint16_t code) {
    server_inbox_item it = {.run = run, .arg = (void *)d, .flags = flags, .code = code};
    if (f) it.f = ws_frame_ref(f);
    if (key) it.key = xstrdup(key);
    if (conn_id) snprintf(it.conn_id, sizeof(it.conn_id), "%s", conn_id);
    if (except) snprintf(it.except, sizeof(it.except), "%s", except);
    server_post(srv, &it);
}

/* ---- membership ---- */

static void l_conn_opened(engine *e, directory_conn *rec, conn *c, int worker, const char *user_id,
                          const char *username, bool first) {
    directory_conn_add(&L(e)->dir, rec, c, worker, user_id, username);
    directory_user_add_conn(&L(e)->dir, rec, first);
}

static void l_conn_closed(engine *e, const char *conn_id, const char *user_id, int worker,
                          bool last) {
    directory_user_remove(&L(e)->dir, user_id, worker, last);
    directory_conn_remove(&L(e)->dir, conn_id);
}

/* The local engine's room handle is the directory's entry: it lives while
 * the room has members, and the worker keeps it only while it has some. */
static engine_room *l_room_joined(engine *e, const char *conn_id, const char *room_id, int worker,
                                  bool first) {
    directory_set *room = directory_room_join(&L(e)->dir, room_id, worker, first);
    directory_conn_set_room(&L(e)->dir, conn_id, room);
    return (engine_room *)room;
}

static size_t l_room_left(engine *e, const char *conn_id, const char *room_id, int worker,
                          bool last) {
    directory_conn_set_room(&L(e)->dir, conn_id, NULL);
    return directory_room_leave(&L(e)->dir, room_id, worker, last);
}

/* ---- messages ---- */

static size_t l_publish_room(engine *e, const char *room_id, engine_room *pinned, ws_frame *f,
                             const char *except, unsigned flags) {
    local_engine *le = L(e);
    size_t count;
    /* A worker publishing to its own room reads the pinned entry: no
     * shared lock on the message path. Others look the room up. */
    uint64_t mask = pinned ? directory_set_workers((directory_set *)pinned, &count)
                           : directory_room_workers(&le->dir, room_id, &count);
    int self = current_worker(le);
    for (size_t w = 0; w < le->nworkers; w++)
        if ((mask >> w & 1) && (int)w != self)
            post(le->workers[w], run_room, le->d, f, room_id, NULL, except, flags, 0);
    if (self >= 0 && (mask >> self & 1))
        le->d->room(le->workers[self]->app, room_id, f, except, flags);
    return count;
}

static int l_publish_user(engine *e, const char *user_id, ws_frame *f) {
    local_engine *le = L(e);
    uint64_t mask = directory_user_workers(&le->dir, user_id);
    if (!mask) return -1;
    int self = current_worker(le);
    for (size_t w = 0; w < le->nworkers; w++)
        if ((mask >> w & 1) && (int)w != self)
            post(le->workers[w], run_user, le->d, f, user_id, NULL, NULL, 0, 0);
    if (self >= 0 && (mask >> self & 1)) le->d->user(le->workers[self]->app, user_id, f);
    return 0;
}

typedef struct send_check {
    size_t max_queued;
    size_t add;  /* bytes to count in posted_bytes */
    bool delete; /* close_conn: mark the record deleted */
} send_check;

/* Under the record's shard lock: is it live, is its queue within bounds;
 * then count the frame in posted_bytes (c cannot be freed meanwhile). */
static int check_live(directory_conn *rec, void *ctx) {
    send_check *sc = ctx;
    if (rec->deleted) return -1;
    if (sc->delete) {
        rec->deleted = true;
        return 0;
    }
    if (sc->max_queued && conn_queued_bytes(rec->c) > sc->max_queued) return -2;
    if (sc->add) __atomic_fetch_add(&rec->c->posted_bytes, sc->add, __ATOMIC_RELAXED);
    return 0;
}

static int l_send_conn(engine *e, const char *conn_id, ws_frame *f, size_t max_queued) {
    local_engine *le = L(e);
    server *owner = worker_of_id(le, conn_id);
    if (!owner) return -1;
    bool own = owner == server_current();
    send_check sc = {.max_queued = max_queued, .add = own ? 0 : f->len};
    int rc = directory_conn_visit(&le->dir, conn_id, check_live, &sc);
    if (rc != 0) return rc;
    if (own) le->d->conn(owner->app, conn_id, f, false);
    else post(owner, run_conn, le->d, f, NULL, conn_id, NULL, ITEM_COUNTED, 0);
    return 0;
}

static int l_close_conn(engine *e, const char *conn_id, uint16_t code, const char *reason) {
    local_engine *le = L(e);
    server *owner = worker_of_id(le, conn_id);
    if (!owner) return -1;
    send_check sc = {.delete = true};
    if (directory_conn_visit(&le->dir, conn_id, check_live, &sc) != 0) return -1;
    if (owner == server_current()) le->d->close(owner->app, conn_id, code, reason);
    else post(owner, run_close, le->d, NULL, reason, conn_id, NULL, 0, code);
    return 0;
}

static int l_call_owner(engine *e, const char *conn_id, engine_call_fn fn, void *arg) {
    server *owner = worker_of_id(L(e), conn_id);
    if (!owner) return -1;
    server_inbox_item it = {.run = run_call, .call = fn, .arg = arg};
    server_post(owner, &it);
    return 0;
}

static int l_submit(engine *e, store_op *op, bool bounded) {
    store *st = L(e)->store;
    if (bounded) return store_submit_bounded(st, op);
    store_submit(st, op);
    return 0;
}

/* ---- presence and lookups ---- */

static size_t l_room_count(engine *e, const char *room_id, engine_room *pinned) {
    size_t n;
    if (pinned) directory_set_workers((directory_set *)pinned, &n);
    else directory_room_workers(&L(e)->dir, room_id, &n);
    return n;
}

static size_t l_rooms(engine *e, directory_room_entry **out) {
    return directory_rooms_sorted(&L(e)->dir, out);
}

static int copy_info(directory_conn *rec, void *ctx) {
    if (rec->deleted) return -1;
    engine_conn_info *out = ctx;
    out->connected_at = rec->c->connected_at;
    out->last_active_at = conn_last_active_at(rec->c);
    snprintf(out->source_ip, sizeof(out->source_ip), "%s", rec->c->source_ip);
    out->user_agent = rec->c->user_agent ? xstrdup(rec->c->user_agent) : NULL;
    out->queued_bytes = conn_queued_bytes(rec->c);
    return 0;
}

static int l_conn_info(engine *e, const char *conn_id, engine_conn_info *out) {
    memset(out, 0, sizeof(*out));
    return directory_conn_visit(&L(e)->dir, conn_id, copy_info, out);
}

typedef struct each_ctx {
    void (*fn)(const directory_conn *rec, void *ctx);
    void *ctx;
} each_ctx;

static void each_live(const directory_conn *rec, void *ctx) {
    each_ctx *ec = ctx;
    if (!rec->deleted) ec->fn(rec, ec->ctx);
}

static void l_conn_each(engine *e, void (*fn)(const directory_conn *rec, void *ctx), void *ctx) {
    each_ctx ec = {fn, ctx};
    directory_conn_each(&L(e)->dir, each_live, &ec);
}

static size_t l_conn_total(engine *e) { return directory_conn_total(&L(e)->dir); }
static size_t l_room_total(engine *e) { return directory_room_total(&L(e)->dir); }

static void l_free(engine *e) {
    directory_free(&L(e)->dir);
    free(e);
}

static const engine_ops local_ops = {
    .name = "local",
    .free = l_free,
    .conn_opened = l_conn_opened,
    .conn_closed = l_conn_closed,
    .room_joined = l_room_joined,
    .room_left = l_room_left,
    .publish_room = l_publish_room,
    .publish_user = l_publish_user,
    .send_conn = l_send_conn,
    .close_conn = l_close_conn,
    .call_owner = l_call_owner,
    .submit = l_submit,
    .room_count = l_room_count,
    .rooms = l_rooms,
    .conn_info = l_conn_info,
    .conn_each = l_conn_each,
    .conn_total = l_conn_total,
    .room_total = l_room_total,
};

engine *engine_local_new(size_t nworkers, const engine_deliver *d, store *st) {
    assert(nworkers >= 1 && nworkers <= DIRECTORY_MAX_WORKERS);
    local_engine *le = xcalloc(1, sizeof(*le));
    le->base.ops = &local_ops;
    le->d = d;
    le->store = st;
    le->nworkers = nworkers;
    directory_init(&le->dir);
    return &le->base;
}

void engine_local_attach(engine *e, int index, server *srv) {
    local_engine *le = L(e);
    assert(index >= 0 && (size_t)index < le->nworkers);
    le->workers[index] = srv;
}
