"""permessage-deflate (RFC 7692, issue 15) end to end: real clients
(python3-websockets, Node ws) and a raw client that compresses with zlib
itself, so the bytes on the wire (RSV1, the compressed payload) are checked,
not only what a library makes of them. See docs/compression.md."""
import asyncio
import json
import os
import socket
import struct
import subprocess
import time
import zlib

import pytest
import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

import wsraw

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8
TIMEOUT = 10.0
# What the server answers a browser's offer with the default configuration.
ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def compress(data, wbits=15, ctx=None):
    """data as one RFC 7692 message payload: raw deflate, sync flush, the
    trailing 00 00 ff ff removed. ctx (a compressobj) keeps the context."""
    c = ctx or zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class Raw:
    """A raw connection that offers `offer` (a list of header values, one
    Sec-WebSocket-Extensions header each) and reads frames with their RSV1
    bit, inflating the compressed ones as the server compresses them (no
    context takeover: a fresh inflater per message)."""

    def __init__(self, port, offer=(), path="/staging"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hdrs = {}
        req = wsraw.upgrade_request(port, path, hdrs).decode()
        req = req[:-2] + "".join(f"Sec-WebSocket-Extensions: {o}\r\n" for o in offer) + "\r\n"
        self.sock.sendall(req.encode())
        head, self.buf = wsraw.read_head(self.sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.headers = wsraw.parse_headers(head)
        self.extensions = self.headers.get("sec-websocket-extensions")

    def send(self, data):
        self.sock.sendall(data)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def frame(self, timeout=TIMEOUT):
        """(fin, rsv1, opcode, payload) of the next frame."""
        deadline = time.time() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b0 & 0x30, "server set RSV2/RSV3"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload

    def message(self, timeout=TIMEOUT):
        """(opcode, compressed?, plain payload) of the next data message."""
        fin, rsv1, op, data = self.frame(timeout)
        assert op in (TEXT, BINARY), f"opcode {op}"
        while not fin:
            fin, r, _, more = self.frame(timeout)
            assert not r, "RSV1 on a continuation frame"
            data += more
        if rsv1:
            assert self.extensions, "compressed frame without the extension"
            d = zlib.decompressobj(-15)
            data = d.decompress(data + b"\x00\x00\xff\xff")
        return op, rsv1, data

    def json(self, timeout=TIMEOUT):
        op, rsv1, data = self.message(timeout)
        assert op == TEXT
        return rsv1, json.loads(data)

    def close_code(self, timeout=TIMEOUT):
        """Read until the server's close frame; its code; then the server ends TCP."""
        deadline = time.time() + timeout
        while True:
            _, _, op, payload = self.frame(max(0.01, deadline - time.time()))
            if op == CLOSE:
                break
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
        return code

    def close(self):
        self.sock.close()


def deflate_frame(op, payload, fin=True, rsv1=True):
    """A masked client frame whose payload is already compressed."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload)
    if n < 126:
        h = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        h = struct.pack("!BBH", b0, 0xFE, n)
    else:
        h = struct.pack("!BBQ", b0, 0xFF, n)
    key = os.urandom(4)
    ks = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(ks, "little")).to_bytes(n, "little") if n else b""
    return h + key + masked


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


# ------------------------------------------------------------ API mode


def test_api_mixed_room_gets_the_right_bytes(start_server):
    """A room where two members negotiated the extension and two did not:
    one broadcast, compressed bytes (RSV1) to the first, plain bytes to the
    others, the same JSON for all; welcome and presence work compressed."""
    srv = start_server(settings={"permessage_deflate": "true"})
    url = srv.url + "?roomId=r1&userId="

    async def main():
        a = await websockets.connect(url + "alice", compression="deflate", open_timeout=5)
        assert a.response_headers["Sec-WebSocket-Extensions"] == ANSWER
        assert (await recv_json(a))["type"] == "welcome"
        b = await websockets.connect(url + "bob", compression=None, open_timeout=5)
        assert "Sec-WebSocket-Extensions" not in b.response_headers
        assert (await recv_json(b))["type"] == "welcome"
        assert (await recv_json(a))["data"]["userId"] == "bob"

        c = Raw(srv.port, ["permessage-deflate; client_max_window_bits"], "/staging?roomId=r1&userId=carol")
        assert c.extensions == ANSWER
        rsv1, welcome = c.json()
        assert welcome["type"] == "welcome" and welcome["data"]["userId"] == "carol"
        assert rsv1, "the welcome (over deflate_min_size) goes compressed"
        d = Raw(srv.port, [], "/staging?roomId=r1&userId=dave")
        assert d.extensions is None
        rsv1, welcome = d.json()
        assert welcome["type"] == "welcome" and not rsv1
        for ws in (a, b):
            j = await recv_json(ws)
            assert j["type"] == "user_joined" and j["data"]["userId"] == "carol"
        rsv1, j = c.json()  # presence, compressed
        assert j["type"] == "user_joined" and j["data"]["userId"] == "dave" and rsv1
        for ws in (a, b):
            assert (await recv_json(ws))["data"]["userId"] == "dave"

        text = "a chat line long enough to be compressed, " * 8
        await a.send(json.dumps({"type": "chat", "message": text}))
        got_a = await recv_json(a)
        got_b = await recv_json(b)
        rsv1_c, got_c = c.json()
        op, rsv1_d, raw_d = d.message()
        assert rsv1_c and not rsv1_d
        assert got_a == got_b == got_c == json.loads(raw_d)
        assert got_a["type"] == "chat" and got_a["data"]["message"] == text

        # A compressed message from the raw client is inflated and routed.
        c.send(deflate_frame(TEXT, compress(json.dumps({"type": "chat", "message": "from carol " * 20}).encode())))
        for ws in (a, b):
            m = await recv_json(ws)
            assert m["data"]["senderId"] == "carol" and m["data"]["message"] == "from carol " * 20
        assert c.json()[1]["data"]["senderId"] == "carol"
        assert json.loads(d.message()[2])["data"]["senderId"] == "carol"
        # Compression is per message: a plain frame on a negotiated
        # connection is fine too.
        c.send(deflate_frame(TEXT, b'{"type":"typing_indicator"}', rsv1=False))
        for ws in (a, b):
            assert (await recv_json(ws))["type"] == "typing_indicator"
        assert d.json()[1]["data"]["userId"] == "carol"
        await a.close()
        await b.close()
        c.close()
        d.close()
    run(main())
    # The $connect access line says who negotiated the extension.
    ext = {}
    for line in srv.log().splitlines():
        if '"event":"access"' in line and '"eventType":"CONNECT"' in line:
            e = json.loads(line)
            ext[e["connectionId"]] = e.get("extensions")
    assert sorted(ext.values(), key=str) == sorted(
        ["permessage-deflate", None, "permessage-deflate", None], key=str), ext


async def recv_json(ws, timeout=TIMEOUT):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


# ------------------------------------------------------------ echo mode


@pytest.mark.parametrize("params", [
    dict(client_no_context_takeover=True),
    dict(client_no_context_takeover=False),
    dict(client_no_context_takeover=False, client_max_window_bits=9, server_max_window_bits=9),
])
def test_echo_websockets_context_takeover(start_server, params):
    """Compressed echo with and without the client's context takeover: with
    it, a repeated message compresses to back-references into the previous
    one, which the server must still hold."""
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true",
                                 "deflate_client_no_context_takeover": "false",
                                 "max_message_size": 1 << 20})
    factory = ClientPerMessageDeflateFactory(compress_settings={"memLevel": 5}, **params)

    async def main():
        async with websockets.connect(srv.url, extensions=[factory], compression=None,
                                      max_size=None) as ws:
            hdr = ws.response_headers["Sec-WebSocket-Extensions"]
            assert hdr.startswith("permessage-deflate; server_no_context_takeover")
            assert ("client_no_context_takeover" in hdr) == params["client_no_context_takeover"]
            ext = ws.extensions[0]
            assert ext.remote_no_context_takeover
            for i in range(20):
                msg = "the same repetitive line %d " % (i % 3) * 50
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == msg
            data = os.urandom(70000)
            await ws.send(data)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == data
    run(main())


def test_raw_context_takeover_needs_the_previous_message(start_server):
    """The second message refers back into the first (one compressor for
    both): echoed right only if the server kept its inflate window."""
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true",
                                 "deflate_client_no_context_takeover": "false"})
    c = Raw(srv.port, ["permessage-deflate; client_max_window_bits"])
    assert c.extensions == "permessage-deflate; server_no_context_takeover"
    ctx = zlib.compressobj(6, zlib.DEFLATED, -15)
    msg = b"context takeover works when the window survives " * 4
    first, second = compress(msg, ctx=ctx), compress(msg, ctx=ctx)
    assert len(second) < 20 < len(first)  # only back-references
    c.send(deflate_frame(TEXT, first))
    assert c.message()[2] == msg
    c.send(deflate_frame(TEXT, second))
    assert c.message()[2] == msg
    c.close()


def test_echo_disabled_answers_no_extension(start_server):
    srv = start_server(settings={"mode": "echo"})  # permessage_deflate defaults to false
    c = Raw(srv.port, ["permessage-deflate; client_max_window_bits"])
    assert c.extensions is None
    c.close()

    async def main():
        async with websockets.connect(srv.url, compression="deflate") as ws:
            assert ws.extensions == []
            await ws.send("x" * 1000)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x" * 1000
    run(main())


@pytest.mark.parametrize("offer,answer", [
    (["permessage-deflate"], ANSWER),
    (["permessage-deflate; client_max_window_bits"], ANSWER),
    # A malformed offer does not spoil the next one (RFC 7692 section 5).
    (["permessage-deflate; foo, permessage-deflate; server_max_window_bits=10"],
     ANSWER + "; server_max_window_bits=10"),
    (["permessage-deflate; client_max_window_bits=7", "permessage-deflate; client_max_window_bits=9"],
     ANSWER),
    (["x-webkit-deflate-frame, permessage-deflate; SERVER_MAX_WINDOW_BITS=\"12\""],
     ANSWER + "; server_max_window_bits=12"),
    # Declined: no answer, the handshake goes on uncompressed.
    (["permessage-deflate; server_max_window_bits"], None),
    (["permessage-deflate; server_max_window_bits=16"], None),
    (["permessage-deflate; client_no_context_takeover; client_no_context_takeover"], None),
    (["permessage-deflate; server_no_context_takeover=1"], None),
    (["permessage-deflate;; client_max_window_bits"], None),
    (["x-webkit-deflate-frame"], None),
])
def test_offers(start_server, offer, answer):
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    c = Raw(srv.port, offer)
    assert c.extensions == answer
    # Whatever was agreed, the connection echoes a long message, compressed
    # exactly when the extension was agreed.
    c.send(wsraw.frame(TEXT, b"y" * 300))
    op, rsv1, data = c.message()
    assert data == b"y" * 300 and rsv1 == (answer is not None)
    c.close()


# ------------------------------------------------------------ failures


def test_bomb_closes_1009_with_bounded_memory(start_server):
    """~100 KB that inflate to 100 MB (DEFLATE cannot beat about 1:1030):
    closed with 1009 once the inflated size passes max_message_size, and the
    server's peak RSS grows by less than 2 x max_message_size."""
    limit = 1 << 20
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true",
                                 "max_message_size": limit, "max_frame_size": 1 << 20})
    bomb = compress(b"\0" * (100 << 20))
    assert len(bomb) < 110_000
    c = Raw(srv.port, ["permessage-deflate"])
    assert c.extensions
    c.send(deflate_frame(BINARY, compress(b"z" * 1000)))  # warm up one inflate
    assert c.message()[2] == b"z" * 1000
    before = rss_kib(srv.proc.pid, "VmRSS")
    c.send(deflate_frame(BINARY, bomb))
    assert c.close_code() == 1009
    peak = rss_kib(srv.proc.pid, "VmHWM")
    # AddressSanitizer's quarantine keeps every buffer the message outgrew
    # (and its shadow): twice the bound there; without the limit the growth
    # would be ~100 MB either way.
    with open(f"/proc/{srv.proc.pid}/maps") as f:
        factor = 4 if "libasan" in f.read() else 2
    assert (peak - before) * 1024 < factor * limit, f"RSS {before} KiB -> peak {peak} KiB"
    # The server is still fine.
    c2 = Raw(srv.port, ["permessage-deflate"])
    c2.send(deflate_frame(TEXT, compress(b"still here " * 10)))
    assert c2.message()[2] == b"still here " * 10
    c2.close()


def test_fragmented_bomb_closes_1009(start_server):
    """The limit holds across fragments, each far under max_frame_size."""
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true",
                                 "max_message_size": 65536})
    bomb = compress(b"A" * (10 << 20))
    c = Raw(srv.port, ["permessage-deflate"])
    parts = [bomb[i:i + 1000] for i in range(0, len(bomb), 1000)]
    data = deflate_frame(TEXT, parts[0], fin=False)
    data += b"".join(deflate_frame(0, p, fin=False, rsv1=False) for p in parts[1:-1])
    data += deflate_frame(0, parts[-1], rsv1=False)
    try:
        c.send(data)
    except OSError:
        pass
    assert c.close_code() == 1009


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff",                          # block type 3: reserved
    compress(b"hello " * 50)[:-3],                # stops inside a block
])
def test_invalid_deflate_data_closes_1007(start_server, payload):
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    c = Raw(srv.port, ["permessage-deflate"])
    c.send(deflate_frame(TEXT, payload))
    assert c.close_code() == 1007


def test_text_invalid_utf8_after_inflating_closes_1007(start_server):
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    c = Raw(srv.port, ["permessage-deflate"])
    c.send(deflate_frame(TEXT, compress(b"ok " * 40 + b"\xc3\x28")))
    assert c.close_code() == 1007


@pytest.mark.parametrize("setting", ["true", "false"])
def test_rsv1_without_the_extension_closes_1002(start_server, setting):
    srv = start_server(settings={"mode": "echo", "permessage_deflate": setting})
    c = Raw(srv.port, [])  # offers nothing
    assert c.extensions is None
    c.send(deflate_frame(TEXT, compress(b"hello " * 30)))
    assert c.close_code() == 1002


def test_rsv1_on_a_continuation_closes_1002(start_server):
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    c = Raw(srv.port, ["permessage-deflate"])
    body = compress(b"hello " * 30)
    c.send(deflate_frame(TEXT, body[:10], fin=False) + deflate_frame(0, body[10:], rsv1=True))
    assert c.close_code() == 1002


# ------------------------------------------------------------ Node ws


NODE_CLIENT = r"""
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[1]);  // perMessageDeflate offered by default
const big = JSON.stringify({type: 'chat', message: 'node says hello '.repeat(400)});
ws.on('open', () => {
  if (!/permessage-deflate/.test(ws.extensions)) { console.error('not negotiated: ' + ws.extensions); process.exit(2); }
  ws.send(big);
});
let n = 0;
ws.on('message', (data) => {
  if (data.toString() !== big) { console.error('bad echo'); process.exit(3); }
  if (++n < 5) ws.send(big); else { console.log('ok ' + ws.extensions); ws.close(1000); }
});
ws.on('close', (code) => process.exit(code === 1000 && n === 5 ? 0 : 4));
ws.on('error', (e) => { console.error(String(e)); process.exit(5); });
setTimeout(() => { console.error('timeout'); process.exit(6); }, 20000);
"""


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, "node_modules", "ws")),
                    reason="needs node and node_modules/ws")
def test_node_ws_client(start_server):
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    p = subprocess.run(["node", "-e", NODE_CLIENT, srv.url], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("ok permessage-deflate"), p.stdout


# ------------------------------------------------------------ memory


def parser_bytes(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("wsgate_parser_bytes{") or line.startswith("wsgate_parser_bytes "):
                return float(line.split()[1])
    raise AssertionError("no wsgate_parser_bytes in /metrics")


def wait_for(cond, what, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v is not None:
            return v
        time.sleep(0.1)
    raise AssertionError(what)


def test_inflate_state_in_metrics(start_server):
    """wsgate_parser_bytes shows the inflate state: connections that keep
    their context hold about 39 KiB each for their life; with
    client_no_context_takeover the sweep releases it between messages."""
    n = 10
    srv = start_server(settings={"permessage_deflate": "true",
                                 "deflate_client_no_context_takeover": "false"})
    # One room each: no presence messages in between.
    keep = [Raw(srv.port, ["permessage-deflate; client_max_window_bits"], f"/staging?roomId=k{i}")
            for i in range(n)]
    reset = [Raw(srv.port, ["permessage-deflate; client_no_context_takeover"], f"/staging?roomId=r{i}")
             for i in range(n)]
    assert all(c.extensions == "permessage-deflate; server_no_context_takeover" for c in keep)
    assert all("client_no_context_takeover" in c.extensions for c in reset)
    for c in keep + reset:
        c.json()  # welcome
        c.send(deflate_frame(TEXT, compress(json.dumps({"type": "room_list", "pad": "x" * 100}).encode())))
        assert c.json()[1]["type"] == "room_list"
    # The kept windows: at least 32 KiB each, in the sample of the next sweep.
    v = wait_for(lambda: (lambda b: b if b >= n * 32768 else None)(parser_bytes(srv.port)),
                 "the kept inflate windows never showed in wsgate_parser_bytes")
    assert v < n * 64 * 1024 + 64 * 1024, v  # and not the reset connections' too
    for c in keep:
        c.close()
    wait_for(lambda: True if parser_bytes(srv.port) < 32768 else None,
             "wsgate_parser_bytes did not drop when the connections closed")
    for c in reset:
        c.close()


# ------------------------------------------------------------ edges


def test_compressed_frame_pipelined_with_the_upgrade(start_server):
    """Frames in the same write as the upgrade request are read by a parser
    that already inflates."""
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
    req = wsraw.upgrade_request(srv.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    msg = b"pipelined and compressed " * 10
    s.sendall(req + deflate_frame(TEXT, compress(msg)))
    c = Raw.__new__(Raw)
    c.sock = s
    head, c.buf = wsraw.read_head(s)
    c.extensions = wsraw.parse_headers(head).get("sec-websocket-extensions")
    assert c.extensions == ANSWER
    assert c.message() == (TEXT, True, msg)
    c.close()


def test_empty_compressed_message(start_server):
    """An empty message compresses to the single byte 00 (RFC 7692 7.2.3.6,
    what Chromium sends): echoed empty, uncompressed. An empty payload with
    RSV1 is not one: with the 00 00 ff ff tail it stops inside a stored
    block's length, so it is invalid data like any message cut inside a
    block (docs/compression.md), 1007."""
    assert compress(b"") == b"\x00"
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    c = Raw(srv.port, ["permessage-deflate"])
    c.send(deflate_frame(BINARY, b"\x00") + deflate_frame(TEXT, b"\x00"))
    assert c.message() == (BINARY, False, b"")
    assert c.message() == (TEXT, False, b"")
    c.send(deflate_frame(BINARY, b""))
    assert c.close_code() == 1007


def test_ping_between_compressed_fragments(start_server):
    srv = start_server(settings={"mode": "echo", "permessage_deflate": "true"})
    c = Raw(srv.port, ["permessage-deflate"])
    msg = "κόσμε, fragmented and compressed ".encode() * 20
    body = compress(msg)
    third = len(body) // 3
    c.send(deflate_frame(TEXT, body[:third], fin=False))
    c.send(wsraw.frame(0x9, b"between"))
    assert c.frame()[2:] == (0xA, b"between")
    c.send(deflate_frame(0, body[third:2 * third], fin=False, rsv1=False)
           + deflate_frame(0, body[2 * third:], rsv1=False))
    assert c.message() == (TEXT, True, msg)
    c.close()


def test_compressed_after_the_sweep_released_the_parser(start_server):
    """With client_no_context_takeover the sweep frees an idle connection's
    parser (wsgate_parser_bytes drops to 0); the parser made for the next
    message must inflate again."""
    srv = start_server(settings={"permessage_deflate": "true"})
    c = Raw(srv.port, ["permessage-deflate"])
    c.json()  # welcome
    ask = deflate_frame(TEXT, compress(json.dumps({"type": "room_list", "pad": "y" * 100}).encode()))
    c.send(ask)
    assert c.json()[1]["type"] == "room_list"
    wait_for(lambda: True if parser_bytes(srv.port) == 0 else None,
             "the idle connection's parser was never released")
    c.send(ask)
    assert c.json()[1]["type"] == "room_list"
    c.close()


def test_management_post_to_a_compressing_connection(start_server):
    """POST @connections/{id} goes out compressed to a connection that
    negotiated the extension, plain to one that did not."""
    import urllib.request
    key = "deflate-bearer-" + os.urandom(6).hex()
    srv = start_server(settings={"permessage_deflate": "true", "management_bearer_key": key})
    c = Raw(srv.port, ["permessage-deflate"], "/staging?roomId=p1")
    d = Raw(srv.port, [], "/staging?roomId=p2")
    body = ("a management notice long enough to compress " * 5).encode()
    for conn in (c, d):
        cid = conn.json()[1]["data"]["connectionId"]
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/staging/@connections/{cid}",
                                     data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    assert c.message() == (TEXT, True, body)
    assert d.message() == (TEXT, False, body)
    c.close()
    d.close()


def test_broadcast_across_workers(start_server):
    """Members on both workers, half of them compressing: one chat reaches
    each with the right bytes (another worker's members get the frame
    through its inbox and compress it there)."""
    srv = start_server(settings={"permessage_deflate": "true", "worker_threads": 2})
    ms = [Raw(srv.port, ["permessage-deflate"] if i % 2 else [], f"/staging?roomId=w&userId=u{i}")
          for i in range(16)]
    for m in ms:
        assert m.json()[1]["type"] == "welcome"
    connects = wait_for(lambda: (lambda ls: ls if len(ls) == 16 else None)(
        [json.loads(line) for line in srv.log().splitlines() if '"eventType":"CONNECT"' in line]),
        "16 $connect access lines")
    assert {e["worker"] for e in connects} == {0, 1}, connects
    text = "across the workers, compressed where agreed " * 6
    ms[0].send(wsraw.frame(TEXT, json.dumps({"type": "chat", "message": text}).encode()))
    for i, m in enumerate(ms):
        while True:
            rsv1, msg = m.json()
            if msg["type"] == "chat":
                break
            assert msg["type"] == "user_joined"
        assert msg["data"]["message"] == text and rsv1 == bool(i % 2)
    for m in ms:
        m.close()
