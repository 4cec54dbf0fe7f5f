/* Unit tests for src/engine/redis_nodes.c: worker fields "<node>.<worker>"
 * name their node (the part before the last '.'), one entry per node,
 * sorted by id; fields that name no node are refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "engine/redis_nodes.h"

static redis_node_info *of(redis_nodes *t, const char *field) {
    return redis_nodes_of_field(t, field, strlen(field));
}

Test(redis_nodes, one_entry_per_node) {
    redis_nodes t = {0};
    of(&t, "bbbb.0")->workers++;
    of(&t, "aaaa.0")->workers++;
    of(&t, "bbbb.1")->workers++;
    of(&t, "bbbb.12")->connections += 5;
    cr_assert_eq(t.n, 2);
    redis_nodes_sort(&t);
    cr_assert_str_eq(t.v[0].node, "aaaa");
    cr_assert_eq(t.v[0].workers, 1);
    cr_assert_str_eq(t.v[1].node, "bbbb");
    cr_assert_eq(t.v[1].workers, 2);
    cr_assert_eq(t.v[1].connections, 5);
    cr_assert_eq(t.v[1].self, false);
    redis_nodes_free(&t);
    cr_assert_eq(t.n, 0);
    cr_assert_null(t.v);
}

Test(redis_nodes, the_node_is_before_the_last_dot) {
    redis_nodes t = {0};
    cr_assert_str_eq(of(&t, "a.b.3")->node, "a.b");
    /* only the field's len bytes count */
    cr_assert_str_eq(redis_nodes_of_field(&t, "cc.1junk", 4)->node, "cc");
    cr_assert_eq(t.n, 2);
    redis_nodes_free(&t);
}

Test(redis_nodes, fields_without_a_node_are_refused) {
    redis_nodes t = {0};
    cr_assert_null(of(&t, ""));
    cr_assert_null(of(&t, "nodot"));
    cr_assert_null(of(&t, ".0"));
    char longid[REDIS_NODE_ID_MAX + 4];
    memset(longid, 'x', REDIS_NODE_ID_MAX + 1);
    strcpy(longid + REDIS_NODE_ID_MAX + 1, ".0");
    cr_assert_null(of(&t, longid));
    longid[REDIS_NODE_ID_MAX] = '.';
    longid[REDIS_NODE_ID_MAX + 1] = '\0';
    cr_assert_not_null(of(&t, longid), "an id of REDIS_NODE_ID_MAX bytes fits");
    cr_assert_eq(t.n, 1);
    redis_nodes_free(&t);
}

Test(redis_nodes, grows_past_its_first_allocation) {
    redis_nodes t = {0};
    char f[32];
    for (int i = 0; i < 100; i++) {
        snprintf(f, sizeof f, "n%03d.0", 99 - i);
        of(&t, f)->rooms = (uint64_t)i;
    }
    cr_assert_eq(t.n, 100);
    redis_nodes_sort(&t);
    for (int i = 0; i < 100; i++) {
        snprintf(f, sizeof f, "n%03d", i);
        cr_assert_str_eq(t.v[i].node, f);
        cr_assert_eq(t.v[i].rooms, (uint64_t)(99 - i));
    }
    redis_nodes_free(&t);
}

Test(redis_nodes, an_id_holding_a_nul_is_refused) {
    /* "a\0b" would be stored as "a": the next such field would not find it
     * and add a second "a" */
    redis_nodes t = {0};
    cr_assert_null(redis_nodes_of_field(&t, "a\0b.0", 5));
    cr_assert_null(redis_nodes_of_field(&t, "a\0b.1", 5));
    cr_assert_eq(t.n, 0);
    redis_nodes_free(&t);
}
