/* libFuzzer target for the node table's field splitter: each input line is
 * a worker field "<node>.<worker>"; a field either names no node (NULL) or
 * lands in the one entry whose id is the field's part before its last '.',
 * and the table never holds two entries with the same id. */
#include <stdint.h>
#include <string.h>

#include "engine/redis_nodes.h"
#include "fuzz_require.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    redis_nodes t = {0};
    const char *p = (const char *)data, *end = p + size;
    while (p <= end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        size_t before = t.n;
        redis_node_info *e = redis_nodes_of_field(&t, p, len);
        const char *dot = NULL;
        for (size_t i = 0; i < len; i++)
            if (p[i] == '.') dot = p + i;
        if (e) {
            size_t nl_id = strlen(e->node);
            require(dot && (size_t)(dot - p) == nl_id && memcmp(e->node, p, nl_id) == 0);
            require(nl_id > 0 && nl_id <= REDIS_NODE_ID_MAX);
            require(t.n == before || t.n == before + 1);
            e->workers++;
        } else {
            require(t.n == before);
            require(!dot || dot == p || (size_t)(dot - p) > REDIS_NODE_ID_MAX ||
                    memchr(p, '\0', (size_t)(dot - p)) != NULL);
        }
        if (!nl) break;
        p = nl + 1;
    }
    redis_nodes_sort(&t);
    for (size_t i = 1; i < t.n; i++) require(strcmp(t.v[i - 1].node, t.v[i].node) < 0);
    redis_nodes_free(&t);
    return 0;
}
