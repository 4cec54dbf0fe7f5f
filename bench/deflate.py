"""permessage-deflate, measured on loopback (issue 15): wsgate in API mode,
one room of MEMBERS raw clients, a sender posting CHATS chat messages of
about 1 KB of JSON; then idle memory per connection. Prints one table.

  fanout  server CPU (user+system, /proc/PID/stat) per delivery and bytes on
          the wire per delivered chat, for: the extension off; on with every
          member compressing; on with half of them (a mixed room). The
          compression is done once per broadcast (shared by the members),
          so its cost is compared with what compressing per member would be
          (zlib at the same level, timed here on the same message).
  memory  server RSS per connection (and wsgate_parser_bytes) for CONNS
          connections, each in its own room, that each sent one compressed
          message: without the extension, with client_no_context_takeover
          (the default), and with context takeover.

    /usr/bin/python3 bench/deflate.py [build/wsgate] [MEMBERS=1000] [CHATS=200] [CONNS=2000]

Targets 127.0.0.1 only; every server is stopped (by its PID) at the end of
its run; bounded: each wait has a deadline. Run by `WORKLOADS=deflate
bench/run.sh` too."""
import json
import os
import random
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import wsraw  # noqa: E402

OFFER = "permessage-deflate; client_max_window_bits"
BASE = ["logging_level=ERROR", "throttling_enabled=false", "connection_rate_limit=0",
        "connect_rate_per_ip=0", "max_connections_per_ip=0", "worker_threads=1",
        "enable_dynamodb_point_in_time_recovery=false", "enable_data_trace=false"]
WORDS = ("the build is green again and the release goes out tonight please review "
         "my change before lunch we moved the standup to ten thirty coffee is on me "
         "deploy finished without errors latency looks fine on the dashboards").split()


class Srv:
    def __init__(self, binary, sets):
        self.data = tempfile.mkdtemp(prefix="wsgate-deflate-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [binary, "serve", "--listen", "127.0.0.1", "--port", str(self.port), "--data-dir", self.data]
        for kv in BASE + sets:
            cmd += ["--set", kv]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("wsgate did not start")

    def cpu(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def parser_bytes(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("wsgate_parser_bytes"):
                    return float(line.split()[-1])
        return 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


class Member:
    """A raw client that counts the data frames and bytes it receives."""

    def __init__(self, port, offer, room):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        req = wsraw.upgrade_request(port, f"/staging?roomId={room}").decode()
        if offer:
            req = req[:-2] + f"Sec-WebSocket-Extensions: {offer}\r\n\r\n"
        self.sock.sendall(req.encode())
        head, self.buf = wsraw.read_head(self.sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.deflate = b"permessage-deflate" in head
        self.sock.setblocking(False)
        self.frames = self.wire = self.compressed = 0

    def feed(self):
        try:
            chunk = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        self.wire += len(chunk)
        self.buf += chunk
        while len(self.buf) >= 2:
            b0, n = self.buf[0], self.buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            if len(self.buf) < off + n:
                return
            self.buf = self.buf[off + n:]
            if b0 & 0x0F in (1, 2):
                self.frames += 1
                self.compressed += bool(b0 & 0x40)


def pump(sel, until, deadline):
    while not until():
        if time.time() > deadline:
            raise RuntimeError("timed out waiting for deliveries")
        for key, _ in sel.select(0.5):
            key.data.feed()


def chat(i, rng):
    words = []
    while len(" ".join(words)) < 900:
        words.append(rng.choice(WORDS))
    return json.dumps({"type": "chat", "message": " ".join(words) + f" #{i}"})


def fanout(binary, label, server_on, offer_share, members, chats):
    srv = Srv(binary, [f"permessage_deflate={'true' if server_on else 'false'}"])
    try:
        sel = selectors.DefaultSelector()
        ms = []
        for i in range(members):
            m = Member(srv.port, OFFER if int((i + 1) * offer_share) > int(i * offer_share) else None, "bench")
            sel.register(m.sock, selectors.EVENT_READ, m)
            ms.append(m)
        sender = Member(srv.port, None, "bench")
        sel.register(sender.sock, selectors.EVENT_READ, sender)
        # Presence and welcomes settle first.
        time.sleep(0.5)
        t_end = time.time() + 2
        while time.time() < t_end:
            for key, _ in sel.select(0.2):
                key.data.feed()
        base_frames = [m.frames for m in ms]
        base_wire = [m.wire for m in ms]
        rng = random.Random(7)
        msgs = [chat(i, rng) for i in range(chats)]
        cpu0 = srv.cpu()
        t0 = time.time()
        batch = 10
        for k in range(0, chats, batch):
            for msg in msgs[k:k + batch]:
                sender.sock.sendall(wsraw.frame(1, msg.encode()))
            want = k + min(batch, chats - k)
            pump(sel, lambda: all(m.frames - b >= want for m, b in zip(ms, base_frames)), time.time() + 120)
        cpu = srv.cpu() - cpu0
        elapsed = time.time() - t0
        deliveries = chats * members
        wire = sum(m.wire - b for m, b in zip(ms, base_wire))
        comp = [m for m in ms if m.deflate]
        plain = [m for m in ms if not m.deflate]
        per = lambda group: (sum(m.wire - base_wire[ms.index(m)] for m in group) / (chats * len(group))) if group else 0
        for m in ms + [sender]:
            m.sock.close()
        return {"label": label, "deliveries": deliveries, "cpu_s": cpu, "elapsed_s": elapsed,
                "cpu_us_per_delivery": cpu / deliveries * 1e6, "wire_per_delivery": wire / deliveries,
                "wire_compressed_member": per(comp), "wire_plain_member": per(plain),
                "msg_bytes": sum(len(m) for m in msgs) / chats}
    finally:
        srv.stop()


def memory(binary, label, sets, offer, conns):
    srv = Srv(binary, sets)
    try:
        time.sleep(0.5)
        rss0 = srv.rss_kib()
        ms = []
        for i in range(conns):
            m = Member(srv.port, offer, f"m{i}")
            m.sock.setblocking(True)
            body = json.dumps({"type": "room_list", "pad": "x" * 200}).encode()
            if m.deflate:
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                z = c.compress(body) + c.flush(zlib.Z_SYNC_FLUSH)
                b0 = 0xC1
                payload = z[:-4]
            else:
                b0, payload = 0x81, body
            frame = wsraw.frame(1, payload)
            m.sock.sendall(bytes([b0]) + frame[1:])
            ms.append(m)
        sel = selectors.DefaultSelector()
        for m in ms:
            m.sock.setblocking(False)
            sel.register(m.sock, selectors.EVENT_READ, m)
        # welcome + room_list each
        pump(sel, lambda: all(m.frames >= 2 for m in ms), time.time() + 120)
        time.sleep(2.5)  # the sweep releases idle parsers
        rss = srv.rss_kib()
        pb = srv.parser_bytes()
        for m in ms:
            m.sock.close()
        return {"label": label, "conns": conns, "rss_per_conn": (rss - rss0) * 1024 / conns,
                "parser_bytes_per_conn": pb / conns}
    finally:
        srv.stop()


def main():
    args = sys.argv[1:]
    binary = args[0] if args and not args[0].startswith(("MEMBERS", "CHATS", "CONNS")) else "build/wsgate"
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    members, chats, conns = int(kv.get("MEMBERS", 1000)), int(kv.get("CHATS", 200)), int(kv.get("CONNS", 2000))

    rng = random.Random(7)
    sample = [json.dumps({"type": "chat", "data": {"message": json.loads(chat(i, rng))["message"],
                                                   "roomId": "bench", "senderId": "anonymous"}}).encode()
              for i in range(200)]
    # One stream, fully flushed after each message (no reference to the
    # previous one), as the server compresses: the work, not the set-up.
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    t0 = time.perf_counter()
    for s in sample * 5:
        c.compress(s)
        c.flush(zlib.Z_FULL_FLUSH)
    zlib_us = (time.perf_counter() - t0) / (len(sample) * 5) * 1e6

    rows = [fanout(binary, "off", False, 0, members, chats),
            fanout(binary, "on, all compress", True, 1.0, members, chats),
            fanout(binary, "on, half compress", True, 0.5, members, chats)]
    print(f"fanout: 1 room x {members} members, {chats} chats of ~{rows[0]['msg_bytes']:.0f} B JSON "
          f"(API mode, 1 worker, stored)")
    print(f"{'extension':<20}{'CPU us/delivery':>16}{'vs off':>8}{'B/delivery':>12}"
          f"{'compressed B':>14}{'plain B':>9}")
    for r in rows:
        print(f"{r['label']:<20}{r['cpu_us_per_delivery']:>16.2f}{r['cpu_us_per_delivery'] / rows[0]['cpu_us_per_delivery']:>8.2f}"
              f"{r['wire_per_delivery']:>12.0f}{r['wire_compressed_member']:>14.0f}{r['wire_plain_member']:>9.0f}")
    extra = (rows[1]["cpu_s"] - rows[0]["cpu_s"]) / chats * 1e6
    print(f"extra server CPU per broadcast with the extension (all compress - off): {extra:.0f} us; "
          f"compressing per member instead would add {members} x {zlib_us:.1f} us = "
          f"{members * zlib_us / 1000:.1f} ms per broadcast (zlib level 6 called from Python here, "
          f"an upper bound; bench/deflate_cost.c times the server's own call)")

    mem = [memory(binary, "no extension", ["permessage_deflate=true"], None, conns),
           memory(binary, "client_no_context_takeover", ["permessage_deflate=true"], OFFER, conns),
           memory(binary, "context takeover", ["permessage_deflate=true",
                                               "deflate_client_no_context_takeover=false"], OFFER, conns)]
    print(f"memory: {conns} connections, one room each, each sent one message (compressed when negotiated)")
    print(f"{'':<28}{'RSS B/conn':>12}{'parser B/conn':>15}")
    for r in mem:
        print(f"{r['label']:<28}{r['rss_per_conn']:>12.0f}{r['parser_bytes_per_conn']:>15.0f}")
    print(json.dumps({"fanout": rows, "memory": mem, "zlib_us_per_message": zlib_us}))


if __name__ == "__main__":
    main()
