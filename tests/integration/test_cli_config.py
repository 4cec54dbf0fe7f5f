"""The command line and the configuration (CONFIG.md, docs/configuration.md):
the seed's terraform.tfvars, validation errors, precedence, `wsgate outputs`,
and the access log lines."""
import asyncio
import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import websockets

import wsraw
from conftest import WSGATE_BIN, free_port

# The seed's "Example terraform.tfvars", copied verbatim.
SEED_TFVARS = '''# Core configuration
aws_region   = "us-west-2"
environment  = "production"
project_name = "chat-app"

# WebSocket API configuration
api_name    = "chat-websocket-api"
stage_name  = "prod"

# DynamoDB configuration
dynamodb_billing_mode = "PAY_PER_REQUEST"
enable_dynamodb_point_in_time_recovery = true

# Lambda configuration
lambda_runtime = "python3.11"
lambda_memory_size = 512
lambda_message_memory_size = 1024

# Security configuration
enable_encryption = true
enable_xray_tracing = true
log_retention_days = 30

# Monitoring configuration
enable_detailed_metrics = true
logging_level = "INFO"
throttling_burst_limit = 1000
throttling_rate_limit = 2000

# Custom routes
custom_routes = [
  "chat",
  "join_room",
  "leave_room",
  "private_message",
  "room_list",
  "typing_indicator"
]

# Additional tags
additional_tags = {
  Owner       = "platform-team"
  CostCenter  = "engineering"
  Application = "chat-service"
}
'''

OUTPUT_NAMES = ["websocket_api_endpoint", "test_connection_url", "websocket_api_id", "stage_name",
                "connections_table_name", "rooms_table_name", "messages_table_name", "data_file",
                "management_api_url"]
TEST_QUERY = "?userId=testuser&username=TestUser&roomId=general&token=valid_test_token"


def wsgate(*args, env=None, timeout=10):
    full_env = dict(os.environ)
    for k in list(full_env):
        if k.startswith("TF_VAR_"):
            del full_env[k]
    full_env.update(env or {})
    return subprocess.run([WSGATE_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def write(tmp_path, text, name="terraform.tfvars"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


async def open_ws(url):
    ws = await websockets.connect(url, open_timeout=5, close_timeout=2)
    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert msg["type"] == "welcome", msg
    return ws, msg["data"]


async def recv(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


# The seed's file says environment = "production" and leaves the demo
# authorizer on, which production safety refuses; these tests keep the file
# verbatim and pass the documented escape hatch on the command line.
ALLOW_DEMO = ("--set", "allow_demo_auth_in_production=true")

DEMO_REFUSED = ('environment "production" refuses the demo authorizer (any token starting with '
                'valid_ is accepted); set auth_mode = "jwt" or allow_demo_auth_in_production = true')


# ---------------------------------------------------------------- the seed's tfvars

def test_seed_tfvars_refused_in_production_without_escape_hatch(tmp_path):
    path = write(tmp_path, SEED_TFVARS)
    r = wsgate("check", "-c", path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == f"wsgate: {DEMO_REFUSED}", r.stderr
    assert "configuration is valid" not in r.stdout
    # serve refuses it the same way, before listening
    r = wsgate("serve", "-c", path, "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and r.stderr.strip() == f"wsgate: {DEMO_REFUSED}", r.stderr
    # the same from the environment: TF_VAR_ works as the escape hatch too
    r = wsgate("check", "-c", path, env={"TF_VAR_allow_demo_auth_in_production": "true"})
    assert r.returncode == 0, r.stderr
    # and plain ws:// on all interfaces is refused next, with its own hatch
    r = wsgate("check", "-c", path, *ALLOW_DEMO, "--listen", "0.0.0.0")
    assert r.returncode == 2 and "allow_plaintext_in_production = true" in r.stderr, r.stderr
    assert 'non-loopback listen address "0.0.0.0"' in r.stderr, r.stderr
    r = wsgate("check", "-c", path, *ALLOW_DEMO, "--listen", "0.0.0.0",
               "--set", "allow_plaintext_in_production=true")
    assert r.returncode == 0, r.stderr


def test_seed_tfvars_checks_clean(tmp_path):
    path = write(tmp_path, SEED_TFVARS)
    r = wsgate("check", "-c", path, *ALLOW_DEMO)
    assert r.returncode == 0, r.stderr
    assert "configuration is valid" in r.stdout
    # the effective values came from the file
    assert 'stage_name' in r.stdout and '"prod"' in r.stdout
    assert '"chat-app"' in r.stdout


def test_seed_tfvars_as_json_loads_the_same(tmp_path):
    """Terraform also reads terraform.tfvars.json; wsgate said
    `expected a variable name, found '{'`."""
    seed = {"aws_region": "us-west-2", "environment": "production", "project_name": "chat-app",
            "api_name": "chat-websocket-api", "stage_name": "prod",
            "dynamodb_billing_mode": "PAY_PER_REQUEST",
            "enable_dynamodb_point_in_time_recovery": True, "lambda_runtime": "python3.11",
            "lambda_memory_size": 512, "lambda_message_memory_size": 1024,
            "enable_encryption": True, "enable_xray_tracing": True, "log_retention_days": 30,
            "enable_detailed_metrics": True, "logging_level": "INFO",
            "throttling_burst_limit": 1000, "throttling_rate_limit": 2000,
            "custom_routes": ["chat", "join_room", "leave_room", "private_message", "room_list",
                              "typing_indicator"],
            "additional_tags": {"Owner": "platform-team", "CostCenter": "engineering",
                                "Application": "chat-service"}}
    hcl = wsgate("check", "-c", write(tmp_path, SEED_TFVARS), *ALLOW_DEMO)
    js = wsgate("check", "-c", write(tmp_path, json.dumps(seed, indent=2), "terraform.tfvars.json"),
                *ALLOW_DEMO)
    assert hcl.returncode == 0 and js.returncode == 0, (hcl.stderr, js.stderr)
    assert js.stdout == hcl.stdout
    # errors name the file and the line, as in a tfvars file
    bad = write(tmp_path, '{\n  "stage_name": "prod",\n  "stage": "x"\n}\n', "bad.tfvars.json")
    r = wsgate("check", "-c", bad)
    assert r.returncode == 2
    assert r.stderr.strip() == f'wsgate: {bad}:3: unknown variable "stage" (did you mean "stage_name"?)'
    bad = write(tmp_path, '{\n  "port": 9000,\n', "cut.tfvars.json")
    r = wsgate("check", "-c", bad)
    assert r.returncode == 2 and r.stderr.strip() == f"wsgate: {bad}:1:1: unterminated map: missing '}}'"
    bad = write(tmp_path, '["port"]\n', "list.tfvars.json")
    r = wsgate("check", "-c", bad)
    assert r.returncode == 2 and "holds one JSON object of variables" in r.stderr, r.stderr


def test_seed_tfvars_serves_on_prod(start_server):
    srv = start_server(config_text=SEED_TFVARS, settings={"allow_demo_auth_in_production": "true"})
    url = f"ws://127.0.0.1:{srv.port}/prod"

    async def main():
        ws, w = await open_ws(url + TEST_QUERY)
        assert w["userId"] == "testuser" and w["roomId"] == "general"
        await ws.send(json.dumps({"type": "typing_indicator"}))  # a custom route of this file
        await ws.send(json.dumps({"type": "chat", "message": "on prod"}))
        m = await recv(ws)
        assert m["type"] == "chat" and m["data"]["message"] == "on prod"
        await ws.close()
    asyncio.run(main())
    # the old stage is not served
    status, _, _ = wsraw.raw_http(srv.port, (
        f"GET /staging HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert status != 101 and 400 <= status < 500
    # the store is named after project and environment
    deadline = time.time() + 5
    db = os.path.join(srv.data_dir, "chat-app-production.db")
    while not os.path.exists(db) and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(db)
    # the additional tags are fields of the access lines
    lines = wait_access(srv, lambda ls: any(l["eventType"] == "MESSAGE" for l in ls))
    assert all(l["Owner"] == "platform-team" and l["CostCenter"] == "engineering" for l in lines)


# ---------------------------------------------------------------- validation

BAD_VALUES = [
    ('environment = "bad env!"', "environment",
     "Environment name must contain only alphanumeric characters and hyphens."),
    ("throttling_burst_limit = 99999", "throttling_burst_limit",
     "Throttling burst limit must be between 0 and 5000."),
    ("log_retention_days = 2", "log_retention_days",
     "Log retention days must be one of the valid CloudWatch retention periods. They are 1, 3, "
     "5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827 and 3653."),
    ('logging_level = "DEBUG"', "logging_level", None),
    ('lambda_runtime = "python2.7"', "lambda_runtime",
     "Lambda runtime must be a supported Python version (python3.8 through python3.11)."),
    ("custom_routes = [" + ", ".join(f'"r{i}"' for i in range(11)) + "]", "custom_routes", None),
]


def test_validation_rules_reject_bad_values(tmp_path):
    for line, var, message in BAD_VALUES:
        path = write(tmp_path, f"# line one\nstage_name = \"ok\"\n{line}\n")
        r = wsgate("check", "-c", path)
        assert r.returncode == 2, (line, r.stdout, r.stderr)
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{path}:3: " in err and f'variable "{var}"' in err, err
        if message:
            assert err.endswith(message), err
        elif var == "logging_level":
            assert all(x in err for x in ("OFF", "ERROR", "INFO")), err
        else:
            assert "10" in err, err
        # serve refuses it the same way, without starting
        r2 = wsgate("serve", "-c", path, "--port", "0", "--data-dir", str(tmp_path / "d"))
        assert r2.returncode == 2 and r2.stderr.strip().endswith(err.split(": ", 1)[1]), r2.stderr
    # the limits themselves are accepted
    ok = write(tmp_path, "throttling_burst_limit = 5000\nlog_retention_days = 3653\n"
                         'lambda_runtime = "python3.8"\nlogging_level = "OFF"\n'
                         "custom_routes = [" + ", ".join(f'"r{i}"' for i in range(10)) + "]\n")
    r = wsgate("check", "-c", ok)
    assert r.returncode == 0, r.stderr


def test_unknown_variable_named_with_file_and_line(tmp_path):
    path = write(tmp_path, 'stage_name = "prod"\n\n# comment\nstage = "x"\n')
    r = wsgate("check", "-c", path)
    assert r.returncode == 2
    assert r.stderr.strip() == f'wsgate: {path}:4: unknown variable "stage" (did you mean "stage_name"?)'
    r = wsgate("check", "--set", "enviroment=dev")
    assert r.returncode == 2
    assert r.stderr.strip() == 'wsgate: --set: unknown variable "enviroment" (did you mean "environment"?)'


def test_duplicates_found_in_a_huge_file_without_quadratic_time(tmp_path):
    """A config file of a million names (12 MB, under the 16 MiB file cap)
    used to take hours to check: every name was compared with every earlier
    one for duplicates (a million squared over two comparisons), in the
    file's variables and in each map alike. Each duplicate is found at the
    end of such a file, well within the (generous) timeout."""
    n = 1_000_000
    top = "".join(f"v{i} = 1\n" for i in range(n)) + "v0 = 2\n"
    r = wsgate("check", "-c", write(tmp_path, top, "top.tfvars"), timeout=120)
    assert r.returncode == 2
    assert f'{n + 1}:1: duplicate variable "v0" (first set on line 1)' in r.stderr, r.stderr
    in_map = ("route_throttling = {\n" + "".join(f"k{i} = 1\n" for i in range(n)) +
              "k0 = 2\n}\n")
    r = wsgate("check", "-c", write(tmp_path, in_map, "map.tfvars"), timeout=120)
    assert r.returncode == 2
    assert f'{n + 2}:1: duplicate map key "k0"' in r.stderr, r.stderr
    as_json = '{"route_throttling": {' + "".join(f'"k{i}": 1, ' for i in range(n)) + '"k0": 2}}'
    r = wsgate("check", "-c", write(tmp_path, as_json, "map.tfvars.json"), timeout=120)
    assert r.returncode == 2
    assert 'duplicate map key "k0"' in r.stderr, r.stderr


# ---------------------------------------------------------------- precedence

def test_precedence_file_env_set(tmp_path, start_server):
    path = write(tmp_path, 'stage_name = "fromfile"\n')
    assert wsgate("outputs", "-c", path, "-raw", "stage_name").stdout == "fromfile"
    env = {"TF_VAR_stage_name": "fromenv"}
    assert wsgate("outputs", "-c", path, "-raw", "stage_name", env=env).stdout == "fromenv"
    r = wsgate("outputs", "-c", path, "-raw", "stage_name", "--set", "stage_name=fromset", env=env)
    assert r.stdout == "fromset"

    # and a running server follows the same order
    s1 = start_server(config_text='stage_name = "fromfile"\n', env=env)
    s2 = start_server(config_text='stage_name = "fromfile"\n', env=env,
                      settings={"stage_name": "fromset"})

    async def main():
        for port, stage in ((s1.port, "fromenv"), (s2.port, "fromset")):
            ws, _ = await open_ws(f"ws://127.0.0.1:{port}/{stage}")
            await ws.close()
            with __import__("pytest").raises(websockets.exceptions.InvalidStatusCode):
                await websockets.connect(f"ws://127.0.0.1:{port}/fromfile", open_timeout=5)
    asyncio.run(main())


# ---------------------------------------------------------------- outputs

def test_outputs_text_json_raw(tmp_path):
    path = write(tmp_path, SEED_TFVARS)
    data_dir = str(tmp_path / "srv" / "wsgate")
    args = ("-c", path, "--port", "9443", "--data-dir", data_dir, *ALLOW_DEMO)
    text = wsgate("outputs", *args)
    assert text.returncode == 0, text.stderr
    rows = {}
    for line in text.stdout.splitlines():
        k, _, v = line.partition(" = ")
        # secrets are shown only with -raw or -json, as terraform does
        rows[k] = v if v == "<sensitive>" else json.loads(v)
    for name in OUTPUT_NAMES:
        assert name in rows, (name, text.stdout)

    j = wsgate("outputs", "-json", *args)
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    for name in OUTPUT_NAMES:
        assert isinstance(doc[name]["value"], str) and doc[name]["value"], name
        assert doc[name]["value"] == rows[name]
    v = {k: doc[k]["value"] for k in OUTPUT_NAMES}
    assert v["websocket_api_endpoint"] == "ws://127.0.0.1:9443/prod"
    assert v["test_connection_url"] == "ws://127.0.0.1:9443/prod" + TEST_QUERY
    assert v["stage_name"] == "prod"
    assert v["data_file"] == data_dir + "/chat-app-production.db"
    assert v["connections_table_name"] != v["rooms_table_name"] != v["messages_table_name"]
    assert "chat-app" in v["messages_table_name"]
    assert v["management_api_url"].startswith("http") and ":9443" in v["management_api_url"]

    raw = wsgate("outputs", "-raw", "test_connection_url", *args)
    assert raw.returncode == 0 and raw.stdout == v["test_connection_url"]  # no newline, as terraform
    bad = wsgate("outputs", "-raw", "no_such_output", *args)
    assert bad.returncode != 0 and "no_such_output" in bad.stderr


# ---------------------------------------------------------------- access logs

ACCESS_FIELDS = ["requestId", "connectionId", "eventType", "routeKey", "status", "requestTimeEpoch",
                 "integrationLatency", "identity.sourceIp", "identity.userAgent"]


def log_file(srv):
    return os.path.join(srv.data_dir, "wsgate.log")


def read_log_lines(srv):
    try:
        with open(log_file(srv), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n"), text[-200:]
    # every "\n"-terminated line is one JSON object (split on "\n" only:
    # U+2028 in a traced body is valid JSON and no line break for JSON Lines)
    return [json.loads(l) for l in text.split("\n")[:-1]]


def wait_access(srv, pred, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        lines = [l for l in read_log_lines(srv) if l.get("event") == "access"]
        if pred(lines):
            return lines
        if time.time() > deadline:
            raise AssertionError(f"log never matched; access lines: {lines}")
        time.sleep(0.05)


def test_access_log_one_line_per_event(start_server):
    srv = start_server()

    async def main():
        ws = await websockets.connect(srv.url + "?userId=logger&token=valid_SeCrEtToKeN123",
                                      open_timeout=5, extra_headers={"User-Agent": "log-test/1.0"})
        w = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await ws.send(json.dumps({"type": "chat", "message": "logged body"}))
        assert (await recv(ws))["type"] == "chat"
        await ws.send(json.dumps({"type": "dance"}))
        assert (await recv(ws))["data"]["message"] == "Unknown message type: dance"
        await ws.send(json.dumps({"type": "leave_room"}))
        assert (await recv(ws))["type"] == "user_left"
        await ws.send(json.dumps({"type": "leave_room"}))
        assert (await recv(ws))["data"]["message"] == "Not in a room"
        await ws.close()
        # a refused connect with a token
        try:
            await websockets.connect(srv.url + "?token=BadSeCrEt456", open_timeout=5,
                                     extra_headers={"User-Agent": "refused-client/2.0"})
            raise AssertionError("bad token accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 401
        return w["data"]["connectionId"]
    cid = asyncio.run(main())

    lines = wait_access(srv, lambda ls: sum(l["eventType"] == "DISCONNECT" for l in ls) == 1
                        and sum(l["eventType"] == "CONNECT" for l in ls) == 2)
    mine = [l for l in lines if l["connectionId"] == cid]
    kinds = [(l["eventType"], l["routeKey"]) for l in mine]
    assert kinds == [("CONNECT", "$connect"), ("MESSAGE", "chat"), ("MESSAGE", "$default"),
                     ("MESSAGE", "leave_room"), ("MESSAGE", "leave_room"),
                     ("DISCONNECT", "$disconnect")], kinds
    for l in mine:
        for f in ACCESS_FIELDS:
            assert f in l, (f, l)
        assert l["identity.sourceIp"] == "127.0.0.1"
        assert l["identity.userAgent"] == "log-test/1.0"
        assert isinstance(l["requestTimeEpoch"], int) and abs(l["requestTimeEpoch"] / 1000 - time.time()) < 60
        assert isinstance(l["integrationLatency"], (int, float)) and l["integrationLatency"] >= 0
    assert len({l["requestId"] for l in mine}) == len(mine)
    assert [l["status"] for l in mine][:2] == [200, 200] and mine[-1]["status"] == 200
    assert mine[2]["status"] >= 400 and mine[2]["error.message"]
    assert mine[4]["status"] >= 400 and mine[4]["error.message"] == "Not in a room"
    assert "error.message" not in mine[1] and "error.message" not in mine[0]
    # data trace is on by default: the body is in the message lines
    assert "logged body" in mine[1]["body"]
    # the refused connect is logged with its status and error, without the token
    refused = [l for l in lines if l["connectionId"] != cid]
    assert len(refused) == 1 and refused[0]["status"] == 401 and refused[0]["error.message"]
    # Bug fixed: the User-Agent was recorded only after the authorizer, so
    # refused connects were logged with a null identity.userAgent.
    assert refused[0]["identity.userAgent"] == "refused-client/2.0"
    # tokens never reach the logs (file or stderr)
    for text in (open(log_file(srv)).read(), srv.log()):
        assert "SeCrEtToKeN123" not in text and "BadSeCrEt456" not in text
    # stderr carries the same lines
    stderr_access = [json.loads(l) for l in srv.log().splitlines() if '"event":"access"' in l]
    assert [l["requestId"] for l in stderr_access] == [l["requestId"] for l in lines]


def test_no_bodies_without_data_trace(start_server):
    srv = start_server(settings={"enable_data_trace": "false"})

    async def main():
        ws, _ = await open_ws(srv.url)
        await ws.send(json.dumps({"type": "chat", "message": "PrivateWords42"}))
        assert (await recv(ws))["type"] == "chat"
        await ws.send("not json PrivateWords43")
        assert (await recv(ws))["type"] == "error"
        await ws.close()
    asyncio.run(main())
    lines = wait_access(srv, lambda ls: any(l["eventType"] == "DISCONNECT" for l in ls))
    assert sum(l["eventType"] == "MESSAGE" for l in lines) == 2
    assert all("body" not in l for l in lines)
    for text in (open(log_file(srv)).read(), srv.log()):
        assert "PrivateWords4" not in text


def test_private_message_bodies_never_logged(start_server):
    """Issue 18 item 11: with data trace on (the seed's default), a private
    message's text reaches neither the log file nor stderr, whether it is
    delivered, refused or throttled; its access line keeps the other fields
    with "message" replaced. Chats are still traced."""
    srv = start_server(config_text=SEED_TFVARS, settings={"allow_demo_auth_in_production": "true"})
    url = f"ws://127.0.0.1:{srv.port}/prod"

    async def main():
        a, _ = await open_ws(url + "?userId=alice&token=valid_a")
        b, _ = await open_ws(url + "?userId=bob&token=valid_b")
        assert (await recv(a))["type"] == "user_joined"
        await a.send(json.dumps({"type": "private_message", "targetUserId": "bob",
                                 "message": "PmSecret71 for bob"}))
        pm = await recv(b)
        assert pm["type"] == "private_message" and pm["data"]["message"] == "PmSecret71 for bob"
        await a.send(json.dumps({"type": "private_message", "targetUserId": "nobody",
                                 "message": "PmSecret72"}))
        assert (await recv(a))["data"]["code"] == "NOT_FOUND"
        await a.send(json.dumps({"type": "chat", "message": "public words"}))
        assert (await recv(a))["type"] == "chat"
        await a.close()
        await b.close()
    asyncio.run(main())
    lines = wait_access(srv, lambda ls: sum(l["eventType"] == "DISCONNECT" for l in ls) == 2)
    pms = [l for l in lines if l.get("routeKey") == "private_message"]
    assert len(pms) == 2, lines
    assert json.loads(pms[0]["body"]) == {"type": "private_message", "targetUserId": "bob",
                                          "message": "<redacted>"}
    assert [l["body"] for l in lines if l.get("routeKey") == "chat"] == [
        '{"type": "chat", "message": "public words"}']
    for text in (open(log_file(srv)).read(), srv.log()):
        assert "PmSecret7" not in text


def test_check_warns_data_trace_with_encryption(tmp_path):
    """Issue 18 item 11: check says (on stderr, still valid) that data trace
    puts chat text in the log in plaintext while the store encrypts it."""
    path = write(tmp_path, SEED_TFVARS)
    r = wsgate("check", "-c", path, *ALLOW_DEMO)
    assert r.returncode == 0 and "configuration is valid" in r.stdout, r.stderr
    warn = [l for l in r.stderr.splitlines() if l.startswith("warning:")]
    assert len(warn) == 1, r.stderr
    assert "enable_data_trace" in warn[0] and "enable_encryption" in warn[0]
    assert "plaintext" in warn[0] and "encrypts" in warn[0]
    assert "warning" not in r.stdout
    for off in ("enable_data_trace=false", "enable_encryption=false", "logging_level=ERROR"):
        r = wsgate("check", "-c", path, *ALLOW_DEMO, "--set", off)
        assert r.returncode == 0 and "warning" not in r.stderr, (off, r.stderr)


def test_logging_off_writes_no_access_lines(start_server):
    srv = start_server(settings={"logging_level": "OFF"})

    async def main():
        ws, _ = await open_ws(srv.url)
        await ws.send(json.dumps({"type": "chat", "message": "quiet"}))
        assert (await recv(ws))["type"] == "chat"
        await ws.send(json.dumps({"type": "dance"}))
        assert (await recv(ws))["type"] == "error"
        await ws.close()
    asyncio.run(main())
    time.sleep(0.3)
    assert [l for l in read_log_lines(srv) if l.get("event") == "access"] == []
    assert '"event":"access"' not in srv.log()


def test_control_characters_keep_one_line_per_event(start_server):
    srv = start_server()
    nasty = [
        '{"type":"chat",\n"message":"multi\\nline\\u0000 \\u001b[31m red"}\r\n',
        "not json\nat all\r\n\x01\x02\x7f\x1b[2J{\"type\":\"chat\"}\n\n",
        '{"type":"evil\\nkind\\r\\u0007"}',
        "\u2028\u2029 unicode line separators \ufeff",
        "x" * 5000 + "\n" + "y" * 5000,  # longer than the traced part
    ]

    async def main():
        ws, w = await open_ws(srv.url)
        for body in nasty:
            await ws.send(body)
            m = await recv(ws)
            assert m["type"] in ("chat", "error"), m
        await ws.close()
        return w["connectionId"]
    cid = asyncio.run(main())
    lines = wait_access(srv, lambda ls: any(l["eventType"] == "DISCONNECT" for l in ls))
    mine = [l for l in lines if l["connectionId"] == cid]
    assert [l["eventType"] for l in mine] == ["CONNECT"] + ["MESSAGE"] * len(nasty) + ["DISCONNECT"]
    raw = open(log_file(srv), "rb").read()
    assert raw.count(b"\n") == len(read_log_lines(srv))
    # the bodies are traced with their control characters escaped, not raw
    msg_lines = [l for l in mine if l["eventType"] == "MESSAGE"]
    assert msg_lines[0]["body"].startswith('{"type":"chat",\n"message"')  # decoded JSON keeps it
    assert b"\x01" not in raw and b"\x1b" not in raw and b"\r" not in raw
    assert msg_lines[2]["routeKey"] == "$default"
    assert len(msg_lines[4]["body"]) < 5000


# ---------------------------------------------------------------- the data directory's lock

def test_second_server_on_same_data_dir_refused(start_server):
    srv = start_server()
    other = free_port()
    r = wsgate("serve", "--port", str(other), "--data-dir", srv.data_dir, timeout=30)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"data directory {srv.data_dir} is in use by another wsgate (pid {srv.proc.pid})" in r.stderr
    # the first one still serves, and the lock goes with it
    async def main():
        ws, _ = await open_ws(srv.url + TEST_QUERY)
        await ws.close()
    asyncio.run(main())
    assert srv.stop() == 0
    again = subprocess.Popen([WSGATE_BIN, "serve", "--port", str(other), "--data-dir", srv.data_dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 15
        while time.time() < deadline and again.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", other), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        assert again.poll() is None, again.stderr.read()
    finally:
        again.terminate()
        assert again.wait(timeout=15) == 0


def test_backup_and_outputs_run_beside_a_live_server(start_server, tmp_path):
    srv = start_server()
    b = wsgate("backup", "--data-dir", srv.data_dir, "--out", str(tmp_path / "b.db"))
    assert b.returncode == 0, b.stderr
    o = wsgate("outputs", "--data-dir", srv.data_dir, "-raw", "management_access_key_id")
    assert o.returncode == 0 and o.stdout.startswith("AKIA"), o.stderr


# ---------------------------------------------------------------- the listen address

def test_listen_localhost_checks_and_serves(start_server, tmp_path):
    r = wsgate("check", "--listen", "localhost", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert 'note: listen = "localhost" binds 127.0.0.1' in r.stdout
    srv = start_server(args=["--listen", "localhost"])  # the fixture dials 127.0.0.1
    async def main():
        ws, _ = await open_ws(srv.url + TEST_QUERY)
        await ws.close()
    asyncio.run(main())


def test_listen_bad_address_fails_check_as_serve(tmp_path):
    d = str(tmp_path / "d")
    for addr, why in (("nosuch.invalid", "neither an IP address nor a host name that resolves"),
                      ("192.0.2.1", "not an address of this machine")):
        for cmd in ("check", "serve"):
            r = wsgate(cmd, "--listen", addr, "--port", str(free_port()), "--data-dir", d, timeout=30)
            assert r.returncode == 2, (cmd, addr, r.stdout, r.stderr)
            assert f'variable "listen": ' in r.stderr and addr in r.stderr and why in r.stderr, r.stderr


def test_check_opens_the_files_serve_opens(tmp_path, start_server):
    """`check` said "configuration is valid" for a TLS certificate, a JWT
    public key or a key file that does not exist or does not load, and
    `serve` then refused to start: check now opens them as serve does."""
    d = tmp_path / "d"
    keys = tmp_path / "k"
    keys.mkdir()
    def gen(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    cert, key, other = tmp_path / "c.crt", tmp_path / "c.key", tmp_path / "o.key"
    gen("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=wsgate-check")
    gen("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(other))
    pub = tmp_path / "jwt.pub"
    gen("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    # a real key file, made by a server, and a copy others may read
    made = os.path.join(start_server().data_dir, "keys.json")
    loose = tmp_path / "loose.json"
    loose.write_bytes(open(made, "rb").read())
    os.chmod(loose, 0o644)
    missing = str(tmp_path / "missing")
    tls = lambda c, k: ["--set", f"tls_cert_file={c}", "--set", f"tls_key_file={k}"]
    jwt = lambda f: ["--set", "auth_mode=jwt", "--set", "jwt_algorithm=ES256",
                     "--set", f"jwt_public_key_file={f}"]
    kms = lambda f: ["--set", f"kms_key_file={f}"]
    bad = [(tls(missing + ".crt", key), "cannot load TLS certificate"),
           (tls(garbage, key), "cannot load TLS certificate"),
           (tls(cert, missing + ".key"), "cannot load TLS key"),
           (tls(cert, other), "mismatch"),
           (jwt(missing + ".pem"), "No such file"),
           (jwt(garbage), "not a PEM public key"),
           (kms(missing + ".json"), "does not exist (encryption is enabled; without the key file "
            "encrypted data cannot be read); check kms_key_file and --data-dir"),
           (kms(loose), "loose.json")]
    for args, why in bad:
        for cmd in ("check", "serve"):
            r = wsgate(cmd, "--data-dir", str(d), "--port", "0", *args, timeout=30)
            assert r.returncode != 0 and why in r.stderr, (cmd, args, r.stdout, r.stderr)
            if cmd == "check":
                assert r.returncode == 2, (args, r.stderr)
    shutil.rmtree(d, ignore_errors=True)
    good = wsgate("check", "--data-dir", str(d), *tls(cert, key), *jwt(pub), *kms(made), timeout=30)
    assert good.returncode == 0 and "configuration is valid" in good.stdout, good.stderr
    assert not d.exists()  # check writes nothing, not even the data directory


def test_unusable_data_dir_fails_check_as_serve(tmp_path):
    """A data directory that is a file, lies under a file, or may not be
    written: check said "configuration is valid" and serve failed on the
    lock file ("cannot open .../wsgate.lock: Not a directory")."""
    f = tmp_path / "afile"
    f.write_text("")
    cases = [(str(f), f"data directory {f} is not a directory"),
             (str(f / "sub"), f"cannot create data directory {f / 'sub'}: {f} is not a directory")]
    for d, why in cases:
        for cmd in ("check", "serve"):
            r = wsgate(cmd, "--data-dir", d, "--port", "0", timeout=30)
            assert r.returncode == (2 if cmd == "check" else 1), (cmd, d, r.stdout, r.stderr)
            assert r.stderr.strip() == f"wsgate: {why}; pass " + (
                "--data-dir DIR (a directory, or a path to create)" if d == str(f)
                else "another --data-dir"), (cmd, r.stderr)
    # not writable: as another user (root writes anywhere)
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return
    import tempfile
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        for d, why in ((top, f"data directory {top} is not writable (Permission denied)"),
                       (os.path.join(top, "sub"),
                        f"cannot create data directory {top}/sub: {top} is not writable")):
            for cmd in ("check", "serve"):
                r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                    WSGATE_BIN, cmd, "--data-dir", d, "--port", "0"],
                                   capture_output=True, text=True, timeout=30, cwd="/tmp")
                assert r.returncode == (2 if cmd == "check" else 1), (cmd, d, r.stderr)
                assert r.stderr.startswith(f"wsgate: {why}"), (cmd, r.stderr)
        assert os.listdir(top) == []


def test_privileged_port_says_why_in_check_and_serve():
    """A port below 1024 without the right to bind it: serve printed only a
    JSON log line (nothing at all with logging_level = "OFF") and check said
    "configuration is valid"."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to run wsgate as another user")
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        start = int(f.read())
    port = None
    for p in range(min(start, 1024) - 1, 0, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                port = p
                break
            except OSError:
                continue
    if port is None:
        pytest.skip("every privileged port is in use or none is privileged")
    import tempfile
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o777)
        why = (f"wsgate: cannot listen on 127.0.0.1:{port}: permission denied (a port below 1024 "
               "needs root or CAP_NET_BIND_SERVICE; pass --port 8080 or another above 1023)")
        for cmd, rc in (("check", 2), ("serve", 1)):
            r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                WSGATE_BIN, cmd, "--port", str(port), "--data-dir", os.path.join(top, cmd),
                                "--set", "logging_level=OFF"],
                               capture_output=True, text=True, timeout=30, cwd="/tmp")
            assert r.returncode == rc and why in r.stderr.splitlines(), (cmd, r.stdout, r.stderr)


# ---------------------------------------------------------------- outputs never write

def test_outputs_from_elsewhere_writes_nothing_and_says_where(start_server, tmp_path):
    srv = start_server()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_VAR_")}
        return subprocess.run([os.path.abspath(WSGATE_BIN), "outputs", *args], cwd=str(elsewhere),
                              capture_output=True, text=True, timeout=10, env=env)
    r = run()
    assert r.returncode == 0, r.stderr
    assert "no credentials in ./data: start the server first or pass --data-dir" in r.stderr
    assert os.listdir(elsewhere) == []  # no ./data, no new keys
    k = run("-raw", "management_access_key_id")
    assert k.returncode == 1 and k.stdout == "" and "no credentials in ./data" in k.stderr
    assert os.listdir(elsewhere) == []
    # with --data-dir: the server's own keys, and where they came from
    good = run("--data-dir", srv.data_dir, "-raw", "management_access_key_id")
    with open(os.path.join(srv.data_dir, "management-credentials.json")) as f:
        saved = json.load(f)
    assert good.returncode == 0 and good.stdout == saved["access_key_id"], good.stderr
    where = os.path.realpath(srv.data_dir) + "/management-credentials.json"
    assert f"reading management credentials from {where}" in good.stderr
    assert os.listdir(elsewhere) == []


def test_outputs_raw_unknown_name_is_a_usage_error(tmp_path):
    r = wsgate("outputs", "--data-dir", str(tmp_path / "d"), "-raw", "nosuch")
    assert r.returncode == 2 and 'no output named "nosuch"' in r.stderr, r.stderr
    r = wsgate("outputs", "--data-dir", str(tmp_path / "d"), "-raw", "test_connection")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ('wsgate: no output named "test_connection"; did you mean '
                                'test_connection_url? (see wsgate outputs)'), r.stderr


def test_unknown_command_and_option_name_the_likely_one(tmp_path):
    for args, line in ((["serv"], "unknown command 'serv'; did you mean 'serve'?"),
                       (["rotatekey"], "unknown command 'rotatekey'; did you mean 'rotate-key'?"),
                       (["frobnicate"], "unknown command 'frobnicate'"),
                       (["check", "--data_dir", "x"], "unknown option --data_dir; did you mean --data-dir?"),
                       (["check", "--prot", "1"], "unknown option --prot; did you mean --port?"),
                       (["check", "--bogus"], "unknown option --bogus")):
        r = wsgate(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip() == f"wsgate: {line} (see wsgate --help)", (args, r.stderr)


# Each command's own flags; a command's --help names these and no other
# command's (the general text names them all).
COMMAND_FLAGS = {
    "serve": [], "check": [], "outputs": ["-json", "-raw NAME"],
    "backup": ["--out FILE"], "restore": ["--to TIME", "--out FILE"],
    "rotate-key": [],
    "export": ["--room ROOM", "--since TIME", "--format jsonl|csv"],
}


def test_each_command_help_is_its_own(tmp_path):
    every = {f for flags in COMMAND_FLAGS.values() for f in flags}
    for cmd, flags in COMMAND_FLAGS.items():
        for opt in ("--help", "-h"):
            r = wsgate(cmd, opt, "--data-dir", str(tmp_path / "d"))
            assert r.returncode == 0, (cmd, opt, r.stderr)
            out = r.stdout
            assert out.startswith(f"Usage: wsgate {cmd} "), (cmd, out[:200])
            for f in flags:
                assert f"  {f} " in out, (cmd, f, out)
            for f in every - set(flags):
                assert f not in out, (cmd, f, out)
            for common in ("-c FILE", "--set NAME=VALUE", "--listen ADDR", "--port N",
                           "--data-dir DIR"):
                assert common in out, (cmd, common)
            example = out.split("Example:\n", 1)[1].splitlines()[0].strip()
            assert example.startswith(f"wsgate {cmd} "), (cmd, example)
            # serve's and check's help list every variable, as `wsgate --help` says.
            assert ("Variables:" in out) == (cmd in ("serve", "check")), cmd
        assert not (tmp_path / "d").exists(), cmd
    r = wsgate("output", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Usage: wsgate outputs "), r.stdout[:200]
    r = wsgate("--help")
    assert r.returncode == 0 and "wsgate backup  --out FILE" in r.stdout
    assert "wsgate export --room ROOM" in r.stdout and "Variables:" not in r.stdout


def test_flag_errors_name_the_flag(tmp_path):
    d = str(tmp_path / "d")
    for flag, value, var in (("--port", "x", "port"), ("--listen", "a b", "listen"),
                             ("--data-dir", "", "data_dir")):
        r = wsgate("check", "--data-dir", d, flag, value)
        assert r.returncode == 2, (flag, r.stderr)
        assert r.stderr.startswith(f'wsgate: {flag}: variable "{var}": '), r.stderr
        assert "--set" not in r.stderr, r.stderr
    r = wsgate("check", "--set", "port=x")
    assert r.returncode == 2 and r.stderr.startswith('wsgate: --set: variable "port": '), r.stderr


# ---------------------------------------------------------------- make run

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_make_run_is_quiet_and_says_where(tmp_path):
    """`make run` on a fresh build: no compiler command lines, one human line
    with the URLs (whatever the number of workers), the JSON events on
    stderr as before. Builds at -O0 into its own directory."""
    import signal
    import threading
    build = tmp_path / "build"
    errf = open(tmp_path / "stderr", "w+")
    p = subprocess.Popen(["make", "--no-print-directory", "run", f"BUILD={build}", "OPT=-O0",
                          f"ARGS=--port 0 --data-dir {tmp_path / 'data'} --set worker_threads=2"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=errf, text=True,
                         start_new_session=True)
    lines, seen = [], threading.Event()

    def read():
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("wsgate serving"):
                seen.set()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        # until the human line, or the server's JSON events plus a grace
        deadline, listening_at = time.time() + 600, None
        while not seen.wait(0.2) and time.time() < deadline and p.poll() is None:
            errf.seek(0)
            if listening_at is None and '"event":"listening"' in errf.read():
                listening_at = time.time()
            if listening_at is not None and time.time() > listening_at + 5:
                break
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=60)
        t.join(10)
    errf.seek(0)
    err = errf.read()
    errf.close()
    human = [l for l in lines if l.startswith("wsgate serving")]
    assert len(human) == 1, (lines, err[-2000:])
    m = human[0].split()
    assert m[2].startswith("ws://127.0.0.1:") and m[2].endswith("/staging"), human
    port = m[2].split(":")[2].split("/")[0]
    assert human[0] == (f"wsgate serving ws://127.0.0.1:{port}/staging  chat page "
                        f"http://127.0.0.1:{port}/  dashboard http://127.0.0.1:{port}/dashboard")
    # nothing else on stdout but the note that a build is under way
    assert all(l == human[0] or l.startswith("building ") for l in lines), lines
    assert not any(" -c src/" in l or l.startswith("ar ") for l in err.splitlines()), err[-2000:]
    assert err.count('"event":"listening"') == 2, err[-2000:]


# ---------------------------------------------------------------- install-deps.sh

def test_install_deps_waits_for_the_apt_lock(tmp_path):
    """With every package missing (a fake dpkg-query) the script's apt-get
    calls (a fake that records its arguments) both wait for the dpkg lock."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "apt-calls"
    fakes = {
        "dpkg-query": "#!/bin/sh\nexit 1\n",
        "apt-get": f'#!/bin/sh\necho "$*" >> "{record}"\n',
        "sudo": '#!/bin/sh\nexec "$@"\n',
        "npm": "#!/bin/sh\nexit 0\n",
        "node": "#!/bin/sh\nexit 0\n",
    }
    for name, text in fakes.items():
        f = bin_dir / name
        f.write_text(text)
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", "install-deps.sh")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    calls = record.read_text().splitlines()
    assert len(calls) == 2 and "update" in calls[0].split() and "install" in calls[1].split(), calls
    assert all(c.startswith("-o DPkg::Lock::Timeout=600 ") for c in calls), calls


# ---------------------------------------------------------------- the README's commands

def test_docs_run_wscat_through_npx_and_it_works_offline():
    import glob
    import re
    bare = []
    for path in [os.path.join(REPO, "README.md")] + glob.glob(os.path.join(REPO, "docs", "*.md")):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                for m in re.finditer(r"\bwscat -c\b", line):
                    if not line[:m.start()].endswith("npx "):
                        bare.append(f"{path}:{n}: {line.strip()}")
    assert bare == [], bare
    r = subprocess.run(["npx", "--no-install", "wscat", "--version"], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, npm_config_offline="true"))
    assert r.returncode == 0 and r.stdout.strip(), (r.stdout, r.stderr)


def test_docs_name_only_outputs_that_exist(tmp_path):
    """Every `outputs -raw NAME` in README.md and docs/*.md names a real
    output (docs/integrations.md once said management_api_endpoint)."""
    import glob
    import re
    r = wsgate("outputs", "--data-dir", str(tmp_path / "d"), "-json")
    assert r.returncode == 0, r.stderr
    names = set(json.loads(r.stdout))
    wrong = []
    for path in [os.path.join(REPO, "README.md")] + glob.glob(os.path.join(REPO, "docs", "*.md")):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                for m in re.finditer(r"\boutputs -raw ([A-Za-z0-9_]+)", line):
                    if m.group(1) not in names:
                        wrong.append(f"{os.path.basename(path)}:{n}: {m.group(1)}")
    assert len(names) > 10 and wrong == [], wrong


def test_backup_or_restore_onto_the_store_itself_is_refused(start_server):
    srv = start_server()
    db = os.path.join(srv.data_dir, "websocket-api-dev.db")
    before = os.stat(db).st_ino
    for args in (("backup",), ("restore", "--to", str(int(time.time())))):
        r = wsgate(*args, "--data-dir", srv.data_dir, "--out", db)
        assert r.returncode == 2 and "is the store itself" in r.stderr, (args, r.stderr)
        assert os.stat(db).st_ino == before
    async def main():  # the server still has its store
        ws, _ = await open_ws(srv.url + TEST_QUERY)
        await ws.send(json.dumps({"type": "chat", "message": "still here"}))
        while (await recv(ws))["type"] != "chat":
            pass
        await ws.close()
    asyncio.run(main())


def test_every_logged_event_is_documented():
    import glob
    import re
    names = set()
    for path in glob.glob(os.path.join(REPO, "src", "**", "*.c"), recursive=True):
        with open(path) as f:
            text = f.read()
        names |= set(re.findall(r'log_begin\(\s*[^,]+,\s*[^,]+,\s*"([a-z_]+)"', text))
        names |= set(re.findall(r'log_msg\(\s*[^,]+,\s*"([a-z_]+)"', text))
    assert {"listening", "listen_error", "access"} <= names, names
    with open(os.path.join(REPO, "docs", "operations.md")) as f:
        doc = f.read()
    missing = sorted(n for n in names if f"`{n}`" not in doc and f"\"event\":\"{n}\"" not in doc)
    assert missing == [], missing
