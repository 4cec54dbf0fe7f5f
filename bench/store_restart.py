"""Restart time of a big store (issue 19; docs/BENCHMARKS.md, "The store at
scale"): starts `wsgate serve` on an existing data directory (one grown by
bench/store_scale.py with KEEP=1, or any other), and times, from the exec:
the port accepting connections, the first durable chat stored and
broadcast back (the store serving), and the stop (SIGTERM to exit). With
--kill the server is killed (SIGKILL) after that chat instead of stopped,
so the next run measures a start after a crash; with --settle it waits
first (bounded) for the background checks to end (the store_check and
pitr_verified events) and reports when they did; with --cold the data
directory's files are evicted from the page cache first (posix_fadvise
DONTNEED on each: a start after a reboot, not after a deploy). The server's own log
(logging_level=INFO) is kept in DATA/restart-<n>.log for the start-up's
events (store_check, pitr_check, pitr_verified...).

    /usr/bin/python3 bench/store_restart.py build/wsgate DATA [--kill] [--cold] [--settle] [--runs N]

Targets 127.0.0.1 only; every wait is bounded (START_BUDGET_S, default 300).
One JSON line per run."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import websockets

BUDGET = float(os.environ.get("START_BUDGET_S", "300"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def first_chat(port, deadline):
    """Seconds until a chat is stored and broadcast back (retrying the
    connection until the deadline)."""
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/staging?userId=restart&roomId=restart",
                                          open_timeout=5, max_size=None) as ws:
                await asyncio.wait_for(ws.recv(), 10)  # welcome
                await ws.send(json.dumps({"type": "chat", "message": "after the restart"}))
                while True:
                    left = deadline - time.monotonic()
                    msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, left)))
                    if msg.get("type") == "chat":
                        return
                    if msg.get("type") == "error":
                        break  # refused while the store's queue is full: again
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("no chat stored within the budget")


def evict(data):
    for root, _, names in os.walk(data):
        for name in names:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def settle(log_path, t0, deadline):
    """Seconds from the exec to each background check's end event."""
    want = {"store_check": None, "pitr_verified": None}
    while time.monotonic() < deadline and None in want.values():
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        for line in text.splitlines():
            for ev in want:
                if want[ev] is None and f'"event":"{ev}"' in line and (
                        ev != "store_check" or "background" in line):
                    want[ev] = round(time.monotonic() - t0, 2)
        time.sleep(0.2)
    return want


def run(binary, data, kill, n, cold, wait_checks=False):
    if cold:
        evict(data)
    port = free_port()
    log = open(os.path.join(data, f"restart-{n}.log"), "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1", "--port", str(port),
                             "--data-dir", data, "--set", "logging_level=INFO",
                             "--set", "throttling_enabled=false"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = t0 + BUDGET
        t_port = None
        while t_port is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"wsgate exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    t_port = time.monotonic() - t0
            except OSError:
                time.sleep(0.01)
        asyncio.run(first_chat(port, deadline))
        t_chat = time.monotonic() - t0
        checks = settle(os.path.join(data, f"restart-{n}.log"), t0, deadline) if wait_checks else {}
        t1 = time.monotonic()
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        rc = proc.wait(timeout=BUDGET)
        t_stop = time.monotonic() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return {"run": n, "binary": binary, "port_s": round(t_port, 2), "first_chat_s": round(t_chat, 2),
            "stop_s": round(t_stop, 2), "exit": rc, "killed": kill, "cold": cold,
            "background_done_s": checks}


def main():
    binary, data = sys.argv[1], sys.argv[2]
    kill = "--kill" in sys.argv
    cold = "--cold" in sys.argv
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 1
    for n in range(runs):
        print(json.dumps(run(binary, data, kill, n, cold, "--settle" in sys.argv)), flush=True)


if __name__ == "__main__":
    main()
