"""Browser tests of the chat page (/) and the dashboard (/dashboard): a real
Chromium (Debian's, never a downloaded one) driven by playwright-core from
the node scripts in tests/browser/. Each script exits non-zero and prints
what failed; screenshots go to build/test-artifacts/."""
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
import websockets

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
ARTIFACTS = os.path.join(ROOT, "build", "test-artifacts")
CHROMIUM = os.environ.get("WSGATE_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM)
    or shutil.which("node") is None
    or not os.path.isdir(os.path.join(ROOT, "node_modules", "playwright-core")),
    reason="needs chromium, node and playwright-core (make deps)",
)


@pytest.fixture
def profile_tmp():
    """A short per-test TMPDIR: Playwright puts each browser's fresh
    profile (user-data dir) there, and Chromium's singleton socket path
    must stay under the 108-byte Unix socket limit, which pytest's tmp_path
    can exceed."""
    with tempfile.TemporaryDirectory(prefix="wsb-") as d:
        yield d


def node_env(server, profile_tmp, **extra):
    os.makedirs(ARTIFACTS, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "WSGATE_HTTP": f"http://127.0.0.1:{server.port}",
        "WSGATE_ARTIFACTS": ARTIFACTS,
        "WSGATE_CHROMIUM": CHROMIUM,
        # Playwright makes each browser's fresh profile under TMPDIR.
        "TMPDIR": profile_tmp,
    })
    env.update(extra)
    return env


def test_pages_are_served_with_security_headers(start_server):
    srv = start_server()
    base = f"http://127.0.0.1:{srv.port}"
    for path, ctype in [("/", "text/html"), ("/dashboard", "text/html"),
                        ("/chat.js", "text/javascript"), ("/style.css", "text/css")]:
        with urllib.request.urlopen(base + path) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith(ctype)
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert r.headers["Cache-Control"]
            body = r.read()
            assert len(body) == int(r.headers["Content-Length"])
    with urllib.request.urlopen(base + "/web-config.json") as r:
        assert json.load(r) == {"stage": "staging"}


def test_config_endpoint_masks_secrets(start_server):
    key = "cfg-" + secrets.token_hex(12)
    srv = start_server(settings={"management_bearer_key": key, "stage_name": "prod1"})
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/prod1/@config",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req) as r:
        raw = r.read().decode()
    assert key not in raw
    variables = json.loads(raw)["variables"]
    assert variables["management_bearer_key"] == "********"
    assert variables["stage_name"] == "prod1"
    assert variables["port"] == srv.port
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/prod1/@config")
    assert e.value.code == 403


def run_node(script, env, timeout=60):
    t0 = time.time()
    p = subprocess.run(["node", os.path.join(BROWSER_DIR, script)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    print(out)
    assert p.returncode == 0, f"{script} failed after {time.time() - t0:.1f}s:\n{out}"
    return out


def test_chat_in_the_browser(start_server, profile_tmp):
    srv = start_server()
    run_node("chat.mjs", node_env(srv, profile_tmp))


def test_chat_in_the_browser_with_deflate(start_server, profile_tmp):
    """Chromium offers permessage-deflate on every WebSocket: with the
    extension on, the chat page works compressed, and the access log's
    $connect lines say every browser connection negotiated it."""
    srv = start_server(settings={"permessage_deflate": "true"})
    run_node("chat.mjs", node_env(srv, profile_tmp))
    connects = [json.loads(line) for line in srv.log().splitlines()
                if '"event":"access"' in line and '"eventType":"CONNECT"' in line]
    browsers = [c for c in connects if "Chrome" in c.get("identity.userAgent", "")]
    assert browsers, connects
    assert all(c.get("extensions") == "permessage-deflate" for c in browsers), browsers


async def _load(url, conns, proc, stop_after=45.0):
    """Keep `conns` clients in room loadroom sending chat messages (about
    20/s each) until the node process exits. A client closed by the
    dashboard's Disconnect button stops quietly."""
    async def client(i):
        q = f"?userId=loaduser-{i}&username=Load%20{i}&roomId=loadroom"
        try:
            async with websockets.connect(url + q) as ws:
                await ws.recv()  # welcome
                n = 0
                while proc.poll() is None:
                    await ws.send(json.dumps({"type": "chat", "message": f"load {i} #{n}"}))
                    n += 1
                    # drain what the room broadcasts to us
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), timeout=0.05)
                    except asyncio.TimeoutError:
                        pass
        except websockets.ConnectionClosed:
            pass

    tasks = [asyncio.create_task(client(i)) for i in range(conns)]
    deadline = time.time() + stop_after
    while proc.poll() is None and time.time() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.gather(*tasks)


def test_dashboard_in_the_browser(start_server, profile_tmp):
    key = "dash-" + secrets.token_hex(16)
    conns = 5
    srv = start_server(settings={"management_bearer_key": key})
    env = node_env(srv, profile_tmp, WSGATE_MGMT_KEY=key, WSGATE_LOAD_CONNS=str(conns))
    t0 = time.time()
    proc = subprocess.Popen(["node", os.path.join(BROWSER_DIR, "dashboard.mjs")], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    ready = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "READY":
                ready.set()
        ready.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        assert ready.wait(40), "dashboard.mjs never got ready:\n" + "".join(lines)
        if proc.poll() is None:
            asyncio.run(_load(srv.url, conns, proc))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        th.join(5)
    out = "".join(lines)
    print(out)
    assert proc.returncode == 0, f"dashboard.mjs failed after {time.time() - t0:.1f}s:\n{out}"
