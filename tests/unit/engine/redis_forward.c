/* Unit tests for the codec of src/engine/redis_forward.c: requests and
 * answers round-trip (every kind, binary payloads, a reason with a
 * newline, a missing user agent), every input is decoded whole and cut at
 * every length, and malformed messages are refused. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/redis_forward.h"

static void refused_when_cut(const char *msg, size_t len, bool request) {
    /* Every proper prefix is refused or decodes to something shorter: no
     * read past the end (ASan), no crash. */
    for (size_t n = 0; n < len; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, msg, n);
        if (request) {
            redis_fwd_request q;
            if (redis_fwd_request_parse(copy, n, &q) == 0) cr_assert_lt(q.payload_len, len);
        } else {
            redis_fwd_answer a;
            (void)redis_fwd_answer_parse(copy, n, &a);
        }
        free(copy);
    }
}

Test(redis_forward, send_request_round_trips_binary_payloads) {
    const uint8_t payload[] = {0xff, 0x00, '\n', 'x'};
    ws_frame *f = ws_frame_new(WS_OP_BINARY, payload, sizeof payload);
    engine_remote_req r = {
        .kind = ENGINE_REMOTE_SEND, .conn_id = "AbCdEfGhIjKlMn-_", .f = f, .max_queued = 1048576};
    size_t len;
    char *msg = redis_fwd_request_format(42, "0123abcd.1", &r, &len);
    redis_fwd_request q;
    cr_assert_eq(redis_fwd_request_parse(msg, len, &q), 0);
    cr_assert_eq(q.id, 42);
    cr_assert_eq(q.reply_len, 10);
    cr_assert_eq(memcmp(q.reply, "0123abcd.1", 10), 0);
    cr_assert_eq(q.kind, ENGINE_REMOTE_SEND);
    cr_assert_str_eq(q.conn_id, "AbCdEfGhIjKlMn-_");
    cr_assert_eq(q.max_queued, 1048576);
    cr_assert_eq(q.opcode, WS_OP_BINARY);
    cr_assert_eq(q.payload_len, sizeof payload);
    cr_assert_eq(memcmp(q.payload, payload, sizeof payload), 0);
    refused_when_cut(msg, len, true);
    free(msg);
    ws_frame_unref(f);
}

Test(redis_forward, close_and_info_requests) {
    engine_remote_req r = {.kind = ENGINE_REMOTE_CLOSE,
                           .conn_id = "AAAAAAAAAAAAAAAA",
                           .code = 1000,
                           .reason = "closed\nby the API"};
    size_t len;
    char *msg = redis_fwd_request_format(7, "n.0", &r, &len);
    redis_fwd_request q;
    cr_assert_eq(redis_fwd_request_parse(msg, len, &q), 0);
    cr_assert_eq(q.kind, ENGINE_REMOTE_CLOSE);
    cr_assert_eq(q.code, 1000);
    /* The newline travels as a space: the reason is one line. */
    cr_assert_eq(q.reason_len, strlen("closed by the API"));
    cr_assert_eq(memcmp(q.reason, "closed by the API", q.reason_len), 0);
    cr_assert_eq(q.payload_len, 0);
    free(msg);
    r = (engine_remote_req){.kind = ENGINE_REMOTE_INFO, .conn_id = "BBBBBBBBBBBBBBBB"};
    msg = redis_fwd_request_format(8, "n.1", &r, &len);
    cr_assert_eq(redis_fwd_request_parse(msg, len, &q), 0);
    cr_assert_eq(q.kind, ENGINE_REMOTE_INFO);
    cr_assert_eq(q.id, 8);
    free(msg);
}

Test(redis_forward, malformed_requests_are_refused) {
    static const char *bad[] = {
        "",
        "X1\nn.0\n0\nAAAAAAAAAAAAAAAA\n0\n0\n\n\x01",
        "Q\nn.0\n0\nAAAAAAAAAAAAAAAA\n0\n0\n\n\x01",                     /* no id */
        "Q1\n\n0\nAAAAAAAAAAAAAAAA\n0\n0\n\n\x01",                       /* no reply field */
        "Q1\nn.0\n3\nAAAAAAAAAAAAAAAA\n0\n0\n\n\x01",                    /* unknown kind */
        "Q1\nn.0\n0\nAAAAAAAAAAAAAAA\n0\n0\n\n\x01",                     /* short id */
        "Q1\nn.0\n0\nAAAAAAAAAAAAAAAA\n-1\n0\n\n\x01",                   /* negative bound */
        "Q1\nn.0\n0\nAAAAAAAAAAAAAAAA\n0\n65536\n\n\x01",                /* code out of range */
        "Q1\nn.0\n0\nAAAAAAAAAAAAAAAA\n0\n0\n\n",                        /* no opcode */
        "Q1\nn.0\n0\nAAAAAAAAAAAAAAAA\n0\n0\n\n\x09",                    /* not a data opcode */
        "Q99999999999999999999\nn.0\n0\nAAAAAAAAAAAAAAAA\n0\n0\n\n\x01", /* overflow */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redis_fwd_request q;
        cr_assert_eq(redis_fwd_request_parse(bad[i], strlen(bad[i]), &q), -1, "case %zu", i);
    }
}

Test(redis_forward, answers_round_trip) {
    engine_conn_info info = {.connected_at = 1764700000,
                             .last_active_at = 1764700042,
                             .source_ip = "2001:db8::1",
                             .user_agent = "agent/1.0 (x\ny)"};
    size_t len;
    char *msg = redis_fwd_answer_format(9, 0, &info, &len);
    redis_fwd_answer a;
    cr_assert_eq(redis_fwd_answer_parse(msg, len, &a), 0);
    cr_assert_eq(a.id, 9);
    cr_assert_eq(a.rc, 0);
    cr_assert(a.has_info);
    cr_assert_eq(a.connected_at, 1764700000);
    cr_assert_eq(a.last_active_at, 1764700042);
    cr_assert_str_eq(a.source_ip, "2001:db8::1");
    cr_assert_eq(a.user_agent_len, strlen(info.user_agent));
    cr_assert_eq(memcmp(a.user_agent, info.user_agent, a.user_agent_len), 0);
    refused_when_cut(msg, len, false);
    free(msg);
    info.user_agent = NULL;
    msg = redis_fwd_answer_format(10, 0, &info, &len);
    cr_assert_eq(redis_fwd_answer_parse(msg, len, &a), 0);
    cr_assert(a.has_info);
    cr_assert_null(a.user_agent);
    free(msg);
    for (int rc = -2; rc <= 0; rc++) {
        msg = redis_fwd_answer_format(11, rc, NULL, &len);
        cr_assert_eq(redis_fwd_answer_parse(msg, len, &a), 0);
        cr_assert_eq(a.rc, rc);
        cr_assert_not(a.has_info);
        free(msg);
    }
}

Test(redis_forward, malformed_answers_are_refused) {
    static const char *bad[] = {
        "",
        "A",
        "A1",
        "A1\n",
        "A1\n1\n",
        "A1\n-3\n",
        "Ax\n0\n",
        "A1\n-1\n5\n6\nip\n-",
        "A1\n0\n5\n6\nip\n",
        "A1\n0\n5\n6\nip\n-extra",
        "A1\n0\nx\n6\nip\n-",
        "A1\n0\n5\n6\n0123456789012345678901234567890123456789012345678\n-",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redis_fwd_answer a;
        cr_assert_eq(redis_fwd_answer_parse(bad[i], strlen(bad[i]), &a), -1, "case %zu", i);
    }
}
