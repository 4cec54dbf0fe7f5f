/* GET /{stage}/@nodes. See nodes.h. */
#include "mgmt/nodes.h"

#include "common/clock.h"
#include "engine/redis.h"

static json_t *node_json(const redis_node_info *n, int64_t now_ms) {
    json_t *age = n->heartbeat_ms > 0
                      ? json_integer(now_ms > n->heartbeat_ms ? now_ms - n->heartbeat_ms : 0)
                      : json_null();
    return json_pack("{s:s,s:b,s:I,s:I,s:I,s:o}", "nodeId", n->node, "self", n->self, "workers",
                     (json_int_t)n->workers, "connections", (json_int_t)n->connections, "rooms",
                     (json_int_t)n->rooms, "heartbeatAgeMs", age);
}

json_t *mgmt_nodes_json(app *a) {
    json_t *list = json_array();
    int64_t now = clock_wall_ms();
    bool redis = a->cfg->engine_id == CONFIG_ENGINE_REDIS;
    if (redis) {
        redis_nodes ns;
        engine_redis_nodes(a->engine, &ns);
        for (size_t i = 0; i < ns.n; i++) json_array_append_new(list, node_json(&ns.v[i], now));
        redis_nodes_free(&ns);
    } else {
        redis_node_info me = {.node = "local",
                              .self = true,
                              .workers = (uint32_t)a->nhubs,
                              .connections = engine_conn_total(a->engine),
                              .rooms = engine_room_total(a->engine),
                              .heartbeat_ms = now};
        json_array_append_new(list, node_json(&me, now));
    }
    return json_pack("{s:s,s:o}", "engine", redis ? "redis" : "local", "nodes", list);
}
