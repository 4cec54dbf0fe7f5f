/* The nodes of a Redis cluster as worker 0 last read them (the live-worker
 * set and each worker's count hashes): what the dashboard shows
 * (GET /{stage}/@nodes). A small table keyed by node id; no I/O. */
#ifndef WSGATE_ENGINE_REDIS_NODES_H
#define WSGATE_ENGINE_REDIS_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_NODE_ID_MAX 40

typedef struct redis_node_info {
    char node[REDIS_NODE_ID_MAX + 1]; /* the node's id */
    bool self;                        /* this process */
    uint32_t workers;                 /* live workers (heartbeat within redis_node_timeout_s) */
    uint64_t connections;             /* its connections */
    uint64_t rooms;                   /* rooms where it has members */
    int64_t heartbeat_ms;             /* its newest worker heartbeat (Unix ms) */
} redis_node_info;

typedef struct redis_nodes {
    redis_node_info *v;
    size_t n, cap;
} redis_nodes;

/* Return the entry of the node named by a worker field "<node>.<worker>"
 * (len bytes; the node is what precedes the last '.'), added zeroed when
 * new. NULL when the field names no node (no '.', empty, longer than
 * REDIS_NODE_ID_MAX or holding a NUL). */
redis_node_info *redis_nodes_of_field(redis_nodes *t, const char *field, size_t len);

/* Sort the entries by node id (the listing's order). */
void redis_nodes_sort(redis_nodes *t);

/* Free the entries (t itself is the caller's); t is empty after. */
void redis_nodes_free(redis_nodes *t);

#endif
