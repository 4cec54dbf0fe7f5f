#!/usr/bin/python3
"""Answers that wait for Redis (docs/redis.md): latency of room_list, of
GET @rooms and of a private message to a user on another node, one at a
time (500 each), on two wsgate nodes on one redis-server, against one
node with the local engine in the same run. 200 rooms with one member
each, half on each node (the local engine: all on its one node). Starts
its own redis-server (no persistence) and nodes on free loopback ports,
stops them by PID.

    WSGATE_BIN=build/wsgate /usr/bin/python3 bench/cluster_async.py
"""
import http.client
import json
import os
import tempfile
import time

import benchlib  # first: it puts tests/integration on sys.path
from conftest import Server, free_port
import wsraw

N = 500
ROOMS = 200
KEY = "bench-bearer-key-0123456789"


def next_of(c, typ):
    while True:
        msg = json.loads(c.recv_message(timeout=10)[1])
        if msg["type"] == typ:
            return msg
        assert msg["type"] in ("user_joined", "user_left"), msg


def ws_calls(asker, target, want_rooms):
    """room_list from asker; a private message from asker to target's
    user (until target has it)."""
    out = {}
    lat = []
    for _ in range(N):
        t = time.perf_counter()
        asker.send(wsraw.frame(0x1, b'{"type":"room_list"}'))
        msg = next_of(asker, "room_list")
        lat.append((time.perf_counter() - t) * 1000)
        assert len(msg["data"]["rooms"]) == want_rooms, len(msg["data"]["rooms"])
    out["room_list"] = benchlib.p50_p99(lat)
    lat = []
    body = json.dumps({"type": "private_message", "targetUserId": "target",
                       "message": "hi"}).encode()
    for _ in range(N):
        t = time.perf_counter()
        asker.send(wsraw.frame(0x1, body))
        next_of(target, "private_message")
        lat.append((time.perf_counter() - t) * 1000)
    out["private_message"] = benchlib.p50_p99(lat)
    return out


def rooms_calls(node, want_rooms):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    lat = []
    for _ in range(N):
        t = time.perf_counter()
        conn.request("GET", f"/{node.stage}/@rooms", headers={"Authorization": f"Bearer {KEY}"})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 200 and len(body["rooms"]) == want_rooms, (r.status, len(body["rooms"]))
        lat.append((time.perf_counter() - t) * 1000)
    conn.close()
    return benchlib.p50_p99(lat)


def run(nodes, label):
    clients = []
    for i in range(ROOMS):
        node = nodes[i % len(nodes)]
        clients.append(wsraw.connect(node.port, f"/{node.stage}?userId=u{i}&roomId=room{i:03d}"))
    asker = wsraw.connect(nodes[0].port, f"/{nodes[0].stage}?userId=asker&roomId=room000")
    target = wsraw.connect(nodes[-1].port, f"/{nodes[-1].stage}?userId=target&roomId=room001")
    time.sleep(1.5)  # the joins' presence has passed
    for c in clients + [asker, target]:
        c.sock.settimeout(0.05)
        try:
            while True:
                c.recv_message(timeout=0.05)
        except Exception:  # drained
            pass
        c.sock.settimeout(None)
    res = ws_calls(asker, target, ROOMS)
    res["GET @rooms"] = rooms_calls(nodes[0], ROOMS)
    for name, (p50, p99) in res.items():
        print(f"{label:<34} {name:<16} {p50:8.2f} {p99:8.2f}")
    for c in clients + [asker, target]:
        c.close()


def main():
    port = free_port()
    redis = benchlib.start_redis(port)
    tmp = tempfile.mkdtemp(prefix="wsgate-async-bench-")
    base = {"worker_threads": 2, "management_bearer_key": KEY, "enable_encryption": "false",
            "throttling_enabled": "false"}
    s = {**base, "engine": "redis", "redis_url": f"redis://127.0.0.1:{port}"}
    servers = []
    try:
        print(f"{'setup':<34} {'call':<16} {'p50 ms':>8} {'p99 ms':>8}")
        local = Server(os.path.join(tmp, "local"), base)
        servers.append(local)
        time.sleep(0.5)
        run([local], "local engine, one node")
        local.stop()
        servers.remove(local)
        a = Server(os.path.join(tmp, "a"), s)
        servers.append(a)
        b = Server(os.path.join(tmp, "b"), s)
        servers.append(b)
        time.sleep(1.0)
        run([a, b], "redis engine, two nodes")
    finally:
        benchlib.stop_all(servers, redis)


if __name__ == "__main__":
    main()
