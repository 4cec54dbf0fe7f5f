"""Operating a cluster (issue 13, item 7): the Redis engine's counters on
/metrics, every node on GET /{stage}/@nodes (the dashboard's node table),
and the running node's id in `wsgate outputs`. Real redis-server and
wsgate nodes, as test_cluster.py starts them."""
import asyncio
import json
import os
import re
import subprocess
import time
import urllib.request

from conftest import WSGATE_BIN
from test_cluster import (  # noqa: F401  (fixtures)
    BEARER, Redis, cluster, connect, recv_type, redis, send, settle, wait_ready)

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "management.md")


def scrape(node):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        samples[name_labels] = float(value)
    return text, samples


def metric(samples, name, labels=None):
    """The sample `name` (with `labels`, e.g. 'le="+Inf"'), whatever the
    constant labels."""
    for k, v in samples.items():
        base = k.split("{", 1)[0]
        if base != name:
            continue
        if labels is None or labels in k:
            return v
    return None


def wait_metric(node, name, pred, timeout=15.0, labels=None):
    deadline = time.time() + timeout
    while True:
        _, s = scrape(node)
        v = metric(s, name, labels)
        if v is not None and pred(v):
            return v
        if time.time() > deadline:
            raise AssertionError(f"{name} = {v} never satisfied the condition")
        time.sleep(0.1)


def get_nodes(node):
    req = urllib.request.Request(f"http://127.0.0.1:{node.port}/{node.stage}/@nodes",
                                 headers={"Authorization": f"Bearer {BEARER}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def node_id_from_log(node):
    deadline = time.time() + 10
    while time.time() < deadline:
        m = re.search(r"node ([0-9a-f]{16}) on redis", node.log())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError("no engine_redis line in the log")


def outputs(node, *args):
    return subprocess.run([WSGATE_BIN, "outputs", "--data-dir", node.data_dir, *args],
                          capture_output=True, text=True, timeout=30)


def test_metrics_carry_the_redis_engine_counters(cluster, redis):
    a, b = cluster(2)
    assert metric(scrape(a)[1], "wsgate_redis_up") is not None

    async def main():
        x, _ = await connect(a, userId="x", roomId="ops")
        y, _ = await connect(b, userId="y", roomId="ops")
        await settle([x, y])
        for k in range(5):
            await send(x, {"type": "chat", "message": f"m{k}"})
        for _ in range(5):
            await recv_type(y, "chat", skip=("user_joined", "user_left"))
        # the counters are copied every 250 ms on each worker's thread
        wait_metric(a, "wsgate_redis_published_chats_total", lambda v: v >= 5)
        wait_metric(a, "wsgate_redis_subscribed_rooms", lambda v: v >= 1)
        wait_metric(a, "wsgate_redis_subscribed_channels", lambda v: v >= 2)  # room + bus
        wait_metric(a, "wsgate_redis_published_events_total", lambda v: v >= 1)  # user_joined
        wait_metric(b, "wsgate_redis_pubsub_messages_total", lambda v: v >= 5)
        _, s = scrape(a)
        assert metric(s, "wsgate_redis_up") == 1
        assert metric(s, "wsgate_redis_workers_up") == 2
        assert metric(s, "wsgate_redis_commands_total") >= 5
        assert metric(s, "wsgate_redis_writes_total") >= 1
        assert metric(s, "wsgate_redis_connects_total") >= 6  # 2 workers x (2 + pub/sub)
        count = metric(s, "wsgate_redis_rtt_seconds_count")
        assert count >= 5
        assert metric(s, "wsgate_redis_rtt_seconds_bucket", 'le="+Inf"') == count
        assert metric(s, "wsgate_redis_rtt_seconds_sum") > 0
        await x.close()
        await y.close()

    asyncio.run(asyncio.wait_for(main(), 60))

    # Redis stops: the state goes down; back on the same port: reconnects
    port = redis.port
    redis.stop()
    wait_metric(a, "wsgate_redis_up", lambda v: v == 0)
    wait_metric(a, "wsgate_redis_connect_failures_total", lambda v: v >= 1)
    again = Redis(port)
    try:
        wait_ready(a, timeout=20)
        wait_metric(a, "wsgate_redis_up", lambda v: v == 1)
        wait_metric(a, "wsgate_redis_reconnects_total", lambda v: v >= 1)
    finally:
        again.stop()


def test_every_redis_metric_is_documented(cluster):
    (a,) = cluster(1)
    text, _ = scrape(a)
    names = set(re.findall(r"^# TYPE (wsgate_redis_\w+) ", text, re.M))
    assert len(names) >= 15, names
    with open(DOCS) as f:
        doc = f.read()
    missing = [n for n in sorted(names) if f"`{n}`" not in doc]
    assert not missing, f"not in docs/management.md: {missing}"


def test_local_engine_has_no_redis_metrics(start_server):
    srv = start_server(settings={"management_bearer_key": BEARER})
    text, _ = scrape(srv)
    assert "wsgate_redis_" not in text
    nodes = get_nodes(srv)
    assert nodes["engine"] == "local"
    assert [n["nodeId"] for n in nodes["nodes"]] == ["local"]


def test_nodes_lists_every_node_with_its_counts(cluster):
    nodes = cluster(3)
    ids = [node_id_from_log(n) for n in nodes]

    async def main():
        wss = []
        # node 0: 1 connection in 1 room; node 1: 2 in 2 rooms; node 2: 3 in 1
        for i, (node, room) in enumerate([(0, "r1"), (1, "r1"), (1, "r2"), (2, "r3"),
                                          (2, "r3"), (2, "r3")]):
            ws, _ = await connect(nodes[node], userId=f"u{i}", roomId=room)
            wss.append(ws)
        await settle(wss)
        want = {ids[0]: (1, 1), ids[1]: (2, 2), ids[2]: (3, 1)}
        deadline = time.time() + 15
        while True:
            got = get_nodes(nodes[0])
            seen = {n["nodeId"]: (n["connections"], n["rooms"]) for n in got["nodes"]}
            if seen == want or time.time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert got["engine"] == "redis"
        assert seen == want, got
        for n in got["nodes"]:
            assert n["workers"] == 2, n
            assert n["self"] == (n["nodeId"] == ids[0]), n
            assert n["heartbeatAgeMs"] is not None and 0 <= n["heartbeatAgeMs"] < 10000, n
        assert [n["nodeId"] for n in got["nodes"]] == sorted(ids)
        for ws in wss:
            await ws.close()

    asyncio.run(asyncio.wait_for(main(), 60))

    # a node stopped cleanly leaves the live set: the others stop listing it
    nodes[2].stop()
    deadline = time.time() + 15
    while ids[2] in [n["nodeId"] for n in get_nodes(nodes[0])["nodes"]]:
        assert time.time() < deadline, get_nodes(nodes[0])
        time.sleep(0.2)


def test_outputs_show_the_running_node_id(cluster):
    a, b = cluster(2)
    for node in (a, b):
        want = node_id_from_log(node)
        r = outputs(node, "-raw", "node_id")
        assert r.returncode == 0, r.stderr
        assert r.stdout == want
        r = outputs(node, "-json")
        assert json.loads(r.stdout)["node_id"]["value"] == want
        assert f'node_id = "{want}"' in outputs(node).stdout
    assert node_id_from_log(a) != node_id_from_log(b)
    # no server on the directory any more: said so, and -raw prints nothing
    a.stop()
    r = outputs(a, "-raw", "node_id")
    assert r.returncode == 1 and r.stdout == ""
    assert "no server running" in r.stderr
    r = outputs(a)
    assert 'node_id = ""' in r.stdout and "no server running" in r.stderr


def test_outputs_node_id_with_the_local_engine(start_server):
    srv = start_server()
    r = outputs(srv, "-raw", "node_id")
    assert r.returncode == 0 and r.stdout == "local", r.stderr


def test_a_dead_node_ages_then_leaves_the_node_list(cluster, redis, tmp_path):
    """kill -9: the node's last heartbeat grows old on the others' list,
    then, past redis_node_timeout_s, it is no longer listed."""
    from conftest import Server
    (a,) = cluster(1, redis_node_timeout_s=3)
    doomed = Server(tmp_path / "doomed", {
        "engine": "redis", "redis_url": f"redis://127.0.0.1:{redis.port}",
        "worker_threads": 2, "redis_node_timeout_s": 3, "management_bearer_key": BEARER,
        "kms_key_file": os.path.join(a.data_dir, "keys.json")})
    try:
        wait_ready(doomed)
        dead = node_id_from_log(doomed)

        def entry():
            return {n["nodeId"]: n for n in get_nodes(a)["nodes"]}.get(dead)

        deadline = time.time() + 15
        while entry() is None:
            assert time.time() < deadline, get_nodes(a)
            time.sleep(0.2)
        assert entry()["heartbeatAgeMs"] < 3000
        doomed.proc.kill()
        doomed.proc.wait()
        # still listed for a while, with an age that grows past a heartbeat
        oldest = 0
        deadline = time.time() + 20
        while True:
            e = entry()
            if e is None:
                break
            oldest = max(oldest, e["heartbeatAgeMs"])
            assert time.time() < deadline, e
            time.sleep(0.2)
        assert oldest >= 1500, oldest
        assert [n["nodeId"] for n in get_nodes(a)["nodes"]] == [node_id_from_log(a)]
    finally:
        doomed.stop()


def test_outputs_never_show_a_past_process_id(cluster):
    """A later server on the same data directory (here in echo mode, which
    has no engine) replaces the id: outputs never shows a past process's."""
    from conftest import Server
    (a,) = cluster(1)
    assert outputs(a, "-raw", "node_id").stdout == node_id_from_log(a)
    assert a.stop() == 0
    echo = Server(a.data_dir, {"mode": "echo"})
    try:
        r = outputs(echo, "-raw", "node_id")
        assert (r.returncode, r.stdout) == (0, "local"), r.stderr
    finally:
        assert echo.stop() == 0
