#include "app/handlers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "log/log.h"

ws_frame *handlers_frame(json_t *j) {
    char *txt = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!txt) abort(); /* only on allocation failure */
    ws_frame *f = ws_frame_new(WS_OP_TEXT, txt, strlen(txt));
    free(txt);
    return f;
}

static void send_json(conn *c, json_t *j) {
    ws_frame *f = handlers_frame(j);
    conn_send(c, f);
    ws_frame_unref(f);
}

void handlers_send_error(conn *c, const char *message, const char *code) {
    send_json(c, json_pack("{s:s,s:{s:s,s:s,s:I}}", "type", "error", "data", "message", message,
                           "code", code, "timestamp", (json_int_t)time(NULL)));
}

static void fail(conn *c, handler_result *res, int status, const char *code, const char *msg) {
    handlers_send_error(c, msg, code);
    res->status = status;
    res->error = msg;
}

/* Same as fail() for a message built at run time: the log keeps a generic
 * text, the client gets the full one. */
static void failf(conn *c, handler_result *res, int status, const char *code, const char *generic,
                  const char *fmt, const char *arg) {
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, arg);
    handlers_send_error(c, msg, code);
    res->status = status;
    res->error = generic;
}

void handlers_presence(room *rm, session *s, const char *type, session *except) {
    ws_frame *f = handlers_frame(json_pack("{s:s,s:{s:s,s:s,s:s,s:I}}", "type", type, "data", "userId",
                                           s->user_id, "username", s->username, "roomId", rm->id,
                                           "timestamp", (json_int_t)time(NULL)));
    for (session *m = rm->members; m; m = m->room_next)
        if (m != except) conn_send(m->c, f);
    ws_frame_unref(f);
}

void handlers_welcome(session *s) {
    char msg[300];
    snprintf(msg, sizeof(msg), "Welcome to room %s!", s->room ? s->room->id : "");
    send_json(s->c, json_pack("{s:s,s:{s:s,s:s,s:s,s:s,s:I}}", "type", "welcome", "data",
                              "connectionId", s->c->id, "userId", s->user_id, "roomId",
                              s->room ? s->room->id : "", "message", msg, "timestamp",
                              (json_int_t)time(NULL)));
}

void handlers_room_join(app *a, session *s, const char *room_id) {
    store_op *op = store_op_new(STORE_OP_ROOM_JOIN);
    op->room_id = xstrdup(room_id);
    op->user_id = xstrdup(s->user_id);
    op->timestamp = time(NULL);
    store_submit(a->store, op);
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

/* ---- chat ---- */

static void chat_committed(store_op *op) {
    app *a = op->ctx;
    if (op->status != 0) {
        session *s = registry_by_id(&a->reg, op->conn_id);
        log_msg(LOG_ERROR, "store_error", "message %s not stored: status %d", op->message_id, op->status);
        metrics_count_integration_error(a->metrics, METRICS_SLOT_DEFAULT);
        if (s) handlers_send_error(s->c, "Failed to store message", "INTERNAL_ERROR");
        return;
    }
    room *rm = registry_room(&a->reg, op->room_id);
    if (!rm) return; /* everyone left while it was being stored */
    ws_frame *f = handlers_frame(json_pack(
        "{s:s,s:{s:s,s:s,s:I,s:s,s:s,s:s,s:I}}", "type", "chat", "data", "messageId", op->message_id,
        "roomId", op->room_id, "seq", (json_int_t)op->seq, "senderId", op->user_id, "senderName",
        op->username, "message", op->message, "timestamp", (json_int_t)op->timestamp));
    for (session *m = rm->members; m; m = m->room_next) conn_send(m->c, f);
    ws_frame_unref(f);
}

static void route_chat(app *a, session *s, json_t *body, handler_result *res) {
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
    if (room_id && (!s->room || strcmp(room_id, s->room->id) != 0))
        {
        failf(s->c, res, 403, "FORBIDDEN", "Not a member of room", "Not a member of room %s",
                     room_id);
        return;
    }
    if (!s->room) {
        fail(s->c, res, 400, "BAD_REQUEST", "Not in a room");
        return;
    }
    store_op *op = store_op_new(STORE_OP_CHAT);
    op->room_id = xstrdup(s->room->id);
    op->user_id = xstrdup(s->user_id);
    op->username = xstrdup(s->username);
    op->message = xstrdup(msg);
    op->timestamp = time(NULL);
    store_uuid(op->message_id);
    snprintf(op->conn_id, sizeof(op->conn_id), "%s", s->c->id);
    op->done = chat_committed;
    op->ctx = a;
    store_submit(a->store, op);
}

/* ---- rooms ---- */

static void route_join_room(app *a, session *s, json_t *body, handler_result *res) {
    bool wrong = false;
    const char *room_id = get_string(body, "roomId", &wrong);
    if (!room_id || !*room_id) {
        fail(s->c, res, 400, "BAD_REQUEST", "Room ID required");
        return;
    }
    if (!auth_valid_id(room_id)) {
        fail(s->c, res, 400, "BAD_REQUEST", "Invalid room ID");
        return;
    }
    if (s->room && strcmp(s->room->id, room_id) == 0) {
        /* Already there: confirm to the joiner only. */
        handlers_presence(s->room, s, "user_joined", NULL);
        return;
    }
    room *old = s->room;
    if (old) {
        /* The old room object may be freed by the leave: tell its other
         * members first, then leave. */
        ws_frame *f = handlers_frame(json_pack("{s:s,s:{s:s,s:s,s:s,s:I}}", "type", "user_left",
                                               "data", "userId", s->user_id, "username", s->username,
                                               "roomId", old->id, "timestamp", (json_int_t)time(NULL)));
        for (session *m = old->members; m; m = m->room_next)
            if (m != s) conn_send(m->c, f);
        ws_frame_unref(f);
    }
    room *rm = registry_join(&a->reg, s, room_id);
    handlers_room_join(a, s, room_id);
    handlers_presence(rm, s, "user_joined", NULL);
}

static void route_leave_room(app *a, session *s, json_t *body, handler_result *res) {
    if (!s->room) {
        fail(s->c, res, 400, "BAD_REQUEST", "Not in a room");
        return;
    }
    handlers_presence(s->room, s, "user_left", NULL);
    registry_leave(&a->reg, s);
}

/* ---- private messages ---- */

static void route_private_message(app *a, session *s, json_t *body, handler_result *res) {
    bool wrong = false;
    const char *target = get_string(body, "targetUserId", &wrong);
    const char *msg = get_string(body, "message", &wrong);
    if (!target || !*target || !msg || blank(msg))
        {
        fail(s->c, res, 400, "BAD_REQUEST",
                    "Target user ID and message required for private messages");
        return;
    }
    user_conns *u = registry_user(&a->reg, target);
    if (!u) {
        fail(s->c, res, 404, "NOT_FOUND", "Target user not found or offline");
        return;
    }
    char id[37];
    store_uuid(id);
    ws_frame *f = handlers_frame(json_pack("{s:s,s:{s:s,s:s,s:s,s:s,s:s,s:I}}", "type",
                                           "private_message", "data", "messageId", id, "senderId",
                                           s->user_id, "senderName", s->username, "targetUserId",
                                           target, "message", msg, "timestamp", (json_int_t)time(NULL)));
    for (session *m = u->conns; m; m = m->user_next) conn_send(m->c, f);
    ws_frame_unref(f);
}

/* ---- room list, typing ---- */

static void route_room_list(app *a, session *s, json_t *body, handler_result *res) {
    room **rooms;
    size_t n = registry_rooms_sorted(&a->reg, &rooms);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I}", "roomId", rooms[i]->id, "activeUsers",
                                             (json_int_t)rooms[i]->count));
    free(rooms);
    send_json(s->c, json_pack("{s:s,s:{s:o,s:I}}", "type", "room_list", "data", "rooms", arr,
                              "timestamp", (json_int_t)time(NULL)));
}

static void route_typing_indicator(app *a, session *s, json_t *body, handler_result *res) {
    if (!s->room) {
        fail(s->c, res, 400, "BAD_REQUEST", "Not in a room");
        return;
    }
    json_t *v = json_object_get(body, "isTyping");
    bool typing = !v || !json_is_boolean(v) || json_is_true(v);
    ws_frame *f = handlers_frame(json_pack("{s:s,s:{s:s,s:s,s:s,s:b,s:I}}", "type",
                                           "typing_indicator", "data", "userId", s->user_id,
                                           "username", s->username, "roomId", s->room->id,
                                           "isTyping", typing, "timestamp", (json_int_t)time(NULL)));
    for (session *m = s->room->members; m; m = m->room_next)
        if (m != s) conn_send(m->c, f);
    ws_frame_unref(f);
}

typedef void (*route_handler)(app *a, session *s, json_t *body, handler_result *res);

/* The route table: one row per built-in route key (Redis's command table). */
static const route_handler route_table[ROUTE_COUNT] = {
    [ROUTE_CHAT] = route_chat,
    [ROUTE_JOIN_ROOM] = route_join_room,
    [ROUTE_LEAVE_ROOM] = route_leave_room,
    [ROUTE_PRIVATE_MESSAGE] = route_private_message,
    [ROUTE_ROOM_LIST] = route_room_list,
    [ROUTE_TYPING_INDICATOR] = route_typing_indicator,
};

void handlers_run(app *a, session *s, route_id id, json_t *body, handler_result *res) {
    res->status = 200;
    res->error = NULL;
    if (id < 0 || id >= ROUTE_COUNT || !route_table[id]) return;
    route_table[id](a, s, body, res);
}
