/* libFuzzer target for the codec of @connections across nodes
 * (src/engine/redis_forward.c): any input is a request, an answer or
 * refused; what decodes, encoded again, decodes to the same fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/redis_forward.h"
#include "fuzz_require.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void request_again(const redis_fwd_request *q) {
    char reply[64];
    memcpy(reply, q->reply, q->reply_len);
    reply[q->reply_len] = '\0';
    if (memchr(q->reply, '\n', q->reply_len) || strlen(reply) != q->reply_len) return;
    char *reason = strndup(q->reason, q->reason_len);
    ws_frame *f = ws_frame_new(q->opcode, q->payload, q->payload_len);
    engine_remote_req r = {.kind = q->kind,
                           .conn_id = q->conn_id,
                           .f = f,
                           .max_queued = (size_t)q->max_queued,
                           .code = q->code,
                           .reason = reason};
    size_t len;
    char *msg = redis_fwd_request_format(q->id, reply, &r, &len);
    redis_fwd_request back;
    if (strlen(q->conn_id) == CONN_ID_LEN && strlen(reason) == q->reason_len) {
        require(redis_fwd_request_parse(msg, len, &back) == 0);
        require(back.id == q->id && back.kind == q->kind && back.code == q->code);
        require(strcmp(back.conn_id, q->conn_id) == 0);
        if (q->kind == ENGINE_REMOTE_SEND) {
            require(back.payload_len == q->payload_len);
            require(back.opcode == q->opcode);
        }
    }
    free(msg);
    ws_frame_unref(f);
    free(reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *p = malloc(size ? size : 1);
    if (!p) return 0;
    if (size) memcpy(p, data, size);
    redis_fwd_request q;
    if (redis_fwd_request_parse(p, size, &q) == 0) {
        require(q.kind <= ENGINE_REMOTE_CLOSE);
        require(q.payload + q.payload_len == (const uint8_t *)p + size);
        request_again(&q);
    }
    redis_fwd_answer a;
    if (redis_fwd_answer_parse(p, size, &a) == 0) {
        require(a.rc >= -2 && a.rc <= 0);
        require(!a.has_info || a.rc == 0);
        if (a.user_agent) require(a.user_agent + a.user_agent_len == p + size);
    }
    free(p);
    return 0;
}
