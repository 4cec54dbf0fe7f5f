"""WebSocket conformance: the Autobahn|Testsuite fuzzingclient case list,
groups 1-7, 9, 10, and 12-13 (permessage-deflate), replayed against wsgate in echo mode.

Every case is its own test id (`case_G_N[_M]`, Autobahn's numbering; extra
cases that Autobahn does not have carry a descriptive suffix). Cases use the
raw client (wsraw) so the bytes on the wire are exactly the ones meant;
a few happy-path cases at the end use python3-websockets as an independent
client.

What every raw case checks: the server's answer is read frame by frame until
the server ends TCP, and the whole sequence of events (echoed messages with
their exact payload and type, pongs, the close frame with its exact code) must
equal the expected one. After its close frame the server must end TCP by
itself within EOF_WITHIN seconds, i.e. without waiting for our answer (the
server's own fallback timer is 2 s, so it cannot be what ends TCP here)."""
import asyncio
import os
import socket
import struct
import time
import zlib

import pytest

import wsraw

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPNAME = {TEXT: "text", BINARY: "binary", PING: "ping", PONG: "pong"}
EOF_WITHIN = 1.5

# ------------------------------------------------------------------ helpers


def mask_fast(payload, key):
    """XOR payload with the 4-byte key (big-int arithmetic: fast for MiBs)."""
    n = len(payload)
    if n == 0:
        return b""
    ks = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(ks, "little")).to_bytes(n, "little")


def hdr(op, n, fin=True, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    if n < 126:
        return struct.pack("!BB", b0, 0x80 | n)
    if n < 65536:
        return struct.pack("!BBH", b0, 0x80 | 126, n)
    return struct.pack("!BBQ", b0, 0x80 | 127, n)


def big_frame(op, payload, fin=True):
    """Like wsraw.frame, for payloads too big for its per-byte masking."""
    key = os.urandom(4)
    return hdr(op, len(payload), fin) + key + mask_fast(payload, key)


def fragments(op, payload, size):
    """One message as frames of `size` payload bytes (the last may be
    shorter), as one bytes object. `size` is a multiple of 4, so one masked
    copy of the whole message can be cut into the frames' payloads."""
    assert size % 4 == 0
    key = os.urandom(4)
    masked = mask_fast(payload, key)
    out = []
    n = len(payload)
    for off in range(0, n, size):
        chunk = masked[off:off + size]
        first, last = off == 0, off + size >= n
        out.append(hdr(op if first else CONT, len(chunk), fin=last) + key + chunk)
    return b"".join(out)


F = wsraw.frame


def close_frame(code=None, reason=b""):
    return F(CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


class Peer:
    """A raw connection that reads server frames with a growable buffer
    (group 9 reads tens of MiB) and checks every frame it gets."""

    def __init__(self, port, recv_size=1 << 20, rcvbuf=None):
        # SO_RCVBUF (when given) is set before connecting, to shrink the window.
        self.sock, rest = wsraw.handshake(port, rcvbuf=rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(rest)
        self.pos = 0
        self.recv_size = recv_size
        self.reset = False

    # -- sending
    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Send what may legitimately hit a connection the server has already
        failed (it closes TCP right after its close frame)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def send_chopped(self, data, size, delay=0.0, tolerate_close=False):
        """Send data in writes of `size` bytes, each its own TCP segment
        (TCP_NODELAY), optionally `delay` seconds apart."""
        for i in range(0, len(data), size):
            if tolerate_close:
                if not self.try_send(data[i:i + size]):
                    return False
            else:
                self.sock.sendall(data[i:i + size])
            if delay:
                time.sleep(delay)
        return True

    def send_frames_synced(self, frames, delay=0.02, tolerate_close=False):
        """Autobahn's "frame-wise with sync": one write per frame, with a
        pause so each frame arrives in its own read."""
        for fr in frames:
            if tolerate_close:
                if not self.try_send(fr):
                    return False
            else:
                self.sock.sendall(fr)
            time.sleep(delay)
        return True

    # -- reading
    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = self.sock.recv(self.recv_size)
        except ConnectionResetError:
            # Data the server had not read when it closed makes Linux send
            # RST; everything the server wrote before was still readable.
            self.reset = True
            chunk = b""
        if not chunk:
            raise EOFError("connection closed")
        if self.pos > (1 << 20) and self.pos * 2 > len(self.buf):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk

    def _need(self, n, deadline):
        while len(self.buf) - self.pos < n:
            self._fill(deadline)

    def recv_frame(self, timeout=5.0):
        """Return (fin, opcode, payload) of the next server frame; EOFError
        on TCP close; socket.timeout when nothing comes."""
        deadline = time.time() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[self.pos], self.buf[self.pos + 1]
        assert not b1 & 0x80, "server frames must not be masked"
        assert not b0 & 0x70, "server set reserved bits"
        op = b0 & 0x0F
        assert op in (CONT, TEXT, BINARY, CLOSE, PING, PONG), f"server sent opcode {op}"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack_from("!H", self.buf, self.pos + 2)[0]
            off = 4
            assert n >= 126, "non-minimal length from server"
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack_from("!Q", self.buf, self.pos + 2)[0]
            off = 10
            assert n >= 65536, "non-minimal length from server"
        if op & 0x8:
            assert b0 & 0x80 and n <= 125, "bad control frame from server"
        self._need(off + n, deadline)
        payload = bytes(self.buf[self.pos + off:self.pos + off + n])
        self.pos += off + n
        return bool(b0 & 0x80), op, payload

    def next_event(self, timeout=5.0):
        """The next event: ("text"|"binary", payload) for a whole data message
        (reassembled), ("pong"|"ping", payload), ("close", code) where code is
        None for an empty close payload."""
        deadline = time.time() + timeout
        fin, op, data = self.recv_frame(timeout)
        if op == CLOSE:
            return ("close", parse_close(data))
        if op in (PING, PONG):
            return (OPNAME[op], data)
        assert op in (TEXT, BINARY), "continuation frame without a message"
        parts = [data]
        while not fin:
            fin, op2, more = self.recv_frame(max(0.01, deadline - time.time()))
            assert op2 == CONT, f"opcode {op2} inside a fragmented server message"
            parts.append(more)
        data = b"".join(parts)
        if op == TEXT:
            data.decode("utf-8")  # the server must only send valid text
        return (OPNAME[op], data)

    def events_until_eof(self, timeout=10.0):
        """Every event until the server ends TCP. After a close frame the
        server must end TCP within EOF_WITHIN s, without us answering."""
        deadline = time.time() + timeout
        out = []
        while True:
            try:
                ev = self.next_event(max(0.01, deadline - time.time()))
            except EOFError:
                return out
            out.append(ev)
            if ev[0] == "close":
                t0 = time.time()
                try:
                    extra = self.next_event(EOF_WITHIN)
                except EOFError:
                    assert time.time() - t0 <= EOF_WITHIN
                    return out
                except socket.timeout:
                    raise AssertionError(f"server did not end TCP within {EOF_WITHIN}s "
                                         f"after its close frame; events {out}")
                raise AssertionError(f"frame after the server's close frame: {extra}; events {out}")

    def expect_nothing(self, wait=0.2):
        """Assert the server sends nothing (and keeps TCP open) for `wait` s."""
        try:
            ev = self.next_event(wait)
        except socket.timeout:
            return
        except EOFError:
            raise AssertionError("server closed TCP")
        raise AssertionError(f"unexpected event {ev}")

    def close(self):
        self.sock.close()


def parse_close(payload):
    if not payload:
        return None
    assert len(payload) >= 2, f"server close payload of {len(payload)} byte"
    payload[2:].decode("utf-8")  # the reason must be valid UTF-8
    return struct.unpack("!H", payload[:2])[0]


def closing_handshake(p, code=1000):
    """We close with `code`: the server must echo it and end TCP."""
    p.send(close_frame(code))
    assert p.events_until_eof() == [("close", code)]


# ------------------------------------------------------------------ cases
# CASES maps a test id to fn(peer_factory) where peer_factory(**kw) opens a
# new raw connection to a fresh echo server (one server per test).

CASES = {}


def case(cid):
    def deco(fn):
        assert cid not in CASES, cid
        CASES[cid] = fn
        return fn
    return deco


def echo_case(cid, sends, expected, chop=None, close_code=1000):
    """Send `sends` (bytes), expect `expected` events, then close cleanly."""
    def run(connect):
        p = connect()
        data = b"".join(sends)
        if chop:
            p.send_chopped(data, chop, delay=0.001 if len(data) < 4096 else 0.0)
        else:
            p.send(data)
        got = [p.next_event() for _ in expected]
        assert got == expected
        closing_handshake(p, close_code)
    CASES[cid] = run


def fail_case(cid, sends, expected, mode="once"):
    """Send `sends` and expect exactly `expected` (ending in a close frame)
    before the server ends TCP. mode: once (one write), frames (one write per
    frame, synced) or octets (one byte per write)."""
    def run(connect):
        p = connect()
        if mode == "once":
            p.try_send(b"".join(sends))
        elif mode == "frames":
            p.send_frames_synced(sends, tolerate_close=True)
        else:
            p.send_chopped(b"".join(sends), 1, delay=0.001, tolerate_close=True)
        assert p.events_until_eof() == expected
    CASES[cid] = run


# ---- group 1: framing

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]
for i, n in enumerate(LENGTHS, 1):
    echo_case(f"case_1_1_{i}", [F(TEXT, b"*" * n)], [("text", b"*" * n)])
    echo_case(f"case_1_2_{i}", [F(BINARY, b"\xfe" * n)], [("binary", b"\xfe" * n)])
echo_case("case_1_1_8", [F(TEXT, b"*" * 65536)], [("text", b"*" * 65536)], chop=997)
echo_case("case_1_2_8", [F(BINARY, b"\xfe" * 65536)], [("binary", b"\xfe" * 65536)], chop=997)

# ---- group 2: pings and pongs

echo_case("case_2_1", [F(PING)], [("pong", b"")])
echo_case("case_2_2", [F(PING, b"Hello, world!")], [("pong", b"Hello, world!")])
echo_case("case_2_3", [F(PING, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")],
          [("pong", b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")])
echo_case("case_2_4", [F(PING, b"\xfe" * 125)], [("pong", b"\xfe" * 125)])
fail_case("case_2_5", [F(PING, b"\xfe" * 126)], [("close", 1002)])
echo_case("case_2_6", [F(PING, b"\xfe" * 125)], [("pong", b"\xfe" * 125)], chop=1)
# 2.7/2.8: an unsolicited pong is ignored: the close that follows is the
# first and only thing answered.
echo_case("case_2_7", [F(PONG)], [])
echo_case("case_2_8", [F(PONG, b"unsolicited pong payload")], [])
echo_case("case_2_9", [F(PONG, b"unsolicited pong payload"), F(PING, b"ping payload")],
          [("pong", b"ping payload")])
TEN = [b"payload-%d" % i for i in range(10)]
echo_case("case_2_10", [F(PING, x) for x in TEN], [("pong", x) for x in TEN])
echo_case("case_2_11", [F(PING, x) for x in TEN], [("pong", x) for x in TEN], chop=1)

# ---- group 3: reserved bits

HW = b"Hello, world!"
fail_case("case_3_1", [F(TEXT, HW, rsv=1)], [("close", 1002)])
for cid, rsv, mode in [("case_3_2", 2, "once"), ("case_3_3", 3, "frames"), ("case_3_4", 4, "octets")]:
    # A valid message first: it must be echoed before the connection fails,
    # and the ping after the bad frame must not be answered.
    fail_case(cid, [F(TEXT, HW), F(TEXT, HW, rsv=rsv), F(PING)],
              [("text", HW), ("close", 1002)], mode)
fail_case("case_3_5", [F(BINARY, bytes(range(8)), rsv=5)], [("close", 1002)])
fail_case("case_3_6", [F(PING, HW, rsv=6)], [("close", 1002)])
fail_case("case_3_7", [F(CLOSE, struct.pack("!H", 1000), rsv=7)],
          [("close", 1002)])
# Not in Autobahn: every RSV combination on every frame type, and after a
# valid message sent in the same write.
for rsv in range(1, 8):
    for name, fr in [("text", F(TEXT, HW, rsv=rsv)), ("binary", F(BINARY, HW, rsv=rsv)),
                     ("ping", F(PING, HW, rsv=rsv)), ("pong", F(PONG, HW, rsv=rsv)),
                     ("close", F(CLOSE, struct.pack("!H", 1000), rsv=rsv))]:
        fail_case(f"case_3_x_rsv{rsv}_{name}", [F(BINARY, b"ok"), fr],
                  [("binary", b"ok"), ("close", 1002)])
    # RSV on a continuation frame: the first fragment is accepted, nothing is
    # echoed since the message never completes.
    fail_case(f"case_3_x_rsv{rsv}_continuation",
              [F(TEXT, b"frag", fin=False), F(CONT, b"ment", rsv=rsv)], [("close", 1002)])

# ---- group 4: reserved opcodes

for grp, ops in (("4_1", [3, 4, 5, 6, 7]), ("4_2", [0xB, 0xC, 0xD, 0xE, 0xF])):
    fail_case(f"case_{grp}_1", [F(ops[0])], [("close", 1002)])
    fail_case(f"case_{grp}_2", [F(ops[1], b"reserved opcode payload")], [("close", 1002)])
    fail_case(f"case_{grp}_3", [F(TEXT, HW), F(ops[2]), F(PING)],
              [("text", HW), ("close", 1002)])
    fail_case(f"case_{grp}_4", [F(TEXT, HW), F(ops[3], b"reserved opcode payload"), F(PING)],
              [("text", HW), ("close", 1002)])
    fail_case(f"case_{grp}_5", [F(TEXT, HW), F(ops[4], b"reserved opcode payload"), F(PING)],
              [("text", HW), ("close", 1002)])
# Not in Autobahn: a reserved opcode in the middle of a fragmented message.
fail_case("case_4_x_reserved_opcode_mid_message",
          [F(TEXT, b"frag", fin=False), F(0xB, b"x"), F(CONT, b"ment")], [("close", 1002)])

# ---- group 5: fragmentation

fail_case("case_5_1", [F(PING, b"fragment1", fin=False), F(CONT, b"fragment2")],
          [("close", 1002)])
fail_case("case_5_2", [F(PONG, b"fragment1", fin=False), F(CONT, b"fragment2")],
          [("close", 1002)])
TWO = [F(TEXT, b"fragment1", fin=False), F(CONT, b"fragment2")]
echo_case("case_5_3", TWO, [("text", b"fragment1fragment2")])


@case("case_5_4")
def _c5_4(connect):
    p = connect()
    p.send_frames_synced(TWO)
    assert p.next_event() == ("text", b"fragment1fragment2")
    closing_handshake(p)


echo_case("case_5_5", TWO, [("text", b"fragment1fragment2")], chop=1)
WITH_PING = [F(TEXT, b"fragment1", fin=False), F(PING, b"ping payload"), F(CONT, b"fragment2")]
# The ping in the middle of the message is answered first.
echo_case("case_5_6", WITH_PING, [("pong", b"ping payload"), ("text", b"fragment1fragment2")])


@case("case_5_7")
def _c5_7(connect):
    p = connect()
    p.send_frames_synced(WITH_PING[:2])
    # Answered while the message is still open, not after it completes.
    assert p.next_event() == ("pong", b"ping payload")
    p.send_frames_synced(WITH_PING[2:])
    assert p.next_event() == ("text", b"fragment1fragment2")
    closing_handshake(p)


echo_case("case_5_8", WITH_PING, [("pong", b"ping payload"), ("text", b"fragment1fragment2")],
          chop=1)
for cid, fin, mode in [("case_5_9", True, "once"), ("case_5_10", True, "frames"),
                       ("case_5_11", True, "octets"), ("case_5_12", False, "once"),
                       ("case_5_13", False, "frames"), ("case_5_14", False, "octets")]:
    fail_case(cid, [F(CONT, b"non-continuation payload", fin=fin), F(TEXT, HW)],
              [("close", 1002)], mode)
fail_case("case_5_15", [F(TEXT, b"fragment1", fin=False), F(CONT, b"fragment2"),
                        F(CONT, b"fragment3", fin=False), F(TEXT, b"fragment4")],
          [("text", b"fragment1fragment2"), ("close", 1002)])
fail_case("case_5_16", 2 * [F(CONT, b"fragment1", fin=False), F(TEXT, b"fragment2", fin=False),
                            F(CONT, b"fragment3")], [("close", 1002)])
fail_case("case_5_17", 2 * [F(CONT, b"fragment1"), F(TEXT, b"fragment2", fin=False),
                            F(CONT, b"fragment3")], [("close", 1002)])
fail_case("case_5_18", [F(TEXT, b"fragment1", fin=False), F(TEXT, b"fragment2")],
          [("close", 1002)])


def _five_frags_two_pings(connect, delay):
    p = connect()
    p.send_frames_synced([F(TEXT, b"fragment1", fin=False), F(CONT, b"fragment2", fin=False),
                          F(PING, b"pongme 1!")], delay)
    assert p.next_event() == ("pong", b"pongme 1!")
    p.send_frames_synced([F(CONT, b"fragment3", fin=False), F(CONT, b"fragment4", fin=False),
                          F(PING, b"pongme 2!")], delay)
    assert p.next_event() == ("pong", b"pongme 2!")
    p.send_frames_synced([F(CONT, b"fragment5")], delay)
    assert p.next_event() == ("text", b"fragment1fragment2fragment3fragment4fragment5")
    closing_handshake(p)


# Autobahn waits 1 s between sends; 0.1 s makes the same point faster.
CASES["case_5_19"] = lambda connect: _five_frags_two_pings(connect, 0.1)
CASES["case_5_20"] = lambda connect: _five_frags_two_pings(connect, 0.02)
# Not in Autobahn: binary fragments, empty fragments, many fragments.
echo_case("case_5_x_binary_two_fragments",
          [F(BINARY, b"\x00\x01", fin=False), F(CONT, b"\xfe\xff")],
          [("binary", b"\x00\x01\xfe\xff")])
echo_case("case_5_x_binary_empty_fragments",
          [F(BINARY, b"", fin=False), F(CONT, b"", fin=False), F(CONT, b"\x01\x02", fin=False),
           F(CONT, b"")], [("binary", b"\x01\x02")])
BIN300 = bytes(range(256)) + bytes(44)
echo_case("case_5_x_binary_one_byte_fragments",
          [F(BINARY, BIN300[:1], fin=False)]
          + [F(CONT, BIN300[i:i + 1], fin=False) for i in range(1, 299)] + [F(CONT, BIN300[299:])],
          [("binary", BIN300)])
echo_case("case_5_x_binary_fragments_chopped",
          [F(BINARY, b"abc", fin=False), F(PING, b"p"), F(CONT, b"def", fin=False),
           F(PONG, b"q"), F(CONT, b"ghi")], [("pong", b"p"), ("binary", b"abcdefghi")], chop=1)
fail_case("case_5_x_binary_then_text_fragment",
          [F(BINARY, b"a", fin=False), F(TEXT, b"b")], [("close", 1002)])
fail_case("case_5_x_fragmented_close",
          [F(CLOSE, struct.pack("!H", 1000), fin=False), F(CONT, b"")], [("close", 1002)])

# ---- group 6: UTF-8

KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
KOSME_BAD = KOSME + b"\xed\xa0\x80edited"  # a surrogate in the middle
HELLO_U = "Hello-µ@ßöäüàá-UTF-8!!".encode()

echo_case("case_6_1_1", [F(TEXT)], [("text", b"")])
echo_case("case_6_1_2", [F(TEXT, fin=False), F(CONT, fin=False), F(CONT)], [("text", b"")])
echo_case("case_6_1_3", [F(TEXT, fin=False), F(CONT, b"middle frame payload", fin=False), F(CONT)],
          [("text", b"middle frame payload")])
echo_case("case_6_2_1", [F(TEXT, HELLO_U)], [("text", HELLO_U)])
_cut = HELLO_U.index("µ".encode())  # a code point boundary
echo_case("case_6_2_2", [F(TEXT, HELLO_U[:_cut], fin=False), F(CONT, HELLO_U[_cut:])],
          [("text", HELLO_U)])


def one_octet_frames(op, data):
    frs = [F(op if i == 0 else CONT, data[i:i + 1], fin=i == len(data) - 1)
           for i in range(len(data))]
    return frs


echo_case("case_6_2_3", one_octet_frames(TEXT, HELLO_U), [("text", HELLO_U)])
echo_case("case_6_2_4", one_octet_frames(TEXT, KOSME), [("text", KOSME)])
fail_case("case_6_3_1", [F(TEXT, KOSME_BAD)], [("close", 1007)])
fail_case("case_6_3_2", one_octet_frames(TEXT, KOSME_BAD), [("close", 1007)])


def _fail_fast(connect, parts, one_frame):
    """Send parts[0], check the server is still quiet; send parts[1] (which
    makes the text invalid), check 1007 comes BEFORE parts[2] is sent."""
    p = connect()
    if one_frame:
        key = os.urandom(4)
        payload = b"".join(parts)
        raw = hdr(TEXT, len(payload)) + key + mask_fast(payload, key)
        h = len(raw) - len(payload)
        cuts = [0, h + len(parts[0]), h + len(parts[0]) + len(parts[1]), len(raw)]
        chunks = [raw[cuts[i]:cuts[i + 1]] for i in range(3)]
    else:
        chunks = [F(TEXT, parts[0], fin=False), F(CONT, parts[1], fin=False), F(CONT, parts[2])]
    p.send(chunks[0])
    p.expect_nothing(0.2)
    p.send(chunks[1])
    ev = p.next_event(timeout=2.0)
    assert ev == ("close", 1007), f"not failed fast on invalid UTF-8: {ev}"
    p.try_send(chunks[2])
    assert p.events_until_eof() == []


CASES["case_6_4_1"] = lambda c: _fail_fast(c, [KOSME, b"\xf4\x90\x80\x80", b"edited"], False)
CASES["case_6_4_2"] = lambda c: _fail_fast(c, [KOSME + b"\xf4", b"\x90", b"\x80\x80edited"], False)
CASES["case_6_4_3"] = lambda c: _fail_fast(c, [KOSME, b"\xf4\x90\x80\x80", b"edited"], True)
CASES["case_6_4_4"] = lambda c: _fail_fast(c, [KOSME + b"\xf4", b"\x90", b"\x80\x80edited"], True)


def utf8_sequences():
    """Autobahn 6.5-6.23: Markus Kuhn's UTF-8 decoder test cases, as
    (valid, bytes) lists per sub-category, in Autobahn's order."""
    seqs = []
    seqs.append([(True, b"hello\x24world"), (True, b"hello\xc2\xa2world"),
                 (True, b"hello\xe2\x82\xacworld"), (True, b"hello\xf0\xa4\xad\xa2world"),
                 (True, KOSME)])
    # All prefixes of KOSME: valid exactly when they end on a code point.
    ends = {2, 5, 7, 9, 11}
    seqs.append([(i in ends, KOSME[:i]) for i in range(1, len(KOSME) + 1)])
    seqs.append([(True, b"\x00"), (True, b"\xc2\x80"), (True, b"\xe0\xa0\x80"),
                 (True, b"\xf0\x90\x80\x80")])
    seqs.append([(False, b"\xf8\x88\x80\x80\x80"), (False, b"\xfc\x84\x80\x80\x80\x80")])
    seqs.append([(True, b"\x7f"), (True, b"\xdf\xbf"), (True, b"\xef\xbf\xbf"),
                 (True, b"\xf4\x8f\xbf\xbf")])
    seqs.append([(False, b"\xf7\xbf\xbf\xbf"), (False, b"\xfb\xbf\xbf\xbf\xbf"),
                 (False, b"\xfd\xbf\xbf\xbf\xbf\xbf")])
    seqs.append([(True, b"\xed\x9f\xbf"), (True, b"\xee\x80\x80"), (True, b"\xef\xbf\xbd"),
                 (True, b"\xf4\x8f\xbf\xbf"), (False, b"\xf4\x90\x80\x80")])
    seqs.append([(False, x) for x in [b"\x80", b"\xbf", b"\x80\xbf", b"\x80\xbf\x80",
                                      b"\x80\xbf\x80\xbf", b"\x80\xbf\x80\xbf\x80",
                                      b"\x80\xbf\x80\xbf\x80\xbf", bytes(range(0x80, 0xbf))]])
    seqs.append([(False, b"".join(bytes([i, 0x20]) for i in range(a, b)))
                 for a, b in [(0xc0, 0xdf), (0xe0, 0xef), (0xf0, 0xf7), (0xf8, 0xfb), (0xfc, 0xfd)]])
    k = [b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80", b"\xfc\x80\x80\x80\x80",
         b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf", b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf"]
    seqs.append([(False, x) for x in k])
    seqs.append([(False, b"".join(k))])
    seqs.append([(False, b"\xfe"), (False, b"\xff"), (False, b"\xfe\xfe\xff\xff")])
    seqs.append([(False, x) for x in [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",
                                      b"\xf8\x80\x80\x80\xaf", b"\xfc\x80\x80\x80\x80\xaf"]])
    seqs.append([(False, x) for x in [b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf",
                                      b"\xf8\x87\xbf\xbf\xbf", b"\xfc\x83\xbf\xbf\xbf\xbf"]])
    seqs.append([(False, x) for x in [b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80",
                                      b"\xf8\x80\x80\x80\x80", b"\xfc\x80\x80\x80\x80\x80"]])
    seqs.append([(False, x) for x in [b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80",
                                      b"\xed\xaf\xbf", b"\xed\xb0\x80", b"\xed\xbe\x80",
                                      b"\xed\xbf\xbf"]])
    seqs.append([(False, a + b) for a, b in [
        (b"\xed\xa0\x80", b"\xed\xb0\x80"), (b"\xed\xa0\x80", b"\xed\xbf\xbf"),
        (b"\xed\xad\xbf", b"\xed\xb0\x80"), (b"\xed\xad\xbf", b"\xed\xbf\xbf"),
        (b"\xed\xae\x80", b"\xed\xb0\x80"), (b"\xed\xae\x80", b"\xed\xbf\xbf"),
        (b"\xed\xaf\xbf", b"\xed\xb0\x80"), (b"\xed\xaf\xbf", b"\xed\xbf\xbf")]])
    nonchars = [(True, b"\xef\xbf\xbe"), (True, b"\xef\xbf\xbf")]
    for z1 in b"\xf0\xf1\xf2\xf3\xf4":
        for z2 in b"\x8f\x9f\xaf\xbf":
            if z1 == 0xF4 and z2 != 0x8F:
                continue  # above U+10FFFF
            for z3 in b"\xbe\xbf":
                zz = bytes([z1, z2, 0xBF, z3])
                if zz not in (b"\xf0\x8f\xbf\xbe", b"\xf0\x8f\xbf\xbf"):  # overlong
                    nonchars.append((True, zz))
    seqs.append(nonchars)
    seqs.append([(True, b"\xef\xbf" + bytes([c])) for c in range(0xB9, 0xC0)])
    return seqs


def _python_says(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _utf8_case(valid, data):
    def run(connect):
        # The same payload three ways, each on its own connection: one frame,
        # one frame written a byte at a time, and one frame per byte (so the
        # invalid byte and the sequence it breaks are in different frames).
        ways = [[F(TEXT, data)], None, one_octet_frames(TEXT, data)]
        for i, frames in enumerate(ways):
            p = connect()
            if i == 1:
                p.send_chopped(F(TEXT, data), 1, tolerate_close=not valid)
            else:
                p.try_send(b"".join(frames))
            if valid:
                assert p.next_event() == ("text", data), f"way {i}"
                closing_handshake(p)
            else:
                assert p.events_until_eof() == [("close", 1007)], f"way {i}"
            p.close()
    return run


for _i, _grp in enumerate(utf8_sequences(), 5):
    for _j, (_valid, _data) in enumerate(_grp, 1):
        # Our table must agree with an independent strict decoder.
        assert _valid == _python_says(_data), (_i, _j, _data)
        CASES[f"case_6_{_i}_{_j}"] = _utf8_case(_valid, _data)

# Not in Autobahn: code points around the edges the validator special-cases,
# split across two fragments at every position.
EDGES = [(True, "\U0010FFFF".encode()), (True, "\uFFFF".encode()), (True, "\uD7FF".encode()),
         (True, "\uE000".encode()), (True, "\U00010000".encode()), (True, "\u0800".encode()),
         (False, b"\xed\xa0\x80"), (False, b"\xed\xbf\xbf"), (False, b"\xf4\x90\x80\x80"),
         (False, b"\xe0\x9f\xbf"), (False, b"\xf0\x8f\xbf\xbf"), (False, b"\xc1\xbf"),
         (False, b"\xf5\x80\x80\x80")]


def _edge_case(valid, cp):
    def run(connect):
        data = b"a" + cp + b"z"
        for cut in range(1, len(data)):
            p = connect()
            p.try_send(F(TEXT, data[:cut], fin=False) + F(CONT, data[cut:]))
            if valid:
                assert p.next_event() == ("text", data), cut
                closing_handshake(p)
            else:
                assert p.events_until_eof() == [("close", 1007)], cut
            p.close()
    return run


for _j, (_valid, _cp) in enumerate(EDGES, 1):
    assert _valid == _python_says(_cp)
    CASES[f"case_6_x_edges_{_j}_{_cp.hex()}"] = _edge_case(_valid, _cp)
# A message ending inside a code point is invalid even when every fragment
# so far was fine.
fail_case("case_6_x_truncated_at_fin", [F(TEXT, b"ab\xe2\x82", fin=False), F(CONT, b"")],
          [("close", 1007)])
# Binary messages are never UTF-8 checked.
echo_case("case_6_x_binary_not_checked", [F(BINARY, b"\xff\xfe\xed\xa0\x80")],
          [("binary", b"\xff\xfe\xed\xa0\x80")])

# ---- group 7: close handling

fail_case("case_7_1_1", [F(TEXT, b"Hello World!"), close_frame(1000)],
          [("text", b"Hello World!"), ("close", 1000)])
fail_case("case_7_1_2", [close_frame(1000), close_frame(1000)], [("close", 1000)])
fail_case("case_7_1_3", [close_frame(1000), F(PING)], [("close", 1000)])
fail_case("case_7_1_4", [close_frame(1000), F(TEXT, b"Hello World!")], [("close", 1000)])
fail_case("case_7_1_5", [F(TEXT, b"fragment1", fin=False), close_frame(1000), F(CONT, b"fragment2")],
          [("close", 1000)])
BIG256 = (b"BAsd7&jh23" * 26215)[:262144]


@case("case_7_1_6")
def _c7_1_6(connect):
    # The 256 KiB message is read before the close behind it, so its echo is
    # queued first: this server's order is deterministic.
    p = connect()
    p.send(big_frame(TEXT, BIG256) + close_frame(1000) + F(PING))
    assert p.events_until_eof() == [("text", BIG256), ("close", 1000)]


@case("case_7_1_x_frames_after_close_separately")
def _c7_1_x(connect):
    # Not in Autobahn: the ping and text after the close come in later writes.
    p = connect()
    p.send(close_frame(1000))
    time.sleep(0.05)
    p.try_send(F(PING, b"late"))
    p.try_send(F(TEXT, b"late"))
    assert p.events_until_eof() == [("close", 1000)]


fail_case("case_7_3_1", [close_frame()], [("close", None)])
fail_case("case_7_3_2", [F(CLOSE, b"a")], [("close", 1002)])
fail_case("case_7_3_3", [close_frame(1000)], [("close", 1000)])
fail_case("case_7_3_4", [close_frame(1000, b"Hello World!")], [("close", 1000)])
fail_case("case_7_3_5", [close_frame(1000, b"*" * 123)], [("close", 1000)])
fail_case("case_7_3_6", [close_frame(1000, b"*" * 124)], [("close", 1002)])
fail_case("case_7_5_1", [close_frame(1000, KOSME_BAD)], [("close", 1007)])
for _j, _code in enumerate([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                            3000, 3999, 4000, 4999], 1):
    fail_case(f"case_7_7_{_j}", [close_frame(_code)], [("close", _code)])
for _j, _code in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999], 1):
    fail_case(f"case_7_9_{_j}", [close_frame(_code)], [("close", 1002)])
# Older Autobahn releases also had 1012-1015 in 7.9.x. 1012-1014 have been
# registered with IANA since, but this server accepts exactly RFC 6455's
# 1000-1003, 1007-1011 and 3000-4999 (PROTOCOL.md), so they fail the
# connection; 1015 is reserved (never on the wire) like 1005/1006.
for _code in (1012, 1013, 1014, 1015):
    fail_case(f"case_7_9_x_{_code}", [close_frame(_code)], [("close", 1002)])
fail_case("case_7_13_1", [close_frame(5000)], [("close", 1002)])
fail_case("case_7_13_2", [close_frame(65535)], [("close", 1002)])
# Not in Autobahn: a valid code with a reason that is valid UTF-8, split
# across reads; an invalid code is reported before a bad reason.

@case("case_7_x_close_reason_octets")
def _c7_x_oct(connect):
    p = connect()
    p.send_chopped(close_frame(4000, "bye ☺".encode()), 1, delay=0.001)
    assert p.events_until_eof() == [("close", 4000)]


fail_case("case_7_x_bad_code_and_bad_reason", [close_frame(999, b"\xff")], [("close", 1002)])
fail_case("case_7_x_unmasked_frame", [b"\x81\x05hello"], [("close", 1002)])


# ---- group 10: auto-fragmentation


@case("case_10_1_1")
def _c10_1_1(connect):
    # The 64 KiB message goes out as 1300-byte frames (Autobahn's
    # autoFragmentSize) and is read back in 1300-byte recv()s.
    p = connect(recv_size=1300)
    payload = b"*" * 65536
    frs = [F(TEXT if i == 0 else CONT, payload[i:i + 1300], fin=i + 1300 >= len(payload))
           for i in range(0, len(payload), 1300)]
    assert len(frs) == 51
    p.send(b"".join(frs))
    assert p.next_event() == ("text", payload)
    closing_handshake(p)


@case("case_10_1_x_small_window_small_reads")
def _c10_1_x(connect):
    # Not in Autobahn: a 4 KiB receive window and 97-byte reads, so the
    # server's writes are partial and must resume where they stopped.
    p = connect(recv_size=97, rcvbuf=4096)
    payload = os.urandom(65536)
    p.send(big_frame(BINARY, payload) + big_frame(TEXT, b"x" * 65536))
    assert p.next_event() == ("binary", payload)
    assert p.next_event() == ("text", b"x" * 65536)
    closing_handshake(p)


def test_case_x_frames_pipelined_with_handshake(echo_server):
    # Not in Autobahn: frames in the same write as the upgrade request are
    # the first frames of the connection (they are in the server's read
    # buffer behind the request head).
    port = echo_server.port
    s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    s.sendall(wsraw.upgrade_request(port)
              + F(TEXT, KOSME) + F(PING, b"p") + F(BINARY, b"\x00") + close_frame(3001))
    head, rest = wsraw.read_head(s, chunk_size=65536)
    assert head.startswith(b"HTTP/1.1 101"), head
    p = Peer.__new__(Peer)
    p.sock, p.buf, p.pos, p.recv_size, p.reset = s, bytearray(rest), 0, 65536, False
    assert p.events_until_eof() == [("text", KOSME), ("pong", b"p"), ("binary", b"\x00"),
                                    ("close", 3001)]


@pytest.mark.parametrize("cid", list(CASES))
def test_case(cid, echo_server):
    def connect(**kw):
        return Peer(echo_server.port, **kw)
    CASES[cid](connect)


# Groups 1-7 and 10 again with permessage-deflate negotiated (issue 15): the
# client offers it and the server agrees, but is told never to compress
# (deflate_min_size at its maximum) so that the expected events are the same
# bytes; what changes is the server's parser, which now inflates and reads
# RSV1 as "compressed". The cases that set RSV1 on a data frame mean
# something else once the extension is agreed and are left out (their
# compressed counterparts are in test_compression.py). One server for all.

DEFLATE_OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}


def rsv1_on_data(cid):
    """Does the case send a first data frame with RSV1 (0x40) alone? (RSV2
    or RSV3, RSV1 on a control or continuation frame stay 1002.)"""
    return cid in ("case_3_4", "case_3_x_rsv4_text", "case_3_x_rsv4_binary")


@pytest.fixture(scope="module")
def deflate_plain_server(tmp_path_factory):
    from conftest import Server, TEST_DEFAULTS
    srv = Server(tmp_path_factory.mktemp("deflate-plain"), dict(TEST_DEFAULTS, **{
        "mode": "echo", "permessage_deflate": "true", "deflate_min_size": 64 * 1024 * 1024,
        "max_frame_size": 16 * 1024 * 1024 + 1024, "max_message_size": 16 * 1024 * 1024 + 1024,
        "max_fragmented_bytes": 16 * 1024 * 1024 + 1024}))
    yield srv
    rc = srv.stop()
    assert rc == 0, f"wsgate exited with {rc}:\n{srv.log()[-4000:]}"


def deflate_peer(port, recv_size=1 << 20, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5.0)
    s.connect(("127.0.0.1", port))
    s.sendall(wsraw.upgrade_request(port, headers=DEFLATE_OFFER))
    head, rest = wsraw.read_head(s)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"Sec-WebSocket-Extensions: permessage-deflate" in head, head
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    p = Peer.__new__(Peer)
    p.sock, p.buf, p.pos, p.recv_size, p.reset = s, bytearray(rest), 0, recv_size, False
    return p


@pytest.mark.parametrize("cid", [c for c in CASES if not rsv1_on_data(c)])
def test_case_deflate_negotiated(cid, deflate_plain_server):
    CASES[cid](lambda **kw: deflate_peer(deflate_plain_server.port, **kw))


# ---- group 9: limits and performance

KiB, MiB = 1024, 1024 * 1024
G9 = {}
for _j, _n in enumerate([64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 8 * MiB, 16 * MiB], 1):
    G9[f"case_9_1_{_j}"] = ("whole", TEXT, _n, None)
    G9[f"case_9_2_{_j}"] = ("whole", BINARY, _n, None)
for _j, _fs in enumerate([64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB], 1):
    G9[f"case_9_3_{_j}"] = ("frags", TEXT, 4 * MiB, _fs)
    G9[f"case_9_4_{_j}"] = ("frags", BINARY, 4 * MiB, _fs)
# Not in Autobahn: the biggest message the fixture allows, fragmented.
G9["case_9_3_x_16MiB_in_64KiB"] = ("frags", TEXT, 16 * MiB, 64 * KiB)
G9["case_9_4_x_16MiB_in_64KiB"] = ("frags", BINARY, 16 * MiB, 64 * KiB)
for _j, _cs in enumerate([64, 128, 256, 512, 1024, 2048], 1):
    G9[f"case_9_5_{_j}"] = ("chop", TEXT, MiB, _cs)
    G9[f"case_9_6_{_j}"] = ("chop", BINARY, MiB, _cs)
for _j, _n in enumerate([0, 16, 64, 256, KiB, 4 * KiB], 1):
    G9[f"case_9_7_{_j}"] = ("burst", TEXT, _n, 1000)
    G9[f"case_9_8_{_j}"] = ("burst", BINARY, _n, 1000)


def _payload(op, n, seed=0):
    if op == TEXT:
        # Multi-byte characters so fragment edges fall inside code points.
        unit = ("*ä€😀-%d" % seed).encode()
        return (unit * (n // len(unit) + 1))[:n].decode("utf-8", "ignore").encode().ljust(n, b"*")
    return (os.urandom(256) * (n // 256 + 1))[:n]


@pytest.mark.parametrize("cid", list(G9))
def test_case_9(cid, echo_server):
    kind, op, n, arg = G9[cid]
    name = OPNAME[op]
    p = Peer(echo_server.port)
    if kind == "burst":
        msgs = [_payload(op, n, i) if op == BINARY or n < 4 else b"%04d" % i + _payload(op, n - 4)
                for i in range(arg)]
        if n >= 4:
            assert len(set(msgs)) == arg  # order is checkable
        p.send(b"".join(F(op, m) for m in msgs))  # one write for the whole burst
        for i, m in enumerate(msgs):
            assert p.next_event() == (name, m), f"message {i}"
    else:
        payload = _payload(op, n)
        assert len(payload) == n
        if kind == "whole":
            p.send(big_frame(op, payload))
        elif kind == "frags":
            p.send(fragments(op, payload, arg))
        else:
            p.send_chopped(big_frame(op, payload), arg)
        ev = p.next_event(timeout=30.0)
        assert ev[0] == name and len(ev[1]) == n
        assert ev[1] == payload
    closing_handshake(p)


def test_case_9_x_frame_too_big(start_server):
    # Not in Autobahn: one byte over max_frame_size fails with 1009 from the
    # header alone (the payload is never sent).
    srv = start_server(settings={"mode": "echo", "max_frame_size": 1000,
                                 "max_message_size": 4000})
    p = Peer(srv.port)
    p.send(F(BINARY, b"x" * 1000))
    assert p.next_event() == ("binary", b"x" * 1000)
    p.send(hdr(BINARY, 1001) + os.urandom(4))
    assert p.events_until_eof() == [("close", 1009)]


def test_case_9_x_message_too_big(start_server):
    # Not in Autobahn: fragments each within max_frame_size whose sum is
    # over max_message_size.
    srv = start_server(settings={"mode": "echo", "max_frame_size": 1000,
                                 "max_message_size": 2500})
    p = Peer(srv.port)
    ok = b"y" * 2500
    p.send(F(TEXT, ok[:1000], fin=False) + F(CONT, ok[1000:2000], fin=False) + F(CONT, ok[2000:]))
    assert p.next_event() == ("text", ok)
    p.send(F(TEXT, b"z" * 1000, fin=False) + F(CONT, b"z" * 1000, fin=False))
    p.expect_nothing(0.1)
    p.try_send(F(CONT, b"z" * 501))
    assert p.events_until_eof() == [("close", 1009)]


# ---- an independent client: python3-websockets (legacy asyncio API)

def _ws_run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536, MiB])
def test_websockets_echo(n, echo_server):
    import websockets

    async def go():
        async with websockets.connect(echo_server.url, max_size=None) as ws:
            text = ("ä" * n)[: n // 2] + "x" * (n - 2 * (n // 2))  # n bytes of UTF-8
            assert len(text.encode()) == n
            await ws.send(text)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(got, str) and got == text
            data = os.urandom(n)
            await ws.send(data)
            got = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(got, bytes) and got == data
        assert ws.close_code == 1000
    _ws_run(go())


def test_websockets_fragmented_and_ping(echo_server):
    import websockets

    async def go():
        async with websockets.connect(echo_server.url) as ws:
            await ws.send(["κόσ", "με", "", "!"])  # one message, four frames
            assert await asyncio.wait_for(ws.recv(), 5) == "κόσμε!"
            await ws.send([b"\x00\x01", b"\x02"])
            assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01\x02"
            waiter = await ws.ping(b"are you there")
            await asyncio.wait_for(waiter, 5)  # resolved only by the matching pong
    _ws_run(go())


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_websockets_close_code_echoed(code, echo_server):
    import websockets

    async def go():
        ws = await websockets.connect(echo_server.url)
        await ws.close(code=code, reason="bye")
        assert ws.close_code == code
        assert ws.close_reason == ""  # the server echoes the code only
    _ws_run(go())


# ---- groups 12 and 13: permessage-deflate (RFC 7692)
#
# Autobahn's group 12 echoes payloads of 16 B .. 128 KiB (whole and
# fragmented) over a compressed connection; group 13 repeats that for
# offers of client_no_context_takeover and client_max_window_bits. Here the
# client compresses with zlib itself (test_compression.Raw reads the server's
# frames with RSV1 and inflates them), so every byte on the wire is checked:
# each echo must come back compressed (RSV1) and inflate to the payload.
# Fewer messages per case than Autobahn's 1000 keep the run short.

from test_compression import Raw, deflate_frame  # noqa: E402

G12_SIZES = [16, 64, 256, KiB, 4 * KiB, 8 * KiB, 16 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, 256 * KiB]
G12_FRAGS = [(64 * KiB, 256), (64 * KiB, 4 * KiB), (128 * KiB, 1300), (128 * KiB, 32 * KiB)]


def g12_payload(kind, n, i):
    """Autobahn's payload kinds, made up: JSON and prose (compressible, text),
    random bytes (incompressible) and a half-random binary."""
    if kind == "json":
        unit = json_unit(i)
    elif kind == "prose":
        unit = ("Habe nun, ach! Philosophie, Juristerei und Medizin, %d. " % i).encode()
    elif kind == "random":
        return os.urandom(n)
    else:
        unit = os.urandom(64) + b"\0" * 64
    return (unit * (n // len(unit) + 1))[:n]


def json_unit(i):
    return ('{"type":"chat","data":{"roomId":"general","senderId":"user-%d",'
            '"message":"hello there","seq":%d}},' % (i, i)).encode()


def g12_kind_op(kind):
    return TEXT if kind in ("json", "prose") else BINARY


class Deflater:
    """The client side of the agreed parameters: a fresh compressor per
    message under client_no_context_takeover, one for the connection's life
    otherwise."""

    def __init__(self, wbits=15, takeover=False):
        self.wbits, self.takeover = wbits, takeover
        self.ctx = zlib.compressobj(6, zlib.DEFLATED, -wbits)

    def __call__(self, data):
        if not self.takeover:
            self.ctx = zlib.compressobj(6, zlib.DEFLATED, -self.wbits)
        out = self.ctx.compress(data) + self.ctx.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]


def deflate_echo(c, msgs, kind, comp, frag=None, window=512 * KiB):
    """Send msgs compressed (each cut into frames of `frag` compressed bytes
    when given), at most `window` bytes outstanding, and check every echo:
    compressed (RSV1) when it is compressible and at least deflate_min_size
    (64) bytes, plain when compressing would not make it smaller."""
    op = g12_kind_op(kind)
    pending = []
    outstanding = 0

    def drain(upto):
        nonlocal outstanding
        while pending and outstanding > upto:
            m = pending.pop(0)
            got_op, rsv1, data = c.message(timeout=30.0)
            assert got_op == op and data == m, f"echo of {len(m)} bytes differs"
            if kind in ("json", "prose"):
                assert rsv1 == (len(m) >= 64), f"RSV1 {rsv1} on {len(m)} bytes of {kind}"
            elif kind == "random":
                assert not rsv1, "random bytes sent compressed"
            outstanding -= len(m)

    for m in msgs:
        body = comp(m)
        if frag:
            parts = [body[i:i + frag] for i in range(0, len(body), frag)] or [b""]
            wire = b"".join(deflate_frame(op if k == 0 else 0, p, fin=k == len(parts) - 1, rsv1=k == 0)
                            for k, p in enumerate(parts))
        else:
            wire = deflate_frame(op, body)
        c.send(wire)
        pending.append(m)
        outstanding += len(m)
        drain(window)
    drain(-1)


def g12_count(n):
    return max(3, min(40, (1 * MiB) // n))


G12 = {}
for kind in ("json", "prose", "random", "halfrandom"):
    for n in G12_SIZES:
        G12[f"case_12_{kind}_{n}"] = (kind, n, None)
    for n, frag in G12_FRAGS:
        G12[f"case_12_{kind}_{n}_frag{frag}"] = (kind, n, frag)


@pytest.fixture
def deflate_echo_server(start_server):
    return start_server(settings={
        "mode": "echo", "permessage_deflate": "true",
        "max_frame_size": MiB, "max_message_size": MiB, "max_fragmented_bytes": MiB,
    })


@pytest.mark.parametrize("cid", list(G12))
def test_case_12(cid, deflate_echo_server):
    kind, n, frag = G12[cid]
    c = Raw(deflate_echo_server.port, ["permessage-deflate; client_max_window_bits"])
    assert c.extensions == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    msgs = [g12_payload(kind, n, i) for i in range(g12_count(n))]
    deflate_echo(c, msgs, kind, Deflater(), frag)
    c.send(close_frame(1000))
    assert c.close_code() == 1000


# Group 13: the offer's parameters (Autobahn 13.1-13.7, with 9 bits for 8:
# zlib's raw deflate compresses with at least 9) against two server
# configurations: the default, which asks every client for
# client_no_context_takeover, and one that lets clients keep their context.
G13_OFFERS = {
    "1_plain": ["permessage-deflate"],
    "2_cnct": ["permessage-deflate; client_no_context_takeover"],
    "3_cmwb9": ["permessage-deflate; client_max_window_bits=9"],
    "4_cmwb15": ["permessage-deflate; client_max_window_bits=15"],
    "5_cnct_cmwb9": ["permessage-deflate; client_no_context_takeover; client_max_window_bits=9"],
    "6_cnct_cmwb15": ["permessage-deflate; client_no_context_takeover; client_max_window_bits=15"],
    "7_several": ["permessage-deflate; client_no_context_takeover; client_max_window_bits=9, "
                  "permessage-deflate; client_no_context_takeover, permessage-deflate"],
    "x_smwb9": ["permessage-deflate; server_max_window_bits=9; client_max_window_bits"],
    "x_smwb15_cmwb9": ["permessage-deflate; server_max_window_bits=15; client_max_window_bits=9"],
}
G13_SERVERS = {
    "default": {},
    "takeover": {"deflate_client_no_context_takeover": "false"},
    "small_windows": {"deflate_client_no_context_takeover": "false",
                      "deflate_client_max_window_bits": 9, "deflate_server_max_window_bits": 9},
}
G13_MESSAGES = [("json", 16), ("json", 1024), ("prose", 4 * KiB), ("random", 8 * KiB),
                ("json", 64 * KiB), ("halfrandom", 128 * KiB)]


def agreed(answer):
    """The answer's parameters: {name: value or True}."""
    assert answer and answer.startswith("permessage-deflate"), answer
    out = {}
    for p in answer.split(";")[1:]:
        k, _, v = p.strip().partition("=")
        out[k] = int(v) if v else True
    return out


@pytest.mark.parametrize("offer", list(G13_OFFERS))
@pytest.mark.parametrize("config", list(G13_SERVERS))
def test_case_13(config, offer, start_server):
    srv = start_server(settings=dict({"mode": "echo", "permessage_deflate": "true",
                                      "max_message_size": MiB}, **G13_SERVERS[config]))
    c = Raw(srv.port, G13_OFFERS[offer])
    if config == "small_windows" and "client_max_window_bits" not in G13_OFFERS[offer][0].split(",")[0]:
        # The server must limit the client's window and the first offer
        # gives it no way to (RFC 7692 7.1.2.2); with several offers the
        # next one may do.
        assert c.extensions is None or "client_max_window_bits" in c.extensions
        if c.extensions is None:
            c.send(close_frame(1000))
            assert c.close_code() == 1000
            return
    params = agreed(c.extensions)
    assert params.get("server_no_context_takeover") is True
    first = G13_OFFERS[offer][0].split(",")[0]
    cnct = "client_no_context_takeover" in first or not G13_SERVERS[config]
    if offer == "7_several":
        cnct = True  # the first offer is honoured
    assert params.get("client_no_context_takeover", False) is cnct
    if "server_max_window_bits=9" in first or config == "small_windows":
        assert params.get("server_max_window_bits") == 9
    offered_cmwb = 9 if "client_max_window_bits=9" in first else 15
    wbits = min(offered_cmwb, params.get("client_max_window_bits", 15))
    comp = Deflater(wbits, takeover=not cnct)
    for i, (kind, n) in enumerate(G13_MESSAGES):
        msgs = [g12_payload(kind, n, i * 10 + k) for k in range(5)]
        deflate_echo(c, msgs, kind, comp, frag=1000 if i % 2 else None)
    c.send(close_frame(1000))
    assert c.close_code() == 1000


def test_case_13_websockets_client(start_server):
    """An independent client: python3-websockets' permessage-deflate with
    context takeover and 9-bit windows both ways."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true",
                                 "deflate_client_no_context_takeover": "false",
                                 "max_message_size": MiB})
    ext = ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=9)

    async def go():
        import websockets
        async with websockets.connect(srv.url, extensions=[ext], compression=None, max_size=None) as ws:
            assert "server_max_window_bits=9" in ws.response_headers["Sec-WebSocket-Extensions"]
            for kind, n in G13_MESSAGES:
                for k in range(3):
                    m = g12_payload(kind, n, k)
                    await ws.send(m.decode() if g12_kind_op(kind) == TEXT else m)
                    got = await asyncio.wait_for(ws.recv(), 10)
                    assert (got.encode() if isinstance(got, str) else got) == m
    _ws_run(go())
