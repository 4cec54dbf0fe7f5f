#!/usr/bin/env bash
# Deterministic cost of wsgate's hot paths: instructions (valgrind's
# callgrind) per stored-and-broadcast chat and per handshake, split by
# thread (the event loop, the store thread, the archive thread), with the
# functions that cost the most. Unlike timings these numbers do not move with the machine's
# load, so they show what a change to the code did.
#   make profile                       # both workloads
#   WORKLOADS=chat BUILD=/tmp/b ./bench/callgrind.sh
# Knobs: ROOMS, MEMBERS, RATE (chats/s per room), DURATION, STORM_CONNS, WORKERS,
# TOP (functions listed per thread), OUT (where the callgrind files stay).
# wsgate runs with one worker, in API mode with its defaults (encryption at
# rest on, store_sync=full), logging at ERROR and throttling off. Counting
# starts once it listens; the chat figures include opening the members'
# connections (ROOMS x MEMBERS handshakes, spread over the chats sent).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=${OUT:-$BUILD/callgrind}
WORKLOADS=${WORKLOADS:-chat storm}
ROOMS=${ROOMS:-10}
MEMBERS=${MEMBERS:-20}
RATE=${RATE:-25}
DURATION=${DURATION:-4}
STORM_CONNS=${STORM_CONNS:-10}
WORKERS=${WORKERS:-1}
TOP=${TOP:-12}
PORT=${PORT:-18790}
command -v valgrind >/dev/null || { echo "profile: valgrind is not installed (scripts/install-deps.sh)" >&2; exit 1; }
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

profile_one() { # NAME LOADGEN-ARGS...
  local name=$1
  shift
  local port=$((PORT++)) data="$work/data-$name"
  rm -f "$OUT/$name".*
  valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
    --callgrind-out-file="$OUT/$name.%p" \
    "$BUILD/wsgate" serve --port "$port" --data-dir "$data" --set worker_threads="$WORKERS" \
    --set logging_level=ERROR --set throttling_enabled=false --set connection_rate_limit=0 \
    --set connect_rate_per_ip=0 --set max_connections_per_ip=0 >"$work/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.1
  done
  # Count from here: start-up (keys, database checks) is not the hot path.
  callgrind_control -i on "$pid" >/dev/null
  timeout 120 "$BUILD/wsgate-loadgen" --port "$port" --label "$name" "$@" >"$work/$name.out" || true
  # ... to here: shutdown (the store's last commit, archive sync) is not either.
  callgrind_control -i off "$pid" >/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  head -1 "$work/$name.out"
  /usr/bin/python3 - "$OUT" "$name" "$work/$name.out" "$TOP" <<'PY'
import glob, json, re, subprocess, sys
out, name, res, top = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = next(json.loads(l) for l in open(res) if l.startswith("{"))
deliveries = 0
if name == "chat":
    units, what = r["sent"], "chat (stored, then broadcast to %d members)" % r["members"]
    deliveries, name_unit = r.get("deliveries", 0), "chat"
else:
    units, what = r.get("handshakes") or r.get("completed") or r.get("count"), "handshake (101, welcome, close)"
    name_unit = "handshake"
if not units:
    sys.exit(f"profile: no {name} work was done: {r}")
print(f"instructions per {what}, {units} measured:")
for f in sorted(glob.glob(f"{out}/{name}.*")):
    txt = subprocess.run(["callgrind_annotate", "--inclusive=yes", f], capture_output=True, text=True).stdout
    m = re.search(r"^([\d,]+) \S* *PROGRAM TOTALS", txt, re.M)
    total = int(m.group(1).replace(",", "")) if m else 0
    if total < 1_000_000:
        continue  # an idle helper thread
    rows = []
    for line in txt.splitlines():
        m = re.match(r"^\s*([\d,]+) \([\s\d.]+%\)\s+(\S+)", line)
        if m:
            ir = int(m.group(1).replace(",", ""))
            fn = m.group(2)
            if "/src/" in fn:
                rows.append((ir, fn.split("/src/", 1)[1]))
    # Named by what runs on it: callgrind numbers threads by start order.
    fns = " ".join(fn for _, fn in rows)
    if "run_worker" in fns or "cmd_serve" in fns or "conn.c:on_read" in fns:
        thread = "event loop (main thread)"
    elif "store_tx" in fns or "store_thread" in fns:
        thread = "store thread"
    elif "archive_run" in fns or "walf_scan" in fns:
        thread = "archive thread"
    else:
        thread = "helper thread"
    print(f"  {thread}: {total / units:,.0f} in all")
    for ir, fn in rows[:top]:
        print(f"    {ir / units:>10,.0f}  {fn}")
    # Mutex acquisitions by the function that takes them (callgrind's call
    # counts): what a chat costs in locks, on this thread.
    names, fn, cfn, locks = {}, None, None, {}
    def name(tok):
        m = re.match(r"\((\d+)\)(?: (.*))?", tok)
        if not m:
            return tok
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), tok)
    for line in open(f, errors="replace"):
        if line.startswith("fn="):
            fn = name(line[3:].strip())
        elif line.startswith("cfn="):
            cfn = name(line[4:].strip())
        elif line.startswith("calls=") and cfn and "pthread_mutex_lock" in cfn:
            locks[fn] = locks.get(fn, 0) + int(line[6:].split()[0])
    n = sum(locks.values())
    if n:
        print(f"    mutex acquisitions per {name_unit}: {n / units:.3f}", end="")
        if deliveries:
            print(f" ({n / deliveries:.5f} per delivered message)", end="")
        print(": " + ", ".join(f"{k} {v / units:.3f}" for k, v in sorted(locks.items(), key=lambda kv: -kv[1])[:6]))
PY
}

for w in $WORKLOADS; do
  case $w in
  chat) profile_one chat --workload fanout --rooms "$ROOMS" --members "$MEMBERS" --rate "$RATE" \
          --size 32 --duration "$DURATION" ;;
  storm) profile_one storm --workload storm --conns "$STORM_CONNS" --rooms 100 --duration "$DURATION" \
           --expect '"type":"welcome"' ;;
  *) echo "profile: unknown workload $w" >&2; exit 2 ;;
  esac
done
echo "callgrind files: $OUT (callgrind_annotate --inclusive=yes FILE for the full lists)"
