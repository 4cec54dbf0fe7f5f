/* The wire encoder of the events the server pushes
 * ({"type":...,"data":{...}}): written straight into a buffer, one frame
 * per event, shared by every recipient. No I/O. */
#ifndef WSGATE_APP_EVENTS_H
#define WSGATE_APP_EVENTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "ws/frame.h"

/* Encode j (reference stolen) once as a text frame. Returns the frame
 * (refcount 1, caller unrefs). */
ws_frame *event_json_frame(json_t *j);

/* One field of an event's flat "data" object. */
typedef enum { EVENT_STR, EVENT_INT, EVENT_BOOL } event_field_kind;
typedef struct event_field {
    const char *key; /* a plain identifier: written as is */
    event_field_kind kind;
    const char *str; /* EVENT_STR: any text (escaped; bad UTF-8 becomes U+FFFD) */
    int64_t num;     /* EVENT_INT, EVENT_BOOL (0 or 1) */
} event_field;
#define EVENT_FIELD_STR(k, v)                                                                      \
    { .key = (k), .kind = EVENT_STR, .str = (v) }
#define EVENT_FIELD_INT(k, v)                                                                      \
    { .key = (k), .kind = EVENT_INT, .num = (int64_t)(v) }
#define EVENT_FIELD_BOOL(k, v)                                                                     \
    { .key = (k), .kind = EVENT_BOOL, .num = (v) ? 1 : 0 }

/* Encode {"type":type,"data":{fields in order}} as a text frame, the shape
 * of every event the server pushes (welcome, presence, chat, private
 * message, typing, error). It is the JSON event_json_frame would make of the
 * same object, written straight into a buffer: building a jansson object
 * and dumping it costs several times more than the write of the frame.
 * Returns the frame (refcount 1, caller unrefs). */
ws_frame *event_frame(const char *type, const event_field *fields, size_t n);

/* The chat broadcast {"type":"chat","data":{messageId, roomId, seq,
 * senderId, senderName, message, timestamp}} of a stored op, through
 * event_frame. Returns the frame (refcount 1, caller unrefs). */
ws_frame *event_chat_frame(const store_op *op);

#endif
