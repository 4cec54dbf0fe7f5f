"""A big store restarts fast (issue 19; docs/storage.md, "What is checked at
start"): after a clean stop a start reads none of the archive files the
verified-files ledger vouches for, and runs the database's integrity check
after serving starts; what they would have caught is still caught, by the
background checks, and reported as at start (pitr_damaged, store_damaged,
/readyz), and the next start refuses a damaged database as before. After
a kill -9 the start reads the archive files written since the last
record (a torn one is reported and archived again), not the old ones."""
import os
import re
import signal
import sqlite3
import time
import urllib.error
import urllib.request

import pytest

from conftest import Server, WSGATE_BIN
from test_pitr import files, load_keys, pause_to_next_second, read_archive, restored_latest, restored_texts, send
from test_store import DB, cli

import subprocess


STARTED = []


def server(data):
    srv = Server(data)
    STARTED.append(srv)
    return srv


@pytest.fixture(autouse=True)
def stop_leftovers():
    """A failed assert between a start and its stop leaves no server behind."""
    yield
    while STARTED:
        srv = STARTED.pop()
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def wait_log(srv, pattern, timeout=60):
    """The first match of pattern in the server's log, waiting (bounded)."""
    deadline = time.time() + timeout
    while True:
        m = re.search(pattern, srv.log())
        if m or time.time() > deadline:
            assert m, f"no {pattern!r} in:\n{srv.log()}"
            return m
        time.sleep(0.1)


def read_at_start(srv):
    m = wait_log(srv, r'"event":"pitr_check".*?: (\d+) of (\d+) files read at start')
    return int(m.group(1)), int(m.group(2))


def readyz(srv):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def keep_mtime_write(path, blob):
    """Write blob over path keeping its size, mtime and inode: the damage a
    disk does, which no file metadata shows."""
    st = os.stat(path)
    assert len(blob) == st.st_size
    with open(path, "r+b") as f:
        f.write(blob)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_ino == st.st_ino


def test_clean_restart_reads_no_old_archive_file_and_a_damaged_one_is_still_caught(tmp_path):
    data = tmp_path / "data"
    srv = server(data)
    send(srv, "p", ["a1", "a2", "a3"])
    cut = pause_to_next_second()
    assert srv.stop() == 0, srv.log()

    # a clean stop: nothing is read again at start, the database's check
    # runs after serving starts, and the old files are checked meanwhile
    srv = server(data)
    read, total = read_at_start(srv)
    assert read == 0 and total >= 3, srv.log()
    wait_log(srv, r'"event":"store_check".*in the background \(the last stop was clean\)')
    wait_log(srv, r'"event":"pitr_verified".*: 0 damaged')
    assert '"event":"store_check","msg":"integrity check' in srv.log()
    assert "at start" not in "".join(l for l in srv.log().splitlines() if '"store_check"' in l)
    assert srv.stop() == 0, srv.log()

    # damage in an old segment that changes none of its metadata (a disk's
    # damage): the start does not read it, the background check reports
    # it as a start did, and a fresh snapshot makes later times restorable
    _, keys = load_keys(data)
    seg = next(p for p in files(data, "wal-1-") if any(k in "CK" for k, _ in read_archive(p, keys)))
    blob = bytearray(seg.read_bytes())
    blob[40] ^= 0x5A
    keep_mtime_write(seg, bytes(blob))
    snaps = len(files(data, "snap-"))
    srv = server(data)
    try:
        read, _ = read_at_start(srv)
        assert read == 0, srv.log()
        m = wait_log(srv, r'"event":"pitr_damaged".*')
        assert seg.name in m.group(0)
        wait_log(srv, r'"event":"pitr_verified".*: 1 damaged')
        deadline = time.time() + 30
        while len(files(data, "snap-")) <= snaps and time.time() < deadline:
            time.sleep(0.1)
        assert len(files(data, "snap-")) > snaps, srv.log()
        res = cli("restore", "--data-dir", str(data), "--to", str(cut), "--out", str(tmp_path / "x.db"),
                  check=False)
        assert res.returncode == 1 and seg.name in res.stderr and "damaged" in res.stderr, res.stderr
        time.sleep(1.1)
        send(srv, "p", ["b1"])
        time.sleep(1.1)
        got = restored_texts(tmp_path, data, int(time.time()), ["p"], "r")
        assert got["p"] == ["a1", "a2", "a3", "b1"]
    finally:
        assert srv.stop() == 0, srv.log()

    # the damaged file left the ledger: the next start reads it and says so
    srv = server(data)
    try:
        read, _ = read_at_start(srv)
        assert read >= 1
        m = wait_log(srv, r'"event":"pitr_damaged".*')
        assert seg.name in m.group(0)
    finally:
        assert srv.stop() == 0, srv.log()


def test_a_kill_reads_only_the_files_written_since_the_last_record(tmp_path):
    data = tmp_path / "data"
    srv = server(data)
    send(srv, "p", ["a1", "a2"])
    assert srv.stop() == 0, srv.log()
    srv = server(data)
    try:
        send(srv, "p", ["b1", "b2"])
        # the second's bucket is written once the second has passed
        _, keys = load_keys(data)
        deadline = time.time() + 20
        newest = None
        while time.time() < deadline:
            newest = files(data, "wal-")[-1]
            if any(k == "K" for k, _ in read_archive(newest, keys)):
                break
            time.sleep(0.2)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    total_before = len(files(data, "wal-")) + len(files(data, "snap-"))
    # the crash's segment, cut inside its last record
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) - 5)

    srv = server(data)
    try:
        read, total = read_at_start(srv)
        assert total == total_before and read == 1, srv.log()
        m = wait_log(srv, r'"event":"pitr_torn".*')
        assert newest.name in m.group(0)
        # SQLite replayed the killed run's WAL: its database check runs
        # after serving starts
        wait_log(srv, r'"event":"store_check".*in the background \(the last run was killed')
        send(srv, "p", ["c1"])
        want = ["a1", "a2", "b1", "b2", "c1"]
        got = restored_latest(tmp_path, data, ["p"], "r", lambda g: g["p"] == want)
        assert got["p"] == want
        assert "pitr_damaged" not in srv.log()
    finally:
        assert srv.stop() == 0, srv.log()


def leaf_pages(path):
    """Page numbers of the b-tree leaves of the file (page type 0x0A or
    0x0D at the page's start), page 1 aside."""
    blob = open(path, "rb").read()
    ps = int.from_bytes(blob[16:18], "big")
    ps = 65536 if ps == 1 else ps
    return ps, [n for n in range(2, len(blob) // ps + 1) if blob[(n - 1) * ps] in (0x0A, 0x0D)]


def test_a_damaged_database_after_a_clean_stop_is_caught_after_serving_starts(tmp_path):
    data = tmp_path / "data"
    srv = server(data)
    pad = "z" * 600
    send(srv, "big", [f"m{i}-{pad}" for i in range(400)])
    assert srv.stop() == 0, srv.log()
    db = data / DB
    ps, leaves = leaf_pages(db)
    assert len(leaves) > 20
    # a leaf in the middle of the room's messages: no start-up read
    # touches it (the newest message, the rooms), quick_check does
    page = leaves[len(leaves) // 2]
    blob = bytearray(db.read_bytes())
    off = (page - 1) * ps
    blob[off + 8:off + 200] = b"\xff" * 192
    keep_mtime_write(db, bytes(blob))

    srv = server(data)
    m = wait_log(srv, r'"event":"store_damaged".*')
    assert "integrity" in m.group(0), m.group(0)
    deadline = time.time() + 10
    while readyz(srv)[0] != 503 and time.time() < deadline:
        time.sleep(0.1)
    status, body = readyz(srv)
    assert status == 503 and "integrity" in body, (status, body)
    assert srv.stop() == 0, srv.log()

    # no clean-stop record after damage: the next start refuses, as before
    res = subprocess.run([WSGATE_BIN, "serve", "--port", "0", "--data-dir", str(data)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0 and "integrity" in res.stderr, res.stderr


def test_a_database_written_by_something_else_is_checked_before_serving(tmp_path):
    data = tmp_path / "data"
    srv = server(data)
    send(srv, "p", ["a1"])
    assert srv.stop() == 0, srv.log()
    # another program wrote the file after the clean stop (mtime moves)
    con = sqlite3.connect(str(data / DB))
    con.execute("CREATE TABLE IF NOT EXISTS other(x)")
    con.commit()
    con.close()
    srv = server(data)
    try:
        wait_log(srv, r'"event":"store_check".*at start')
    finally:
        assert srv.stop() == 0, srv.log()


def test_a_kill_reads_only_what_the_open_segment_got_since_it_was_noted(tmp_path):
    # The archiver notes the open segment's synced length in the ledger
    # every 10 s: after a kill -9 the start reads the segment from there,
    # not from its start (an hour of commits at most, gigabytes at load).
    data = tmp_path / "data"
    srv = server(data)
    try:
        send(srv, "p", [f"a{i}" for i in range(50)])
        seg = files(data, "wal-")[-1]
        noted = None
        deadline = time.time() + 60
        while noted is None and time.time() < deadline:
            time.sleep(0.5)
            try:
                text = (data / "pitr" / "verified").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                f = line.split(" ")
                if f[0] == "f" and f[1] == seg.name and f[-1] == "1":
                    noted = int(f[2])
        assert noted, (data / "pitr" / "verified").read_text()
        send(srv, "p", [f"b{i}" for i in range(50)])
        _, keys = load_keys(data)
        deadline = time.time() + 20
        while seg.stat().st_size == noted and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # the second's bucket
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
    finally:
        srv.stop()
    size = seg.stat().st_size
    assert size > noted
    srv = server(data)
    try:
        m = wait_log(srv, r'"event":"pitr_check".*?: (\d+) of (\d+) files read at start \((\d+) bytes')
        assert int(m.group(1)) == 1 and int(m.group(3)) == size - noted, (m.group(0), size, noted)
        send(srv, "p", ["c1"])
        want = [f"a{i}" for i in range(50)] + [f"b{i}" for i in range(50)] + ["c1"]
        got = restored_latest(tmp_path, data, ["p"], "r", lambda g: g["p"] == want)
        assert got["p"] == want
        wait_log(srv, r'"event":"pitr_verified".*: 0 damaged')
    finally:
        assert srv.stop() == 0, srv.log()


def wal_salts(data):
    with open(data / (DB + "-wal"), "rb") as f:
        head = f.read(32)
    return head[16:24] if len(head) == 32 else None


def last_archived_salts(data, keys):
    salts = None
    for p in files(data, "wal-"):
        for kind, raw in read_archive(p, keys):
            if kind in "CK":
                salts = raw[8:16]
    return salts


def test_a_kill_just_after_a_wal_restart_needs_no_snapshot(tmp_path):
    # A checkpoint copies every frame, the next write restarts the WAL
    # (salt-1 + 1) and the server is killed before the archive has a record
    # of the new generation: the start used to take a base snapshot before
    # serving chats (the archive could not prove it follows on); now the
    # guard noted the old generation wholly archived, and the start goes on.
    data = tmp_path / "data"
    sent = []
    _, keys = None, None
    for attempt in range(6):
        srv = server(data)
        try:
            if keys is None:
                _, keys = load_keys(data)
            batch = [f"t{attempt}-{i}" for i in range(5)]
            send(srv, "p", batch)
            sent += batch
            time.sleep(1.5)  # archived: the second's bucket is written
            con = sqlite3.connect(str(data / DB), timeout=10)
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
            con.close()
            send(srv, "p", [f"r{attempt}"])  # restarts the WAL
            sent.append(f"r{attempt}")
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(timeout=10)
        finally:
            srv.stop()
        wal, arch = wal_salts(data), last_archived_salts(data, keys)
        restarted = (wal is not None and arch is not None and
                     int.from_bytes(wal[:4], "big") == int.from_bytes(arch[:4], "big") + 1)
        srv = server(data)
        try:
            read_at_start(srv)
            if restarted:
                # the archiver may write the new generation's bucket later:
                # the decision was made at start, before the first batch
                time.sleep(1.0)
                log = srv.log()
                assert '"pitr_snapshot"' not in log, log
                got = None
                deadline = time.time() + 20
                while time.time() < deadline:
                    got = restored_texts(tmp_path, data, int(time.time()) + 1, ["p"],
                                         f"r{attempt}-{int(time.time() * 1000)}")
                    if got["p"] == sent:
                        break
                    time.sleep(0.3)
                assert got["p"] == sent
                return
        finally:
            assert srv.stop() == 0, srv.log()
    raise AssertionError("the WAL never restarted before the kill in 6 tries")
