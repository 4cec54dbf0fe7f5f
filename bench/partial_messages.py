#!/usr/bin/env python3
"""Unfinished messages under attack: N connections each send all but the
last bytes of one big text frame and hold it, and the server's RSS is read
before and after (max_partial_message_bytes bounds what they hold together;
set it to 4294967296 to see the server without a useful bound).

  python3 bench/partial_messages.py --bin build/wsgate --conns 2000 \
      [--set max_partial_message_bytes=4294967296]

127.0.0.1 only; every socket and the server are closed at the end."""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import wsraw  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/wsgate")
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--payload", type=int, default=131072)
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="wsgate-partial-")
    cmd = [a.bin, "serve", "--listen", "127.0.0.1", "--port", str(port), "--data-dir", data,
           "--set", "connect_rate_per_ip=0", "--set", "connection_rate_limit=0",
           "--set", "throttling_enabled=false", "--set", "max_connections_per_ip=100000"]
    for kv in a.set:
        cmd += ["--set", kv]
    log = open(os.path.join(data, "server.log"), "wb")
    srv = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    socks = []
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        for _ in range(a.conns):
            s, _rest = wsraw.handshake(port, timeout=30)
            socks.append(s)
        time.sleep(1)
        before = rss_kib(srv.pid)
        body = b"x" * (a.payload - 16)
        hdr = wsraw.frame(0x1, b"", length_override=a.payload)  # header + mask key
        key = hdr[-4:]
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(body))
        refused = 0
        for s in socks:
            try:
                s.sendall(hdr + masked)
            except OSError:
                refused += 1
        time.sleep(2)
        after = rss_kib(srv.pid)
    finally:
        for s in socks:
            s.close()
        srv.terminate()
        srv.wait(timeout=30)
        log.close()
    with open(os.path.join(data, "server.log"), "rb") as f:
        closed = f.read().count(b'"partial_message_limit"')
    print(f"conns={a.conns} payload={a.payload} rss_before_kib={before} "
          f"rss_attack_kib={after} growth_mib={(after - before) / 1024:.1f} "
          f"closed_1013={closed} send_failed={refused}")


if __name__ == "__main__":
    main()
