/* The built-in route handlers (the seed's message Lambda) and the messages
 * they send. Internal to the app module. */
#ifndef WSGATE_APP_HANDLERS_H
#define WSGATE_APP_HANDLERS_H

#include <jansson.h>

#include "app/app.h"
#include "app/events.h"

/* Result of a handler, for the access log. */
typedef struct handler_result {
    int status;        /* 200, or 400/403/404/500 when an error was sent */
    const char *error; /* the error text sent, or NULL */
} handler_result;

/* Run built-in route `id` for session s of hub h with the parsed body, on
 * h's worker. Errors are sent to s's connection; the result says which. */
void handlers_run(hub *h, session *s, route_id id, json_t *body, handler_result *res);

/* Send {"type":"error","data":{"message","code","timestamp"}} to c. */
void handlers_send_error(conn *c, const char *message, const char *code);

/* Send an error whose text is fmt with one %s filled by arg, cut to 511
 * bytes on a character boundary. */
void handlers_send_errorf(conn *c, const char *code, const char *fmt, const char *arg);

/* Return a new JSON array of every room with members on every worker,
 * sorted by id: [{"roomId","activeUsers"}] (the management API's @rooms).
 * Caller owns the array. */
json_t *handlers_rooms_json(engine *e);

/* The same array for the listing rooms[0..n) (sorted by id, borrowed).
 * Caller owns the array. */
json_t *handlers_rooms_array(const directory_room_entry *rooms, size_t n);

/* Return a new JSON array (caller owns) of one page of the listing
 * rooms[0..n) (sorted by id): the
 * rooms whose id sorts after `after` (NULL or "": from the first), at most
 * `limit` of them, and no more entries than fit in max_bytes of encoded
 * JSON (at least one, so that paging always advances). *next is set to a
 * malloc'd copy of the page's last room id when more rooms follow (the
 * caller frees it), else to NULL. */
json_t *handlers_rooms_page(const directory_room_entry *rooms, size_t n, const char *after,
                            size_t limit, size_t max_bytes, char **next);

/* Send {"type":"user_joined"|"user_left","data":{...}} about s in room
 * room_id to every member of the room on every worker, skipping the
 * connection `except` (may be NULL). */
void handlers_presence(hub *h, const char *room_id, session *s, const char *type,
                       const char *except);

/* Move s into room_id (leaving its room, if any), in h's index and the
 * engine's. Returns the room in h's index. */
room *handlers_join(hub *h, session *s, const char *room_id);
/* Take s out of its room (if any), in h's index and the engine's. Returns
 * the members left in that room everywhere (0: none, or s was in none). */
size_t handlers_leave(hub *h, session *s);

/* What the engine calls on a worker to deliver to its connections. */
const engine_deliver *handlers_deliver(void);

/* store_options.on_commit: off the worker threads (the store thread, or
 * its sync thread when the commit is pipelined), in commit order, publish
 * a committed chat to its room and hand the op to the owner of the
 * connection that asked (which runs op->done with op->ctx = its hub). */
void handlers_store_committed(store_op *op, void *ctx);

/* The $connect welcome to s. */
void handlers_welcome(session *s);

/* Replay every stored message of s's room with seq > since to s, then let
 * live messages through again (resume after a reconnect). */
void handlers_resume(hub *h, session *s, int64_t since);

/* Submit the room's creation (owner = s's user) to the store. */
void handlers_room_join(app *a, session *s, const char *room_id);

#endif
