"""Faults under load on a cluster (engine = "redis", issue 13): a node
killed with SIGKILL while clients on three nodes chat, and the Redis server
itself killed with SIGKILL and restarted (append-only file, fsync before
every reply) while they chat.

The load is bounded (a dozen clients, each sending one chat at a time and
waiting for its outcome, for a few seconds); every wait has a generous
deadline and the verdicts are about what arrived, never about how fast."""
import asyncio
import json
import time

import websockets

from cluster_util import (node_settings, persistent_redis, readyz, redis,  # noqa: F401
                          start_nodes, wait_ready)
from conftest import Server

OUTCOME_TIMEOUT = 20.0  # a chat's ack or error, at most (Redis commands time out at 5 s)
STORE_FAILED = "Failed to store message"


class Client:
    """One WebSocket client and the reader that files what it receives.

    `acked` maps the text of each of its own chats that came back to it
    (the acknowledgement) to (seq, loop time it arrived); `chats` is every
    chat it received, in order; `left` every user_left; `errors` every
    error's text."""

    def __init__(self, ws, user, room, node):
        self.ws, self.user, self.room, self.node = ws, user, room, node
        self.acked = {}
        self.chats = []
        self.left = []
        self.errors = []
        self.outcomes = []  # (text, "ack" | "error" | "closed" | "silent")
        self.closed = False
        self._waiting = None  # (text, future) of the chat in flight
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, node, user, room, **query):
        q = "&".join(f"{k}={v}" for k, v in dict(userId=user, roomId=room, **query).items())
        ws = await websockets.connect(f"{node.url}?{q}", open_timeout=10, close_timeout=2,
                                      max_size=None)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome", welcome
        return cls(ws, user, room, node)

    def _settle(self, outcome):
        if self._waiting and not self._waiting[1].done():
            self._waiting[1].set_result(outcome)

    async def _read(self):
        loop = asyncio.get_running_loop()
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                kind, data = msg["type"], msg.get("data", {})
                if kind == "chat":
                    self.chats.append(data)
                    if data["senderId"] == self.user:
                        self.acked[data["message"]] = (data["seq"], loop.time())
                        if self._waiting and self._waiting[0] == data["message"]:
                            self._settle("ack")
                elif kind == "user_left":
                    self.left.append((data, loop.time()))
                elif kind == "error":
                    self.errors.append(data["message"])
                    self._settle("error")
        except websockets.exceptions.ConnectionClosed:
            pass
        self.closed = True
        self._settle("closed")

    async def chat(self, text):
        """Send one chat and wait for its outcome: its echo ("ack"), an
        error, the connection's end, or nothing ("silent")."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting = (text, fut)
        try:
            await self.ws.send(json.dumps({"type": "chat", "message": text}))
        except websockets.exceptions.ConnectionClosed:
            self._settle("closed")
        try:
            outcome = await asyncio.wait_for(asyncio.shield(fut), OUTCOME_TIMEOUT)
        except asyncio.TimeoutError:
            outcome = "silent"
        self._waiting = None
        self.outcomes.append((text, outcome))
        return outcome

    async def close(self):
        await self.ws.close()
        await asyncio.wait_for(self._task, 10)


async def warm_up(clients):
    """Chat in each room until a chat reached every member, then forget
    what they received: each member's worker is then subscribed to its
    room, and the load starts from there. (A chat published while a new
    member's worker is still subscribing misses that member: a race of the
    engine's first join, tested in test_api_cluster.py, not what these
    tests are about.) Returns {room: the last seq before the load}."""
    start = {}
    for room in sorted({c.room for c in clients}):
        members = [c for c in clients if c.room == room]
        for k in range(40):
            await members[0].chat(f"warm-up {k}")
            deadline = time.time() + 2
            while time.time() < deadline and not all(
                    any(m["message"] == f"warm-up {k}" for m in c.chats) for c in members):
                await asyncio.sleep(0.02)
            if all(any(m["message"] == f"warm-up {k}" for m in c.chats) for c in members):
                break
        else:
            raise AssertionError(f"no chat reached every member of {room}")
        start[room] = max(m["seq"] for c in members for m in c.chats)
    for c in clients:
        c.chats.clear()
        c.acked.clear()
        c.outcomes.clear()
    return start


async def chatter(client, stop, pace=0.05):
    """Chat until `stop` is set: one chat at a time, each waited for."""
    k = 0
    while not stop.is_set() and not client.closed:
        await client.chat(f"{client.user}#{k}")
        k += 1
        await asyncio.sleep(pace)


async def history(client, room):
    """Every message of the room's history, oldest first, paged back with
    beforeSeq (other traffic on the connection is left to the reader)."""
    got, before = [], None
    while True:
        req = {"type": "history", "limit": 500}
        if before is not None:
            req["beforeSeq"] = before
        page = await request(client, req, "history")
        got = page["messages"] + got
        if not page["hasMore"] or not page["messages"]:
            return got
        before = page["messages"][0]["seq"]


async def request(client, req, kind, timeout=10):
    """Send `req` and return the data of the next message of type `kind`
    (read straight from the socket: the client's reader is paused)."""
    client._task.cancel()
    try:
        await client._task
    except asyncio.CancelledError:
        pass
    await client.ws.send(json.dumps(req))
    deadline = time.time() + timeout
    while True:
        msg = json.loads(await asyncio.wait_for(client.ws.recv(), max(0.1, deadline - time.time())))
        if msg["type"] == kind:
            client._task = asyncio.ensure_future(client._read())
            return msg["data"]


def check_history(hist, acked_by_room):
    """History of a room: seq 1..N with no gap and no duplicate, and every
    acknowledged chat in it with its text and sender."""
    for room, acked in acked_by_room.items():
        msgs = hist[room]
        seqs = [m["seq"] for m in msgs]
        assert seqs == list(range(1, len(seqs) + 1)), (room, seqs)
        by_seq = {m["seq"]: m for m in msgs}
        for text, (seq, user) in acked.items():
            assert seq in by_seq, f"acknowledged chat {text} (seq {seq}) missing from {room}"
            assert by_seq[seq]["message"] == text and by_seq[seq]["senderId"] == user, \
                (by_seq[seq], text)


# ---------------------------------------------------------------- a node dies

def test_kill_9_of_a_node_under_load(start_server, redis, tmp_path):
    """Three nodes, three rooms, a member of every room on every node, all
    chatting. One node is killed with SIGKILL: its members leave every room
    (one user_left to each survivor, sent by a surviving node once the dead
    node's heartbeat is older than redis_node_timeout_s), the survivors keep
    chatting, and every chat acknowledged before the kill is in history."""
    timeout_s = 3
    survivors = start_nodes(start_server, redis, 2, redis_node_timeout_s=timeout_s)
    doomed = Server(tmp_path / "doomed", node_settings(redis, survivors[0],
                                                       redis_node_timeout_s=timeout_s))
    nodes = survivors + [doomed]
    rooms = ["ka", "kb", "kc"]
    try:
        wait_ready(doomed)

        async def main():
            loop = asyncio.get_running_loop()
            clients = []
            for room in rooms:
                for i, node in enumerate(nodes):
                    clients.append(await Client.open(node, f"{room}-n{i}", room))
            dead = [c for c in clients if c.node is doomed]
            alive = [c for c in clients if c.node is not doomed]
            start = await warm_up(clients)
            stop = asyncio.Event()
            tasks = [asyncio.ensure_future(chatter(c, stop)) for c in clients]

            # load before the kill: every client has a few acknowledged chats
            deadline = time.time() + 30
            while time.time() < deadline and (min(len(c.acked) for c in clients) < 10):
                await asyncio.sleep(0.1)
            assert min(len(c.acked) for c in clients) >= 10, [len(c.acked) for c in clients]
            acked_before = {c.user: dict(c.acked) for c in clients}
            doomed.proc.kill()
            killed_at = loop.time()
            doomed.proc.wait()

            # every survivor hears each dead member of its room leave, once
            want = {c.user: {d.user for d in dead if d.room == c.room} for c in alive}
            deadline = time.time() + timeout_s + 20
            while time.time() < deadline and any(
                    {d["userId"] for d, _ in c.left} != want[c.user] for c in alive):
                await asyncio.sleep(0.1)
            for c in alive:
                assert {d["userId"] for d, _ in c.left} == want[c.user], (c.user, c.left)
            bound = max(t for c in alive for _, t in c.left) - killed_at
            # the others kept chatting: acknowledged chats after the kill
            counts = {c.user: len(c.acked) for c in alive}
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), OUTCOME_TIMEOUT + 10)
            await asyncio.sleep(0.5)  # the last chats reach every survivor
            for c in alive:
                assert len(c.acked) > counts[c.user], c.user
                assert [o for _, o in c.outcomes if o != "ack"] == [], (c.user, c.outcomes[-5:])
                assert c.errors == [] and not c.closed, (c.user, c.errors)
                for d, _ in c.left:
                    assert d["roomId"] == c.room
            for c in dead:
                assert c.closed

            # history, read on a survivor: no gap, every acknowledged chat
            # (the dead node's before the kill, the survivors' all along)
            hist, acked_by_room = {}, {r: {} for r in rooms}
            for c in alive:
                if c.room not in hist:
                    hist[c.room] = await history(c, c.room)
                for text, (seq, _) in c.acked.items():
                    acked_by_room[c.room][text] = (seq, c.user)
            for c in dead:
                for text, (seq, _) in acked_before[c.user].items():
                    acked_by_room[c.room][text] = (seq, c.user)
            check_history(hist, acked_by_room)
            # each survivor saw every chat of its room live, once, in order
            for c in alive:
                seqs = [m["seq"] for m in c.chats]
                assert seqs == [m["seq"] for m in hist[c.room] if m["seq"] > start[c.room]], c.user

            # the counts forget the dead members
            async def counts_ok():
                for c in alive:
                    rl = await request(c, {"type": "room_list"}, "room_list")
                    if {r["roomId"]: r["activeUsers"] for r in rl["rooms"]} != \
                            {r: 2 for r in rooms}:
                        return False
                return True
            deadline = time.time() + 10
            while not await counts_ok():
                assert time.time() < deadline, "room counts still hold the dead node's members"
                await asyncio.sleep(0.2)
            for c in alive:
                await c.close()
            return bound, sum(len(c.outcomes) for c in clients)

        bound, sent = asyncio.run(asyncio.wait_for(main(), 120))
        print(f"\nuser_left of every dead member at most {bound:.2f} s after kill -9 "
              f"(redis_node_timeout_s = {timeout_s}); {sent} chats sent")
        assert "redis_worker_gone" in "".join(n.log() for n in survivors)
        for n in survivors:
            assert readyz(n)[0] == 200
    finally:
        doomed.stop()


# ---------------------------------------------------------------- Redis dies

def test_redis_kill_9_and_restart_under_load(start_server, persistent_redis):
    """Redis (appendonly yes, appendfsync always) killed with SIGKILL while
    six clients on three nodes chat, then started again on the same port
    and files. No node crashes; every chat sent gets its ack or "Failed to
    store message" (those sent during the outage get the error); /readyz
    says 503 during the outage and 200 after; chatting resumes; a client
    that resumes with sinceSeq on another node gets every chat after it
    once, in order; and every acknowledged chat is in history."""
    redis = persistent_redis
    nodes = start_nodes(start_server, redis, 3)
    room = "rr"

    async def main():
        loop = asyncio.get_running_loop()

        async def in_thread(fn, *args):
            return await loop.run_in_executor(None, fn, *args)

        writers = [await Client.open(nodes[i % 3], f"w{i}", room) for i in range(6)]
        reader = await Client.open(nodes[0], "reader", room)
        start = (await warm_up(writers + [reader]))[room]
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(chatter(c, stop)) for c in writers]

        deadline = time.time() + 30
        while time.time() < deadline and min(len(c.acked) for c in writers) < 10:
            await asyncio.sleep(0.1)
        assert min(len(c.acked) for c in writers) >= 10, [len(c.acked) for c in writers]
        # the reader has seen every chat up to `since`, in order, when Redis dies
        since = start + len(reader.chats)
        assert [m["seq"] for m in reader.chats] == list(range(start + 1, since + 1))
        sent_before = {c.user: len(c.outcomes) for c in writers}

        redis.kill()
        for node in nodes:
            body = await in_thread(wait_ready, node, 503, 20.0)
            assert "redis" in body["reason"], body
        # every writer sees its chats fail during the outage
        deadline = time.time() + 20
        while time.time() < deadline and any(STORE_FAILED not in c.errors for c in writers):
            await asyncio.sleep(0.1)
        assert all(STORE_FAILED in c.errors for c in writers), [c.errors for c in writers]
        for node in nodes:
            assert node.proc.poll() is None, node.log()[-2000:]

        await in_thread(redis.start)
        for node in nodes:
            await in_thread(wait_ready, node, 200, 30.0)
        sent_down = {c.user: len(c.outcomes) for c in writers}
        # chatting resumes: each writer gets acks again
        deadline = time.time() + 30
        while time.time() < deadline and any(
                not any(o == "ack" for _, o in c.outcomes[sent_down[c.user]:]) for c in writers):
            await asyncio.sleep(0.1)
        # a client that left before the outage resumes on another node
        # while the others still chat
        resumed = await Client.open(nodes[1], "reader", room, sinceSeq=since)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), OUTCOME_TIMEOUT + 10)
        await asyncio.sleep(0.5)

        hist = await history(writers[0], room)
        stored = {m["message"]: (m["seq"], m["messageId"]) for m in hist}
        for c in writers:
            after = c.outcomes[sent_down[c.user]:]
            assert any(o == "ack" for _, o in after), (c.user, after[-5:])
            # never silent: every chat got its ack or the error
            assert all(o in ("ack", "error") for _, o in c.outcomes), \
                (c.user, [(t, o, stored.get(t)) for t, o in c.outcomes if o not in ("ack", "error")])
            assert set(c.errors) == {STORE_FAILED}, (c.user, c.errors)
            assert all(o == "ack" for _, o in c.outcomes[:sent_before[c.user]]), c.user

        last = hist[-1]["seq"]
        # the resume: since+1 .. last, each once, in order
        seqs = [m["seq"] for m in resumed.chats]
        assert seqs == list(range(since + 1, last + 1)), (since, last, seqs)
        acked = {text: (seq, c.user) for c in writers for text, (seq, _) in c.acked.items()}
        check_history({room: hist}, {room: acked})
        # the reader that stayed got chats in order, never twice
        seqs = [m["seq"] for m in reader.chats]
        assert seqs == sorted(set(seqs)), seqs
        for c in writers + [reader, resumed]:
            await c.close()
        errors = sum(1 for c in writers for _, o in c.outcomes if o == "error")
        return sum(len(c.outcomes) for c in writers), errors, last

    sent, errors, last = asyncio.run(asyncio.wait_for(main(), 150))
    print(f"\n{sent} chats sent, {errors} got '{STORE_FAILED}', {last} in history")
    for node in nodes:
        assert node.proc.poll() is None
