/* The room scripts (redis_script.h). The Lua is kept small and
 * deterministic: every key it touches is passed in KEYS, and time comes
 * from the caller (ts, cutoff), so a replica or an AOF replays it to the
 * same result. */
#include "engine/redis_script.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/bytebuf.h"
#include "common/hex.h"
#include "common/strbuf.h"

/* Shared by both scripts: a Stream entry's field, an id's seq, and the
 * bounded trim of expired entries from the head. trim_old returns the seq
 * of the oldest entry kept (0: none). At most 8 x 64 expired entries go
 * per call, so a call never blocks Redis for long; what is left goes on the
 * next calls (and is never returned meanwhile: reads skip ts < cutoff). */
#define LUA_COMMON                                                                                 \
    "local function field(kv, name)\n"                                                             \
    "  for i = 1, #kv, 2 do if kv[i] == name then return kv[i + 1] end end\n"                      \
    "  return nil\n"                                                                               \
    "end\n"                                                                                        \
    "local function seq_of(id) return tonumber(string.match(id, '^(%d+)')) end\n"                  \
    "local function ts_of(e) return tonumber(field(e[2], 'ts')) or 0 end\n"                        \
    "local function trim_old(stream, cutoff)\n"                                                    \
    "  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)\n"                          \
    "  if #head == 0 then return 0 end\n"                                                          \
    "  if cutoff <= 0 or ts_of(head[1]) >= cutoff then return seq_of(head[1][1]) end\n"            \
    "  for round = 1, 8 do\n"                                                                      \
    "    local rows = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)\n"                       \
    "    if #rows == 0 then return 0 end\n"                                                        \
    "    for _, e in ipairs(rows) do\n"                                                            \
    "      if ts_of(e) >= cutoff then\n"                                                           \
    "        redis.call('XTRIM', stream, 'MINID', e[1])\n"                                         \
    "        return seq_of(e[1])\n"                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "    redis.call('XTRIM', stream, 'MINID', (seq_of(rows[#rows][1]) + 1) .. '-0')\n"             \
    "  end\n"                                                                                      \
    "  head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)\n"                                \
    "  if #head == 0 then return 0 end\n"                                                          \
    "  return seq_of(head[1][1])\n"                                                                \
    "end\n"

/* KEYS: seq, log, idem. ARGV: window_s, messageId, ts_ms, value, max_len,
 * cutoff_ms, channel ("" = no publish), publish prefix. */
static const char chat_lua[] =
    "-- wsgate chat: idempotency, seq, append, trim, publish (redis_script.h)\n" LUA_COMMON
    "local window = tonumber(ARGV[1])\n"
    "if window > 0 then\n"
    "  local seen = redis.call('GET', KEYS[3])\n"
    "  if seen then\n"
    "    local seq, mid, ts = string.match(seen, '^(%d+) (%S*) (%d+)$')\n"
    "    local v = ''\n"
    "    local e = redis.call('XRANGE', KEYS[2], seq .. '-0', seq .. '-0')\n"
    "    if e[1] then v = field(e[1][2], 'v') or '' end\n"
    "    return {tonumber(seq), 1, mid, tonumber(ts), v}\n"
    "  end\n"
    "end\n"
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local id = seq .. '-0'\n"
    "local maxlen = tonumber(ARGV[5])\n"
    "if maxlen > 0 then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, id, 'id', ARGV[2], 'ts', ARGV[3],\n"
    "             'v', ARGV[4])\n"
    "else\n"
    "  redis.call('XADD', KEYS[2], id, 'id', ARGV[2], 'ts', ARGV[3], 'v', ARGV[4])\n"
    "end\n"
    "local cutoff = tonumber(ARGV[6])\n"
    "if cutoff > 0 then trim_old(KEYS[2], cutoff) end\n"
    "if window > 0 then\n"
    "  redis.call('SET', KEYS[3], seq .. ' ' .. ARGV[2] .. ' ' .. ARGV[3], 'EX', window)\n"
    "end\n"
    "if ARGV[7] ~= '' then\n"
    "  redis.call('PUBLISH', ARGV[7], ARGV[8] .. seq .. '\\n' .. ARGV[4])\n"
    "end\n"
    "return {seq, 0, ARGV[2], tonumber(ARGV[3]), ''}\n";

/* KEYS: seq, log. ARGV: 'after' | 'before', bound, limit, max_bytes,
 * cutoff_ms. */
static const char history_lua[] =
    "-- wsgate history: one page of a room's Stream (redis_script.h)\n" LUA_COMMON
    "local cutoff = tonumber(ARGV[5])\n"
    "local oldest = trim_old(KEYS[2], cutoff)\n"
    "local last = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local after = ARGV[1] == 'after'\n"
    "local bound = tonumber(ARGV[2])\n"
    "local limit = tonumber(ARGV[3])\n"
    "local maxb = tonumber(ARGV[4])\n"
    "local rows\n"
    "if after then\n"
    "  local start = '-'\n"
    "  if bound > 0 then start = '(' .. bound .. '-0' end\n"
    "  rows = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', limit + 1)\n"
    "else\n"
    "  local stop = '+'\n"
    "  if bound > 0 then stop = '(' .. bound .. '-0' end\n"
    "  rows = redis.call('XREVRANGE', KEYS[2], stop, '-', 'COUNT', limit + 1)\n"
    "end\n"
    "local page = {}\n"
    "local bytes = 0\n"
    "local more = 0\n"
    "for _, e in ipairs(rows) do\n"
    "  local ts = ts_of(e)\n"
    "  if ts >= cutoff then\n"
    "    if #page == limit then more = 1 break end\n"
    "    local v = field(e[2], 'v') or ''\n"
    "    local mid = field(e[2], 'id') or ''\n"
    "    local size = 160 + #v + #mid\n"
    "    if maxb > 0 and #page > 0 and bytes + size > maxb then more = 1 break end\n"
    "    bytes = bytes + size\n"
    "    page[#page + 1] = {seq_of(e[1]), mid, ts, v}\n"
    "  elseif not after then\n"
    "    break\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "for i = 1, #page do\n"
    "  local p = page[i]\n"
    "  if not after then p = page[#page + 1 - i] end\n"
    "  for j = 1, 4 do out[#out + 1] = p[j] end\n"
    "end\n"
    "return {last, oldest, more, out}\n";

static const char *const sources[REDIS_SCRIPT_COUNT + 1] = {chat_lua, history_lua, NULL};
static char shas[REDIS_SCRIPT_COUNT][41];
static pthread_once_t shas_once = PTHREAD_ONCE_INIT;

static void compute_shas(void) {
    for (int i = 0; i < REDIS_SCRIPT_COUNT; i++) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        if (!EVP_Digest(sources[i], strlen(sources[i]), md, &n, EVP_sha1(), NULL) || n != 20)
            abort();
        hex_encode_lower(md, 20, shas[i]);
    }
}

const char *redis_script_source(redis_script_id id) { return sources[id]; }

const char *redis_script_sha(redis_script_id id) {
    pthread_once(&shas_once, compute_shas);
    return shas[id];
}

const char *const *redis_script_sources(void) { return sources; }

static char *room_key(const char *room, const char *suffix) {
    bytebuf b = {0};
    bytebuf_puts(&b, "wsgate:{");
    bytebuf_puts(&b, room);
    bytebuf_puts(&b, "}:");
    bytebuf_puts(&b, suffix);
    return bytebuf_take(&b);
}

char *redis_script_seq_key(const char *room) { return room_key(room, "seq"); }
char *redis_script_log_key(const char *room) { return room_key(room, "log"); }

char *redis_script_idem_key(const char *room, const char *sender, const char *client_message_id) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int n = 0;
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, sender, strlen(sender) + 1) ||
        !EVP_DigestUpdate(ctx, client_message_id, strlen(client_message_id)) ||
        !EVP_DigestFinal_ex(ctx, md, &n))
        abort();
    EVP_MD_CTX_free(ctx);
    char hex[65], suffix[80];
    hex_encode_lower(md, 32, hex);
    snprintf(suffix, sizeof suffix, "idem:%s", hex);
    return room_key(room, suffix);
}

char *redis_script_channel(int db, const char *room) {
    bytebuf b = {0};
    bytebuf_printf(&b, "wsgate:%d:room:", db);
    bytebuf_puts(&b, room);
    return bytebuf_take(&b);
}

/* ---- running ---- */

/* A script call kept for its one NOSCRIPT retry: argv[1] is the SHA, then
 * the numkeys, keys and arguments (each copied). */
typedef struct script_call {
    redis_script_id id;
    uint32_t affinity;
    int argc;
    char **argv;
    size_t *lens;
    bool retried;
    redis_client_reply_cb cb;
    void *data;
} script_call;

static void call_free(script_call *k) {
    for (int i = 0; i < k->argc; i++) free(k->argv[i]);
    free(k->argv);
    free(k->lens);
    free(k);
}

static void script_reply(redis_client *c, const redisReply *r, const char *err, void *data) {
    script_call *k = data;
    if (r && r->type == REDIS_REPLY_ERROR && !k->retried && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        /* The server lost its script cache (a restart, SCRIPT FLUSH): EVAL
         * runs and caches it again. */
        k->retried = true;
        free(k->argv[0]);
        free(k->argv[1]);
        k->argv[0] = xstrdup("EVAL");
        k->lens[0] = 4;
        k->argv[1] = xstrdup(sources[k->id]);
        k->lens[1] = strlen(sources[k->id]);
        redis_client_command_argv(c, k->affinity, script_reply, k, k->argc, (const char **)k->argv,
                                  k->lens);
        return;
    }
    k->cb(c, r, err, k->data);
    call_free(k);
}

static void put_arg(script_call *k, const void *s, size_t len) {
    k->argv[k->argc] = xmalloc(len + 1);
    if (len) memcpy(k->argv[k->argc], s, len);
    k->argv[k->argc][len] = '\0';
    k->lens[k->argc] = len;
    k->argc++;
}

int redis_script_run(redis_client *c, uint32_t affinity, redis_script_id id, int nkeys,
                     const char **keys, const size_t *keylens, int nargs, const char **args,
                     const size_t *arglens, redis_client_reply_cb cb, void *data) {
    script_call *k = xcalloc(1, sizeof *k);
    k->id = id;
    k->affinity = affinity;
    k->cb = cb;
    k->data = data;
    size_t total = 3 + (size_t)nkeys + (size_t)nargs;
    k->argv = xcalloc(total, sizeof *k->argv);
    k->lens = xcalloc(total, sizeof *k->lens);
    put_arg(k, "EVALSHA", 7);
    put_arg(k, redis_script_sha(id), 40);
    char n[16];
    put_arg(k, n, (size_t)snprintf(n, sizeof n, "%d", nkeys));
    for (int i = 0; i < nkeys; i++) put_arg(k, keys[i], keylens ? keylens[i] : strlen(keys[i]));
    for (int i = 0; i < nargs; i++) put_arg(k, args[i], arglens ? arglens[i] : strlen(args[i]));
    return redis_client_command_argv(c, affinity, script_reply, k, k->argc, (const char **)k->argv,
                                     k->lens);
}

/* A chat in progress: its parsed result waits here for WAIT's answer. */
typedef struct chat_call {
    redis_chat_cb cb;
    void *data;
    uint32_t affinity;
    int min_replicas, wait_ms;
    redis_chat_result res;
    char *value; /* owned copy of res.value */
    char err[200];
} chat_call;

static void chat_done(redis_client *c, chat_call *k, const char *err) {
    k->cb(c, err ? NULL : &k->res, err, k->data);
    free(k->value);
    free(k);
}

static void chat_waited(redis_client *c, const redisReply *r, const char *err, void *data) {
    chat_call *k = data;
    if (!err && r->type == REDIS_REPLY_ERROR) {
        snprintf(k->err, sizeof k->err, "redis: %.*s", (int)(r->len > 150 ? 150 : r->len), r->str);
        err = k->err;
    } else if (!err && (r->type != REDIS_REPLY_INTEGER || r->integer < k->min_replicas)) {
        snprintf(k->err, sizeof k->err, "redis: reached %lld of %d replicas",
                 r->type == REDIS_REPLY_INTEGER ? (long long)r->integer : 0LL, k->min_replicas);
        err = k->err;
    }
    chat_done(c, k, err);
}

static void chat_reply(redis_client *c, const redisReply *r, const char *err, void *data) {
    chat_call *k = data;
    if (err) {
        chat_done(c, k, err);
        return;
    }
    wsg_error e = {0};
    if (redis_chat_parse(r, &k->res, &e) < 0) {
        strbuf b; /* cut to k->err, as the reason always was */
        strbuf_init(&b, k->err, sizeof k->err);
        strbuf_puts(&b, e.message);
        chat_done(c, k, k->err);
        return;
    }
    k->value = xmalloc(k->res.value_len + 1);
    memcpy(k->value, k->res.value, k->res.value_len);
    k->value[k->res.value_len] = '\0';
    k->res.value = k->value;
    if (k->min_replicas <= 0) {
        chat_done(c, k, NULL);
        return;
    }
    /* WAIT counts the replicas that acknowledged every write this
     * connection made so far, the script's included (same affinity, same
     * connection while it is up; after a reconnect WAIT would count too
     * little, never too much). A duplicate waits as well: its original may
     * not have reached them. */
    char n[16], ms[16];
    snprintf(n, sizeof n, "%d", k->min_replicas);
    snprintf(ms, sizeof ms, "%d", k->wait_ms);
    const char *argv[3] = {"WAIT", n, ms};
    redis_client_command_argv(c, k->affinity, chat_waited, k, 3, argv, NULL);
}

int redis_script_chat(redis_client *c, const redis_chat *m, redis_chat_cb cb, void *data) {
    bool idem = m->client_message_id && m->idempotency_window_s > 0;
    char *keys[3] = {
        redis_script_seq_key(m->room), redis_script_log_key(m->room),
        idem ? redis_script_idem_key(m->room, m->sender ? m->sender : "", m->client_message_id)
             : room_key(m->room, "idem:")};
    char *channel = m->publish ? redis_script_channel(m->db, m->room) : xstrdup("");
    char window[24], ts[24], maxlen[24], cutoff[24];
    snprintf(window, sizeof window, "%lld", idem ? (long long)m->idempotency_window_s : 0LL);
    snprintf(ts, sizeof ts, "%lld", (long long)m->ts_ms);
    snprintf(maxlen, sizeof maxlen, "%lld", (long long)(m->max_len > 0 ? m->max_len : 0));
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)(m->cutoff_ms > 0 ? m->cutoff_ms : 0));
    const char *args[8] = {
        window, m->message_id, ts,      m->value,
        maxlen, cutoff,        channel, m->publish_prefix ? m->publish_prefix : ""};
    size_t lens[8] = {strlen(window),  strlen(m->message_id),
                      strlen(ts),      m->value_len,
                      strlen(maxlen),  strlen(cutoff),
                      strlen(channel), m->publish_prefix ? m->publish_prefix_len : 0};
    chat_call *k = xcalloc(1, sizeof *k);
    k->cb = cb;
    k->data = data;
    k->affinity = redis_client_affinity(m->room, strlen(m->room));
    k->min_replicas = m->min_replicas;
    k->wait_ms = m->wait_timeout_ms > 0 ? m->wait_timeout_ms : 1000;
    int rc = redis_script_run(c, k->affinity, REDIS_SCRIPT_CHAT, 3, (const char **)keys, NULL, 8,
                              args, lens, chat_reply, k);
    for (int i = 0; i < 3; i++) free(keys[i]);
    free(channel);
    return rc;
}

typedef struct history_call {
    redis_history_cb cb;
    void *data;
} history_call;

static void history_reply(redis_client *c, const redisReply *r, const char *err, void *data) {
    history_call *k = data;
    redis_history_result res;
    wsg_error e = {0};
    if (!err && redis_history_parse(r, &res, &e) < 0) err = e.message;
    k->cb(c, err ? NULL : &res, err, k->data);
    if (!err) free(res.entries);
    free(k);
}

int redis_script_history(redis_client *c, const redis_history *h, redis_history_cb cb, void *data) {
    char *keys[2] = {redis_script_seq_key(h->room), redis_script_log_key(h->room)};
    bool after = h->after_seq >= 0;
    char bound[24], limit[24], maxb[24], cutoff[24];
    snprintf(bound, sizeof bound, "%lld",
             (long long)(after ? h->after_seq : (h->before_seq > 0 ? h->before_seq : 0)));
    snprintf(limit, sizeof limit, "%d", h->limit > 0 ? h->limit : 1);
    snprintf(maxb, sizeof maxb, "%zu", h->max_bytes);
    snprintf(cutoff, sizeof cutoff, "%lld", (long long)(h->cutoff_ms > 0 ? h->cutoff_ms : 0));
    const char *args[5] = {after ? "after" : "before", bound, limit, maxb, cutoff};
    history_call *k = xcalloc(1, sizeof *k);
    k->cb = cb;
    k->data = data;
    int rc =
        redis_script_run(c, redis_client_affinity(h->room, strlen(h->room)), REDIS_SCRIPT_HISTORY,
                         2, (const char **)keys, NULL, 5, args, NULL, history_reply, k);
    free(keys[0]);
    free(keys[1]);
    return rc;
}

/* ---- replies ---- */

static int bad(wsg_error *err, const char *what) {
    return wsg_error_set(err, WSG_E_PARSE, "redis: malformed script reply (%s)", what);
}

static int reply_error(const redisReply *r, wsg_error *err) {
    if (!r) return bad(err, "none");
    if (r->type == REDIS_REPLY_ERROR)
        return wsg_error_set(err, WSG_E_IO, "redis: %.*s", (int)(r->len > 300 ? 300 : r->len),
                             r->str);
    return 0;
}

int redis_chat_parse(const redisReply *r, redis_chat_result *out, wsg_error *err) {
    memset(out, 0, sizeof *out);
    int rc = reply_error(r, err);
    if (rc < 0) return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 5) return bad(err, "not 5 items");
    redisReply **e = r->element;
    if (e[0]->type != REDIS_REPLY_INTEGER || e[1]->type != REDIS_REPLY_INTEGER ||
        e[2]->type != REDIS_REPLY_STRING || e[3]->type != REDIS_REPLY_INTEGER ||
        e[4]->type != REDIS_REPLY_STRING)
        return bad(err, "item types");
    if (e[2]->len >= sizeof out->message_id) return bad(err, "messageId length");
    out->seq = e[0]->integer;
    out->duplicate = e[1]->integer != 0;
    memcpy(out->message_id, e[2]->str, e[2]->len);
    out->message_id[e[2]->len] = '\0';
    out->ts_ms = e[3]->integer;
    out->value = e[4]->str;
    out->value_len = e[4]->len;
    return 0;
}

int redis_history_parse(const redisReply *r, redis_history_result *out, wsg_error *err) {
    memset(out, 0, sizeof *out);
    int rc = reply_error(r, err);
    if (rc < 0) return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) return bad(err, "not 4 items");
    redisReply **e = r->element;
    if (e[0]->type != REDIS_REPLY_INTEGER || e[1]->type != REDIS_REPLY_INTEGER ||
        e[2]->type != REDIS_REPLY_INTEGER)
        return bad(err, "item types");
    out->last_seq = e[0]->integer;
    out->oldest_seq = e[1]->integer;
    out->has_more = e[2]->integer != 0;
    /* An empty Lua table comes back as an empty array. */
    const redisReply *list = e[3];
    if (list->type != REDIS_REPLY_ARRAY || list->elements % 4 != 0) return bad(err, "entries");
    out->count = list->elements / 4;
    out->entries = out->count ? xcalloc(out->count, sizeof *out->entries) : NULL;
    for (size_t i = 0; i < out->count; i++) {
        redisReply **f = list->element + 4 * i;
        if (f[0]->type != REDIS_REPLY_INTEGER || f[1]->type != REDIS_REPLY_STRING ||
            f[2]->type != REDIS_REPLY_INTEGER || f[3]->type != REDIS_REPLY_STRING) {
            free(out->entries);
            out->entries = NULL;
            out->count = 0;
            return bad(err, "entry types");
        }
        out->entries[i] = (redis_history_entry){.seq = f[0]->integer,
                                                .message_id = f[1]->str,
                                                .message_id_len = f[1]->len,
                                                .ts_ms = f[2]->integer,
                                                .value = f[3]->str,
                                                .value_len = f[3]->len};
    }
    return 0;
}
