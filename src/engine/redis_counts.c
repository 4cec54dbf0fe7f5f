#include "engine/redis_counts.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#define WORKERS_KEY "wsgate:workers"

/* Sum the hashes named by KEYS (room -> members) into one flat reply
 * room, sum, room, sum ...: one round trip per server whatever the number
 * of workers. */
static const char SUM_LUA[] =
    "local sums = {}\n"
    "for _, k in ipairs(KEYS) do\n"
    "  local h = redis.call('HGETALL', k)\n"
    "  for j = 1, #h, 2 do\n"
    "    local n = tonumber(h[j + 1]) or 0\n"
    "    if n > 0 then sums[h[j]] = (sums[h[j]] or 0) + n end\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "for r, n in pairs(sums) do out[#out + 1] = r; out[#out + 1] = n end\n"
    "return out\n";

typedef struct counts_read {
    redis_client **shards; /* copied: the caller's array is borrowed for the call only */
    size_t nshards, pending;
    char *own;
    redis_counts_fn done;
    void *data;
    const char *err; /* the first failure */
    strmap sums;
} counts_read;

static void finish(counts_read *cr) {
    if (cr->err) cr->done(cr->data, -1, cr->err, NULL);
    else cr->done(cr->data, 0, NULL, &cr->sums);
    strmap_free(&cr->sums);
    free(cr->shards);
    free(cr->own);
    free(cr);
}

static void on_sums(redis_client *c, const redisReply *r, const char *err, void *data) {
    counts_read *cr = data;
    if (err || !r || r->type != REDIS_REPLY_ARRAY) {
        if (!cr->err) cr->err = err ? err : "redis: unexpected reply to the counts script";
    } else {
        for (size_t i = 0; i + 1 < r->elements; i += 2) {
            const redisReply *k = r->element[i], *v = r->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_INTEGER || v->integer <= 0)
                continue;
            /* A room lives on one server, but a listing taken while the
             * servers changed could name it twice: add. */
            uintptr_t old = (uintptr_t)strmap_get(&cr->sums, k->str);
            strmap_put(&cr->sums, k->str, (void *)(old + (uintptr_t)v->integer), NULL);
        }
    }
    if (--cr->pending == 0) finish(cr);
}

static bool is_own(const char *own, const char *field, size_t len) {
    size_t n = strlen(own);
    return len > n && memcmp(field, own, n) == 0 && field[n] == '.';
}

static void on_workers(redis_client *c, const redisReply *r, const char *err, void *data) {
    counts_read *cr = data;
    if (err || !r || r->type != REDIS_REPLY_ARRAY) {
        cr->err = err ? err : "redis: unexpected reply to the live-worker read";
        finish(cr);
        return;
    }
    size_t nkeys = 0;
    char **keys = xcalloc(r->elements + 3, sizeof(*keys));
    keys[nkeys++] = "EVAL";
    keys[nkeys++] = (char *)SUM_LUA;
    nkeys++; /* the key count, below */
    size_t first = nkeys;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *f = r->element[i];
        if (f->type != REDIS_REPLY_STRING || is_own(cr->own, f->str, f->len)) continue;
        size_t n = f->len + 24;
        keys[nkeys] = xmalloc(n);
        snprintf(keys[nkeys++], n, "wsgate:w:%.*s:rooms", (int)f->len, f->str);
    }
    char count[24];
    snprintf(count, sizeof(count), "%zu", nkeys - first);
    keys[2] = count;
    cr->pending = 1; /* this callback's own share */
    for (size_t s = 0; nkeys > first && s < cr->nshards; s++) {
        cr->pending++;
        if (!cr->shards[s]) on_sums(NULL, NULL, "redis: closing", cr);
        else
            redis_client_command_argv(cr->shards[s], REDIS_CLIENT_ANY, on_sums, cr, (int)nkeys,
                                      (const char **)keys, NULL);
    }
    for (size_t i = first; i < nkeys; i++) free(keys[i]);
    free(keys);
    if (--cr->pending == 0) finish(cr);
}

void redis_counts_rooms(redis_client *home, redis_client *const *shards, size_t nshards,
                        const char *own_node, int64_t min_heartbeat_ms, redis_counts_fn done,
                        void *data) {
    counts_read *cr = xcalloc(1, sizeof(*cr));
    cr->shards = xmalloc((nshards ? nshards : 1) * sizeof(*cr->shards));
    for (size_t i = 0; i < nshards; i++) cr->shards[i] = shards[i];
    cr->nshards = nshards;
    cr->own = xstrdup(own_node);
    cr->done = done;
    cr->data = data;
    strmap_init(&cr->sums);
    char min[24];
    snprintf(min, sizeof(min), "%" PRId64, min_heartbeat_ms);
    redis_client_command_argv(home, REDIS_CLIENT_ANY, on_workers, cr, 4,
                              (const char *[]){"ZRANGEBYSCORE", WORKERS_KEY, min, "+inf"}, NULL);
}
