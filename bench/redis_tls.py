"""redis:// against rediss:// (docs/redis.md "TLS"): one redis-server with a
plain port and a TLS port (a throwaway CA), one wsgate node on each (one
worker, no encryption at rest), used in turn by one client: chat echo
latency one chat at a time, and the node's CPU per chat one at a time and
in a burst of 2000. Loopback only; stops by itself; the processes it starts
are stopped by PID.

    WSGATE_BIN=$PWD/build/wsgate /usr/bin/python3 bench/redis_tls.py [chats]
"""
import asyncio, json, os, subprocess, sys, tempfile, time, signal
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from conftest import Server, free_port
from test_cluster_tls import make_ca, make_cert
from cluster_util import wait_ready
import websockets

work = tempfile.mkdtemp(prefix="wsgate-bench-tls-")
d = os.path.join(work, "pki"); os.makedirs(d)
make_ca(d, "ca"); make_cert(d, "server", "ca", "subjectAltName=IP:127.0.0.1")
P, Q = free_port(), free_port()
redis = subprocess.Popen(["redis-server", "--port", str(P), "--tls-port", str(Q), "--bind", "127.0.0.1",
    "--save", "", "--appendonly", "no", "--tls-cert-file", f"{d}/server.pem", "--tls-key-file", f"{d}/server.key",
    "--tls-ca-cert-file", f"{d}/ca.pem", "--tls-auth-clients", "no"], stdout=subprocess.DEVNULL)
time.sleep(0.5)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
async def run(node, room):
    ws = await websockets.connect(node.url + f"?userId=u&roomId={room}", max_size=None)
    await ws.recv()
    lat = []
    for i in range(200):  # warm up
        await ws.send(json.dumps({"type": "chat", "message": "w"}))
        while json.loads(await ws.recv())["type"] != "chat": pass
    c0 = cpu(node.proc.pid)
    for i in range(N):
        t = time.perf_counter()
        await ws.send(json.dumps({"type": "chat", "message": "x" * 100}))
        while json.loads(await ws.recv())["type"] != "chat": pass
        lat.append((time.perf_counter() - t) * 1000)
    c1 = cpu(node.proc.pid)
    # burst: 2000 chats sent at once, time until all echoed
    t = time.perf_counter(); c2 = cpu(node.proc.pid)
    for i in range(2000):
        await ws.send(json.dumps({"type": "chat", "message": "y" * 100}))
    got = 0
    while got < 2000:
        if json.loads(await ws.recv())["type"] == "chat": got += 1
    burst = time.perf_counter() - t; c3 = cpu(node.proc.pid)
    await ws.close()
    lat.sort()
    return lat[len(lat)//2], lat[int(len(lat)*0.99)], (c1 - c0) / N * 1e6, 2000 / burst, (c3 - c2) / 2000 * 1e6
nodes = {}
try:
    for name, url, extra in (("redis://", f"redis://127.0.0.1:{P}", {}),
                             ("rediss://", f"rediss://127.0.0.1:{Q}", {"redis_tls_ca_file": f"{d}/ca.pem"})):
        s = {"engine": "redis", "redis_url": url, "worker_threads": 1, "enable_encryption": "false",
             "throttling_burst_limit": 5000, "throttling_rate_limit": 10000, "connection_rate_limit": 0, "connect_rate_per_ip": 0, **extra}
        n = Server(os.path.join(work, name.strip(":/")), s)
        wait_ready(n)
        nodes[name] = n
    for rnd in range(2):
        for name, n in nodes.items():
            p50, p99, us, rate, us_b = asyncio.run(run(n, f"r{rnd}{name.strip(':/')}"))
            print(f"{name:10s} round {rnd}: echo p50 {p50:.3f} ms p99 {p99:.3f} ms, CPU {us:.0f} us/chat sequential; burst {rate:.0f} chats/s, CPU {us_b:.0f} us/chat")
finally:
    for n in nodes.values():
        n.proc.send_signal(signal.SIGTERM); n.proc.wait()
    redis.kill(); redis.wait()
    subprocess.run(["rm", "-rf", work])
