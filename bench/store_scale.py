"""The store at scale (issue 19, item 5; docs/BENCHMARKS.md): one server with
the seed's defaults for the store (encryption at rest and point-in-time
recovery on, store_sync=full), one worker pinned to CPU 0, the project's
loadgen `durable` workload (20 rooms of 5, 32-byte chats) pinned to CPU 1,
growing the store in steps of STEP messages up to TARGET. After each step:
chats per server CPU-second and the rate sustained (the loadgen's own
numbers for the step's window), send-to-every-member p50/p99, `history`
(50 messages) latency newest and at a random depth of the room, the
server's RSS and the bytes on disk (database, WAL, archive segments,
snapshots).

Then the TTL phase: the server stops, the oldest TTL_ROWS messages are
aged (their `timestamp` set two days back, as tests/integration's
age_rows does), and the server starts again with message_ttl_days=1, so
its sweeper has TTL_ROWS expired rows to delete while chats flow in steps
of TTL_STEP_S seconds at the same rate: per step, p50/p99 and the expired
rows left. Last, the server stops and `wsgate restore` rebuilds the whole
store from the archive, timed.

Everything targets 127.0.0.1 and stops by itself: growth ends at TARGET or
after GROW_BUDGET_S seconds of wall time (the count reached is printed),
the sweep phase after TTL_BUDGET_S. A JSON line per step, for the docs.

    /usr/bin/python3 bench/store_scale.py build/wsgate build/wsgate-loadgen
    (env: TARGET=10000000 STEP=1000000 RATE=15000 TTL_ROWS=1000000
          GROW_BUDGET_S=1200 TTL_BUDGET_S=240 TTL_STEP_S=10 KEEP=0 SCALE_DIR=TMPDIR)
"""
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import websockets

import benchlib

DB = "websocket-api-dev.db"
ROOMS, MEMBERS = 20, 5
OLD = 2 * 86400


def env(name, default):
    return int(os.environ.get(name, default))


TARGET = env("TARGET", 10_000_000)
STEP = env("STEP", 1_000_000)
RATE = env("RATE", 15000)
TTL_ROWS = env("TTL_ROWS", 1_000_000)
GROW_BUDGET_S = env("GROW_BUDGET_S", 1200)
TTL_BUDGET_S = env("TTL_BUDGET_S", 240)
TTL_STEP_S = env("TTL_STEP_S", 10)


LIVE = []  # servers started, killed at exit whatever happens
LOADGENS = []


class Server:
    def __init__(self, binary, data, extra=()):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = ["taskset", "-c", "0", binary, "serve", "--listen", "127.0.0.1", "--port", str(self.port),
                "--data-dir", data, "--set", "logging_level=ERROR", "--set", "throttling_enabled=false",
                "--set", "connection_rate_limit=0", "--set", "connect_rate_per_ip=0",
                "--set", "max_connections_per_ip=0", "--set", "worker_threads=1"]
        for kv in extra:
            args += ["--set", kv]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        LIVE.append(self.proc)
        deadline = time.monotonic() + 600  # a start-up snapshot of a large store takes a while
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        self.start_s = time.monotonic() - t0

    def rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t0


def durable(loadgen, srv, rate, seconds):
    """One loadgen durable step; returns its JSON line."""
    p = subprocess.Popen(["taskset", "-c", "1", loadgen, "--workload", "durable", "--port", str(srv.port),
                          "--rooms", str(ROOMS), "--members", str(MEMBERS), "--rates", str(rate),
                          "--duration", str(seconds), "--size", "32", "--server-pid", str(srv.proc.pid)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    LOADGENS.append(p)
    stdout, stderr = p.communicate(timeout=seconds + 300)
    LOADGENS.remove(p)
    out = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    # exit status 1: the step was not sustained, which is a result here too
    for line in out.stdout.splitlines():
        if not line.startswith("{") and " step " in line:
            print("  " + line.strip(), flush=True)
    for line in out.stdout.splitlines():
        if line.startswith("{") and '"step"' in line:
            return json.loads(line)
    raise RuntimeError(f"no step line from the loadgen (status {out.returncode}):\n{out.stdout}\n{out.stderr}")


def query(data, sql, args=()):
    con = sqlite3.connect(f"file:{os.path.join(data, DB)}?mode=ro", uri=True, timeout=60)
    try:
        return con.execute(sql, args).fetchone()[0]
    finally:
        con.close()


def stored(data):
    """Messages ever stored: the sum of the rooms' seq counters."""
    return query(data, "SELECT COALESCE(SUM(lastSeq), 0) FROM rooms") or 0


async def history_ms(port, count, timeout=30):
    """`history` of 50 in room0, newest and from a random beforeSeq: the
    median and worst of `count` each, in ms, measured as a client sees it."""
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/staging?roomId=room0&userId=probe",
                                  open_timeout=30, max_size=None)
    try:
        while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "welcome":
            pass
        result = {}
        top = None
        for kind in ("newest", "deep"):
            times = []
            for _ in range(count):
                req = {"type": "history", "roomId": "room0", "limit": 50}
                if kind == "deep" and top:
                    req["beforeSeq"] = random.randint(1, top)
                t0 = time.perf_counter()
                await ws.send(json.dumps(req))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    if msg["type"] == "history":
                        break
                times.append((time.perf_counter() - t0) * 1000)
                msgs = msg["data"]["messages"]
                if kind == "newest" and msgs:
                    top = msgs[-1]["seq"]
                    assert len(msgs) == min(50, top), "history returned fewer than 50"
            times.sort()
            result[kind] = (times[len(times) // 2], times[-1])
        return result
    finally:
        await ws.close()


def disk(data):
    def size(p):
        return os.path.getsize(p) if os.path.exists(p) else 0
    pitr = os.path.join(data, "pitr")
    names = os.listdir(pitr) if os.path.isdir(pitr) else []
    return {"db": size(os.path.join(data, DB)), "wal": size(os.path.join(data, DB + "-wal")),
            "segments": sum(size(os.path.join(pitr, n)) for n in names if n.startswith("wal-")),
            "snapshots": sum(size(os.path.join(pitr, n)) for n in names if n.startswith("snap-"))}


def pressure():
    """The machine's CPU pressure ("some", avg60 %): how much the runs here
    waited for a core that other work held."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[2].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def show(kind, d):
    print(json.dumps({"kind": kind, **d}), flush=True)


def grow(binary, loadgen, data):
    srv = Server(binary, data)
    t_start = time.monotonic()
    seconds = max(5, round(STEP / RATE))
    total = stored(data)
    last = None
    while total < TARGET and time.monotonic() - t_start < GROW_BUDGET_S:
        step = durable(loadgen, srv, RATE, seconds)
        total = stored(data)
        hist = asyncio.run(history_ms(srv.port, 20))
        d = disk(data)
        last = {"messages": total, "offered": RATE, "rate": step["rate"], "sustained": step["sustained"],
                "per_cpu_s": step["per_cpu_s"], "p50_ms": step["p50_us"] / 1000, "p99_ms": step["p99_us"] / 1000,
                "p999_ms": step["p999_us"] / 1000, "missing": step["missing"], "seq_gaps": step["seq_gaps"],
                "history_newest_ms": hist["newest"], "history_deep_ms": hist["deep"], "rss_mb": srv.rss_mb(),
                **d, "db_b_per_msg": d["db"] / max(total, 1), "archive_b_per_msg": d["segments"] / max(total, 1),
                "cpu_pressure": pressure(), "wall_s": round(time.monotonic() - t_start)}
        show("grow", last)
    print(f"growth: {total} messages in {time.monotonic() - t_start:.0f} s"
          f"{'' if total >= TARGET else f' (budget reached before {TARGET})'}", flush=True)
    srv.stop()
    return total, last


def ttl(binary, loadgen, data, total):
    per_room = -(-TTL_ROWS // ROOMS)
    con = sqlite3.connect(os.path.join(data, DB), timeout=60)
    t0 = time.monotonic()
    with con:
        for r in range(ROOMS):
            con.execute("UPDATE messages SET timestamp = ? WHERE roomId = ? AND seq <= ?",
                        (int(time.time()) - OLD, f"room{r}", per_room))
    aged = sum(con.execute("SELECT COUNT(*) FROM messages WHERE roomId = ? AND seq <= ?",
                           (f"room{r}", per_room)).fetchone()[0] for r in range(ROOMS))
    con.close()
    print(f"aged {aged} rows in {time.monotonic() - t0:.1f} s", flush=True)
    srv = Server(binary, data, ["message_ttl_days=1"])
    t0 = time.monotonic()
    # the port opens before the store thread takes its first op: it first
    # verifies every archive file, then takes a base snapshot (the file
    # was written by someone else); a history answer says it is serving
    asyncio.run(history_ms(srv.port, 1, timeout=900))
    print(f"restart with message_ttl_days=1: port open in {srv.start_s:.1f} s, store serving"
          f" {time.monotonic() - t0:.1f} s later (archive verified, base snapshot taken)", flush=True)

    def left():
        return sum(query(data, "SELECT COUNT(*) FROM messages WHERE roomId = ? AND seq <= ?", (f"room{r}", per_room))
                   for r in range(ROOMS))
    t_start = time.monotonic()
    before = left()
    after_steps = 0
    while time.monotonic() - t_start < TTL_BUDGET_S and after_steps < 2:
        step = durable(loadgen, srv, RATE, TTL_STEP_S)
        now_left = left()
        show("ttl", {"expired_left": now_left, "deleted": before - now_left, "rate": step["rate"],
                     "sustained": step["sustained"], "per_cpu_s": step["per_cpu_s"],
                     "p50_ms": step["p50_us"] / 1000, "p99_ms": step["p99_us"] / 1000,
                     "p999_ms": step["p999_us"] / 1000, "missing": step["missing"], "rss_mb": srv.rss_mb(),
                     "cpu_pressure": pressure(), "wall_s": round(time.monotonic() - t_start)})
        before = now_left
        if now_left == 0:
            after_steps += 1  # steps after the sweep ended: the baseline
    print(f"sweep: {aged - before} of {aged} expired rows deleted in {time.monotonic() - t_start:.0f} s",
          flush=True)
    srv.stop()


def restore(binary, data):
    d = disk(data)
    out = os.path.join(data, "restored.db")
    dt, size = benchlib.timed_restore(binary, data, out, timeout=3600)
    read = d["segments"] + d["snapshots"]
    show("restore", {"seconds": round(dt, 2), "restored_bytes": size, "archive_bytes": read,
                     "s_per_gib_restored": dt * 2**30 / max(size, 1), "s_per_gib_read": dt * 2**30 / max(read, 1)})
    os.unlink(out)


def main():
    binary, loadgen = sys.argv[1], sys.argv[2]
    # a SIGTERM still stops what this started and removes the data
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    data = tempfile.mkdtemp(prefix="wsgate-scale-", dir=os.environ.get("SCALE_DIR"))
    try:
        total, _ = grow(binary, loadgen, data)
        if TTL_ROWS > 0:
            ttl(binary, loadgen, data, total)
        restore(binary, data)
    finally:
        for p in LIVE + LOADGENS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.environ.get("KEEP") == "1":
            print(f"kept {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
