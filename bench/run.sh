#!/usr/bin/env bash
# Side-by-side benchmarks on loopback, each server pinned to CPU 0 with the
# load generator on CPU 1, every workload against its peers in the same run:
#   echo     wsgate (echo mode) vs Node `ws` vs python3-websockets (echo)
#   fanout   wsgate (API mode, durable chat) vs the peers in chat mode
#            (welcome + chat broadcast to the room, PROTOCOL.md shapes)
#   storm    handshakes/s (closed after the welcome): wsgate (API) vs Node `ws` (chat)
#   idle     server RSS per idle connection (19,000 by default; the load
#            generator forks more processes if one cannot hold them):
#            wsgate (API) vs Node `ws` (chat)
#   durable  stored-then-broadcast chat at rising total rates, the highest
#            sustained one compared: wsgate (API mode: every chat committed,
#            fsync per group commit, before its broadcast) vs the peers in
#            chat mode, which store nothing (broadcast only)
#   scaling  wsgate with 1 and with 2 workers (worker_threads), not pinned,
#            under the echo and fanout loads: the ratio 2 workers / 1
#            (the load generator shares the same cores)
#   deflate  permessage-deflate on and off (bench/deflate.py, not in the
#            default list): server CPU and bytes on the wire per delivery of
#            a ~1 KB chat to a room of DEF_MEMBERS (1000), and RSS per
#            connection with and without the client's context takeover
#            (DEF_CONNS, 2000). wsgate only; results on stdout and in
#            $BUILD/bench-deflate.json. About 2 minutes.
# Prints each result, then a table of the ratios wsgate/peer (raw and per
# server CPU-second, with p50/p90/p99), and writes every result and ratio as
# JSON to BENCH_JSON (default $BUILD/bench-results.json).
#   CONNS=50 INFLIGHT=8 SIZE=32 DURATION=5 make bench
#   WORKLOADS="echo fanout" FAN_ROOMS=10 FAN_MEMBERS=20 FAN_RATE=150 ./bench/run.sh
#   WORKLOADS=durable DUR_RATES=1000,5000,10000 DUR_DURATION=3 ./bench/run.sh
# Peers: PEERS lists the servers measured beside wsgate, separated by ';'
# (default "node;python"): `node` (Node `ws`, bench/peers/node_echo.js),
# `python` (python3-websockets, bench/peers/py_echo.py) and any number of
#   external:NAME=COMMAND
# where COMMAND is run through the shell with @PORT@, @PATH@ (/staging) and
# @MODE@ (echo or chat) replaced; it must speak the peer protocol of
# docs/BENCHMARKS.md ("Any peer") and listen on 127.0.0.1:@PORT@. Example:
#   PEERS="node;external:uws=/opt/uws-room/server @PORT@ @MODE@" make bench
# python is left out of storm and idle (too slow to tell anything there).
# The default run (all six workloads) takes about 5 to 6 minutes on a 2-core
# machine. Every run is bounded: the load generator stops by itself (and
# has a watchdog), is wrapped in `timeout`, and each server is killed after it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORKLOADS=${WORKLOADS:-echo fanout storm idle durable scaling}
CONNS=${CONNS:-50}
INFLIGHT=${INFLIGHT:-8}
SIZE=${SIZE:-32}
DURATION=${DURATION:-5}
FAN_ROOMS=${FAN_ROOMS:-4}
FAN_MEMBERS=${FAN_MEMBERS:-100}
FAN_RATE=${FAN_RATE:-750}          # chats/s per room: 4 x 100 x 750 = 300,000 deliveries/s
STORM_CONNS=${STORM_CONNS:-50}     # handshakes in progress at once
IDLE_CONNS=${IDLE_CONNS:-19000}
IDLE_SOURCES=${IDLE_SOURCES:-$(((IDLE_CONNS + 9999) / 10000))} # 127.0.0.1 .. 127.0.0.K, <= 10,000 each
IDLE_PROCS=${IDLE_PROCS:-0}        # load generator processes; 0: as many as the fd limit needs
IDLE_HOLD=${IDLE_HOLD:-3}
IDLE_OPEN_TIMEOUT=${IDLE_OPEN_TIMEOUT:-150}
DUR_ROOMS=${DUR_ROOMS:-20}
DUR_MEMBERS=${DUR_MEMBERS:-5}
DUR_RATES=${DUR_RATES:-1000,2000,3000,5000,7500,10000,15000,20000,30000,50000} # total chats/s, one step each
DUR_DURATION=${DUR_DURATION:-$DURATION} # measured seconds per step (after 1 s of warm-up)
SCALE_DUR_RATES=${SCALE_DUR_RATES:-30000,40000,50000,60000} # scaling: durable, not pinned
PEERS=${PEERS:-node;python}
PORT_BASE=${PORT_BASE:-18700}
BENCH_JSON=${BENCH_JSON:-$BUILD/bench-results.json}
LOADGEN="$BUILD/wsgate-loadgen"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

pin_server="taskset -c 0"
pin_load="taskset -c 1"
if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then pin_server=""; pin_load=""; fi

# wsgate in API mode: chat goes through the durable store (one fsync per
# group commit); limits that would throttle a benchmark are off.
# One worker: the server is pinned to one core like its peers (the scaling
# workload runs more).
WSGATE_API=(--set logging_level=ERROR --set throttling_enabled=false --set connection_rate_limit=0
  --set connect_rate_per_ip=0 --set enable_dynamodb_point_in_time_recovery=false
  --set max_connections_per_ip=0 --set worker_threads=1)

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
# run_one WORKLOAD LABEL TIMEOUT "LOADGEN ARGS" SERVER-CMD... ; the server
# command's literal @PORT@ and @DATA@ are replaced by a fresh port and data
# directory; TIMEOUT (s) bounds the load generator on top of its watchdog.
run_one() {
  local workload=$1 label=$2 tmo=$3 lgargs=$4
  shift 4
  port=$((port + 1))
  local data="$out/data-$workload-$label" args=() a
  for a in "$@"; do a=${a//@PORT@/$port}; args+=("${a//@DATA@/$data}"); done
  local ps=$pin_server pl=$pin_load
  if [ -n "${UNPINNED:-}" ]; then ps=""; pl=""; fi
  $ps "${args[@]}" >"$out/$workload.$label.server.log" 2>&1 &
  local pid=$!
  if ! wait_port "$port"; then stop_server "$pid"; cat "$out/$workload.$label.server.log" >&2; return 1; fi
  # shellcheck disable=SC2086
  timeout "$tmo" $pl "$LOADGEN" --port "$port" $lgargs --server-pid "$pid" --label "$label" \
    | tee "$out/$workload.$label.txt" || echo "bench: $workload $label: load generator failed" >&2
  stop_server "$pid"
}

WSGATE=("$BUILD/wsgate" serve --port @PORT@ --data-dir @DATA@)
NODE=(node bench/peers/node_echo.js @PORT@ /staging)
PY=(/usr/bin/python3 bench/peers/py_echo.py @PORT@ /staging)

# The peers, parsed once: labels and, for external ones, their commands.
peer_labels=() peer_cmds=()
IFS=';' read -r -a peer_specs <<<"$PEERS"
for spec in "${peer_specs[@]}"; do
  spec=$(echo "$spec" | sed 's/^ *//; s/ *$//')
  case $spec in
  "") ;;
  node) peer_labels+=(node-ws); peer_cmds+=("") ;;
  python) peer_labels+=(py-websockets); peer_cmds+=("") ;;
  external:*=*)
    name=${spec#external:}; name=${name%%=*}
    if ! [[ $name =~ ^[A-Za-z0-9_-]+$ ]] || [ "$name" = wsgate ]; then
      echo "bench: external peer name '$name': letters, digits, - and _ only, not wsgate" >&2; exit 2
    fi
    peer_labels+=("$name"); peer_cmds+=("${spec#external:*=}") ;;
  *) echo "bench: unknown peer '$spec' in PEERS (node, python or external:NAME=COMMAND)" >&2; exit 2 ;;
  esac
done

# run_peers WORKLOAD TIMEOUT "LOADGEN ARGS" MODE [fast]: every peer of PEERS
# under the same load; MODE is echo or chat; "fast" leaves python out.
run_peers() {
  local workload=$1 tmo=$2 lgargs=$3 mode=$4 fast=${5:-} i label cmd
  for i in "${!peer_labels[@]}"; do
    label=${peer_labels[$i]} cmd=${peer_cmds[$i]}
    case $label in
    node-ws) run_one "$workload" node-ws "$tmo" "$lgargs" "${NODE[@]}" "$mode" ;;
    py-websockets) [ -n "$fast" ] || run_one "$workload" py-websockets "$tmo" "$lgargs" "${PY[@]}" "$mode" ;;
    *)
      cmd=${cmd//@PATH@//staging}
      run_one "$workload" "$label" "$tmo" "$lgargs" bash -c "exec ${cmd//@MODE@/$mode}" ;;
    esac
  done
}

for w in $WORKLOADS; do
  case $w in
  echo)
    echo "== echo: $CONNS connections x $INFLIGHT in flight, $SIZE bytes, ${DURATION}s"
    a="--workload echo --conns $CONNS --inflight $INFLIGHT --size $SIZE --duration $DURATION"
    t=$((DURATION + 120))
    run_one echo wsgate $t "$a" "${WSGATE[@]}" --set mode=echo --set logging_level=ERROR --set worker_threads=1
    run_peers echo $t "$a" echo
    ;;
  fanout)
    echo "== fanout: $FAN_ROOMS rooms x $FAN_MEMBERS members, $FAN_RATE chats/s per room, ${DURATION}s"
    a="--workload fanout --rooms $FAN_ROOMS --members $FAN_MEMBERS --rate $FAN_RATE --size $SIZE --duration $DURATION"
    t=$((DURATION + 120))
    run_one fanout wsgate $t "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    run_peers fanout $t "$a" chat
    ;;
  storm)
    echo "== storm: handshakes with at most $STORM_CONNS in progress, closed after the welcome, ${DURATION}s"
    a="--workload storm --conns $STORM_CONNS --rooms 100 --duration $DURATION --expect \"type\":\"welcome\""
    t=$((DURATION + 120))
    run_one storm wsgate $t "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    run_peers storm $t "$a" chat fast
    ;;
  idle)
    echo "== idle: $IDLE_CONNS connections from $IDLE_SOURCES source addresses, held ${IDLE_HOLD}s"
    a="--workload idle --conns $IDLE_CONNS --sources $IDLE_SOURCES --rooms $((IDLE_CONNS / 20 + 1)) --duration $IDLE_HOLD"
    a="$a --open-timeout $IDLE_OPEN_TIMEOUT --procs $IDLE_PROCS --expect \"type\":\"welcome\""
    t=$((IDLE_OPEN_TIMEOUT + IDLE_HOLD + 60))
    run_one idle wsgate $t "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    run_peers idle $t "$a" chat fast
    ;;
  durable)
    nrates=$(echo "$DUR_RATES" | tr ',' '\n' | grep -c .)
    echo "== durable: $DUR_ROOMS rooms x $DUR_MEMBERS members, total chats/s stepping through $DUR_RATES," \
      "${DUR_DURATION}s per step, until a server falls behind (achieved < 90% of offered, p99 > 1 s or" \
      "deliveries lost). wsgate (API mode) commits every chat to its store (fsync per group commit)" \
      "before broadcasting it; the Node and Python peers (chat mode) store nothing, they only broadcast."
    a="--workload durable --rooms $DUR_ROOMS --members $DUR_MEMBERS --rates $DUR_RATES --size $SIZE"
    a="$a --duration $DUR_DURATION"
    t=$((nrates * (DUR_DURATION + 8) + 120))
    run_one durable wsgate $t "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    run_peers durable $t "$a" chat
    ;;
  scaling)
    echo "== scaling: wsgate with 1 and 2 workers, not pinned (the load generator shares the cores)"
    a="--workload echo --conns $CONNS --inflight $INFLIGHT --size $SIZE --duration $DURATION"
    t=$((DURATION + 120))
    for n in 1 2; do
      UNPINNED=1 run_one scale-echo "wsgate-${n}w" $t "$a" "${WSGATE[@]}" --set mode=echo \
        --set logging_level=ERROR --set worker_threads=$n
    done
    a="--workload fanout --rooms $FAN_ROOMS --members $FAN_MEMBERS --rate $FAN_RATE --size $SIZE --duration $DURATION"
    for n in 1 2; do
      UNPINNED=1 run_one scale-fanout "wsgate-${n}w" $t "$a" "${WSGATE[@]}" "${WSGATE_API[@]}" \
        --set worker_threads=$n
    done
    # Durable chat with the store thread free to run on the other core.
    a="--workload durable --rooms $DUR_ROOMS --members $DUR_MEMBERS --rates $SCALE_DUR_RATES --size $SIZE"
    a="$a --duration $DUR_DURATION"
    t=$((4 * (DUR_DURATION + 8) + 120))
    UNPINNED=1 run_one scale-durable wsgate-1w $t "$a" "${WSGATE[@]}" "${WSGATE_API[@]}"
    ;;
  deflate)
    echo "== deflate: 1 room x ${DEF_MEMBERS:-1000} members, ${DEF_CHATS:-200} chats; ${DEF_CONNS:-2000} connections idle"
    mkdir -p "$BUILD"
    timeout 900 /usr/bin/python3 bench/deflate.py "$BUILD/wsgate" MEMBERS="${DEF_MEMBERS:-1000}" \
      CHATS="${DEF_CHATS:-200}" CONNS="${DEF_CONNS:-2000}" >"$BUILD/bench-deflate.txt"
    grep -v '^{' "$BUILD/bench-deflate.txt"
    grep '^{' "$BUILD/bench-deflate.txt" >"$BUILD/bench-deflate.json"
    ;;
  *) echo "bench: unknown workload $w" >&2; exit 2 ;;
  esac
done

mkdir -p "$(dirname "$BENCH_JSON")"
env WORKLOADS="$WORKLOADS" CONNS="$CONNS" INFLIGHT="$INFLIGHT" SIZE="$SIZE" DURATION="$DURATION" \
  FAN_ROOMS="$FAN_ROOMS" FAN_MEMBERS="$FAN_MEMBERS" FAN_RATE="$FAN_RATE" STORM_CONNS="$STORM_CONNS" \
  IDLE_CONNS="$IDLE_CONNS" IDLE_SOURCES="$IDLE_SOURCES" IDLE_PROCS="$IDLE_PROCS" IDLE_HOLD="$IDLE_HOLD" \
  PEERS="$PEERS" DUR_ROOMS="$DUR_ROOMS" DUR_MEMBERS="$DUR_MEMBERS" DUR_RATES="$DUR_RATES" DUR_DURATION="$DUR_DURATION" SCALE_DUR_RATES="$SCALE_DUR_RATES" \
  /usr/bin/python3 - "$out" "$BENCH_JSON" <<'PY'
import datetime, json, os, pathlib, platform, sys
d, json_path = pathlib.Path(sys.argv[1]), sys.argv[2]
order = ("echo", "fanout", "storm", "idle", "durable")
res, steps, lines = {}, {}, []
for f in sorted(d.glob("*.txt")):
    bench_workload = f.name.split(".")[0]  # run.sh's name: scale-echo runs the echo load
    for line in f.read_text().splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        r["bench_workload"] = bench_workload
        lines.append(r)
        if r.get("workload") == "durable" and "step" in r:
            steps.setdefault(r["label"], []).append(r)
            continue
        res[(bench_workload, r["label"])] = r  # durable: the summary line
units = {"echo": "msg/s", "fanout": "deliveries/s", "storm": "handshakes/s", "durable": "chats/s"}

def ratio(a, b):
    return a / b if a > 0 and b > 0 else None

def fx(x):
    return f"x{x:.2f}" if x is not None else "-"

def ms(us):
    return f"{us / 1000:.1f}" if us is not None else "-"

rows = []
for wl in order:
    w = res.get((wl, "wsgate"))
    if not w:
        continue
    for (k, peer), p in sorted(res.items()):
        if k != wl or peer == "wsgate":
            continue
        row = {"workload": wl, "peer": peer}
        if wl == "idle":
            row.update(metric="bytes per idle connection", wsgate=w["bytes_per_conn"], peer_value=p["bytes_per_conn"],
                       ratio=ratio(p["bytes_per_conn"], w["bytes_per_conn"]), note="x = times less memory",
                       open_seconds=[w["open_seconds"], p["open_seconds"]], conns=[w["opened"], p["opened"]])
            rows.append(row)
            continue
        row.update(metric=units[wl], wsgate=w["rate"], peer_value=p["rate"], ratio=ratio(w["rate"], p["rate"]),
                   per_cpu_ratio=ratio(w["per_cpu_s"], p["per_cpu_s"]))
        if "p50_us" in w:
            for q in ("p50_us", "p90_us", "p99_us"):
                row[q] = [w.get(q), p.get(q)]
        if wl == "storm":
            row["errors"] = [w["errors"], p["errors"]]
        if wl == "durable":
            row["max_sustained_offered"] = [w["max_sustained_offered"], p["max_sustained_offered"]]
            row["stop"] = [w.get("stop_reason", ""), p.get("stop_reason", "")]
            # The same step for both: the highest rate both sustained.
            ws = {s["offered"]: s for s in steps.get("wsgate", []) if s["sustained"]}
            ps = {s["offered"]: s for s in steps.get(peer, []) if s["sustained"]}
            common = sorted(set(ws) & set(ps))
            if common:
                o = common[-1]
                row["at_common_rate"] = {
                    "offered": o, "per_cpu_ratio": ratio(ws[o]["per_cpu_s"], ps[o]["per_cpu_s"]),
                    "p50_us": [ws[o]["p50_us"], ps[o]["p50_us"]], "p90_us": [ws[o]["p90_us"], ps[o]["p90_us"]],
                    "p99_us": [ws[o]["p99_us"], ps[o]["p99_us"]]}
        rows.append(row)

if rows:
    print("\nratios wsgate / peer (throughput: higher favours wsgate; latencies in ms, wsgate / peer)")
    print(f"{'workload':9s} {'peer':14s} {'metric':14s} {'wsgate':>10s} {'peer':>10s} {'ratio':>7s} "
          f"{'per cpu-s':>9s}   {'p50':>13s} {'p90':>13s} {'p99':>13s}")
    for r in rows:
        if r["workload"] == "idle":
            print(f"{'idle':9s} {r['peer']:14s} {'B/idle conn':14s} {r['wsgate']:10.0f} {r['peer_value']:10.0f} "
                  f"{fx(r['ratio']):>7s} {'':9s}   (x = times less memory; {r['conns'][0]} vs {r['conns'][1]} "
                  f"connections opened in {r['open_seconds'][0]:.1f} s vs {r['open_seconds'][1]:.1f} s)")
            continue
        lat = ["-"] * 3
        if "p50_us" in r:
            lat = [f"{ms(r[q][0])} / {ms(r[q][1])}" for q in ("p50_us", "p90_us", "p99_us")]
        extra = ""
        if r["workload"] == "storm":
            extra = f"   errors {r['errors'][0]} vs {r['errors'][1]}"
        if r["workload"] == "durable":
            extra = (f"   max sustained offered {r['max_sustained_offered'][0]:.0f} vs "
                     f"{r['max_sustained_offered'][1]:.0f}")
        print(f"{r['workload']:9s} {r['peer']:14s} {r['metric']:14s} {r['wsgate']:10.0f} {r['peer_value']:10.0f} "
              f"{fx(r['ratio']):>7s} {fx(r['per_cpu_ratio']):>9s}   {lat[0]:>13s} {lat[1]:>13s} {lat[2]:>13s}{extra}")
        c = r.get("at_common_rate")
        if c:
            print(f"{'':9s} {'':14s} {'at ' + format(c['offered'], '.0f') + '/s':14s} {'':10s} {'':10s} {'':7s} "
                  f"{fx(c['per_cpu_ratio']):>9s}   "
                  + " ".join(f"{ms(c[q][0]) + ' / ' + ms(c[q][1]):>13s}" for q in ("p50_us", "p90_us", "p99_us"))
                  + "   (the highest rate both sustained)")

scaling = []
for wl in ("scale-echo", "scale-fanout"):
    one, two = res.get((wl, "wsgate-1w")), res.get((wl, "wsgate-2w"))
    if one and two:
        scaling.append({"workload": wl, "rate_1w": one["rate"], "rate_2w": two["rate"],
                        "ratio": ratio(two["rate"], one["rate"]), "cpu_s": [one["server_cpu_s"], two["server_cpu_s"]],
                        "p99_us": [one.get("p99_us"), two.get("p99_us")]})
if scaling:
    print("\nscaling: wsgate 2 workers / 1 worker (not pinned; the load generator shares the 2 cores)")
    for r in scaling:
        print(f"{r['workload']:13s} {r['rate_1w']:10.0f} -> {r['rate_2w']:10.0f}/s  {fx(r['ratio'])}   "
              f"server cpu {r['cpu_s'][0]:.2f} -> {r['cpu_s'][1]:.2f} s   p99 {ms(r['p99_us'][0])} -> "
              f"{ms(r['p99_us'][1])} ms")
sd = res.get(("scale-durable", "wsgate-1w"))
if sd:
    scaling.append({"workload": "scale-durable", "max_sustained_offered": sd["max_sustained_offered"],
                    "rate": sd["rate"], "p99_us": sd.get("p99_us"), "stop": sd.get("stop_reason", "")})
    print(f"{'scale-durable':13s} not pinned: highest sustained {sd['max_sustained_offered']:.0f}/s offered, "
          f"{sd['rate']:.0f} chats/s stored + broadcast, p99 {ms(sd.get('p99_us'))} ms"
          + (f"; stopped: {sd['stop_reason']}" if sd.get("stop_reason") else ""))

knobs = ("WORKLOADS PEERS CONNS INFLIGHT SIZE DURATION FAN_ROOMS FAN_MEMBERS FAN_RATE STORM_CONNS IDLE_CONNS "
         "IDLE_SOURCES IDLE_PROCS IDLE_HOLD DUR_ROOMS DUR_MEMBERS DUR_RATES DUR_DURATION SCALE_DUR_RATES").split()
doc = {
    "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
    "settings": {k: os.environ.get(k) for k in knobs},
    "results": lines,
    "ratios": rows,
    "scaling": scaling,
}
with open(json_path, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print(f"\nresults written to {json_path}")
PY
