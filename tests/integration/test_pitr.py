"""Point-in-time recovery from the WAL archive (docs/storage.md): restores
exact to a time between two chats, across checkpoints (the WAL restarted
under the archive) and restarts; a damaged archive is reported at start and
refused by restore; pruning keeps the newest snapshot before the window;
an old pitr_log data directory switches over and keeps its recovery points;
commits not yet archived when the server is killed are archived at the
next start.

The archive's format is read (and, for pruning, written) here from its
description in src/store/archive.h, with the key file, as an auditor
would."""
import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import time
import zlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Server
from test_store import DB, chat, cli, connect
from test_store_migration import build_old, in_room


# ---- the archive format ----

def load_keys(data):
    ring = json.loads((data / "keys.json").read_text())
    return ring["active"], {k["id"]: base64.b64decode(k["key"]) for k in ring["keys"]}


def inflate(kind, data):
    """A record's raw bytes: zstd when the type has its top bit set (what
    wsgate writes), zlib otherwise (the first archives, still read)."""
    if kind & 0x80:
        return subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True,
                              check=True).stdout
    return zlib.decompress(data)


def read_archive(path, keys):
    """[(type, raw)] of an archive file, checking CRCs and seals."""
    blob = path.read_bytes()
    assert blob[:8] == b"WSGPITR1"
    key_id = struct.unpack(">I", blob[8:12])[0]
    out, off, index = [], 16, 0
    while off + 8 <= len(blob):
        n, crc = struct.unpack(">II", blob[off:off + 8])
        body = blob[off + 8:off + 8 + n]
        assert len(body) == n and zlib.crc32(body) == crc, f"{path.name} record {index}"
        if key_id:
            assert body[0] == 1 and struct.unpack(">I", body[1:5])[0] == key_id
            aad = f"wsgate.pitr:{path.name}:{index}".encode()
            body = AESGCM(keys[key_id]).decrypt(body[5:17], body[17:], body[:5] + aad)
        raw = inflate(body[0], body[5:])
        assert len(raw) == struct.unpack(">I", body[1:5])[0]
        out.append((chr(body[0] & 0x7F), raw))
        off += 8 + n
        index += 1
    assert off == len(blob), f"{path.name} has a torn tail"
    return out


def write_archive(path, key_id, key, records):
    parts = [b"WSGPITR1" + struct.pack(">II", key_id, 0)]
    for index, (kind, raw) in enumerate(records):
        inner = kind.encode() + struct.pack(">I", len(raw)) + zlib.compress(raw, 1)
        hdr = bytes([1]) + struct.pack(">I", key_id)
        nonce = os.urandom(12)
        aad = f"wsgate.pitr:{path.name}:{index}".encode()
        body = hdr + nonce + AESGCM(key).encrypt(nonce, inner, hdr + aad)
        parts.append(struct.pack(">II", len(body), zlib.crc32(body)) + body)
    path.write_bytes(b"".join(parts))


def files(data, prefix):
    return sorted(p for p in (data / "pitr").iterdir() if p.name.startswith(prefix))


def commit_salts(data, keys):
    salts = set()
    for p in files(data, "wal-"):
        for kind, raw in read_archive(p, keys):
            if kind in "CK":  # K: a second's commits, each page once
                salts.add(raw[8:16])
    return salts


# ---- helpers ----

def send(srv, room, texts, user="pitr"):
    async def go():
        a = await connect(srv, userId=user, roomId=room)
        for t in texts:
            await chat(a, t)
        await a.close()
    asyncio.run(go())


def pause_to_next_second():
    """Returns a whole second T with every write so far at or before T and
    every later write after it."""
    time.sleep(1.1)
    t = int(time.time())
    time.sleep(1.1)
    return t


def restored_texts(tmp_path, data, to, rooms, name):
    out = tmp_path / f"{name}.db"
    cli("restore", "--data-dir", str(data), "--to", str(to), "--out", str(out))
    con = sqlite3.connect(str(out))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    d = tmp_path / name
    d.mkdir()
    shutil.copy(out, d / DB)
    shutil.copy(data / "keys.json", d / "keys.json")
    os.chmod(d / "keys.json", 0o600)
    got = {}
    for room in rooms:
        res = cli("export", "--data-dir", str(d), "--room", room)
        got[room] = [json.loads(line)["message"] for line in res.stdout.splitlines() if line.strip()]
    return got


def restored_latest(tmp_path, data, rooms, name, done, timeout=20):
    """restored_texts up to now, beside the running server, until done(got)
    holds or timeout seconds have passed (then the last result, for the
    caller's assert): a second's commits reach the archive when the second
    has ended and the archiver thread has written its record, later than
    that on a loaded machine."""
    deadline = time.time() + timeout
    for i in itertools.count():
        got = restored_texts(tmp_path, data, int(time.time()) + 1, rooms, f"{name}{i}")
        if done(got) or time.time() > deadline:
            return got
        time.sleep(0.2)


# ---- tests ----

def test_restore_between_chats_across_checkpoints_and_restarts(start_server, tmp_path):
    data = tmp_path / "data"
    srv = start_server(args=["--data-dir", str(data)])
    send(srv, "p", ["a1", "a2"])
    cut1 = pause_to_next_second()
    # 18 MB of chats: the WAL passes its checkpoint size (4,096 pages),
    # is checkpointed and restarted from its first frame while chats go on
    big = "x" * 30000
    send(srv, "bulk", [f"{i}-{big}" for i in range(600)], user="bulk")
    send(srv, "p", ["b1"])
    cut2 = pause_to_next_second()
    send(srv, "p", ["b2"])
    assert srv.stop() == 0
    # a clean stop checkpoints and removes the WAL; the next start goes on
    # with the same snapshot (nothing wrote the file in between)
    srv = start_server(args=["--data-dir", str(data)], name="again")
    send(srv, "p", ["c1"])

    _, keys = load_keys(data)
    # c1's second is archived once that second has ended (per-second
    # records), a moment later on a loaded machine: wait for it, bounded
    deadline = time.time() + 20
    while len(commit_salts(data, keys)) < 3 and time.time() < deadline:
        time.sleep(0.2)
    assert len(commit_salts(data, keys)) >= 3, "the WAL was restarted under the archive"
    assert len(files(data, "snap-")) == 1
    con = sqlite3.connect(str(data / DB))
    assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'pitr_log'").fetchone()[0] == 0
    con.close()

    got = restored_texts(tmp_path, data, cut1, ["p", "bulk"], "r1")
    assert got == {"p": ["a1", "a2"], "bulk": []}
    got = restored_texts(tmp_path, data, cut2, ["p", "bulk"], "r2")
    assert got["p"] == ["a1", "a2", "b1"] and len(got["bulk"]) == 600
    assert got["bulk"][599] == f"599-{big}"
    # while the server runs: up to its last commit
    want = ["a1", "a2", "b1", "b2", "c1"]
    got = restored_latest(tmp_path, data, ["p"], "r3", lambda g: g["p"] == want)
    assert got["p"] == want


def test_damaged_archive_is_reported_and_refused(start_server, tmp_path):
    data = tmp_path / "data"
    srv = start_server(args=["--data-dir", str(data)])
    send(srv, "p", ["a1", "a2", "a3"])
    cut = pause_to_next_second()
    assert srv.stop() == 0
    _, keys = load_keys(data)
    # the segment after the first snapshot, which holds the chats
    seg = next(p for p in files(data, "wal-1-") if any(k in "CK" for k, _ in read_archive(p, keys)))
    blob = bytearray(seg.read_bytes())
    blob[40] ^= 0x5A  # inside the first record's body
    seg.write_bytes(bytes(blob))

    srv = start_server(args=["--data-dir", str(data)], name="again")
    log = srv.log()
    deadline = time.time() + 10
    while "pitr_damaged" not in log and time.time() < deadline:
        time.sleep(0.1)
        log = srv.log()
    assert "pitr_damaged" in log and seg.name in log, log
    res = cli("restore", "--data-dir", str(data), "--to", str(cut), "--out",
              str(tmp_path / "x.db"), check=False)
    assert res.returncode == 1 and seg.name in res.stderr and "damaged" in res.stderr, res.stderr
    assert not (tmp_path / "x.db").exists()
    # a fresh snapshot was taken at this start: later times restore again
    time.sleep(1.1)
    send(srv, "p", ["b1"])
    time.sleep(1.1)
    got = restored_texts(tmp_path, data, int(time.time()), ["p"], "r")
    assert got["p"] == ["a1", "a2", "a3", "b1"]


def test_pruning_keeps_the_newest_snapshot_before_the_window(start_server, tmp_path):
    # a real store's content, sealed as snapshots two and three days old
    first = tmp_path / "first"
    srv = start_server(args=["--data-dir", str(first)])
    send(srv, "p", ["old1"])
    time.sleep(0.3)
    assert srv.stop() == 0
    # its state (a copy) as the content of made-up older snapshots
    cli("backup", "--data-dir", str(first), "--out", str(tmp_path / "b.db"))
    active, keys = load_keys(first)
    content = (tmp_path / "b.db").read_bytes()
    records = [("S", struct.pack(">Q", off) + content[off:off + 65536])
               for off in range(0, len(content), 65536)]

    data = tmp_path / "data"
    (data / "pitr").mkdir(parents=True)
    shutil.copy(first / DB, data / DB)
    shutil.copy(first / "keys.json", data / "keys.json")
    os.chmod(data / "keys.json", 0o600)
    now_ms = int(time.time() * 1000)
    t1, t2 = now_ms - 3 * 86400000, now_ms - 2 * 86400000
    # and two earlier today: the server's snapshot at start makes them
    # redundant (the last of each day is kept, segments all stay)
    today = now_ms - now_ms % 86400000
    t3, t4 = today + (now_ms - today) // 3, today + 2 * (now_ms - today) // 3
    for gen, t in ((1, t1), (2, t2), (3, t3), (4, t4)):
        end = struct.pack(">QQ", len(content), t)
        write_archive(data / "pitr" / f"snap-{gen}-{t}.pitr", active, keys[active],
                      records + [("E", end)])
        write_archive(data / "pitr" / f"wal-{gen}-0-{t}.pitr", active, keys[active], [])
    (data / "pitr" / f"base-{t1 - 1000}-0.db").write_bytes(b"")

    srv = start_server(settings={"pitr_retention_days": "1"}, args=["--data-dir", str(data)],
                       name="pruned")
    send(srv, "p", ["new1"])
    time.sleep(0.3)
    names = {p.name for p in (data / "pitr").iterdir()}
    assert f"snap-1-{t1}.pitr" not in names and f"wal-1-0-{t1}.pitr" not in names, names
    assert f"snap-2-{t2}.pitr" in names and f"wal-2-0-{t2}.pitr" in names, names
    assert not any(n.startswith("base-") for n in names), names
    assert f"snap-3-{t3}.pitr" not in names and f"snap-4-{t4}.pitr" not in names, names
    assert f"wal-3-0-{t3}.pitr" in names and f"wal-4-0-{t4}.pitr" in names, names
    assert len([n for n in names if n.startswith("snap-")]) == 2, names
    # before the window: refused, naming where it starts
    res = cli("restore", "--data-dir", str(data), "--to", str((t1 + t2) // 2000), "--out",
              str(tmp_path / "x.db"), check=False)
    assert res.returncode == 1 and f"starts at {t2 // 1000}" in res.stderr, res.stderr
    # the anchor still restores the first second of the window
    got = restored_texts(tmp_path, data, t2 // 1000 + 60, ["p"], "w")
    assert got["p"] == ["old1"]
    got = restored_texts(tmp_path, data, t4 // 1000 + 1, ["p"], "t4")
    assert got["p"] == ["old1"]
    got = restored_latest(tmp_path, data, ["p"], "n", lambda g: g["p"] == ["old1", "new1"])
    assert got["p"] == ["old1", "new1"]


def test_old_pitr_log_directory_switches_and_keeps_its_recovery_points(start_server, tmp_path):
    data = tmp_path / "data"
    old, cut = build_old(data, True)
    srv = start_server(args=["--data-dir", str(data)])
    send(srv, "old", ["after the switch"], user="zoe")
    time.sleep(0.3)
    con = sqlite3.connect(str(data / DB))
    assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'pitr_log'").fetchone()[0] == 0
    con.close()
    assert files(data, "base-") and files(data, "snap-")
    assert "pitr_migrated" in srv.log()
    # before the switch: the old base and the old change log, now kept in
    # the first snapshot
    got = restored_texts(tmp_path, data, cut, ["old", "side"], "before")
    assert got == {"old": [m["message"] for m in in_room(old.messages, "old") if m["timestamp"] < cut],
                   "side": []}
    want = [m["message"] for m in in_room(old.messages, "old")] + ["after the switch"]
    got = restored_latest(tmp_path, data, ["old"], "after", lambda g: g["old"] == want)
    assert got["old"] == want


def test_commits_not_yet_archived_survive_a_kill(tmp_path):
    # kill -9 right after the chats: they were committed (the WAL has them)
    # but maybe not archived; the next start archives them from the WAL
    data = tmp_path / "data"
    srv = Server(data)
    try:
        send(srv, "p", ["a1", "a2"])
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    srv = Server(data)
    try:
        send(srv, "p", ["b1"])
        # a second's commits are archived once the second has passed
        want = ["a1", "a2", "b1"]
        got = restored_latest(tmp_path, data, ["p"], "r", lambda g: g["p"] == want)
        assert got["p"] == want
        assert "pitr_damaged" not in srv.log()
    finally:
        assert srv.stop() == 0, srv.log()


def test_concurrent_publishers_across_wal_restarts_then_a_kill(tmp_path):
    # The archive is written by its own thread while the store thread
    # commits, checkpoints its WAL's tail and restarts the WAL; the guard
    # before a restarting write reads the WAL-index. Eight publishers at
    # once through several WAL restarts, then kill -9: a restore has every
    # acknowledged chat of every room, in order (a frame overwritten
    # before it was archived would leave a gap the restore refuses).
    data = tmp_path / "data"
    rooms = [f"r{i}" for i in range(8)]
    per_room = 600
    pad = "y" * 2000
    srv = Server(data)
    try:
        async def publisher(room):
            ws = await connect(srv, userId=f"u-{room}", roomId=room)
            for i in range(per_room):
                await chat(ws, f"{room}-{i}-{pad}")
            await ws.close()

        async def all_rooms():
            await asyncio.gather(*(publisher(r) for r in rooms))
        asyncio.run(all_rooms())
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    _, keys = load_keys(data)
    srv = Server(data)
    try:
        time.sleep(0.3)
        assert len(commit_salts(data, keys)) >= 3, "the WAL did not restart under the load"
        got = restored_texts(tmp_path, data, int(time.time()) + 1, rooms, "r")
        for room in rooms:
            assert got[room] == [f"{room}-{i}-{pad}" for i in range(per_room)], room
        assert "pitr_damaged" not in srv.log()
    finally:
        assert srv.stop() == 0, srv.log()
