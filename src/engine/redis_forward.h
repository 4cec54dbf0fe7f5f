/* The management API across nodes (engine = "redis", docs/redis.md,
 * "@connections on any node"): each worker keeps a record of each of its
 * connections in a hash of the home Redis (wsgate:w:<node>.<w>:conns,
 * connection id -> "<connectedAt>\n<userId>", its TTL refreshed with the
 * worker's heartbeat) and listens on its own channel
 * (wsgate:<db>:fwd:<node>.<w>). A worker asked about a connection another
 * node holds runs one script on the home Redis: it finds the live worker
 * whose hash has the id (the id's first character names the worker index,
 * so only the nodes' workers of that index are looked at) and publishes the
 * request on that worker's channel. The owner does it through its local
 * engine and publishes the answer on the asker's channel, where the asker
 * finds the request again by its number. No record: gone (410). Nobody
 * listening, or no answer within REDIS_FWD_TIMEOUT_MS: ENGINE_E_TIMEOUT.
 *
 * Prefix redis_fwd_. A redis_fwd belongs to one worker: every function
 * runs on that worker's thread, with the worker's client of the home Redis
 * (NULL while it has none: the function then does nothing, or fails). The
 * codec (redis_fwd_*_format / _parse) does no I/O. */
#ifndef WSGATE_ENGINE_REDIS_FORWARD_H
#define WSGATE_ENGINE_REDIS_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/redis_client.h"
#include "net/server.h"

/* How long an asker waits for the owner's answer. */
#define REDIS_FWD_TIMEOUT_MS 5000

typedef struct redis_fwd redis_fwd;

/* Return the forwarder of the worker named `field` ("<node>.<index>",
 * copied) whose server is srv (borrowed), acting on connections through
 * local (borrowed: the node's local engine), on Redis database db, taking
 * workers silent for node_timeout_ms as gone. Free with redis_fwd_free. */
redis_fwd *redis_fwd_new(engine *local, server *srv, int db, const char *field,
                         int64_t node_timeout_ms);

/* Release f; requests still waiting are dropped without an answer. */
void redis_fwd_free(redis_fwd *f);

/* Subscribe the worker's channel (once its client exists). */
void redis_fwd_start(redis_fwd *f, redis_client *home);

/* The worker's connection conn_id (of user_id, opened at connected_at)
 * opened / closed: write / remove its record. */
void redis_fwd_conn_opened(redis_fwd *f, redis_client *home, const char *conn_id,
                           const char *user_id, int64_t connected_at);
void redis_fwd_conn_closed(redis_fwd *f, redis_client *home, const char *conn_id);

/* With the worker's heartbeat: keep the records ttl_ms longer. */
void redis_fwd_heartbeat(redis_fwd *f, redis_client *home, int64_t ttl_ms);

/* After (re)connecting: write every record again. */
void redis_fwd_resync(redis_fwd *f, redis_client *home);

/* A pub/sub message: returns true when it was on f's channel (handled). */
bool redis_fwd_on_message(redis_fwd *f, redis_client *home, const char *channel, size_t channel_len,
                          const char *p, size_t n);

/* Answer ENGINE_E_TIMEOUT to the requests older than the bound (the
 * worker's timer calls it a few times a second). */
void redis_fwd_tick(redis_fwd *f);

/* engine_remote through f: returns 0 (r->done runs later), -1 (r->conn_id
 * is no connection id: gone) or ENGINE_E_UNAVAILABLE (no client). */
int redis_fwd_ask(redis_fwd *f, redis_client *home, const engine_remote_req *r);

/* ---- the codec ---- */

/* A request as it travels, its byte strings pointing into the message. */
typedef struct redis_fwd_request {
    uint64_t id;             /* the asker's number for it */
    const char *reply;       /* the asker's field */
    size_t reply_len;        /* < 48 */
    engine_remote_kind kind; /* checked */
    char conn_id[CONN_ID_LEN + 1];
    uint64_t max_queued;
    uint16_t code;
    const char *reason; /* no newline */
    size_t reason_len;
    uint8_t opcode; /* SEND: WS_OP_TEXT or WS_OP_BINARY */
    const uint8_t *payload;
    size_t payload_len;
} redis_fwd_request;

/* Encode r (from the asker `reply`, number id). Returns malloc'd bytes
 * (*len); the caller frees. */
char *redis_fwd_request_format(uint64_t id, const char *reply, const engine_remote_req *r,
                               size_t *len);

/* Decode a request message. Returns 0, or -1 when malformed. */
int redis_fwd_request_parse(const char *p, size_t n, redis_fwd_request *out);

/* An answer as it travels. */
typedef struct redis_fwd_answer {
    uint64_t id;
    int rc; /* 0, -1 or -2 */
    bool has_info;
    int64_t connected_at, last_active_at;
    char source_ip[46];
    const char *user_agent; /* into the message; NULL: none */
    size_t user_agent_len;
} redis_fwd_answer;

/* Encode the answer to request id: rc, and info when rc is 0 for an INFO
 * (NULL otherwise). Returns malloc'd bytes (*len). */
char *redis_fwd_answer_format(uint64_t id, int rc, const engine_conn_info *info, size_t *len);

/* Decode an answer message. Returns 0, or -1 when malformed. */
int redis_fwd_answer_parse(const char *p, size_t n, redis_fwd_answer *out);

#endif
