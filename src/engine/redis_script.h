/* The Redis side of a room's messages: key names, the two Lua scripts
 * (a chat's one atomic step, and a history page) and their replies.
 *
 * Keys of room R (the braces are a hash tag, so that a Redis Cluster would
 * keep a room's keys on one node; our own sharding is redis_ring.h):
 *
 *   wsgate:{R}:seq        the room's counter: the last seq given (INCR)
 *   wsgate:{R}:log        the room's Stream: entry id "<seq>-0", fields
 *                         id (messageId), ts (Unix ms), v (sealed value)
 *   wsgate:{R}:idem:<H>   "<seq> <messageId> <ts>", with a TTL of the
 *                         idempotency window; H = hex SHA-256 of
 *                         sender "\0" clientMessageId
 *
 * and its pub/sub channel wsgate:<db>:room:R (Redis pub/sub ignores the
 * database number, so the channel carries it). A room id never puts '}'
 * into a suffix, and the suffixes hold no '}', so two rooms' keys never
 * collide whatever bytes their ids hold.
 *
 * The chat script, per call (one round trip, atomic on the room's Redis):
 *   1. idempotency window > 0 and the idem key exists: return the
 *      original (seq, messageId, ts and its sealed value when the Stream
 *      still holds it); nothing is written or published.
 *   2. seq = INCR wsgate:{R}:seq
 *   3. XADD wsgate:{R}:log [MAXLEN ~ max_len] <seq>-0 id .. ts .. v ..
 *   4. expired entries (ts < cutoff_ms) are trimmed from the head (XTRIM
 *      MINID), a bounded number per call
 *   5. SET the idem key EX window
 *   6. PUBLISH channel  publish_prefix .. seq .. "\n" .. value   (once)
 *   returns {seq, duplicate 0|1, messageId, ts, value ("" unless duplicate)}
 *
 * The history script trims expired entries the same way, then returns
 * {last_seq, oldest_seq, has_more, {seq, messageId, ts, value, ...}},
 * entries oldest first. Both scripts are loaded with SCRIPT LOAD (see
 * redis_script_sources, for redis_client_options.preload_scripts) and run
 * with EVALSHA, falling back to EVAL when Redis answers NOSCRIPT. */
#ifndef WSGATE_ENGINE_REDIS_SCRIPT_H
#define WSGATE_ENGINE_REDIS_SCRIPT_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/redis_client.h"

typedef enum redis_script_id {
    REDIS_SCRIPT_CHAT,
    REDIS_SCRIPT_HISTORY,
    REDIS_SCRIPT_COUNT
} redis_script_id;

/* Return the Lua source of script id (static). */
const char *redis_script_source(redis_script_id id);

/* Return the SHA-1 (40 lowercase hex digits) EVALSHA names script id by
 * (static; computed once, thread-safe). */
const char *redis_script_sha(redis_script_id id);

/* Return every script's source, NULL-terminated (static): what a client
 * loads with SCRIPT LOAD on each connection. */
const char *const *redis_script_sources(void);

/* Key and channel names of room (a C string), malloc'd (the caller frees). */
char *redis_script_seq_key(const char *room);
char *redis_script_log_key(const char *room);
char *redis_script_idem_key(const char *room, const char *sender, const char *client_message_id);
char *redis_script_channel(int db, const char *room);

/* Run script id with nkeys keys and nargs arguments (binary safe; a NULL
 * lens array means C strings) on c with affinity, as
 * redis_client_command_argv (cb once, never before this returns; 0 sent,
 * -1 failed fast). EVALSHA first; a NOSCRIPT answer is retried once with
 * EVAL on the same connection affinity, and cb sees only the final
 * answer. The arguments are copied. */
int redis_script_run(redis_client *c, uint32_t affinity, redis_script_id id, int nkeys,
                     const char **keys, const size_t *keylens, int nargs, const char **args,
                     const size_t *arglens, redis_client_reply_cb cb, void *data);

/* One chat to sequence. Strings are the caller's. */
typedef struct redis_chat {
    const char *room;
    const char *sender;            /* what idempotency is keyed by (e.g. a blind index) */
    const char *client_message_id; /* NULL: no idempotency */
    int64_t idempotency_window_s;  /* 0: no idempotency */
    const char *message_id;        /* a UUID (no spaces); required */
    int64_t ts_ms;
    const void *value; /* the sealed message, opaque to Redis */
    size_t value_len;
    int64_t max_len;   /* Stream length cap (MAXLEN ~); 0: none */
    int64_t cutoff_ms; /* entries older are trimmed; 0: none */
    int db;            /* for the channel name */
    bool publish;
    const void *publish_prefix; /* bytes before the seq in the published message */
    size_t publish_prefix_len;
    int min_replicas;    /* > 0: then WAIT for this many replicas (redis_min_replicas) */
    int wait_timeout_ms; /* WAIT's bound (0: 1000); keep it under command_timeout_ms */
} redis_chat;

typedef struct redis_chat_result {
    int64_t seq;
    bool duplicate; /* a retry: the fields are the original message's */
    char message_id[64];
    int64_t ts_ms;
    const char *value; /* duplicate: the original's sealed value ("" when trimmed since) */
    size_t value_len;
} redis_chat_result;

/* The outcome of redis_script_chat: res (valid during the call only) when
 * the chat is stored (and reached min_replicas replicas), else err (res
 * NULL; the text too is valid during the call only): REDIS_CLIENT_E_DOWN (not sent: not stored), REDIS_CLIENT_E_LOST
 * or _TIMEOUT (unknown: it may be stored; a retry with the same
 * clientMessageId returns it once), a Redis error ("redis: ..."), or
 * "redis: reached K of N replicas" (stored on the primary only). */
typedef void (*redis_chat_cb)(redis_client *c, const redis_chat_result *res, const char *err,
                              void *data);

/* Sequence chat on c with the chat script, on the connection of the
 * room's affinity (so a room's chats run in the order sent), then WAIT
 * when chat->min_replicas > 0. cb is called once, never before this
 * returns. Returns 0 when sent, -1 when it failed fast (cb gets
 * REDIS_CLIENT_E_DOWN on the next turn). */
int redis_script_chat(redis_client *c, const redis_chat *chat, redis_chat_cb cb, void *data);

/* Read the chat script's reply into out (value points into r). Returns 0,
 * or a negative code with *err (the caller's; may be NULL) saying why:
 * WSG_E_IO with a Redis error reply's text, WSG_E_PARSE naming what is
 * malformed. */
int redis_chat_parse(const redisReply *r, redis_chat_result *out, wsg_error *err);

/* One history page to read. */
typedef struct redis_history {
    const char *room;
    int64_t after_seq;  /* >= 0: the oldest entries with seq > after_seq (resume) */
    int64_t before_seq; /* after_seq < 0: the newest with seq < before_seq (0: none) */
    int limit;          /* 1.. */
    size_t max_bytes;   /* stop (has_more) past this many bytes; the first is always taken */
    int64_t cutoff_ms;  /* entries older are trimmed and never returned; 0: none */
} redis_history;

typedef struct redis_history_entry {
    int64_t seq;
    const char *message_id; /* the reply's bytes */
    size_t message_id_len;
    int64_t ts_ms;
    const char *value; /* the reply's bytes */
    size_t value_len;
} redis_history_entry;

typedef struct redis_history_result {
    int64_t last_seq;   /* the room's counter (0: no message ever) */
    int64_t oldest_seq; /* the oldest entry kept (0: none) */
    bool has_more;
    size_t count;
    redis_history_entry *entries; /* oldest first; malloc'd, free() it */
} redis_history_result;

/* The outcome of redis_script_history: res (and every byte it points to)
 * valid during the call only, or err with res NULL (also valid during the
 * call only). */
typedef void (*redis_history_cb)(redis_client *c, const redis_history_result *res, const char *err,
                                 void *data);

/* Read one page with the history script (on the room's affinity, so it
 * sees every chat of the room sent before it on this client). cb once,
 * never before this returns; 0 sent, -1 failed fast. */
int redis_script_history(redis_client *c, const redis_history *h, redis_history_cb cb, void *data);

/* Read the history script's reply into out (entries point into r: use
 * them before the callback returns; the caller frees out->entries).
 * Returns 0 or a negative code with *err, as redis_chat_parse. */
int redis_history_parse(const redisReply *r, redis_history_result *out, wsg_error *err);

#endif
