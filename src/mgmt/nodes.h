/* GET /{stage}/@nodes: the nodes serving this API (the dashboard's node
 * table). */
#ifndef WSGATE_MGMT_NODES_H
#define WSGATE_MGMT_NODES_H

#include <jansson.h>

#include "app/app.h"

/* Return {"engine","nodes":[{"nodeId","self","workers","connections",
 * "rooms","heartbeatAgeMs"}]} (a new reference, the caller's): with the
 * Redis engine every live node as worker 0 last read them (this node's
 * counts exact), with the local engine this one node ("nodeId":"local",
 * heartbeatAgeMs 0). */
json_t *mgmt_nodes_json(app *a);

#endif
