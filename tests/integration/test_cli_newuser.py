"""What trips a brand-new user following the README and the docs word for
word (round 7): each test here failed before its fix."""
import os
import socket
import subprocess

from conftest import WSGATE_BIN, free_port


def wsgate(*args, env=None, timeout=30, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TF_VAR_")}
    full_env.update(env or {})
    return subprocess.run([WSGATE_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)


def test_serve_on_a_busy_port_creates_nothing(tmp_path):
    """A start on a port another program holds used to create the data
    directory, the data key, the management credentials, the store and a
    PITR snapshot before it found the port busy."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    data = tmp_path / "data"
    try:
        r = wsgate("serve", "--port", str(port), "--data-dir", str(data))
    finally:
        holder.close()
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"wsgate: port {port} is already in use by another process (127.0.0.1)" in r.stderr
    assert not data.exists(), sorted(os.listdir(data))
