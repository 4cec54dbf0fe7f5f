"""HTTP integrations (docs/integrations.md): routes whose logic is a backend
of the test's own (Python's http.server in a thread) reached with API
Gateway's Lambda proxy event; two-way routes; the errors API Gateway gives;
$connect/$disconnect; the HTTP REQUEST authorizer; a handler written as an
AWS Lambda function behind an invocation-URL wrapper that pushes with
boto3's apigatewaymanagementapi client, unchanged."""
import asyncio
import base64
import json
import re
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore.exceptions
import pytest
import websockets
import websockets.exceptions

from conftest import WSGATE_BIN

AKID = "AKIDWSGATETEST000001"
SECRET = "wsgate/test/secret/key/0123456789abcdefgh"
BEARER = "bearer-test-key-0123456789"
CREDS = {"management_access_key_id": AKID, "management_secret_access_key": SECRET,
         "management_bearer_key": BEARER}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REQUEST_TIME = re.compile(r"^\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000$")


class Backend:
    """A small HTTP backend: every POST is decoded as JSON and handed to
    `handle(path, event)`, which returns (http_status, body bytes); the
    events are kept in order. Keep-alive (HTTP/1.1) as real backends do."""

    def __init__(self, handle):
        self.handle = handle
        self.events = []
        self.cond = threading.Condition()
        self.connections = set()  # client sockets seen: keep-alive reuses them
        backend = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(n)
                ev = json.loads(raw)
                with backend.cond:
                    backend.events.append((self.path, ev))
                    backend.connections.add(self.client_address)
                    backend.cond.notify_all()
                status, body = backend.handle(self.path, ev)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # wsgate gave up (timeout) and closed

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def wait_event(self, pred, timeout=10):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for path, ev in self.events:
                    if pred(path, ev):
                        return ev
                left = deadline - time.time()
                assert left > 0, f"no matching event in {self.events!r}"
                self.cond.wait(left)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def backend_factory():
    made = []

    def make(handle):
        b = Backend(handle)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def proxy(status=200, body=None, **extra):
    r = {"statusCode": status, **extra}
    if body is not None:
        r["body"] = body if isinstance(body, str) else json.dumps(body)
    return 200, json.dumps(r).encode()


def tfmap(d):
    return "{" + ", ".join(f'"{k}" = "{v}"' for k, v in d.items()) + "}"


def tflist(xs):
    return "[" + ", ".join(f'"{x}"' for x in xs) + "]"


def check_request_context(rc, route_key, event_type, srv, cid=None):
    """Every requestContext field API Gateway sends, with its type."""
    assert rc["routeKey"] == route_key
    assert rc["eventType"] == event_type
    assert rc["stage"] == srv.stage
    assert rc["domainName"] == f"127.0.0.1:{srv.port}"
    assert re.fullmatch(r"[a-z0-9]{10}", rc["apiId"])
    assert UUID.match(rc["requestId"])
    assert isinstance(rc["extendedRequestId"], str) and rc["extendedRequestId"]
    assert rc["messageDirection"] == "IN"
    assert REQUEST_TIME.match(rc["requestTime"]), rc["requestTime"]
    now_ms = time.time() * 1000
    assert isinstance(rc["requestTimeEpoch"], int) and abs(rc["requestTimeEpoch"] - now_ms) < 60000
    assert isinstance(rc["connectedAt"], int) and rc["connectedAt"] <= rc["requestTimeEpoch"]
    assert rc["identity"]["sourceIp"] == "127.0.0.1"
    assert rc["identity"]["userAgent"] == "integ-test/1.0"
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", rc["connectionId"])
    if cid:
        assert rc["connectionId"] == cid
    if event_type == "MESSAGE":
        assert isinstance(rc["messageId"], str) and rc["messageId"]
    else:
        assert "messageId" not in rc
    if event_type == "DISCONNECT":
        assert isinstance(rc["disconnectStatusCode"], int)
        assert isinstance(rc["disconnectReason"], str)
    else:
        assert "disconnectStatusCode" not in rc


async def connect(srv, query="", **kw):
    return await websockets.connect(srv.url + query, open_timeout=10,
                                    extra_headers={"User-Agent": "integ-test/1.0", **kw.pop("headers", {})},
                                    **kw)


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def status_of_refusal(srv, query="", headers=None):
    with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
        ws = await connect(srv, query, headers=headers or {})
        await ws.close()
    return e.value.status_code


def metric_sum(srv, name):
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/metrics",
                                 headers={"Authorization": f"Bearer {BEARER}"})
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_message_route_event_two_way_and_default(start_server, backend_factory):
    def handle(path, ev):
        if path == "/default":
            return proxy(200, {"default": ev["requestContext"]["routeKey"],
                               "b64": ev["isBase64Encoded"], "body": ev["body"]})
        return proxy(200, {"echo": json.loads(ev["body"]), "route": ev["requestContext"]["routeKey"]})

    be = backend_factory(handle)
    srv = start_server(settings={
        **CREDS,
        "custom_routes": tflist(["order_placed", "chat", "quiet"]),
        "route_integrations": tfmap({"order_placed": be.url("/orders"), "quiet": be.url("/orders"),
                                     "$default": be.url("/default")}),
        "route_responses": tflist(["order_placed", "$default"]),
    })

    async def main():
        ws = await connect(srv, "?userId=alice&roomId=r1")
        welcome = await recv_json(ws)  # the built-in $connect still runs
        assert welcome["type"] == "welcome"
        cid = welcome["data"]["connectionId"]
        await ws.send(json.dumps({"type": "order_placed", "item": "book", "qty": 2}))
        got = await recv_json(ws)
        assert got == {"echo": {"type": "order_placed", "item": "book", "qty": 2}, "route": "order_placed"}
        ev = be.wait_event(lambda p, e: p == "/orders")
        check_request_context(ev["requestContext"], "order_placed", "MESSAGE", srv, cid)
        assert ev["body"] == json.dumps({"type": "order_placed", "item": "book", "qty": 2})
        assert ev["isBase64Encoded"] is False
        assert "headers" not in ev and "queryStringParameters" not in ev
        assert "authorizer" not in ev["requestContext"]
        # A one-way route: the backend is called, nothing comes back.
        await ws.send(json.dumps({"type": "quiet"}))
        be.wait_event(lambda p, e: p == "/orders" and "quiet" in e["body"])
        # The built-in chat is untouched; no unknown-type error for a route
        # that is not one: $default has an integration.
        await ws.send(json.dumps({"type": "chat", "message": "hi"}))
        chat = await recv_json(ws)
        assert chat["type"] == "chat" and chat["data"]["message"] == "hi"
        await ws.send(json.dumps({"type": "nothing_known"}))
        d = await recv_json(ws)
        assert d["default"] == "$default" and d["b64"] is False
        await ws.send("not json at all")
        d = await recv_json(ws)
        assert d == {"default": "$default", "b64": False, "body": "not json at all"}
        await ws.send(b"\x00\x01binary\xff")
        d = await recv_json(ws)
        assert d["b64"] is True and base64.b64decode(d["body"]) == b"\x00\x01binary\xff"
        await ws.close()

    asyncio.run(main())
    # Every event went over a few kept-alive connections, not one each.
    assert len(be.events) == 5 and len(be.connections) <= 2
    log = srv.log()
    access = [json.loads(l) for l in log.splitlines() if '"event":"access"' in l and '"order_placed"' in l]
    assert access and access[0]["status"] == 200 and access[0]["eventType"] == "MESSAGE"
    assert access[0]["body"] == json.dumps({"type": "order_placed", "item": "book", "qty": 2})
    assert UUID.match(access[0]["requestId"]) and access[0]["worker"] in (0, 1)


def test_errors_and_timeouts_as_api_gateway(start_server, backend_factory):
    def handle(path, ev):
        what = json.loads(ev["body"])["type"]
        if what == "slow":
            time.sleep(2.5)
            return proxy(200, "too late")
        if what == "garbage":
            return 200, b"<html>this is not a Lambda result</html>"
        if what == "crash":
            return 500, b'{"statusCode": 200, "body": "ignored"}'
        if what == "lambda_error":  # what an invocation URL says when the handler raised
            return 200, b'{"errorMessage": "boom", "errorType": "Exception"}'
        if what == "huge":
            return proxy(200, "x" * 300000)
        return proxy(200, "fine")

    be = backend_factory(handle)
    routes = ["slow", "garbage", "crash", "lambda_error", "huge", "fine"]
    srv = start_server(settings={
        **CREDS,
        "custom_routes": tflist(routes),
        "route_integrations": tfmap({r: be.url("/r") for r in routes}),
        "route_responses": tflist(routes),
        "lambda_message_timeout": 1,
    })
    errors_before = metric_sum(srv, "wsgate_integration_error_total")
    calls_before = metric_sum(srv, "wsgate_integration_errors_total")

    async def main():
        ws = await connect(srv, "?userId=bob")
        cid = (await recv_json(ws))["data"]["connectionId"]
        answers = {}
        for r in routes:
            await ws.send(json.dumps({"type": r}))
            answers[r] = await asyncio.wait_for(ws.recv(), 15)
        await ws.close()
        return cid, answers

    cid, answers = asyncio.run(main())
    assert answers["fine"] == "fine"
    for r, text in [("slow", "Endpoint request timed out"), ("garbage", "Internal server error"),
                    ("crash", "Internal server error"), ("lambda_error", "Internal server error"),
                    ("huge", "Internal server error")]:
        msg = json.loads(answers[r])
        assert msg["message"] == text, (r, msg)
        assert msg["connectionId"] == cid and UUID.match(msg["requestId"])
        assert set(msg) == {"message", "connectionId", "requestId"}
    assert metric_sum(srv, "wsgate_integration_error_total") - errors_before == 5
    assert metric_sum(srv, "wsgate_integration_errors_total") - calls_before == 5
    assert metric_sum(srv, "wsgate_integration_latency_seconds_count") >= 6


def held_work_route(start_server, backend_factory, **settings):
    """A server with a two-way route `work` whose backend holds every call
    until the returned event is set (then answers "done"); one worker."""
    release = threading.Event()

    def handle(path, ev):
        release.wait(10)
        return proxy(200, "done")

    be = backend_factory(handle)
    srv = start_server(settings={
        "custom_routes": tflist(["work"]),
        "route_integrations": tfmap({"work": be.url("/w")}),
        "route_responses": tflist(["work"]),
        "worker_threads": 1,
        **settings,
    })
    return srv, be, release


def test_concurrency_bound_gives_a_clear_error(start_server, backend_factory):
    srv, _, release = held_work_route(start_server, backend_factory,
                                      integration_max_concurrency=2)

    async def main():
        ws = await connect(srv)
        cid = (await recv_json(ws))["data"]["connectionId"]
        for _ in range(3):
            await ws.send(json.dumps({"type": "work"}))
        busy = await recv_json(ws)
        assert busy["message"] == "Too Many Requests" and busy["connectionId"] == cid
        release.set()
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in range(2)] == ["done", "done"]
        await ws.close()

    asyncio.run(main())
    assert "integration concurrency limit reached" in srv.log()


def test_one_connection_cannot_take_the_whole_concurrency(start_server, backend_factory):
    """integration_max_concurrency is the worker's, per integration: one
    client sending faster than a slow backend answers used to hold all of it
    and every other client got 429. Its own calls are bounded by
    integration_connection_concurrency: beyond, it gets Too Many
    Requests while another client's call still goes through."""
    srv, be, release = held_work_route(start_server, backend_factory,
                                       integration_max_concurrency=4,
                                       integration_connection_concurrency=2)

    async def main():
        greedy = await connect(srv)
        gid = (await recv_json(greedy))["data"]["connectionId"]
        other = await connect(srv)
        oid = (await recv_json(other))["data"]["connectionId"]
        for _ in range(6):
            await greedy.send(json.dumps({"type": "work"}))
        busy = []
        while len(busy) < 4:
            m = await recv_json(greedy)
            if m.get("type") not in ("user_joined", "user_left"):
                busy.append(m)
        assert all(b["message"] == "Too Many Requests" and b["connectionId"] == gid
                   for b in busy), busy
        await other.send(json.dumps({"type": "work"}))
        be.wait_event(lambda p, ev: ev["requestContext"]["connectionId"] == oid)
        release.set()
        assert await asyncio.wait_for(other.recv(), 10) == "done"
        assert [await asyncio.wait_for(greedy.recv(), 10) for _ in range(2)] == ["done", "done"]
        # Answered: its share is free again.
        await greedy.send(json.dumps({"type": "work"}))
        assert await asyncio.wait_for(greedy.recv(), 10) == "done"
        await greedy.close()
        await other.close()

    asyncio.run(main())
    assert "integration concurrency limit per connection reached" in srv.log()


def test_connect_and_disconnect_integrations(start_server, backend_factory):
    srv_box = {}

    def handle(path, ev):
        q = ev.get("queryStringParameters") or {}
        if path == "/connect":
            if q.get("refuse") == "401":
                return 401, b"no"  # the plain HTTP form
            if q.get("refuse") == "403":
                return proxy(403)  # the Lambda proxy form
            if q.get("refuse") == "garbage":
                return 200, b"???"
            if q.get("refuse") == "slow":
                time.sleep(2.5)
            return proxy(200)
        return proxy(200)

    be = backend_factory(handle)
    srv = start_server(settings={
        **CREDS,
        "route_integrations": tfmap({"$connect": be.url("/connect"), "$disconnect": be.url("/disconnect")}),
        "lambda_timeout": 1,
    })
    srv_box["srv"] = srv

    async def main():
        assert await status_of_refusal(srv, "?refuse=401") == 401
        assert await status_of_refusal(srv, "?refuse=403") == 403
        assert await status_of_refusal(srv, "?refuse=garbage") == 500
        assert await status_of_refusal(srv, "?refuse=slow") == 504
        ws = await connect(srv, "?userId=carol&tag=a&tag=b&x=%C3%A9t%C3%A9",
                           headers={"X-Custom": "one"})
        ev = be.wait_event(lambda p, e: p == "/connect" and "x" in (e.get("queryStringParameters") or {}))
        check_request_context(ev["requestContext"], "$connect", "CONNECT", srv)
        cid = ev["requestContext"]["connectionId"]
        assert ev["queryStringParameters"] == {"userId": "carol", "tag": "b", "x": "été"}
        assert ev["multiValueQueryStringParameters"]["tag"] == ["a", "b"]
        assert ev["headers"]["X-Custom"] == "one" and ev["multiValueHeaders"]["X-Custom"] == ["one"]
        assert ev["headers"]["Host"] == f"127.0.0.1:{srv.port}"
        assert ev["isBase64Encoded"] is False and "body" not in ev
        # The $connect integration replaces the built-in one: no welcome.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        await ws.close(code=1000)
        dis = be.wait_event(lambda p, e: p == "/disconnect")
        check_request_context(dis["requestContext"], "$disconnect", "DISCONNECT", srv, cid)
        assert dis["requestContext"]["disconnectStatusCode"] == 1000

    asyncio.run(main())
    log = srv.log()
    assert '"event":"integration"' in log and '"routeKey":"$connect","status":401' in log
    # Refused connects have their access line with the status.
    assert re.search(r'"event":"access".*"eventType":"CONNECT".*"status":403', log)


def test_client_leaving_during_pending_connect(start_server, backend_factory):
    gate = threading.Event()

    def handle(path, ev):
        if path == "/connect":
            gate.wait(10)
        return proxy(200)

    be = backend_factory(handle)
    srv = start_server(settings={
        "route_integrations": tfmap({"$connect": be.url("/connect"), "$disconnect": be.url("/disconnect")}),
    })

    async def main():
        task = asyncio.ensure_future(connect(srv))
        await asyncio.to_thread(be.wait_event, lambda p, e: p == "/connect")
        task.cancel()  # the client goes while wsgate waits for the answer
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(1.0)  # wsgate reads the FIN long before this
        gate.set()
        await asyncio.sleep(0.5)
        # The server still serves, and the abandoned one never opened.
        ws = await connect(srv)
        await ws.close()

    asyncio.run(main())
    assert be.wait_event(lambda p, e: p == "/disconnect")  # the second one's
    assert sum(1 for p, _ in be.events if p == "/disconnect") == 1


# ---- the seed's chat as AWS Lambda handlers, served by an invocation URL ----

# The handler below is written as it runs on AWS Lambda: its management
# endpoint is built from the event, credentials and region come from the
# environment (as Lambda sets them); nothing in it knows about wsgate.
CONNECTIONS = {}  # connection id -> {"userId", "roomId"}: the recipe's DynamoDB table
CONNECTIONS_LOCK = threading.Lock()


def _mgmt(event):
    rc = event["requestContext"]
    return boto3.client("apigatewaymanagementapi",
                        endpoint_url=f"https://{rc['domainName']}/{rc['stage']}")


def _push_welcome_later(event, user, room):
    # API Gateway refuses posts to a connection whose $connect has not
    # returned yet (GoneException): the welcome is pushed once it is open.
    cid = event["requestContext"]["connectionId"]
    api = _mgmt(event)
    data = json.dumps({"type": "welcome", "data": {"connectionId": cid, "userId": user,
                                                   "roomId": room, "message": f"Welcome to room {room}!"}})
    for _ in range(100):
        try:
            api.post_to_connection(ConnectionId=cid, Data=data.encode())
            return
        except api.exceptions.GoneException:
            time.sleep(0.05)


def handler(event, context):
    rc = event["requestContext"]
    cid, route = rc["connectionId"], rc["routeKey"]
    if route == "$connect":
        q = event.get("queryStringParameters") or {}
        user, room = q.get("userId", "anonymous"), q.get("roomId", "general")
        with CONNECTIONS_LOCK:
            CONNECTIONS[cid] = {"userId": user, "roomId": room}
        threading.Thread(target=_push_welcome_later, args=(event, user, room), daemon=True).start()
        return {"statusCode": 200}
    if route == "$disconnect":
        with CONNECTIONS_LOCK:
            CONNECTIONS.pop(cid, None)
        return {"statusCode": 200}
    body = json.loads(event["body"])
    with CONNECTIONS_LOCK:
        me = CONNECTIONS.get(cid)
        members = [c for c, v in CONNECTIONS.items() if me and v["roomId"] == me["roomId"]]
    api = _mgmt(event)
    out = json.dumps({"type": "chat", "data": {"roomId": me["roomId"], "senderId": me["userId"],
                                               "message": body.get("message", "")}}).encode()
    for member in members:
        try:
            api.post_to_connection(ConnectionId=member, Data=out)
        except api.exceptions.GoneException:
            with CONNECTIONS_LOCK:
                CONNECTIONS.pop(member, None)
    return {"statusCode": 200, "body": json.dumps({"type": "sent", "to": len(members)})}


class LambdaContext:
    function_name = "function"
    aws_request_id = "local"


def invocation_url_wrapper(path, event):
    """The Runtime Interface Emulator's contract: POST the event to
    /2015-03-31/functions/function/invocations, get the return value."""
    assert path == "/2015-03-31/functions/function/invocations"
    try:
        return 200, json.dumps(handler(event, LambdaContext())).encode()
    except Exception as e:  # as the emulator reports a handler's exception
        return 200, json.dumps({"errorMessage": str(e), "errorType": type(e).__name__}).encode()


@pytest.mark.parametrize("workers", [1, 2])
def test_seed_chat_through_a_lambda_handler(start_server, backend_factory, tmp_path, monkeypatch, workers):
    from test_tls import make_cert
    cert, key = make_cert(tmp_path, "integ", "wsgate-integ")
    # What a Lambda's environment provides; the CA bundle makes boto3 trust
    # this wsgate's certificate, the only thing that differs from AWS.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    with CONNECTIONS_LOCK:
        CONNECTIONS.clear()
    be = backend_factory(invocation_url_wrapper)
    fn = be.url("/2015-03-31/functions/function/invocations")
    srv = start_server(settings={
        **CREDS,
        "tls_cert_file": str(cert), "tls_key_file": str(key),
        "worker_threads": workers,
        "route_integrations": tfmap({"$connect": fn, "$disconnect": fn, "chat": fn}),
        "route_responses": tflist(["chat"]),
    })
    import ssl
    ctx = ssl.create_default_context(cafile=str(cert))
    url = f"wss://127.0.0.1:{srv.port}/{srv.stage}"

    async def main():
        socks = []
        for user in ["ann", "ben", "cid"]:
            room = "lobby" if user != "cid" else "other"
            ws = await websockets.connect(f"{url}?userId={user}&roomId={room}", ssl=ctx, open_timeout=10,
                                          extra_headers={"User-Agent": "integ-test/1.0"})
            w = await recv_json(ws, 15)
            assert w["type"] == "welcome" and w["data"]["userId"] == user and w["data"]["roomId"] == room
            socks.append(ws)
        ann, ben, cid = socks
        await ann.send(json.dumps({"type": "chat", "message": "hello lobby"}))
        got_ann = [await recv_json(ann, 15) for _ in range(2)]
        assert {"type": "sent", "to": 2} in got_ann
        chat = [m for m in got_ann if m["type"] == "chat"][0]
        assert chat["data"] == {"roomId": "lobby", "senderId": "ann", "message": "hello lobby"}
        assert await recv_json(ben, 15) == chat
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(cid.recv(), 0.5)
        await ben.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            with CONNECTIONS_LOCK:
                if len(CONNECTIONS) == 2:
                    break
            await asyncio.sleep(0.05)
        await ann.send(json.dumps({"type": "chat", "message": "alone now"}))
        got = [await recv_json(ann, 15) for _ in range(2)]
        assert {"type": "sent", "to": 1} in got
        await ann.close()
        await cid.close()

    asyncio.run(main())


# ---- the HTTP REQUEST authorizer ----

def test_http_authorizer(start_server, backend_factory):
    calls = []

    def handle(path, ev):
        if path == "/auth":
            calls.append(ev)
            assert ev["type"] == "REQUEST"
            assert ev["methodArn"].startswith("arn:aws:execute-api:") and ev["methodArn"].endswith("/$connect")
            assert ev["stageVariables"] == {}
            assert ev["requestContext"]["eventType"] == "CONNECT"
            token = ev["headers"].get("Authorization", "")
            if token == "simple-allow":
                return 200, json.dumps({"isAuthorized": True, "context": {"tier": "gold", "n": 3}}).encode()
            if token.startswith("policy-"):
                effect = "Allow" if token == "policy-allow" else "Deny"
                return 200, json.dumps({
                    "principalId": "user-42",
                    "policyDocument": {"Version": "2012-10-17", "Statement": [
                        {"Action": "execute-api:Invoke", "Effect": effect, "Resource": ev["methodArn"]}]},
                    "context": {"org": "acme"}}).encode()
            if token == "unauthorized":
                return 401, b'{"message": "Unauthorized"}'
            if token == "broken":
                return 200, b"]]]"
            return 200, json.dumps({"isAuthorized": False}).encode()
        return proxy(200, {"authorizer": ev["requestContext"].get("authorizer")})

    be = backend_factory(handle)
    srv = start_server(settings={
        "auth_mode": "http",
        "authorizer_url": be.url("/auth"),
        "authorizer_identity_sources": tflist(["route.request.header.Authorization",
                                               "route.request.querystring.room"]),
        "authorizer_cache_ttl_s": 300,
        "custom_routes": tflist(["whoami"]),
        "route_integrations": tfmap({"whoami": be.url("/whoami")}),
        "route_responses": tflist(["whoami"]),
        "worker_threads": 1,
    })

    async def main():
        # A missing identity source: 401 without asking the authorizer.
        assert await status_of_refusal(srv, "", {"Authorization": "policy-allow"}) == 401
        assert await status_of_refusal(srv, "?room=a") == 401
        assert calls == []
        assert await status_of_refusal(srv, "?room=a", {"Authorization": "policy-deny"}) == 403
        assert await status_of_refusal(srv, "?room=a", {"Authorization": "nope"}) == 403
        assert await status_of_refusal(srv, "?room=a", {"Authorization": "unauthorized"}) == 401
        assert await status_of_refusal(srv, "?room=a", {"Authorization": "broken"}) == 500
        n = len(calls)
        ws = await connect(srv, "?room=a&userId=x", headers={"Authorization": "policy-allow"})
        welcome = await recv_json(ws)  # the built-in $connect follows
        assert welcome["type"] == "welcome" and welcome["data"]["userId"] == "user-42"
        await ws.send(json.dumps({"type": "whoami"}))
        who = await recv_json(ws)
        assert who == {"authorizer": {"principalId": "user-42", "org": "acme"}}
        await ws.close()
        ws = await connect(srv, "?room=b", headers={"Authorization": "simple-allow"})
        await recv_json(ws)
        await ws.send(json.dumps({"type": "whoami"}))
        assert (await recv_json(ws))["authorizer"] == {"tier": "gold", "n": 3}
        await ws.close()
        assert len(calls) == n + 2
        # Cached per identity: the same header and query are not asked again,
        # a Deny neither.
        ws = await connect(srv, "?room=a", headers={"Authorization": "policy-allow"})
        await ws.close()
        assert await status_of_refusal(srv, "?room=a", {"Authorization": "policy-deny"}) == 403
        assert len(calls) == n + 2

    asyncio.run(main())
    log = srv.log()
    assert re.search(r'"event":"access".*"eventType":"CONNECT".*"authorizer.principalId":"user-42"', log)


def test_check_validates_integration_settings(tmp_path):
    def check(*sets):
        args = [WSGATE_BIN, "check"]
        for s in sets:
            args += ["--set", s]
        return subprocess.run(args, capture_output=True, text=True, timeout=10)

    ok = check('route_integrations={"$default" = "http://127.0.0.1:9000/x", chat = "https://h.example/a"}',
               'route_responses=["chat"]')
    assert ok.returncode == 0, ok.stderr
    for bad, words in [
        ('route_integrations={chat = "ftp://h/x"}', "http:// or https:// URL"),
        ('route_integrations={chat = "http:///nohost"}', "http:// or https:// URL"),
        ('route_integrations={chat = "http://h/a b"}', "http:// or https:// URL"),
        ('route_integrations={nosuch = "http://h/x"}', '"nosuch" is not a route'),
    ]:
        r = check(bad)
        assert r.returncode != 0 and words in r.stderr, (bad, r.stderr)
    r = check('route_integrations={chat = "http://h/x"}', 'route_responses=["join_room"]')
    assert r.returncode != 0 and "route_responses" in r.stderr
    r = check("auth_mode=http")
    assert r.returncode != 0 and "authorizer_url" in r.stderr
    r = check("auth_mode=http", "authorizer_url=http://127.0.0.1:1/auth",
              'authorizer_identity_sources=["route.request.cookie.x"]')
    assert r.returncode != 0 and "identity source" in r.stderr


def test_http_authorizer_without_identity_sources_asks_every_time(start_server, backend_factory):
    # Nothing to tell callers apart by: an Allow for one must not be reused
    # for the next (an empty cache key once let every connect in after the
    # first Allow).
    calls = []

    def handle(path, ev):
        calls.append(ev)
        ok = (ev.get("queryStringParameters") or {}).get("token") == "good"
        return 200, json.dumps({"isAuthorized": ok}).encode()

    be = backend_factory(handle)
    srv = start_server(settings={"auth_mode": "http", "authorizer_url": be.url("/auth"),
                                 "authorizer_cache_ttl_s": 300, "worker_threads": 1})

    async def main():
        ws = await connect(srv, "?token=good")
        await ws.close()
        assert await status_of_refusal(srv, "?token=bad") == 403
        ws = await connect(srv, "?token=good")
        await ws.close()

    asyncio.run(main())
    assert len(calls) == 3


def test_frames_sent_before_a_pending_101_and_answers_for_gone_clients(start_server, backend_factory):
    import socket
    import wsraw
    gate = threading.Event()

    def handle(path, ev):
        if path == "/connect":
            gate.wait(10)
            return proxy(200)
        if json.loads(ev["body"]).get("slow"):
            time.sleep(1.0)
        return proxy(200, {"got": ev["body"]})

    be = backend_factory(handle)
    srv = start_server(settings={
        "custom_routes": tflist(["echo"]),
        "route_integrations": tfmap({"$connect": be.url("/connect"), "echo": be.url("/echo")}),
        "route_responses": tflist(["echo"]),
    })
    # A client that does not wait for the 101: its first frames arrive while
    # $connect is pending, and are handled once it is accepted (their answers
    # come as the backend finishes them, as Lambda invocations do).
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(wsraw.upgrade_request(srv.port) +
              wsraw.frame(0x1, b'{"type":"echo","n":1}') + wsraw.frame(0x1, b'{"type":"echo","n":2}'))
    be.wait_event(lambda p, e: p == "/connect")
    time.sleep(0.2)
    gate.set()
    head, rest = wsraw.read_head(s)
    assert head.startswith(b"HTTP/1.1 101"), head
    c = wsraw.Conn(s, rest)
    got = sorted(json.loads(c.recv_message(10)[1])["got"] for _ in range(2))
    assert got == ['{"type":"echo","n":1}', '{"type":"echo","n":2}']
    # A client that leaves before its answer: the answer finds no one.
    c.send(wsraw.frame(0x1, b'{"type":"echo","slow":true}'))
    be.wait_event(lambda p, e: p == "/echo" and "slow" in e["body"])
    s.close()
    time.sleep(1.5)
    log = srv.log()
    assert re.search(r'"event":"access".*"routeKey":"echo","status":200', log)
    # Still serving.
    s2, rest2 = wsraw.handshake(srv.port, timeout=10)
    s2.close()


def test_http_authorizer_refusals_count_as_auth_failures(start_server, backend_factory):
    def handle(path, ev):
        ok = ev["headers"].get("Authorization") == "good"
        return 200, json.dumps({"isAuthorized": ok}).encode()

    be = backend_factory(handle)
    srv = start_server(settings={
        "auth_mode": "http", "authorizer_url": be.url("/auth"),
        "authorizer_identity_sources": tflist(["route.request.header.Authorization"]),
        "auth_failures_per_minute": 3, "worker_threads": 1})

    async def main():
        assert await status_of_refusal(srv, "") == 401  # missing: refused at once
        assert await status_of_refusal(srv, "", {"Authorization": "bad"}) == 403  # asked
        assert await status_of_refusal(srv, "", {"Authorization": "bad"}) == 403  # cached
        # Three failures from this address: even a good token waits now.
        assert await status_of_refusal(srv, "", {"Authorization": "good"}) == 429

    asyncio.run(main())


def test_integration_domain_name_is_not_the_clients_choice(start_server, backend_factory):
    be = backend_factory(lambda path, ev: proxy(200))
    srv = start_server(settings={
        "custom_routes": tflist(["x"]),
        "route_integrations": tfmap({"x": be.url("/x")}),
        "integration_domain_name": "chat.example.com",
    })

    async def main():
        ws = await connect(srv, headers={"Host": "evil.example"})
        await recv_json(ws)
        await ws.send(json.dumps({"type": "x"}))
        ev = await asyncio.to_thread(be.wait_event, lambda p, e: p == "/x")
        assert ev["requestContext"]["domainName"] == "chat.example.com"
        await ws.close()

    asyncio.run(main())


def test_bytes_before_a_pending_101_are_bounded(start_server, backend_factory):
    import socket
    import wsraw
    gate = threading.Event()

    def handle(path, ev):
        gate.wait(10)
        return proxy(200)

    be = backend_factory(handle)
    srv = start_server(settings={"route_integrations": tfmap({"$connect": be.url("/connect")})})
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(wsraw.upgrade_request(srv.port))
        be.wait_event(lambda p, e: p == "/connect")
        # More than 64 KiB before the 101: the connection is dropped, unanswered.
        try:
            for _ in range(20):
                s.sendall(wsraw.frame(0x1, b"x" * 8000))
        except OSError:
            pass
        s.settimeout(10)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b""
        s.close()
    finally:
        gate.set()
