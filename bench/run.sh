#!/usr/bin/env bash
# Side-by-side benchmarks on loopback, each server pinned to CPU 0 with the
# load generator on CPU 1, every workload against its peers in the same run:
#   echo    wsgate (echo mode) vs Node `ws` vs python3-websockets (echo)
#   fanout  wsgate (API mode, durable chat) vs the peers in chat mode
#           (welcome + chat broadcast to the room, PROTOCOL.md shapes)
#   storm   handshakes/s (closed after the welcome): wsgate (API) vs Node `ws` (chat)
#   idle    server RSS per idle connection: wsgate (API) vs Node `ws` (chat)
# Prints each result and the ratios wsgate/peer, raw and per server CPU-second.
#   CONNS=50 INFLIGHT=8 SIZE=32 DURATION=5 make bench
#   WORKLOADS="echo fanout" FAN_ROOMS=10 FAN_MEMBERS=20 FAN_RATE=150 ./bench/run.sh
# Every run is bounded: the load generator stops by itself (and has a
# watchdog), is wrapped in `timeout`, and each server is killed after it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORKLOADS=${WORKLOADS:-echo fanout storm idle}
CONNS=${CONNS:-50}
INFLIGHT=${INFLIGHT:-8}
SIZE=${SIZE:-32}
DURATION=${DURATION:-5}
FAN_ROOMS=${FAN_ROOMS:-10}
FAN_MEMBERS=${FAN_MEMBERS:-20}
FAN_RATE=${FAN_RATE:-150}          # chats/s per room: 10 x 20 x 150 = 30,000 deliveries/s
STORM_CONNS=${STORM_CONNS:-50}     # handshakes in progress at once
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_SOURCES=${IDLE_SOURCES:-2}    # client source addresses 127.0.0.1 .. 127.0.0.K
IDLE_HOLD=${IDLE_HOLD:-3}
PORT_BASE=${PORT_BASE:-18700}
LOADGEN="$BUILD/wsgate-loadgen"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

pin_server="taskset -c 0"
pin_load="taskset -c 1"
if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then pin_server=""; pin_load=""; fi

# wsgate in API mode: chat goes through the durable store (one fsync per
# group commit); limits that would throttle a benchmark are off.
WSGATE_API=(--set logging_level=ERROR --set throttling_enabled=false --set connection_rate_limit=0
  --set connect_rate_per_ip=0 --set enable_dynamodb_point_in_time_recovery=false
  --set max_connections_per_ip=0)

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listening on $1" >&2
  return 1
}

stop_server() { # pid
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

port=$PORT_BASE
# run_one WORKLOAD LABEL "LOADGEN ARGS" SERVER-CMD... ; the server command's
# literal PORT and DATA are replaced by a fresh port and data directory.
run_one() {
  local workload=$1 label=$2 lgargs=$3
  shift 3
  port=$((port + 1))
  local data="$out/data-$workload-$label" args=() a
  for a in "$@"; do a=${a//@PORT@/$port}; args+=("${a//@DATA@/$data}"); done
  $pin_server "${args[@]}" >"$out/$workload.$label.server.log" 2>&1 &
  local pid=$!
  if ! wait_port "$port"; then stop_server "$pid"; cat "$out/$workload.$label.server.log" >&2; return 1; fi
  # shellcheck disable=SC2086
  timeout 180 $pin_load "$LOADGEN" --port "$port" $lgargs --server-pid "$pid" --label "$label" \
    | tee "$out/$workload.$label.txt" || echo "bench: $workload $label: load generator failed" >&2
  stop_server "$pid"
}

WSGATE=("$BUILD/wsgate" serve --port @PORT@ --data-dir @DATA@)
NODE=(node bench/peers/node_echo.js @PORT@ /staging)
PY=(/usr/bin/python3 bench/peers/py_echo.py @PORT@ /staging)

for w in $WORKLOADS; do
  case $w in
  echo)
    echo "== echo: $CONNS connections x $INFLIGHT in flight, $SIZE bytes, ${DURATION}s"
    a="--workload echo --conns $CONNS --inflight $INFLIGHT --size $SIZE --duration $DURATION"
    run_one echo wsgate "$a" "${WSGATE[@]}" --set mode=echo --set logging_level=ERROR --set worker_threads=1
    run_one echo node-ws "$a" "${NODE[@]}" echo
    run_one echo py-websockets "$a" "${PY[@]}" echo
    ;;
  fanout)
    echo "== fanout: $FAN_ROOMS rooms x $FAN_MEMBERS members, $FAN_RATE chats/s per room, ${DURATION}s"
    a="--workload fanout --rooms $FAN_ROOMS --members $FAN_MEMBERS --rate $FAN_RATE --size $SIZE --duration $DURATION"
    run_one fanout wsgate "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    run_one fanout node-ws "$a" "${NODE[@]}" chat
    run_one fanout py-websockets "$a" "${PY[@]}" chat
    ;;
  storm)
    echo "== storm: handshakes with at most $STORM_CONNS in progress, closed after the welcome, ${DURATION}s"
    a="--workload storm --conns $STORM_CONNS --rooms 100 --duration $DURATION --expect \"type\":\"welcome\""
    run_one storm wsgate "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    run_one storm node-ws "$a" "${NODE[@]}" chat
    ;;
  idle)
    echo "== idle: $IDLE_CONNS connections from $IDLE_SOURCES source addresses, held ${IDLE_HOLD}s"
    a="--workload idle --conns $IDLE_CONNS --sources $IDLE_SOURCES --rooms $((IDLE_CONNS / 20 + 1)) --duration $IDLE_HOLD --expect \"type\":\"welcome\""
    run_one idle wsgate "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    run_one idle node-ws "$a" "${NODE[@]}" chat
    ;;
  *) echo "bench: unknown workload $w" >&2; exit 2 ;;
  esac
done

/usr/bin/python3 - "$out" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
res = {}
for f in sorted(d.glob("*.txt")):
    for line in f.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            res[(r["workload"], r["label"])] = r
units = {"echo": "msg/s", "fanout": "deliveries/s", "storm": "handshakes/s"}
for wl in ("echo", "fanout", "storm", "idle"):
    w = res.get((wl, "wsgate"))
    peers = [(l, r) for (k, l), r in res.items() if k == wl and l != "wsgate"]
    if not (w and peers):
        continue
    print(f"\nratios wsgate / peer ({wl}):")
    for peer, p in peers:
        if wl == "idle":
            if w["bytes_per_conn"] > 0 and p["bytes_per_conn"] > 0:
                print(f"  vs {peer:14s} bytes per idle connection {w['bytes_per_conn']:.0f} vs "
                      f"{p['bytes_per_conn']:.0f}: x{p['bytes_per_conn'] / w['bytes_per_conn']:.2f} less memory")
            continue
        if p["rate"] <= 0:
            continue
        per = (w["per_cpu_s"] / p["per_cpu_s"]) if p["per_cpu_s"] > 0 else float("nan")
        line = (f"  vs {peer:14s} {units[wl]} x{w['rate'] / p['rate']:.2f}   per server CPU-second x{per:.2f}")
        if "p99_us" in w:
            line += f"   p50 {w['p50_us']:.0f} us vs {p['p50_us']:.0f} us   p99 {w['p99_us']:.0f} us vs {p['p99_us']:.0f} us"
        if wl == "storm":
            line += f"   errors {w['errors']} vs {p['errors']}"
        print(line)
PY
