#!/usr/bin/env bash
# Side-by-side echo benchmark on loopback: wsgate (echo mode), Node `ws` and
# python3-websockets, each pinned to CPU 0 with the load generator on CPU 1,
# under the same workload, in the same run. Prints each result and the
# ratios wsgate/peer, raw and per server CPU-second.
#   CONNS=50 INFLIGHT=8 SIZE=32 DURATION=5 make bench
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CONNS=${CONNS:-50}
INFLIGHT=${INFLIGHT:-8}
SIZE=${SIZE:-32}
DURATION=${DURATION:-5}
PORT_BASE=${PORT_BASE:-18700}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

pin_server="taskset -c 0"
pin_load="taskset -c 1"
if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then pin_server=""; pin_load=""; fi

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listening on $1" >&2
  return 1
}

run_one() { # label port cmd...
  local label=$1 port=$2
  shift 2
  $pin_server "$@" >"$out/$label.server.log" 2>&1 &
  local pid=$!
  wait_port "$port"
  $pin_load "$BUILD/wsgate-loadgen" --port "$port" --conns "$CONNS" --inflight "$INFLIGHT" \
    --size "$SIZE" --duration "$DURATION" --server-pid "$pid" --label "$label" | tee "$out/$label.txt"
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

run_one wsgate $((PORT_BASE)) "$BUILD/wsgate" serve --port $((PORT_BASE)) --data-dir "$out/data" \
  --set mode=echo --set logging_level=ERROR
run_one node-ws $((PORT_BASE + 1)) node bench/peers/node_echo.js $((PORT_BASE + 1))
run_one py-websockets $((PORT_BASE + 2)) /usr/bin/python3 bench/peers/py_echo.py $((PORT_BASE + 2))

/usr/bin/python3 - "$out" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
res = {}
for f in d.glob("*.txt"):
    for line in f.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            res[r["label"]] = r
w = res.get("wsgate")
print("\nratios wsgate / peer (echo):")
for peer in ("node-ws", "py-websockets"):
    p = res.get(peer)
    if not (w and p and p["rate"] > 0):
        continue
    per = (w["per_cpu_s"] / p["per_cpu_s"]) if p["per_cpu_s"] > 0 else float("nan")
    print(f"  vs {peer:14s} throughput x{w['rate']/p['rate']:.2f}   per server CPU-second x{per:.2f}"
          f"   p99 {w['p99_us']:.0f} us vs {p['p99_us']:.0f} us")
PY
