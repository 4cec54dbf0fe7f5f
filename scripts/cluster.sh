#!/bin/sh
# Three wsgate nodes and Redis on this machine (engine = "redis",
# docs/redis.md): redis-server on 127.0.0.1:$REDIS_PORT (no persistence;
# with CLUSTER_SHARDS=N, N servers on REDIS_PORT, REDIS_PORT+1, ... given to
# every node as redis_urls), nodes on $CLUSTER_PORT, $CLUSTER_PORT+1, ...,
# each with its own data directory under $DIR and the first node's key file.
#
#   scripts/cluster.sh         start, print one line per node, stay in the
#                              foreground; Ctrl-C stops everything it started
#   scripts/cluster.sh start   the same, but return once everything serves
#   scripts/cluster.sh stop    stop what `start` left running
#
# Everything is stopped by the pids written in $DIR, the nodes first, all
# gone before Redis goes (a clean shutdown).
set -eu
BIN=${WSGATE_BIN:-build/wsgate}
DIR=${CLUSTER_DIR:-/tmp/wsgate-cluster}
NODES=${CLUSTER_NODES:-3}
SHARDS=${CLUSTER_SHARDS:-1}
REDIS_PORT=${REDIS_PORT:-6390}
PORT=${CLUSTER_PORT:-8081}
MODE=${1:-run}

case "$NODES" in '' | *[!0-9]*) NODES=0 ;; esac
case "$SHARDS" in '' | *[!0-9]*) SHARDS=0 ;; esac
if [ "$NODES" -lt 1 ] || [ "$NODES" -gt 16 ]; then
    echo "CLUSTER_NODES must be 1 to 16" >&2
    exit 2
fi
if [ "$SHARDS" -lt 1 ] || [ "$SHARDS" -gt 16 ]; then
    echo "CLUSTER_SHARDS must be 1 to 16" >&2
    exit 2
fi

# Stop the processes named by the pid files given: TERM to all, then up to
# 10 s for each to go.
stop_all() {
    for f in "$@"; do
        [ -f "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$@"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do
            i=$((i + 1))
            sleep 0.05
        done
        rm -f "$f"
    done
}

# Nodes (whatever number a previous run had) before Redis: a node that loses
# Redis first would report it as an outage on its way out.
stop() {
    stop_all "$DIR"/node*.pid
    stop_all "$DIR"/redis*.pid
}

case "$MODE" in
stop)
    stop
    echo "stopped"
    exit 0
    ;;
run | start) ;;
*)
    echo "usage: scripts/cluster.sh [run|start|stop]" >&2
    exit 2
    ;;
esac

[ -x "$BIN" ] || { echo "build wsgate first (make all)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing (scripts/install-deps.sh)" >&2; exit 1; }
mkdir -p "$DIR"
stop

# In the foreground, Ctrl-C reaches the terminal's whole process group; the
# servers run in sessions of their own so that only this script gets it and
# stops them in order. A node that exits by itself ends the run too.
if [ "$MODE" = run ]; then
    trap 'echo; stop; echo "stopped"; exit 130' INT
    trap 'stop; exit 143' TERM HUP
fi
# (a plain command, not a function: `$!` must be the server's own pid)
DETACH=""
command -v setsid >/dev/null && DETACH=setsid
fail() {
    echo "$1" >&2
    stop
    exit 1
}

# wait_until TRIES MESSAGE COMMAND...: runs COMMAND every 50 ms until it
# succeeds; after TRIES tries, fails with MESSAGE.
wait_until() {
    tries=$1 msg=$2
    shift 2
    i=0
    until "$@"; do
        i=$((i + 1))
        [ $i -lt "$tries" ] || fail "$msg"
        sleep 0.05
    done
}

redis_up() { redis-cli -p "$1" ping >/dev/null 2>&1; }

# node_serving N PID: node N printed its URLs (`serve` does once it listens,
# its key file written by then); fails the run if the node has exited.
node_serving() {
    kill -0 "$2" 2>/dev/null || fail "node $1 exited: $DIR/node$1.log"
    grep -q '^wsgate serving' "$DIR/node$1.out" 2>/dev/null
}

URLS=""
k=0
while [ $k -lt "$SHARDS" ]; do
    rport=$((REDIS_PORT + k))
    $DETACH redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no >"$DIR/redis$k.log" 2>&1 &
    echo $! >"$DIR/redis$k.pid"
    URLS="$URLS${URLS:+,}\"redis://127.0.0.1:$rport\""
    k=$((k + 1))
done
k=0
while [ $k -lt "$SHARDS" ]; do
    wait_until 400 "redis-server did not start: $DIR/redis$k.log" redis_up $((REDIS_PORT + k))
    k=$((k + 1))
done
if [ "$SHARDS" -eq 1 ]; then
    ENGINE="redis_url=redis://127.0.0.1:$REDIS_PORT"
else
    ENGINE="redis_urls=[$URLS]"
fi

n=1
while [ $n -le "$NODES" ]; do
    mkdir -p "$DIR/n$n"
    rm -f "$DIR/node$n.out"
    # the other nodes open the chats the first sealed: the same key file
    if [ $n -eq 1 ]; then
        $DETACH "$BIN" serve --listen 127.0.0.1 --port $((PORT + n - 1)) --data-dir "$DIR/n$n" \
            --set engine=redis --set "$ENGINE" >"$DIR/node$n.out" 2>"$DIR/node$n.log" &
    else
        $DETACH "$BIN" serve --listen 127.0.0.1 --port $((PORT + n - 1)) --data-dir "$DIR/n$n" \
            --set engine=redis --set "$ENGINE" --set kms_key_file="$DIR/n1/keys.json" \
            >"$DIR/node$n.out" 2>"$DIR/node$n.log" &
    fi
    pid=$!
    echo $pid >"$DIR/node$n.pid"
    wait_until 1200 "node $n did not start: $DIR/node$n.log" node_serving $n "$pid"
    n=$((n + 1))
done

k=0
while [ $k -lt "$SHARDS" ]; do
    echo "redis $k  redis://127.0.0.1:$((REDIS_PORT + k))"
    k=$((k + 1))
done
n=1
while [ $n -le "$NODES" ]; do
    echo "node $n  $(sed -n 's/^wsgate serving //p' "$DIR/node$n.out" | head -n 1)"
    n=$((n + 1))
done
if [ "$MODE" = start ]; then
    echo "logs in $DIR; stop with: scripts/cluster.sh stop"
    exit 0
fi
echo "logs in $DIR; Ctrl-C stops everything"

while :; do
    n=1
    while [ $n -le "$NODES" ]; do
        kill -0 "$(cat "$DIR/node$n.pid")" 2>/dev/null || fail "node $n exited: $DIR/node$n.log"
        n=$((n + 1))
    done
    # a short sleep in the background: `wait` returns at once on Ctrl-C
    sleep 1 &
    wait $! || true
done
