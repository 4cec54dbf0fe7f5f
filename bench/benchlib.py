"""What the Python bench scripts that drive wsgate nodes share: the
integration suite's helpers on sys.path (conftest.Server, wsraw), the
binary from WSGATE_BIN (build/wsgate by default), a p50/p99 summary and a
throwaway redis-server (no persistence) on a loopback port, stopped by
PID. Import it before conftest or wsraw."""
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("WSGATE_BIN", os.path.join(HERE, "..", "build", "wsgate"))


def p50_p99(lat):
    """(median, 99th percentile) of `lat`, which it sorts in place."""
    lat.sort()
    return statistics.median(lat), lat[int(len(lat) * 0.99)]


def start_redis(port):
    """A redis-server without persistence on 127.0.0.1:port, once it
    accepts connections; the caller stops it with stop_redis()."""
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_redis(proc)
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)


def stop_redis(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def stop_all(servers, redis):
    """Stops each conftest.Server in `servers`, then the redis-server."""
    for srv in servers:
        srv.stop()
    stop_redis(redis)


def timed_restore(binary, data, out, timeout):
    """Runs `binary restore` of the store in `data` to the present into
    `out`; returns (seconds it took, bytes restored)."""
    t0 = time.monotonic()
    subprocess.run([binary, "restore", "--data-dir", data, "--to", str(int(time.time()) + 1),
                    "--out", out], stdout=subprocess.DEVNULL, check=True, timeout=timeout)
    return time.monotonic() - t0, os.path.getsize(out)
