"""A stalled disk, measured: 5 publishers send 20 KB chats as fast as they
can while this script holds the store's write lock for 4 s (as a frozen
disk would hold the commits), then releases it. Prints the server's RSS
and store backlog during the stall and 4 s after, and how many of the 5
members were cut. Targets 127.0.0.1 only; stops by itself.

    /usr/bin/python3 bench/store_stall.py build/wsgate [--set NAME=VALUE ...]
"""
import asyncio
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets


def main():
    binary, extra = sys.argv[1], sys.argv[2:]
    data = tempfile.mkdtemp(prefix="wsgate-stall-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1", "--port", str(port), "--data-dir", data,
                             "--set", "throttling_burst_limit=5000", "--set", "throttling_rate_limit=10000",
                             "--set", "connection_rate_limit=0", "--set", "connect_rate_per_ip=0",
                             "--set", "enable_encryption=false", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(run(proc.pid, port, data))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024


def backlog(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return " ".join(line.split("{")[0] + "=" + line.rsplit(" ", 1)[1] for line in text.splitlines()
                    if line.startswith(("wsgate_store_pending_ops", "wsgate_store_rejected_total")))


async def run(pid, port, data):
    url = f"ws://127.0.0.1:{port}/staging?roomId=stall&userId="
    members = [await websockets.connect(url + f"p{i}", max_size=None) for i in range(5)]

    async def read(ws):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed:
            pass
    readers = [asyncio.create_task(read(ws)) for ws in members]
    body = "x" * 20000
    before = rss_mb(pid)
    lock = sqlite3.connect(os.path.join(data, "websocket-api-dev.db"), isolation_level=None, timeout=30)
    lock.execute("BEGIN EXCLUSIVE")
    start, sent = time.time(), 0

    async def publish(ws):
        nonlocal sent
        while time.time() - start < 4:
            await ws.send(json.dumps({"type": "chat", "message": body}))
            sent += 1
            await asyncio.sleep(0)
    await asyncio.gather(*[publish(ws) for ws in members], return_exceptions=True)
    print(f"stalled 4 s: {sent} chats sent, RSS {before} -> {rss_mb(pid)} MB, {backlog(port)}")
    lock.execute("ROLLBACK")
    lock.close()
    await asyncio.sleep(4)
    cut = sum(1 for ws in members if ws.close_code is not None)
    print(f"4 s after the thaw: RSS {rss_mb(pid)} MB, {backlog(port)}, members cut {cut} of 5")
    for ws in members:
        await ws.close()
    for r in readers:
        r.cancel()


if __name__ == "__main__":
    main()
