/* Unit tests for event_frame and event_chat_frame
 * (src/app/handlers.c): every event written by hand must carry the same JSON value as the frame
 * jansson (json_pack + json_dumps, the way every other reply is made) gives
 * for the same message, whatever the strings hold, and the same bytes when
 * they hold no control characters (those are escaped as \u00XX where
 * jansson writes \n, \t...). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "app/events.h"

static ws_frame *reference_frame(const store_op *op) {
    return event_json_frame(json_pack("{s:s,s:{s:s,s:s,s:I,s:s,s:s,s:s,s:I}}", "type", "chat",
                                      "data", "messageId", op->message_id, "roomId", op->room_id,
                                      "seq", (json_int_t)op->seq, "senderId", op->user_id,
                                      "senderName", op->username, "message", op->message,
                                      "timestamp", (json_int_t)op->timestamp));
}

static json_t *payload_json(const ws_frame *f) {
    size_t hdr = f->data[1] == 126 ? 4 : f->data[1] == 127 ? 10 : 2;
    json_error_t e;
    json_t *j = json_loadb((const char *)f->data + hdr, f->len - hdr, 0, &e);
    cr_assert_not_null(j, "frame is not JSON: %s", e.text);
    return j;
}

static void expect_same(const char *room_id, const char *user, const char *name, const char *msg,
                        int64_t seq, int64_t ts) {
    store_op op = {0};
    snprintf(op.message_id, sizeof(op.message_id), "%s", "6f1c2b9e-1d2a-4c3b-8a4d-5e6f7a8b9c0d");
    op.room_id = (char *)room_id;
    op.user_id = (char *)user;
    op.username = (char *)name;
    op.message = (char *)msg;
    op.seq = seq;
    op.timestamp = ts;
    ws_frame *want = reference_frame(&op);
    ws_frame *got = event_chat_frame(&op);
    cr_assert_eq(got->data[0], want->data[0]); /* FIN + text */
    json_t *jg = payload_json(got), *jw = payload_json(want);
    cr_assert(json_equal(jg, jw), "different JSON for message %s", msg);
    json_decref(jg);
    json_decref(jw);
    bool controls = false;
    for (const char *strs[] = {room_id, user, name, msg}, **p = strs; p < strs + 4; p++)
        for (const unsigned char *c = (const unsigned char *)*p; *c; c++) controls |= *c < 0x20;
    if (!controls) {
        cr_assert_eq(got->len, want->len, "length %u, want %u for message %s", got->len, want->len,
                     msg);
        cr_assert_eq(memcmp(got->data, want->data, want->len), 0, "bytes differ for message %s",
                     msg);
    }
    ws_frame_unref(want);
    ws_frame_unref(got);
}

Test(event_frame, plain_message) {
    expect_same("general", "user123", "John", "Hello everyone!", 1, 1732579200);
}

Test(event_frame, escapes_quotes_backslashes_and_controls) {
    expect_same("r\"oom", "u\\1", "N\ta\nme", "say \"hi\"\\ \b\f\r\x01\x1f end", 42, 0);
}

Test(event_frame, keeps_utf8_as_is) {
    expect_same("café", "用户", "Zoë 🙂", "naïve — “quoted” 𝄞 ✓", 9007199254740993LL,
                1732579200);
}

Test(event_frame, extreme_numbers_and_empty_strings) {
    expect_same("", "", "", "x", INT64_MAX, INT64_MIN);
}

Test(event_frame, long_message_beyond_the_stack_buffer) {
    static char big[40000];
    for (size_t i = 0; i + 1 < sizeof(big); i++) big[i] = (char)("ab\"\\\n"[i % 5]);
    expect_same("room", "user", "name", big, 7, 7);
    for (size_t i = 0; i + 1 < sizeof(big); i++) big[i] = (char)("ab\"\\c"[i % 5]);
    expect_same("room", "user", "name", big, 7, 7);
}

/* The other shapes: booleans, negative numbers, a type that needs escaping,
 * and an empty data object. */
Test(event_frame, bools_numbers_and_types) {
    const event_field data[] = {EVENT_FIELD_STR("userId", "u\"1"), EVENT_FIELD_BOOL("isTyping", 1),
                                EVENT_FIELD_BOOL("was", 0), EVENT_FIELD_INT("n", -42),
                                EVENT_FIELD_STR("roomId", "général")};
    ws_frame *got = event_frame("typing_indicator", data, 5);
    ws_frame *want = event_json_frame(
        json_pack("{s:s,s:{s:s,s:b,s:b,s:I,s:s}}", "type", "typing_indicator", "data", "userId",
                  "u\"1", "isTyping", 1, "was", 0, "n", (json_int_t)-42, "roomId", "général"));
    cr_assert_eq(got->len, want->len);
    cr_assert_eq(memcmp(got->data, want->data, want->len), 0);
    ws_frame_unref(got);
    ws_frame_unref(want);
    got = event_frame("we\"ird", NULL, 0);
    want = event_json_frame(json_pack("{s:s,s:{}}", "type", "we\"ird", "data"));
    cr_assert_eq(got->len, want->len);
    cr_assert_eq(memcmp(got->data, want->data, want->len), 0);
    ws_frame_unref(got);
    ws_frame_unref(want);
}

/* Text that is not UTF-8 (which json_pack refuses) still makes valid JSON,
 * the bad bytes replaced by U+FFFD. */
Test(event_frame, bad_utf8_becomes_replacement_characters) {
    const event_field data[] = {EVENT_FIELD_STR("message", "a\xc3(b\xff")};
    ws_frame *f = event_frame("chat", data, 1);
    json_t *j = payload_json(f);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "data"), "message")),
                     "a\xef\xbf\xbd(b\xef\xbf\xbd");
    json_decref(j);
    ws_frame_unref(f);
}
