"""Shared fixtures: each test starts its own wsgate from settings written in
the test (h2o's t/ habit), on 127.0.0.1 and a free port, and stops it by PID."""
import os
import signal
import socket
import subprocess
import time

import pytest

WSGATE_BIN = os.environ.get(
    "WSGATE_BIN",
    os.path.join(os.path.dirname(__file__), "..", "..", "build", "wsgate"),
)


TEST_DEFAULTS = {
    "throttling_burst_limit": 5000,
    "throttling_rate_limit": 10000,
    "connection_rate_limit": 0,
    "connect_rate_per_ip": 0,
    "presence_rate_limit": 0,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir, settings=None, args=None, config_text=None, env=None):
        self.port = free_port()
        self.data_dir = str(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        cmd = [WSGATE_BIN, "serve", "--listen", "127.0.0.1", "--port", str(self.port),
               "--data-dir", self.data_dir]
        # Tests send bursts far beyond a chat user's pace: unless a test says
        # otherwise, the token buckets are opened wide so that timing on a
        # busy machine never decides a result. Throttling tests set their own.
        settings = dict(TEST_DEFAULTS, **(settings or {})) if config_text is None else settings
        if config_text is not None:
            path = os.path.join(self.data_dir, "test.tfvars")
            with open(path, "w") as f:
                f.write(config_text)
            cmd += ["-c", path]
        for k, v in (settings or {}).items():
            cmd += ["--set", f"{k}={v}"]
        cmd += list(args or [])
        self.stage = (settings or {}).get("stage_name", "staging")
        self.log_path = os.path.join(self.data_dir, "server.stderr")
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        self._wait_ready()

    def _wait_ready(self, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wsgate exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("wsgate did not start listening: " + self.log())

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/{self.stage}"

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_server(tmp_path):
    """Call start_server(settings={...}, args=[...], config_text=...) to get a
    running Server; every server started is stopped at the end of the test,
    and must exit with status 0 (a crash or sanitizer report fails the test)."""
    servers = []

    def start(settings=None, args=None, config_text=None, env=None, name="srv"):
        s = Server(tmp_path / f"{name}{len(servers)}", settings, args, config_text, env)
        servers.append(s)
        return s

    yield start
    for s in servers:
        rc = s.stop()
        assert rc == 0, f"wsgate exited with {rc}:\n{s.log()[-4000:]}"


@pytest.fixture
def echo_server(start_server):
    """A server in echo mode with the message size limits raised for
    conformance runs (Autobahn's group 9 sends up to 16 MiB). The send queue
    (max_queued_bytes, slow_consumer_timeout_ms) keeps its defaults: echoing
    a message bigger than max_queued_bytes to a client that reads it must
    work as it is shipped (issue 18)."""
    return start_server(settings={
        "mode": "echo",
        "max_frame_size": 16 * 1024 * 1024 + 1024,
        "max_message_size": 16 * 1024 * 1024 + 1024,
        "max_fragmented_bytes": 16 * 1024 * 1024 + 1024,
    })
