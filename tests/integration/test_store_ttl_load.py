"""The TTL sweep under a steady stream of chats (issue 19, item 5): the
sweeper used to run only when the store thread had waited a whole idle
interval without a write, so a stream of chats a few ms apart starved it
and expired messages were never deleted while the stream lasted."""
import asyncio
import json
import sqlite3
import time

from test_store import DB, connect
from test_store_hardening import OLD, count

EXPIRED = 8000


async def fill(srv, room, n):
    """n chats into room, 200 in flight, each back at its sender (stored)."""
    ws = await connect(srv, userId="filler", roomId=room)
    for start in range(0, n, 200):
        # windows of 200, within the store's bound on queued chats
        for i in range(start, min(n, start + 200)):
            await ws.send(json.dumps({"type": "chat", "message": f"old {i}"}))
        got = start
        while got < min(n, start + 200):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert msg["type"] != "error", msg
            if msg["type"] == "chat":
                got += 1
    await ws.close()


async def stream(srv, stop, sent):
    """Chats every few ms from two members of room busy until stop is set."""
    async def one(user):
        ws = await connect(srv, userId=user, roomId="busy")

        async def reader():
            try:
                async for _ in ws:
                    pass
            except Exception:
                pass
        task = asyncio.ensure_future(reader())
        while not stop.is_set():
            await ws.send(json.dumps({"type": "chat", "message": "now"}))
            sent[0] += 1
            await asyncio.sleep(0.004)
        await ws.close()
        await task
    await asyncio.gather(one("s1"), one("s2"))


def age(path):
    con = sqlite3.connect(str(path), timeout=60)
    with con:
        con.execute("UPDATE messages SET timestamp = ? WHERE roomId = 'old'", (int(time.time()) - OLD,))
    con.close()


def test_expired_messages_are_deleted_while_chats_keep_the_store_busy(start_server, tmp_path):
    data = tmp_path / "ttl"
    srv = start_server(settings={"message_ttl_days": 1}, args=["--data-dir", str(data)])
    asyncio.run(fill(srv, "old", EXPIRED))
    assert count(data / DB, "SELECT COUNT(*) FROM messages WHERE roomId = 'old'") == EXPIRED

    async def run():
        stop = asyncio.Event()
        sent = [0]
        load = asyncio.ensure_future(stream(srv, stop, sent))
        loop = asyncio.get_running_loop()
        await asyncio.sleep(1)
        # the room's messages expire while the stream flows
        await loop.run_in_executor(None, age, data / DB)
        at_age = sent[0]
        deadline = time.monotonic() + 30
        left = EXPIRED
        while time.monotonic() < deadline and left:
            await asyncio.sleep(0.5)
            left = await loop.run_in_executor(
                None, count, data / DB, "SELECT COUNT(*) FROM messages WHERE roomId = 'old'")
        streamed = sent[0] - at_age
        stop.set()
        await load
        return left, streamed
    left, streamed = asyncio.run(run())
    assert streamed > 100, "the stream did not flow"
    assert left == 0, f"{left} of {EXPIRED} expired messages still stored after 30 s of chats"
