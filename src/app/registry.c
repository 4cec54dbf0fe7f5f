#include "app/registry.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

static const char *session_key(const void *v) { return ((const session *)v)->c->id; }
static const char *user_key(const void *v) { return ((const session *)v)->user_id; }
static const char *room_key(const void *v) { return ((const room *)v)->id; }

_Static_assert(offsetof(session, c) == offsetof(session, record.c) &&
                   offsetof(session, user_id) == offsetof(session, record.user_id) &&
                   offsetof(session, username) == offsetof(session, record.username),
               "the session's connection and ids are its record's");

void registry_init(registry *r) {
    keytab_init(&r->by_id, session_key);
    keytab_init(&r->users, user_key);
    keytab_init(&r->rooms, room_key);
    slab_init(&r->sessions, sizeof(session));
}

static void session_free(registry *r, session *s) {
    if (s->username != s->user_id) free((char *)s->username);
    if (s->user_id != s->uid) free((char *)s->user_id);
    slab_free(&r->sessions, s);
}

void registry_free(registry *r) {
    size_t it = 0;
    void *v;
    while (keytab_next(&r->by_id, &it, &v)) session_free(r, v);
    it = 0;
    while (keytab_next(&r->rooms, &it, &v)) free(v);
    keytab_free(&r->by_id);
    keytab_free(&r->users);
    keytab_free(&r->rooms);
    slab_destroy(&r->sessions);
}

session *registry_add(registry *r, conn *c, const char *user_id, const char *username) {
    session *s = slab_alloc(&r->sessions);
    s->c = c;
    keytab_put(&r->by_id, s);
    size_t n = strlen(user_id) + 1;
    if (n <= sizeof(s->uid)) {
        memcpy(s->uid, user_id, n);
        s->user_id = s->uid;
    } else {
        s->user_id = xstrdup(user_id);
    }
    s->username = strcmp(username, user_id) == 0 ? s->user_id : xstrdup(username);
    /* The newest connection heads the list and stands for the user in the
     * table (a replacement: same key). */
    session *head = keytab_put(&r->users, s);
    s->user_next = head;
    if (head) head->user_prev = s;
    return s;
}

room *registry_join(registry *r, session *s, const char *room_id) {
    if (s->room && strcmp(s->room->id, room_id) == 0) return s->room;
    registry_leave(r, s);
    room *rm = keytab_get(&r->rooms, room_id);
    if (!rm) {
        size_t n = strlen(room_id) + 1;
        rm = xcalloc(1, sizeof(*rm) + n);
        memcpy(rm->id, room_id, n);
        keytab_put(&r->rooms, rm);
    }
    /* Append at the tail would need a tail pointer; members are unordered,
     * so push at the head. */
    s->room = rm;
    s->room_prev = NULL;
    s->room_next = rm->members;
    if (rm->members) rm->members->room_prev = s;
    rm->members = s;
    rm->count++;
    return rm;
}

void registry_leave(registry *r, session *s) {
    room *rm = s->room;
    if (!rm) return;
    if (s->room_prev) s->room_prev->room_next = s->room_next;
    else rm->members = s->room_next;
    if (s->room_next) s->room_next->room_prev = s->room_prev;
    s->room = NULL;
    s->room_prev = s->room_next = NULL;
    if (--rm->count == 0) {
        keytab_remove(&r->rooms, rm->id);
        free(rm);
    }
}

void registry_remove(registry *r, session *s) {
    registry_leave(r, s);
    if (s->user_next) s->user_next->user_prev = s->user_prev;
    if (s->user_prev) s->user_prev->user_next = s->user_next;
    else if (s->user_next) keytab_put(&r->users, s->user_next); /* it stands for the user now */
    else keytab_remove(&r->users, s->user_id);
    keytab_remove(&r->by_id, s->c->id);
    session_free(r, s);
}

session *registry_by_id(const registry *r, const char *conn_id) {
    return keytab_get(&r->by_id, conn_id);
}
session *registry_user(const registry *r, const char *user_id) {
    return keytab_get(&r->users, user_id);
}
room *registry_room(const registry *r, const char *room_id) {
    return keytab_get(&r->rooms, room_id);
}

static int cmp_room(const void *a, const void *b) {
    const room *x = *(room *const *)a, *y = *(room *const *)b;
    return strcmp(x->id, y->id);
}

size_t registry_rooms_sorted(const registry *r, room ***out) {
    room **arr = xmalloc((r->rooms.count + 1) * sizeof(*arr));
    size_t n = 0, it = 0;
    void *v;
    while (keytab_next(&r->rooms, &it, &v)) arr[n++] = v;
    qsort(arr, n, sizeof(*arr), cmp_room);
    *out = arr;
    return n;
}
