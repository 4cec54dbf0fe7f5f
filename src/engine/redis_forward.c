/* @connections across nodes: see redis_forward.h. */
#include "engine/redis_forward.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "common/strmap.h"
#include "log/log.h"

#define FWD_FIELD_LEN 48
/* Records written again after a reconnect: fields per HSET. */
#define RESYNC_BATCH 256

#define WORKERS_KEY "wsgate:workers"

typedef struct fwd_pending {
    engine_remote_fn done;
    char tag[ENGINE_REMOTE_TAG_MAX];
    uint64_t deadline_ms; /* on the worker loop's clock */
} fwd_pending;

struct redis_fwd {
    engine *local;
    server *srv;
    int db;
    char field[FWD_FIELD_LEN];
    char channel[FWD_FIELD_LEN + 32];   /* wsgate:<db>:fwd:<field> */
    char prefix[32];                    /* wsgate:<db>:fwd: */
    char conns_key[FWD_FIELD_LEN + 32]; /* wsgate:w:<field>:conns */
    int64_t node_timeout_ms;
    uint64_t next_id;
    strmap pending; /* request number (decimal) -> fwd_pending* */
    strmap conns;   /* connection id -> its record (malloc'd) */
};

/* Find the live worker holding the connection (its index is the id's
 * first character, ARGV[2] = ".<index>") and publish the request on its
 * channel. Answers -1: no record; else how many heard it (0: nobody
 * listens there any more). */
static const char ASK_LUA[] =
    "local live = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')\n"
    "local suffix = ARGV[2]\n"
    "for _, f in ipairs(live) do\n"
    "  if string.sub(f, -#suffix) == suffix and\n"
    "     redis.call('HEXISTS', 'wsgate:w:' .. f .. ':conns', ARGV[3]) == 1 then\n"
    "    return redis.call('PUBLISH', ARGV[4] .. f, ARGV[5])\n"
    "  end\n"
    "end\n"
    "return -1\n";

static void ignore_reply(redis_client *c, const redisReply *r, const char *err, void *data) {}

static void fire(redis_client *home, int argc, const char **argv, const size_t *lens) {
    if (home)
        redis_client_command_argv(home, REDIS_CLIENT_ANY, ignore_reply, NULL, argc, argv, lens);
}

redis_fwd *redis_fwd_new(engine *local, server *srv, int db, const char *field,
                         int64_t node_timeout_ms) {
    redis_fwd *f = xcalloc(1, sizeof(*f));
    f->local = local;
    f->srv = srv;
    f->db = db;
    snprintf(f->field, sizeof(f->field), "%s", field);
    snprintf(f->prefix, sizeof(f->prefix), "wsgate:%d:fwd:", db);
    snprintf(f->channel, sizeof(f->channel), "%s%s", f->prefix, f->field);
    snprintf(f->conns_key, sizeof(f->conns_key), "wsgate:w:%s:conns", f->field);
    f->node_timeout_ms = node_timeout_ms;
    strmap_init(&f->pending);
    strmap_init(&f->conns);
    return f;
}

void redis_fwd_free(redis_fwd *f) {
    if (!f) return;
    strmap_free_values(&f->pending, free);
    strmap_free_values(&f->conns, free);
    free(f);
}

void redis_fwd_start(redis_fwd *f, redis_client *home) {
    if (home) redis_client_subscribe(home, f->channel);
}

/* ---- records ---- */

void redis_fwd_conn_opened(redis_fwd *f, redis_client *home, const char *conn_id,
                           const char *user_id, int64_t connected_at) {
    size_t n = strlen(user_id) + 32;
    char *rec = xmalloc(n);
    snprintf(rec, n, "%" PRId64 "\n%s", connected_at, user_id);
    void *old = NULL;
    strmap_put(&f->conns, conn_id, rec, &old);
    free(old);
    fire(home, 4, (const char *[]){"HSET", f->conns_key, conn_id, rec}, NULL);
}

void redis_fwd_conn_closed(redis_fwd *f, redis_client *home, const char *conn_id) {
    free(strmap_remove(&f->conns, conn_id));
    fire(home, 3, (const char *[]){"HDEL", f->conns_key, conn_id}, NULL);
}

void redis_fwd_heartbeat(redis_fwd *f, redis_client *home, int64_t ttl_ms) {
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms);
    fire(home, 3, (const char *[]){"PEXPIRE", f->conns_key, ttl}, NULL);
}

void redis_fwd_resync(redis_fwd *f, redis_client *home) {
    fire(home, 2, (const char *[]){"DEL", f->conns_key}, NULL);
    const char *argv[2 + 2 * RESYNC_BATCH];
    int argc = 2;
    argv[0] = "HSET";
    argv[1] = f->conns_key;
    size_t it = 0;
    const char *k;
    void *v;
    while (strmap_next(&f->conns, &it, &k, &v)) {
        argv[argc++] = k;
        argv[argc++] = v;
        if (argc == 2 + 2 * RESYNC_BATCH) {
            fire(home, argc, argv, NULL);
            argc = 2;
        }
    }
    if (argc > 2) fire(home, argc, argv, NULL);
}

/* ---- the asker ---- */

static void finish(redis_fwd *f, const char *key, int rc, const engine_conn_info *info) {
    fwd_pending *p = strmap_remove(&f->pending, key);
    if (!p) return; /* answered already (timed out) */
    p->done(f->srv->app, p->tag, rc, info);
    free(p);
}

typedef struct ask_ctx {
    redis_fwd *f;
    char key[24];
} ask_ctx;

static void on_asked(redis_client *c, const redisReply *r, const char *err, void *data) {
    ask_ctx *ctx = data;
    redis_fwd *f = ctx->f;
    if (err || !r || r->type != REDIS_REPLY_INTEGER) {
        /* Redis could not be asked (or refused the script): the owner was
         * never reached. */
        if (!err && r && r->type == REDIS_REPLY_ERROR)
            log_msg(LOG_ERROR, "redis_forward_error", "asking the owner node failed: %s", r->str);
        finish(f, ctx->key, ENGINE_E_UNAVAILABLE, NULL);
    } else if (r->integer < 0) {
        finish(f, ctx->key, -1, NULL); /* no live worker holds it */
    } else if (r->integer == 0) {
        finish(f, ctx->key, ENGINE_E_TIMEOUT, NULL); /* its worker no longer listens */
    }
    /* else: heard; the answer comes on our channel */
    free(ctx);
}

static bool valid_conn_id(const char *id) {
    if (strlen(id) != CONN_ID_LEN || conn_id_worker(id) < 0) return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

int redis_fwd_ask(redis_fwd *f, redis_client *home, const engine_remote_req *r) {
    if (!valid_conn_id(r->conn_id)) return -1;
    if (!home) return ENGINE_E_UNAVAILABLE;
    uint64_t id = ++f->next_id;
    ask_ctx *ctx = xmalloc(sizeof(*ctx));
    ctx->f = f;
    snprintf(ctx->key, sizeof(ctx->key), "%" PRIu64, id);
    fwd_pending *p = xcalloc(1, sizeof(*p));
    p->done = r->done;
    snprintf(p->tag, sizeof(p->tag), "%s", r->tag ? r->tag : "");
    p->deadline_ms = uv_now(f->srv->loop) + REDIS_FWD_TIMEOUT_MS;
    strmap_put(&f->pending, ctx->key, p, NULL);

    size_t mlen;
    char *msg = redis_fwd_request_format(id, f->field, r, &mlen);
    char min[24], suffix[16];
    snprintf(min, sizeof(min), "%" PRId64, clock_wall_ms() - f->node_timeout_ms);
    snprintf(suffix, sizeof(suffix), ".%d", conn_id_worker(r->conn_id));
    const char *argv[] = {"EVAL", ASK_LUA,    "1",       WORKERS_KEY, min,
                          suffix, r->conn_id, f->prefix, msg};
    size_t lens[] = {4,
                     strlen(ASK_LUA),
                     1,
                     strlen(WORKERS_KEY),
                     strlen(min),
                     strlen(suffix),
                     strlen(r->conn_id),
                     strlen(f->prefix),
                     mlen};
    /* A failure to send answers through on_asked on a later turn. */
    redis_client_command_argv(home, REDIS_CLIENT_ANY, on_asked, ctx, 9, argv, lens);
    free(msg);
    return 0;
}

void redis_fwd_tick(redis_fwd *f) {
    if (f->pending.count == 0) return;
    uint64_t now = uv_now(f->srv->loop);
    /* Collect first: done() may ask again (the map must not change while
     * it is walked). */
    for (;;) {
        const char *due = NULL;
        size_t it = 0;
        const char *k;
        void *v;
        while (strmap_next(&f->pending, &it, &k, &v))
            if (((fwd_pending *)v)->deadline_ms <= now) {
                due = k;
                break;
            }
        if (!due) return;
        char key[24];
        snprintf(key, sizeof(key), "%s", due);
        finish(f, key, ENGINE_E_TIMEOUT, NULL);
    }
}

/* ---- the owner ---- */

static void serve(redis_fwd *f, redis_client *home, const redis_fwd_request *q) {
    int rc;
    engine_conn_info info = {0};
    bool has_info = false;
    switch (q->kind) {
    case ENGINE_REMOTE_SEND: {
        ws_frame *fr = ws_frame_new(q->opcode, q->payload, q->payload_len);
        rc = engine_send_conn(f->local, q->conn_id, fr, (size_t)q->max_queued);
        ws_frame_unref(fr);
        break;
    }
    case ENGINE_REMOTE_CLOSE: {
        char *reason = xstrndup(q->reason, q->reason_len);
        rc = engine_close_conn(f->local, q->conn_id, q->code, reason);
        free(reason);
        break;
    }
    default:
        rc = engine_conn_lookup(f->local, q->conn_id, &info);
        has_info = rc == 0;
        break;
    }
    if (rc != 0 && rc != -2) rc = -1; /* not here (any more): gone */
    size_t alen;
    char *ans = redis_fwd_answer_format(q->id, rc, has_info ? &info : NULL, &alen);
    if (has_info) free(info.user_agent);
    char channel[sizeof(f->prefix) + FWD_FIELD_LEN];
    snprintf(channel, sizeof(channel), "%s%.*s", f->prefix, (int)q->reply_len, q->reply);
    fire(home, 3, (const char *[]){"PUBLISH", channel, ans},
         (const size_t[]){7, strlen(channel), alen});
    free(ans);
}

bool redis_fwd_on_message(redis_fwd *f, redis_client *home, const char *channel, size_t channel_len,
                          const char *p, size_t n) {
    if (channel_len != strlen(f->channel) || memcmp(channel, f->channel, channel_len) != 0)
        return false;
    if (n > 0 && p[0] == 'Q') {
        redis_fwd_request q;
        if (redis_fwd_request_parse(p, n, &q) == 0) serve(f, home, &q);
    } else if (n > 0 && p[0] == 'A') {
        redis_fwd_answer a;
        if (redis_fwd_answer_parse(p, n, &a) == 0) {
            char key[24];
            snprintf(key, sizeof(key), "%" PRIu64, a.id);
            engine_conn_info info = {.connected_at = a.connected_at,
                                     .last_active_at = a.last_active_at};
            if (a.has_info) {
                memcpy(info.source_ip, a.source_ip, sizeof(info.source_ip));
                info.user_agent = a.user_agent ? xstrndup(a.user_agent, a.user_agent_len) : NULL;
            }
            finish(f, key, a.rc, a.has_info ? &info : NULL);
            free(info.user_agent);
        }
    }
    return true;
}

/* ---- the codec ----
 *
 * Request: "Q<id>\n<reply field>\n<kind>\n<connection id>\n<max queued>\n
 * <close code>\n<reason>\n<opcode byte><payload>".
 * Answer: "A<id>\n<rc>\n" then, for a connection's details,
 * "<connectedAt>\n<lastActiveAt>\n<sourceIp>\n<userAgent>" (the user agent
 * runs to the end; "-" before it: none). */

char *redis_fwd_request_format(uint64_t id, const char *reply, const engine_remote_req *r,
                               size_t *len) {
    const uint8_t *payload = NULL;
    size_t plen = 0;
    uint8_t opcode = WS_OP_TEXT;
    if (r->kind == ENGINE_REMOTE_SEND && r->f) {
        payload = ws_frame_payload(r->f);
        plen = r->f->len - (size_t)(payload - r->f->data);
        opcode = (uint8_t)(r->f->data[0] & 0x0f);
    }
    const char *reason = r->kind == ENGINE_REMOTE_CLOSE && r->reason ? r->reason : "";
    size_t head = 128 + strlen(reply) + strlen(r->conn_id) + strlen(reason);
    char *out = xmalloc(head + plen);
    int n = snprintf(out, head, "Q%" PRIu64 "\n%s\n%d\n%s\n%zu\n%u\n", id, reply, (int)r->kind,
                     r->conn_id, r->max_queued, (unsigned)r->code);
    /* A newline in the reason would end it early: it travels as a space. */
    for (const char *s = reason; *s; s++) out[n++] = *s == '\n' ? ' ' : *s;
    out[n++] = '\n';
    out[n++] = (char)opcode;
    if (plen) memcpy(out + n, payload, plen);
    *len = (size_t)n + plen;
    return out;
}

/* The next "<text>\n" of [*p, end): its start and length; *p moves past
 * the newline. Returns false when there is no newline. */
static bool next_line(const char **p, const char *end, const char **s, size_t *l) {
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    if (!nl) return false;
    *s = *p;
    *l = (size_t)(nl - *p);
    *p = nl + 1;
    return true;
}

/* Parse the decimal in [s, s+l) into *v (at most max). */
static bool parse_u64(const char *s, size_t l, uint64_t max, uint64_t *v) {
    if (l == 0 || l > 20) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < l; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    if (x > max) return false;
    *v = x;
    return true;
}

static bool parse_i64(const char *s, size_t l, int64_t *v) {
    bool neg = l > 0 && s[0] == '-';
    uint64_t u;
    if (!parse_u64(s + neg, l - neg, (uint64_t)INT64_MAX, &u)) return false;
    *v = neg ? -(int64_t)u : (int64_t)u;
    return true;
}

int redis_fwd_request_parse(const char *p, size_t n, redis_fwd_request *out) {
    memset(out, 0, sizeof(*out));
    if (n < 1 || p[0] != 'Q') return -1;
    const char *end = p + n, *cur = p + 1, *s;
    size_t l;
    uint64_t v;
    if (!next_line(&cur, end, &s, &l) || !parse_u64(s, l, UINT64_MAX, &out->id)) return -1;
    if (!next_line(&cur, end, &out->reply, &out->reply_len) || out->reply_len == 0 ||
        out->reply_len >= FWD_FIELD_LEN)
        return -1;
    if (!next_line(&cur, end, &s, &l) || !parse_u64(s, l, ENGINE_REMOTE_CLOSE, &v)) return -1;
    out->kind = (engine_remote_kind)v;
    if (!next_line(&cur, end, &s, &l) || l != CONN_ID_LEN) return -1;
    memcpy(out->conn_id, s, l);
    if (memchr(out->conn_id, '\0', l)) return -1;
    if (!next_line(&cur, end, &s, &l) || !parse_u64(s, l, UINT64_MAX, &out->max_queued)) return -1;
    if (!next_line(&cur, end, &s, &l) || !parse_u64(s, l, UINT16_MAX, &v)) return -1;
    out->code = (uint16_t)v;
    if (!next_line(&cur, end, &out->reason, &out->reason_len)) return -1;
    if (cur >= end) return -1;
    out->opcode = (uint8_t)*cur++;
    if (out->opcode != WS_OP_TEXT && out->opcode != WS_OP_BINARY) return -1;
    out->payload = (const uint8_t *)cur;
    out->payload_len = (size_t)(end - cur);
    return 0;
}

char *redis_fwd_answer_format(uint64_t id, int rc, const engine_conn_info *info, size_t *len) {
    const char *ua = info && info->user_agent ? info->user_agent : NULL;
    size_t cap = 160 + (ua ? strlen(ua) : 0);
    char *out = xmalloc(cap);
    int n;
    if (info)
        n = snprintf(out, cap, "A%" PRIu64 "\n%d\n%" PRId64 "\n%" PRId64 "\n%s\n%s%s", id, rc,
                     info->connected_at, info->last_active_at, info->source_ip, ua ? "+" : "-",
                     ua ? ua : "");
    else n = snprintf(out, cap, "A%" PRIu64 "\n%d\n", id, rc);
    *len = (size_t)n;
    return out;
}

int redis_fwd_answer_parse(const char *p, size_t n, redis_fwd_answer *out) {
    memset(out, 0, sizeof(*out));
    if (n < 1 || p[0] != 'A') return -1;
    const char *end = p + n, *cur = p + 1, *s;
    size_t l;
    int64_t v;
    if (!next_line(&cur, end, &s, &l) || !parse_u64(s, l, UINT64_MAX, &out->id)) return -1;
    if (!next_line(&cur, end, &s, &l) || !parse_i64(s, l, &v) || v < -2 || v > 0) return -1;
    out->rc = (int)v;
    if (cur == end) return 0;
    if (out->rc != 0) return -1;
    out->has_info = true;
    if (!next_line(&cur, end, &s, &l) || !parse_i64(s, l, &out->connected_at)) return -1;
    if (!next_line(&cur, end, &s, &l) || !parse_i64(s, l, &out->last_active_at)) return -1;
    if (!next_line(&cur, end, &s, &l) || l >= sizeof(out->source_ip) || memchr(s, '\0', l))
        return -1;
    memcpy(out->source_ip, s, l);
    if (cur >= end) return -1;
    if (*cur == '+') {
        out->user_agent = cur + 1;
        out->user_agent_len = (size_t)(end - cur - 1);
    } else if (*cur != '-' || cur + 1 != end) {
        return -1;
    }
    return 0;
}
