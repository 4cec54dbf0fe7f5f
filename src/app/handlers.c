#include "app/handlers.h"

#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/json_escape.h"
#include "common/random.h"
#include "common/strbuf.h"
#include "app/events.h"
#include "log/log.h"

static void send_json(conn *c, json_t *j) {
    ws_frame *f = event_json_frame(j);
    conn_send(c, f);
    ws_frame_unref(f);
}

/* Send {"type":type,"data":{fields}} to c. */
static void send_event(conn *c, const char *type, const event_field *fields, size_t n) {
    ws_frame *f = event_frame(type, fields, n);
    conn_send(c, f);
    ws_frame_unref(f);
}

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

void handlers_send_error(conn *c, const char *message, const char *code) {
    const event_field data[] = {EVENT_FIELD_STR("message", message), EVENT_FIELD_STR("code", code),
                                EVENT_FIELD_INT("timestamp", time(NULL))};
    send_event(c, "error", data, NFIELDS(data));
}

static void fail(conn *c, handler_result *res, int status, const char *code, const char *msg) {
    handlers_send_error(c, msg, code);
    res->status = status;
    res->error = msg;
}

void handlers_send_errorf(conn *c, const char *code, const char *fmt, const char *arg) {
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, arg);
    /* Bug fixed: a long value cut inside a UTF-8 character made the reply
     * unencodable, and the server aborted. */
    msg[ws_utf8_trim(msg, strlen(msg))] = '\0';
    handlers_send_error(c, msg, code);
}

/* Same as fail() for a message built at run time: the log keeps a generic
 * text, the client gets the full one. */
static void failf(conn *c, handler_result *res, int status, const char *code, const char *generic,
                  const char *fmt, const char *arg) {
    handlers_send_errorf(c, code, fmt, arg);
    res->status = status;
    res->error = generic;
}

void handlers_presence(hub *h, const char *room_id, session *s, const char *type,
                       const char *except) {
    const event_field data[] = {
        EVENT_FIELD_STR("userId", s->user_id), EVENT_FIELD_STR("username", s->username),
        EVENT_FIELD_STR("roomId", room_id), EVENT_FIELD_INT("timestamp", time(NULL))};
    room *local = registry_room(&h->reg, room_id);
    engine_room *pinned = local ? local->engine_room : NULL;
    /* Nobody to tell (a connect to an empty room, the last one leaving):
     * no event is encoded. */
    size_t members = engine_room_count(h->app->engine, room_id, pinned);
    if (members == 0 || (members == 1 && except && local && local->count == 1 &&
                         strcmp(local->members->c->id, except) == 0))
        return;
    ws_frame *f = event_frame(type, data, NFIELDS(data));
    engine_publish_room(h->app->engine, room_id, pinned, f, except, 0);
    ws_frame_unref(f);
}

size_t handlers_leave(hub *h, session *s) {
    room *rm = s->room;
    if (!rm) return 0;
    bool last = rm->count == 1;
    char *room_id = xstrdup(rm->id); /* rm goes with its last member */
    registry_leave(&h->reg, s);
    size_t left = engine_room_left(h->app->engine, s->c->id, room_id, h->index, last);
    free(room_id);
    return left;
}

room *handlers_join(hub *h, session *s, const char *room_id) {
    handlers_leave(h, s);
    room *rm = registry_join(&h->reg, s, room_id);
    rm->engine_room =
        engine_room_joined(h->app->engine, s->c->id, room_id, h->index, rm->count == 1);
    return rm;
}

/* ---- what the engine hands this worker (on its thread) ---- */

static void deliver_room(void *hp, const char *room_id, ws_frame *f, const char *except,
                         unsigned flags) {
    hub *h = hp;
    room *rm = registry_room(&h->reg, room_id);
    if (!rm) return; /* everyone here left meanwhile */
    for (session *m = rm->members; m; m = m->room_next) {
        /* a resuming member gets stored chats from its replay */
        if ((flags & ENGINE_SKIP_RESUMING) && m->resuming) continue;
        if (except && strcmp(m->c->id, except) == 0) continue;
        conn_send(m->c, f);
    }
}

static void deliver_user(void *hp, const char *user_id, ws_frame *f) {
    hub *h = hp;
    for (session *m = registry_user(&h->reg, user_id); m; m = m->user_next) conn_send(m->c, f);
}

static void deliver_conn(void *hp, const char *conn_id, ws_frame *f, bool counted) {
    hub *h = hp;
    session *s = registry_by_id(&h->reg, conn_id);
    if (!s) return;
    if (counted) __atomic_fetch_sub(&s->c->posted_bytes, f->len, __ATOMIC_RELAXED);
    conn_send(s->c, f);
}

static void deliver_close(void *hp, const char *conn_id, uint16_t code, const char *reason) {
    hub *h = hp;
    session *s = registry_by_id(&h->reg, conn_id);
    if (s) conn_close(s->c, code, reason);
}

static const engine_deliver deliver_table = {
    .room = deliver_room,
    .user = deliver_user,
    .conn = deliver_conn,
    .close = deliver_close,
};

const engine_deliver *handlers_deliver(void) { return &deliver_table; }

void handlers_welcome(session *s) {
    char msg[300];
    snprintf(msg, sizeof(msg), "Welcome to room %s!", s->room ? s->room->id : "");
    const event_field data[] = {
        EVENT_FIELD_STR("connectionId", s->c->id), EVENT_FIELD_STR("userId", s->user_id),
        EVENT_FIELD_STR("roomId", s->room ? s->room->id : ""), EVENT_FIELD_STR("message", msg),
        EVENT_FIELD_INT("timestamp", time(NULL))};
    send_event(s->c, "welcome", data, NFIELDS(data));
}

void handlers_room_join(app *a, session *s, const char *room_id) {
    /* The store writes a join only for a new or hour-idle room: a room this
     * worker joined a moment ago costs it nothing, so the op is not sent. */
    hub *h = s->c->srv->app; /* the worker's hub (the server's app pointer) */
    if (!room_joins_due(&h->joins, room_id, store_rooms_gen(a->store), time(NULL))) return;
    store_op *op = store_op_new(STORE_OP_ROOM_JOIN);
    op->room_id = xstrdup(room_id);
    op->user_id = xstrdup(s->user_id);
    op->timestamp = time(NULL);
    engine_submit(a->engine, op, false);
}

static bool blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) return false;
    return true;
}

/* Return the string member `key` of body, NULL when absent, null or not a
 * string (in which case *wrong_type is set). */
static const char *get_string(json_t *body, const char *key, bool *wrong_type) {
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return NULL;
    if (!json_is_string(v)) {
        if (wrong_type) *wrong_type = true;
        return NULL;
    }
    return json_string_value(v);
}

/* Return the integer member `key` of body when it is from 1 to max, def
 * when it is absent or null, and -1 when it is anything else (the caller
 * answers BAD_REQUEST with its own text). */
static json_int_t get_positive(json_t *body, const char *key, json_int_t def, json_int_t max) {
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return def;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max) return -1;
    return json_integer_value(v);
}

/* ---- chat ---- */

/* Broadcasts queued this loop turn and not yet written: when each chat was
 * read and when its completion ran, until the turn's flush reports its
 * writes (loop 0 only: completions run there). At most a turn's worth of
 * completions (STORE_COMPLETIONS_PER_TURN); past that a chat's write
 * phases are not sampled. */
#define FANOUT_SAMPLES 512
static _Thread_local struct {
    uint64_t received[FANOUT_SAMPLES], ran[FANOUT_SAMPLES];
    unsigned n;
} fanout;

static void chat_flushed(void *ctx, uint64_t first_ns, uint64_t last_ns) {
    metrics *m = ctx;
    for (unsigned i = 0; i < fanout.n; i++) {
        /* A chat whose completion ran inside the flush (server.c runs posts
         * mid-flush) had its first write right after: 0, not a negative. */
        uint64_t fw = first_ns > fanout.ran[i] ? first_ns - fanout.ran[i] : 0;
        metrics_observe_chat_stage(m, METRICS_CHAT_FIRST_WRITE, fw);
        metrics_observe_chat_stage(m, METRICS_CHAT_FANOUT, last_ns - fanout.ran[i]);
        if (fanout.received[i])
            metrics_observe_chat_stage(m, METRICS_CHAT_TOTAL, last_ns - fanout.received[i]);
    }
    fanout.n = 0;
}

/* Count a committed chat's phases up to now (its completion, on loop 0)
 * and have the flush that writes its broadcast count the rest. */
static void chat_phases(app *a, const store_op *op, bool broadcast) {
    metrics *m = app_metrics(a);
    uint64_t now = clock_mono_ns();
    if (op->t_received && op->t_submitted >= op->t_received)
        metrics_observe_chat_stage(m, METRICS_CHAT_HANDLE, op->t_submitted - op->t_received);
    metrics_observe_chat_stage(m, METRICS_CHAT_QUEUE, op->t_batch - op->t_submitted);
    metrics_observe_chat_stage(m, METRICS_CHAT_APPLY, op->t_applied - op->t_batch);
    metrics_observe_chat_stage(m, METRICS_CHAT_COMMIT, op->t_committed - op->t_applied);
    metrics_observe_chat_stage(m, METRICS_CHAT_WAKEUP, now - op->t_committed);
    if (!broadcast || fanout.n == FANOUT_SAMPLES) return;
    fanout.received[fanout.n] = op->t_received;
    fanout.ran[fanout.n++] = now;
    server_time_next_flush(chat_flushed, m);
}

/* A chat's completion on its sender's worker (after its broadcast was
 * handed to every worker): a retry's original to the sender, or the
 * error; the chat's phases. */
static void chat_done(store_op *op) {
    hub *h = op->ctx;
    app *a = h->app;
    session *s = registry_by_id(&h->reg, op->conn_id);
    if (op->status == 0 && op->duplicate) {
        /* A retry of a message already stored: the sender gets the original
         * (same messageId and seq); nobody else hears it again. */
        if (s) {
            ws_frame *f = event_chat_frame(op);
            conn_send(s->c, f);
            ws_frame_unref(f);
        }
        return;
    }
    if (op->status != 0) {
        log_msg(LOG_ERROR, "store_error", "message %s not stored: status %d", op->message_id,
                op->status);
        metrics_count_integration_error(app_metrics(a), METRICS_SLOT_DEFAULT);
        if (s) handlers_send_error(s->c, "Failed to store message", "INTERNAL_ERROR");
        return;
    }
    chat_phases(a, op, registry_room(&h->reg, op->room_id) != NULL);
}

_Static_assert(CONN_ID_LEN < sizeof(((store_op *)0)->conn_id), "a connection id fits a store op");

/* An op's completion, on the worker that owns the connection that asked
 * (hub NULL: that worker is gone). */
static void run_done(void *hp, void *arg) {
    store_op *op = arg;
    if (hp) {
        op->ctx = hp;
        op->done(op);
    }
    store_op_free(op);
}

void handlers_store_committed(store_op *op, void *ctx) {
    app *a = ctx;
    /* Off the workers (store or sync thread), in commit order: the chat goes to every worker
     * with members in its room at once (one encode, one post per worker),
     * so each member sees a room's seq in order with no hub loop. */
    if (op->kind == STORE_OP_CHAT && op->status == 0 && !op->duplicate) {
        ws_frame *f = event_chat_frame(op);
        engine_publish_room(a->engine, op->room_id, NULL, f, NULL, ENGINE_SKIP_RESUMING);
        ws_frame_unref(f);
    }
    if (!op->done || engine_call_owner(a->engine, op->conn_id, run_done, op) != 0)
        store_op_free(op);
}

static void route_chat(hub *h, session *s, json_t *body, handler_result *res) {
    app *a = h->app;
    bool wrong = false;
    const char *msg = get_string(body, "message", &wrong);
    const char *room_id = get_string(body, "roomId", &wrong);
    if (wrong) {
        fail(s->c, res, 400, "BAD_REQUEST", "Message and roomId must be strings");
        return;
    }
    if (!msg || blank(msg)) {
        fail(s->c, res, 400, "BAD_REQUEST", "Message cannot be empty");
        return;
    }
    if (room_id && (!s->room || strcmp(room_id, s->room->id) != 0)) {
        failf(s->c, res, 403, "FORBIDDEN", "Not a member of room", "Not a member of room %s",
              room_id);
        return;
    }
    if (!s->room) {
        fail(s->c, res, 400, "BAD_REQUEST", "Not in a room");
        return;
    }
    const char *client_id = get_string(body, "clientMessageId", &wrong);
    if (wrong || (client_id && (!*client_id || strlen(client_id) > 128))) {
        fail(s->c, res, 400, "BAD_REQUEST",
             "clientMessageId must be a string of 1 to 128 characters");
        return;
    }
    store_op *op = store_op_new(STORE_OP_CHAT);
    if (client_id) op->client_message_id = xstrdup(client_id);
    op->room_id = xstrdup(s->room->id);
    op->user_id = xstrdup(s->user_id);
    op->username = xstrdup(s->username);
    op->message = xstrdup(msg);
    op->timestamp = time(NULL);
    random_uuid7(op->message_id); /* time-ordered: the messageId index grows at its edge */
    snprintf(op->conn_id, sizeof(op->conn_id), "%s", s->c->id);
    op->done = chat_done;
    op->t_received = app_message_received_ns();
    if (engine_submit(a->engine, op, true) != 0) {
        /* The store's backlog is full (a stalled disk): refuse now rather
         * than hold the message in memory; nothing was stored. */
        store_op_free(op);
        fail(s->c, res, 429, "THROTTLED", "Too Many Requests");
    }
}

/* Store reads one connection may have in flight. Each completed read holds
 * up to HISTORY_MAX_BYTES (below) of messages until its worker sends it, and the
 * send queue's limit only applies then: without this bound a client that
 * sent thousands of history requests (or join_room with sinceSeq) without
 * reading made the server hold them all at once (over 1 GB). A client
 * paging back has one read out at a time. */
#define HANDLERS_MAX_STORE_READS 4

/* Count a read submitted for s; false when s already has the most allowed
 * (the caller answers Too Many Requests and submits nothing). */
static bool store_read_begin(session *s) {
    if (s->store_reads >= HANDLERS_MAX_STORE_READS) return false;
    s->store_reads++;
    return true;
}

static void store_read_end(session *s) {
    if (s->store_reads > 0) s->store_reads--;
}

/* ---- rooms ---- */

static void route_join_room(hub *h, session *s, json_t *body, handler_result *res) {
    app *a = h->app;
    bool wrong = false;
    const char *room_id = get_string(body, "roomId", &wrong);
    json_t *sv = json_object_get(body, "sinceSeq");
    json_int_t since = -1;
    if (sv && !json_is_null(sv)) {
        if (!json_is_integer(sv) || json_integer_value(sv) < 0) {
            fail(s->c, res, 400, "BAD_REQUEST", "sinceSeq must be a non-negative integer");
            return;
        }
        since = json_integer_value(sv);
        /* A replay is a store read: bounded as history's are. */
        if (s->store_reads >= HANDLERS_MAX_STORE_READS) {
            fail(s->c, res, 429, "THROTTLED", "Too Many Requests");
            return;
        }
    }
    if (!room_id || !*room_id) {
        fail(s->c, res, 400, "BAD_REQUEST", "Room ID required");
        return;
    }
    if (!auth_valid_id(room_id)) {
        fail(s->c, res, 400, "BAD_REQUEST", "Invalid room ID");
        return;
    }
    if (s->room && strcmp(s->room->id, room_id) == 0) {
        /* Already there: confirm to the joiner only (the others saw it
         * come), and replay from sinceSeq as a first join would: a client
         * that lost messages asks again without leaving. */
        const event_field data[] = {
            EVENT_FIELD_STR("userId", s->user_id), EVENT_FIELD_STR("username", s->username),
            EVENT_FIELD_STR("roomId", room_id), EVENT_FIELD_INT("timestamp", time(NULL))};
        send_event(s->c, "user_joined", data, NFIELDS(data));
        if (since >= 0) {
            s->resuming = false;
            s->resume_gen++;
            handlers_resume(h, s, since);
        }
        return;
    }
    /* Tell the old room's other members first, then leave it. */
    if (s->room) handlers_presence(h, s->room->id, s, "user_left", s->c->id);
    handlers_join(h, s, room_id);
    handlers_room_join(a, s, room_id);
    handlers_presence(h, room_id, s, "user_joined", NULL);
    s->resuming = false;
    s->resume_gen++;
    if (since >= 0) handlers_resume(h, s, since);
}

static void route_leave_room(hub *h, session *s, json_t *body, handler_result *res) {
    if (!s->room) {
        fail(s->c, res, 400, "BAD_REQUEST", "Not in a room");
        return;
    }
    handlers_presence(h, s->room->id, s, "user_left", NULL);
    handlers_leave(h, s);
}

/* ---- private messages ---- */

/* A private message whose target the engine looked up later (another
 * node may hold the user): the sender, if still here, gets the one-node
 * answer, or an error when the engine could not tell. */
static void private_sent(void *hp, void *arg, int rc) {
    hub *h = hp;
    char *conn_id = arg;
    session *s = h && rc != 0 ? registry_by_id(&h->reg, conn_id) : NULL;
    free(conn_id);
    if (!s) return;
    if (rc == -1) handlers_send_error(s->c, "Target user not found or offline", "NOT_FOUND");
    else handlers_send_error(s->c, "Failed to send private message", "INTERNAL_ERROR");
}

static void route_private_message(hub *h, session *s, json_t *body, handler_result *res) {
    bool wrong = false;
    const char *target = get_string(body, "targetUserId", &wrong);
    const char *msg = get_string(body, "message", &wrong);
    if (!target || !*target || !msg || blank(msg)) {
        fail(s->c, res, 400, "BAD_REQUEST",
             "Target user ID and message required for private messages");
        return;
    }
    char id[37];
    random_uuid7(id);
    const event_field data[] = {EVENT_FIELD_STR("messageId", id),
                                EVENT_FIELD_STR("senderId", s->user_id),
                                EVENT_FIELD_STR("senderName", s->username),
                                EVENT_FIELD_STR("targetUserId", target),
                                EVENT_FIELD_STR("message", msg),
                                EVENT_FIELD_INT("timestamp", time(NULL))};
    ws_frame *f = event_frame("private_message", data, NFIELDS(data));
    char *conn_id = xstrdup(s->c->id);
    int rc = engine_publish_user_ask(h->app->engine, target, f, private_sent, conn_id);
    ws_frame_unref(f);
    if (rc == ENGINE_PENDING) return; /* private_sent has conn_id */
    free(conn_id);
    if (rc != 0) fail(s->c, res, 404, "NOT_FOUND", "Target user not found or offline");
}

/* ---- room list, typing ---- */

/* Bytes an entry {"roomId":ID,"activeUsers":N} takes in a reply, at most:
 * room ids hold no control characters (auth_valid_id), so only quotes and
 * backslashes grow when escaped. */
static size_t room_entry_bytes(const char *id) {
    size_t n = strlen(id);
    for (const char *p = id; *p; p++)
        if (*p == '"' || *p == '\\') n++;
    return n + sizeof("{\"roomId\":\"\",\"activeUsers\":},") + 20;
}

json_t *handlers_rooms_page(const directory_room_entry *rooms, size_t n, const char *after,
                            size_t limit, size_t max_bytes, char **next) {
    size_t i = 0;
    if (after && *after) {
        /* The first room whose id sorts after `after` (it need not exist). */
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(rooms[mid].id, after) <= 0) lo = mid + 1;
            else hi = mid;
        }
        i = lo;
    }
    json_t *arr = json_array();
    size_t used = 0, taken = 0;
    for (; i < n && taken < limit; i++, taken++) {
        size_t b = room_entry_bytes(rooms[i].id);
        if (taken > 0 && used + b > max_bytes) break; /* one room always goes: pages advance */
        used += b;
        json_array_append_new(arr, json_pack("{s:s,s:I}", "roomId", rooms[i].id, "activeUsers",
                                             (json_int_t)rooms[i].count));
    }
    *next = i < n && taken > 0 ? xstrdup(rooms[i - 1].id) : NULL;
    return arr;
}

json_t *handlers_rooms_array(const directory_room_entry *rooms, size_t n) {
    char *next;
    json_t *arr = handlers_rooms_page(rooms, n, NULL, SIZE_MAX, SIZE_MAX, &next);
    free(next);
    return arr;
}

json_t *handlers_rooms_json(engine *e) {
    directory_room_entry *rooms;
    size_t n = engine_rooms(e, &rooms);
    json_t *arr = handlers_rooms_array(rooms, n);
    directory_rooms_free(rooms, n);
    return arr;
}

#define ROOM_LIST_DEFAULT_LIMIT 1000
#define ROOM_LIST_MAX_LIMIT     1000
/* Bytes kept for what surrounds the entries: type, timestamp, hasMore and
 * nextAfter (an id of at most 128 characters, escaped). */
#define ROOM_LIST_ENVELOPE 1024

/* A room_list request, kept while the engine reads the counts. */
typedef struct room_list_req {
    char conn_id[CONN_ID_LEN + 1];
    char *after;
    size_t limit, budget;
} room_list_req;

static void room_list_send(conn *c, const room_list_req *q, const directory_room_entry *all,
                           size_t n) {
    char *next;
    json_t *rooms = handlers_rooms_page(all, n, q->after, q->limit, q->budget, &next);
    json_t *data = json_pack("{s:o,s:I,s:b}", "rooms", rooms, "timestamp", (json_int_t)time(NULL),
                             "hasMore", next != NULL);
    if (next) json_object_set_new(data, "nextAfter", json_string(next));
    free(next);
    send_json(c, json_pack("{s:s,s:o}", "type", "room_list", "data", data));
}

static void room_list_req_free(room_list_req *q) {
    free(q->after);
    free(q);
}

/* The engine's later answer (another node's rooms are counted in Redis):
 * to the asker if still here. */
static void room_list_counted(void *hp, void *arg, int rc, const directory_room_entry *all,
                              size_t n) {
    hub *h = hp;
    room_list_req *q = arg;
    session *s = h ? registry_by_id(&h->reg, q->conn_id) : NULL;
    if (s && rc != 0) {
        metrics_count_integration_error(app_metrics(h->app), METRICS_SLOT_DEFAULT);
        handlers_send_error(s->c, "Failed to list rooms", "INTERNAL_ERROR");
    } else if (s) {
        room_list_send(s->c, q, all, n);
    }
    room_list_req_free(q);
}

/* One page of the listing, within room_list_max_bytes and half the send
 * queue's cap: a listing of thousands of rooms used to be one frame above
 * max_queued_bytes, and the server cut the client that asked for it. */
static void route_room_list(hub *h, session *s, json_t *body, handler_result *res) {
    app *a = h->app;
    bool wrong = false;
    const char *after = get_string(body, "after", &wrong);
    if (wrong) {
        fail(s->c, res, 400, "BAD_REQUEST", "after must be a string");
        return;
    }
    json_int_t limit = get_positive(body, "limit", ROOM_LIST_DEFAULT_LIMIT, ROOM_LIST_MAX_LIMIT);
    if (limit < 0) {
        fail(s->c, res, 400, "BAD_REQUEST", "limit must be an integer from 1 to 1000");
        return;
    }
    size_t budget = (size_t)a->cfg->room_list_max_bytes;
    size_t half_queue = (size_t)a->cfg->max_queued_bytes / 2;
    if (half_queue < budget) budget = half_queue;
    budget = budget > ROOM_LIST_ENVELOPE ? budget - ROOM_LIST_ENVELOPE : 0;
    room_list_req *q = xcalloc(1, sizeof(*q));
    snprintf(q->conn_id, sizeof(q->conn_id), "%s", s->c->id);
    q->after = after ? xstrdup(after) : NULL;
    q->limit = (size_t)limit;
    q->budget = budget;
    if (engine_rooms_ask(a->engine, room_list_counted, q) == ENGINE_PENDING) return;
    directory_room_entry *all;
    size_t n = engine_rooms(a->engine, &all);
    room_list_send(s->c, q, all, n);
    directory_rooms_free(all, n);
    room_list_req_free(q);
}

static void route_typing_indicator(hub *h, session *s, json_t *body, handler_result *res) {
    if (!s->room) {
        fail(s->c, res, 400, "BAD_REQUEST", "Not in a room");
        return;
    }
    json_t *v = json_object_get(body, "isTyping");
    bool typing = !v || !json_is_boolean(v) || json_is_true(v);
    const event_field data[] = {
        EVENT_FIELD_STR("userId", s->user_id), EVENT_FIELD_STR("username", s->username),
        EVENT_FIELD_STR("roomId", s->room->id), EVENT_FIELD_BOOL("isTyping", typing),
        EVENT_FIELD_INT("timestamp", time(NULL))};
    ws_frame *f = event_frame("typing_indicator", data, NFIELDS(data));
    engine_publish_room(h->app->engine, s->room->id, s->room->engine_room, f, s->c->id, 0);
    ws_frame_unref(f);
}

/* ---- history and resume ---- */

#define HISTORY_DEFAULT_LIMIT 50
#define HISTORY_MAX_LIMIT     500
/* Messages replayed per store read while resuming. */
#define RESUME_PAGE 500
/* Message bytes in one history reply or one resume page at most: a
 * history of 50 chats of 25 KB is answered in pages (hasMore) rather than
 * one frame of 1.25 MB, and a reply never holds more than this in memory. */
#define HISTORY_MAX_BYTES (256 * 1024)

static void history_read(store_op *op) {
    hub *h = op->ctx;
    app *a = h->app;
    session *s = registry_by_id(&h->reg, op->conn_id);
    if (!s) return;
    store_read_end(s);
    if (op->status != 0) {
        metrics_count_integration_error(app_metrics(a), METRICS_SLOT_DEFAULT);
        handlers_send_error(s->c, "Failed to read history", "INTERNAL_ERROR");
        return;
    }
    send_json(s->c, json_pack("{s:s,s:{s:s,s:O,s:b}}", "type", "history", "data", "roomId",
                              op->room_id, "messages", op->messages, "hasMore", op->has_more));
}

static void submit_resume_page(hub *h, session *s, const char *room_id, int64_t after, bool first);

/* Before the first page of a replay from sinceSeq = S: when messages after
 * S are gone (past the TTL), or S is beyond the room's counter (a restored
 * or another store), say so with a history_gap event instead of replaying
 * in silence. Messages S+1 .. oldestSeq-1 are missing. */
static void resume_gap(session *s, const store_op *op) {
    int64_t since = op->after_seq, last = op->last_seq;
    int64_t first = op->oldest_seq ? op->oldest_seq : last + 1; /* first seq still kept */
    const char *reason = NULL;
    if (since > last) reason = "ahead";
    else if (first > since + 1) reason = "expired";
    if (!reason) return;
    const event_field data[] = {
        EVENT_FIELD_STR("roomId", op->room_id), EVENT_FIELD_INT("sinceSeq", since),
        EVENT_FIELD_INT("oldestSeq", first),    EVENT_FIELD_INT("lastSeq", last),
        EVENT_FIELD_STR("reason", reason),      EVENT_FIELD_INT("timestamp", time(NULL))};
    send_event(s->c, "history_gap", data, NFIELDS(data));
}

/* A page of stored messages for a resuming session: sent as ordinary chat
 * messages, oldest first. Live messages of the room were held back while
 * the page was read (they all have seq <= the page's last, as the store
 * runs reads and writes in one order), so nothing is missed or doubled. */
static void resume_read(store_op *op) {
    hub *h = op->ctx;
    app *a = h->app;
    session *s = registry_by_id(&h->reg, op->conn_id);
    if (s) store_read_end(s);
    if (!s || s->resume_gen != op->gen || !s->room || strcmp(s->room->id, op->room_id) != 0) return;
    if (op->status != 0) {
        s->resuming = false;
        metrics_count_integration_error(app_metrics(a), METRICS_SLOT_DEFAULT);
        handlers_send_error(s->c, "Failed to read history", "INTERNAL_ERROR");
        return;
    }
    if (op->bounds) resume_gap(s, op);
    size_t n = json_array_size(op->messages);
    for (size_t i = 0; i < n; i++)
        send_json(s->c,
                  json_pack("{s:s,s:O}", "type", "chat", "data", json_array_get(op->messages, i)));
    if (op->has_more && n > 0) {
        json_t *last = json_object_get(json_array_get(op->messages, n - 1), "seq");
        submit_resume_page(h, s, op->room_id, (int64_t)json_integer_value(last), false);
        return;
    }
    s->resuming = false;
}

static void submit_resume_page(hub *h, session *s, const char *room_id, int64_t after, bool first) {
    store_op *op = store_op_new(STORE_OP_HISTORY);
    op->room_id = xstrdup(room_id);
    op->after_seq = after;
    op->limit = RESUME_PAGE;
    op->max_bytes = HISTORY_MAX_BYTES;
    op->bounds = first;
    op->gen = s->resume_gen;
    snprintf(op->conn_id, sizeof(op->conn_id), "%s", s->c->id);
    op->done = resume_read;
    s->store_reads++; /* the caller checked the bound (a next page replaces its own read) */
    engine_submit(h->app->engine, op, false);
}

void handlers_resume(hub *h, session *s, int64_t since) {
    if (!s->room) return;
    s->resuming = true;
    submit_resume_page(h, s, s->room->id, since, true);
}

static void route_history(hub *h, session *s, json_t *body, handler_result *res) {
    app *a = h->app;
    bool wrong = false;
    const char *room_id = get_string(body, "roomId", &wrong);
    if (wrong) {
        fail(s->c, res, 400, "BAD_REQUEST", "roomId must be a string");
        return;
    }
    if (!room_id) {
        if (!s->room) {
            fail(s->c, res, 400, "BAD_REQUEST", "Not in a room");
            return;
        }
        room_id = s->room->id;
    }
    if (!s->room || strcmp(room_id, s->room->id) != 0) {
        failf(s->c, res, 403, "FORBIDDEN", "Not a member of room", "Not a member of room %s",
              room_id);
        return;
    }
    json_int_t limit = get_positive(body, "limit", HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT);
    if (limit < 0) {
        fail(s->c, res, 400, "BAD_REQUEST", "limit must be an integer from 1 to 500");
        return;
    }
    json_int_t before = get_positive(body, "beforeSeq", 0, LLONG_MAX);
    if (before < 0) {
        fail(s->c, res, 400, "BAD_REQUEST", "beforeSeq must be a positive integer");
        return;
    }
    store_op *op = store_op_new(STORE_OP_HISTORY);
    op->room_id = xstrdup(room_id);
    op->before_seq = before;
    op->limit = (int)limit;
    op->max_bytes = HISTORY_MAX_BYTES;
    snprintf(op->conn_id, sizeof(op->conn_id), "%s", s->c->id);
    op->done = history_read;
    if (!store_read_begin(s)) {
        store_op_free(op);
        fail(s->c, res, 429, "THROTTLED", "Too Many Requests");
        return;
    }
    if (engine_submit(a->engine, op, true) != 0) {
        store_read_end(s);
        store_op_free(op);
        fail(s->c, res, 429, "THROTTLED", "Too Many Requests");
    }
}

typedef void (*route_handler)(hub *h, session *s, json_t *body, handler_result *res);

/* The route table: one row per built-in route key (Redis's command table). */
static const route_handler route_table[ROUTE_COUNT] = {
    [ROUTE_CHAT] = route_chat,
    [ROUTE_JOIN_ROOM] = route_join_room,
    [ROUTE_LEAVE_ROOM] = route_leave_room,
    [ROUTE_PRIVATE_MESSAGE] = route_private_message,
    [ROUTE_ROOM_LIST] = route_room_list,
    [ROUTE_TYPING_INDICATOR] = route_typing_indicator,
    [ROUTE_HISTORY] = route_history,
};

void handlers_run(hub *h, session *s, route_id id, json_t *body, handler_result *res) {
    assert(server_owns(s->c)); /* a worker runs only its own connections */
    res->status = 200;
    res->error = NULL;
    if (id < 0 || id >= ROUTE_COUNT || !route_table[id]) return;
    route_table[id](h, s, body, res);
}
