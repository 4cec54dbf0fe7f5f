"""scripts/cluster.sh, what `make cluster` runs (issue 13, README, docs/redis.md):
three nodes and a real redis-server on this machine, or two Redis shards
with CLUSTER_SHARDS=2. The script itself is run, on ports of the test's own:
it prints one line per node, a chat sent on one node reaches clients on the
other two, and Ctrl-C (SIGINT to the script, in the foreground) or
`scripts/cluster.sh stop` (after `start`) stops every process it started,
nodes first (their logs show no Redis outage and no sanitizer report); a
node that dies ends the run and the script stops the rest.

Bounded: every wait has a timeout, and whatever the script's pid files
name is killed by PID at the end if it is still there."""
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time

from conftest import WSGATE_BIN
from test_cluster import PRESENCE, recv_json, recv_type, run, send, settle
from test_cluster_shards import Ring, resp

import websockets

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SCRIPT = os.path.join(ROOT, "scripts", "cluster.sh")


def free_ports(n):
    """A base port p with p .. p+n-1 free on loopback (the script numbers
    its servers from a base)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for k in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no run of free ports")


def env_for(tmp_path, shards):
    env = dict(os.environ, WSGATE_BIN=WSGATE_BIN, CLUSTER_DIR=str(tmp_path / "cluster"),
               REDIS_PORT=str(free_ports(shards)), CLUSTER_PORT=str(free_ports(3)),
               CLUSTER_SHARDS=str(shards))
    env.pop("CLUSTER_NODES", None)
    return env


def read_banner(proc, timeout=240.0):
    """The script's lines up to its last one ("logs in ..."), as
    ({node number: ws url}, [redis urls]). The read runs on its own thread
    so that a script that hangs fails the test instead of blocking it."""
    lines = []

    def reader():
        for raw in proc.stdout:
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if line.startswith("logs in "):
                return

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(loop.run_in_executor(None, reader), timeout))
    finally:
        loop.close()
    assert lines and lines[-1].startswith("logs in "), lines
    nodes, redises = {}, []
    for line in lines:
        m = re.match(r"node (\d+)  (ws://\S+)  chat page (http://\S+)  dashboard (http://\S+)$",
                     line)
        if m:
            nodes[int(m.group(1))] = m.group(2)
        m = re.match(r"redis \d+  (redis://\S+)$", line)
        if m:
            redises.append(m.group(1))
    return nodes, redises


def pids_of(cluster_dir):
    out = {}
    if not os.path.isdir(cluster_dir):
        return out
    for name in os.listdir(cluster_dir):
        if name.endswith(".pid"):
            with open(os.path.join(cluster_dir, name)) as f:
                out[name] = int(f.read().strip())
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (its parent, the script, is gone too)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_leftovers(pids):
    for pid in pids.values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.1)
    return [name for name, p in pids.items() if alive(p)]


def node_logs_clean(cluster_dir, nodes=3):
    """Every node left cleanly: no sanitizer report (an ASan build's nodes
    write theirs to the log the script gave them) and no Redis outage on
    the way out (the script stops the nodes before Redis)."""
    for n in range(1, nodes + 1):
        with open(os.path.join(cluster_dir, f"node{n}.log"), errors="replace") as f:
            log = f.read()
        for bad in ("Sanitizer", "runtime error:", '"event":"redis_down"'):
            assert bad not in log, (n, log[-3000:])


def assert_all_stopped(env, pids, logs=True):
    """Every process the script started is gone, its pid files with them,
    and (logs) every node left cleanly."""
    assert wait_gone(pids) == []
    assert not [f for f in os.listdir(env["CLUSTER_DIR"]) if f.endswith(".pid")]
    if logs:
        node_logs_clean(env["CLUSTER_DIR"])


@contextlib.contextmanager
def script_run(env, *args):
    """Runs scripts/cluster.sh with args; yields (proc, pids), where the
    test fills pids (pid file name -> pid) once the script has started.
    Whatever is still running at the end is killed by PID."""
    proc = subprocess.Popen(["sh", SCRIPT, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    pids = {}
    try:
        yield proc, pids
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(pids or pids_of(env["CLUSTER_DIR"]))


def query(port, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(out)
        return resp(s.recv(1 << 20))


async def chat_crosses_nodes(urls, room):
    """A member of room on each node; the first node's member chats and
    every member, on every node, gets the chat."""
    wss = []
    try:
        for i, url in enumerate(urls):
            ws = await websockets.connect(f"{url}?userId={room}-u{i}&roomId={room}",
                                          open_timeout=10, close_timeout=2)
            wss.append(ws)
            assert (await recv_json(ws))["type"] == "welcome"
        await settle(wss)
        await send(wss[0], {"type": "chat", "message": f"hello {room}"})
        for ws in wss:
            data = await recv_type(ws, "chat", skip=PRESENCE)
            assert data["message"] == f"hello {room}" and data["roomId"] == room, data
    finally:
        for ws in wss:
            await ws.close()


def test_three_nodes_one_redis_and_ctrl_c_stops_everything(tmp_path):
    env = env_for(tmp_path, 1)
    with script_run(env) as (proc, pids):
        nodes, redises = read_banner(proc)
        assert sorted(nodes) == [1, 2, 3]
        assert [f"ws://127.0.0.1:{int(env['CLUSTER_PORT']) + k}/staging" for k in range(3)] == \
            [nodes[n] for n in (1, 2, 3)]
        assert redises == [f"redis://127.0.0.1:{env['REDIS_PORT']}"]
        pids.update(pids_of(env["CLUSTER_DIR"]))
        assert sorted(pids) == ["node1.pid", "node2.pid", "node3.pid", "redis0.pid"]
        # the pid files name the servers themselves (what `stop` kills)
        for name, pid in pids.items():
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            assert (b"redis-server" if name.startswith("redis") else b"serve") in cmd, (name, cmd)

        run(chat_crosses_nodes([nodes[n] for n in (1, 2, 3)], "general"))

        # Ctrl-C in a terminal: SIGINT to the script (the servers run in
        # sessions of their own, so only the script gets it)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        rest = proc.stdout.read().decode()
        assert "stopped" in rest, rest
        assert_all_stopped(env, pids)


def test_two_shards_start_and_stop(tmp_path):
    env = env_for(tmp_path, 2)
    with script_run(env, "start") as (proc, pids):
        nodes, redises = read_banner(proc)
        # `start` returns once everything serves
        assert proc.wait(timeout=30) == 0
        assert sorted(nodes) == [1, 2, 3]
        rport = int(env["REDIS_PORT"])
        assert redises == [f"redis://127.0.0.1:{rport}", f"redis://127.0.0.1:{rport + 1}"]
        pids.update(pids_of(env["CLUSTER_DIR"]))
        assert sorted(pids) == ["node1.pid", "node2.pid", "node3.pid", "redis0.pid",
                                "redis1.pid"]

        # every node has both servers (redis_urls): a room on each shard
        # works across nodes and its sequence lives on its own shard
        ring = Ring([f"127.0.0.1:{rport}/0", f"127.0.0.1:{rport + 1}/0"])
        for shard in (0, 1):
            room = ring.pick("room-", shard)[0]
            run(chat_crosses_nodes([nodes[n] for n in (1, 2, 3)], room))
            assert query(rport + shard, "GET", f"wsgate:{{{room}}}:seq") == b"1"
            assert query(rport + 1 - shard, "EXISTS", f"wsgate:{{{room}}}:seq") == 0

        out = subprocess.run(["sh", SCRIPT, "stop"], env=env, cwd=ROOT, capture_output=True,
                             timeout=120)
        assert out.returncode == 0 and b"stopped" in out.stdout, out
        assert_all_stopped(env, pids)


def test_a_node_that_dies_ends_the_run(tmp_path):
    env = env_for(tmp_path, 1)
    with script_run(env) as (proc, pids):
        read_banner(proc)
        pids.update(pids_of(env["CLUSTER_DIR"]))
        os.kill(pids["node2.pid"], signal.SIGKILL)
        # the script notices within its one-second watch and stops the rest
        assert proc.wait(timeout=60) == 1
        rest = proc.stdout.read().decode()
        assert "node 2 exited" in rest, rest
        assert_all_stopped(env, pids, logs=False)
