"""Where a durable chat's time goes (wsgate_chat_phase_seconds) and the WAL
checkpoints that used to run inside a commit."""
import asyncio
import json
import os
import re
import urllib.request

import websockets

DB = "websocket-api-dev.db"
PHASES = ("handle", "queue", "apply", "commit", "wakeup", "first_write", "fanout", "total")


async def connect(srv, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    ws = await websockets.connect(f"{srv.url}?{q}", open_timeout=10, max_size=None)
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "welcome"
    return ws


async def recv_chat(ws, text, timeout=10):
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] == "chat" and msg["data"]["message"] == text:
            return msg["data"]


def scrape(srv):
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=10) as r:
        return r.read().decode()


def value(text, name, **labels):
    """The sample of family member `name` whose labels include `labels`."""
    for line in text.splitlines():
        m = re.match(r"^(\w+)(\{.*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    raise AssertionError(f"no sample {name} {labels}")


def test_every_phase_of_each_broadcast_chat_is_counted(start_server):
    srv = start_server()
    n = 7

    async def main():
        members = [await connect(srv, userId=f"u{i}", roomId="phases") for i in range(3)]
        for i in range(n):
            await members[0].send(json.dumps({"type": "chat", "message": f"p{i}"}))
            for ws in members:
                await recv_chat(ws, f"p{i}")
        for ws in members:
            await ws.close()
    asyncio.run(main())

    text = scrape(srv)
    for phase in PHASES:
        count = value(text, "wsgate_chat_phase_seconds_count", phase=phase)
        assert count == n, (phase, count)
        assert value(text, "wsgate_chat_phase_seconds_bucket", phase=phase, le="+Inf") == n
    sums = {p: value(text, "wsgate_chat_phase_seconds_sum", phase=p) for p in PHASES}
    # Stamps from one monotonic clock: the parts cannot exceed the whole,
    # and a commit that synced the WAL took some time.
    parts = sum(sums[p] for p in ("handle", "queue", "apply", "commit", "wakeup", "fanout"))
    assert sums["commit"] > 0 and sums["total"] > 0
    assert parts <= sums["total"] * 1.0001 + 1e-6, sums
    assert sums["first_write"] <= sums["fanout"] + 1e-9, sums


def test_checkpoints_run_off_the_commit_path_and_keep_the_wal_small(start_server):
    # Bug fixed: SQLite's autocheckpoint ran inside the COMMIT that took the
    # WAL past 8192 pages, on the store thread: every chat behind it waited
    # while 32 MB were copied (and, with store_sync=normal, first fsynced);
    # the WAL file grew to 32 MB. Now a checkpointer thread copies it from
    # 4096 pages (16 MiB) on, the store thread copies the last frames between
    # two batches (at 8192 pages, 32 MiB, at the latest) so the WAL restarts.
    srv = start_server(settings={"store_sync": "normal"})
    wal = os.path.join(srv.data_dir, DB + "-wal")
    n = 3000

    async def main():
        ws = await connect(srv, userId="w", roomId="wal")
        text = "x" * 200
        for i in range(n):
            # One at a time: each chat is its own commit, a few WAL pages.
            await ws.send(json.dumps({"type": "chat", "message": f"{text}{i}"}))
            await recv_chat(ws, f"{text}{i}")
        await ws.close()
    asyncio.run(main())

    size = os.path.getsize(wal)
    # A few pages a commit: 3000 commits put well over the checkpointer's
    # 16 MiB through the WAL
    # (the old code's file: 32 MB).
    assert size <= 24 * 1024 * 1024, f"WAL is {size} bytes"
    metrics = scrape(srv)
    assert value(metrics, "wsgate_store_checkpoints_total") >= 1
    # One commit a chat (and the joins'): every batch counted.
    assert value(metrics, "wsgate_store_batches_total") >= n
    assert 0 <= value(metrics, "wsgate_store_inline_checkpoints_total") <= value(
        metrics, "wsgate_store_checkpoints_total")
