/* The directory: the facts about connections, rooms and users that cross
 * workers. Each worker keeps its own index of its own connections (its
 * hub); the directory says which workers have members of a room, which
 * have connections of a user, how many there are in all, and what the
 * management API may ask about any connection. It is sharded (64 shards by
 * key hash, each with its own mutex, as Centrifugo's hub) and touched on
 * open, close, join and leave, never per message. Any thread. */
#ifndef WSGATE_ENGINE_DIRECTORY_H
#define WSGATE_ENGINE_DIRECTORY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/keytab.h"
#include "common/slab.h"
#include "net/conn.h"

#define DIRECTORY_SHARDS 64
/* Worker sets are bit masks: at most this many workers. */
#define DIRECTORY_MAX_WORKERS 64

/* A live connection as any thread may see it. The memory is the caller's
 * (its session holds it: no allocation per connection), and it is keyed
 * by the connection's own id. */
typedef struct directory_conn {
    /* The connection itself, for its id and its atomic fields (queued
     * bytes, last activity): valid while the record is in the directory,
     * which its worker leaves (on close) before the connection can be
     * freed, and read only under the shard's lock. */
    conn *c;
    const char *user_id, *username; /* borrowed: see directory_conn_add */
    /* The room's entry, NULL in no room; changed by the owner. The entry
     * lives while the room has members, and the owner clears this before
     * the connection leaves the room, so its id can be read here. */
    struct directory_set *room;
    int worker;   /* (after the pointers: 40 bytes, not 48, in every session) */
    bool deleted; /* DELETE @connections closed it: gone from then on */
} directory_conn;

typedef struct directory_shard {
    pthread_mutex_t lock;
    keytab rooms; /* room id -> directory_set (rooms with members) */
    /* user id -> directory_set (users with connections), or, for a user
     * with one connection, that connection's record itself, tagged
     * (directory_user_add_conn): no entry of its own. */
    keytab users;
    keytab conns; /* connection id -> directory_conn (keyed by rec->c->id) */
    char pad[64]; /* shards on their own cache lines */
} directory_shard;

/* Room and user ids shorter than this live in 32-byte slots of the
 * directory's one slab (the size of the malloc block they replace, without
 * its holes among a connect's short-lived blocks: about 100 bytes per idle
 * connection at 19,000); longer ones in blocks of their own. */
#define DIRECTORY_SHORT_ID 16

typedef struct directory {
    directory_shard shards[DIRECTORY_SHARDS];
    _Atomic size_t rooms; /* rooms with members */
    _Atomic size_t conns; /* connections in the directory */
    /* One slab for every shard's entries, under a lock of its own (taken
     * inside a shard's lock, only when an entry is made or freed): a slab
     * per shard would empty and refill a chunk at nearly every connect. */
    pthread_mutex_t sets_mu;
    slab sets;
} directory;

/* A room's or a user's entry: how many connections, on which workers.
 * Changed under its shard's lock; workers and count may also be read
 * without it (relaxed atomics) through a pointer pinned as
 * directory_room_join says. */
typedef struct directory_set {
    _Atomic uint64_t workers; /* bit w: worker w has some */
    _Atomic size_t count;
    char id[];
} directory_set;

void directory_init(directory *d);
/* Free every entry still in d. */
void directory_free(directory *d);

/* Worker `worker` has one more member in room_id (first: its first one
 * there). Returns the room's entry: it stays in memory while the room has
 * members, so a worker may keep the pointer while it has members there
 * and read the entry's workers and count with no lock (directory_set_*),
 * which is how a worker publishes to a room with no shared lock. */
directory_set *directory_room_join(directory *d, const char *room_id, int worker, bool first);
/* One fewer (last: the worker has none left). Returns the room's member
 * count over every worker. */
size_t directory_room_leave(directory *d, const char *room_id, int worker, bool last);
/* Read a pinned entry's workers and count (any thread, no lock). */
static inline uint64_t directory_set_workers(const directory_set *e, size_t *count) {
    if (count) *count = atomic_load_explicit(&e->count, memory_order_relaxed);
    return atomic_load_explicit(&e->workers, memory_order_relaxed);
}
/* Return the workers with members in room_id (0: none) and, when count is
 * not NULL, the room's member count. */
uint64_t directory_room_workers(directory *d, const char *room_id, size_t *count);

/* The same for a user's connections. */
void directory_user_add(directory *d, const char *user_id, int worker, bool first);
/* The same for rec's user and worker, rec being in the directory
 * (directory_conn_add): while rec is its user's only connection, the
 * users table points at rec itself; an entry is made at the user's
 * second connection and freed with its last. rec must stay until
 * directory_user_remove of its user on its worker. */
void directory_user_add_conn(directory *d, directory_conn *rec, bool first);
void directory_user_remove(directory *d, const char *user_id, int worker, bool last);
uint64_t directory_user_workers(directory *d, const char *user_id);

/* Record live connection c of worker `worker` in rec (the caller's
 * memory). rec, c, user_id and username are borrowed: they must stay
 * unchanged until directory_conn_remove (the owner's session holds them
 * and removes the record before freeing any). */
void directory_conn_add(directory *d, directory_conn *rec, conn *c, int worker, const char *user_id,
                        const char *username);
/* Set c's room entry (NULL: none), as its owner moves it: after
 * directory_room_join, before directory_room_leave. */
void directory_conn_set_room(directory *d, const char *conn_id, struct directory_set *room);
/* Forget connection conn_id (its owner, on close, before freeing it or
 * its record). */
void directory_conn_remove(directory *d, const char *conn_id);

/* Call fn with the record of conn_id under its shard's lock and return
 * fn's result, or return -1 (fn not called) when there is none. fn must
 * not call back into the directory. */
int directory_conn_visit(directory *d, const char *conn_id,
                         int (*fn)(directory_conn *rec, void *ctx), void *ctx);
/* Call fn for every record, one shard at a time under its lock. */
void directory_conn_each(directory *d, void (*fn)(const directory_conn *rec, void *ctx), void *ctx);

/* One room of a listing: a copy of its id and its member count. */
typedef struct directory_room_entry {
    char *id;
    size_t count;
} directory_room_entry;
/* Fill *out with a malloc'd array of every room with members, sorted by
 * id (a snapshot); returns the count. Free with directory_rooms_free. */
size_t directory_rooms_sorted(directory *d, directory_room_entry **out);
void directory_rooms_free(directory_room_entry *rooms, size_t n);

/* Rooms with members, connections: over every worker (relaxed reads). */
size_t directory_room_total(const directory *d);
size_t directory_conn_total(const directory *d);

#endif
