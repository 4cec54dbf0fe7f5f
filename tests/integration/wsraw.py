"""A tiny raw WebSocket client for tests that must send exactly the bytes
they mean (bad frames, odd fragmentation): the real libraries refuse to."""
import base64
import os
import socket
import struct
import time


def upgrade_request(port, path="/staging", headers=None, key=None):
    """The bytes of an upgrade request (a random key unless given)."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def read_head(s, what="connection closed during handshake", chunk_size=4096):
    """Read from s until the end of a response head; returns (head, rest)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(chunk_size)
        assert chunk, what
        buf += chunk
    return tuple(buf.split(b"\r\n\r\n", 1))


def handshake(port, path="/staging", headers=None, timeout=5.0, rcvbuf=None):
    """Open a TCP connection and upgrade it; returns (sock, leftover_bytes).
    rcvbuf sets SO_RCVBUF before connecting. Raises AssertionError when the
    answer is not 101."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.sendall(upgrade_request(port, path, headers))
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s, rest


def raw_http(port, request: bytes, timeout=5.0):
    """Send raw bytes, return (status, headers_dict, body) of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request)
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                head, body = buf.split(b"\r\n\r\n", 1)
                hdrs = parse_headers(head)
                n = int(hdrs.get("content-length", "0"))
                if len(body) >= n:
                    break
    finally:
        s.close()
    head, body = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    return status, parse_headers(head), body


def parse_headers(head: bytes):
    out = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out[k.strip().lower().decode()] = v.strip().decode()
    return out


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length_override=None):
    """Encode one client frame."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length_override is None else length_override
    if n < 126:
        hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return hdr + key + masked


class Conn:
    """Reads server frames from a raw socket."""

    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.buf = leftover

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv_frame(self, timeout=5.0):
        """Returns (fin, opcode, payload). Raises EOFError on TCP close."""
        deadline = time.time() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not (b1 & 0x80), "server frames must not be masked"
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._need(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self, timeout=5.0):
        """Returns (opcode, payload) of the next data message, answering nothing."""
        fin, op, data = self.recv_frame(timeout)
        while not fin:
            fin, _, more = self.recv_frame(timeout)
            data += more
        return op, data

    def expect_close(self, code=None, timeout=5.0):
        """Read frames until a close frame; check its code; then expect EOF.
        Returns the close code (None if the payload was empty)."""
        deadline = time.time() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.time()))
            if op == 0x8:
                break
        got = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        if code is not None:
            assert got == code, f"close code {got}, wanted {code}"
        # Answer the close and wait for the server to end TCP.
        try:
            self.send(frame(0x8, payload[:2]))
        except OSError:
            pass
        self.expect_eof(max(0.5, deadline - time.time()))
        return got

    def expect_eof(self, timeout=5.0):
        deadline = time.time() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return
            if time.time() > deadline:
                raise AssertionError("server did not close TCP")

    def close(self):
        self.sock.close()


def connect(port, path="/staging", headers=None):
    s, rest = handshake(port, path, headers)
    return Conn(s, rest)
