/* The engine: how what one worker says reaches connections on other
 * workers (and, with a multi-node engine, other nodes), and what the
 * application may ask about connections it does not own. A small table of
 * operations, as Centrifugo's Broker and PresenceManager: the handlers and
 * the management API talk to the engine only, never to another worker's
 * connections or index. The local engine (engine_local_new) serves one
 * process: a sharded directory and one inbox per worker.
 *
 * Delivery is by id: the engine hands each worker, on its own thread, the
 * frames for its members of a room, its connections of a user, or one of
 * its connections (engine_deliver); the worker looks them up in its own
 * index. Any operation may be called from any thread unless it says
 * otherwise. */
#ifndef WSGATE_ENGINE_ENGINE_H
#define WSGATE_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/directory.h"
#include "net/conn.h"
#include "net/server.h"
#include "store/store.h"
#include "ws/frame.h"

typedef struct engine engine;
/* A room as the engine knows it, handed to a worker that has members there
 * (engine_room_joined) and valid while it has: publishing through it needs
 * no lookup and no shared lock. Opaque. */
typedef struct engine_room engine_room;

/* What send_conn, close_conn and conn_info answer for a connection this
 * node does not hold when it may live on another node (a multi-node
 * engine): not "gone", but "not here; ask its node" (engine_remote). */
#define ENGINE_E_ELSEWHERE WSG_E_ENGINE_ELSEWHERE
/* What engine_remote answers when the node owning the connection did not
 * answer within the engine's bound (or cannot be reached at all), and
 * when the engine could not ask (its Redis unreachable). The three are
 * rows of WSG_ERRNO_MAP (src/common/error.h); these are the engine's
 * names for them. */
#define ENGINE_E_TIMEOUT     WSG_E_ENGINE_TIMEOUT
#define ENGINE_E_UNAVAILABLE WSG_E_ENGINE_UNAVAILABLE

/* What an engine_*_ask call answers when its answer comes later: the
 * callback runs on the calling worker's thread, exactly once. */
#define ENGINE_PENDING 1

/* Room delivery flags. */
#define ENGINE_SKIP_RESUMING 1u /* members replaying stored messages get it from the replay */

/* What a worker does with what the engine hands it, on its own thread;
 * `hub` is the server's app pointer (the worker's application state). The
 * frame is borrowed for the call. */
typedef struct engine_deliver {
    /* To the worker's members of room_id, except the connection `except`
     * (NULL: none). */
    void (*room)(void *hub, const char *room_id, ws_frame *f, const char *except, unsigned flags);
    /* To the worker's connections of user_id. */
    void (*user)(void *hub, const char *user_id, ws_frame *f);
    /* To connection conn_id, if still there. counted: f's bytes were added
     * to the connection's posted_bytes when it was sent (take them off). */
    void (*conn)(void *hub, const char *conn_id, ws_frame *f, bool counted);
    /* Start closing connection conn_id, if still there. */
    void (*close)(void *hub, const char *conn_id, uint16_t code, const char *reason);
} engine_deliver;

/* A function run on a connection's worker (engine_call_owner): hub is that
 * worker's, or NULL when the call was dropped (the worker is gone; release
 * arg only). */
typedef void (*engine_call_fn)(void *hub, void *arg);

/* What the management API reads about a connection. */
typedef struct engine_conn_info {
    int64_t connected_at, last_active_at; /* Unix seconds */
    char source_ip[46];
    char *user_agent; /* malloc'd or NULL: the caller frees */
    size_t queued_bytes;
} engine_conn_info;

/* An operation on a connection held by another node (engine_remote). */
typedef enum engine_remote_kind {
    ENGINE_REMOTE_SEND,  /* engine_send_conn there */
    ENGINE_REMOTE_INFO,  /* engine_conn_lookup there */
    ENGINE_REMOTE_CLOSE, /* engine_close_conn there */
} engine_remote_kind;

/* The answer of engine_remote, on the asking worker's thread: hub is that
 * worker's; tag the request's (a copy); rc what the owner's engine
 * answered (0, -1, -2 as engine_send_conn) or ENGINE_E_TIMEOUT /
 * ENGINE_E_UNAVAILABLE; info (ENGINE_REMOTE_INFO with rc 0, else NULL)
 * is valid during the call only. */
typedef void (*engine_remote_fn)(void *hub, const char *tag, int rc, const engine_conn_info *info);

#define ENGINE_REMOTE_TAG_MAX 48

/* The later answers of engine_rooms_ask and engine_publish_user_ask, on
 * the asking worker's thread: hub is that worker's, or NULL when the
 * worker shut down first (release arg only); arg is the caller's, given
 * back. rc: 0; -1 (publish_user: no connection of the user anywhere);
 * ENGINE_E_TIMEOUT or ENGINE_E_UNAVAILABLE (the engine could not tell).
 * rooms[0..n) (rc 0) is the engine's, valid during the call only. */
typedef void (*engine_rooms_fn)(void *hub, void *arg, int rc, const directory_room_entry *rooms,
                                size_t n);
typedef void (*engine_sent_fn)(void *hub, void *arg, int rc);

typedef struct engine_remote_req {
    engine_remote_kind kind;
    const char *conn_id;
    ws_frame *f;       /* SEND: borrowed */
    size_t max_queued; /* SEND: as engine_send_conn */
    uint16_t code;     /* CLOSE */
    const char *reason;
    engine_remote_fn done;
    const char *tag; /* the caller's name for the request (< ENGINE_REMOTE_TAG_MAX bytes) */
} engine_remote_req;

typedef struct engine_ops {
    const char *name;
    void (*free)(engine *e);
    /* Membership, called by the owning worker on its thread. `first` /
     * `last`: the worker's first connection of the user, or member of the
     * room, arrives / its last one goes. conn_opened's strings are
     * borrowed until conn_closed. */
    void (*conn_opened)(engine *e, directory_conn *rec, conn *c, int worker, const char *user_id,
                        const char *username, bool first);
    void (*conn_closed)(engine *e, const char *conn_id, const char *user_id, int worker, bool last);
    engine_room *(*room_joined)(engine *e, const char *conn_id, const char *room_id, int worker,
                                bool first);
    size_t (*room_left)(engine *e, const char *conn_id, const char *room_id, int worker, bool last);
    /* Messages. The frame is borrowed (the engine takes its own refs). */
    size_t (*publish_room)(engine *e, const char *room_id, engine_room *pinned, ws_frame *f,
                           const char *except, unsigned flags);
    int (*publish_user)(engine *e, const char *user_id, ws_frame *f);
    int (*send_conn)(engine *e, const char *conn_id, ws_frame *f, size_t max_queued);
    int (*close_conn)(engine *e, const char *conn_id, uint16_t code, const char *reason);
    int (*call_owner)(engine *e, const char *conn_id, engine_call_fn fn, void *arg);
    /* Stored messages: sequence and keep a chat, read history, record a
     * room's join; completion as engine_submit says. */
    int (*submit)(engine *e, store_op *op, bool bounded);
    /* Presence and lookups. */
    size_t (*room_count)(engine *e, const char *room_id, engine_room *pinned);
    size_t (*rooms)(engine *e, directory_room_entry **out);
    int (*conn_info)(engine *e, const char *conn_id, engine_conn_info *out);
    void (*conn_each)(engine *e, void (*fn)(const directory_conn *rec, void *ctx), void *ctx);
    size_t (*conn_total)(engine *e);
    size_t (*room_total)(engine *e);
    /* Can a chat be stored now? 0, or -1 with a reason in why (may be
     * NULL: always ready). */
    int (*health)(engine *e, char *why, size_t len);
    /* Ask the node that holds a connection (NULL: one node only). */
    int (*remote)(engine *e, const engine_remote_req *r);
    /* Answers that a multi-node engine gives later (NULL: answer at once
     * with rooms / publish_user). */
    int (*rooms_ask)(engine *e, engine_rooms_fn done, void *arg);
    int (*publish_user_ask)(engine *e, const char *user_id, ws_frame *f, engine_sent_fn done,
                            void *arg);
} engine_ops;

struct engine {
    const engine_ops *ops;
};

/* Return the local engine for nworkers workers (at most
 * DIRECTORY_MAX_WORKERS) delivering through d (static, borrowed), keeping
 * messages in st (borrowed; its on_commit hands committed ops back to the
 * application, which publishes them through this engine). Free with
 * engine_free. */
engine *engine_local_new(size_t nworkers, const engine_deliver *d, store *st);
/* Tell the local engine which server is worker `index` (before any
 * connection arrives). Deliveries to it are posted to srv's inbox. */
void engine_local_attach(engine *e, int index, server *srv);

static inline void engine_free(engine *e) { e->ops->free(e); }

/* A connection opened on worker `worker` (first: its first of the user
 * there) / closed (last: its last). rec is the caller's memory for the
 * connection's record, kept (with c and the strings) until conn_closed.
 * Owner thread. */
static inline void engine_conn_opened(engine *e, directory_conn *rec, conn *c, int worker,
                                      const char *user_id, const char *username, bool first) {
    e->ops->conn_opened(e, rec, c, worker, user_id, username, first);
}
static inline void engine_conn_closed(engine *e, const char *conn_id, const char *user_id,
                                      int worker, bool last) {
    e->ops->conn_closed(e, conn_id, user_id, worker, last);
}
/* Connection conn_id joined room_id (first: the worker's first member
 * there). Returns the room's handle, which the worker may keep and publish
 * through while it has members there. Owner thread. */
static inline engine_room *engine_room_joined(engine *e, const char *conn_id, const char *room_id,
                                              int worker, bool first) {
    return e->ops->room_joined(e, conn_id, room_id, worker, first);
}
/* Connection conn_id left room_id (last: the worker's last member there).
 * Returns the members left in the room everywhere. Owner thread. */
static inline size_t engine_room_left(engine *e, const char *conn_id, const char *room_id,
                                      int worker, bool last) {
    return e->ops->room_left(e, conn_id, room_id, worker, last);
}
/* Send f to every member of room_id but `except` (flags:
 * ENGINE_SKIP_RESUMING). pinned: the room's handle when the caller's
 * worker has members there (no lookup, no lock), else NULL. Frames
 * published by one thread reach each member in the order published.
 * Returns the room's member count (0: no room). */
static inline size_t engine_publish_room(engine *e, const char *room_id, engine_room *pinned,
                                         ws_frame *f, const char *except, unsigned flags) {
    return e->ops->publish_room(e, room_id, pinned, f, except, flags);
}
/* Send f to every connection of user_id. Returns 0, or -1 when the user
 * has none. */
static inline int engine_publish_user(engine *e, const char *user_id, ws_frame *f) {
    return e->ops->publish_user(e, user_id, f);
}
/* Send f to connection conn_id. Returns 0; -1 when there is no such live
 * connection (or a DELETE closed it); -2 when its unsent bytes already
 * pass max_queued (0: no check) and nothing was sent. */
static inline int engine_send_conn(engine *e, const char *conn_id, ws_frame *f, size_t max_queued) {
    return e->ops->send_conn(e, conn_id, f, max_queued);
}
/* Close connection conn_id with code and reason (the management API's
 * DELETE): it is gone to engine_send_conn and engine_conn_info at once.
 * Returns 0, or -1 when there is no such live connection. */
static inline int engine_close_conn(engine *e, const char *conn_id, uint16_t code,
                                    const char *reason) {
    return e->ops->close_conn(e, conn_id, code, reason);
}
/* Run fn(hub, arg) on the worker that owns conn_id, after what was posted
 * to that worker before. Returns 0, or -1 (fn not called, arg still the
 * caller's) when conn_id names no worker. */
static inline int engine_call_owner(engine *e, const char *conn_id, engine_call_fn fn, void *arg) {
    return e->ops->call_owner(e, conn_id, fn, arg);
}
/* Hand stored-message work to the engine: a chat (sequenced, kept, then
 * published to its room), a history read, a room's join. The local engine
 * queues it on the store (bounded: store_submit_bounded's limits). op->done,
 * if set, later runs on the worker that owns op->conn_id with op->ctx set
 * to that worker's hub. Returns 0 (op is the engine's), or -1 when refused
 * (bounded and the backlog is full: op is still the caller's). */
static inline int engine_submit(engine *e, store_op *op, bool bounded) {
    return e->ops->submit(e, op, bounded);
}
/* Members of room_id everywhere (pinned: as for engine_publish_room). */
static inline size_t engine_room_count(engine *e, const char *room_id, engine_room *pinned) {
    return e->ops->room_count(e, room_id, pinned);
}
/* Every room with members, sorted by id (see directory_rooms_sorted). */
static inline size_t engine_rooms(engine *e, directory_room_entry **out) {
    return e->ops->rooms(e, out);
}
/* Fill *out about live connection conn_id. Returns 0 or -1 (none, or
 * closed by a DELETE). */
static inline int engine_conn_lookup(engine *e, const char *conn_id, engine_conn_info *out) {
    return e->ops->conn_info(e, conn_id, out);
}
/* Call fn for every live connection (not those closed by a DELETE). */
static inline void engine_conn_each(engine *e, void (*fn)(const directory_conn *rec, void *ctx),
                                    void *ctx) {
    e->ops->conn_each(e, fn, ctx);
}
static inline size_t engine_conn_total(engine *e) { return e->ops->conn_total(e); }
static inline size_t engine_room_total(engine *e) { return e->ops->room_total(e); }
/* 0 when the engine can store a chat now (for /readyz), else -1 with a
 * reason in why (len bytes). */
static inline int engine_health(engine *e, char *why, size_t len) {
    return e->ops->health ? e->ops->health(e, why, len) : 0;
}

/* Ask the node holding connection r->conn_id (one engine_send_conn,
 * engine_conn_lookup or engine_close_conn answered ENGINE_E_ELSEWHERE)
 * to do r there. From a worker's thread. Returns 0: r->done runs later on
 * this thread, exactly once, within the engine's bound (never from inside
 * this call), unless the worker shuts down first; -1: no node can hold
 * such an id (gone); ENGINE_E_UNAVAILABLE: cannot ask now. */
static inline int engine_remote(engine *e, const engine_remote_req *r) {
    return e->ops->remote ? e->ops->remote(e, r) : -1;
}

/* Every room with members everywhere, as the engine's store of counts
 * says now (a multi-node engine asks it; engine_rooms may be behind).
 * From a worker's thread. Returns ENGINE_PENDING: done(hub, arg, ...)
 * runs later on this thread, exactly once, never from inside this call;
 * 0: not asked (one node: engine_rooms is exact), done is not called. */
static inline int engine_rooms_ask(engine *e, engine_rooms_fn done, void *arg) {
    return e->ops->rooms_ask ? e->ops->rooms_ask(e, done, arg) : 0;
}

/* engine_publish_user, deciding "no such user" from where the user's
 * connections are now (a multi-node engine asks it). From a worker's
 * thread. Returns 0 (sent) or -1 (no connection of the user) as
 * engine_publish_user, or ENGINE_PENDING: f was handed on and done(hub,
 * arg, rc) runs later on this thread, exactly once. f is borrowed. */
static inline int engine_publish_user_ask(engine *e, const char *user_id, ws_frame *f,
                                          engine_sent_fn done, void *arg) {
    return e->ops->publish_user_ask ? e->ops->publish_user_ask(e, user_id, f, done, arg)
                                    : engine_publish_user(e, user_id, f);
}

#endif
