/* Unit tests for the directory (src/engine/directory.c): what crosses
 * workers. Room and user sets count members and keep a bit per worker that
 * has some (set by a worker's first, cleared by its last); connection
 * records are visited under their shard's lock; the listing is sorted; the
 * totals follow. The threaded test has workers join and leave disjoint and
 * shared rooms at once, as worker threads do, and checks the counts and
 * masks are exact at the end. Connections are fake `conn` structs with
 * only the id and the fields the directory reads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/directory.h"

static directory dir;

static void setup(void) { directory_init(&dir); }
static void teardown(void) { directory_free(&dir); }

static uint64_t bit(int w) { return UINT64_C(1) << w; }

/* A fake connection with room for its directory record right after it
 * (as a session holds one). */
static conn *fake_conn(const char *id) {
    conn *c = calloc(1, sizeof(*c) + sizeof(directory_conn));
    cr_assert_not_null(c);
    cr_assert_eq(strlen(id), CONN_ID_LEN);
    memcpy(c->id, id, CONN_ID_LEN + 1);
    return c;
}

static directory_conn *rec_of(conn *c) { return (directory_conn *)(c + 1); }

TestSuite(directory, .init = setup, .fini = teardown);

/* Join and return the room's member count everywhere. */
static size_t join_count(directory *d, const char *room, int worker, bool first) {
    size_t n;
    directory_set_workers(directory_room_join(d, room, worker, first), &n);
    return n;
}

Test(directory, room_counts_and_worker_mask) {
    size_t n = 99;
    cr_assert_eq(directory_room_workers(&dir, "lobby", &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(directory_room_total(&dir), 0);

    cr_assert_eq(join_count(&dir, "lobby", 0, true), 1);
    cr_assert_eq(join_count(&dir, "lobby", 0, false), 2);
    cr_assert_eq(join_count(&dir, "lobby", 3, true), 3);
    cr_assert_eq(directory_room_workers(&dir, "lobby", &n), bit(0) | bit(3));
    cr_assert_eq(n, 3);
    cr_assert_eq(directory_room_total(&dir), 1);

    /* Worker 0 still has a member: its bit stays. */
    cr_assert_eq(directory_room_leave(&dir, "lobby", 0, false), 2);
    cr_assert_eq(directory_room_workers(&dir, "lobby", NULL), bit(0) | bit(3));
    /* Its last one goes: the bit is cleared, the room stays for worker 3. */
    cr_assert_eq(directory_room_leave(&dir, "lobby", 0, true), 1);
    cr_assert_eq(directory_room_workers(&dir, "lobby", &n), bit(3));
    cr_assert_eq(n, 1);
    cr_assert_eq(directory_room_total(&dir), 1);

    /* The room's last member: the room is gone. */
    cr_assert_eq(directory_room_leave(&dir, "lobby", 3, true), 0);
    cr_assert_eq(directory_room_workers(&dir, "lobby", &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(directory_room_total(&dir), 0);

    /* Leaving a room that is not there changes nothing. */
    cr_assert_eq(directory_room_leave(&dir, "lobby", 3, true), 0);
    cr_assert_eq(directory_room_total(&dir), 0);
    directory_room_entry *rooms;
    cr_assert_eq(directory_rooms_sorted(&dir, &rooms), 0);
    directory_rooms_free(rooms, 0);
}

Test(directory, highest_worker_and_rejoin) {
    int top = DIRECTORY_MAX_WORKERS - 1;
    cr_assert_eq(join_count(&dir, "r", top, true), 1);
    cr_assert_eq(join_count(&dir, "r", 1, true), 2);
    cr_assert_eq(directory_room_workers(&dir, "r", NULL), bit(top) | bit(1));
    cr_assert_eq(directory_room_leave(&dir, "r", top, true), 1);
    cr_assert_eq(directory_room_workers(&dir, "r", NULL), bit(1));
    /* Back again on the same worker: a first again. */
    cr_assert_eq(join_count(&dir, "r", top, true), 2);
    cr_assert_eq(directory_room_workers(&dir, "r", NULL), bit(top) | bit(1));
    /* A room emptied and created again is a new room with no stale bits. */
    directory_room_leave(&dir, "r", top, true);
    directory_room_leave(&dir, "r", 1, true);
    cr_assert_eq(directory_room_total(&dir), 0);
    cr_assert_eq(join_count(&dir, "r", 2, true), 1);
    cr_assert_eq(directory_room_workers(&dir, "r", NULL), bit(2));
    cr_assert_eq(directory_room_total(&dir), 1);
}

Test(directory, rooms_and_users_are_separate) {
    directory_room_join(&dir, "same", 0, true);
    directory_user_add(&dir, "same", 5, true);
    cr_assert_eq(directory_room_workers(&dir, "same", NULL), bit(0));
    cr_assert_eq(directory_user_workers(&dir, "same"), bit(5));
    cr_assert_eq(directory_room_total(&dir), 1); /* users are not rooms */
}

Test(directory, user_workers) {
    cr_assert_eq(directory_user_workers(&dir, "alice"), 0);
    directory_user_add(&dir, "alice", 1, true);
    directory_user_add(&dir, "alice", 1, false);
    directory_user_add(&dir, "alice", 2, true);
    cr_assert_eq(directory_user_workers(&dir, "alice"), bit(1) | bit(2));
    directory_user_remove(&dir, "alice", 1, false);
    cr_assert_eq(directory_user_workers(&dir, "alice"), bit(1) | bit(2));
    directory_user_remove(&dir, "alice", 1, true);
    cr_assert_eq(directory_user_workers(&dir, "alice"), bit(2));
    directory_user_remove(&dir, "alice", 2, true);
    cr_assert_eq(directory_user_workers(&dir, "alice"), 0);
    /* Removing an unknown user is harmless. */
    directory_user_remove(&dir, "alice", 2, true);
    directory_user_remove(&dir, "bob", 0, true);
    cr_assert_eq(directory_user_workers(&dir, "bob"), 0);
}

/* A user with one connection has no entry: the users table points at the
 * connection's record. Its second connection makes an entry (on any
 * worker), and its last close frees it (issue 16, item 4). */
Test(directory, one_connection_user_is_its_record) {
    conn *a = fake_conn("Aaaaaaaaaaaaaaa1"), *b = fake_conn("Aaaaaaaaaaaaaaa2");
    conn *c = fake_conn("Aaaaaaaaaaaaaaa3");
    char carol[] = "carol", dave[] = "dave";
    directory_conn_add(&dir, rec_of(a), a, 1, carol, carol);
    directory_user_add_conn(&dir, rec_of(a), true);
    directory_conn_add(&dir, rec_of(c), c, 0, dave, "Dave");
    directory_user_add_conn(&dir, rec_of(c), true);
    cr_assert_eq(dir.sets.used, 0, "no entry for users with one connection");
    cr_assert_eq(directory_user_workers(&dir, "carol"), bit(1));
    cr_assert_eq(directory_user_workers(&dir, "dave"), bit(0));
    cr_assert_eq(directory_user_workers(&dir, "erin"), 0);

    directory_conn_add(&dir, rec_of(b), b, 2, carol, carol);
    directory_user_add_conn(&dir, rec_of(b), true);
    cr_assert_eq(dir.sets.used, 1, "an entry at the second connection");
    cr_assert_eq(directory_user_workers(&dir, "carol"), bit(1) | bit(2));

    /* The first connection goes: the entry stays with the second. */
    directory_user_remove(&dir, "carol", 1, true);
    directory_conn_remove(&dir, a->id);
    cr_assert_eq(directory_user_workers(&dir, "carol"), bit(2));
    directory_user_remove(&dir, "carol", 2, true);
    directory_conn_remove(&dir, b->id);
    cr_assert_eq(directory_user_workers(&dir, "carol"), 0);
    cr_assert_eq(dir.sets.used, 0);

    /* A caller with no record joining a one-connection user promotes it. */
    directory_user_add(&dir, "dave", 3, true);
    cr_assert_eq(directory_user_workers(&dir, "dave"), bit(0) | bit(3));
    directory_user_remove(&dir, "dave", 0, true);
    directory_conn_remove(&dir, c->id);
    cr_assert_eq(directory_user_workers(&dir, "dave"), bit(3));
    directory_user_remove(&dir, "dave", 3, true);
    cr_assert_eq(directory_user_workers(&dir, "dave"), 0);

    /* teardown frees a table still holding a record (not the record) */
    directory_conn_add(&dir, rec_of(a), a, 4, carol, carol);
    directory_user_add_conn(&dir, rec_of(a), true);
    directory_conn_remove(&dir, a->id);
    teardown();
    setup();
    free(a);
    free(b);
    free(c);
}

/* ---- connection records ---- */

typedef struct seen {
    int calls;
    int worker;
    char user[32], name[32], room[32];
    bool deleted;
    conn *c;
} seen;

static int copy_rec(directory_conn *rec, void *ctx) {
    seen *s = ctx;
    s->calls++;
    s->worker = rec->worker;
    snprintf(s->user, sizeof(s->user), "%s", rec->user_id);
    snprintf(s->name, sizeof(s->name), "%s", rec->username);
    snprintf(s->room, sizeof(s->room), "%s", rec->room ? rec->room->id : "(none)");
    s->deleted = rec->deleted;
    s->c = rec->c;
    return 7;
}

static int mark_deleted(directory_conn *rec, void *ctx) {
    rec->deleted = true;
    return 0;
}

Test(directory, conn_records) {
    conn *a = fake_conn("Aaaaaaaaaaaaaaaa"), *b = fake_conn("Bbbbbbbbbbbbbbbb");
    char user[] = "alice", name[] = "Alice";
    directory_conn_add(&dir, rec_of(a), a, 0, user, name);
    directory_conn_add(&dir, rec_of(b), b, 1, "bob", "Bob");
    /* The strings are borrowed (the owner's session keeps them until it
     * removes the record). */
    cr_assert_eq(directory_conn_total(&dir), 2);

    seen s = {0};
    cr_assert_eq(directory_conn_visit(&dir, a->id, copy_rec, &s), 7);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.worker, 0);
    cr_assert_eq(s.c, a);
    cr_assert_str_eq(s.user, "alice");
    cr_assert_str_eq(s.name, "Alice");
    cr_assert_str_eq(s.room, "(none)");
    cr_assert_not(s.deleted);

    directory_conn_set_room(&dir, a->id, directory_room_join(&dir, "lobby", 0, true));
    directory_conn_visit(&dir, a->id, copy_rec, &s);
    cr_assert_str_eq(s.room, "lobby");
    directory_conn_set_room(&dir, a->id, directory_room_join(&dir, "hall", 0, true));
    directory_conn_visit(&dir, a->id, copy_rec, &s);
    cr_assert_str_eq(s.room, "hall");
    directory_conn_set_room(&dir, a->id, NULL);
    directory_conn_visit(&dir, a->id, copy_rec, &s);
    cr_assert_str_eq(s.room, "(none)");
    /* Setting the room of an unknown id does nothing. */
    directory_conn_set_room(&dir, "Zzzzzzzzzzzzzzzz", directory_room_join(&dir, "lobby", 0, false));

    /* Unknown: -1 and fn is not called. */
    s.calls = 0;
    cr_assert_eq(directory_conn_visit(&dir, "Zzzzzzzzzzzzzzzz", copy_rec, &s), -1);
    cr_assert_eq(s.calls, 0);

    /* A visit may change the record (the engine's DELETE mark). */
    directory_conn_visit(&dir, b->id, mark_deleted, NULL);
    directory_conn_visit(&dir, b->id, copy_rec, &s);
    cr_assert(s.deleted);

    directory_conn_remove(&dir, a->id);
    cr_assert_eq(directory_conn_total(&dir), 1);
    cr_assert_eq(directory_conn_visit(&dir, a->id, copy_rec, &s), -1);
    directory_conn_remove(&dir, a->id); /* twice: nothing */
    cr_assert_eq(directory_conn_total(&dir), 1);
    directory_conn_remove(&dir, b->id);
    cr_assert_eq(directory_conn_total(&dir), 0);
    free(a);
    free(b);
}

typedef struct tally {
    int n;
    bool found[64];
    conn **conns;
} tally;

static void count_each(const directory_conn *rec, void *ctx) {
    tally *t = ctx;
    t->n++;
    for (int i = 0; i < 64; i++)
        if (t->conns[i] == rec->c) {
            cr_assert_not(t->found[i], "record %s visited twice", rec->c->id);
            cr_assert_str_eq(rec->c->id, t->conns[i]->id);
            cr_assert_eq(rec->worker, i % 4);
            t->found[i] = true;
        }
}

Test(directory, conn_each_visits_every_record_once) {
    conn *conns[64];
    for (int i = 0; i < 64; i++) {
        char id[CONN_ID_LEN + 1];
        snprintf(id, sizeof(id), "%c%015d", 'A' + i % 4, i * 7919);
        conns[i] = fake_conn(id);
        directory_conn_add(&dir, rec_of(conns[i]), conns[i], i % 4, "u", "U");
    }
    cr_assert_eq(directory_conn_total(&dir), 64);
    tally t = {.conns = conns};
    directory_conn_each(&dir, count_each, &t);
    cr_assert_eq(t.n, 64);
    for (int i = 0; i < 64; i++) cr_assert(t.found[i]);
    for (int i = 0; i < 64; i += 2) directory_conn_remove(&dir, conns[i]->id);
    tally t2 = {.conns = conns};
    directory_conn_each(&dir, count_each, &t2);
    cr_assert_eq(t2.n, 32);
    for (int i = 0; i < 64; i++) cr_assert_eq(t2.found[i], i % 2 == 1);
    cr_assert_eq(directory_conn_total(&dir), 32);
    for (int i = 0; i < 64; i++) free(conns[i]); /* records still in dir: freed by fini */
}

/* ---- the listing ---- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

Test(directory, rooms_sorted_by_bytes_with_counts) {
    /* Byte order: upper case before lower case, UTF-8 after ASCII. */
    const char *ids[] = {"b", "a", "B", "\xc3\xa9t\xc3\xa9", "a0", "Z", "room-10", "room-9", "_"};
    size_t nids = sizeof(ids) / sizeof(ids[0]);
    for (size_t i = 0; i < nids; i++)
        for (size_t k = 0; k <= i; k++) directory_room_join(&dir, ids[i], (int)(k % 3), k < 3);
    /* A room that came and went is not listed. */
    directory_room_join(&dir, "gone", 0, true);
    directory_room_leave(&dir, "gone", 0, true);

    directory_room_entry *rooms;
    size_t n = directory_rooms_sorted(&dir, &rooms);
    cr_assert_eq(n, nids);
    cr_assert_eq(directory_room_total(&dir), nids);
    const char *want[sizeof(ids) / sizeof(ids[0])];
    memcpy(want, ids, sizeof(ids));
    qsort(want, nids, sizeof(want[0]), cmp_str);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(rooms[i].id, want[i]);
        size_t j = 0;
        while (strcmp(ids[j], want[i]) != 0) j++;
        cr_assert_eq(rooms[i].count, j + 1, "%s: %zu", rooms[i].id, rooms[i].count);
    }
    /* A snapshot: later changes do not touch it. */
    directory_room_leave(&dir, want[0], 0, false);
    cr_assert_str_eq(rooms[0].id, want[0]);
    directory_rooms_free(rooms, n);
}

Test(directory, many_rooms_listing) {
    /* More rooms than shards and than the listing's first allocation. */
    for (int i = 0; i < 500; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%04d", (i * 263) % 500);
        directory_room_join(&dir, id, i % 7, true);
    }
    directory_room_entry *rooms;
    size_t n = directory_rooms_sorted(&dir, &rooms);
    cr_assert_eq(n, 500);
    for (size_t i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof(id), "r%04zu", i);
        cr_assert_str_eq(rooms[i].id, id);
        cr_assert_eq(rooms[i].count, 1);
    }
    directory_rooms_free(rooms, n);
}

/* ---- threads ---- */

#define T_THREADS 4
#define T_ROUNDS  4000
#define T_SHARED  8
#define T_OWN     8

typedef struct worker_arg {
    int w;
    /* This worker's own members per room, as its registry would count
     * them: it decides first and last from these, as handlers_join does. */
    int shared[T_SHARED], own[T_OWN];
    conn *conns[16];
    bool unsorted; /* a listing read meanwhile was out of order (asserted after) */
} worker_arg;

static uint32_t xorshift(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void join(worker_arg *a, const char *id, int *mine) {
    directory_room_join(&dir, id, a->w, ++*mine == 1);
}

static void leave(worker_arg *a, const char *id, int *mine) {
    if (*mine == 0) return;
    directory_room_leave(&dir, id, a->w, --*mine == 0);
}

static void *worker_main(void *p) {
    worker_arg *a = p;
    uint32_t rng = 0x9E3779B9u * (uint32_t)(a->w + 1);
    char id[32];
    for (int r = 0; r < T_ROUNDS; r++) {
        uint32_t x = xorshift(&rng);
        bool shared = x & 1;
        int k = (int)((x >> 1) % (shared ? T_SHARED : T_OWN));
        int *mine = shared ? &a->shared[k] : &a->own[k];
        if (shared) snprintf(id, sizeof(id), "shared-%d", k);
        else snprintf(id, sizeof(id), "own-%d-%d", a->w, k);
        /* Join more often than leave while small, so rooms fill and empty. */
        if ((x >> 8) % 3 != 0 || *mine == 0) join(a, id, mine);
        else leave(a, id, mine);
        /* Users and connection records churn too. */
        int ci = (int)((x >> 12) % 16);
        if (a->conns[ci]) {
            directory_conn_remove(&dir, a->conns[ci]->id);
            directory_user_remove(&dir, "everyone", a->w, false);
            free(a->conns[ci]);
            a->conns[ci] = NULL;
        } else {
            char cid[CONN_ID_LEN + 1];
            snprintf(cid, sizeof(cid), "%c%07u%08u", 'A' + a->w, (unsigned)ci % 16u,
                     (unsigned)r % 100000000u);
            a->conns[ci] = fake_conn(cid);
            directory_conn_add(&dir, rec_of(a->conns[ci]), a->conns[ci], a->w, "everyone", "E");
            directory_user_add(&dir, "everyone", a->w, false);
            directory_conn_set_room(&dir, cid, NULL);
        }
        if (r % 500 == 0) { /* readers run alongside */
            directory_room_entry *rooms;
            size_t n = directory_rooms_sorted(&dir, &rooms);
            for (size_t i = 1; i < n; i++)
                if (strcmp(rooms[i - 1].id, rooms[i].id) >= 0) a->unsorted = true;
            directory_rooms_free(rooms, n);
        }
    }
    /* Every worker ends in every shared room with at least one member,
     * and empties its odd own rooms. */
    for (int k = 0; k < T_SHARED; k++)
        if (a->shared[k] == 0) {
            snprintf(id, sizeof(id), "shared-%d", k);
            join(a, id, &a->shared[k]);
        }
    for (int k = 1; k < T_OWN; k += 2) {
        snprintf(id, sizeof(id), "own-%d-%d", a->w, k);
        while (a->own[k] > 0) leave(a, id, &a->own[k]);
    }
    return NULL;
}

Test(directory, threads_join_and_leave_exactly) {
    worker_arg args[T_THREADS];
    pthread_t th[T_THREADS];
    memset(args, 0, sizeof(args));
    for (int w = 0; w < T_THREADS; w++) {
        args[w].w = w;
        /* The user "everyone" has a bit per worker from the start. */
        directory_user_add(&dir, "everyone", w, true);
        cr_assert_eq(pthread_create(&th[w], NULL, worker_main, &args[w]), 0);
    }
    for (int w = 0; w < T_THREADS; w++) {
        pthread_join(th[w], NULL);
        cr_assert_not(args[w].unsorted);
    }

    size_t rooms_with_members = 0;
    for (int k = 0; k < T_SHARED; k++) {
        char id[32];
        snprintf(id, sizeof(id), "shared-%d", k);
        size_t want = 0, n;
        for (int w = 0; w < T_THREADS; w++) want += (size_t)args[w].shared[k];
        cr_assert_eq(directory_room_workers(&dir, id, &n), bit(T_THREADS) - 1, "%s", id);
        cr_assert_eq(n, want, "%s: %zu members, want %zu", id, n, want);
        rooms_with_members++;
    }
    for (int w = 0; w < T_THREADS; w++)
        for (int k = 0; k < T_OWN; k++) {
            char id[32];
            snprintf(id, sizeof(id), "own-%d-%d", w, k);
            size_t n;
            uint64_t mask = directory_room_workers(&dir, id, &n);
            cr_assert_eq(n, (size_t)args[w].own[k], "%s", id);
            cr_assert_eq(mask, args[w].own[k] ? bit(w) : 0, "%s", id);
            if (k % 2) cr_assert_eq(n, 0);
            if (n) rooms_with_members++;
        }
    cr_assert_eq(directory_room_total(&dir), rooms_with_members);
    directory_room_entry *rooms;
    size_t n = directory_rooms_sorted(&dir, &rooms);
    cr_assert_eq(n, rooms_with_members);
    directory_rooms_free(rooms, n);

    size_t live = 0;
    for (int w = 0; w < T_THREADS; w++)
        for (int i = 0; i < 16; i++) live += args[w].conns[i] != NULL;
    cr_assert_eq(directory_conn_total(&dir), live);
    cr_assert_eq(directory_user_workers(&dir, "everyone"), bit(T_THREADS) - 1);
    for (int w = 0; w < T_THREADS; w++)
        for (int i = 0; i < 16; i++)
            if (args[w].conns[i]) {
                seen s = {0};
                cr_assert_eq(directory_conn_visit(&dir, args[w].conns[i]->id, copy_rec, &s), 7);
                cr_assert_eq(s.worker, w);
                directory_conn_remove(&dir, args[w].conns[i]->id);
                free(args[w].conns[i]);
            }
    cr_assert_eq(directory_conn_total(&dir), 0);
}
