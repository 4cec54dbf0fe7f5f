/* The wire encoder of the events the server pushes. */
#include "app/events.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/json_escape.h"
#include "common/strbuf.h"
#include "log/log.h"

ws_frame *event_json_frame(json_t *j) {
    if (!j) {
        /* json_pack refused a value (text that is not UTF-8): a bug upstream,
         * but never a reason to take the server down. */
        log_msg(LOG_ERROR, "internal_error", "a reply could not be encoded as JSON");
        j = json_pack("{s:s,s:{s:s,s:s,s:I}}", "type", "error", "data", "message", "Internal error",
                      "code", "INTERNAL_ERROR", "timestamp", (json_int_t)time(NULL));
    }
    char *txt = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!txt) abort(); /* only on allocation failure */
    ws_frame *f = ws_frame_new(WS_OP_TEXT, txt, strlen(txt));
    free(txt);
    return f;
}

/* Append s as a JSON string, quotes included (b has room: see the caller). */
static void put_json_string(strbuf *b, const char *s) {
    strbuf_putc(b, '"');
    b->len += json_escape(b->p + b->len, b->cap - b->len, s, strlen(s), NULL);
    strbuf_putc(b, '"');
}

ws_frame *event_frame(const char *type, const event_field *fields, size_t n) {
    /* Room for the worst case: every string byte escaped as \u00XX. */
    size_t cap = 64 + 6 * strlen(type);
    for (size_t i = 0; i < n; i++)
        cap += strlen(fields[i].key) + 32 + (fields[i].str ? 6 * strlen(fields[i].str) : 0);
    char stackbuf[2048];
    char *buf = cap <= sizeof(stackbuf) ? stackbuf : xmalloc(cap);
    strbuf b;
    strbuf_init(&b, buf, cap);
    strbuf_puts(&b, "{\"type\":");
    put_json_string(&b, type);
    strbuf_puts(&b, ",\"data\":{");
    for (size_t i = 0; i < n; i++) {
        const event_field *f = &fields[i];
        if (i) strbuf_putc(&b, ',');
        strbuf_putc(&b, '"');
        strbuf_puts(&b, f->key);
        strbuf_puts(&b, "\":");
        switch (f->kind) {
        case EVENT_STR: put_json_string(&b, f->str); break;
        case EVENT_INT: strbuf_i64(&b, f->num); break;
        case EVENT_BOOL: strbuf_puts(&b, f->num ? "true" : "false"); break;
        }
    }
    strbuf_puts(&b, "}}");
    ws_frame *frame = ws_frame_new(WS_OP_TEXT, buf, b.len);
    if (buf != stackbuf) free(buf);
    return frame;
}

ws_frame *event_chat_frame(const store_op *op) {
    const event_field data[] = {EVENT_FIELD_STR("messageId", op->message_id),
                                EVENT_FIELD_STR("roomId", op->room_id),
                                EVENT_FIELD_INT("seq", op->seq),
                                EVENT_FIELD_STR("senderId", op->user_id),
                                EVENT_FIELD_STR("senderName", op->username),
                                EVENT_FIELD_STR("message", op->message),
                                EVENT_FIELD_INT("timestamp", op->timestamp)};
    return event_frame("chat", data, sizeof(data) / sizeof(data[0]));
}
