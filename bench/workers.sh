#!/usr/bin/env bash
# Share-nothing workers against the code before them, in one run (issue 12):
# durable fan-out (every chat stored, then broadcast to its room) with 1, 2,
# 4 and 8 workers for each binary, the server pinned to CPU 0 and the load
# generator to CPU 1, so "server CPU per delivery" compares like with like:
# with no lock shared by workers it must not grow with the worker count.
#   OLD=/tmp/wsgate-old/build ./bench/workers.sh
#   WORKERS_LIST="1 2 4 8" ROOMS=4 MEMBERS=250 RATE=100 DURATION=5 ./bench/workers.sh
# OLD is a build directory of the older code (make all build/wsgate-loadgen
# in a worktree of that commit); NEW defaults to build. Results: a table on
# stdout, every run's JSON in $NEW/bench-workers.json. Bounded: each run is
# wrapped in `timeout` and each server killed after it.
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=${NEW:-build}
OLD=${OLD:-}
WORKERS_LIST=${WORKERS_LIST:-1 2 4 8}
ROOMS=${ROOMS:-4}
MEMBERS=${MEMBERS:-250}
RATE=${RATE:-100}        # chats/s per room: 4 x 250 x 100 = 100,000 deliveries/s
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-2}
PORT=${PORT:-18900}
LOADGEN="$NEW/wsgate-loadgen"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pin_server="taskset -c 0" pin_load="taskset -c 1"
if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then pin_server="" pin_load=""; fi

wait_port() {
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

run() { # LABEL BUILD WORKERS
  local label=$1 bin=$2/wsgate n=$3 port=$((PORT++)) data="$out/data-$1-$3-$RANDOM"
  $pin_server "$bin" serve --port "$port" --data-dir "$data" --set worker_threads="$n" \
    --set logging_level=ERROR --set throttling_enabled=false --set connection_rate_limit=0 \
    --set connect_rate_per_ip=0 --set max_connections_per_ip=0 \
    --set enable_dynamodb_point_in_time_recovery=false >"$out/server.log" 2>&1 &
  local pid=$!
  if ! wait_port "$port"; then kill -KILL "$pid"; cat "$out/server.log" >&2; return 1; fi
  timeout $((DURATION + 90)) $pin_load "$LOADGEN" --port "$port" --workload fanout --rooms "$ROOMS" \
    --members "$MEMBERS" --rate "$RATE" --size 32 --duration "$DURATION" --server-pid "$pid" \
    --label "$label-${n}w" | grep '^{' >>"$out/results.jsonl" || echo "workers: $label ${n}w failed" >&2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for r in $(seq "$REPEAT"); do
  for n in $WORKERS_LIST; do
    [ -n "$OLD" ] && run old "$OLD" "$n"
    run new "$NEW" "$n"
  done
done
cp "$out/results.jsonl" "$NEW/bench-workers.json"
/usr/bin/python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r)
print(f"{'run':<10} {'deliveries/s':>13} {'missing':>8} {'server CPU-s':>12} {'CPU us/delivery':>16} {'p50 ms':>7} {'p99 ms':>7}")
for label in sorted(runs, key=lambda l: (int(l.split('-')[1][:-1]), l)):
    rs = runs[label]
    med = lambda k: statistics.median(x[k] for x in rs)
    us = statistics.median(x["server_cpu_s"] * 1e6 / max(1, x["deliveries"]) for x in rs)
    print(f"{label:<10} {med('rate'):>13,.0f} {med('missing'):>8,.0f} {med('server_cpu_s'):>12.2f} {us:>16.3f} {med('p50_us')/1000:>7.1f} {med('p99_us')/1000:>7.1f}")
PY
