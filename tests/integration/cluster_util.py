"""Helpers for the cluster suites (engine = "redis", issue 13): a real
redis-server on a free loopback port (optionally persistent, restartable on
the same port), wsgate nodes on it, and `Spread`, which looks like one
conftest.Server to a test written for one node while it hands each new
client the next node in turn.

Everything is stopped by PID: the Redis by the test's fixture, the nodes by
conftest's start_server (which also fails a test whose node did not exit
with status 0). `DelayProxy` sits between a node and the Redis and holds
back the chunks a test picks, as a loaded machine does now and then."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port

BEARER = "bearer-cluster-test-0123456789"


def answers_as(port, pid):
    """The redis-server answering on port is process pid (INFO server's
    process_id): a PONG alone may come from another run's server that took
    the port first, and a test talking to it sees that run's rooms."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        data = b""
        while b"\r\n" not in data:  # the bulk reply's length
            chunk = s.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, data = data.partition(b"\r\n")
        if not head.startswith(b"$"):
            return False
        while len(data) < int(head[1:]):
            chunk = s.recv(65536)
            if not chunk:
                return False
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1]) == pid
    return False


class Redis:
    """A redis-server of the test's own. `persist` turns on the AOF with
    an fsync before every reply (appendonly yes, appendfsync always) in
    `data_dir`, so that kill() and start() on the same port lose nothing
    that Redis acknowledged."""

    def __init__(self, data_dir=None, persist=False, port=None):
        self.port = port or free_port()
        self.data_dir = str(data_dir) if data_dir else None
        self.persist = persist
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--protected-mode", "no"]
        if self.persist:
            os.makedirs(self.data_dir, exist_ok=True)
            args += ["--dir", self.data_dir, "--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                if self.command("PING").startswith(b"+PONG"):
                    if not answers_as(self.port, self.proc.pid):
                        # Another redis-server (a test run beside this one)
                        # holds the port: ours cannot bind and exits.
                        continue
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def command(self, *args):
        """One command over a raw socket (RESP); returns the raw reply
        (a reply that does not fit one recv is cut: for small replies)."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(out)
            return s.recv(1 << 20)

    def kill(self):
        """kill -9, as a crash: what the AOF holds is all that survives."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path / "redis")
    yield r
    r.kill()


@pytest.fixture
def persistent_redis(tmp_path):
    r = Redis(tmp_path / "redis-aof", persist=True)
    yield r
    r.kill()


def node_settings(redis, first=None, via=None, **settings):
    """Settings for a node on `redis` (reached through port `via` when
    given: a DelayProxy's); every node but the first reads the first
    node's key file (values in Redis are sealed with it)."""
    s = {"engine": "redis", "redis_url": f"redis://127.0.0.1:{via or redis.port}",
         "worker_threads": 2, "management_bearer_key": BEARER, **settings}
    if first is not None and str(s.get("enable_encryption", "true")).lower() != "false":
        s["kms_key_file"] = os.path.join(first.data_dir, "keys.json")
    return s


def start_nodes(start_server, redis, n=3, **settings):
    """n nodes on `redis`, each with its own port and data directory,
    started with conftest's start_server and ready (/readyz 200)."""
    nodes = []
    for i in range(n):
        s = node_settings(redis, nodes[0] if nodes else None, **settings)
        nodes.append(start_server(settings=s, name=f"node{i}-"))
    for node in nodes:
        wait_ready(node)
    return nodes


def readyz(node):
    """(status, body) of the node's /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_ready(node, want=200, timeout=15.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = readyz(node)
        except OSError as e:
            last = e
        if isinstance(last, tuple) and last[0] == want:
            return last[1]
        time.sleep(0.05)
    raise AssertionError(f"/readyz never answered {want}: {last}")


class _Procs:
    """proc of a Spread: wait() waits for every node."""

    def __init__(self, nodes):
        self.nodes = nodes

    def wait(self, timeout=None):
        codes = [n.proc.wait(timeout=timeout) for n in self.nodes]
        return next((c for c in codes if c != 0), 0)

    def poll(self):
        codes = [n.proc.poll() for n in self.nodes]
        return None if None in codes else next((c for c in codes if c != 0), 0)


class Spread:
    """Several nodes seen as one server. Each read of `url` or `port` (what
    a test reads to open a client) gives the next node, round-robin, so a
    test written for one server runs with its clients spread over every
    node. Signals go to every node; the log is every node's."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.stage = nodes[0].stage
        self.data_dir = nodes[0].data_dir
        self.proc = _Procs(nodes)
        self._next = 0

    def _pick(self):
        node = self.nodes[self._next % len(self.nodes)]
        self._next += 1
        return node

    @property
    def url(self):
        return self._pick().url

    @property
    def port(self):
        return self._pick().port

    def log(self):
        return "\n".join(n.log() for n in self.nodes)

    def signal(self, sig):
        for n in self.nodes:
            n.signal(sig)

    def stop(self, timeout=10.0):
        codes = [n.stop(timeout) for n in self.nodes]
        return next((c for c in codes if c != 0), 0)


class DelayProxy:
    """127.0.0.1:port -> Redis at `target_port`; a chunk from a client for
    which `hold(chunk)` is true is forwarded `delay` seconds late (in order:
    the connection's later bytes wait behind it). `held` counts them, so a
    test can check that the window it wanted was really opened."""

    def __init__(self, target_port, delay, hold):
        self.target = target_port
        self.delay = delay
        self.hold = hold
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # Redis already stopped (teardown)
                c.close()
                continue
            threading.Thread(target=self._pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()

    def _pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and self.hold(data):
                    self.held += 1
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closing = True
        self.sock.close()
