#!/usr/bin/python3
"""Chat latency, sender to one receiver, one chat at a time (500 chats):
the local engine on one node, and engine = "redis" with both clients on one
node and on two nodes. Starts its own redis-server (no persistence) and
wsgate processes on free loopback ports, stops them by PID.

    WSGATE_BIN=build/wsgate /usr/bin/python3 bench/cluster_latency.py
"""
import asyncio
import json
import os
import tempfile
import time

import benchlib  # first: it puts tests/integration on sys.path
from conftest import Server, free_port
import websockets

N = 500


async def measure(url_a, url_b):
    a = await websockets.connect(url_a + "?userId=a&roomId=lat")
    await a.recv()
    b = await websockets.connect(url_b + "?userId=b&roomId=lat")
    await b.recv()
    await asyncio.sleep(1.0)  # presence settles
    lat = []
    for i in range(N):
        t = time.perf_counter()
        await a.send(json.dumps({"type": "chat", "message": f"x{i}"}))
        while json.loads(await b.recv())["type"] != "chat":
            pass
        lat.append((time.perf_counter() - t) * 1000)
    await a.close()
    await b.close()
    return benchlib.p50_p99(lat)


def main():
    port = free_port()
    redis = benchlib.start_redis(port)
    tmp = tempfile.mkdtemp(prefix="wsgate-cluster-bench-")
    base = {"worker_threads": 2, "throttling_burst_limit": 5000,
            "throttling_rate_limit": 10000, "enable_encryption": "false"}
    red = dict(base, engine="redis", redis_url=f"redis://127.0.0.1:{port}")
    servers = []
    try:
        local = Server(os.path.join(tmp, "local"), dict(base, store_sync="normal"))
        servers.append(local)
        n1 = Server(os.path.join(tmp, "n1"), red)
        servers.append(n1)
        n2 = Server(os.path.join(tmp, "n2"), red)
        servers.append(n2)
        for name, ua, ub in (("local engine, store_sync=normal", local.url, local.url),
                             ("redis engine, same node", n1.url, n1.url),
                             ("redis engine, across nodes", n1.url, n2.url)):
            p50, p99 = asyncio.run(measure(ua, ub))
            print(f"{name}: p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    finally:
        benchlib.stop_all(servers, redis)


main()
