/* What an idle connection costs (issue 16, docs/BENCHMARKS.md "Idle
 * memory"): the sizes the per-structure table promises, and the parts
 * that must not take a heap block of their own while a connection is idle
 * (its address text, a username equal to its user id, short user ids). A
 * change that makes a connection bigger fails here first; raise a bound
 * only with the table. */
#include <criterion/criterion.h>
#include <string.h>

#include "app/registry.h"
#include "common/keytab.h"
#include "common/slab.h"
#include "engine/directory.h"
#include "net/conn.h"
#include "net/conn_internal.h"

Test(idle_memory, structure_sizes) {
    cr_assert_leq(sizeof(conn), 432, "conn grew to %zu bytes", sizeof(conn));
    cr_assert_leq(sizeof(session), 120, "session grew to %zu bytes", sizeof(session));
    cr_assert_leq(sizeof(directory_conn), 40, "directory_conn grew to %zu", sizeof(directory_conn));
    /* A table slot is a pointer: no key copy, no stored hash. */
    keytab t;
    keytab_init(&t, NULL);
    t.cap = 1;
    cr_assert_eq(keytab_bytes(&t), sizeof(void *));
}

Test(idle_memory, slab_slots_cost_their_rounded_size) {
    slab s;
    slab_init(&s, sizeof(conn));
    cr_assert_eq(s.size, (sizeof(conn) + 15) & ~(size_t)15);
    /* Nearly the whole chunk is slots. */
    cr_assert_geq(s.per_chunk * s.size, SLAB_CHUNK_BYTES - s.size - 64);
}

Test(idle_memory, peer_address_text_is_shared) {
    const char *a = conn_addr_intern("127.0.0.1");
    const char *b = conn_addr_intern("127.0.0.1");
    const char *c = conn_addr_intern("::1");
    cr_assert_eq(a, b, "two connections from one address share its text");
    cr_assert_neq(a, c);
    cr_assert_str_eq(a, "127.0.0.1");
    cr_assert_str_eq(c, "::1");
    conn_addr_release(a);
    cr_assert_str_eq(b, "127.0.0.1", "still referenced");
    conn_addr_release(b);
    conn_addr_release(c);
    const char *d = conn_addr_intern("10.1.2.3");
    cr_assert_str_eq(d, "10.1.2.3");
    conn_addr_release(d);
}

static conn *fake_conn(const char *id) {
    conn *c = calloc(1, sizeof(*c));
    cr_assert_not_null(c);
    strcpy(c->id, id);
    return c;
}

Test(idle_memory, registry_shares_default_username_and_keeps_long_ids) {
    registry r;
    registry_init(&r);
    conn *c1 = fake_conn("Aaaaaaaaaaaaaaa1");
    conn *c2 = fake_conn("Aaaaaaaaaaaaaaa2");
    conn *c3 = fake_conn("Aaaaaaaaaaaaaaa3");
    /* The default username is the user id: not copied. */
    session *s1 = registry_add(&r, c1, "lg1", "lg1");
    cr_assert_eq(s1->username, s1->user_id);
    /* A short user id is the session's own: no block, no user entry (the
     * users table points at the session itself). */
    cr_assert_eq(s1->user_id, s1->uid);
    cr_assert_eq(registry_user(&r, "lg1"), s1);
    /* The connection and ids are the directory record's, not copies. */
    cr_assert_eq((void *)&s1->c, (void *)&s1->record.c);
    cr_assert_eq((void *)&s1->user_id, (void *)&s1->record.user_id);
    cr_assert_eq((void *)&s1->username, (void *)&s1->record.username);
    /* A different one is the session's own. */
    session *s2 = registry_add(&r, c2, "lg2", "Bob");
    cr_assert_neq(s2->username, s2->user_id);
    cr_assert_str_eq(s2->username, "Bob");
    /* An id too long for a slab slot still works (a block of its own). */
    char long_id[200];
    memset(long_id, 'u', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    session *s3 = registry_add(&r, c3, long_id, long_id);
    cr_assert_str_eq(s3->user_id, long_id);
    cr_assert_eq(registry_user(&r, long_id), s3);
    registry_join(&r, s3, long_id);
    cr_assert_not_null(registry_room(&r, long_id));
    registry_remove(&r, s1);
    registry_remove(&r, s3);
    cr_assert_null(registry_user(&r, long_id));
    cr_assert_eq(r.users.count, 1);
    registry_free(&r); /* frees s2 */
    free(c1);
    free(c2);
    free(c3);
}

Test(idle_memory, directory_keeps_long_and_short_ids) {
    static directory d;
    directory_init(&d);
    char long_id[120];
    memset(long_id, 'r', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    directory_set *a = directory_room_join(&d, long_id, 0, true);
    directory_set *b = directory_room_join(&d, "room1", 1, true);
    cr_assert_str_eq(a->id, long_id);
    cr_assert_str_eq(b->id, "room1");
    directory_user_add(&d, long_id, 0, true);
    directory_user_add(&d, "lg1", 0, true);
    cr_assert_eq(directory_user_workers(&d, long_id), 1);
    cr_assert_eq(directory_room_leave(&d, long_id, 0, true), 0);
    directory_user_remove(&d, long_id, 0, true);
    cr_assert_eq(directory_room_total(&d), 1);
    directory_free(&d); /* frees room1 and lg1 */
}
