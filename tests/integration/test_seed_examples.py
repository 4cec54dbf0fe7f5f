"""The seed document's own client examples, run as the user would run them:
its Python websockets snippet, and its wscat session (wscat's stdout is a
pseudo-terminal, so it prints received messages as `< {...}` exactly as in an
interactive session; stdin is a pipe the test writes the seed's lines to)."""
import asyncio
import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import websockets

from conftest import WSGATE_BIN

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
WSCAT = os.path.abspath(os.path.join(ROOT, "node_modules", ".bin", "wscat"))

TEST_QUERY = "?userId=testuser&username=TestUser&roomId=general&token=valid_test_token"

# The seed's "Using wscat" lines, verbatim.
SEED_WSCAT_LINES = [
    '{"type": "chat", "message": "Hello World!"}',
    '{"type": "join_room", "roomId": "developers"}',
    '{"type": "private_message", "targetUserId": "user2", "message": "Private hello"}',
    '{"type": "room_list"}',
]

# The seed's "Using Python WebSocket Client" snippet. Only two edits: the
# uri placeholder is filled in, and the endless `async for` loop stops once
# the chat message came back (so the test's wait is bounded).
SEED_PYTHON_SNIPPET = '''
import asyncio
import websockets
import json

async def test_websocket():
    uri = "ws://your-websocket-endpoint"
    async with websockets.connect(uri) as websocket:
        # Send a chat message
        await websocket.send(json.dumps({
            "type": "chat",
            "message": "Hello from Python!"
        }))
        
        # Listen for messages
        async for message in websocket:
            data = json.loads(message)
            print(f"Received: {data}")
            if data.get("type") == "chat": break  # (test edit: bounded loop)

# Run the test
asyncio.run(test_websocket())
'''

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Wscat:
    """wscat as a subprocess: stdin piped, stdout a pty; collects the
    messages it prints as `< ...`."""

    def __init__(self, argv, shell=False, env=None):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=slave,
                                     stderr=subprocess.PIPE, shell=shell, env=env,
                                     executable="/bin/bash" if shell else None)
        os.close(slave)
        self.raw = b""
        self.consumed = 0

    def _pump(self, timeout):
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                return False
            self.raw += chunk
        return True

    def received(self):
        """Every line wscat printed as an incoming message, parsed as JSON."""
        text = ANSI.sub("", self.raw.decode("utf-8", "replace"))
        out = []
        for line in re.split(r"[\r\n]+", text):
            line = line.strip()
            while line.startswith("> "):
                line = line[2:]
            if line.startswith("< "):
                out.append(json.loads(line[2:]))
        return out

    def wait_for(self, pred, timeout=10.0):
        """Pump output until pred(message) holds for a message not yet
        consumed; returns it."""
        deadline = time.time() + timeout
        while True:
            msgs = self.received()
            for i in range(self.consumed, len(msgs)):
                if pred(msgs[i]):
                    self.consumed = i + 1
                    return msgs[i]
            if time.time() > deadline:
                raise AssertionError(f"wscat never printed the expected message; output: {self.raw!r}; "
                                     f"stderr: {self.stderr_text()}")
            if self.proc.poll() is not None and not self._pump(0.05):
                raise AssertionError(f"wscat exited ({self.proc.returncode}): {self.raw!r} "
                                     f"{self.stderr_text()}")
            self._pump(0.1)

    def send_line(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def stderr_text(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode("utf-8", "replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.close(self.master)


def of_type(t, **data):
    return lambda m: m.get("type") == t and all(m["data"].get(k) == v for k, v in data.items())


def run_seed_wscat_session(wscat, user2_url):
    """The seed's four lines with a second user (user2) connected through
    python, checking every answer wscat prints and what user2 receives."""

    async def main():
        welcome = await asyncio.get_running_loop().run_in_executor(
            None, lambda: wscat.wait_for(of_type("welcome")))
        assert welcome["data"]["userId"] == "testuser" and welcome["data"]["roomId"] == "general"

        user2 = await websockets.connect(user2_url, open_timeout=5)
        w2 = json.loads(await asyncio.wait_for(user2.recv(), 5))
        assert w2["type"] == "welcome"
        ex = lambda f: asyncio.get_running_loop().run_in_executor(None, f)  # noqa: E731
        j = await ex(lambda: wscat.wait_for(of_type("user_joined", userId="user2")))
        assert j["data"]["roomId"] == "general"

        async def user2_next(t):
            m = json.loads(await asyncio.wait_for(user2.recv(), 5))
            assert m["type"] == t, m
            return m["data"]

        wscat.send_line(SEED_WSCAT_LINES[0])  # chat
        chat = await ex(lambda: wscat.wait_for(of_type("chat")))
        assert chat["data"]["message"] == "Hello World!"
        assert chat["data"]["senderId"] == "testuser" and chat["data"]["senderName"] == "TestUser"
        assert (await user2_next("chat"))["message"] == "Hello World!"

        wscat.send_line(SEED_WSCAT_LINES[1])  # join_room developers
        j = await ex(lambda: wscat.wait_for(of_type("user_joined", roomId="developers")))
        assert j["data"]["userId"] == "testuser"
        left = await user2_next("user_left")
        assert left["userId"] == "testuser" and left["roomId"] == "general"

        wscat.send_line(SEED_WSCAT_LINES[2])  # private_message to user2
        pm = await user2_next("private_message")
        assert pm["message"] == "Private hello" and pm["senderId"] == "testuser"
        assert pm["targetUserId"] == "user2"

        wscat.send_line(SEED_WSCAT_LINES[3])  # room_list
        rl = await ex(lambda: wscat.wait_for(of_type("room_list")))
        assert rl["data"]["rooms"] == [{"roomId": "developers", "activeUsers": 1},
                                       {"roomId": "general", "activeUsers": 1}]
        # no error was printed for any of the four lines
        assert not [m for m in wscat.received() if m.get("type") == "error"], wscat.received()
        await user2.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_seed_python_snippet(start_server):
    srv = start_server()

    async def listener():
        ws = await websockets.connect(srv.url + "?userId=watcher", open_timeout=5)
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
        return ws

    code = SEED_PYTHON_SNIPPET.replace("ws://your-websocket-endpoint", srv.url)
    assert code.count(srv.url) == 1

    async def main():
        ws = await listener()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        # another member of the room saw the snippet's message too
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m["type"] == "chat":
                assert m["data"]["message"] == "Hello from Python!"
                assert m["data"]["senderId"] == "anonymous"
                break
        await ws.close()
        return out.decode()

    out = asyncio.run(main())
    lines = [l for l in out.splitlines() if l.startswith("Received: ")]
    assert len(lines) == 2, out
    assert lines[0].startswith("Received: {'type': 'welcome'"), out
    assert "'userId': 'anonymous'" in lines[0] and "'roomId': 'general'" in lines[0]
    assert lines[1].startswith("Received: {'type': 'chat'"), out
    assert "'message': 'Hello from Python!'" in lines[1]


def test_seed_wscat_session(start_server):
    srv = start_server()
    wscat = Wscat([WSCAT, "-c", srv.url + TEST_QUERY])
    try:
        run_seed_wscat_session(wscat, srv.url + "?userId=user2")
    finally:
        wscat.close()


SEED_TFVARS_SMALL = '''
aws_region   = "us-west-2"
environment  = "production"
project_name = "chat-app"
api_name    = "chat-websocket-api"
stage_name  = "prod"
'''


def test_seed_wscat_with_outputs_line(start_server):
    """`wscat -c "$(wsgate outputs -raw test_connection_url)"`, the seed's
    line with terraform replaced by wsgate, through a real shell."""
    # environment = "production" refuses the demo authorizer unless allowed
    srv = start_server(config_text=SEED_TFVARS_SMALL,
                       settings={"allow_demo_auth_in_production": "true"})
    cfg = os.path.join(srv.data_dir, "test.tfvars")
    out = subprocess.run([WSGATE_BIN, "outputs", "-c", cfg, "--port", str(srv.port),
                          "--set", "allow_demo_auth_in_production=true",
                          "-raw", "test_connection_url"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"ws://127.0.0.1:{srv.port}/prod{TEST_QUERY}"

    env = dict(os.environ, WSGATE=os.path.abspath(WSGATE_BIN), WSCAT=WSCAT, CFG=cfg,
               PORT=str(srv.port))
    line = ('wsgate() { "$WSGATE" "$@"; }; wscat() { "$WSCAT" "$@"; }; '
            'wscat -c "$(wsgate outputs -c "$CFG" --port "$PORT" '
            '--set allow_demo_auth_in_production=true -raw test_connection_url)"')
    wscat = Wscat(line, shell=True, env=env)
    try:
        run_seed_wscat_session(wscat, f"ws://127.0.0.1:{srv.port}/prod?userId=user2")
    finally:
        wscat.close()
