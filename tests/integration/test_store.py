"""The durable store: history, resume after reconnect, idempotent publish,
TTL, point-in-time recovery and backup, encryption at rest and key
rotation, and the integrity check at start."""
import asyncio
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import time

import websockets

from conftest import WSGATE_BIN

DB = "websocket-api-dev.db"


async def connect(srv, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    ws = await websockets.connect(srv.url + ("?" + q if q else ""), open_timeout=5, max_size=None)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws


async def recv_type(ws, kind, timeout=5):
    deadline = time.time() + timeout
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.time())))
        if msg["type"] == kind:
            return msg


async def chat(ws, text, **extra):
    await ws.send(json.dumps(dict({"type": "chat", "message": text}, **extra)))
    return (await recv_type(ws, "chat"))["data"]


def cli(*args, check=True):
    res = subprocess.run([WSGATE_BIN, *args], capture_output=True, text=True, timeout=30)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_history_pages_and_membership(start_server):
    srv = start_server()

    async def main():
        a = await connect(srv, userId="hist", roomId="h")
        sent = [await chat(a, f"m{i}") for i in range(60)]
        await a.send(json.dumps({"type": "history"}))
        h = (await recv_type(a, "history"))["data"]
        assert h["roomId"] == "h" and h["hasMore"] is True
        assert [m["seq"] for m in h["messages"]] == list(range(11, 61))  # newest 50, oldest first
        assert h["messages"][-1] == sent[-1]
        await a.send(json.dumps({"type": "history", "limit": 20, "beforeSeq": 11}))
        h = (await recv_type(a, "history"))["data"]
        assert [m["seq"] for m in h["messages"]] == list(range(1, 11)) and h["hasMore"] is False
        for bad, text in (({"limit": 501}, "limit must be an integer from 1 to 500"),
                          ({"limit": 0}, "limit must be an integer from 1 to 500"),
                          ({"beforeSeq": "x"}, "beforeSeq must be a positive integer"),
                          ({"roomId": "other"}, "Not a member of room other")):
            await a.send(json.dumps(dict({"type": "history"}, **bad)))
            err = await recv_type(a, "error")
            assert err["data"]["message"] == text
        await a.close()
    asyncio.run(main())


def test_resume_has_no_gap_and_no_duplicate_while_others_publish(start_server):
    srv = start_server()
    total = 400

    async def publisher(ws):
        for i in range(total):
            await ws.send(json.dumps({"type": "chat", "message": f"p{i}"}))
            if i % 50 == 0:
                await asyncio.sleep(0.01)

    async def main():
        pub = await connect(srv, userId="pub", roomId="live")
        first = await chat(pub, "before")  # seq 1
        task = asyncio.create_task(publisher(pub))
        await asyncio.sleep(0.05)
        # a client that saw seq 1 reconnects while messages keep coming
        sub = await connect(srv, userId="sub", roomId="live", sinceSeq=first["seq"])
        seqs = []
        deadline = time.time() + 20
        while len(seqs) < total and time.time() < deadline:
            msg = json.loads(await asyncio.wait_for(sub.recv(), 10))
            if msg["type"] == "chat":
                seqs.append(msg["data"]["seq"])
        await task
        assert seqs == list(range(2, total + 2)), "gap or duplicate in the resumed stream"
        # join_room with sinceSeq replays too
        await sub.send(json.dumps({"type": "join_room", "roomId": "elsewhere"}))
        await recv_type(sub, "user_joined")
        await sub.send(json.dumps({"type": "join_room", "roomId": "live", "sinceSeq": total - 2}))
        got = [(await recv_type(sub, "chat"))["data"]["seq"] for _ in range(3)]
        assert got == [total - 1, total, total + 1]
        await pub.close()
        await sub.close()
    asyncio.run(main())


def test_idempotent_publish(start_server):
    srv = start_server(settings={"enable_encryption": "false"})

    async def main():
        a = await connect(srv, userId="retry", roomId="idem")
        b = await connect(srv, userId="watcher", roomId="idem")
        await recv_type(a, "user_joined")
        first = await chat(a, "only once", clientMessageId="c-1")
        assert (await recv_type(b, "chat"))["data"] == first
        # the client reconnects and retries: it gets the original back
        await a.close()
        a = await connect(srv, userId="retry", roomId="idem")
        again = await chat(a, "only once", clientMessageId="c-1")
        assert again == first
        other = await chat(a, "new one", clientMessageId="c-2")
        assert other["seq"] == first["seq"] + 1
        # the watcher saw "only once" a single time
        seen = []
        try:
            while True:
                msg = json.loads(await asyncio.wait_for(b.recv(), 0.5))
                if msg["type"] == "chat":
                    seen.append(msg["data"]["message"])
        except asyncio.TimeoutError:
            pass
        assert seen == ["new one"]
        await a.close()
        await b.close()
    asyncio.run(main())
    con = sqlite3.connect(os.path.join(srv.data_dir, DB))
    assert con.execute("SELECT COUNT(*) FROM messages WHERE clientMessageId = 'c-1'").fetchone()[0] == 1


def test_ttl_sweeps_and_never_returns_expired(start_server, tmp_path):
    data = tmp_path / "ttl"
    srv = start_server(settings={"enable_encryption": "false", "message_ttl_days": 1},
                       args=["--data-dir", str(data)])

    async def fresh():
        a = await connect(srv, userId="ttl", roomId="t")
        await chat(a, "fresh")
        await a.close()
    asyncio.run(fresh())
    # rows written three days ago (as an older server would have left them)
    con = sqlite3.connect(str(data / DB))
    old = int(time.time()) - 3 * 86400
    with con:
        for i in range(1200):
            con.execute("INSERT INTO messages(roomId, seq, messageId, senderId, senderName, message, timestamp)"
                        " VALUES ('t', ?, ?, 'ttl', 'ttl', 'old', ?)", (1000 + i, f"old-{i}", old))

    async def ask():
        a = await connect(srv, userId="ttl", roomId="t")
        await a.send(json.dumps({"type": "history", "limit": 500}))
        h = (await recv_type(a, "history"))["data"]
        await a.close()
        return h
    h = asyncio.run(ask())
    assert all(m["message"] != "old" for m in h["messages"])
    deadline = time.time() + 10
    while time.time() < deadline:
        left = con.execute("SELECT COUNT(*) FROM messages WHERE message = 'old'").fetchone()[0]
        if left == 0:
            break
        time.sleep(0.2)
    assert left == 0, f"{left} expired rows left"
    assert con.execute("SELECT COUNT(*) FROM messages WHERE message = 'fresh'").fetchone()[0] == 1


def test_point_in_time_restore_and_backup(start_server, tmp_path):
    data = tmp_path / "pitr"
    srv = start_server(args=["--data-dir", str(data)])

    async def send(texts):
        a = await connect(srv, userId="pitr", roomId="p")
        for t in texts:
            await chat(a, t)
        await a.close()
    asyncio.run(send(["a1", "a2"]))
    time.sleep(1.1)
    cut = int(time.time())
    time.sleep(1.1)
    asyncio.run(send(["b1"]))
    time.sleep(0.3)
    out = tmp_path / "restored.db"
    cli("restore", "--data-dir", str(data), "--to", str(cut), "--out", str(out))
    backup = tmp_path / "backup.db"
    cli("backup", "--data-dir", str(data), "--out", str(backup))
    for path, want in ((out, 2), (backup, 3)):
        con = sqlite3.connect(str(path))
        assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == want
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    # ISO-8601 works too, and a time before the window is refused clearly
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cut))
    res = cli("restore", "--data-dir", str(data), "--to", iso, "--out", str(tmp_path / "iso.db"))
    assert f"as of {cut} ({iso}) into" in res.stdout, res.stdout
    res = cli("restore", "--data-dir", str(data), "--to", iso[:-1], "--out", str(tmp_path / "local.db"),
              check=False)
    assert res.returncode == 2 and "(UTC)" in res.stderr, res.stderr
    # a time still to come is no promise about it: the output says what it is
    res = cli("restore", "--data-dir", str(data), "--to", "2099-01-01T00:00:00Z", "--out",
              str(tmp_path / "future.db"))
    at = int(res.stdout.split(" as of ")[1].split()[0])
    assert at <= time.time() and "--to is in the future" in res.stdout, res.stdout
    res = cli("restore", "--data-dir", str(data), "--to", "1000", "--out", str(tmp_path / "x.db"), check=False)
    assert res.returncode == 1 and "before the recovery window" in res.stderr
    # wsgate serves the restored file (with the same keys)
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(out, served / DB)
    shutil.copy(data / "keys.json", served / "keys.json")
    os.chmod(served / "keys.json", 0o600)
    srv2 = start_server(args=["--data-dir", str(served)], name="restored")

    async def history():
        a = await websockets.connect(srv2.url + "?userId=pitr&roomId=p", open_timeout=5)
        await asyncio.wait_for(a.recv(), 5)
        await a.send(json.dumps({"type": "history"}))
        h = (await recv_type(a, "history"))["data"]
        await a.close()
        return [m["message"] for m in h["messages"]]
    assert asyncio.run(history()) == ["a1", "a2"]


def test_encryption_at_rest_and_rotation(start_server, tmp_path):
    data = tmp_path / "enc"
    srv = start_server(args=["--data-dir", str(data)])
    keys = data / "keys.json"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600

    async def send(text):
        a = await connect(srv, userId="secret-user", username="Secret%20Name", roomId="e")
        d = await chat(a, text)
        await a.close()
        return d
    asyncio.run(send("top secret body"))
    raw = (data / DB).read_bytes() + (data / (DB + "-wal")).read_bytes()
    for plain in (b"top secret body", b"secret-user", b"Secret Name"):
        assert plain not in raw
    con = sqlite3.connect(str(data / DB))
    # the compact row: sender, name and text are one sealed value
    kinds = con.execute("SELECT typeof(message), typeof(senderId), typeof(senderName) FROM messages").fetchall()
    assert kinds == [("blob", "null", "null")]
    # rotation: new writes use the new key, old rows stay readable
    out = cli("rotate-key", "--data-dir", str(data))
    assert "key 2 is now active" in out.stdout
    assert srv.stop() == 0
    srv2 = start_server(args=["--data-dir", str(data)], name="rotated")
    srv2.data_dir = str(data)
    srv = srv2
    asyncio.run(send("after rotation"))

    async def history():
        a = await connect(srv, userId="reader", roomId="e")
        await a.send(json.dumps({"type": "history"}))
        h = (await recv_type(a, "history"))["data"]
        await a.close()
        return [m["message"] for m in h["messages"]]
    assert asyncio.run(history()) == ["top secret body", "after rotation"]
    ids = sorted(r[0] for r in con.execute("SELECT substr(message, 2, 4) FROM messages"))
    assert ids == [b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"]
    assert srv.stop() == 0
    # a wrong key file is a clear start-up error, never garbage
    other = start_server(args=["--data-dir", str(tmp_path / "other")], name="other")
    assert other.stop() == 0
    shutil.copy(tmp_path / "other" / "keys.json", keys)
    res = subprocess.run([WSGATE_BIN, "serve", "--port", "0", "--data-dir", str(data)], capture_output=True,
                         text=True, timeout=10)
    assert res.returncode != 0 and "cannot be decrypted" in res.stderr, res.stderr
    # a configured key file that is missing is an error too
    res = subprocess.run([WSGATE_BIN, "serve", "--port", "0", "--data-dir", str(tmp_path / "nokey"),
                          "--set", f"kms_key_file={tmp_path / 'missing.json'}"], capture_output=True,
                         text=True, timeout=10)
    assert res.returncode != 0 and "missing.json" in res.stderr


def test_corrupt_store_is_a_clear_startup_error(tmp_path):
    data = tmp_path / "bad"
    data.mkdir()
    with open(data / DB, "wb") as f:
        f.write(b"SQLite format 3\x00" + os.urandom(8192))
    res = subprocess.run([WSGATE_BIN, "serve", "--port", "0", "--data-dir", str(data)], capture_output=True,
                         text=True, timeout=10)
    assert res.returncode != 0
    assert "integrity" in res.stderr or "not a usable database" in res.stderr or "malformed" in res.stderr, res.stderr
