"""Protection: the throttling token buckets (stage, route, connection,
source address, failed authorizations), the Origin allow-list, and the abuse
limits (JSON depth, control-frame floods, fragmented bytes, connection cap),
each against a real wsgate (docs/configuration.md, "Protection").

conftest's TEST_DEFAULTS open the buckets wide, so every test passes the
limits it exercises explicitly in `settings`. Every load generator here is
loopback only and bounded by both a count and a deadline; a second source
address is 127.0.0.2 (the client socket is bound to it before connecting).
Every wait polls against a deadline."""
import base64
import concurrent.futures
import json
import os
import re
import socket
import sqlite3
import struct
import time

import pytest

import wsraw
from wsraw import Conn, frame, parse_headers

OTHER_IP = "127.0.0.2"
TIMEOUT = 5.0
QUIET = 0.3  # window in which "nothing more arrives" must hold


# ---------------------------------------------------------------- helpers

def open_ws(port, query="", src=None, headers=None, path="/staging", timeout=TIMEOUT):
    """One opening handshake from source address `src` (default 127.0.0.1).
    Returns (status, headers, body, conn): conn is a wsraw.Conn for a 101
    (the caller closes it), None otherwise (the socket is closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if src:
            s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        target = path + ("?" + query if query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.time() + timeout
        buf = b""
        while b"\r\n\r\n" not in buf:
            s.settimeout(max(0.01, deadline - time.time()))
            chunk = s.recv(65536)
            assert chunk, f"connection closed during the handshake: {buf!r}"
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        hdrs = parse_headers(head)
        if status == 101:
            return status, hdrs, b"", Conn(s, rest)
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            s.settimeout(max(0.01, deadline - time.time()))
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        s.close()
        return status, hdrs, rest, None
    except BaseException:
        s.close()
        raise


def assert_refused(result, status, message):
    """A refusal before the upgrade: the plain HTTP status with a JSON body
    {"message": message}, no Upgrade header, no WebSocket."""
    st, hdrs, body, conn = result
    assert conn is None and st == status, (st, hdrs, body)
    assert "upgrade" not in hdrs and "sec-websocket-accept" not in hdrs, hdrs
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    assert json.loads(body) == {"message": message}, body


def ws_connect(port, query="", src=None, headers=None):
    """Connect (must get 101) and read the welcome; returns the Conn."""
    st, hdrs, body, conn = open_ws(port, query, src, headers)
    assert st == 101, (st, hdrs, body)
    welcome = recv_json(conn)
    assert welcome["type"] == "welcome", welcome
    return conn


def send_json(conn, obj):
    conn.send(frame(0x1, (obj if isinstance(obj, str) else json.dumps(obj)).encode()))


def recv_json(conn, timeout=TIMEOUT):
    """The next data message as JSON, skipping pings and pongs."""
    deadline = time.time() + timeout
    while True:
        op, data = conn.recv_message(max(0.01, deadline - time.time()))
        if op in (0x9, 0xA):
            continue
        assert op == 0x1, f"unexpected opcode {op}: {data[:80]!r}"
        return json.loads(data)


def recv_type(conn, typ, timeout=TIMEOUT, skip=("user_joined", "user_left")):
    """The next message of type `typ`, skipping presence notices."""
    deadline = time.time() + timeout
    while True:
        msg = recv_json(conn, max(0.01, deadline - time.time()))
        if msg["type"] in skip and typ not in skip:
            continue
        assert msg["type"] == typ, f"wanted {typ}, got {msg}"
        return msg["data"]


def drain(conn, window=QUIET):
    """Every message arriving until `window` seconds pass quietly."""
    out = []
    while True:
        try:
            out.append(recv_json(conn, window))
        except socket.timeout:
            return out


def is_throttled(msg):
    if msg["type"] != "error" or msg["data"].get("code") != "THROTTLED":
        return False
    assert msg["data"]["message"] == "Too Many Requests", msg
    assert isinstance(msg["data"].get("timestamp"), int), msg
    return True


def room_list_ok(conn):
    """Send room_list; True when answered, False when THROTTLED."""
    send_json(conn, {"type": "room_list"})
    while True:
        msg = recv_json(conn)
        if msg["type"] == "room_list":
            return True
        if is_throttled(msg):
            return False
        assert msg["type"] in ("user_joined", "user_left", "chat"), msg


def chat_burst(conn, markers):
    """Send one chat per marker back to back; returns (passed markers in
    arrival order, number of THROTTLED errors). Every chat is accounted
    for: the sender is in its room, so a passed chat comes back to it."""
    conn.send(b"".join(frame(0x1, json.dumps({"type": "chat", "message": m}).encode())
                       for m in markers))
    passed, throttled = [], 0
    deadline = time.time() + TIMEOUT
    while len(passed) + throttled < len(markers):
        msg = recv_json(conn, max(0.01, deadline - time.time()))
        if msg["type"] == "chat":
            passed.append(msg["data"]["message"])
        elif is_throttled(msg):
            throttled += 1
        else:
            assert msg["type"] in ("user_joined", "user_left"), msg
    return passed, throttled


def stored_messages(srv, want, timeout=TIMEOUT):
    """Poll the store until every message text in `want` is there; returns
    the set of all stored message texts (the server must run with
    enable_encryption=false so that the texts are readable)."""
    path = os.path.join(srv.data_dir, "websocket-api-dev.db")
    deadline = time.time() + timeout
    got = set()
    while time.time() < deadline:
        if os.path.exists(path):
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                got = {r[0] for r in con.execute("SELECT message FROM messages")}
            except sqlite3.OperationalError:
                got = set()
            finally:
                con.close()
            if set(want) <= got:
                return got
        time.sleep(0.05)
    raise AssertionError(f"store never held {sorted(set(want) - got)}; has {sorted(got)}")


def http_get(port, path, src=None):
    """A plain HTTP GET (no upgrade) from source address `src` (default
    127.0.0.1); returns (status, headers, body)."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    if not src:
        return wsraw.raw_http(port, req, timeout=TIMEOUT)
    with socket.socket() as s:
        s.settimeout(TIMEOUT)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    return int(head.split(b" ", 2)[1]), parse_headers(head), body


def throttled_metrics(srv, src=None):
    """wsgate_throttled_total by scope, from /metrics (asked from `src`:
    every socket counts against its address's max_connections_per_ip)."""
    st, _, body = http_get(srv.port, "/metrics", src)
    assert st == 200, (st, body)
    out = {}
    for m in re.finditer(rb'^wsgate_throttled_total\{([^}]*)\} (\d+)$', body, re.M):
        scope = re.search(rb'scope="([^"]*)"', m.group(1)).group(1).decode()
        out[scope] = int(m.group(2))
    assert set(out) == {"stage", "route", "connection", "address"}, body[:2000]
    return out


def poll(fn, timeout=TIMEOUT, interval=0.05):
    """Call fn until it returns truthy or the deadline passes; returns the
    last value."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() >= deadline:
            return v
        time.sleep(interval)


def close_all(conns):
    for c in conns:
        try:
            c.close()
        except OSError:
            pass


# ------------------------------------------------- per source address

def test_connection_flood_capped_per_address(start_server):
    """max_connections_per_ip: a flood from 127.0.0.1 (concurrent, bounded to
    60 attempts and 15 s) gets exactly 20 WebSockets and 429 JSON answers
    before the upgrade for the rest, while 127.0.0.2 connects normally in
    the middle of it."""
    srv = start_server(settings={"max_connections_per_ip": 20})
    held, results, other = [], [], []
    deadline = time.time() + 15

    def attempt(i):
        if time.time() > deadline:
            return None
        return open_ws(srv.port, f"userId=flood{i}")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(attempt, i) for i in range(60)]
        # During the flood: the other address is not affected.
        while sum(f.done() for f in futs) < 25 and time.time() < deadline:
            time.sleep(0.005)
        other.append(ws_connect(srv.port, "userId=other", src=OTHER_IP))
        for f in futs:
            r = f.result(timeout=TIMEOUT)
            assert r is not None, "flood ran out of time"
            results.append(r)
    try:
        for r in results:
            if r[0] == 101:
                held.append(r[3])
        refused = [r for r in results if r[0] != 101]
        assert len(held) == 20, [r[0] for r in results]
        assert len(refused) == 40
        for r in refused:
            assert_refused(r, 429, "Too Many Requests")
        # The other address is open and served during and after the flood.
        assert room_list_ok(other[0])
        other.append(ws_connect(srv.port, "userId=other2", src=OTHER_IP))
        assert throttled_metrics(srv, OTHER_IP)["address"] == 40
        # A closed connection frees a place for its address.
        held.pop().close()
        assert poll(lambda: (lambda r: (close_all([r[3]] if r[3] else []), r[0] == 101)[1])(
            open_ws(srv.port))), "the address never got its place back"
    finally:
        close_all(held + other)


def test_connect_rate_per_address(start_server):
    """connect_rate_per_ip/connect_burst_per_ip: back-to-back connects from
    one address get the burst, then 429; the other address is unaffected;
    the bucket refills."""
    srv = start_server(settings={"connect_rate_per_ip": 2, "connect_burst_per_ip": 5})
    statuses = []
    t0 = time.time()
    for i in range(15):
        r = open_ws(srv.port, f"userId=r{i}")
        statuses.append(r[0])
        if r[3]:
            r[3].close()
        else:
            assert_refused(r, 429, "Too Many Requests")
        if i == 10:
            # In the middle of the flood, from the other address.
            ws_connect(srv.port, "userId=other", src=OTHER_IP).close()
    elapsed = time.time() - t0
    ok = statuses.count(101)
    assert statuses[:5] == [101] * 5, statuses
    assert ok <= 5 + 2 * elapsed + 1, (statuses, elapsed)
    assert statuses.count(429) == 15 - ok and statuses.count(429) >= 5, statuses
    assert throttled_metrics(srv)["address"] == 15 - ok
    # The bucket refills at 2 per second.
    r = poll(lambda: (lambda x: (x[3].close() if x[3] else None, x[0] == 101)[1])(
        open_ws(srv.port)), timeout=3, interval=0.1)
    assert r, "the connect bucket never refilled"


def test_auth_failures_per_address(start_server):
    """auth_failures_per_minute=3: after 3 refused tokens the address gets 429
    even with a good token; 127.0.0.2 is unaffected."""
    srv = start_server(settings={"auth_failures_per_minute": 3})
    for i in range(3):
        assert_refused(open_ws(srv.port, f"userId=a{i}&token=bad"), 401, "Unauthorized")
    assert_refused(open_ws(srv.port, "userId=a&token=valid_good"), 429, "Too Many Requests")
    assert_refused(open_ws(srv.port, "userId=a"), 429, "Too Many Requests")
    # The other address: its own failures count separately, a good token works.
    assert_refused(open_ws(srv.port, "userId=b&token=bad", src=OTHER_IP), 401, "Unauthorized")
    c = ws_connect(srv.port, "userId=b&token=valid_good", src=OTHER_IP)
    assert room_list_ok(c)
    c.close()
    assert throttled_metrics(srv)["address"] == 2


# ------------------------------------------------- the stage bucket

def test_stage_bucket_connects(start_server):
    """throttling_burst_limit=5, throttling_rate_limit=1: the 6th connect
    within a second gets 429 before the upgrade."""
    srv = start_server(settings={"throttling_burst_limit": 5, "throttling_rate_limit": 1})
    held, statuses = [], []
    t0 = time.time()
    try:
        for i in range(8):
            r = open_ws(srv.port, f"userId=s{i}")
            statuses.append((r[0], time.time() - t0))
            if r[3]:
                held.append(r[3])
            else:
                assert_refused(r, 429, "Too Many Requests")
        assert [s for s, _ in statuses[:5]] == [101] * 5, statuses
        assert statuses[5][1] < 1.0, f"too slow to test the burst: {statuses}"
        assert statuses[5][0] == 429, statuses
        # At most one more token came back while the rest were tried.
        assert [s for s, _ in statuses].count(101) <= 5 + int(statuses[-1][1]) + 1, statuses
        m = throttled_metrics(srv)
        assert m["stage"] == [s for s, _ in statuses].count(429) and m["address"] == 0, m
    finally:
        close_all(held)


def test_stage_bucket_messages(start_server):
    """Messages beyond the stage burst get THROTTLED errors, are neither
    broadcast nor stored, and the connection stays open; after a wait they
    pass again."""
    srv = start_server(settings={"throttling_burst_limit": 5, "throttling_rate_limit": 1,
                                 "enable_encryption": "false"})  # plain text in the .db
    sender = ws_connect(srv.port, "userId=alice&roomId=r1")        # 4 tokens left
    watcher = ws_connect(srv.port, "userId=bob&roomId=r1")         # 3 tokens left
    drain(sender)
    markers = [f"burst-{i}" for i in range(10)]
    passed, throttled = chat_burst(sender, markers)
    assert throttled >= 5 and 1 <= len(passed) <= 5, (passed, throttled)
    # Passed chats come back in the order sent; the rest were refused.
    assert passed == [m for m in markers if m in passed], passed
    refused = [m for m in markers if m not in passed]
    # The watcher in the same room gets exactly the passed ones.
    got = [m["data"]["message"] for m in drain(watcher) if m["type"] == "chat"]
    assert got == passed, got
    # After a wait the bucket has a token again and the connection is open.
    assert poll(lambda: room_list_ok(sender), timeout=4, interval=0.3), "never passed again"
    late = poll(lambda: (lambda p: p[0])(chat_burst(sender, ["after-wait"])), timeout=4,
                interval=0.3)
    assert late == ["after-wait"], late
    stored = stored_messages(srv, passed + ["after-wait"])
    assert not stored & set(refused), stored & set(refused)
    assert [m["data"]["message"] for m in drain(watcher) if m["type"] == "chat"] == ["after-wait"]
    assert throttled_metrics(srv)["stage"] >= throttled
    close_all([sender, watcher])


def test_throttling_disabled_lifts_stage_bucket(start_server):
    """throttling_enabled=false: the same tiny stage bucket does not apply to
    connects or messages."""
    srv = start_server(settings={"throttling_burst_limit": 5, "throttling_rate_limit": 1,
                                 "throttling_enabled": "false",
                                 "route_throttling": "{ chat = { burst_limit = 1, rate_limit = 1 } }"})
    conns = [ws_connect(srv.port, f"userId=u{i}&roomId=r") for i in range(8)]
    try:
        drain(conns[0])
        markers = [f"free-{i}" for i in range(20)]
        passed, throttled = chat_burst(conns[0], markers)
        assert throttled == 0 and passed == markers, (passed, throttled)
        assert sum(room_list_ok(conns[1]) for _ in range(10)) == 10
        assert throttled_metrics(srv) == {"stage": 0, "route": 0, "connection": 0, "address": 0}
    finally:
        close_all(conns)


# ------------------------------------------------- route and connection buckets

def test_route_throttling(start_server):
    """route_throttling chat {burst 2, rate 1}: the 3rd chat of a burst is
    THROTTLED (and not broadcast), while room_list still works."""
    srv = start_server(settings={
        "route_throttling": "{ chat = { burst_limit = 2, rate_limit = 1 } }",
        "enable_encryption": "false"})
    c = ws_connect(srv.port, "userId=alice&roomId=r1")
    # One write, so one read: the server sees the three at the same instant.
    passed, throttled = chat_burst(c, ["one", "two", "three"])
    assert passed == ["one", "two"] and throttled == 1, (passed, throttled)
    assert all(room_list_ok(c) for _ in range(5)), "room_list was throttled with chat"
    assert drain(c) == []
    stored = stored_messages(srv, ["one", "two"])
    assert "three" not in stored
    m = throttled_metrics(srv)
    assert m["route"] == 1 and m["stage"] == 0 and m["connection"] == 0, m
    c.close()


def test_connection_bucket(start_server):
    """connection_rate_limit=5, connection_burst_limit=5: one noisy
    connection is throttled while another on the same server is not."""
    srv = start_server(settings={"connection_rate_limit": 5, "connection_burst_limit": 5})
    noisy = ws_connect(srv.port, "userId=noisy")
    calm = ws_connect(srv.port, "userId=calm")
    t0 = time.time()
    noisy.send(b"".join(frame(0x1, b'{"type":"room_list"}') for _ in range(20)))
    answered = throttled = 0
    while answered + throttled < 20:
        msg = recv_json(noisy)
        if msg["type"] == "room_list":
            answered += 1
        elif is_throttled(msg):
            throttled += 1
    elapsed = time.time() - t0
    assert 5 <= answered <= 5 + 5 * elapsed + 1, (answered, elapsed)
    assert throttled == 20 - answered and throttled >= 10
    # The other connection has its own bucket.
    assert all(room_list_ok(calm) for _ in range(5))
    assert throttled_metrics(srv)["connection"] == throttled
    # The noisy one is still open and gets tokens back.
    assert poll(lambda: room_list_ok(noisy), timeout=3, interval=0.25)
    close_all([noisy, calm])


# ------------------------------------------------- Origin allow-list

def test_origin_allow_list(start_server):
    srv = start_server(settings={"allowed_origins": '["https://app.example"]'})
    c = ws_connect(srv.port, "userId=good", headers={"Origin": "https://app.example"})
    assert room_list_ok(c)
    c.close()
    assert_refused(open_ws(srv.port, "userId=evil", headers={"Origin": "https://evil.example"}),
                   403, "Origin not allowed")
    # Exact match only: no prefix, suffix or case games.
    for bad in ("https://app.example.evil", "https://app.exampl", "HTTPS://APP.EXAMPLE",
                "https://app.example/", "null"):
        assert_refused(open_ws(srv.port, headers={"Origin": bad}), 403, "Origin not allowed")
    assert_refused(open_ws(srv.port, "userId=none"), 403, "Origin not allowed")
    # A refused Origin is not an authorization failure and takes no tokens.
    assert throttled_metrics(srv)["address"] == 0


# ------------------------------------------------- abuse limits

def test_json_depth(start_server):
    srv = start_server(settings={"max_json_depth": 32, "enable_encryption": "false"})
    c = ws_connect(srv.port, "userId=deep&roomId=r1")

    def expect_error(text):
        data = recv_type(c, "error")
        assert data["message"] == text, data

    send_json(c, "[" * 33 + "]" * 33)
    expect_error("JSON nesting too deep")
    send_json(c, "[" * 32 + "]" * 32)          # deep enough, but not an object
    expect_error("Invalid JSON format")
    # 32 levels with the chat object outermost: routed.
    inner = "[" * 31 + "1" + "]" * 31
    send_json(c, '{"type":"chat","message":"deep32","x":' + inner + "}")
    assert recv_type(c, "chat")["message"] == "deep32"
    send_json(c, '{"type":"chat","message":"deep33","x":[' + inner + "]}")
    expect_error("JSON nesting too deep")
    # Brackets inside strings do not count.
    send_json(c, json.dumps({"type": "chat", "message": "[" * 100}))
    assert recv_type(c, "chat")["message"] == "[" * 100
    # Hostile nesting: 100000 opening brackets, and objects.
    send_json(c, "[" * 100000)
    expect_error("JSON nesting too deep")
    send_json(c, '{"a":' * 20000)
    expect_error("JSON nesting too deep")
    assert room_list_ok(c)
    assert "deep33" not in stored_messages(srv, ["deep32"])
    c.close()


def test_ping_flood(start_server):
    srv = start_server(settings={"max_control_frames_per_s": 20})
    # 10 pings a second for 2 seconds: fine.
    calm = ws_connect(srv.port, "userId=calm")
    for i in range(20):
        payload = b"p%d" % i
        calm.send(frame(0x9, payload))
        fin, op, data = calm.recv_frame()
        assert (op, data) == (0xA, payload)
        time.sleep(0.1)
    assert room_list_ok(calm)
    # 100 pings in one burst: closed with 1008.
    noisy = ws_connect(srv.port, "userId=noisy")
    noisy.send(b"".join(frame(0x9, b"x") for _ in range(100)))
    pongs = 0
    while True:
        fin, op, data = noisy.recv_frame()
        if op == 0xA:
            pongs += 1
            continue
        assert op == 0x8, op
        assert struct.unpack("!H", data[:2])[0] == 1008, data
        break
    assert pongs <= 20, pongs
    noisy.expect_eof()
    # The calm one is untouched.
    assert room_list_ok(calm)
    calm.close()


def fragments(payload, size=100):
    parts = [payload[i:i + size] for i in range(0, len(payload), size)]
    return b"".join(frame(0x1 if i == 0 else 0x0, p, fin=(i == len(parts) - 1))
                    for i, p in enumerate(parts))


def test_max_fragmented_bytes(start_server):
    srv = start_server(settings={"max_fragmented_bytes": 4096, "max_message_size": 65536})
    c = ws_connect(srv.port, "userId=frag&roomId=r1")
    head, tail = b'{"type":"chat","message":"', b'"}'
    ok = head + b"a" * (4000 - len(head) - len(tail)) + tail
    assert len(ok) == 4000
    c.send(fragments(ok))
    assert recv_type(c, "chat")["message"] == "a" * (4000 - len(head) - len(tail))
    big = head + b"b" * (5000 - len(head) - len(tail)) + tail
    c.send(fragments(big))
    c.expect_close(1009)
    c.close()


def test_max_connections(start_server):
    srv = start_server(settings={"max_connections": 5})
    conns = [ws_connect(srv.port, f"userId=m{i}") for i in range(5)]
    try:
        r = open_ws(srv.port, "userId=sixth")
        assert_refused(r, 503, "Too many connections")
        r = open_ws(srv.port, "userId=sixth", src=OTHER_IP)
        assert_refused(r, 503, "Too many connections")
        conns.pop().close()
        def reopen():
            st, _, _, conn = open_ws(srv.port, "userId=again")
            if conn:
                conns.append(conn)
            return st == 101
        assert poll(reopen), "a freed place never became available"
    finally:
        close_all(conns)


# ------------------------------------------------- metrics

def test_metrics_every_scope(start_server):
    """One server where each bucket refuses something: /metrics counts each
    scope."""
    srv = start_server(settings={
        "throttling_burst_limit": 8, "throttling_rate_limit": 1,
        "connection_rate_limit": 1, "connection_burst_limit": 3,
        "max_connections_per_ip": 3,
        "route_throttling": "{ chat = { burst_limit = 1, rate_limit = 1 } }"})
    assert throttled_metrics(srv) == {"stage": 0, "route": 0, "connection": 0, "address": 0}
    c = [ws_connect(srv.port, f"userId=u{i}&roomId=r{i}") for i in range(3)]   # stage: 5 left
    try:
        assert_refused(open_ws(srv.port, "userId=u3"), 429, "Too Many Requests")  # address
        for x in c:
            drain(x, 0.1)
        # connection: 3 pass on c0, the 4th is refused (stage: 2 left)
        assert [room_list_ok(c[0]) for _ in range(4)] == [True, True, True, False]
        # route: c1's first chat passes (stage: 1 left), the second is refused (stage: 0)
        passed, throttled = chat_burst(c[1], ["r1", "r2"])
        assert passed == ["r1"] and throttled == 1, (passed, throttled)
        # stage: empty now
        assert not all(room_list_ok(c[2]) for _ in range(3))
        m = throttled_metrics(srv, OTHER_IP)
        assert m["address"] == 1 and m["connection"] >= 1 and m["route"] == 1 and m["stage"] >= 1, m
    finally:
        close_all(c)


# ------------------------------------------------- regressions (found by fuzzing)

def test_invalid_utf8_ids_refused(start_server):
    """Regression (fuzz_mgmt): an id that is not UTF-8 cannot be put in JSON.
    ?roomId=%C0%80 used to abort the server at the welcome, and
    POST @rooms/%C0 crashed it answering; both are now 400."""
    srv = start_server(settings={"management_bearer_key": "regression-key"})
    for q, msg in (("roomId=%C0%80x", "Invalid roomId"), ("userId=%FF", "Invalid userId"),
                   ("username=a%ED%A0%80", "Invalid username")):
        assert_refused(open_ws(srv.port, q), 400, msg)
    status, _, body = wsraw.raw_http(srv.port, b"POST /staging/@rooms/g%C0neral HTTP/1.1\r\nHost: x\r\n"
                                     b"Authorization: Bearer regression-key\r\nContent-Length: 2\r\n"
                                     b"Connection: close\r\n\r\nhi", timeout=TIMEOUT)
    assert status == 400, body
    assert json.loads(body) == {"message": "Invalid room ID"}
    # Still serving, with valid non-ASCII ids.
    c = ws_connect(srv.port, "roomId=%C3%A9t%C3%A9&userId=%E2%9C%93")
    assert room_list_ok(c)
    c.close()


# ------------------------------------------------- HTTP before the upgrade (issue 18 item 2)

def vm_rss_kib(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_answer(s, timeout=TIMEOUT):
    """Read what the server sends on s until it ends the connection (EOF or
    reset) or the timeout; returns the bytes."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            s.settimeout(max(0.01, deadline - time.time()))
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return buf


def status_of(answer):
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def test_bodies_to_unknown_paths_refused_unread(start_server):
    """4,000 connections each sending 128 KiB of a POST body to /nowhere used
    to grow RSS by 540 MB: bodies were buffered before routing. Here 200
    connections send a head announcing 128 KiB and 96 KiB of it: each is
    answered 404 from its head at once (before the rest of its body, which
    never comes), and RSS does not grow with the bodies (they would be
    ~19 MB)."""
    srv = start_server()
    assert http_get(srv.port, "/healthz")[0] == 200
    before = vm_rss_kib(srv)
    body = b"x" * (96 * 1024)
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
            socks.append(s)
            try:
                s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 131072\r\n\r\n" + body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered and closed before all of it was sent
        grown = vm_rss_kib(srv) - before
        answers = [read_answer(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    assert [status_of(a) for a in answers] == [404] * 200, answers[:3]
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
    # Other plain requests are routed the same way: a body on a path that
    # takes none is refused from the head, unread.
    for req, want in ((b"PUT /staging/@connections HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", 405),
                      (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", 413),
                      (b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 404)):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
            s.sendall(req)
            assert status_of(read_answer(s)) == want, req


def test_management_post_reads_a_body_only_with_credentials(start_server):
    """POST @connections and @rooms are the only routes that take a body,
    and only once the headers carry the management credentials: without
    them the 403 comes from the head, the body unread."""
    key = "body-after-auth-key"
    srv = start_server(settings={"management_bearer_key": key})
    head = (b"POST /staging/@rooms/r1 HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n")
    for auth in (b"", b"Authorization: Bearer wrong\r\n",
                 b"Authorization: AWS4-HMAC-SHA256 Credential=AKIDNOTOURS/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00\r\n"):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
            s.sendall(head + auth + b"\r\n")  # the head only
            answer = read_answer(s)
            assert status_of(answer) == 403, answer
            assert b"ForbiddenException" in answer
    # With the key, the server waits for the body and then answers.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
        s.sendall(head + b"Authorization: Bearer " + key.encode() + b"\r\n\r\n")
        s.settimeout(QUIET)
        with pytest.raises(socket.timeout):
            s.recv(1)
        s.sendall(b"y" * 65536)
        answer = read_answer(s)
        assert status_of(answer) == 200, answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"roomId": "r1", "delivered": 0}


def test_every_socket_counts_per_address(start_server):
    """max_connections_per_ip used to count only upgraded connections, so one
    address could hold any number of sockets that never upgrade. Every
    accepted socket counts now: with 4 idle sockets open, 127.0.0.1 (limit
    4) is refused 429 while another address connects; beyond twice the limit
    sockets are closed at once; the places come back when the sockets
    close."""
    # One worker: one accept queue, so sockets are counted in the order
    # they were opened.
    srv = start_server(settings={"max_connections_per_ip": 4, "worker_threads": 1})
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) for _ in range(4)]
    extra = []
    try:
        assert_refused(open_ws(srv.port, "userId=a"), 429, "Too Many Requests")
        other = open_ws(srv.port, "userId=b", src=OTHER_IP)
        assert other[0] == 101
        close_all([other[3]])
        # Sockets 5..8 wait for their head (and get 429); the 9th is over
        # twice the limit and is closed without a word.
        extra = [socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) for _ in range(5)]
        assert read_answer(extra[-1]) == b""
        extra[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(read_answer(extra[0])) == 429
        assert throttled_metrics(srv, OTHER_IP)["address"] == 2
    finally:
        for s in idle + extra:
            s.close()
    assert poll(lambda: (lambda r: (close_all([r[3]] if r[3] else []), r[0] == 101)[1])(
        open_ws(srv.port, "userId=c"))), "the address never got its places back"


def test_pending_http_memory_bounded(start_server):
    """max_pending_http_bytes bounds what all connections that have not
    upgraded hold together: with a 64 KiB budget, 12 connections each
    sending 7 KiB of an unfinished head cannot all be held; the ones that
    would exceed the budget are answered 503 and closed, the others are
    served when their heads complete."""
    srv = start_server(settings={"max_pending_http_bytes": 65536})
    pad = b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"p" * 90) for i in range(70))
    socks = []
    try:
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad)
            socks.append(s)
        time.sleep(QUIET)  # let the server read every head before they complete
        statuses = []
        for s in socks:
            try:
                s.sendall(b"Connection: close\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            statuses.append(status_of(read_answer(s)))
    finally:
        for s in socks:
            s.close()
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 4 and statuses.count(200) >= 2, statuses
    assert "pending_http_limit" in srv.log()
    # Once they are gone the budget is free again.
    assert poll(lambda: http_get(srv.port, "/healthz")[0] == 200)


# ------------------------------------------------- store reads per connection (hardening, round 6)

def read_replies(conn, n, counted):
    """Read messages until n of them satisfy `counted` or are THROTTLED;
    returns (counted ones, THROTTLED count, every message read)."""
    hits, throttled, seen = [], 0, []
    while len(hits) + throttled < n:
        msg = recv_json(conn, 30)
        seen.append(msg)
        if is_throttled(msg):
            throttled += 1
        elif counted(msg):
            hits.append(msg)
    return hits, throttled, seen


def test_store_reads_in_flight_bounded_per_connection(start_server):
    """Each history request (and each join_room with sinceSeq) is a store
    read whose reply, up to 256 KiB of messages, was held until the worker
    sent it; the send queue's limit applied only then. 3,000 history
    requests sent at once by a client that did not read took the server's
    RSS to 1.3 GB (3,000 join_room replays: over 500 MB). Now a connection
    has at most 4 store reads in flight; a request beyond that gets Too Many
    Requests at once and costs nothing."""
    srv = start_server()
    c = ws_connect(srv.port, "userId=reader&roomId=lib")
    send_json(c, {"type": "chat", "message": "stored"})
    recv_type(c, "chat")
    n = 60
    # One write: the worker reads every request before any reply can come.
    c.send(b"".join(frame(0x1, b'{"type":"history","limit":500}') for _ in range(n)))
    history, throttled, _ = read_replies(c, n, lambda m: m["type"] == "history")
    assert throttled > 0, "every one of 60 history requests sent at once was read"
    assert 1 <= len(history) <= n - throttled
    assert all(h["data"]["messages"][-1]["message"] == "stored" for h in history)
    # Answered reads free their slots: the next request is served.
    send_json(c, {"type": "history"})
    assert recv_type(c, "history")["messages"][-1]["message"] == "stored"

    # A replay (join_room with sinceSeq, here the room it is in) too.
    c.send(b"".join(frame(0x1, b'{"type":"join_room","roomId":"lib","sinceSeq":0}')
                    for _ in range(n)))
    joined, throttled, seen = read_replies(c, n, lambda m: m["type"] == "user_joined")
    assert throttled > 0, "every one of 60 replays sent at once was started"
    # A replay that started supersedes the one before it: the last one
    # sends the stored chat.
    if not any(m["type"] == "chat" for m in seen):
        assert recv_type(c, "chat")["message"] == "stored"
    send_json(c, {"type": "join_room", "roomId": "lib", "sinceSeq": 0})
    recv_type(c, "user_joined", skip=("chat",))
    assert recv_type(c, "chat")["message"] == "stored"
    c.close()


def test_pipelined_http_answers_bounded(start_server):
    """A client that pipelined plain HTTP requests and read none of the
    answers had every answer queued: 5,000 GET /metrics (each ~47 KB
    answered) in one connection took RSS to 180 MB, and more requests more.
    Past max_queued_bytes of unsent answers the server parses no more of
    them and ends the connection once the queued ones are written."""
    srv = start_server(settings={"max_queued_bytes": 8192})
    n = 2000
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", srv.port))
    try:
        # One write: the server parses it before any answer can be written.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        got = read_answer(s, timeout=15)
    finally:
        s.close()
    answered = got.count(b"HTTP/1.1 200 OK\r\n")
    assert 0 < answered < n, f"{answered} of {n} pipelined requests answered"
    assert got.endswith(b'{"status":"ok"}'), got[-200:]
    # One at a time, a keep-alive connection serves any number of requests.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as k:
        for _ in range(50):
            k.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            while not buf.endswith(b'{"status":"ok"}'):
                chunk = k.recv(65536)
                assert chunk, buf
                buf += chunk
            assert buf.startswith(b"HTTP/1.1 200 OK\r\n"), buf


def test_since_seq_query_is_a_plain_number(start_server):
    """?sinceSeq= took what strtoll takes: "+5" and " 5" replayed, and
    99999999999999999999 was saturated to 2^63-1 and answered with a
    history_gap for a number the client never sent. Only digits within
    range replay; anything else is the error join_room gives."""
    srv = start_server()
    c = ws_connect(srv.port, "userId=w&roomId=nums")
    send_json(c, {"type": "chat", "message": "one"})
    recv_type(c, "chat")
    for bad in ("99999999999999999999", "%2B0", "%200", "0x1", "-1", "1.0"):
        r = ws_connect(srv.port, f"userId=r&roomId=nums&sinceSeq={bad}")
        err = recv_type(r, "error")
        assert err["message"] == "sinceSeq must be a non-negative integer", (bad, err)
        r.close()
    r = ws_connect(srv.port, "userId=r&roomId=nums&sinceSeq=0")
    assert recv_type(r, "chat")["message"] == "one"
    r.close()
    c.close()


def test_pongs_keep_to_the_send_queue_rule(start_server):
    """Pongs were queued outside the send rule: with the control-frame
    limit off (max_control_frames_per_s = 0) a client that pinged without
    reading had every pong queued past the 4 x max_queued_bytes ceiling
    until the slow-consumer timeout (1.5 GB of pings in 12 s: 875 MB of RSS
    for one connection). A pong now goes through the rule of every other
    frame: past the ceiling the connection is closed (1008, slow consumer;
    the close frame itself is lost to the reset of a socket left with
    unread pings, so the log tells)."""
    srv = start_server(settings={"max_control_frames_per_s": 0,
                                 "max_queued_bytes": 65536,
                                 "slow_consumer_timeout_ms": 3600000})
    s, rest = wsraw.handshake(srv.port, "/staging?userId=pinger", rcvbuf=4096)
    c = Conn(s, rest)
    burst = frame(0x9, b"p" * 125) * 8192  # 1.1 MB of pings, 1 MB of pongs
    sent = 0
    try:
        for _ in range(64):  # at most 64 MB: far past the 256 KiB ceiling
            c.send(burst)
            sent += 1
    except (BrokenPipeError, ConnectionResetError):
        pass  # cut while sending: what is expected
    c.expect_eof(timeout=20)
    c.close()
    events = [json.loads(line) for line in srv.log().splitlines()
              if '"event":"slow_consumer"' in line]
    assert [e["reason"] for e in events] == ["queue ceiling"], (sent, events)


def test_slow_consumer_grace_is_not_skipped(start_server):
    """The slow-consumer clock started at uv_now | 1: when the loop's clock
    read an even millisecond, a second frame queued in the same loop turn
    found the backlog 2^64 - 1 ms old, and the connection was cut at once
    as "not drained" (stuckMs -1) instead of having slow_consumer_timeout_ms
    to drain (it happened to about half of the connections crossing
    max_queued_bytes). With an hour's grace, only the ceiling may cut
    these flooders."""
    srv = start_server(settings={"max_control_frames_per_s": 0,
                                 "max_queued_bytes": 65536,
                                 "slow_consumer_timeout_ms": 3600000})
    burst = frame(0x9, b"p" * 125) * 8192
    for i in range(8):
        s, rest = wsraw.handshake(srv.port, f"/staging?userId=f{i}", rcvbuf=4096)
        c = Conn(s, rest)
        try:
            for _ in range(32):
                c.send(burst)
        except (BrokenPipeError, ConnectionResetError):
            pass
        c.close()
    events = [json.loads(line) for line in srv.log().splitlines()
              if '"event":"slow_consumer"' in line]
    assert len(events) == 8, events
    reasons = [e["reason"] for e in events]
    assert reasons == ["queue ceiling"] * 8, events
    assert all(e["stuckMs"] >= 0 for e in events), events


# ------------------------------------------------- unfinished messages, every connection's (hardening, round 7)

def next_chat_or_close(conn, timeout=TIMEOUT):
    """("chat", msg) for the next chat message, or ("close", code) when the
    server closes instead."""
    deadline = time.time() + timeout
    while True:
        fin, op, data = conn.recv_frame(max(0.01, deadline - time.time()))
        if op == 0x8:
            return "close", struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        if op == 0x1:
            msg = json.loads(data)
            if msg.get("type") == "chat":
                return "chat", msg


def test_partial_messages_bounded_for_the_process(start_server):
    """Each connection may hold max_fragmented_bytes of a message it has
    not finished; max_partial_message_bytes bounds all of them together (N
    connections each holding 128 KiB was N x 128 KiB with no bound). Twelve
    connections each hold 8,000 bytes of an unfinished text message under a
    64 KiB budget: the ones whose buffer would take the total over it are
    closed with 1013 (try again later), the others' messages are delivered
    whole when they finish, and once they are gone the budget is free."""
    srv = start_server(settings={"max_partial_message_bytes": 65536,
                                 "max_message_size": 131072, "worker_threads": 2})
    head, tail = b'{"type":"chat","message":"', b'"}'
    conns = [ws_connect(srv.port, f"userId=p{i}&roomId=partial{i}") for i in range(12)]
    try:
        for c in conns:
            c.send(frame(0x1, head + b"x" * (8000 - len(head)), fin=False))
        time.sleep(QUIET)  # every first fragment is read before any finishes
        outcomes = []
        for c in conns:
            try:
                c.send(frame(0x0, tail, fin=True))
            except (BrokenPipeError, ConnectionResetError):
                pass
            outcomes.append(next_chat_or_close(c))
    finally:
        close_all(conns)
    refused = [o for o in outcomes if o[0] == "close"]
    served = [o for o in outcomes if o[0] == "chat"]
    assert all(o == ("close", 1013) for o in refused), outcomes
    assert all(len(m["data"]["message"]) == 8000 - len(head) for _, m in served), outcomes
    assert len(refused) >= 4 and len(served) >= 4, outcomes
    assert "partial_message_limit" in srv.log()
    # Gone: the whole budget is there again for one that needs it.
    c = ws_connect(srv.port, "userId=after&roomId=partial")
    big = head + b"y" * (60000 - len(head) - len(tail)) + tail
    c.send(fragments(big, 4000))
    assert recv_type(c, "chat")["message"] == "y" * (60000 - len(head) - len(tail))
    c.close()


# ------------------------------------------------- presence fan-out (hardening, round 7)

def test_presence_fan_out_has_its_own_bucket(start_server):
    """A typing_indicator, join_room or leave_room is one small message in
    and one frame to every member of the room out: under the message bucket
    alone one client in a room of M made the server write 100 x M frames a
    second. Those routes take from presence_rate_limit/presence_burst_limit
    too: a burst of 30 typing indicators passes 5 (plus the refill) to the
    room and the rest get THROTTLED; chat is not limited by it; join_room
    churn is limited alike."""
    srv = start_server(settings={"presence_rate_limit": 2, "presence_burst_limit": 5,
                                 "worker_threads": 1})
    listener = ws_connect(srv.port, "userId=listener&roomId=busy")
    noisy = ws_connect(srv.port, "userId=noisy&roomId=busy")
    t0 = time.time()
    noisy.send(b"".join(frame(0x1, b'{"type":"typing_indicator","isTyping":true}')
                        for _ in range(30)))
    send_json(noisy, {"type": "room_list"})  # answered after the 30's errors
    throttled = 0
    while True:
        msg = recv_json(noisy)
        if msg["type"] == "room_list":
            break
        assert is_throttled(msg), msg
        throttled += 1
    elapsed = time.time() - t0
    # The listener sees the passed ones, then the marker.
    send_json(noisy, {"type": "chat", "message": "marker"})
    typing = 0
    while True:
        msg = recv_json(listener)
        if msg["type"] == "typing_indicator":
            typing += 1
        elif msg["type"] == "chat":
            assert msg["data"]["message"] == "marker"
            break
    assert 5 <= typing <= 5 + 2 * elapsed + 1, (typing, elapsed)
    assert throttled == 30 - typing, (throttled, typing)
    assert throttled_metrics(srv)["connection"] == throttled
    # join_room churn between two rooms: the same bucket.
    t0 = time.time()
    noisy.send(b"".join(frame(0x1, json.dumps({"type": "join_room",
                                               "roomId": f"churn{i % 2}"}).encode())
                        for i in range(20)))
    joined = refused = 0
    while joined + refused < 20:
        msg = recv_json(noisy)
        if is_throttled(msg):
            refused += 1
        elif msg["type"] == "user_joined" and msg["data"]["userId"] == "noisy":
            joined += 1
    elapsed = time.time() - t0
    assert joined <= 5 + 2 * elapsed + 2 and refused >= 20 - joined and refused >= 10, \
        (joined, refused, elapsed)
    close_all([listener, noisy])
