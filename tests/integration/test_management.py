"""The management API: API Gateway's @connections paths driven by boto3,
unmodified, with only endpoint_url changed; wsgate's extensions; the bearer
key with curl; health and metrics endpoints."""
import asyncio
import json
import os
import stat
import subprocess
import time
import urllib.request

import boto3
import botocore.config
import botocore.exceptions
import pytest
import websockets

import wsraw
from conftest import WSGATE_BIN

AKID = "AKIDWSGATETEST000001"
SECRET = "wsgate/test/secret/key/0123456789abcdefgh"
BEARER = "bearer-test-key-0123456789"
CREDS = {"management_access_key_id": AKID, "management_secret_access_key": SECRET,
         "management_bearer_key": BEARER}


def client(srv, secret=SECRET, akid=AKID):
    return boto3.client("apigatewaymanagementapi", endpoint_url=f"http://127.0.0.1:{srv.port}/{srv.stage}",
                        region_name="us-east-1", aws_access_key_id=akid, aws_secret_access_key=secret)


async def connect(srv, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    ws = await websockets.connect(srv.url + ("?" + q if q else ""), open_timeout=5,
                                  extra_headers={"User-Agent": "mgmt-test/1.0"})
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    return ws, welcome["data"]["connectionId"]


async def recv_until(ws, pred, timeout=5):
    deadline = time.time() + timeout
    while True:
        msg = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.time()))
        if pred(msg):
            return msg


async def quiet(ws, seconds=0.3):
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg!r}")


def test_boto3_post_get_delete(start_server):
    srv = start_server(settings=CREDS)
    api = client(srv)

    async def main():
        ws, cid = await connect(srv, userId="alice", roomId="lobby")
        loop = asyncio.get_running_loop()
        # post_to_connection: the raw body arrives as one message
        await loop.run_in_executor(None, lambda: api.post_to_connection(
            ConnectionId=cid, Data=b'{"type":"notice","text":"from boto3"}'))
        msg = await recv_until(ws, lambda m: "notice" in m)
        assert json.loads(msg) == {"type": "notice", "text": "from boto3"}
        # get_connection: API Gateway's shape, parsed by botocore
        info = await loop.run_in_executor(None, lambda: api.get_connection(ConnectionId=cid))
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        assert info["Identity"]["UserAgent"] == "mgmt-test/1.0"
        assert abs(info["ConnectedAt"].timestamp() - time.time()) < 60
        assert info["LastActiveAt"] >= info["ConnectedAt"]
        # delete_connection closes the client's connection
        await loop.run_in_executor(None, lambda: api.delete_connection(ConnectionId=cid))
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await recv_until(ws, lambda m: False)
        # the connection is gone now: GoneException for each call
        for call in (lambda: api.post_to_connection(ConnectionId=cid, Data=b"x"),
                     lambda: api.get_connection(ConnectionId=cid),
                     lambda: api.delete_connection(ConnectionId=cid)):
            with pytest.raises(api.exceptions.GoneException):
                await loop.run_in_executor(None, call)
    asyncio.run(main())


def test_deleted_connection_is_gone_before_its_close_handshake_ends(start_server):
    """Bug fix: after DELETE @connections the session stayed registered
    until the client answered the close frame (or CONN_CLOSE_WAIT_MS ran
    out), and calls in between got 200 where API Gateway answers
    GoneException. A raw client that never answers keeps that window open
    for two seconds; every call in it must be Gone."""
    srv = start_server(settings=CREDS)
    raw = wsraw.connect(srv.port, "/staging?userId=quiet&roomId=r")
    cid = json.loads(raw.recv_message()[1])["data"]["connectionId"]
    api = client(srv)
    api.delete_connection(ConnectionId=cid)
    for call in (lambda: api.post_to_connection(ConnectionId=cid, Data=b"x"),
                 lambda: api.get_connection(ConnectionId=cid),
                 lambda: api.delete_connection(ConnectionId=cid)):
        with pytest.raises(api.exceptions.GoneException):
            call()
    raw.close()


def test_boto3_unknown_connection_and_bad_credentials(start_server):
    srv = start_server(settings=CREDS)
    with pytest.raises(client(srv).exceptions.GoneException):
        client(srv).post_to_connection(ConnectionId="doesNotExist0000", Data=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        client(srv, secret="wrong-secret").post_to_connection(ConnectionId="x", Data=b"x")
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert ei.value.response["Error"]["Code"] == "ForbiddenException"
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        client(srv, akid="AKIDUNKNOWN").get_connection(ConnectionId="x")
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # unsigned: API Gateway's answer
    req = (f"GET /{srv.stage}/@connections/abc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").encode()
    status, headers, body = wsraw.raw_http(srv.port, req)
    assert status == 403 and headers["x-amzn-errortype"] == "ForbiddenException"
    assert json.loads(body)["message"] == "Missing Authentication Token"


def test_payload_too_large(start_server):
    srv = start_server(settings=CREDS)
    api = client(srv)

    async def main():
        ws, cid = await connect(srv)
        loop = asyncio.get_running_loop()
        exact = b"a" * (128 * 1024)
        await loop.run_in_executor(None, lambda: api.post_to_connection(ConnectionId=cid, Data=exact))
        got = await recv_until(ws, lambda m: len(m) > 1000)
        assert len(got) == len(exact)
        with pytest.raises(api.exceptions.PayloadTooLargeException):
            await loop.run_in_executor(None, lambda: api.post_to_connection(
                ConnectionId=cid, Data=exact + b"a"))
        await ws.close()
    asyncio.run(main())


def test_limit_exceeded_when_queue_full(start_server):
    srv = start_server(settings=dict(CREDS, max_queued_bytes=256 * 1024))
    # No retries: botocore retries LimitExceededException with backoff, and
    # on a loaded machine those retries outlast slow_consumer_timeout_ms
    # (10 s), so the server rightly cut the never-reading client first.
    api = boto3.client("apigatewaymanagementapi",
                       endpoint_url=f"http://127.0.0.1:{srv.port}/{srv.stage}",
                       region_name="us-east-1", aws_access_key_id=AKID,
                       aws_secret_access_key=SECRET,
                       config=botocore.config.Config(retries={"total_max_attempts": 1}))
    # a raw client that never reads: its queue fills once the kernel's
    # buffers are full. A small SO_RCVBUF stops receive autotuning, which on
    # hosts with a large tcp_rmem max could otherwise absorb every post.
    s, rest = wsraw.handshake(srv.port, rcvbuf=4096)
    conn = wsraw.Conn(s, rest)
    _, welcome = conn.recv_message()
    cid = json.loads(welcome)["data"]["connectionId"]
    body = b"z" * (100 * 1024)
    for i in range(400):
        try:
            api.post_to_connection(ConnectionId=cid, Data=body)
        except api.exceptions.LimitExceededException:
            break
    else:
        raise AssertionError("queue never reported full")
    # the connection is still there: throttled, not dropped
    assert api.get_connection(ConnectionId=cid)["Identity"]["SourceIp"] == "127.0.0.1"
    conn.close()


def test_bearer_key_with_curl_and_extensions(start_server):
    srv = start_server(settings=CREDS)
    base = f"http://127.0.0.1:{srv.port}/{srv.stage}"
    auth = ["-H", f"Authorization: Bearer {BEARER}"]

    def curl(*args):
        out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True,
                             timeout=10, text=True)
        body, _, code = out.stdout.rpartition("\n")
        return int(code), body

    async def main():
        a, cid_a = await connect(srv, userId="alice", roomId="r1")
        b, cid_b = await connect(srv, userId="bob", roomId="r1")
        c, cid_c = await connect(srv, userId="carol", roomId="r2")
        await recv_until(a, lambda m: "user_joined" in m)
        loop = asyncio.get_running_loop()
        # POST @connections with curl and the bearer key (%40 for @)
        code, _ = await loop.run_in_executor(None, lambda: curl(
            *auth, "-X", "POST", "--data-binary", "hello bob", f"{base}/%40connections/{cid_b}"))
        assert code == 200
        assert await recv_until(b, lambda m: m == "hello bob")
        # a wrong bearer key is refused
        code, body = await loop.run_in_executor(None, lambda: curl(
            "-H", "Authorization: Bearer nope", f"{base}/@connections"))
        assert code == 403
        # the room broadcast reaches every member and nobody else
        code, body = await loop.run_in_executor(None, lambda: curl(
            *auth, "-X", "POST", "--data-binary", '{"type":"announcement"}', f"{base}/@rooms/r1"))
        assert code == 200 and json.loads(body) == {"roomId": "r1", "delivered": 2}
        for ws in (a, b):
            assert await recv_until(ws, lambda m: "announcement" in m)
        await quiet(c)
        # listings
        code, body = await loop.run_in_executor(None, lambda: curl(*auth, f"{base}/@rooms"))
        assert code == 200
        assert json.loads(body)["rooms"] == [{"roomId": "r1", "activeUsers": 2},
                                             {"roomId": "r2", "activeUsers": 1}]
        code, body = await loop.run_in_executor(None, lambda: curl(
            *auth, f"{base}/@connections?userId=bob"))
        conns = json.loads(body)["connections"]
        assert [x["connectionId"] for x in conns] == [cid_b] and conns[0]["roomId"] == "r1"
        code, body = await loop.run_in_executor(None, lambda: curl(
            *auth, f"{base}/@connections?roomId=r1"))
        assert sorted(x["connectionId"] for x in json.loads(body)["connections"]) == sorted([cid_a, cid_b])
        code, body = await loop.run_in_executor(None, lambda: curl(*auth, f"{base}/@connections"))
        assert len(json.loads(body)["connections"]) == 3
        for ws in (a, b, c):
            await ws.close()
    asyncio.run(main())


def test_generated_credentials(start_server, tmp_path):
    srv = start_server()
    path = os.path.join(srv.data_dir, "management-credentials.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    def output(name):
        return subprocess.run([WSGATE_BIN, "outputs", "--data-dir", srv.data_dir, "--port",
                               str(srv.port), "-raw", name], capture_output=True, text=True,
                              timeout=10, check=True).stdout
    akid, secret = output("management_access_key_id"), output("management_secret_access_key")
    assert akid.startswith("AKIA") and len(secret) == 40
    text = subprocess.run([WSGATE_BIN, "outputs", "--data-dir", srv.data_dir], capture_output=True,
                          text=True, timeout=10, check=True).stdout
    assert "management_secret_access_key = <sensitive>" in text and secret not in text
    api = client(srv, secret=secret, akid=akid)
    with pytest.raises(api.exceptions.GoneException):
        api.get_connection(ConnectionId="nobody")


def test_health_and_metrics(start_server, tmp_path):
    srv = start_server()
    base = f"http://127.0.0.1:{srv.port}"
    with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
        assert r.status == 200 and json.load(r)["status"] == "ok"
    with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
        assert r.status == 200 and json.load(r)["store"] is True
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    path = tmp_path / "metrics.txt"
    path.write_text(text)
    with open(path) as f:
        res = subprocess.run(["promtool", "check", "metrics"], stdin=f, capture_output=True, text=True,
                             timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


def test_user_agent_that_is_not_utf8(start_server):
    # Bug fixed: a User-Agent with bytes that are not UTF-8 made
    # GET @connections/{id} build no JSON and crash the server.
    srv = start_server(settings=CREDS)
    conn = wsraw.connect(srv.port, headers={"User-Agent": "bad\udcff-agent"})  # raw byte 0xff
    _, welcome = conn.recv_message()
    cid = json.loads(welcome)["data"]["connectionId"]
    info = client(srv).get_connection(ConnectionId=cid)
    assert info["Identity"]["UserAgent"] == "bad?-agent"
    code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                           f"Authorization: Bearer {BEARER}", f"http://127.0.0.1:{srv.port}/{srv.stage}/@connections"],
                          capture_output=True, text=True, timeout=10).stdout
    assert code == "200"
    conn.close()
