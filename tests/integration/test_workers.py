"""API mode on several workers, at 2, 4 and 8 workers on whatever cores the
machine has (the `nworkers` fixture): one event loop per thread on one
port, every connection owned by the worker that accepted it, each worker
with its own hub, and what crosses workers (room fan-out, presence,
private messages, the management API, committed chats from the store
thread) going through the engine: the sharded directory says which workers
have members, and deliveries are posted by id to each worker's inbox.

The kernel spreads connections over the workers (SO_REUSEPORT); each access
log line names the worker that handled it, and every test checks that its
connections really landed on several workers (or on every worker, where the
test says so) before drawing conclusions."""
import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest
import websockets

import wsraw

RECV_TIMEOUT = 5.0
BEARER = "bearer-workers-test-0123456789"
WORKERS = {"worker_threads": 2, "logging_level": "INFO", "management_bearer_key": BEARER}


@pytest.fixture(params=[2, 4, 8], ids=lambda n: f"{n}workers")
def nworkers(request):
    return request.param


@pytest.fixture
def start_workers(start_server, nworkers):
    """start_workers(**settings): a server with `nworkers` workers; its
    `nworkers` attribute says how many."""
    def start(**settings):
        srv = start_server(settings=dict(WORKERS, worker_threads=nworkers, **settings))
        srv.nworkers = nworkers
        return srv
    return start


async def connect(server, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    ws = await websockets.connect(server.url + ("?" + q if q else ""), open_timeout=5,
                                  close_timeout=2, max_size=None)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    assert welcome["type"] == "welcome", welcome
    return ws, welcome["data"]["connectionId"]


async def recv_json(ws, timeout=RECV_TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws, typ, timeout=RECV_TIMEOUT):
    """Skip presence messages until one of type `typ`; return it."""
    deadline = time.time() + timeout
    while True:
        msg = await recv_json(ws, max(0.05, deadline - time.time()))
        if msg["type"] == typ:
            return msg
        assert msg["type"] in ("user_joined", "user_left"), msg


async def recv_skip(ws, typ, timeout=RECV_TIMEOUT):
    """Skip anything until a message of type `typ`; return it."""
    deadline = time.time() + timeout
    while True:
        msg = await recv_json(ws, max(0.05, deadline - time.time()))
        if msg["type"] == typ:
            return msg


def access_log(server):
    """The access-log lines ($connect, messages, $disconnect) so far."""
    lines = []
    path = os.path.join(server.data_dir, "wsgate.log")
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("msg") == "access" or "routeKey" in rec:
                lines.append(rec)
    return lines


def workers_of(server, conn_ids, timeout=5.0):
    """Map each connection id to the worker whose loop accepted it."""
    deadline = time.time() + timeout
    while True:
        seen = {r["connectionId"]: r["worker"] for r in access_log(server)
                if r.get("routeKey") == "$connect" and "worker" in r}
        if all(c in seen for c in conn_ids) or time.time() > deadline:
            return {c: seen.get(c) for c in conn_ids}
        time.sleep(0.05)


def assert_spread(server, conn_ids):
    """The connections sit on at least two of the server's workers; returns
    id -> worker."""
    where = workers_of(server, conn_ids)
    used = set(where.values())
    assert None not in used, f"no $connect line for some connections: {where}"
    assert used <= set(range(server.nworkers)), where
    assert len(used) >= 2, f"connections not on several workers: {where}"
    return where


async def connect_until(server, at_least, query, need=2, limit=200):
    """Open connections, the i-th with the query `query(i)` (a dict), until
    at least `at_least` are open and they sit on at least `need` workers;
    returns ([(ws, id)], id -> worker). The kernel's spread is random, so
    a fixed count could land on one worker: connections are added until
    the access log shows the spread, `limit` of them at most."""
    conns = []
    while True:
        batch = max(1, at_least - len(conns)) if len(conns) < at_least else server.nworkers
        for _ in range(batch):
            conns.append(await connect(server, **query(len(conns))))
        where = workers_of(server, [cid for _, cid in conns])
        used = set(where.values())
        assert None not in used, f"no $connect line for some connections: {where}"
        if len(conns) >= at_least and len(used) >= need:
            return conns, where
        assert len(conns) < limit, f"{limit} connections never covered {need} workers: {where}"


async def connect_spread(server, n, prefix, room):
    """Open at least n connections (user and name from prefix and i, room(i)
    their room) on several workers; returns [(ws, id)]."""
    conns, _ = await connect_until(
        server, n, lambda i: dict(userId=f"{prefix}{i}", username=f"{prefix.upper()}{i}",
                                  roomId=room(i)))
    assert_spread(server, [cid for _, cid in conns])
    return conns


async def connect_every_worker(server, prefix, room, at_least=0):
    """Open connections (users prefix0, prefix1, ... in `room`) until every
    worker has one and at least `at_least` are open; returns ([(ws, id)],
    id -> worker)."""
    return await connect_until(
        server, at_least, lambda i: dict(userId=f"{prefix}{i}", username=f"{prefix.upper()}{i}",
                                         roomId=room), need=server.nworkers)


def one_per_worker(where):
    """A connection id of each worker that has one: [id], by worker."""
    firsts = {}
    for cid, w in where.items():
        firsts.setdefault(w, cid)
    return [firsts[w] for w in sorted(firsts)]


async def wait_for(ws, typ, user_id, timeout=RECV_TIMEOUT):
    """Read ws until a message of type typ about user_id arrives."""
    deadline = time.time() + timeout
    while True:
        msg = await recv_json(ws, max(0.05, deadline - time.time()))
        if msg["type"] == typ and msg["data"]["userId"] == user_id:
            return msg


async def close_all(conns):
    await asyncio.gather(*(ws.close() for ws, _ in conns))


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def is_throttled(msg):
    return msg["type"] == "error" and msg["data"].get("code") == "THROTTLED"


# ------------------------------------------------------------ room fan-out

def test_room_fanout_crosses_workers_in_seq_order(start_workers):
    """Members on every worker get every chat of publishers on every
    worker, sent concurrently, each member's seq run strictly increasing
    with no gap."""
    srv = start_workers()

    async def main():
        members, where = await connect_every_worker(srv, "u", "lobby", at_least=16)
        by_id = dict((cid, ws) for ws, cid in members)
        publishers = [by_id[cid] for cid in one_per_worker(where)]
        per_pub = max(12, 100 // len(publishers))
        total = len(publishers) * per_pub

        async def publish(ws, p):
            for k in range(per_pub):
                await ws.send(json.dumps({"type": "chat", "message": f"p{p}-{k}"}))

        async def collect(ws):
            got = []
            while len(got) < total:
                msg = await recv_type(ws, "chat", timeout=15)
                got.append(msg["data"])
            return got

        collectors = [asyncio.create_task(collect(ws)) for ws, _ in members]
        await asyncio.gather(*(publish(ws, p) for p, ws in enumerate(publishers)))
        results = await asyncio.gather(*collectors)
        want = sorted(f"p{p}-{k}" for p in range(len(publishers)) for k in range(per_pub))
        for got in results:
            seqs = [d["seq"] for d in got]
            assert seqs == list(range(seqs[0], seqs[0] + total)), seqs
            assert sorted(d["message"] for d in got) == want
        # One order for everyone: the same message at the same seq.
        first = {d["seq"]: d["message"] for d in results[0]}
        for got in results[1:]:
            assert {d["seq"]: d["message"] for d in got} == first
        await close_all(members)

    run(main())


# ------------------------------------------------------------ presence

def test_presence_crosses_workers(start_workers):
    """user_joined and user_left reach the room's members on every worker,
    from joiners on every worker: join_room, leave_room, a clean close and
    a dropped TCP connection."""
    srv = start_workers()

    async def main():
        hall, _ = await connect_every_worker(srv, "h", "hall")
        movers, mwhere = await connect_every_worker(srv, "m", "side")
        by_id = dict((cid, ws) for ws, cid in movers)
        uid_of = {cid: f"m{i}" for i, (_, cid) in enumerate(movers)}

        async def everyone_sees(typ, uid, extra=()):
            watchers = [w for w, _ in hall] + list(extra)
            await asyncio.gather(*(wait_for(ws, typ, uid) for ws in watchers))

        for n, cid in enumerate(one_per_worker(mwhere)):
            ws, uid = by_id[cid], uid_of[cid]
            await ws.send(json.dumps({"type": "join_room", "roomId": "hall"}))
            await everyone_sees("user_joined", uid, [ws])
            await ws.send(json.dumps({"type": "leave_room"}))
            await everyone_sees("user_left", uid, [ws])
            await ws.send(json.dumps({"type": "join_room", "roomId": "hall"}))
            await everyone_sees("user_joined", uid, [ws])
            if n % 2:
                ws.transport.abort()  # no close frame: the server sees EOF
            else:
                await ws.close()
            await everyone_sees("user_left", uid)
        await close_all(hall + movers)

    run(main())


def test_typing_indicator_crosses_workers_but_not_to_its_sender(start_workers):
    """typing_indicator from a member on each worker reaches every other
    member, on every worker, and never its sender (the sender's id is the
    `except` that travels with the post)."""
    srv = start_workers()

    async def main():
        conns, where = await connect_every_worker(srv, "ty", "typing")
        by_id = {cid: (ws, f"ty{i}") for i, (ws, cid) in enumerate(conns)}
        for cid in one_per_worker(where):
            ws, uid = by_id[cid]
            await ws.send(json.dumps({"type": "typing_indicator", "isTyping": True}))
            # The sender's own share would be queued before this answer.
            await ws.send(json.dumps({"type": "room_list"}))
            while True:
                msg = await recv_json(ws)
                assert msg["type"] != "typing_indicator", f"{uid} got its own typing: {msg}"
                if msg["type"] == "room_list":
                    break

            async def sees(other):
                while True:
                    msg = await recv_json(other)
                    if msg["type"] == "typing_indicator":
                        assert msg["data"]["userId"] == uid and msg["data"]["isTyping"] is True
                        assert msg["data"]["roomId"] == "typing"
                        return

            await asyncio.gather(*(sees(w) for w, c in conns if c != cid))
        await close_all(conns)

    run(main())


# ------------------------------------------------------------ room_list

def test_room_list_counts_and_pages_across_workers(start_workers):
    """room_list (and GET @rooms) count every worker's members, page by
    `after`/`limit` the same from every worker, and follow leaves and
    disconnects."""
    srv = start_workers()
    nrooms, per_room = 7, 4

    async def ask(ws, **req):
        await ws.send(json.dumps(dict(type="room_list", **req)))
        return (await recv_type(ws, "room_list"))["data"]

    async def pages(ws, limit):
        got, after, n = [], None, 0
        while True:
            data = await ask(ws, limit=limit, **({"after": after} if after else {}))
            got += [(r["roomId"], r["activeUsers"]) for r in data["rooms"]]
            n += 1
            assert len(data["rooms"]) <= limit
            if not data["hasMore"]:
                assert "nextAfter" not in data, data
                return got, n
            after = data["nextAfter"]
            assert after == data["rooms"][-1]["roomId"], data

    async def main():
        conns, where = await connect_every_worker(srv, "l", "lobby", at_least=nrooms * per_room)
        for i, (ws, _) in enumerate(conns[:nrooms * per_room]):
            await ws.send(json.dumps({"type": "join_room", "roomId": f"r{i % nrooms:02d}"}))
            await wait_for(ws, "user_joined", f"l{i}")
        rest = len(conns) - nrooms * per_room
        want = [(f"r{k:02d}", per_room) for k in range(nrooms)]
        if rest:
            want = [("lobby", rest)] + want
        by_id = dict((cid, ws) for ws, cid in conns)
        askers = [by_id[cid] for cid in one_per_worker(where)]
        for ws in askers:
            assert await pages(ws, 3) == (want, (len(want) + 2) // 3)
            assert await pages(ws, 1000) == (want, 1)
        st, body = mgmt_rooms(srv, "GET")
        assert st == 200
        assert [(r["roomId"], r["activeUsers"]) for r in json.loads(body)["rooms"]] == want
        # One member of each room leaves (by leave_room or by closing), and
        # every member of r06 goes: the counts follow on every worker. A
        # leaver's own user_left comes after its worker updated the
        # directory; a disconnect is seen through a member of the room.
        alive = [True] * len(conns)
        for k in range(nrooms):
            i = k + nrooms  # the second member of room k
            ws = conns[i][0]
            if k % 2:
                await ws.send(json.dumps({"type": "leave_room"}))
                await wait_for(ws, "user_left", f"l{i}")
            else:
                await ws.close()
                alive[i] = False
                await wait_for(conns[k][0], "user_left", f"l{i}")
        for i in range(nrooms - 1, nrooms * per_room, nrooms):
            if alive[i]:
                await conns[i][0].close()
                alive[i] = False
        want = [(f"r{k:02d}", per_room - 1) for k in range(nrooms - 1)]
        if rest:
            want = [("lobby", rest)] + want
        askers = {}
        for i, (ws, cid) in enumerate(conns):
            if alive[i]:
                askers.setdefault(where[cid], ws)
        askers = list(askers.values())
        assert len(askers) >= 2
        deadline = time.time() + 10
        while True:  # nobody sees r06's last member go: poll for it
            got, _ = await pages(askers[0], 2)
            if got == want or time.time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert got == want
        for ws in askers:
            assert (await pages(ws, 2))[0] == want
        await close_all([c for i, c in enumerate(conns) if alive[i]])

    run(main())


# ------------------------------------------------------------ private messages

def test_private_messages_between_workers(start_workers):
    srv = start_workers()

    async def main():
        conns = await connect_spread(srv, 10, "pm", lambda i: f"solo{i}")
        n = len(conns)
        for i, (ws, _) in enumerate(conns):
            for j in range(n):
                if j != i:
                    await ws.send(json.dumps({"type": "private_message", "targetUserId": f"pm{j}",
                                              "message": f"{i}->{j}"}))
        for j, (ws, _) in enumerate(conns):
            got = set()
            while len(got) < n - 1:
                msg = await recv_json(ws)
                assert msg["type"] != "error", msg
                if msg["type"] == "private_message":
                    got.add(msg["data"]["message"])
            assert got == {f"{i}->{j}" for i in range(n) if i != j}
        await close_all(conns)

    run(main())


async def private_to(sender, target, text):
    await sender.send(json.dumps({"type": "private_message", "targetUserId": target,
                                  "message": text}))


def test_private_messages_to_a_user_on_several_workers(start_workers):
    """A user with connections on several workers gets each private message
    on every one of them, from senders on every worker; as its connections
    go it gets them on those left, and once all are gone the sender hears
    the user is offline."""
    srv = start_workers()

    async def main():
        senders, swhere = await connect_every_worker(srv, "snd", "s-room")
        multi, _ = await connect_until(
            srv, 4, lambda k: dict(userId="multi", username="Multi", roomId=f"m{k}"))
        assert_spread(srv, [cid for _, cid in multi])

        async def expect(texts, conns):
            for ws, _ in conns:
                got = set()
                while len(got) < len(texts):
                    msg = await recv_json(ws)
                    assert msg["type"] == "private_message", msg
                    assert msg["data"]["targetUserId"] == "multi"
                    got.add(msg["data"]["message"])
                assert got == set(texts)

        texts = []
        for i, (ws, _) in enumerate(senders):
            texts.append(f"from-{i}")
            await private_to(ws, "multi", texts[-1])
        await expect(texts, multi)
        # Keep one connection of one worker: the others close.
        keep = multi[0]
        for ws, cid in multi[1:]:
            await ws.close()
        # Senders on every worker reach the one left.
        texts = []
        for i, (ws, _) in enumerate(senders):
            texts.append(f"again-{i}")
            await private_to(ws, "multi", texts[-1])
        await expect(texts, [keep])
        await keep[0].close()
        # Offline now: NOT_FOUND to the sender (its worker may learn of the
        # close a moment after the client's close handshake ended).
        deadline = time.time() + 10
        while True:
            await private_to(senders[0][0], "multi", "nobody")
            msg = await recv_json(senders[0][0])
            if msg["type"] == "error":
                assert msg["data"]["code"] == "NOT_FOUND", msg
                assert msg["data"]["message"] == "Target user not found or offline", msg
                break
            assert time.time() < deadline, msg
            await asyncio.sleep(0.05)
        await close_all(senders)

    run(main())


# ------------------------------------------------------------ management API

def mgmt(srv, method, path, body=None):
    """An @connections call: path is "{id}" or "?query"."""
    sep = "" if path.startswith("?") else "/"
    url = f"http://127.0.0.1:{srv.port}/{srv.stage}/@connections{sep}{path}"
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Authorization": f"Bearer {BEARER}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def mgmt_rooms(srv, method, room=None, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.port}/{srv.stage}/@rooms" + (f"/{room}" if room else ""),
        data=body, method=method, headers={"Authorization": f"Bearer {BEARER}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def in_thread(fn, *args, **kw):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw))


def test_management_reaches_connections_on_every_worker(start_workers):
    """@connections POST, GET and DELETE for connections owned by every
    worker, whichever worker accepts the HTTP request; GET @connections
    lists them all with their rooms."""
    srv = start_workers()

    async def main():
        conns, where = await connect_every_worker(srv, "m", "ops", at_least=10)
        st, body = await in_thread(mgmt, srv, "GET", "?roomId=ops")
        assert st == 200
        listed = {c["connectionId"]: c for c in json.loads(body)["connections"]}
        assert set(listed) == {cid for _, cid in conns}
        assert all(c["roomId"] == "ops" for c in listed.values())
        for ws, cid in conns:
            for k in range(3):
                st, _ = await in_thread(mgmt, srv, "POST", cid, f"push-{k}".encode())
                assert st == 200
            for k in range(3):
                while True:
                    raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
                    if raw == f"push-{k}":
                        break
            st, body = await in_thread(mgmt, srv, "GET", cid)
            assert st == 200 and json.loads(body)["identity"]["sourceIp"] == "127.0.0.1"
        for ws, cid in conns:
            st, _ = await in_thread(mgmt, srv, "DELETE", cid)
            assert st == 204
            # Gone at once, whichever worker answers, before the owner's
            # close handshake ends.
            for method, body in (("POST", b"late"), ("GET", None), ("DELETE", None)):
                st, _ = await in_thread(mgmt, srv, method, cid, body)
                assert st == 410, (method, st)
        for ws, _ in conns:
            with pytest.raises(websockets.ConnectionClosed) as e:
                while True:
                    await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
            assert e.value.rcvd.code == 1000
        st, _ = await in_thread(mgmt, srv, "POST", conns[0][1], b"late")
        assert st == 410
        st, body = await in_thread(mgmt, srv, "GET", "?roomId=ops")
        assert st == 200 and json.loads(body)["connections"] == []

    run(main())


def test_management_limit_exceeded_on_any_worker(start_workers):
    """POST @connections answers 429 once the target's unsent bytes pass
    max_queued_bytes, whichever worker owns it and whichever answers: the
    frames posted to the owner's inbox count before its loop queues them.
    The connection stays open."""
    srv = start_workers(max_queued_bytes=256 * 1024)
    # Raw clients that never read, with small receive buffers, until they
    # sit on two workers at least.
    raws, ids = [], []
    try:
        while len(raws) < 4 or len(set(workers_of(srv, ids).values())) < 2:
            assert len(raws) < 100, workers_of(srv, ids)
            s, rest = wsraw.handshake(srv.port, rcvbuf=4096)
            c = wsraw.Conn(s, rest)
            _, welcome = c.recv_message()
            raws.append(c)
            ids.append(json.loads(welcome)["data"]["connectionId"])
        where = assert_spread(srv, ids)
        targets = one_per_worker(where)[:2]
        body = b"z" * (100 * 1024)
        for cid in targets:
            for _ in range(400):
                st, _ = mgmt(srv, "POST", cid, body)
                if st == 429:
                    break
                assert st == 200, st
            else:
                raise AssertionError(f"queue of {cid} never reported full")
            st, info = mgmt(srv, "GET", cid)
            assert st == 200 and json.loads(info)["identity"]["sourceIp"] == "127.0.0.1"
        # Another connection is not affected.
        st, _ = mgmt(srv, "POST", [i for i in ids if i not in targets][0], b"small")
        assert st == 200
    finally:
        for c in raws:
            c.close()


def test_rooms_listing_and_broadcast_across_workers(start_workers):
    """POST @rooms/{id} reaches the room's members on every worker once
    each and nobody else, and counts them; GET @rooms counts every
    worker's members."""
    srv = start_workers()

    async def main():
        members, _ = await connect_every_worker(srv, "a", "ann", at_least=8)
        others, _ = await connect_every_worker(srv, "o", "other")
        st, body = await in_thread(mgmt_rooms, srv, "GET")
        assert st == 200
        assert json.loads(body)["rooms"] == [{"roomId": "ann", "activeUsers": len(members)},
                                             {"roomId": "other", "activeUsers": len(others)}]
        for k in range(3):
            st, body = await in_thread(mgmt_rooms, srv, "POST", "ann", f"news-{k}".encode())
            assert st == 200
            assert json.loads(body) == {"roomId": "ann", "delivered": len(members)}
        st, body = await in_thread(mgmt_rooms, srv, "POST", "nobody-here", b"void")
        assert st == 200 and json.loads(body) == {"roomId": "nobody-here", "delivered": 0}
        # Then a marker to everyone, each through its own connection id:
        # members see news-0..2 exactly once, in order, before the marker;
        # the others see only the marker.
        for ws, cid in members + others:
            st, _ = await in_thread(mgmt, srv, "POST", cid, b"marker")
            assert st == 200
        for group, want in ((members, ["news-0", "news-1", "news-2"]), (others, [])):
            for ws, _ in group:
                got = []
                while True:
                    raw = await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
                    if raw == "marker":
                        break
                    if not raw.startswith("{"):
                        got.append(raw)
                assert got == want
        await close_all(members + others)

    run(main())


# ------------------------------------------------------------ history and resume

def test_history_and_resume_across_workers(start_workers):
    """While members on several workers chat into a room, a client keeps
    dropping its connection and resuming from the last seq it saw
    (?sinceSeq=S on connect, or join_room with sinceSeq), landing on
    whichever worker the kernel picks: over all its connections it sees
    every seq once, in order, with no gap. history from a member on each
    worker returns the same messages."""
    srv = start_workers()

    async def main():
        pubs = await connect_spread(srv, max(3, srv.nworkers), "pub", lambda i: "log")
        per_pub = min(60, 480 // len(pubs))  # history answers up to 500 at once
        total = len(pubs) * per_pub
        stop = asyncio.Event()

        async def publish(ws, p):
            for k in range(per_pub):
                await ws.send(json.dumps({"type": "chat", "message": f"p{p}-{k}"}))
                if k % 5 == 4:
                    await asyncio.sleep(0.01)

        async def drain(ws):
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.2)
                except asyncio.TimeoutError:
                    pass

        draining = [asyncio.create_task(drain(ws)) for ws, _ in pubs]
        publishing = asyncio.gather(*(publish(ws, p) for p, (ws, _) in enumerate(pubs)))
        seen, resumer_ids, rounds = [], [], 0
        while True:
            last = seen[-1] if seen else 0
            if rounds % 2 == 0:
                ws, cid = await connect(srv, userId="res", roomId="log", sinceSeq=last)
            else:
                ws, cid = await connect(srv, userId="res", roomId="elsewhere")
                await ws.send(json.dumps({"type": "join_room", "roomId": "log",
                                          "sinceSeq": last}))
            resumer_ids.append(cid)
            rounds += 1
            finished = publishing.done()
            # Read a few (or, once publishing is over, up to the end).
            want = total if finished else min(total, len(seen) + 15)
            while len(seen) < want:
                msg = await recv_json(ws, 10)
                assert msg["type"] != "history_gap", msg
                if msg["type"] == "chat":
                    assert msg["data"]["roomId"] == "log"
                    seen.append(msg["data"]["seq"])
                    assert seen == list(range(1, len(seen) + 1)), seen[-20:]
            if len(seen) == total:
                if len(set(workers_of(srv, resumer_ids).values())) >= 2 or rounds > 40:
                    await ws.close()
                    break
            if rounds % 3 == 0:
                ws.transport.abort()
            else:
                await ws.close()
        await publishing
        assert seen == list(range(1, total + 1))
        where = workers_of(srv, resumer_ids)
        assert len(set(where.values())) >= 2, f"the resumer never changed worker: {where}"
        # Nothing more arrives after the last seq: no duplicate at the end.
        ws, _ = await connect(srv, userId="res", roomId="log", sinceSeq=total)
        await ws.send(json.dumps({"type": "history", "limit": 500}))
        msg = await recv_type(ws, "history")
        hist = msg["data"]["messages"]
        assert [m["seq"] for m in hist] == list(range(1, total + 1))
        assert sorted(m["message"] for m in hist) == sorted(
            f"p{p}-{k}" for p in range(len(pubs)) for k in range(per_pub))
        await ws.close()
        stop.set()
        await asyncio.gather(*draining)
        # history from a member on each worker: the same list.
        by_worker = {}
        for wsp, cid in pubs:
            by_worker.setdefault(workers_of(srv, [cid])[cid], wsp)
        assert len(by_worker) >= 2
        for wsp in by_worker.values():
            await wsp.send(json.dumps({"type": "history", "limit": 500}))
            h = (await recv_skip(wsp, "history", 10))["data"]  # past chats still unread
            assert h["messages"] == hist and h["hasMore"] is False
        await close_all(pubs)

    run(main(), timeout=90)


def test_long_resume_in_pages_while_chats_flow(start_workers):
    """A resume longer than one replay page (500 stored messages) while
    members on several workers keep chatting: the pages and the live chats
    held back meanwhile add up to every seq once, in order."""
    srv = start_workers(max_queued_bytes=64 * 1024 * 1024)
    before, during = 1100, 300

    async def main():
        pubs = await connect_spread(srv, 2, "lp", lambda i: "long")
        stop = asyncio.Event()

        async def drain(ws):
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.2)
                except asyncio.TimeoutError:
                    pass

        async def publish(n, tag):
            for k in range(n):
                ws = pubs[k % len(pubs)][0]
                await ws.send(json.dumps({"type": "chat", "message": f"{tag}-{k}"}))
                if k % 50 == 49:
                    await asyncio.sleep(0.005)

        draining = [asyncio.create_task(drain(ws)) for ws, _ in pubs]
        await publish(before, "b")
        # Wait until the store has them all: a member's history shows the last.
        deadline = time.time() + 30
        while True:
            ws, _ = await connect(srv, userId="probe", roomId="long")
            await ws.send(json.dumps({"type": "history", "limit": 1}))
            last = (await recv_skip(ws, "history"))["data"]["messages"]
            await ws.close()
            if last and last[0]["seq"] == before:
                break
            assert time.time() < deadline, last
            await asyncio.sleep(0.1)
        ws, _ = await connect(srv, userId="late", roomId="long", sinceSeq=0)
        flowing = asyncio.create_task(publish(during, "d"))
        seen = []
        while len(seen) < before + during:
            msg = await recv_json(ws, 15)
            assert msg["type"] != "history_gap", msg
            if msg["type"] == "chat":
                seen.append(msg["data"]["seq"])
                assert seen[-1] == len(seen), seen[-10:]
        await flowing
        stop.set()
        await asyncio.gather(*draining)
        await ws.close()
        await close_all(pubs)

    run(main(), timeout=90)


def test_connections_per_address_exact_across_workers(start_workers):
    """max_connections_per_ip = N, N + 8 connects at once from 127.0.0.1
    landing on every worker: exactly N open, the rest get 429."""
    limit = 12
    srv = start_workers(max_connections_per_ip=limit)

    async def one(i):
        try:
            ws, cid = await connect(srv, userId=f"ip{i}", roomId="ip")
            return ws, cid
        except websockets.InvalidStatusCode as e:
            return e.status_code

    async def main():
        # The fixture's readiness probe is a socket from 127.0.0.1 too: it
        # waits in a worker's accept queue until that loop runs, and counts
        # while it is open. Have every worker serve (one connection at a
        # time) so that it is long gone before the burst.
        seen, n = set(), 0
        while seen != set(range(srv.nworkers)):
            assert n < 300, seen
            ws, cid = await connect(srv, userId=f"warm{n}", roomId="warm")
            await ws.close()
            seen.add(workers_of(srv, [cid])[cid])
            n += 1
        # A warm-up socket closed by the client is released by its worker a
        # loop turn later (slower still under TSan), so a burst can find one
        # slot still taken: then the burst is retried after a pause. Never
        # more than `limit` may open; fewer three times is a leak.
        for attempt in range(3):
            results = await asyncio.gather(*(one(i) for i in range(limit + 8)))
            opened = [r for r in results if isinstance(r, tuple)]
            refused = [r for r in results if not isinstance(r, tuple)]
            assert len(opened) <= limit and set(refused) <= {429}, refused
            if len(opened) == limit or attempt == 2:
                break
            await close_all(opened)
            await asyncio.sleep(1)
        assert len(opened) == limit and refused == [429] * 8, refused
        assert_spread(srv, [cid for _, cid in opened])
        await close_all(opened)

    run(main())


# ------------------------------------------------------------ throttles

async def send_and_count(ws, user_id, texts):
    """Send one chat per text; read until each is accounted for (its echo
    from the room, or a THROTTLED error); returns (passed, throttled)."""
    for t in texts:
        await ws.send(json.dumps({"type": "chat", "message": t}))
    passed = throttled = 0
    while passed + throttled < len(texts):
        msg = await recv_json(ws, 10)
        if is_throttled(msg):
            throttled += 1
        elif msg["type"] == "chat" and msg["data"]["senderId"] == user_id:
            passed += 1
        else:
            assert msg["type"] in ("chat", "user_joined", "user_left"), msg
    return passed, throttled


async def burst_from_every_worker(srv, conns, per_conn):
    """Every connection sends per_conn chats at once; returns (passed,
    throttled) over all of them, and the chats a watcher saw."""
    results = await asyncio.gather(*(
        send_and_count(ws, f"t{i}", [f"t{i}-{k}" for k in range(per_conn)])
        for i, (ws, _) in enumerate(conns)))
    return sum(p for p, _ in results), sum(t for _, t in results)


def test_route_burst_exact_across_workers(start_workers):
    """route_throttling chat {burst_limit = 20, rate_limit = 0}: chats sent
    at once from connections on every worker: exactly 20 pass in all, the
    rest are THROTTLED, and other routes are not limited."""
    burst = 20
    srv = start_workers(
        route_throttling=f"{{ chat = {{ burst_limit = {burst}, rate_limit = 0 }} }}")

    async def main():
        conns, _ = await connect_every_worker(srv, "t", "thr", at_least=6)
        per_conn = burst // len(conns) + 3
        passed, throttled = await burst_from_every_worker(srv, conns, per_conn)
        assert passed == burst and throttled == len(conns) * per_conn - burst, (passed, throttled)
        # Nothing more passes (the rate is 0), while room_list still does.
        assert await send_and_count(conns[-1][0], f"t{len(conns) - 1}", ["late"]) == (0, 1)
        await conns[0][0].send(json.dumps({"type": "room_list"}))
        await recv_skip(conns[0][0], "room_list")
        await close_all(conns)

    run(main())


def test_stage_burst_exact_across_workers(start_workers):
    """throttling_burst_limit = B, throttling_rate_limit = 0: each connect
    and each message takes one token of the one stage bucket, whichever
    worker takes it: after C connects exactly B - C chats pass."""
    srv = start_workers(throttling_burst_limit=100, throttling_rate_limit=0)

    async def main():
        conns, _ = await connect_every_worker(srv, "t", "thr", at_least=6)
        left = 100 - len(conns)
        per_conn = left // len(conns) + 4
        passed, throttled = await burst_from_every_worker(srv, conns, per_conn)
        assert passed == left and throttled == len(conns) * per_conn - left, (passed, throttled)
        # The bucket is empty: a further connect is refused with 429.
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await connect(srv, userId="late", roomId="thr")
        assert e.value.status_code == 429
        await close_all(conns)

    run(main())


# ------------------------------------------------------------ shutdown

def test_sigterm_closes_every_worker_with_1001(start_workers):
    """SIGTERM with clients on every worker: each gets close 1001 and the
    process exits 0."""
    srv = start_workers()

    async def main():
        conns, _ = await connect_every_worker(srv, "s", "bye", at_least=10)
        await conns[0][0].send(json.dumps({"type": "chat", "message": "last words"}))
        for ws, _ in conns:
            await recv_type(ws, "chat")
        srv.signal(signal.SIGTERM)
        codes = []
        for ws, _ in conns:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
            except websockets.ConnectionClosed as e:
                codes.append(e.code)
        assert codes == [1001] * len(conns)

    run(main())
    assert srv.proc.wait(timeout=10) == 0


def test_sigterm_while_chats_cross_workers(start_workers):
    """SIGTERM while members on every worker keep chatting into one room
    (committed chats still on their way to other workers' inboxes, posts
    arriving after a worker's loop stopped): every client still gets close
    1001 and the process exits 0 (no crash, no sanitizer report)."""
    srv = start_workers(max_queued_bytes=64 * 1024 * 1024)

    async def main():
        conns, where = await connect_every_worker(srv, "st", "storm")
        got = [0] * len(conns)
        # One chatter per worker, at a pace the readers keep up with: a
        # reader still behind the server's close frame when the close wait
        # (2 s) ends would see its connection reset (1006), not the 1001.
        chatters = [i for i, (_, cid) in enumerate(conns) if cid in one_per_worker(where)]

        async def chat(ws, i):
            k = 0
            try:
                while True:
                    await ws.send(json.dumps({"type": "chat", "message": f"{i}-{k}"}))
                    k += 1
                    await asyncio.sleep(0.02)
            except websockets.ConnectionClosed:
                pass

        async def read(ws, i):
            try:
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    got[i] += msg["type"] == "chat"
            except websockets.ConnectionClosed as e:
                return e.code

        chatting = [asyncio.create_task(chat(conns[i][0], i)) for i in chatters]
        reading = [asyncio.create_task(read(ws, i)) for i, (ws, _) in enumerate(conns)]
        deadline = time.time() + 20
        while min(got) < 20:  # traffic flows to every member first
            assert time.time() < deadline, got
            await asyncio.sleep(0.05)
        srv.signal(signal.SIGTERM)
        codes = await asyncio.gather(*reading)
        await asyncio.gather(*chatting)
        assert codes == [1001] * len(conns), codes

    run(main())
    assert srv.proc.wait(timeout=15) == 0


# ------------------------------------------------------------ membership churn

def test_no_chat_after_own_user_left_across_workers(start_workers):
    """Issue 18 item 8: members on both workers leave and rejoin a room
    while others chat into it. A member must never receive a chat of the
    room after its own user_left and before its next user_joined: every
    frame to a connection, presence or chat, reaches it in the order the
    application produced it, whichever worker produced it."""
    # Python reads slower than the server writes: a deep queue keeps the
    # readers from being cut as slow consumers, which is not what is tested.
    srv = start_workers(max_queued_bytes=64 * 1024 * 1024)
    room = "churn"
    duration = 12.0
    max_rounds = 500

    async def main():
        movers = await connect_spread(srv, 8, "mv", lambda i: room)
        chatters = [await connect(srv, userId=f"ch{i}", username=f"CH{i}", roomId=room)
                    for i in range(4)]
        stop = asyncio.Event()

        async def chat(ws, p):
            k = 0
            while not stop.is_set():
                for _ in range(5):
                    await ws.send(json.dumps({"type": "chat", "message": f"c{p}-{k}"}))
                    k += 1
                await asyncio.sleep(0.01)

        async def drain(ws):
            # The chatters read everything so that they are never slow.
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed:
                pass

        async def move(ws, user_id):
            """Leave and rejoin until told to stop; return (rounds, chats
            while in the room, chats between own user_left and user_joined)."""
            rounds = inside = stray = 0
            while not stop.is_set() and rounds < max_rounds:
                await ws.send(json.dumps({"type": "leave_room"}))
                while True:
                    msg = await recv_json(ws, 20)
                    if msg["type"] == "chat":
                        inside += 1
                    elif msg["type"] == "user_left" and msg["data"]["userId"] == user_id:
                        break
                    else:
                        assert msg["type"] in ("user_joined", "user_left", "typing_indicator"), msg
                await ws.send(json.dumps({"type": "join_room", "roomId": room}))
                while True:
                    msg = await recv_json(ws, 20)
                    if msg["type"] == "chat" and msg["data"]["roomId"] == room:
                        stray += 1
                    elif msg["type"] == "user_joined" and msg["data"]["userId"] == user_id:
                        break
                    else:
                        assert msg["type"] in ("user_joined", "user_left"), msg
                rounds += 1
            return rounds, inside, stray

        chatting = [asyncio.create_task(chat(ws, p)) for p, (ws, _) in enumerate(chatters)]
        draining = [asyncio.create_task(drain(ws)) for ws, _ in chatters]
        moving = [asyncio.create_task(move(ws, f"mv{i}")) for i, (ws, _) in enumerate(movers)]
        await asyncio.wait(moving, timeout=duration)
        stop.set()
        results = await asyncio.gather(*moving)
        await asyncio.gather(*chatting)
        draining += [asyncio.create_task(drain(ws)) for ws, _ in movers]
        await asyncio.gather(*(ws.close() for ws, _ in movers + chatters))
        await asyncio.gather(*draining)
        rounds = sum(r for r, _, _ in results)
        inside = sum(i for _, i, _ in results)
        stray = sum(s for _, _, s in results)
        # Not vacuous: members came and went many times while chats flowed.
        assert rounds >= 100 and inside >= 1000, results
        assert stray == 0, f"{stray} chats after their member's user_left ({rounds} rounds): {results}"

    asyncio.run(asyncio.wait_for(main(), 90))


@pytest.mark.parametrize("first,second", [(2, 2), (1, 2), (2, 1)])
def test_second_server_on_the_same_port_refused(start_server, tmp_path, first, second):
    """Issue 18 item 4: workers listen with SO_REUSEPORT, and a second wsgate
    of the same user on the same port used to join their group silently and
    take part of the traffic. It now exits 1 at once with a clear message,
    and the first one keeps serving every connection."""
    from conftest import WSGATE_BIN
    srv = start_server(settings=dict(WORKERS, worker_threads=first))
    srv.nworkers = first
    other_dir = tmp_path / "second"
    other_dir.mkdir()
    proc = subprocess.Popen([WSGATE_BIN, "serve", "--listen", "127.0.0.1", "--port", str(srv.port),
                             "--data-dir", str(other_dir), "--set", f"worker_threads={second}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("a second wsgate started on a port already in use")
    assert proc.returncode == 1
    assert f"port {srv.port} is already in use by another process" in err.decode(), err

    async def main():
        # 16, not 8: the kernel spreads by hash; 8 land on one worker about 1 time in 128.
        conns = [await connect(srv, userId=f"p{i}", roomId="still") for i in range(16)]
        for ws, _ in conns:
            await ws.close()
        if first == 2:
            assert_spread(srv, [cid for _, cid in conns])

    run(main())
