"""rediss://: wsgate nodes on a redis-server that speaks TLS only
(docs/redis.md "TLS"). Each test makes a throwaway CA, server and client
certificates with the openssl CLI in tmp_path and starts its own
redis-server with --port 0 --tls-port P on loopback (Debian's redis-server
is built with TLS), killed by PID."""
import asyncio
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from cluster_util import BEARER, readyz, wait_ready
from conftest import free_port
from test_cluster import PRESENCE, connect, recv_type, run, send

WSGATE_BIN = os.environ.get("WSGATE_BIN", "build/wsgate")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            cwd=d)


def make_cert(d, name, ca, ext):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d)


@pytest.fixture
def pki(tmp_path):
    """Paths of ca.pem (signs the server and the client), other-ca.pem (signs
    nothing here), server.pem/key (127.0.0.1 and localhost), client.pem/key."""
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    make_cert(d, "client", "ca", "extendedKeyUsage=clientAuth")
    return {k: str(d / k) for k in ("ca.pem", "other-ca.pem", "server.pem", "server.key",
                                    "client.pem", "client.key")}


class TlsRedis:
    """A redis-server that accepts TLS only, on a fixed port (restartable)."""

    def __init__(self, pki, auth_clients=False):
        self.pki = pki
        self.port = free_port()
        self.auth_clients = auth_clients
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--protected-mode", "no",
             "--tls-cert-file", self.pki["server.pem"], "--tls-key-file", self.pki["server.key"],
             "--tls-ca-cert-file", self.pki["ca.pem"],
             "--tls-auth-clients", "yes" if self.auth_clients else "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = ssl.create_default_context(cafile=self.pki["ca.pem"])
        ctx.load_cert_chain(self.pki["client.pem"], self.pki["client.key"])
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                import socket
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(16).startswith(b"+PONG"):
                            return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server (TLS) did not start")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def tls_redis(pki):
    servers = []

    def start(auth_clients=False):
        r = TlsRedis(pki, auth_clients)
        servers.append(r)
        return r
    yield start
    for r in servers:
        r.kill()


def tls_node(start_server, redis, first=None, name="node", **settings):
    s = {"engine": "redis", "redis_url": f"rediss://127.0.0.1:{redis.port}",
         "worker_threads": 2, "management_bearer_key": BEARER, **settings}
    if first is not None:
        s["kms_key_file"] = os.path.join(first.data_dir, "keys.json")
    return start_server(settings=s, name=name)


def wait_log(node, text, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in node.log():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never logged:\n{node.log()[-3000:]}")


def test_two_nodes_share_a_room_over_tls(start_server, tls_redis, pki):
    redis = tls_redis()
    a = tls_node(start_server, redis, name="a", redis_tls_ca_file=pki["ca.pem"])
    # b names the server by host name: looked up, then verified and sent as SNI
    b = tls_node(start_server, redis, a, name="b", redis_tls_ca_file=pki["ca.pem"],
                 redis_url=f"rediss://localhost:{redis.port}")
    wait_ready(a)
    wait_ready(b)

    async def main():
        wa, _ = await connect(a, userId="alice", roomId="tls")
        wb, _ = await connect(b, userId="bob", roomId="tls")
        # bob is in the room everywhere before alice speaks
        deadline = time.time() + 10
        while True:
            await send(wa, {"type": "room_list"})
            rooms = (await recv_type(wa, "room_list", skip=PRESENCE))["rooms"]
            if any(r["roomId"] == "tls" and r["activeUsers"] == 2 for r in rooms):
                break
            assert time.time() < deadline, rooms
            await asyncio.sleep(0.1)
        big = "x" * 40000  # several TLS records, more than one bridge buffer
        for k in range(20):
            await send(wa, {"type": "chat", "message": f"m{k}" if k % 5 else big + str(k)})
        got = []
        while len(got) < 20:
            got.append((await recv_type(wb, "chat", skip=PRESENCE))["message"])
        assert got == [f"m{k}" if k % 5 else big + str(k) for k in range(20)]
        wb2, _ = await connect(b, userId="carol", roomId="tls")
        await send(wb2, {"type": "history"})
        hist = await recv_type(wb2, "history", skip=PRESENCE)
        assert [m["message"] for m in hist["messages"]] == got
        for ws in (wa, wb, wb2):
            await ws.close()
    run(main())


def test_certificate_checks(start_server, tls_redis, pki):
    redis = tls_redis()
    wrong = tls_node(start_server, redis, name="wrongca", redis_tls_ca_file=pki["other-ca.pem"])
    wait_log(wrong, "certificate verify failed")
    status, _ = readyz(wrong)
    assert status == 503
    assert "redis_down" in wrong.log()
    # the system store does not know the test CA either
    system = tls_node(start_server, redis, name="system")
    wait_log(system, "certificate verify failed")
    assert readyz(system)[0] == 503
    # a name the certificate does not carry
    named = tls_node(start_server, redis, name="badname", redis_tls_ca_file=pki["ca.pem"],
                     redis_tls_server_name="redis.example.com")
    wait_log(named, "hostname mismatch")
    assert readyz(named)[0] == 503
    # a name it carries (the URL says 127.0.0.1)
    good = tls_node(start_server, redis, name="goodname", redis_tls_ca_file=pki["ca.pem"],
                    redis_tls_server_name="localhost")
    wait_ready(good)
    # no verification at all: connects, and says so
    skip = tls_node(start_server, redis, name="skip", redis_tls_ca_file=pki["other-ca.pem"],
                    redis_tls_insecure_skip_verify="true")
    wait_ready(skip)
    assert "redis_tls_insecure" in skip.log()
    assert "redis_tls_insecure" not in good.log()


def test_client_certificate(start_server, tls_redis, pki):
    redis = tls_redis(auth_clients=True)
    without = tls_node(start_server, redis, name="nocert", redis_tls_ca_file=pki["ca.pem"])
    wait_log(without, "redis_down")
    wait_log(without, "certificate required")
    assert readyz(without)[0] == 503
    good = tls_node(start_server, redis, name="cert", redis_tls_ca_file=pki["ca.pem"],
                    redis_tls_cert_file=pki["client.pem"], redis_tls_key_file=pki["client.key"])
    wait_ready(good)

    async def main():
        ws, _ = await connect(good, userId="u", roomId="r")
        await send(ws, {"type": "chat", "message": "hello"})
        assert (await recv_type(ws, "chat", skip=PRESENCE))["message"] == "hello"
        await ws.close()
    run(main())


class RefusingPeer:
    """A TLS server (Python's ssl, as a TLS Redis would) that requires a
    client certificate. Refusing a client without one, it sends its alert
    and resets the connection while the client's process is stopped
    (SIGSTOP, the node the test started): the node finds the alert and the
    reset waiting together, as a loaded machine makes it find them, on
    every connection instead of by chance. Serves for at most 20 s."""

    def __init__(self, pki):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki["server.pem"], pki["server.key"])
        self.ctx.load_verify_locations(pki["ca.pem"])
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.pid = None
        self.pid_known = threading.Event()
        self.refused = 0
        self.done = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        deadline = time.time() + 20
        while not self.done and time.time() < deadline:
            try:
                raw, _ = self.listener.accept()
            except socket.timeout:
                continue
            try:
                self._refuse(raw)
            except OSError:
                pass
            finally:
                raw.close()
        self.listener.close()

    def _refuse(self, raw):
        raw.settimeout(5)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(inc, out, server_side=True)
        while True:
            try:
                tls.do_handshake()
                return  # it had a certificate: not what this peer is for
            except ssl.SSLWantReadError:
                if out.pending:
                    raw.sendall(out.read())
                data = raw.recv(65536)
                if not data:
                    return
                inc.write(data)
            except ssl.SSLError:
                break
        alert = out.read()
        if not alert or not self.pid_known.wait(10):
            return
        # The client took its handshake for done and sent its first
        # commands: take them, so that it is only waiting to read.
        raw.settimeout(0.3)
        try:
            raw.recv(65536)
        except socket.timeout:
            pass
        os.kill(self.pid, signal.SIGSTOP)
        try:
            raw.sendall(alert)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # with unread data and no linger: a reset
            time.sleep(0.2)
        finally:
            os.kill(self.pid, signal.SIGCONT)
        self.refused += 1

    def stop(self):
        self.done = True
        self.thread.join(timeout=30)


def test_a_refusal_followed_by_a_reset_logs_the_servers_reason(start_server, pki):
    """The server's alert and its reset reach the bridge together (libuv
    then reports the socket as EBADF): the bridge still reads the alert and
    logs why (certificate required), never "bad file descriptor"."""
    peer = RefusingPeer(pki)
    try:
        node = tls_node(start_server, peer, name="reset", redis_tls_ca_file=pki["ca.pem"])
        peer.pid = node.proc.pid
        peer.pid_known.set()
        wait_log(node, "certificate required")
        deadline = time.time() + 15
        while peer.refused < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert peer.refused >= 2
        assert readyz(node)[0] == 503
    finally:
        peer.stop()
    assert "bad file descriptor" not in node.log(), node.log()[-3000:]


def test_redis_restart_over_tls_reconnects(start_server, tls_redis, pki):
    redis = tls_redis()
    node = tls_node(start_server, redis, redis_tls_ca_file=pki["ca.pem"])
    wait_ready(node)
    redis.kill()
    wait_ready(node, want=503)
    redis.start()
    wait_ready(node, timeout=30)

    async def main():
        ws, _ = await connect(node, userId="u", roomId="r")
        await send(ws, {"type": "chat", "message": "after"})
        assert (await recv_type(ws, "chat", skip=PRESENCE))["message"] == "after"
        await ws.close()
    run(main())
    assert "redis_up" in node.log()


def test_check_validates_the_tls_files(tmp_path, pki):
    def check(*sets):
        args = [WSGATE_BIN, "check"]
        for s in sets:
            args += ["--set", s]
        return subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=tmp_path)
    url = "redis_url=rediss://u:p@127.0.0.1:6380/1"
    r = check("engine=redis", url, f"redis_tls_ca_file={pki['ca.pem']}",
              f"redis_tls_cert_file={pki['client.pem']}", f"redis_tls_key_file={pki['client.key']}")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "redis_tls_insecure_skip_verify" not in r.stderr
    r = check("engine=redis", url, "redis_tls_insecure_skip_verify=true")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "warning: redis_tls_insecure_skip_verify = true" in r.stderr
    r = check("engine=redis", url, "redis_tls_ca_file=/nonexistent/ca.pem")
    assert r.returncode != 0
    assert "redis_tls_ca_file: cannot read /nonexistent/ca.pem" in r.stderr + r.stdout
    r = check("engine=redis", url, f"redis_tls_cert_file={pki['client.pem']}")
    assert r.returncode != 0
    assert "must be set together" in r.stderr + r.stdout
