#!/usr/bin/env bash
# Switchyard as a cluster (several nodes on one Postgres) against Nchan as a
# cluster (several nginx instances sharing Redis), on one machine.
#
#   bench/cluster.sh [latency|streams|all]
#
# latency  Two nodes. Publishes go to the first, every subscriber reads from
#          the second (`switchyard-bench fanout --cross-node`), at
#          CLUSTER_RATE events/s to CLUSTER_SUBS subscribers for CLUSTER_SECS.
# streams  STREAM_NODES nodes, one client process per node holding
#          STREAMS_PER_NODE idle SSE streams (one process may hold ~19,500
#          open files here); once every process has its streams open, one
#          broadcast published on the first node must reach every stream.
#          Reports streams held and reached, and RSS per stream per node.
#
# Nodes run on SERVER_CPU (one tokio worker each), clients on CLIENT_CPU;
# Postgres and Redis are not pinned. RUNS rounds per scenario, alternating
# which system goes first; raw results and medians land in
# bench-results/<time>-cluster-<scenario>/ (git-ignored).
#
# Environment: RUNS=3 CLUSTER_RATE=1000 CLUSTER_SUBS=10 CLUSTER_SECS=10
#   CLUSTER_PUBLISH_CONNS=32 (publishes in flight: each waits for its commit)
#   STREAM_NODES=6 STREAMS_PER_NODE=16700 STREAM_SETTLE_SECS=5
#   STREAM_CONNECT_CONCURRENCY=16 (streams each client opens at once: every
#   Switchyard stream writes presence rows on opening, and 6 x 256 at once
#   exhausted the nodes' Postgres pools, so opens failed with 503 and retried)
#   SWITCHYARD_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
#   REDIS_URL=redis://127.0.0.1:6379 BASE_PORT=8280 SERVER_CPU=0 CLIENT_CPU=1
#   SKIP_BUILD=1 BENCH_NICE=-10 QUIET_IDLE_PCT=60 QUIET_WAIT_SECS=30
#   SYSTEMS="switchyard nchan"   which systems to run
set -euo pipefail

SCENARIO=${1:-all}
case "$SCENARIO" in
latency | streams | all) ;;
*)
  echo "usage: $0 [latency|streams|all]" >&2
  exit 2
  ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
CLUSTER_RATE=${CLUSTER_RATE:-1000}
CLUSTER_SUBS=${CLUSTER_SUBS:-10}
CLUSTER_SECS=${CLUSTER_SECS:-10}
CLUSTER_PUBLISH_CONNS=${CLUSTER_PUBLISH_CONNS:-32}
STREAM_NODES=${STREAM_NODES:-6}
STREAMS_PER_NODE=${STREAMS_PER_NODE:-16700}
STREAM_SETTLE_SECS=${STREAM_SETTLE_SECS:-5}
STREAM_CONNECT_CONCURRENCY=${STREAM_CONNECT_CONCURRENCY:-16}
PG_URL=${SWITCHYARD_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
BASE_PORT=${BASE_PORT:-8280}
SYSTEMS=${SYSTEMS:-switchyard nchan}

OUT="$REPO/bench-results/$(date +%Y%m%d-%H%M%S)-cluster-$SCENARIO"
RESULTS="$OUT/results.jsonl"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-cluster.XXXXXX")
BENCH="$WORK/bin/switchyard-bench"
SERVER="$WORK/bin/switchyard"
mkdir -p "$OUT"
PROBLEMS="$OUT/server-problems.txt"
: >"$PROBLEMS"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

NODE_PIDS=()   # the processes to signal at the end (nginx masters, switchyard nodes)
SERVER_PIDS=() # the processes serving connections, by node (nginx workers, switchyard)
NGINX_DIRS=()
RUN_NO=0

node_port() { echo $((BASE_PORT + $1)); }

# start_switchyard_nodes N: N nodes on a fresh database.
start_switchyard_nodes() {
  psql -q "$PG_URL" -c 'DROP DATABASE IF EXISTS switchyard_bench WITH (FORCE)' >/dev/null
  psql -q "$PG_URL" -c 'CREATE DATABASE switchyard_bench' >/dev/null
  local i port
  for ((i = 1; i <= $1; i++)); do
    port=$(node_port "$i")
    port_free "$port" || { echo "port $port is in use" >&2; exit 1; }
    TOKIO_WORKER_THREADS=1 SWITCHYARD_JWT_SECRET="$SECRET" SWITCHYARD_DATABASE_URL="$(pg_bench_url)" \
      SWITCHYARD_RATE_LIMITS=off RUST_LOG=warn SWITCHYARD_LISTEN="127.0.0.1:$port" \
      "${PRIO[@]}" taskset -c "$SERVER_CPU" "$SERVER" serve >"$OUT/switchyard-$RUN_NO-node$i.log" 2>&1 &
    NODE_PIDS+=($!)
    SERVER_PIDS+=($!)
    wait_port "$port" 60 || { echo "node $i did not start" >&2; cat "$OUT/switchyard-$RUN_NO-node$i.log" >&2; exit 1; }
  done
}

# start_nchan_nodes N: N nginx instances sharing one Redis.
start_nchan_nodes() {
  local i port dir
  for ((i = 1; i <= $1; i++)); do
    port=$(node_port "$i")
    port_free "$port" || { echo "port $port is in use" >&2; exit 1; }
    dir="$WORK/nchan-$i"
    rm -rf "$dir"
    mkdir -p "$dir/logs" "$dir/body"
    sed -e "s#/tmp/nchan/#$dir/#g" -e "s#127.0.0.1:8091#127.0.0.1:$port#" \
      -e "s#^http {#http {\n  nchan_redis_url \"$REDIS_URL\";#" \
      -e 's#nchan_subscriber;#nchan_subscriber;\n      nchan_use_redis on;#' \
      -e 's#nchan_publisher;#nchan_publisher;\n      nchan_use_redis on;#' \
      "$REPO/../shared/peers/nchan.conf" >"$dir/nchan.conf"
    "${PRIO[@]}" taskset -c "$SERVER_CPU" nginx -c "$dir/nchan.conf" -p "$dir/"
    wait_port "$port" 10 || { echo "nchan node $i did not start" >&2; exit 1; }
    NGINX_DIRS+=("$dir")
    NODE_PIDS+=("$(cat "$dir/nginx.pid")")
    SERVER_PIDS+=("$(pgrep -P "$(cat "$dir/nginx.pid")" | head -n1)")
  done
}

stop_nodes() {
  local pid dir i
  for dir in "${NGINX_DIRS[@]}"; do
    nginx -s quit -c "$dir/nchan.conf" -p "$dir/" >/dev/null 2>&1 || true
    if grep -qsE '\[(error|crit|alert|emerg)\]' "$dir/logs/error.log"; then
      cp "$dir/logs/error.log" "$OUT/nchan-error-$RUN_NO-$(basename "$dir").log"
    fi
  done
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "run $RUN_NO: process $pid did not exit within 15 s; killed" | tee -a "$PROBLEMS"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for log in "$OUT"/switchyard-"$RUN_NO"-node*.log; do
    [ -e "$log" ] || continue
    if grep -qE ' (ERROR|WARN) ' "$log"; then
      echo "$(basename "$log"): $(grep -cE ' ERROR ' "$log") ERROR and $(grep -cE ' WARN ' "$log") WARN lines" | tee -a "$PROBLEMS"
    fi
  done
  NODE_PIDS=()
  SERVER_PIDS=()
  NGINX_DIRS=()
}

cleanup() {
  set +e
  stop_nodes
  psql -q "$PG_URL" -c 'DROP DATABASE IF EXISTS switchyard_bench WITH (FORCE)' >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# client SYSTEM ARGS...: the bench tool pinned to the client CPU, recorded.
client() {
  local kind=$1
  shift
  local cmd=("${PRIO[@]}" taskset -c "$CLIENT_CPU" "$BENCH" "$@" --target "$kind" --secret "$SECRET" --out "$RESULTS")
  echo "${cmd[*]}" | sed "s#$WORK/bin/#target/release/#; s#--out [^ ]*#--out results.jsonl#; s#$WORK/#WORK/#g" >>"$OUT/commands.txt"
  RUST_BACKTRACE=0 "${cmd[@]}"
}

run_latency() { # SYSTEM
  RUN_NO=$((RUN_NO + 1))
  wait_quiet
  "start_$1_nodes" 2
  sleep 1
  log "run $RUN_NO: $1 latency across nodes, $CLUSTER_RATE events/s x $CLUSTER_SUBS subscribers ($QUIET_NOTE)"
  client "$1" fanout --url "http://127.0.0.1:$(node_port 1)" --url "http://127.0.0.1:$(node_port 2)" --cross-node \
    -n "$CLUSTER_SUBS" -r "$CLUSTER_RATE" -d "$CLUSTER_SECS" --publish-connections "$CLUSTER_PUBLISH_CONNS" --label "$1-cluster" \
    --server-pid "${SERVER_PIDS[0]}" --server-pid "${SERVER_PIDS[1]}" 2>&1 | tee -a "$OUT/run.log" ||
    echo "client failed: run $RUN_NO $1 latency" | tee -a "$PROBLEMS"
  stop_nodes
}

run_streams() { # SYSTEM
  RUN_NO=$((RUN_NO + 1))
  wait_quiet
  "start_$1_nodes" "$STREAM_NODES"
  sleep 1
  log "run $RUN_NO: $1 $STREAM_NODES nodes x $STREAMS_PER_NODE idle streams, one broadcast ($QUIET_NOTE)"
  local barrier="$WORK/barrier-$RUN_NO" epoch i pids=() channel=()
  mkdir -p "$barrier"
  epoch=$(date +%s%3N)
  # Every client process must follow the same channel (the tool gives Nchan
  # a fresh one per process otherwise).
  if [ "$1" = nchan ]; then channel=(--channel "bench$epoch"); fi
  for ((i = 1; i <= STREAM_NODES; i++)); do
    SWITCHYARD_BENCH_EPOCH_UNIX_MS=$epoch client "$1" idle -n "$STREAMS_PER_NODE" --settle "$STREAM_SETTLE_SECS" \
      --timeout 120 --threads 1 --connect-concurrency "$STREAM_CONNECT_CONCURRENCY" --url "http://127.0.0.1:$(node_port "$i")" --server-pid "${SERVER_PIDS[$((i - 1))]}" \
      --barrier-dir "$barrier" --processes "$STREAM_NODES" --index $((i - 1)) --label "$1-cluster" "${channel[@]}" \
      >"$OUT/streams-$RUN_NO-client$i.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || echo "client failed: run $RUN_NO $1 streams (pid $pid)" | tee -a "$PROBLEMS"
  done
  cat "$OUT"/streams-"$RUN_NO"-client*.log >>"$OUT/run.log"
  python3 - "$RESULTS" "$RUN_NO" "$1" "$STREAM_NODES" <<'EOF' | tee -a "$OUT/run.log" "$OUT/streams-summary.txt"
import json, sys, statistics
path, run, label, nodes = sys.argv[1], sys.argv[2], sys.argv[3] + "-cluster", int(sys.argv[4])
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r["scenario"] == "idle" and r["label"] == label][-nodes:]
m = [r["metrics"] for r in rows]
print(f"run {run} {label}: {sum(x['streams'] for x in m)} streams held on {len(m)} nodes, "
      f"{sum(x['received'] for x in m)} reached by the broadcast, "
      f"{sum(x['failed_to_open'] for x in m)} failed to open; "
      f"bytes per stream by node: {[x.get('bytes_per_stream') for x in m]}; "
      f"broadcast p99 by node (ms): {[x.get('broadcast_p99_ms') for x in m]}")
EOF
  stop_nodes
}

each_round() { # SCENARIO
  local r systems
  for ((r = 1; r <= RUNS; r++)); do
    systems=$SYSTEMS
    if ((r % 2 == 0)); then systems=$(echo "$SYSTEMS" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }'); fi
    for system in $systems; do "run_$1" "$system"; done
  done
}

ensure_nchan
build
snapshot_binaries
case "$SCENARIO" in
latency) each_round latency ;;
streams) each_round streams ;;
all)
  each_round latency
  each_round streams
  ;;
esac
log "medians"
"$BENCH" summarize "$RESULTS" | tee "$OUT/summary.txt"
echo "results: $OUT"
