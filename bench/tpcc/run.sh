#!/usr/bin/env bash
# TPC-C side by side: the same go-tpc driver (PostgreSQL protocol) against `shmdb up` and
# against PostgreSQL from Debian, on this machine, one system at a time.
#
#   bench/tpcc/run.sh [compare|scale|check|pg|shmdb]
#
#   compare  shmdb RF 1 and RF 2 (1 processing node), PostgreSQL with synchronous_commit=off
#            and with its defaults                                          (the headline)
#   scale    shmdb RF 1 with 1, 2 and 3 processing nodes
#   check    the short benchmark-as-check: 1 warehouse, 60 s against shmdb RF 1, then `check`
#   pg       PostgreSQL only (both durability settings)
#   shmdb    shmdb only (RF 1 and RF 2)
#   rf1      shmdb only, RF 1 (profiling and before/after runs of one change)
#
# Environment (defaults in brackets): WAREHOUSES [4], THREADS [8], DURATION [120s],
# OUT [bench/tpcc/results/<mode>-<utc time>], GOTPC_VERSION [v1.0.12],
# BENCH_CACHE [~/.cache/shmdb-bench], SHMDB_BIN [$CARGO_TARGET_DIR or target, /release/shmdb], PG_PORT [5442],
# SHMDB_PG_PORT [5432], ISOLATION [4: go-tpc's number for REPEATABLE READ; 2 = READ COMMITTED], SKIP_CHECK [unset; set: no `check` after the run], WEIGHT [go-tpc's 45,43,4,4,4 mix; e.g. 100,0,0,0,0 for NewOrder only], PNS [1 2 3: processing-node counts of `scale`], PROFILE [unset; set: perf record of the server during each run,
# with a flamegraph; PROFILE=dwarf: DWARF call graphs, full stacks from a release build].
#
# Every run: `go-tpc tpcc prepare` (schema, load, and the driver's check of the loaded data),
# `go-tpc tpcc run` (no think time, REPEATABLE READ, errors counted and retried by the next
# transaction), CPU seconds of the server processes over the run, then `go-tpc tpcc check`.
# results.jsonl gets one line per system; summarize.py turns it into tables and plots.
set -euo pipefail

MODE=${1:-compare}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WAREHOUSES=${WAREHOUSES:-4}
THREADS=${THREADS:-8}
DURATION=${DURATION:-120s}
GOTPC_VERSION=${GOTPC_VERSION:-v1.0.12}
ISOLATION=${ISOLATION:-4}
BENCH_CACHE=${BENCH_CACHE:-$HOME/.cache/shmdb-bench}
SHMDB_BIN=${SHMDB_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shmdb}
PG_PORT=${PG_PORT:-5442}
SHMDB_PG_PORT=${SHMDB_PG_PORT:-5432}
OUT=${OUT:-$HERE/results/$MODE-$(date -u +%Y%m%dT%H%M%SZ)}
if [[ $MODE == check ]]; then WAREHOUSES=1 THREADS=4 DURATION=60s; fi
GOTPC=$BENCH_CACHE/bin/go-tpc
mkdir -p "$OUT" "$BENCH_CACHE/bin"

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/bench.log" >&2; }

ensure_gotpc() {
  # go-tpc does not print its version: a marker file next to it records what was installed.
  if [[ ! -x $GOTPC ]] || [[ $(cat "$GOTPC.version" 2>/dev/null) != "$GOTPC_VERSION" ]]; then
    log "installing go-tpc $GOTPC_VERSION from the Go module proxy"
    GOBIN=$BENCH_CACHE/bin go install "github.com/pingcap/go-tpc/cmd/go-tpc@$GOTPC_VERSION"
    echo "$GOTPC_VERSION" >"$GOTPC.version"
  fi
}

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

ensure_pg() {
  if [[ -z $(pg_bindir) ]]; then
    log "installing PostgreSQL from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
}

ensure_shmdb() {
  if [[ ! -x $SHMDB_BIN ]]; then
    log "building shmdb (release)"
    (cd "$ROOT" && cargo build --release -p shmdb -j2)
  fi
  if [[ ! -x $SHMDB_BIN ]]; then
    log "no shmdb binary at $SHMDB_BIN after the build (set SHMDB_BIN or CARGO_TARGET_DIR)"
    exit 1
  fi
}

wait_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if ((SECONDS > deadline)); then log "port $1 not listening after $2 s"; return 1; fi
    sleep 0.5
  done
}

# CPU seconds (user + system, children reaped included) of a process tree.
cpu_seconds() { python3 "$HERE/cpu.py" "$@"; }

# perf script | inferno (from crates.io, installed into BENCH_CACHE on first use).
flamegraph() { # perf.data out.svg
  if [[ ! -x $BENCH_CACHE/bin/inferno-flamegraph ]]; then
    cargo install --quiet --root "$BENCH_CACHE" inferno >/dev/null 2>&1 || return 1
  fi
  perf script --no-inline -i "$1" 2>/dev/null | "$BENCH_CACHE/bin/inferno-collapse-perf" >"${1%.data}.folded"
  "$BENCH_CACHE/bin/inferno-flamegraph" <"${1%.data}.folded" >"$2"
}

SERVER_PID=""
PG_DATA=""
stop_server() {
  if [[ -n $PG_DATA ]]; then
    runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DATA"; PG_DATA=""
  fi
  if [[ -n $SERVER_PID ]]; then
    kill -INT "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

start_pg() { # synchronous_commit value
  PG_DATA=$(mktemp -d /tmp/shmdb-bench-pg.XXXXXX)
  chown postgres "$PG_DATA"
  runuser -u postgres -- "$(pg_bindir)/initdb" -D "$PG_DATA" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -w -l "$PG_DATA/log" start -o \
    "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 \
     -c shared_buffers=1GB -c synchronous_commit=$1 \
     -c default_transaction_isolation='repeatable read'" >/dev/null
  SERVER_PID=""
  PG_PID=$(head -1 "$PG_DATA/postmaster.pid")
  wait_port "$PG_PORT" 30
}

start_shmdb() { # rf processing-nodes
  "$SHMDB_BIN" up --storage-nodes 3 --replication-factor "$1" --processing-nodes "$2" \
    --pg-port "$SHMDB_PG_PORT" >"$OUT/shmdb-rf$1-pn$2.log" 2>&1 &
  SERVER_PID=$!
  for i in $(seq 0 $(($2 - 1))); do wait_port $((SHMDB_PG_PORT + i)) 120; done
}

ports_csv() { # first count
  local p=() i
  for ((i = 0; i < $2; i++)); do p+=($(($1 + i))); done
  (IFS=,; echo "${p[*]}")
}

# One measured system: prepare, run (with CPU accounting), check.
tpcc() { # label ports user server-pid [extra prepare flags]
  local label=$1 ports=$2 user=$3 pid=$4
  local common=(tpcc -d postgres -H 127.0.0.1 -P "$ports" -U "$user" -D tpcc
    --conn-params sslmode=disable --warehouses "$WAREHOUSES")
  local t0=$SECONDS
  if [[ -z ${SKIP_PREPARE:-} ]]; then
    log "$label: prepare ($WAREHOUSES warehouses)"
    "$GOTPC" "${common[@]}" prepare -T "$THREADS" >"$OUT/$label.prepare.log" 2>&1 || {
      log "$label: prepare FAILED (see $OUT/$label.prepare.log)"; tail -5 "$OUT/$label.prepare.log" >&2; return 1; }
  fi
  local load_s=$((SECONDS - t0))
  # A system-specific step between load and run (PostgreSQL: settle the load first).
  if [[ -n ${AFTER_PREPARE:-} ]]; then "$AFTER_PREPARE"; fi
  log "$label: run ($THREADS threads, $DURATION)"
  local cpu0 cpu1
  cpu0=$(cpu_seconds "$pid")
  local rpc0 rpc1
  rpc0=$(python3 "$HERE/rpcs.py" 9401 9402 9403)
  local perf_pid=""
  if [[ -n ${PROFILE:-} ]]; then
    # cpu-clock: this machine has no hardware counters. Stops with the run.
    # Release builds carry no frame pointers: PROFILE=dwarf unwinds with DWARF instead
    # (full stacks, much larger perf.data, so a lower rate).
    local callgraph=(-F 499 -g)
    [[ $PROFILE == dwarf ]] && callgraph=(-F 97 --call-graph dwarf,16384)
    perf record -e cpu-clock "${callgraph[@]}" -p "$pid" -o "$OUT/$label.perf.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  "$GOTPC" "${common[@]}" run -T "$THREADS" --time "$DURATION" --isolation "$ISOLATION" ${WEIGHT:+--weight "$WEIGHT"} \
    --ignore-error --silence --interval 30s >"$OUT/$label.run.log" 2>&1 || true
  cpu1=$(cpu_seconds "$pid")
  rpc1=$(python3 "$HERE/rpcs.py" 9401 9402 9403)
  if [[ -n $perf_pid ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    flamegraph "$OUT/$label.perf.data" "$OUT/$label.flame.svg" || log "$label: no flamegraph"
  fi
  local check=pass
  if [[ -n ${SKIP_CHECK:-} ]]; then
    check=skipped
  else
    log "$label: check"
    "$GOTPC" "${common[@]}" check -T 1 >"$OUT/$label.check.log" 2>&1 || check=fail
    grep -qi "failed" "$OUT/$label.check.log" && check=fail
  fi
  python3 "$HERE/parse.py" --label "$label" --run-log "$OUT/$label.run.log" \
    --cpu-seconds "$(python3 -c "print($cpu1 - $cpu0)")" --check "$check" --load-seconds "$load_s" --store-requests $((rpc1 - rpc0)) \
    --warehouses "$WAREHOUSES" --threads "$THREADS" --duration "$DURATION" >>"$OUT/results.jsonl"
  log "$label: $(tail -1 "$OUT/results.jsonl")"
}

# One load serves both durability settings: synchronous_commit is reloaded between the runs
# (the second run starts from the first one's final, consistent state).
# Right after go-tpc's load PostgreSQL's checkpointer and autovacuum are still busy with it,
# which made the first measured run (synchronous_commit = off) slower and noisier than the
# second: both runs start from a vacuumed, analyzed and checkpointed database.
settle_pg() {
  log "postgres: VACUUM ANALYZE and CHECKPOINT before the run"
  "$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d tpcc -qc "VACUUM ANALYZE" \
    -c "CHECKPOINT" >/dev/null
}

run_pg() {
  ensure_pg
  start_pg off
  AFTER_PREPARE=settle_pg tpcc "postgres-sync-off" "$PG_PORT" postgres "$PG_PID" || true
  "$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc \
    "ALTER SYSTEM SET synchronous_commit = on" -c "SELECT pg_reload_conf()" >/dev/null
  SKIP_PREPARE=1 AFTER_PREPARE=settle_pg tpcc "postgres-sync-on" "$PG_PORT" postgres "$PG_PID" || true
  stop_server
}

run_shmdb() { # rf pns
  ensure_shmdb
  start_shmdb "$1" "$2"
  tpcc "shmdb-rf$1-pn$2" "$(ports_csv "$SHMDB_PG_PORT" "$2")" shmdb "$SERVER_PID" || true
  stop_server
}

log "mode $MODE, $WAREHOUSES warehouses, $THREADS threads, $DURATION, $(nproc) cores; results in $OUT"
ensure_gotpc
case $MODE in
  compare) run_shmdb 1 1; run_shmdb 2 1; run_pg ;;
  scale) for n in ${PNS:-1 2 3}; do run_shmdb 1 "$n"; done ;;
  pg) run_pg ;;
  shmdb) run_shmdb 1 1; run_shmdb 2 1 ;;
  rf1) run_shmdb 1 1 ;;
  check)
    run_shmdb 1 1
    grep -q '"check": "pass"' "$OUT/results.jsonl" || { log "TPC-C check FAILED"; exit 1; }
    grep -q '"new_order_count": 0,' "$OUT/results.jsonl" && { log "no NewOrder committed"; exit 1; }
    ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
python3 "$HERE/summarize.py" "$OUT/results.jsonl" | tee "$OUT/summary.md"
