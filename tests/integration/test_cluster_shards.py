"""engine = "redis" with redis_urls: rooms and users sharded over two real
redis-server processes by consistent hashing, three wsgate nodes (issue
13, docs/redis.md#sharding-over-several-redis-servers). Rooms and users
are chosen, with the ring computed here as the engine computes it, to land
on each shard; the tests then look in each Redis for what must (and must
not) be there. One shard killed: its rooms fail fast, the other shard's
keep working; restarted: everything resumes."""
import asyncio
import bisect
import os
import subprocess

import pytest

from conftest import WSGATE_BIN
from test_cluster import cluster, redis  # noqa: F401 (fixtures)
from test_cluster import (BEARER, PRESENCE, Redis, connect, expect_no_chat, expect_quiet,
                          readyz, recv_json, recv_type, run, send, settle, until, wait_ready)

M64 = (1 << 64) - 1
POINTS = 160  # REDIS_RING_POINTS


def ring_hash(data):
    """src/common/hash.h's hash_bytes from HASH_FNV_BASIS: FNV-1a 64, then
    MurmurHash3's finaliser."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & M64
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & M64
    h ^= h >> 33
    return h


class Ring:
    """The shard ring of src/engine/redis_ring.c over servers "host:port/db"."""

    def __init__(self, names):
        self.points = sorted((ring_hash(f"{n}#{k}".encode()), i)
                             for i, n in enumerate(names) for k in range(POINTS))
        self.hashes = [h for h, _ in self.points]

    def shard(self, key):
        i = bisect.bisect_left(self.hashes, ring_hash(key.encode()))
        return self.points[i % len(self.points)][1]

    def pick(self, prefix, shard, n=1):
        """n keys prefix<k> that land on shard."""
        out, k = [], 0
        while len(out) < n:
            if self.shard(f"{prefix}{k}") == shard:
                out.append(f"{prefix}{k}")
            k += 1
        return out


def resp(raw):
    """Parse one RESP reply (bytes) into Python values."""
    def parse(i):
        t, end = raw[i:i + 1], raw.index(b"\r\n", i)
        line = raw[i + 1:end]
        i = end + 2
        if t in (b"+", b"-"):
            return line.decode(), i
        if t == b":":
            return int(line), i
        if t == b"$":
            n = int(line)
            if n < 0:
                return None, i
            return raw[i:i + n], i + n + 2
        if t == b"*":
            out = []
            for _ in range(int(line)):
                v, i = parse(i)
                out.append(v)
            return out, i
        raise ValueError(raw)
    return parse(0)[0]


def q(redis, *args):
    return resp(redis.command(*args))


@pytest.fixture
def shards():
    rs = [Redis(), Redis()]
    yield rs
    for r in rs:
        r.stop()


@pytest.fixture
def sharded(start_server, shards):
    """sharded(n) -> (nodes, ring): n nodes on both shards (the first listed
    is the home Redis), sharing one key file, two workers each."""
    urls = [f"redis://127.0.0.1:{r.port}" for r in shards]
    ring = Ring([f"127.0.0.1:{r.port}/0" for r in shards])

    def start(n=3, **settings):
        nodes = []
        for i in range(n):
            s = {"engine": "redis", "redis_urls": "[" + ", ".join(f'"{u}"' for u in urls) + "]",
                 "worker_threads": 2, "management_bearer_key": BEARER, **settings}
            if i > 0:
                s["kms_key_file"] = os.path.join(nodes[0].data_dir, "keys.json")
            nodes.append(start_server(settings=s, name=f"node{i}-"))
        for node in nodes:
            wait_ready(node)
        return nodes, ring
    return start


async def chat_everywhere(members, room, texts):
    """Send texts from the members in turn; every member gets every chat, in
    one seq order. Returns the seqs."""
    for k, t in enumerate(texts):
        await send(members[k % len(members)], {"type": "chat", "message": t})
    orders = []
    for ws in members:
        got = []
        while len(got) < len(texts):
            msg = await recv_json(ws)
            if msg["type"] == "chat":
                assert msg["data"]["roomId"] == room, msg
                got.append((msg["data"]["seq"], msg["data"]["message"]))
        orders.append(got)
    assert all(o == orders[0] for o in orders), orders
    assert sorted(m for _, m in orders[0]) == sorted(texts)
    return [s for s, _ in orders[0]]


async def recv_presence(ws, typ, user):
    """The next `typ` event about user (earlier presence of others skipped)."""
    while True:
        data = await recv_type(ws, typ, skip=tuple(t for t in PRESENCE if t != typ) + ("chat",))
        if data["userId"] == user:
            return data


def test_rooms_live_on_their_shard_and_work_across_nodes(sharded, shards):
    nodes, ring = sharded(3)
    rooms = [ring.pick("room-", 0)[0], ring.pick("room-", 1)[0]]

    async def main():
        members = {}
        for room in rooms:
            members[room] = []
            for i in range(3):
                ws, _ = await connect(nodes[i], userId=f"{room}-u{i}", roomId=room)
                members[room].append(ws)
        await settle([ws for room in rooms for ws in members[room]])
        for room in rooms:
            seqs = await chat_everywhere(members[room], room, [f"{room}-m{k}" for k in range(8)])
            assert seqs == list(range(1, 9))
        # each room's keys on its own shard only
        for s, room in enumerate(rooms):
            other = shards[1 - s]
            assert q(shards[s], "GET", f"wsgate:{{{room}}}:seq") == b"8"
            assert q(shards[s], "XLEN", f"wsgate:{{{room}}}:log") == 8
            assert q(other, "EXISTS", f"wsgate:{{{room}}}:seq", f"wsgate:{{{room}}}:log") == 0
            # the channel: subscribed on the room's server by one worker per node
            numsub = q(shards[s], "PUBSUB", "NUMSUB", f"wsgate:0:room:{room}")
            assert numsub[1] == 3, numsub
            assert q(other, "PUBSUB", "NUMSUB", f"wsgate:0:room:{room}")[1] == 0
        # node-level keys on the home Redis (the first listed) only
        assert q(shards[0], "ZCARD", "wsgate:workers") == 6
        assert q(shards[1], "EXISTS", "wsgate:workers") == 0
        member_keys = q(shards[0], "KEYS", "wsgate:w:*:members")
        assert sum(q(shards[0], "HLEN", k) for k in member_keys) == 6  # the 6 connections
        assert q(shards[1], "KEYS", "wsgate:w:*:members") == []

        # history from every node
        for room in rooms:
            for node in nodes:
                ws, _ = await connect(node, userId="reader", roomId=room)
                await send(ws, {"type": "history", "limit": 3, "beforeSeq": 8})
                page = await recv_type(ws, "history", skip=PRESENCE)
                assert [m["seq"] for m in page["messages"]] == [5, 6, 7]
                assert page["hasMore"] is True
                await ws.close()

        # resume on another node: no gap, no duplicate, then live once
        room = rooms[1]
        a0, a2 = members[room][0], members[room][2]
        await a2.close()
        await chat_everywhere(members[room][:2], room, ["r0", "r1", "r2"])
        back, _ = await connect(nodes[0], userId=f"{room}-u2", roomId=rooms[0])
        await send(back, {"type": "join_room", "roomId": room, "sinceSeq": 8})
        replay = []
        while len(replay) < 3:
            msg = await recv_json(back)
            if msg["type"] == "chat":
                replay.append((msg["data"]["seq"], msg["data"]["message"]))
        assert [s for s, _ in replay] == [9, 10, 11]
        await send(a0, {"type": "chat", "message": "live"})
        live = await recv_type(back, "chat", skip=PRESENCE)
        assert live["seq"] == 12 and live["message"] == "live"
        await expect_no_chat(back)

        # presence and room counts cross nodes in both shards' rooms
        for room in rooms:
            newcomer, _ = await connect(nodes[2], userId=f"new-{room}", roomId=room)
            j = await recv_presence(members[room][0], "user_joined", f"new-{room}")
            assert j["roomId"] == room
            await newcomer.close()
            await recv_presence(members[room][0], "user_left", f"new-{room}")

        async def counts_everywhere():
            await send(members[rooms[0]][1], {"type": "room_list"})
            data = await recv_type(members[rooms[0]][1], "room_list", skip=PRESENCE)
            got = {r["roomId"]: r["activeUsers"] for r in data["rooms"]}
            return got.get(rooms[0]) == 3 and got.get(rooms[1]) == 3
        assert await until(counts_everywhere)
        for ws in [back] + [w for r in rooms for w in members[r]]:
            await ws.close()
    run(main())


def test_private_messages_go_to_the_users_channel_on_its_shard(sharded, shards):
    nodes, ring = sharded(3)
    users = [ring.pick("user-", 0)[0], ring.pick("user-", 1)[0]]

    async def main():
        sender, _ = await connect(nodes[0], userId="sender", roomId="pm")
        targets = []
        for s, user in enumerate(users):
            # a connection of the user on node 1 and another on node 2
            t1, _ = await connect(nodes[1], userId=user, roomId="pm")
            t2, _ = await connect(nodes[2], userId=user, roomId="pm")
            targets.append((t1, t2))
        await settle([sender] + [t for pair in targets for t in pair])
        for s, user in enumerate(users):
            # the user's channel: on the user's server, one subscriber per
            # node that has the user (nodes 1 and 2), none on node 0
            channel = f"wsgate:0:user:{user}"
            assert q(shards[s], "PUBSUB", "NUMSUB", channel)[1] == 2
            assert q(shards[1 - s], "PUBSUB", "NUMSUB", channel)[1] == 0
            assert q(shards[0], "PUBSUB", "NUMSUB", "wsgate:0:user:sender")[1] + \
                q(shards[1], "PUBSUB", "NUMSUB", "wsgate:0:user:sender")[1] == 1  # node 0
            # the user's counts: on its server only
            hashes = q(shards[s], "KEYS", "wsgate:w:*:users")
            assert sum(1 for k in hashes if q(shards[s], "HGET", k, user)) == 2
            for k in q(shards[1 - s], "KEYS", "wsgate:w:*:users"):
                assert q(shards[1 - s], "HGET", k, user) is None

            async def try_send():
                await send(sender, {"type": "private_message", "targetUserId": user,
                                    "message": f"psst {user}"})
                try:
                    return await recv_type(targets[s][0], "private_message", timeout=1.5,
                                           skip=PRESENCE)
                except asyncio.TimeoutError:
                    err = await recv_type(sender, "error", skip=PRESENCE)  # not known on node 0 yet
                    assert err["message"] == "Target user not found or offline"
                    return None
            pm = await until(try_send)
            assert pm and pm["senderId"] == "sender" and pm["message"] == f"psst {user}"
            got = await recv_type(targets[s][1], "private_message", skip=PRESENCE)
            assert got["message"] == f"psst {user}"
            for t in targets[s]:
                await expect_quiet(t)  # once per connection
            # one sender's private messages arrive in the order sent
            for k in range(40):
                await send(sender, {"type": "private_message", "targetUserId": user,
                                    "message": f"n{k}"})
            for t in targets[s]:
                got = [(await recv_type(t, "private_message"))["message"] for _ in range(40)]
                assert got == [f"n{k}" for k in range(40)]
        for t1, t2 in targets:
            await expect_quiet(t1, 0.1)
        # the last connection of a user on a node unsubscribes that node
        await targets[1][0].close()

        async def one_left():
            return q(shards[1], "PUBSUB", "NUMSUB", f"wsgate:0:user:{users[1]}")[1] == 1
        assert await until(one_left)
        await send(sender, {"type": "private_message", "targetUserId": users[1],
                            "message": "still there"})
        assert (await recv_type(targets[1][1], "private_message",
                                skip=PRESENCE))["message"] == "still there"
        await send(sender, {"type": "private_message", "targetUserId": "nobody",
                            "message": "hi"})
        err = await recv_type(sender, "error", skip=PRESENCE)
        assert err["message"] == "Target user not found or offline"
        await sender.close()
        for t1, t2 in targets:
            await t1.close()
            await t2.close()
    run(main())


def test_one_shard_down_fails_only_its_rooms_then_resumes(sharded, shards):
    nodes, ring = sharded(3)
    up_room, down_room = ring.pick("room-", 0)[0], ring.pick("room-", 1)[0]
    down = shards[1]

    async def main():
        ups = [(await connect(nodes[i], userId=f"up{i}", roomId=up_room))[0] for i in range(3)]
        downs = [(await connect(nodes[i], userId=f"dn{i}", roomId=down_room))[0]
                 for i in range(3)]
        await settle(ups + downs)
        await chat_everywhere(downs, down_room, ["before"])
        down.stop()
        for node in nodes:
            body = wait_ready(node, want=503)
            assert f"127.0.0.1:{down.port}/0" in body["reason"], body
        # the down shard's rooms fail fast, with the documented error
        await send(downs[1], {"type": "chat", "message": "lost?"})
        err = await recv_type(downs[1], "error", skip=PRESENCE)
        assert err["message"] == "Failed to store message"
        # the other shard's rooms keep working on every node
        seqs = await chat_everywhere(ups, up_room, [f"during{k}" for k in range(6)])
        assert seqs == list(range(1, 7))
        for ws in downs:
            await expect_no_chat(ws, 0.2)
        # back on the same port: every node reconnects and resubscribes
        down.__init__(down.port)
        for node in nodes:
            wait_ready(node, timeout=20)

        async def delivered():
            await send(downs[0], {"type": "chat", "message": "after"})
            while True:
                msg = await recv_json(downs[0])
                if msg["type"] == "error":
                    return False
                if msg["type"] == "chat" and msg["data"]["message"] == "after":
                    return True
        assert await until(delivered, timeout=10)
        for ws in downs[1:]:
            got = await recv_type(ws, "chat", skip=PRESENCE)
            assert got["message"] == "after"
        # this Redis kept nothing: its room's counter started again
        assert q(down, "GET", f"wsgate:{{{down_room}}}:seq") == b"1"
        await chat_everywhere(ups, up_room, ["still"])
        for ws in ups + downs:
            await ws.close()
    run(main())


def test_check_validates_redis_urls(tmp_path):
    def check(*sets):
        args = [WSGATE_BIN, "check"]
        for s in sets:
            args += ["--set", s]
        return subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=tmp_path)
    r = check("engine=redis", 'redis_urls=["redis://127.0.0.1:7001", "redis://127.0.0.1:7002/1"]')
    assert r.returncode == 0, r.stderr
    r = check("engine=redis", 'redis_urls=["redis://127.0.0.1:7001", "redis://127.0.0.1:7001/0"]')
    assert r.returncode != 0
    assert "redis_urls lists the Redis server 127.0.0.1:7001/0 twice" in r.stderr + r.stdout
    # rediss:// shards are checked like the others (their files must be readable)
    r = check("engine=redis", 'redis_urls=["redis://127.0.0.1:7001", "rediss://127.0.0.1:7002"]',
              "redis_tls_ca_file=/nonexistent/ca.pem")
    assert r.returncode != 0 and "redis_tls_ca_file" in r.stderr + r.stdout
    r = check("engine=redis", "redis_url=redis://a", 'redis_urls=["redis://b"]')
    assert r.returncode != 0 and "not both" in r.stderr + r.stdout
    r = check("engine=redis")
    assert r.returncode != 0
    assert "requires redis_url or redis_urls" in r.stderr + r.stdout


# Known bug, not yet found (2026-12-03): on one Redis a resuming reader
# sometimes gets the chat sent at the moment it joined a second time, after
# all the others (3 of 8 runs on cc2a1dc, 6 of 10 on 13fc41c, on a quiet
# machine; 0 of 11 an hour earlier). Suspect: the [rjoin] fill against a
# resume in src/engine/redis.c. Not strict: the test still runs, and an
# XPASS says the bug did not show.
RESUME_FLOW_DUPLICATE = pytest.mark.xfail(
    strict=False, reason="known bug: a duplicate of the chat sent at the join (redis.c [rjoin])")


@pytest.mark.parametrize("servers", [pytest.param(1, marks=RESUME_FLOW_DUPLICATE), 2])
def test_resume_with_a_large_last_page_while_chats_flow(request, servers):
    """A resume's last page is big (read in many pieces from its socket)
    while chats keep coming on the pub/sub socket: chats published after
    the page was read may be delivered before the page's reply is in. The
    session must still get every chat once, in order. On one Redis
    (redis_url) and on the second of two shards."""
    if servers == 1:
        nodes, room = request.getfixturevalue("cluster")(2), "flow"
    else:
        nodes, ring = request.getfixturevalue("sharded")(2)
        room = ring.pick("flow-", 1)[0]
    big, flow = 30, 300
    total = big + flow

    async def main():
        writer, _ = await connect(nodes[0], userId="writer", roomId=room)
        for k in range(big):
            await send(writer, {"type": "chat", "message": f"b{k}-" + "x" * 8000})
        for _ in range(big):
            await recv_type(writer, "chat", skip=PRESENCE)

        async def write_flow():
            for k in range(flow):
                await send(writer, {"type": "chat", "message": f"f{k}"})
                if k % 20 == 0:
                    await asyncio.sleep(0.002)
        task = asyncio.ensure_future(write_flow())
        readers = []
        for i in range(6):
            ws, _ = await connect(nodes[1], userId=f"r{i}", roomId=f"elsewhere{i}")
            await send(ws, {"type": "join_room", "roomId": room, "sinceSeq": 0})
            readers.append(ws)
            await asyncio.sleep(0.01)
        await task
        for ws in readers:
            seqs = []
            while not seqs or seqs[-1] < total:
                msg = await recv_json(ws, timeout=15)
                if msg["type"] == "chat":
                    seqs.append(msg["data"]["seq"])
            assert seqs == list(range(1, total + 1)), \
                [s for s in range(1, total + 1) if s not in seqs][:20]
            await expect_no_chat(ws)
            await ws.close()
        await writer.close()
    run(main())


def test_a_dead_nodes_members_leave_rooms_on_every_shard(sharded, shards, tmp_path):
    """A node killed without a word is reaped through the home Redis; its
    members' rooms on both shards get user_left, and its counts go from
    every shard."""
    from conftest import Server
    (a_node,), ring = sharded(1, redis_node_timeout_s=2)
    rooms = [ring.pick("mortal-", 0)[0], ring.pick("mortal-", 1)[0]]
    bobs = [ring.pick("bob-", 1)[0], ring.pick("bob-", 0)[0]]  # not on their room's shard
    urls = "[" + ", ".join(f'"redis://127.0.0.1:{r.port}"' for r in shards) + "]"
    doomed = Server(tmp_path / "doomed", {
        "engine": "redis", "redis_urls": urls, "worker_threads": 2, "redis_node_timeout_s": 2,
        "kms_key_file": os.path.join(a_node.data_dir, "keys.json")})
    try:
        wait_ready(doomed)

        def counted(shard, kind, key):
            return sum(int(q(shard, "HGET", k, key) or 0)
                       for k in q(shard, "KEYS", f"wsgate:w:*:{kind}"))

        async def main():
            alices = [(await connect(a_node, userId=f"alice{s}", roomId=rooms[s]))[0]
                      for s in (0, 1)]
            for s in (0, 1):
                await connect(doomed, userId=bobs[s], roomId=rooms[s])
                assert (await recv_presence(alices[s], "user_joined", bobs[s]))
            for s in (0, 1):
                assert counted(shards[s], "rooms", rooms[s]) == 2
                assert counted(shards[1 - s], "users", bobs[s]) == 1
            doomed.proc.kill()
            doomed.proc.wait()
            for s in (0, 1):
                left = await recv_type(alices[s], "user_left", timeout=10)
                assert left["userId"] == bobs[s] and left["roomId"] == rooms[s]

            async def forgotten():
                return all(counted(shards[s], "rooms", rooms[s]) == 1 and
                           counted(shards[1 - s], "users", bobs[s]) == 0 for s in (0, 1))
            assert await until(forgotten)
            for ws in alices:
                await expect_quiet(ws, 1.0)  # once
                await ws.close()
        run(main())
        assert "redis_worker_gone" in a_node.log()
    finally:
        doomed.stop()
