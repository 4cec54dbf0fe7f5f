#!/bin/sh
# Two wsgate nodes and one Redis on this machine (engine = "redis",
# docs/redis.md): redis-server on 127.0.0.1:$REDIS_PORT (no persistence),
# nodes on $PORT1 and $PORT2, each with its own data directory under $DIR
# and the first node's key file. `scripts/cluster.sh stop` stops what it
# started, by the pids it wrote.
set -eu
BIN=${WSGATE_BIN:-build/wsgate}
DIR=${CLUSTER_DIR:-/tmp/wsgate-cluster}
REDIS_PORT=${REDIS_PORT:-6390}
PORT1=${PORT1:-8081}
PORT2=${PORT2:-8082}

stop() {
    for f in "$DIR"/node2.pid "$DIR"/node1.pid "$DIR"/redis.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        # nodes first, each gone before Redis goes (a clean shutdown)
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
            i=$((i + 1))
            sleep 0.05
        done
        rm -f "$f"
    done
}

if [ "${1:-start}" = stop ]; then
    stop
    echo "stopped"
    exit 0
fi

[ -x "$BIN" ] || { echo "build wsgate first (make all)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing (scripts/install-deps.sh)" >&2; exit 1; }
mkdir -p "$DIR/n1" "$DIR/n2"
stop
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no >"$DIR/redis.log" 2>&1 &
echo $! >"$DIR/redis.pid"
i=0
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "redis-server did not start: $DIR/redis.log" >&2; stop; exit 1; }
    sleep 0.05
done
URL="redis://127.0.0.1:$REDIS_PORT"
"$BIN" serve --listen 127.0.0.1 --port "$PORT1" --data-dir "$DIR/n1" \
    --set engine=redis --set redis_url="$URL" >"$DIR/node1.log" 2>&1 &
echo $! >"$DIR/node1.pid"
# the second node opens the chats the first sealed: same key file
i=0
until [ -f "$DIR/n1/keys.json" ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "node 1 did not start: $DIR/node1.log" >&2; stop; exit 1; }
    sleep 0.05
done
"$BIN" serve --listen 127.0.0.1 --port "$PORT2" --data-dir "$DIR/n2" \
    --set engine=redis --set redis_url="$URL" --set kms_key_file="$DIR/n1/keys.json" \
    >"$DIR/node2.log" 2>&1 &
echo $! >"$DIR/node2.pid"
sleep 0.5
echo "redis   127.0.0.1:$REDIS_PORT"
echo "node 1  http://127.0.0.1:$PORT1/   ws://127.0.0.1:$PORT1/staging"
echo "node 2  http://127.0.0.1:$PORT2/   ws://127.0.0.1:$PORT2/staging"
echo "logs in $DIR; stop with: scripts/cluster.sh stop"
