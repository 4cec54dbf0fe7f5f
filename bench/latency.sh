#!/usr/bin/env bash
# Latency of durable fan-out: one room of MEMBERS members, RATE chats/s of
# SIZE bytes for DURATION s; wsgate pinned to CPU 0 with one worker, the
# load generator to CPU 1 (as bench/run.sh). Prints the load generator's
# send-to-delivery percentiles and the server's phases
# (wsgate_chat_phase_seconds), read from /metrics at the end of the run.
#
#   bench/latency.sh [WSGATE_BINARY] [--set key=value ...]
#   RATE=300 RUNS=3 bench/latency.sh build/wsgate --set store_sync=normal
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/wsgate}
shift || true
LOADGEN=${LOADGEN:-build/wsgate-loadgen}
RATE=${RATE:-100} MEMBERS=${MEMBERS:-1000} SIZE=${SIZE:-64} DURATION=${DURATION:-10}
RUNS=${RUNS:-1} PORT=${PORT:-$((20000 + RANDOM % 10000))} # below the ephemeral range
pin_server="taskset -c 0" pin_load="taskset -c 1"
if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then pin_server="" pin_load=""; fi
for run in $(seq "$RUNS"); do
  data=$(mktemp -d)
  $pin_server "$BIN" serve --port "$PORT" --data-dir "$data" --set logging_level=ERROR \
    --set throttling_enabled=false --set connection_rate_limit=0 --set connect_rate_per_ip=0 \
    --set enable_dynamodb_point_in_time_recovery=false --set max_connections_per_ip=0 \
    --set worker_threads=1 "$@" >"$data/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.05; done
  echo "== run $run: $BIN $*, rate $RATE/s, $MEMBERS members, $SIZE B, ${DURATION}s"
  timeout $((DURATION + 120)) $pin_load "$LOADGEN" --port "$PORT" --workload fanout --rooms 1 \
    --members "$MEMBERS" --rate "$RATE" --size "$SIZE" --duration "$DURATION" --server-pid "$pid" \
    --label lat || echo "latency: load generator failed" >&2
  curl -s "http://127.0.0.1:$PORT/metrics" | /usr/bin/python3 bench/phases.py - || true
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  PORT=$((PORT + 1))
done
