#!/usr/bin/python3
"""Cross-node fan-out (issue 13): the same room fan-out on the local engine
(one node) and on engine = "redis" (NODES nodes, one redis-server), in the
same run, on this machine. The load generator (build/wsgate-loadgen,
workload fanout) spreads each room's members over the nodes (member i dials
node i mod NODES), so every chat crosses nodes; each room's publisher sends
RATE chats/s, and every delivery is timed from the publisher's send.

Per setup and rate: deliveries/s, publish-to-delivery p50/p99, missing
deliveries, server CPU per delivery (the wsgate processes' utime+stime from
/proc over the measured window, summed over the nodes), and for the Redis
engine: Redis commands per chat and Redis CPU time per chat (INFO
commandstats before/after: calls and usec of every command, over the chats
the nodes published: wsgate_redis_published_chats_total), and the ratio of
the cluster's CPU per delivery to the local engine's (goal <= 1.3); for
both, deliveries per write-family system call of the wsgate processes
(/proc/PID/io syscw over the same window): how many frames a write carries.

Bounded: each load generator run has its own watchdog and a timeout here;
every process started is stopped by PID at the end (redis-server with
PR_SET_PDEATHSIG too). Not part of `make test`.

    make bench-cluster
    CF_RATES=62.5,250 CF_ROOMS=4 CF_MEMBERS=100 CF_NODES=3 CF_DURATION=8 \\
        BUILD=build /usr/bin/python3 bench/cluster_fanout.py

Settings (environment): CF_NODES (3), CF_ROOMS (4), CF_MEMBERS (100),
CF_RATES (chats/s per room, comma-separated; default 62.5,250: 25,000 and
100,000 deliveries/s), CF_DURATION (8 s measured, after CF_WARMUP 2 s),
CF_WORKERS (worker_threads per node, 1), CF_SHARDS (Redis servers, 1; more
are given to the nodes as redis_urls: rooms sharded over them, commands and
Redis CPU summed over all), CF_ENCRYPTION (true: values sealed as by
default), CF_JSON (where the results go, $BUILD/bench-cluster.json).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
BUILD = os.environ.get("BUILD", "build")
WSGATE = os.path.join(ROOT, BUILD, "wsgate")
LOADGEN = os.path.join(ROOT, BUILD, "wsgate-loadgen")
NODES = int(os.environ.get("CF_NODES", "3"))
ROOMS = int(os.environ.get("CF_ROOMS", "4"))
MEMBERS = int(os.environ.get("CF_MEMBERS", "100"))
RATES = [float(x) for x in os.environ.get("CF_RATES", "62.5,250").split(",")]
DURATION = float(os.environ.get("CF_DURATION", "8"))
WARMUP = int(os.environ.get("CF_WARMUP", "2"))
WORKERS = int(os.environ.get("CF_WORKERS", "1"))
SHARDS = int(os.environ.get("CF_SHARDS", "1"))
ENCRYPTION = os.environ.get("CF_ENCRYPTION", "true")
OUT_JSON = os.environ.get("CF_JSON", os.path.join(ROOT, BUILD, "bench-cluster.json"))

# As bench/run.sh: nothing that would throttle or slow a benchmark.
BASE = {"logging_level": "ERROR", "throttling_enabled": "false", "connection_rate_limit": 0,
        "connect_rate_per_ip": 0, "enable_dynamodb_point_in_time_recovery": "false",
        "max_connections_per_ip": 0, "worker_threads": WORKERS,
        "enable_encryption": ENCRYPTION}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def die_with_parent():
    import ctypes
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Redis:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        wait_port(self.port, self.proc, "redis-server")

    def command(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(out)
            data = b""
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
                if data.startswith(b"$"):
                    n = int(data[1:data.index(b"\r\n")])
                    if len(data) >= data.index(b"\r\n") + 2 + n + 2:
                        return data[data.index(b"\r\n") + 2:][:n].decode()
                elif data.endswith(b"\r\n"):
                    return data.decode()

    def commandstats(self):
        """{command: (calls, usec)} from INFO commandstats."""
        stats = {}
        for line in self.command("INFO", "commandstats").splitlines():
            if not line.startswith("cmdstat_"):
                continue
            name, rest = line[len("cmdstat_"):].split(":", 1)
            kv = dict(p.split("=", 1) for p in rest.split(","))
            stats[name] = (int(kv["calls"]), int(kv["usec"]))
        return stats

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Node:
    def __init__(self, data_dir, settings):
        self.port = free_port()
        self.data_dir = data_dir
        os.makedirs(data_dir, exist_ok=True)
        cmd = [WSGATE, "serve", "--listen", "127.0.0.1", "--port", str(self.port),
               "--data-dir", data_dir]
        for k, v in settings.items():
            cmd += ["--set", f"{k}={v}"]
        self.log = open(os.path.join(data_dir, "server.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, self.proc, "wsgate")
        except RuntimeError as e:
            self.stop()
            with open(os.path.join(data_dir, "server.log"), errors="replace") as f:
                raise RuntimeError(f"{e}: {f.read()[-2000:]}") from None

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("node never ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def loadgen(nodes, rate, label, during=None):
    """Run the load generator on nodes; during(proc), if given, runs while
    it does (and must return before it ends)."""
    ports = ",".join(str(n.port) for n in nodes)
    pids = ",".join(str(n.proc.pid) for n in nodes)
    cmd = [LOADGEN, "--workload", "fanout", "--ports", ports, "--port", str(nodes[0].port),
           "--server-pid", pids, "--rooms", str(ROOMS), "--members", str(MEMBERS),
           "--rate", str(rate), "--size", "32", "--duration", str(DURATION),
           "--warmup", str(WARMUP), "--label", label]
    budget = 60 + WARMUP + DURATION + 10
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if during:
            during(proc)
        out, err = proc.communicate(timeout=budget + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    sys.stdout.write(out.splitlines()[0] + "\n" if out else err)
    for line in out.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"loadgen gave no result: {err}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_calls(pid):
    """The process's write-family system calls so far (/proc/PID/io syscw:
    write, writev, pwrite, on sockets and files alike)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    return 0


def window_counts(redises, nodes):
    """What the Redis servers ran (and their CPU), what the nodes sent and
    how many write calls they made, for the window measured."""
    stats = {}
    for r in redises:
        for k, (calls, usec) in r.commandstats().items():
            c0, u0 = stats.get(k, (0, 0))
            stats[k] = (c0 + calls, u0 + usec)
    return (stats, sum(n.metric("wsgate_redis_commands_total") for n in nodes),
            sum(cpu_seconds(r.proc.pid) for r in redises),
            sum(write_calls(n.proc.pid) for n in nodes))


def inside_window(redises, nodes, marks):
    """Snapshot Redis's commandstats and the nodes' command counters once
    every member is connected and the warm-up is over, and again before the
    measured window ends: chats only, without the members' joins and leaves
    (which write counts and send presence)."""
    def during(proc):
        want = ROOMS * MEMBERS
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            if sum(n.metric("wsgate_connections") for n in nodes) >= want:
                break
            time.sleep(0.1)
        time.sleep(WARMUP + 0.5)
        marks.append((time.time(), *window_counts(redises, nodes)))
        time.sleep(max(1.0, DURATION - 1.5))
        marks.append((time.time(), *window_counts(redises, nodes)))
    return during


def summarize(res):
    deliveries = res["deliveries"]
    return {
        "deliveries_per_s": res["rate"],
        "p50_ms": res["p50_us"] / 1000, "p99_ms": res["p99_us"] / 1000,
        "missing": res["missing"], "errors": res["errors"],
        "seq_gaps": res["seq_gaps"], "seq_disorder": res["seq_disorder"],
        "server_cpu_s": res["server_cpu_s"],
        "cpu_us_per_delivery": res["server_cpu_s"] * 1e6 / deliveries if deliveries else None,
    }


def main():
    for exe in (WSGATE, LOADGEN):
        if not os.path.exists(exe):
            sys.exit(f"cluster_fanout: {exe} missing (make all)")
    if not shutil.which("redis-server"):
        sys.exit("cluster_fanout: redis-server missing (scripts/install-deps.sh)")
    tmp = tempfile.mkdtemp(prefix="wsgate-cluster-fanout-")
    results = {"nodes": NODES, "redis_servers": SHARDS, "rooms": ROOMS, "members": MEMBERS, "workers": WORKERS,
               "encryption": ENCRYPTION, "duration_s": DURATION, "runs": []}
    started = []
    try:
        for rate in RATES:
            offered = ROOMS * MEMBERS * rate
            print(f"== {ROOMS} rooms x {MEMBERS} members, {rate:g} chats/s per room: "
                  f"{offered:,.0f} deliveries/s offered")
            # the local engine, one node
            local = Node(os.path.join(tmp, f"local-{rate:g}"), BASE)
            started.append(local)
            local.ready()
            lmarks = []
            lres = summarize(loadgen([local], rate, "local", inside_window([], [local], lmarks)))
            (lt0, _, _, _, lw0), (lt1, _, _, _, lw1) = lmarks
            # deliveries per write call: how many frames a write carries
            # (the store's file writes count too, a few per group commit)
            lres["deliveries_per_write"] = (lres["deliveries_per_s"] * (lt1 - lt0) / (lw1 - lw0)
                                            if lw1 > lw0 else None)
            local.stop()

            # the Redis engine: NODES nodes on one redis-server
            redises = [Redis() for _ in range(SHARDS)]
            started += redises
            red = dict(BASE, engine="redis")
            if SHARDS == 1:
                red["redis_url"] = f"redis://127.0.0.1:{redises[0].port}"
            else:
                red["redis_urls"] = "[" + ",".join(
                    f'"redis://127.0.0.1:{r.port}"' for r in redises) + "]"
            nodes = []
            for i in range(NODES):
                s = dict(red)
                if i > 0 and ENCRYPTION == "true":
                    s["kms_key_file"] = os.path.join(nodes[0].data_dir, "keys.json")
                n = Node(os.path.join(tmp, f"node{i}-{rate:g}"), s)
                started.append(n)
                nodes.append(n)
            for n in nodes:
                n.ready()
            marks = []
            cres = summarize(loadgen(nodes, rate, f"redis-{NODES}n",
                                     inside_window(redises, nodes, marks)))
            (t0, before, sent0, rcpu0, w0), (t1, after, sent1, rcpu1, w1) = marks
            # (the nodes' writes to Redis count too, one per chat sent)
            cres["deliveries_per_write"] = (cres["deliveries_per_s"] * (t1 - t0) / (w1 - w0)
                                            if w1 > w0 else None)
            delta = {k: (after[k][0] - before.get(k, (0, 0))[0],
                         after[k][1] - before.get(k, (0, 0))[1]) for k in after}
            delta = {k: v for k, v in delta.items() if v[0] > 0 and k != "info"}
            # INCR runs only in the chat script, once per chat stored
            chats = delta.get("incr", (0, 0))[0]
            calls = sum(v[0] for v in delta.values())
            script = delta.get("evalsha", (0, 0))
            cres["window_s"] = t1 - t0
            cres["chats"] = int(chats)
            cres["redis_commands_per_chat"] = calls / chats if chats else None
            # sent by the nodes (round trips; counters copied every 250 ms)
            cres["node_commands_per_chat"] = (sent1 - sent0) / chats if chats else None
            # Redis's own CPU (/proc) per chat: the script, the publish to
            # every subscribed node, its sockets
            cres["redis_cpu_us_per_chat"] = (rcpu1 - rcpu0) * 1e6 / chats if chats else None
            cres["redis_cpu_s"] = rcpu1 - rcpu0
            cres["chat_script_us"] = script[1] / script[0] if script[0] else None
            cres["redis_commands"] = {k: v[0] for k, v in sorted(delta.items())}
            for n in nodes:
                n.stop()
            for r in redises:
                r.stop()

            ratio = (cres["cpu_us_per_delivery"] / lres["cpu_us_per_delivery"]
                     if cres["cpu_us_per_delivery"] and lres["cpu_us_per_delivery"] else None)
            results["runs"].append({"rate_per_room": rate, "offered_deliveries_per_s": offered,
                                    "local": lres, "redis": cres, "cpu_ratio": ratio})
            print(f"   local  : {lres['deliveries_per_s']:,.0f} deliveries/s, p50 "
                  f"{lres['p50_ms']:.2f} ms, p99 {lres['p99_ms']:.2f} ms, missing "
                  f"{lres['missing']}, {lres['cpu_us_per_delivery']:.3f} us CPU per delivery, "
                  f"{lres['deliveries_per_write'] or 0:.1f} deliveries per write call")
            print(f"   redis  : {cres['deliveries_per_s']:,.0f} deliveries/s, p50 "
                  f"{cres['p50_ms']:.2f} ms, p99 {cres['p99_ms']:.2f} ms, missing "
                  f"{cres['missing']}, {cres['cpu_us_per_delivery']:.3f} us CPU per delivery "
                  f"(x{ratio:.2f} the local engine's), {cres['deliveries_per_write'] or 0:.1f} "
                  f"deliveries per write call")
            if chats:
                print(f"   redis  : {chats} chats in {cres['window_s']:.1f} s: "
                      f"{cres['node_commands_per_chat']:.2f} commands sent per chat, "
                      f"{cres['redis_commands_per_chat']:.2f} run by Redis (scripts' included), "
                      f"Redis CPU {cres['redis_cpu_us_per_chat']:.0f} us per chat (its chat "
                      f"script {cres['chat_script_us']:.1f} us); by command: "
                      f"{cres['redis_commands']}")
    finally:
        for p in started:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(OUT_JSON), exist_ok=True)
    with open(OUT_JSON, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results in {OUT_JSON}")


if __name__ == "__main__":
    main()
