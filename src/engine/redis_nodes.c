/* The nodes of a Redis cluster. See redis_nodes.h. */
#include "engine/redis_nodes.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

redis_node_info *redis_nodes_of_field(redis_nodes *t, const char *field, size_t len) {
    const char *dot = NULL;
    for (size_t i = 0; i < len; i++)
        if (field[i] == '.') dot = field + i;
    size_t nl = dot ? (size_t)(dot - field) : 0;
    /* An id must survive as a C string: one holding a NUL would alias a
     * shorter one. */
    if (nl == 0 || nl > REDIS_NODE_ID_MAX || memchr(field, '\0', nl)) return NULL;
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->v[i].node) == nl && memcmp(t->v[i].node, field, nl) == 0) return &t->v[i];
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
    }
    redis_node_info *e = &t->v[t->n++];
    memset(e, 0, sizeof(*e));
    memcpy(e->node, field, nl);
    return e;
}

static int by_id(const void *a, const void *b) {
    return strcmp(((const redis_node_info *)a)->node, ((const redis_node_info *)b)->node);
}

void redis_nodes_sort(redis_nodes *t) {
    if (t->n > 1) qsort(t->v, t->n, sizeof(*t->v), by_id);
}

void redis_nodes_free(redis_nodes *t) {
    free(t->v);
    t->v = NULL;
    t->n = t->cap = 0;
}
