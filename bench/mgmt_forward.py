#!/usr/bin/python3
"""@connections across nodes: latency of one management call (GET, and
POST until the client has the message) sent to node A, for a connection
on node A itself and for one on node B (asked through Redis), one call at
a time on one keep-alive HTTP connection (500 calls each). Starts its own
redis-server (no persistence) and two wsgate nodes on free loopback ports,
stops them by PID.

    WSGATE_BIN=build/wsgate /usr/bin/python3 bench/mgmt_forward.py
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
KEY = "bench-bearer-key-0123456789"


def timed(conn, method, path, body=None, after=None):
    lat = []
    for _ in range(N):
        t = time.perf_counter()
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {KEY}"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        if after:
            after()
        lat.append((time.perf_counter() - t) * 1000)
    return benchlib.p50_p99(lat)


def main():
    port = free_port()
    redis = benchlib.start_redis(port)
    tmp = tempfile.mkdtemp(prefix="wsgate-mgmt-bench-")
    s = {"worker_threads": 2, "engine": "redis", "redis_url": f"redis://127.0.0.1:{port}",
         "management_bearer_key": KEY, "enable_encryption": "false"}
    servers = []
    try:
        a = Server(os.path.join(tmp, "a"), s)
        servers.append(a)
        b = Server(os.path.join(tmp, "b"), s)
        servers.append(b)
        time.sleep(1.0)
        print(f"{'connection':<22} {'call':<6} {'p50 ms':>8} {'p99 ms':>8}")
        for name, node in (("on node A (local)", a), ("on node B (forwarded)", b)):
            c = wsraw.connect(node.port, f"/{node.stage}?userId=bench")
            cid = json.loads(c.recv_message()[1])["data"]["connectionId"]
            conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
            path = f"/{a.stage}/@connections/{cid}"
            p50, p99 = timed(conn, "GET", path)
            print(f"{name:<22} {'GET':<6} {p50:8.2f} {p99:8.2f}")
            p50, p99 = timed(conn, "POST", path, b"x", after=lambda: c.recv_message())
            print(f"{name:<22} {'POST':<6} {p50:8.2f} {p99:8.2f}")
            conn.close()
            c.close()
    finally:
        benchlib.stop_all(servers, redis)


if __name__ == "__main__":
    main()
