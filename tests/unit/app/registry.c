/* Unit tests for the live registry (src/app/registry.c) and the string hash
 * map under it (src/common/strmap.c). Connections are fake `conn` structs,
 * zeroed with only the id filled: the registry reads nothing else. Big
 * randomised runs are checked against a plain model after every batch. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/registry.h"
#include "common/strmap.h"

/* ---- helpers ---- */

#define NSESS_MAX 100000

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static conn *fake_conn(const char *id) {
    conn *c = calloc(1, sizeof(*c));
    cr_assert_not_null(c);
    cr_assert_lt(strlen(id), sizeof c->id);
    strcpy(c->id, id);
    return c;
}

/* Walk room rm's member list: back links, membership and count agree. */
static size_t check_room(const room *rm) {
    size_t n = 0;
    const session *prev = NULL;
    for (const session *s = rm->members; s; s = s->room_next) {
        cr_assert_eq(s->room, rm);
        cr_assert_eq(s->room_prev, prev);
        prev = s;
        n++;
        cr_assert_leq(n, rm->count, "room %s: list longer than count", rm->id);
    }
    cr_assert_eq(n, rm->count, "room %s: %zu members listed, count %zu", rm->id, n, rm->count);
    cr_assert_gt(n, 0, "room %s kept while empty", rm->id);
    return n;
}

/* Walk a user's connections from the session the users table points at
 * (the newest): back links and ids agree. Returns how many. */
static size_t check_user(const session *head) {
    size_t n = 0;
    const session *prev = NULL;
    cr_assert_not_null(head);
    for (const session *s = head; s; s = s->user_next) {
        cr_assert_str_eq(s->user_id, head->user_id);
        cr_assert_eq(s->user_prev, prev);
        cr_assert_eq(registry_user_alone(s), n == 0 && !s->user_next);
        prev = s;
        n++;
        cr_assert_leq(n, NSESS_MAX);
    }
    return n;
}

static size_t conns_of_user(const registry *r, const char *user_id) {
    const session *head = registry_user(r, user_id);
    return head ? check_user(head) : 0;
}

/* Every index agrees with the others. Returns the number of sessions. */
static size_t check_indexes(const registry *r) {
    size_t it = 0, in_rooms = 0, in_users = 0, sessions = 0;
    void *v;
    while (keytab_next(&r->rooms, &it, &v)) {
        room *rm = v;
        cr_assert_eq(registry_room(r, rm->id), rm);
        in_rooms += check_room(rm);
    }
    it = 0;
    while (keytab_next(&r->users, &it, &v)) {
        session *head = v;
        cr_assert_eq(registry_user(r, head->user_id), head);
        in_users += check_user(head);
    }
    size_t with_room = 0;
    it = 0;
    while (keytab_next(&r->by_id, &it, &v)) {
        session *s = v;
        const char *k = s->c->id;
        cr_assert_eq(registry_by_id(r, k), s);
        const session *u = registry_user(r, s->user_id);
        while (u && u != s) u = u->user_next;
        cr_assert_eq(u, s, "%s not among its user's connections", k);
        if (s->room) {
            with_room++;
            cr_assert_eq(registry_room(r, s->room->id), s->room);
        } else {
            cr_assert_null(s->room_next);
            cr_assert_null(s->room_prev);
        }
        sessions++;
    }
    cr_assert_eq(sessions, r->by_id.count);
    cr_assert_eq(in_users, sessions);
    cr_assert_eq(in_rooms, with_room);
    return sessions;
}

/* ---- registry: basic operations ---- */

Test(registry, add_join_move_leave_remove) {
    registry r;
    registry_init(&r);
    conn *c1 = fake_conn("c1"), *c2 = fake_conn("c2"), *c3 = fake_conn("c3");

    session *s1 = registry_add(&r, c1, "alice", "Alice");
    session *s2 = registry_add(&r, c2, "alice", "Alice (phone)");
    session *s3 = registry_add(&r, c3, "bob", "bob");
    cr_assert_eq(check_indexes(&r), 3);
    cr_assert_eq(registry_by_id(&r, "c1"), s1);
    cr_assert_eq(s1->c, c1);
    cr_assert_str_eq(s2->username, "Alice (phone)");
    cr_assert_null(s1->room);
    cr_assert_eq(conns_of_user(&r, "alice"), 2);
    cr_assert_eq(conns_of_user(&r, "bob"), 1);
    cr_assert(registry_user_alone(s3));
    cr_assert(!registry_user_alone(s1) && !registry_user_alone(s2));
    cr_assert_eq(registry_user(&r, "alice"), s2, "the newest connection stands for the user");
    cr_assert_eq(r.rooms.count, 0);

    room *g = registry_join(&r, s1, "general");
    cr_assert_str_eq(g->id, "general");
    cr_assert_eq(registry_room(&r, "general"), g);
    cr_assert_eq(registry_join(&r, s2, "general"), g);
    cr_assert_eq(registry_join(&r, s3, "general"), g);
    cr_assert_eq(g->count, 3);
    /* Joining the room one is in changes nothing. */
    cr_assert_eq(registry_join(&r, s3, "general"), g);
    cr_assert_eq(g->count, 3);
    check_indexes(&r);

    /* Move: old room loses a member, new room is created. */
    room *d = registry_join(&r, s2, "developers");
    cr_assert_eq(s2->room, d);
    cr_assert_eq(g->count, 2);
    cr_assert_eq(d->count, 1);
    cr_assert_eq(r.rooms.count, 2);
    check_indexes(&r);

    /* The last member moving out frees the room. */
    registry_join(&r, s2, "general");
    cr_assert_null(registry_room(&r, "developers"));
    cr_assert_eq(r.rooms.count, 1);
    cr_assert_eq(g->count, 3);
    check_indexes(&r);

    registry_leave(&r, s1);
    cr_assert_null(s1->room);
    cr_assert_eq(g->count, 2);
    registry_leave(&r, s1); /* no room: no effect */
    cr_assert_eq(g->count, 2);
    check_indexes(&r);

    /* Removing a connection of a user with two keeps the user. */
    registry_remove(&r, s2);
    cr_assert_null(registry_by_id(&r, "c2"));
    cr_assert_eq(conns_of_user(&r, "alice"), 1);
    cr_assert_eq(registry_user(&r, "alice"), s1);
    cr_assert(registry_user_alone(s1));
    cr_assert_eq(g->count, 1);
    check_indexes(&r);

    /* The last connection of a user frees the user; the last member frees
     * the room. */
    registry_remove(&r, s3);
    cr_assert_null(registry_user(&r, "bob"));
    cr_assert_null(registry_room(&r, "general"));
    cr_assert_eq(r.rooms.count, 0);
    registry_remove(&r, s1);
    cr_assert_null(registry_user(&r, "alice"));
    cr_assert_eq(r.users.count, 0);
    cr_assert_eq(r.by_id.count, 0);
    cr_assert_eq(check_indexes(&r), 0);

    registry_free(&r);
    free(c1);
    free(c2);
    free(c3);
}

Test(registry, remove_from_middle_of_lists) {
    registry r;
    registry_init(&r);
    conn *c[5];
    session *s[5];
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%d", i);
        c[i] = fake_conn(id);
        s[i] = registry_add(&r, c[i], "u", "u");
        registry_join(&r, s[i], "room");
    }
    registry_remove(&r, s[2]); /* middle */
    check_indexes(&r);
    registry_remove(&r, s[4]); /* head (pushed last) */
    check_indexes(&r);
    registry_remove(&r, s[0]); /* tail */
    check_indexes(&r);
    cr_assert_eq(registry_room(&r, "room")->count, 2);
    cr_assert_eq(conns_of_user(&r, "u"), 2);
    registry_free(&r); /* frees the sessions still in it */
    for (int i = 0; i < 5; i++) free(c[i]);
}

Test(registry, registry_keys_are_copies) {
    registry r;
    registry_init(&r);
    conn *c = fake_conn("conn-1");
    char user[] = "user-1", name[] = "Name", rid[] = "room-1";
    session *s = registry_add(&r, c, user, name);
    registry_join(&r, s, rid);
    user[0] = name[0] = rid[0] = 'X';
    cr_assert_str_eq(s->user_id, "user-1");
    cr_assert_str_eq(s->username, "Name");
    cr_assert_not_null(registry_user(&r, "user-1"));
    cr_assert_not_null(registry_room(&r, "room-1"));
    cr_assert_str_eq(s->room->id, "room-1");
    check_indexes(&r);
    registry_free(&r);
    free(c);
}

Test(registry, rooms_sorted) {
    registry r;
    registry_init(&r);
    room **rooms = NULL;
    cr_assert_eq(registry_rooms_sorted(&r, &rooms), 0);
    cr_assert_not_null(rooms);
    free(rooms);

    static const char *const ids[] = {
        "general",           "Zeta",      "alpha", "beta", "alpha2", "10", "9", "b",
        "\xc3\xa9t\xc3\xa9", "developers"};
    static const char *const want[] = {"10", "9",    "Zeta",       "alpha",   "alpha2",
                                       "b",  "beta", "developers", "general", "\xc3\xa9t\xc3\xa9"};
    size_t n = sizeof ids / sizeof ids[0];
    conn *c[20];
    session *s[20];
    for (size_t i = 0; i < 2 * n; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%zu", i);
        c[i] = fake_conn(id);
        s[i] = registry_add(&r, c[i], id, id);
        registry_join(&r, s[i], ids[i % n]);
    }
    size_t got = registry_rooms_sorted(&r, &rooms);
    cr_assert_eq(got, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(rooms[i]->id, want[i], "position %zu", i);
        cr_assert_eq(rooms[i]->count, 2);
    }
    free(rooms);

    /* Emptied rooms drop out of the listing. */
    registry_remove(&r, s[0]);
    registry_remove(&r, s[n]); /* both members of "general" */
    registry_leave(&r, s[2]);
    got = registry_rooms_sorted(&r, &rooms);
    cr_assert_eq(got, n - 1);
    for (size_t i = 0, j = 0; i < n; i++) {
        if (strcmp(want[i], "general") == 0) continue;
        cr_assert_str_eq(rooms[j]->id, want[i]);
        cr_assert_eq(rooms[j]->count, strcmp(want[i], "alpha") == 0 ? 1 : 2);
        j++;
    }
    free(rooms);
    registry_free(&r);
    for (size_t i = 0; i < 2 * n; i++) free(c[i]);
}

/* ---- registry: many sessions against a model ---- */

#define NSESS  10000
#define NROOMS 100
#define NUSERS 2500

typedef struct {
    conn *c;
    session *s; /* NULL: not registered */
    int room;   /* -1: none */
    int user;
} model_sess;

static void check_model(const registry *r, const model_sess *m) {
    size_t room_count[NROOMS] = {0}, user_count[NUSERS] = {0}, live = 0;
    for (int i = 0; i < NSESS; i++) {
        if (!m[i].s) {
            cr_assert_null(registry_by_id(r, m[i].c->id));
            continue;
        }
        live++;
        cr_assert_eq(registry_by_id(r, m[i].c->id), m[i].s);
        user_count[m[i].user]++;
        if (m[i].room < 0) {
            cr_assert_null(m[i].s->room);
        } else {
            room_count[m[i].room]++;
            char rid[32];
            snprintf(rid, sizeof rid, "room-%03d", m[i].room);
            cr_assert_not_null(m[i].s->room);
            cr_assert_str_eq(m[i].s->room->id, rid);
        }
    }
    size_t nrooms = 0, nusers = 0;
    for (int i = 0; i < NROOMS; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "room-%03d", i);
        room *rm = registry_room(r, rid);
        if (room_count[i] == 0) {
            cr_assert_null(rm, "%s should be freed", rid);
        } else {
            cr_assert_not_null(rm);
            cr_assert_eq(rm->count, room_count[i]);
            nrooms++;
        }
    }
    for (int i = 0; i < NUSERS; i++) {
        char uid[32];
        snprintf(uid, sizeof uid, "user-%d", i);
        const session *u = registry_user(r, uid);
        if (user_count[i] == 0) {
            cr_assert_null(u);
        } else {
            cr_assert_not_null(u);
            cr_assert_eq(check_user(u), user_count[i]);
            nusers++;
        }
    }
    cr_assert_eq(r->rooms.count, nrooms);
    cr_assert_eq(r->users.count, nusers);
    cr_assert_eq(r->by_id.count, live);
    cr_assert_eq(check_indexes(r), live);

    room **sorted;
    size_t n = registry_rooms_sorted(r, &sorted);
    cr_assert_eq(n, nrooms);
    for (size_t i = 1; i < n; i++) cr_assert_lt(strcmp(sorted[i - 1]->id, sorted[i]->id), 0);
    free(sorted);
}

Test(registry, many_sessions_random_moves_against_model, .timeout = 120) {
    registry r;
    registry_init(&r);
    model_sess *m = calloc(NSESS, sizeof(*m));
    for (int i = 0; i < NSESS; i++) {
        char id[32];
        snprintf(id, sizeof id, "conn-%05d", i);
        m[i].c = fake_conn(id);
        m[i].room = -1;
    }
    for (int i = 0; i < NSESS; i++) {
        char uid[32];
        m[i].user = (int)(rnd() % NUSERS);
        snprintf(uid, sizeof uid, "user-%d", m[i].user);
        m[i].s = registry_add(&r, m[i].c, uid, uid);
        if (rnd() % 4) {
            char rid[32];
            m[i].room = (int)(rnd() % NROOMS);
            snprintf(rid, sizeof rid, "room-%03d", m[i].room);
            registry_join(&r, m[i].s, rid);
        }
    }
    check_model(&r, m);

    for (int batch = 0; batch < 20; batch++) {
        for (int op = 0; op < 5000; op++) {
            int i = (int)(rnd() % NSESS);
            uint32_t what = rnd() % 10;
            if (!m[i].s) {
                /* Reconnect, maybe as someone else. */
                char uid[32];
                m[i].user = (int)(rnd() % NUSERS);
                snprintf(uid, sizeof uid, "user-%d", m[i].user);
                m[i].s = registry_add(&r, m[i].c, uid, uid);
                m[i].room = -1;
            } else if (what < 6) {
                char rid[32];
                /* Later batches crowd into few rooms so rooms empty out. */
                int nr = batch < 10 ? NROOMS : 3 + batch;
                m[i].room = (int)(rnd() % (unsigned)nr);
                snprintf(rid, sizeof rid, "room-%03d", m[i].room);
                room *rm = registry_join(&r, m[i].s, rid);
                cr_assert_str_eq(rm->id, rid);
            } else if (what < 8) {
                registry_leave(&r, m[i].s);
                m[i].room = -1;
            } else {
                registry_remove(&r, m[i].s);
                m[i].s = NULL;
                m[i].room = -1;
            }
        }
        check_model(&r, m);
    }

    /* Tear everything down one by one: every index ends empty. */
    for (int i = 0; i < NSESS; i++) {
        if (m[i].s) registry_remove(&r, m[i].s);
        m[i].s = NULL;
        m[i].room = -1;
        if (i % 2500 == 0) check_model(&r, m);
    }
    check_model(&r, m);
    cr_assert_eq(r.by_id.count + r.users.count + r.rooms.count, 0);
    registry_free(&r);
    for (int i = 0; i < NSESS; i++) free(m[i].c);
    free(m);
}

/* ---- strmap ---- */

Test(strmap, basics) {
    strmap m;
    strmap_init(&m);
    cr_assert_null(strmap_get(&m, "a"));
    cr_assert_null(strmap_remove(&m, "a"));
    size_t it = 0;
    cr_assert(!strmap_next(&m, &it, NULL, NULL));

    int x = 1, y = 2;
    char key[] = "alpha";
    void *old = &x;
    const char *k = strmap_put(&m, key, &x, &old);
    cr_assert_null(old);
    cr_assert_str_eq(k, "alpha");
    cr_assert_neq(k, key, "the map keeps its own copy");
    key[0] = 'X';
    cr_assert_eq(strmap_get(&m, "alpha"), &x);
    cr_assert_null(strmap_get(&m, "Xlpha"));

    const char *k2 = strmap_put(&m, "alpha", &y, &old);
    cr_assert_eq(old, &x);
    cr_assert_eq(k2, k, "replacing keeps the key");
    cr_assert_eq(m.count, 1);
    cr_assert_eq(strmap_get(&m, "alpha"), &y);

    cr_assert_str_eq(strmap_put(&m, "", &x, NULL), "");
    cr_assert_eq(strmap_get(&m, ""), &x, "the empty key is a key");
    cr_assert_eq(m.count, 2);
    cr_assert_eq(strmap_remove(&m, ""), &x);
    cr_assert_null(strmap_get(&m, ""));
    cr_assert_null(strmap_remove(&m, ""));
    cr_assert_eq(m.count, 1);

    /* A NULL value is stored but reads as absent. */
    strmap_put(&m, "nullv", NULL, NULL);
    cr_assert_eq(m.count, 2);
    cr_assert_null(strmap_get(&m, "nullv"));
    strmap_free(&m);
    cr_assert_eq(m.cap, 0);
    cr_assert_eq(m.count, 0);
    strmap_free(&m);
}

Test(strmap, tombstones_do_not_hide_keys_and_are_reused) {
    strmap m;
    strmap_init(&m);
    char k[32];
    /* Fill, remove every other key, and make sure the survivors (which may
     * sit past a tombstone in their probe chain) are all still found. */
    for (int i = 0; i < 11; i++) {
        snprintf(k, sizeof k, "k%d", i);
        strmap_put(&m, k, (void *)(uintptr_t)(i + 1), NULL);
    }
    size_t cap = m.cap;
    for (int i = 0; i < 11; i += 2) {
        snprintf(k, sizeof k, "k%d", i);
        cr_assert_eq(strmap_remove(&m, k), (void *)(uintptr_t)(i + 1));
    }
    for (int i = 0; i < 11; i++) {
        snprintf(k, sizeof k, "k%d", i);
        cr_assert_eq(strmap_get(&m, k), i % 2 ? (void *)(uintptr_t)(i + 1) : NULL, "%s", k);
    }
    cr_assert_eq(m.count, 5);
    cr_assert_eq(m.cap, cap);
    /* Re-adding a removed key does not duplicate it. */
    strmap_put(&m, "k1", (void *)7, NULL);
    cr_assert_eq(m.count, 5);
    cr_assert_eq(strmap_get(&m, "k1"), (void *)7);
    strmap_free(&m);
}

Test(strmap, churn_keeps_capacity_bounded) {
    strmap m;
    strmap_init(&m);
    char k[32];
    /* 100,000 distinct keys, at most 8 alive at once: tombstones must be
     * recycled by same-size rehashes, never by unbounded growth, and every
     * probe must terminate. */
    for (int i = 0; i < 100000; i++) {
        snprintf(k, sizeof k, "churn-%d", i);
        strmap_put(&m, k, (void *)(uintptr_t)(i + 1), NULL);
        if (i >= 8) {
            snprintf(k, sizeof k, "churn-%d", i - 8);
            cr_assert_eq(strmap_remove(&m, k), (void *)(uintptr_t)(i - 7));
        }
        cr_assert_leq(m.count, 9);
        cr_assert_leq(m.cap, 32, "cap %zu after %d", m.cap, i);
        cr_assert_lt(m.used, m.cap);
        cr_assert_geq(m.used, m.count);
    }
    cr_assert_null(strmap_get(&m, "never-there"));
    strmap_free(&m);
}

Test(strmap, hundred_thousand_keys_against_model, .timeout = 120) {
    enum { N = 100000 };
    strmap m;
    strmap_init(&m);
    uintptr_t *model = calloc(N, sizeof(*model)); /* 0: absent */
    size_t live = 0;
    char k[32];
    uint64_t saved = rng_state;
    rng_state = 0x1234567887654321ULL;
    for (int round = 0; round < 6; round++) {
        for (int op = 0; op < N; op++) {
            int i = (int)(rnd() % N);
            snprintf(k, sizeof k, "key:%d", i);
            uint32_t what = rnd() % 10;
            if (what < (round % 2 ? 3u : 7u)) {
                uintptr_t v = ((uintptr_t)rnd() << 1) | 1;
                void *old = (void *)1;
                strmap_put(&m, k, (void *)v, &old);
                cr_assert_eq((uintptr_t)old, model[i]);
                if (!model[i]) live++;
                model[i] = v;
            } else if (what < 9) {
                cr_assert_eq((uintptr_t)strmap_remove(&m, k), model[i]);
                if (model[i]) live--;
                model[i] = 0;
            } else {
                cr_assert_eq((uintptr_t)strmap_get(&m, k), model[i]);
            }
            cr_assert_eq(m.count, live);
        }
        /* Full comparison, both ways. */
        for (int i = 0; i < N; i++) {
            snprintf(k, sizeof k, "key:%d", i);
            cr_assert_eq((uintptr_t)strmap_get(&m, k), model[i], "%s", k);
        }
        size_t it = 0, seen = 0;
        const char *key;
        void *v;
        char *mark = calloc(N, 1);
        while (strmap_next(&m, &it, &key, &v)) {
            int i = -1;
            cr_assert_eq(sscanf(key, "key:%d", &i), 1);
            cr_assert(i >= 0 && i < N);
            cr_assert_eq(mark[i], 0, "%s iterated twice", key);
            mark[i] = 1;
            cr_assert_eq((uintptr_t)v, model[i]);
            seen++;
        }
        cr_assert_eq(it, m.cap);
        cr_assert_eq(seen, live);
        free(mark);
        /* Power-of-two capacity, load factor at most 3/4. */
        cr_assert_eq(m.cap & (m.cap - 1), 0);
        cr_assert_leq(m.used * 4, m.cap * 3);
    }
    /* Growth from empty to all N keys. */
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        strmap_put(&m, k, (void *)(uintptr_t)(2 * i + 1), NULL);
    }
    cr_assert_eq(m.count, N);
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        cr_assert_eq((uintptr_t)strmap_get(&m, k), (uintptr_t)(2 * i + 1));
    }
    rng_state = saved;
    strmap_free(&m);
    free(model);
}

Test(strmap, similar_and_long_keys) {
    strmap m;
    strmap_init(&m);
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    strmap_put(&m, big, (void *)1, NULL);
    big[4998] = 'r';
    strmap_put(&m, big, (void *)2, NULL);
    cr_assert_eq(strmap_get(&m, big), (void *)2);
    big[4998] = 'q';
    cr_assert_eq(strmap_get(&m, big), (void *)1);
    strmap_put(&m, "ab", (void *)3, NULL);
    strmap_put(&m, "ba", (void *)4, NULL);
    strmap_put(&m, "\xff\xfe", (void *)5, NULL);
    cr_assert_eq(strmap_get(&m, "ab"), (void *)3);
    cr_assert_eq(strmap_get(&m, "ba"), (void *)4);
    cr_assert_eq(strmap_get(&m, "\xff\xfe"), (void *)5);
    cr_assert_null(strmap_get(&m, "a"));
    cr_assert_null(strmap_get(&m, "abc"));
    strmap_free(&m);
}
