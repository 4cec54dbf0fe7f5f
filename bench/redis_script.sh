#!/usr/bin/env bash
# Cost of the chat script (src/engine/redis_script.c) inside Redis: starts
# a redis-server on a free loopback port (no persistence), loads the
# script, runs redis-benchmark with EVALSHA for one room (150-byte values,
# a Stream cap of 100000, the age trim on) and prints the throughput and
# Redis's own time per call (INFO commandstats). Usage, after `make all`:
#   BUILD=build bench/redis_script.sh [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${1:-100000}
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
cat > "$tmp/print.c" <<'C'
#include <stdio.h>
#include "engine/redis_script.h"
int main(void) { fputs(redis_script_source(REDIS_SCRIPT_CHAT), stdout); return 0; }
C
PKGS="libuv jansson sqlite3 openssl libcurl libjwt zlib hiredis"
cc -std=gnu17 -Isrc $(pkg-config --cflags $PKGS) "$tmp/print.c" "$BUILD/libwsgate.a" \
   $(pkg-config --libs $PKGS) -lhttp_parser -lm -lpthread -o "$tmp/print"
port=$(/usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
sha=$(redis-cli -p "$port" SCRIPT LOAD "$("$tmp/print")")
value=$(head -c 150 /dev/zero | tr '\0' 'x')
now=$(($(date +%s) * 1000))
redis-benchmark -p "$port" -n "$N" -c 8 -P 16 -q EVALSHA "$sha" 3 \
  'wsgate:{bench}:seq' 'wsgate:{bench}:log' 'wsgate:{bench}:idem:' 0 \
  0196f1a2-aaaa-7bbb-8ccc-ddddeeeeffff "$now" "$value" 100000 $((now - 86400000)) \
  'wsgate:0:room:bench' 'C ' | tr '\r' '\n' | tail -1
redis-cli -p "$port" INFO commandstats | grep -E '^cmdstat_(evalsha|xadd|incr|publish|xrange):'
