#include "engine/directory.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"

/* Spreads room, user and connection ids over the shards (the maps inside
 * each shard are keyed with a random seed against chosen keys). */
static directory_shard *shard_of(directory *d, const char *key) {
    return &d->shards[hash_bytes(key, strlen(key), HASH_FNV_BASIS) % DIRECTORY_SHARDS];
}

static const char *set_key(const void *v) { return ((const directory_set *)v)->id; }
/* A user's slot holds its entry, or its one connection's record with the
 * low bit set (records are at least pointer-aligned). */
static inline bool user_is_rec(const void *v) { return (uintptr_t)v & 1; }
static inline directory_conn *user_rec(const void *v) {
    return (directory_conn *)((uintptr_t)v & ~(uintptr_t)1);
}
static const char *user_key(const void *v) {
    return user_is_rec(v) ? user_rec(v)->user_id : ((const directory_set *)v)->id;
}
static const char *conn_key(const void *v) { return ((const directory_conn *)v)->c->id; }

void directory_init(directory *d) {
    memset(d, 0, sizeof(*d));
    for (size_t i = 0; i < DIRECTORY_SHARDS; i++) {
        pthread_mutex_init(&d->shards[i].lock, NULL);
        keytab_init(&d->shards[i].rooms, set_key);
        keytab_init(&d->shards[i].users, user_key);
        keytab_init(&d->shards[i].conns, conn_key);
    }
    pthread_mutex_init(&d->sets_mu, NULL);
    slab_init(&d->sets, sizeof(directory_set) + DIRECTORY_SHORT_ID);
}

static directory_set *set_new(directory *d, const char *id) {
    size_t n = strlen(id) + 1;
    directory_set *e;
    if (n <= DIRECTORY_SHORT_ID) {
        pthread_mutex_lock(&d->sets_mu);
        e = slab_alloc(&d->sets);
        pthread_mutex_unlock(&d->sets_mu);
    } else {
        e = xcalloc(1, sizeof(*e) + n);
    }
    memcpy(e->id, id, n);
    return e;
}

static void set_free(directory *d, directory_set *e) {
    if (strlen(e->id) + 1 > DIRECTORY_SHORT_ID) {
        free(e);
        return;
    }
    pthread_mutex_lock(&d->sets_mu);
    slab_free(&d->sets, e);
    pthread_mutex_unlock(&d->sets_mu);
}

static void free_sets(directory *d, keytab *m) {
    size_t it = 0;
    void *v;
    while (keytab_next(m, &it, &v))
        if (!user_is_rec(v)) set_free(d, v); /* a record is its owner's */
    keytab_free(m);
}

void directory_free(directory *d) {
    for (size_t i = 0; i < DIRECTORY_SHARDS; i++) {
        directory_shard *sh = &d->shards[i];
        free_sets(d, &sh->rooms);
        free_sets(d, &sh->users);
        keytab_free(&sh->conns); /* the records are their owners' */
        pthread_mutex_destroy(&sh->lock);
    }
    slab_destroy(&d->sets);
    pthread_mutex_destroy(&d->sets_mu);
}

/* ---- rooms and users: counted sets of workers ---- */

/* Under the shard's lock; the fields are atomics for the lock-free
 * readers of pinned entries. */
static directory_set *set_add(directory *d, keytab *m, const char *id, int worker, bool first,
                              bool *created) {
    assert(worker >= 0 && worker < DIRECTORY_MAX_WORKERS);
    directory_set *e = keytab_get(m, id);
    if (!e) {
        e = set_new(d, id);
        keytab_put(m, e);
        if (created) *created = true;
    }
    if (first) atomic_fetch_or_explicit(&e->workers, UINT64_C(1) << worker, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->count, 1, memory_order_relaxed);
    return e;
}

static size_t set_remove(directory *d, keytab *m, const char *id, int worker, bool last,
                         bool *emptied) {
    directory_set *e = keytab_get(m, id);
    if (!e) return 0;
    if (last)
        atomic_fetch_and_explicit(&e->workers, ~(UINT64_C(1) << worker), memory_order_relaxed);
    size_t n = atomic_load_explicit(&e->count, memory_order_relaxed);
    if (n > 0) atomic_store_explicit(&e->count, --n, memory_order_relaxed);
    if (n == 0) {
        keytab_remove(m, id);
        set_free(d, e);
        if (emptied) *emptied = true;
    }
    return n;
}

static uint64_t set_workers(keytab *m, const char *id, size_t *count) {
    directory_set *e = keytab_get(m, id);
    if (!e) {
        if (count) *count = 0;
        return 0;
    }
    return directory_set_workers(e, count);
}

directory_set *directory_room_join(directory *d, const char *room_id, int worker, bool first) {
    directory_shard *sh = shard_of(d, room_id);
    bool created = false;
    pthread_mutex_lock(&sh->lock);
    directory_set *e = set_add(d, &sh->rooms, room_id, worker, first, &created);
    pthread_mutex_unlock(&sh->lock);
    if (created) atomic_fetch_add_explicit(&d->rooms, 1, memory_order_relaxed);
    return e;
}

size_t directory_room_leave(directory *d, const char *room_id, int worker, bool last) {
    directory_shard *sh = shard_of(d, room_id);
    bool emptied = false;
    pthread_mutex_lock(&sh->lock);
    size_t n = set_remove(d, &sh->rooms, room_id, worker, last, &emptied);
    pthread_mutex_unlock(&sh->lock);
    if (emptied) atomic_fetch_sub_explicit(&d->rooms, 1, memory_order_relaxed);
    return n;
}

uint64_t directory_room_workers(directory *d, const char *room_id, size_t *count) {
    directory_shard *sh = shard_of(d, room_id);
    pthread_mutex_lock(&sh->lock);
    uint64_t w = set_workers(&sh->rooms, room_id, count);
    pthread_mutex_unlock(&sh->lock);
    return w;
}

/* A user's slot that is still a record becomes an entry (its second
 * connection, or a caller with no record): rec's worker and count 1.
 * Under the shard's lock. */
static void user_promote(directory *d, keytab *m, const char *user_id) {
    void *v = keytab_get(m, user_id);
    if (!v || !user_is_rec(v)) return;
    const directory_conn *rec = user_rec(v);
    directory_set *e = set_new(d, user_id);
    atomic_store_explicit(&e->workers, UINT64_C(1) << rec->worker, memory_order_relaxed);
    atomic_store_explicit(&e->count, 1, memory_order_relaxed);
    keytab_put(m, e); /* replaces the record: the same key */
}

void directory_user_add(directory *d, const char *user_id, int worker, bool first) {
    directory_shard *sh = shard_of(d, user_id);
    pthread_mutex_lock(&sh->lock);
    user_promote(d, &sh->users, user_id);
    set_add(d, &sh->users, user_id, worker, first, NULL);
    pthread_mutex_unlock(&sh->lock);
}

void directory_user_add_conn(directory *d, directory_conn *rec, bool first) {
    assert(rec->worker >= 0 && rec->worker < DIRECTORY_MAX_WORKERS);
    assert(((uintptr_t)rec & 1) == 0);
    directory_shard *sh = shard_of(d, rec->user_id);
    pthread_mutex_lock(&sh->lock);
    if (!keytab_get(&sh->users, rec->user_id)) {
        keytab_put(&sh->users, (void *)((uintptr_t)rec | 1));
    } else {
        user_promote(d, &sh->users, rec->user_id);
        set_add(d, &sh->users, rec->user_id, rec->worker, first, NULL);
    }
    pthread_mutex_unlock(&sh->lock);
}

void directory_user_remove(directory *d, const char *user_id, int worker, bool last) {
    directory_shard *sh = shard_of(d, user_id);
    pthread_mutex_lock(&sh->lock);
    void *v = keytab_get(&sh->users, user_id);
    if (v && user_is_rec(v)) {
        /* the user's one connection: it is on this worker, and it goes */
        assert(user_rec(v)->worker == worker && last);
        keytab_remove(&sh->users, user_id);
    } else {
        set_remove(d, &sh->users, user_id, worker, last, NULL);
    }
    pthread_mutex_unlock(&sh->lock);
}

uint64_t directory_user_workers(directory *d, const char *user_id) {
    directory_shard *sh = shard_of(d, user_id);
    pthread_mutex_lock(&sh->lock);
    void *v = keytab_get(&sh->users, user_id);
    uint64_t w = !v               ? 0
                 : user_is_rec(v) ? UINT64_C(1) << user_rec(v)->worker
                                  : directory_set_workers(v, NULL);
    pthread_mutex_unlock(&sh->lock);
    return w;
}

/* ---- connections ---- */

void directory_conn_add(directory *d, directory_conn *r, conn *c, int worker, const char *user_id,
                        const char *username) {
    memset(r, 0, sizeof(*r));
    r->c = c;
    r->worker = worker;
    r->user_id = user_id;
    r->username = username;
    directory_shard *sh = shard_of(d, c->id);
    pthread_mutex_lock(&sh->lock);
    void *old = keytab_put(&sh->conns, r);
    pthread_mutex_unlock(&sh->lock);
    /* ids are random (never in practice); the old record is its owner's */
    if (!old) atomic_fetch_add_explicit(&d->conns, 1, memory_order_relaxed);
}

void directory_conn_set_room(directory *d, const char *conn_id, directory_set *room) {
    directory_shard *sh = shard_of(d, conn_id);
    pthread_mutex_lock(&sh->lock);
    directory_conn *r = keytab_get(&sh->conns, conn_id);
    if (r) r->room = room;
    pthread_mutex_unlock(&sh->lock);
}

void directory_conn_remove(directory *d, const char *conn_id) {
    directory_shard *sh = shard_of(d, conn_id);
    pthread_mutex_lock(&sh->lock);
    directory_conn *r = keytab_remove(&sh->conns, conn_id);
    pthread_mutex_unlock(&sh->lock);
    if (r) atomic_fetch_sub_explicit(&d->conns, 1, memory_order_relaxed);
}

int directory_conn_visit(directory *d, const char *conn_id,
                         int (*fn)(directory_conn *rec, void *ctx), void *ctx) {
    directory_shard *sh = shard_of(d, conn_id);
    pthread_mutex_lock(&sh->lock);
    directory_conn *r = keytab_get(&sh->conns, conn_id);
    int rc = r ? fn(r, ctx) : -1;
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

void directory_conn_each(directory *d, void (*fn)(const directory_conn *rec, void *ctx),
                         void *ctx) {
    for (size_t i = 0; i < DIRECTORY_SHARDS; i++) {
        directory_shard *sh = &d->shards[i];
        pthread_mutex_lock(&sh->lock);
        size_t it = 0;
        void *v;
        while (keytab_next(&sh->conns, &it, &v)) fn(v, ctx);
        pthread_mutex_unlock(&sh->lock);
    }
}

/* ---- listings and totals ---- */

static int by_id(const void *a, const void *b) {
    return strcmp(((const directory_room_entry *)a)->id, ((const directory_room_entry *)b)->id);
}

size_t directory_rooms_sorted(directory *d, directory_room_entry **out) {
    size_t n = 0, cap = 0;
    directory_room_entry *v = NULL;
    for (size_t i = 0; i < DIRECTORY_SHARDS; i++) {
        directory_shard *sh = &d->shards[i];
        pthread_mutex_lock(&sh->lock);
        size_t it = 0;
        void *val;
        while (keytab_next(&sh->rooms, &it, &val)) {
            const directory_set *e = val;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                v = xrealloc(v, cap * sizeof(*v));
            }
            v[n].id = xstrdup(e->id);
            v[n].count = atomic_load_explicit(&e->count, memory_order_relaxed);
            n++;
        }
        pthread_mutex_unlock(&sh->lock);
    }
    if (n > 1) qsort(v, n, sizeof(*v), by_id);
    *out = v;
    return n;
}

void directory_rooms_free(directory_room_entry *rooms, size_t n) {
    for (size_t i = 0; i < n; i++) free(rooms[i].id);
    free(rooms);
}

size_t directory_room_total(const directory *d) {
    return atomic_load_explicit(&d->rooms, memory_order_relaxed);
}

size_t directory_conn_total(const directory *d) {
    return atomic_load_explicit(&d->conns, memory_order_relaxed);
}
