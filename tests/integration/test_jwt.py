"""The JWT authorizer (auth_mode = "jwt") against a real wsgate: tokens made
here with hmac/hashlib/base64 (HS256) or the openssl command (RS256), taken
from the query, the Authorization header or Sec-WebSocket-Protocol; refusals
are 401 before the upgrade with a JSON body, and repeated failures from one
address turn into 429 for that address only."""
import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import time
from urllib.parse import urlencode

import pytest
import websockets

import wsraw

from conftest import WSGATE_BIN

SECRET = "integration-secret-5f0c3a9e2b7d41c8a6e9"
ISSUER = "https://idp.test"
AUDIENCE = "wsgate-test"
SETTINGS = {"auth_mode": "jwt", "jwt_secret": SECRET, "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE}
RECV_TIMEOUT = 5.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**over):
    c = {"sub": "alice", "name": "Alice", "iss": ISSUER, "aud": AUDIENCE,
         "exp": int(time.time()) + 600}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def hs256(payload, secret=SECRET, header=None):
    signing = segment(header or {"alg": "HS256", "typ": "JWT"}) + "." + segment(payload)
    mac = hmac.new(secret.encode() if isinstance(secret, str) else secret,
                   signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(mac)


def unsigned(payload):
    return segment({"alg": "none", "typ": "JWT"}) + "." + segment(payload) + "."


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))


async def open_ws(srv, query=None, source=None, **kw):
    """Connect (from `source` when given); returns (ws, welcome data)."""
    url = srv.url + ("?" + urlencode(query) if query else "")
    sock = None
    if source:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", srv.port))
    ws = await websockets.connect(url, open_timeout=5, close_timeout=2, sock=sock, **kw)
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome["data"]


def handshake(srv, query=None, headers=None, source=None):
    """A raw upgrade request; returns (status, headers, body bytes)."""
    path = "/" + srv.stage + ("?" + urlencode(query) if query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5,
                                 source_address=(source, 0) if source else None)
    try:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, body = wsraw.read_head(s, "closed before an answer", 65536)
        hdrs = wsraw.parse_headers(head)
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            n = int(hdrs.get("content-length", "0"))
            while len(body) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return status, hdrs, body
    finally:
        s.close()


def expect_refused(srv, status, message, query=None, headers=None, source=None):
    st, hdrs, body = handshake(srv, query, headers, source)
    assert st == status, (st, body)
    assert "sec-websocket-accept" not in hdrs and "upgrade" not in hdrs
    assert hdrs.get("content-type", "").startswith("application/json")
    assert json.loads(body)["message"] == message
    return body


# ---------------------------------------------------------------- accepted

def test_query_token_identity_comes_from_claims(start_server):
    srv = start_server(settings=SETTINGS)
    tok = hs256(claims())

    async def main():
        ws, w = await open_ws(srv, {"token": tok, "userId": "mallory", "username": "Mallory",
                                    "roomId": "lobby"})
        assert w["userId"] == "alice"
        assert w["roomId"] == "lobby"
        assert ws.subprotocol is None
        await ws.send(json.dumps({"type": "chat", "message": "hi"}))
        msg = await recv_json(ws)
        assert msg["type"] == "chat", msg
        assert msg["data"]["senderId"] == "alice"
        assert msg["data"]["senderName"] == "Alice"
        await ws.close()
    run(main())
    assert tok not in srv.log()


def test_authorization_header(start_server):
    srv = start_server(settings=SETTINGS)
    tok = hs256(claims(sub="bob", name=None))

    async def main():
        ws, w = await open_ws(srv, {"userId": "mallory"},
                              extra_headers={"Authorization": f"Bearer {tok}"})
        assert w["userId"] == "bob"
        assert ws.subprotocol is None
        await ws.close()
    run(main())


def test_subprotocol_bearer(start_server):
    srv = start_server(settings=SETTINGS)
    tok = hs256(claims(sub="carol"))

    async def main():
        ws, w = await open_ws(srv, {"roomId": "r9"}, subprotocols=["bearer", tok])
        assert w["userId"] == "carol" and w["roomId"] == "r9"
        assert ws.subprotocol == "bearer"
        await ws.close()
    run(main())
    st, hdrs, _ = handshake(srv, headers={"Sec-WebSocket-Protocol": f"bearer, {tok}"})
    assert st == 101
    assert hdrs["sec-websocket-protocol"] == "bearer"
    # the token in the query: no subprotocol is answered
    st, hdrs, _ = handshake(srv, query={"token": tok})
    assert st == 101
    assert "sec-websocket-protocol" not in hdrs
    assert tok not in srv.log()


# ---------------------------------------------------------------- refused

def test_refusals_are_401_before_upgrade(start_server):
    srv = start_server(settings=SETTINGS)
    expired = hs256(claims(exp=int(time.time()) - 3600))
    cases = [
        ({"token": expired}, None, "Token expired"),
        ({"token": unsigned(claims())}, None, "Algorithm not allowed"),
        ({"token": hs256(claims(aud="someone-else"))}, None, "Wrong audience"),
        ({"token": hs256(claims(aud=["x", AUDIENCE]))}, None, None),  # accepted
        ({"token": hs256(claims(iss="https://evil.test"))}, None, "Wrong issuer"),
        ({"token": hs256(claims(nbf=int(time.time()) + 3600))}, None, "Token not yet valid"),
        ({"token": hs256(claims(), secret="not-the-secret")}, None, "Invalid token"),
        ({"token": hs256(claims(sub=None))}, None, "Invalid token"),
        ({"userId": "alice"}, None, "Missing token"),
        (None, {"Authorization": "Bearer " + unsigned(claims())}, "Algorithm not allowed"),
        (None, {"Sec-WebSocket-Protocol": "bearer, " + expired}, "Token expired"),
    ]
    for query, headers, message in cases:
        if message is None:
            st, _, _ = handshake(srv, query, headers)
            assert st == 101
            continue
        body = expect_refused(srv, 401, message, query, headers)
        # the token is never echoed
        for v in list((query or {}).values()) + list((headers or {}).values()):
            assert v.split(" ")[-1].encode() not in body

    async def refused_by_client():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            await websockets.connect(srv.url + "?token=" + expired, open_timeout=5)
        assert ei.value.status_code == 401
    run(refused_by_client())
    log = srv.log()
    assert expired not in log
    assert expired.split(".")[2] not in log


def test_failures_turn_into_429_per_address(start_server):
    srv = start_server(settings=dict(SETTINGS, auth_failures_per_minute=20))  # the default
    bad = hs256(claims(), secret="guessed")
    good = hs256(claims(sub="dave"))
    for _ in range(20):
        expect_refused(srv, 401, "Invalid token", {"token": bad})
    expect_refused(srv, 429, "Too Many Requests", {"token": bad})
    # a good token from that address is throttled too ...
    expect_refused(srv, 429, "Too Many Requests", {"token": good})

    # ... while another address still gets in
    async def main():
        ws, w = await open_ws(srv, {"token": good}, source="127.0.0.2")
        assert w["userId"] == "dave"
        await ws.close()
    run(main())
    st, _, _ = handshake(srv, {"token": good}, source="127.0.0.2")
    assert st == 101


# ---------------------------------------------------------------- RS256 and start-up

def _openssl():
    return shutil.which("openssl")


@pytest.mark.skipif(not _openssl(), reason="openssl command not available")
def test_rs256_and_algorithm_confusion(start_server, tmp_path):
    priv, pub = tmp_path / "priv.pem", tmp_path / "pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(priv)], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    srv = start_server(settings={"auth_mode": "jwt", "jwt_algorithm": "RS256",
                                 "jwt_public_key_file": str(pub)})
    signing = segment({"alg": "RS256", "typ": "JWT"}) + "." + segment(claims(sub="erin"))
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(priv)], input=signing.encode(),
                         check=True, capture_output=True).stdout
    tok = signing + "." + b64url(sig)

    async def main():
        ws, w = await open_ws(srv, {"token": tok})
        assert w["userId"] == "erin"
        await ws.close()
    run(main())
    # HS256 with the public key's PEM text as the HMAC secret
    confused = hs256(claims(sub="erin"), secret=pub.read_bytes())
    expect_refused(srv, 401, "Algorithm not allowed", {"token": confused})
    expect_refused(srv, 401, "Algorithm not allowed", {"token": unsigned(claims())})


def test_bad_key_file_fails_start_up(tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    for path, part in [(str(tmp_path / "missing.pem"), "No such file"),
                       (str(garbage), "not a PEM public key")]:
        p = subprocess.run([WSGATE_BIN, "serve", "--listen", "127.0.0.1", "--port", "0",
                            "--data-dir", str(tmp_path / "data"), "--set", "auth_mode=jwt",
                            "--set", "jwt_algorithm=RS256", "--set", f"jwt_public_key_file={path}"],
                           capture_output=True, timeout=20)
        assert p.returncode != 0
        out = (p.stdout + p.stderr).decode()
        assert part in out, out
        assert "runtime error" not in out and "Sanitizer" not in out, out
