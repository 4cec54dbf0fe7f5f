"""Bytes on disk per stored chat (docs/storage.md), measured: one server
with the seed's defaults for the store (encryption at rest and point-in-time
recovery on), the project's loadgen `durable` workload (20 rooms of 5,
32-byte chats) for a bounded number of chats, then a clean stop and SQLite's
dbstat over the file: bytes per chat for every table and index, and for the
whole file; the point-in-time archive (DATA_DIR/pitr/: base snapshots,
WAL segments) per chat; the CPU the server spent (all threads, and the
store thread alone) per 1,000 chats; and the time `wsgate restore` takes to
rebuild the whole store from the archive. Targets 127.0.0.1 only; stops by
itself.

    /usr/bin/python3 bench/store_bytes.py build/wsgate build/wsgate-loadgen [RATE [SECONDS]]
"""
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import benchlib

DB = "websocket-api-dev.db"


def main():
    binary, loadgen = sys.argv[1], sys.argv[2]
    rate = sys.argv[3] if len(sys.argv) > 3 else "2000"
    seconds = sys.argv[4] if len(sys.argv) > 4 else "10"
    data = tempfile.mkdtemp(prefix="wsgate-bytes-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1", "--port", str(port), "--data-dir", data,
                             "--set", "logging_level=ERROR", "--set", "throttling_enabled=false",
                             "--set", "connection_rate_limit=0", "--set", "connect_rate_per_ip=0",
                             "--set", "max_connections_per_ip=0", "--set", "worker_threads=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        subprocess.run([loadgen, "--workload", "durable", "--port", str(port), "--rooms", "20", "--members", "5",
                        "--rates", rate, "--duration", seconds, "--size", "32"],
                       stdout=subprocess.DEVNULL, timeout=int(seconds) + 120, check=True)
        total, store = cpu_seconds(proc.pid)
        proc.terminate()
        proc.wait(timeout=60)
        chats = report(os.path.join(data, DB))
        print(f"server CPU {total:.2f} s ({1000 * total / max(chats, 1):.3f} s per 1000 chats), store thread"
              f" {store:.2f} s ({1000 * store / max(chats, 1):.3f} s per 1000 chats)")
        pitr = os.path.join(data, "pitr")
        names = os.listdir(pitr) if os.path.isdir(pitr) else []
        snaps = [os.path.join(pitr, f) for f in names if f.startswith("snap-")]
        segs = [os.path.join(pitr, f) for f in names if f.startswith("wal-")]
        seg_bytes = sum(os.path.getsize(f) for f in segs)
        print(f"pitr/: {len(snaps)} base snapshots, {sum(os.path.getsize(f) for f in snaps)} bytes"
              " (one at start, then one per pitr_snapshot_interval_s)")
        print(f"pitr/: {len(segs)} WAL segments, {seg_bytes} bytes: {seg_bytes / max(chats, 1):.0f} bytes per"
              " chat (every committed WAL frame, compressed and sealed)")
        db_size = os.path.getsize(os.path.join(data, DB))
        print(f"database file + WAL archive: {(db_size + seg_bytes) / max(chats, 1):.0f} bytes per chat")
        out = os.path.join(data, "restored.db")
        dt, size = benchlib.timed_restore(binary, data, out, timeout=600)
        print(f"restore of the whole store: {dt:.2f} s for {chats} chats ({size} bytes restored,"
              f" {seg_bytes} bytes of segments replayed): {dt * 1e6 / max(chats, 1):.1f} s per million chats,"
              f" {dt * 2**30 / max(seg_bytes + size, 1):.1f} s per GiB read")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def cpu_seconds(pid):
    """CPU seconds of the process and of its store thread (named wsgate-store)."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(stat_path):
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    store = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == "wsgate-store":
                store += used(f"/proc/{pid}/task/{tid}/stat")
    return used(f"/proc/{pid}/stat"), store


def report(path):
    con = sqlite3.connect(path)
    chats = con.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    rows = con.execute("SELECT name, SUM(pgsize), SUM(payload), SUM(ncell) FROM dbstat"
                       " GROUP BY name ORDER BY SUM(pgsize) DESC").fetchall()
    size = os.path.getsize(path)
    print(f"{chats} chats stored, file {size} bytes: {size / max(chats, 1):.0f} bytes per chat")
    print(f"{'table or index':<34} {'bytes':>11} {'per chat':>9} {'payload/chat':>13} {'cells':>9}")
    for name, pg, payload, cells in rows:
        print(f"{name:<34} {pg:>11} {pg / max(chats, 1):>9.1f} {payload / max(chats, 1):>13.1f} {cells:>9}")
    con.close()
    return chats


if __name__ == "__main__":
    main()
