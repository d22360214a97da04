#!/usr/bin/env bash
# Switchyard vs Nchan, side by side on one machine.
#
#   bench/run.sh [fanout|idle|longpoll|publish|edit|messages|ws|zipf|storm|all]
#
# Servers run pinned to one core (SERVER_CPU, default 0): Nchan with one
# nginx worker, Switchyard with TOKIO_WORKER_THREADS=1. The load generator
# runs pinned to the other (CLIENT_CPU, default 1). Every scenario runs RUNS
# times (default 3) per target, alternating targets, each run on a freshly
# started server with a fresh database. Medians and Switchyard/Nchan ratios
# are printed at the end and saved with the raw results under
# bench-results/<timestamp>/ (git-ignored).
#
# Sizes (environment):
#   RUNS=3
#   FANOUT_SUBS=1000 FANOUT_STEP_SECS=5 FANOUT_START_RATE=20 FANOUT_STEP_FACTOR=1.25
#   FANOUT_LATENCY_SECS=10    fixed-rate run at half of Switchyard's capacity
#   IDLE_STREAMS=10000 IDLE_SETTLE_SECS=5
#   LONGPOLL_CONNS=50 LONGPOLL_SECS=10
#   PUBLISH_CONNS=8 PUBLISH_BATCH=100 PUBLISH_SECS=10 NCHAN_PUBLISH_CONNS=8
#   EDIT_EDITORS=10 EDIT_SECS=8  (editing has no peer: Nchan does not edit)
#   MESSAGES_MEMBERS=50 MESSAGES_PER_MIN=1000 MESSAGES_SECS=60
#                             a group conversation's members read their
#                             inboxes while they send messages in turn; beside
#                             it a broadcast of the same shape (as many SSE
#                             subscribers, the same rate) on every target
#   WS_SUBS=1000 WS_RATE=50 WS_SECS=10 WS_PAD=0
#                             `ws`: Switchyard alone, WebSocket subscribers in
#                             JSON and in protobuf frames (not part of `all`)
#   ZIPF_STREAMS=2000 ZIPF_FOLLOW=20 ZIPF_CHANNELS=10000 ZIPF_S=1.0
#   ZIPF_STEP_SECS=5 ZIPF_START_RATE=20 ZIPF_STEP_FACTOR=1.25 ZIPF_TOUCH_RATE=1000
#   ZIPF_SETTLE_SECS=20
#                             `zipf`: many channels (a task board): each SSE
#                             stream follows ZIPF_FOLLOW of ZIPF_CHANNELS
#                             channels drawn by a Zipf law of exponent ZIPF_S,
#                             publishes spread by the same law; server RSS per
#                             stream and per channel (one event published to
#                             each at ZIPF_TOUCH_RATE), then capacity as for
#                             fanout. Nchan reads with one multiplexed
#                             subscriber per stream (the location /sub/multi/
#                             added to its per-run config). Not part of `all`.
#                             Each RSS reading waits ZIPF_SETTLE_SECS: a user
#                             coming online appends `user.connected` on every
#                             channel they read (PROTOCOL section 7), so 2,000
#                             users opening at once are 40,000 events to
#                             thousands of followers, which Switchyard is
#                             still delivering seconds after the last open
#   STORM_STREAMS=16700 STORM_IN_FLIGHT=256 STORM_SETTLE_SECS=1
#                             `storm`: a node's clients reconnecting at once
#                             (after a restart): STORM_STREAMS SSE streams of
#                             distinct users opened with STORM_IN_FLIGHT
#                             opens in flight; opens per second, failures
#                             (a 503 when presence's writes fall behind), and
#                             one broadcast reaching them all after. Rows on
#                             Postgres too when SWITCHYARD_BENCH_POSTGRES_URL
#                             is set (with a baseline binary, its Postgres
#                             row as well: switchyard-baseline-pg). Not part
#                             of `all`.
#   SWITCHYARD_BASELINE_BIN=path an older server binary run beside the new
#                             one in every round (label switchyard-baseline,
#                             on SQLite): a same-run ratio for editing, which
#                             has no peer, and a regression check elsewhere
#   SWITCHYARD_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
#       adds Postgres rows (label switchyard-pg) to `publish`; the database
#       switchyard_bench on that server is dropped and recreated per run.
#   BENCH_PG_ALL=1            Postgres rows for every scenario, not only publish
#   SY_PORT=8080 NCHAN_PORT=8091 SERVER_CPU=0 CLIENT_CPU=1
#   SKIP_BUILD=1              use the release binaries as they are
#   SWITCHYARD_BIN=path       benchmark this server binary (e.g. an older
#                             build) instead of the one just built
#   BENCH_NICE=-10            scheduling priority of servers and client (both
#                             targets alike): on a machine shared with busy
#                             processes, otherwise they measure the neighbours
#   QUIET_IDLE_PCT=60 QUIET_WAIT_SECS=30
#                             before each run, wait up to QUIET_WAIT_SECS for
#                             the machine to be at least QUIET_IDLE_PCT idle
set -euo pipefail

SCENARIO=${1:-all}
case "$SCENARIO" in
fanout | idle | longpoll | publish | edit | messages | ws | zipf | storm | all) ;;
*)
  echo "usage: $0 [fanout|idle|longpoll|publish|edit|messages|ws|zipf|storm|all]" >&2
  exit 2
  ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
FANOUT_SUBS=${FANOUT_SUBS:-1000}
FANOUT_STEP_SECS=${FANOUT_STEP_SECS:-5}
FANOUT_START_RATE=${FANOUT_START_RATE:-20}
FANOUT_STEP_FACTOR=${FANOUT_STEP_FACTOR:-1.25}
FANOUT_LATENCY_SECS=${FANOUT_LATENCY_SECS:-10}
IDLE_STREAMS=${IDLE_STREAMS:-10000}
IDLE_SETTLE_SECS=${IDLE_SETTLE_SECS:-5}
STORM_STREAMS=${STORM_STREAMS:-16700}
STORM_IN_FLIGHT=${STORM_IN_FLIGHT:-256}
STORM_SETTLE_SECS=${STORM_SETTLE_SECS:-1}
LONGPOLL_CONNS=${LONGPOLL_CONNS:-50}
LONGPOLL_SECS=${LONGPOLL_SECS:-10}
PUBLISH_CONNS=${PUBLISH_CONNS:-8}
PUBLISH_BATCH=${PUBLISH_BATCH:-100}
PUBLISH_SECS=${PUBLISH_SECS:-10}
NCHAN_PUBLISH_CONNS=${NCHAN_PUBLISH_CONNS:-8}
EDIT_EDITORS=${EDIT_EDITORS:-10}
EDIT_SECS=${EDIT_SECS:-8}
MESSAGES_MEMBERS=${MESSAGES_MEMBERS:-50}
MESSAGES_PER_MIN=${MESSAGES_PER_MIN:-1000}
MESSAGES_SECS=${MESSAGES_SECS:-60}
WS_SUBS=${WS_SUBS:-1000}
WS_RATE=${WS_RATE:-50}
WS_SECS=${WS_SECS:-10}
WS_PAD=${WS_PAD:-0}
ZIPF_STREAMS=${ZIPF_STREAMS:-2000}
ZIPF_FOLLOW=${ZIPF_FOLLOW:-20}
ZIPF_CHANNELS=${ZIPF_CHANNELS:-10000}
ZIPF_S=${ZIPF_S:-1.0}
ZIPF_STEP_SECS=${ZIPF_STEP_SECS:-5}
ZIPF_START_RATE=${ZIPF_START_RATE:-20}
ZIPF_STEP_FACTOR=${ZIPF_STEP_FACTOR:-1.25}
ZIPF_TOUCH_RATE=${ZIPF_TOUCH_RATE:-1000}
ZIPF_SETTLE_SECS=${ZIPF_SETTLE_SECS:-20}
BASELINE_BIN=${SWITCHYARD_BASELINE_BIN:-}
PG_URL=${SWITCHYARD_BENCH_POSTGRES_URL:-}
BENCH_PG_ALL=${BENCH_PG_ALL:-0}
SY_PORT=${SY_PORT:-8080}
NCHAN_PORT=${NCHAN_PORT:-8091}

OUT="$REPO/bench-results/$(date +%Y%m%d-%H%M%S)-$SCENARIO"
RESULTS="$OUT/results.jsonl"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-bench.XXXXXX")
# Copies of the release binaries taken after the build, so that a rebuild in
# the shared target directory cannot change them halfway through.
BENCH="$WORK/bin/switchyard-bench"
SERVER="$WORK/bin/switchyard"
mkdir -p "$OUT"

SY_PID=""
NCHAN_DIR=""
NCHAN_MASTER=""
NCHAN_WORKER=""
SERVER_PID=""
PROBLEMS="$OUT/server-problems.txt"
: >"$PROBLEMS"

# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# --- servers ---------------------------------------------------------------

start_nchan() {
  port_free "$NCHAN_PORT" || { echo "port $NCHAN_PORT is in use: stop what listens there" >&2; exit 1; }
  NCHAN_DIR="$WORK/nchan"
  rm -rf "$NCHAN_DIR"
  mkdir -p "$NCHAN_DIR/logs" "$NCHAN_DIR/body"
  # Plus, after the shared config's locations (so no other request is
  # matched against it), a multiplexed subscriber for `zipf`: one stream
  # following every channel of a comma-separated list.
  sed -e "s#/tmp/nchan/#$NCHAN_DIR/#g" -e "s#127.0.0.1:8091#127.0.0.1:$NCHAN_PORT#" \
    -e '/^  }$/i\
    location ~ ^/sub/multi/([\\w,]+)$ {\
      nchan_subscriber;\
      nchan_channel_id $1;\
      nchan_channel_id_split_delimiter ",";\
    }' \
    "$REPO/../shared/peers/nchan.conf" >"$NCHAN_DIR/nchan.conf"
  grep -q 'sub/multi' "$NCHAN_DIR/nchan.conf" || { echo "could not add the multiplexed subscriber location to nchan.conf" >&2; exit 1; }
  "${PRIO[@]}" taskset -c "$SERVER_CPU" nginx -c "$NCHAN_DIR/nchan.conf" -p "$NCHAN_DIR/"
  wait_port "$NCHAN_PORT" 10 || { echo "nchan did not start" >&2; exit 1; }
  NCHAN_MASTER=$(cat "$NCHAN_DIR/nginx.pid")
  NCHAN_WORKER=$(pgrep -P "$NCHAN_MASTER" | head -n1)
  SERVER_PID=$NCHAN_WORKER
}

stop_nchan() {
  [ -n "$NCHAN_MASTER" ] || return 0
  nginx -s quit -c "$NCHAN_DIR/nchan.conf" -p "$NCHAN_DIR/" >/dev/null 2>&1 || true
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$NCHAN_MASTER" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$NCHAN_MASTER" 2>/dev/null; then
    echo "nchan did not quit within 10 s; killed" | tee -a "$PROBLEMS"
    kill -KILL "$NCHAN_MASTER" "$NCHAN_WORKER" 2>/dev/null || true
  fi
  if [ -s "$NCHAN_DIR/logs/error.log" ] && grep -qE '\[(error|crit|alert|emerg)\]' "$NCHAN_DIR/logs/error.log"; then
    cp "$NCHAN_DIR/logs/error.log" "$OUT/nchan-error-$(date +%s).log"
  fi
  NCHAN_MASTER=""
  NCHAN_WORKER=""
}

# start_switchyard sqlite|postgres RUNTAG [BINARY]
start_switchyard() {
  port_free "$SY_PORT" || { echo "port $SY_PORT is in use: stop what listens there" >&2; exit 1; }
  local db
  if [ "$1" = postgres ]; then
    psql -q "$PG_URL" -c 'DROP DATABASE IF EXISTS switchyard_bench WITH (FORCE)' >/dev/null
    psql -q "$PG_URL" -c 'CREATE DATABASE switchyard_bench' >/dev/null
    db=$(pg_bench_url)
  else
    rm -f "$WORK"/switchyard.db*
    db="sqlite://$WORK/switchyard.db"
  fi
  SY_LOG="$OUT/switchyard-$2.log"
  TOKIO_WORKER_THREADS=1 SWITCHYARD_JWT_SECRET="$SECRET" SWITCHYARD_DATABASE_URL="$db" \
    SWITCHYARD_RATE_LIMITS=off RUST_LOG=warn SWITCHYARD_LISTEN="127.0.0.1:$SY_PORT" \
    "${PRIO[@]}" taskset -c "$SERVER_CPU" "${3:-$SERVER}" serve >"$SY_LOG" 2>&1 &
  SY_PID=$!
  if ! wait_port "$SY_PORT" 60; then
    echo "switchyard did not start; its log:" >&2
    cat "$SY_LOG" >&2
    exit 1
  fi
  SERVER_PID=$SY_PID
}

stop_switchyard() {
  [ -n "$SY_PID" ] || return 0
  if ! kill -0 "$SY_PID" 2>/dev/null; then
    echo "switchyard (pid $SY_PID) had exited before the end of its run: see $(basename "$SY_LOG")" | tee -a "$PROBLEMS"
  fi
  kill -TERM "$SY_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$SY_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SY_PID" 2>/dev/null; then
    echo "switchyard did not exit within 15 s of SIGTERM; killed" | tee -a "$PROBLEMS"
    kill -KILL "$SY_PID" 2>/dev/null || true
  fi
  wait "$SY_PID" 2>/dev/null || true
  local plain="$SY_LOG.txt"
  sed 's/\x1b\[[0-9;]*m//g' "$SY_LOG" >"$plain"
  if grep -qE ' (ERROR|WARN) ' "$plain"; then
    echo "$(basename "$SY_LOG"): $(grep -cE ' ERROR ' "$plain") ERROR and $(grep -cE ' WARN ' "$plain") WARN lines; first ERROR: $(grep -m1 -E ' ERROR ' "$plain" | cut -c1-300)" | tee -a "$PROBLEMS"
  fi
  mv "$plain" "$SY_LOG"
  SY_PID=""
}

cleanup() {
  set +e
  stop_switchyard
  stop_nchan
  if [ -n "$PG_URL" ]; then
    psql -q "$PG_URL" -c 'DROP DATABASE IF EXISTS switchyard_bench WITH (FORCE)' >/dev/null 2>&1
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- one run ---------------------------------------------------------------

RUN_NO=0
# run_target LABEL SCENARIO ARGS... : starts the server LABEL names, runs the
# client pinned to CLIENT_CPU, stops the server.
run_target() {
  local label=$1
  shift
  RUN_NO=$((RUN_NO + 1))
  wait_quiet
  local url
  case "$label" in
  nchan)
    start_nchan
    url="http://127.0.0.1:$NCHAN_PORT"
    ;;
  switchyard | switchyard-ws-*) start_switchyard sqlite "$RUN_NO" ;;
  switchyard-pg) start_switchyard postgres "$RUN_NO" ;;
  switchyard-baseline) start_switchyard sqlite "$RUN_NO" "$WORK/bin/switchyard-baseline" ;;
  switchyard-baseline-pg) start_switchyard postgres "$RUN_NO" "$WORK/bin/switchyard-baseline" ;;
  esac
  case "$label" in
  switchyard*) url="http://127.0.0.1:$SY_PORT" ;;
  esac
  local kind=${label%%-*}
  sleep 1
  log "run $RUN_NO: $label: $* ($QUIET_NOTE)"
  local cmd=(env RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "${PRIO[@]}" taskset -c "$CLIENT_CPU" "$BENCH" "$@" --target "$kind" --url "$url" --secret "$SECRET"
    --label "$label" --server-pid "$SERVER_PID" --out "$RESULTS")
  echo "${cmd[*]}" | sed "s#env RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 ##; s#$WORK/bin/#target/release/#; s#--out [^ ]*#--out results.jsonl#" >>"$OUT/commands.txt"
  "${cmd[@]}" 2>&1 | tee -a "$OUT/run.log" || echo "client failed: $label $*" | tee -a "$PROBLEMS"
  case "$label" in
  nchan) stop_nchan ;;
  *) stop_switchyard ;;
  esac
}

# Labels of Switchyard rows for a scenario (with a baseline binary, its row
# too, except for conversations, which older builds do not have).
switchyard_labels() {
  local labels=switchyard
  if [ -n "$PG_URL" ] && { [ "$1" = publish ] || [ "$1" = storm ] || [ "$BENCH_PG_ALL" = 1 ]; }; then
    labels="$labels switchyard-pg"
  fi
  if [ -n "$BASELINE_BIN" ] && [ "$1" != messages ]; then labels="$labels switchyard-baseline"; fi
  if [ -n "$BASELINE_BIN" ] && [ -n "$PG_URL" ] && [ "$1" = storm ]; then labels="$labels switchyard-baseline-pg"; fi
  echo "$labels"
}

# each_run SCENARIO ARGS... : RUNS rounds, alternating which target goes
# first (and last). Nchan takes part in every scenario but editing and
# conversation messages.
each_run() {
  local scenario=$1
  shift
  local r labels
  for ((r = 1; r <= RUNS; r++)); do
    labels="$(switchyard_labels "$scenario")"
    if [ "$scenario" != edit ] && [ "$scenario" != messages ]; then labels="$labels nchan"; fi
    if ((r % 2 == 0)); then labels=$(echo "$labels" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for label in $labels; do
      if [ "$scenario" = publish ] && [ "$label" = nchan ]; then
        run_target nchan publish -c "$NCHAN_PUBLISH_CONNS" -b 1 -d "$PUBLISH_SECS"
      else
        run_target "$label" "$@"
      fi
    done
  done
}

median() { # SCENARIO:LABEL:METRIC
  "$BENCH" summarize "$RESULTS" --get "$1"
}

# --- scenarios -------------------------------------------------------------

scenario_fanout() {
  log "fanout capacity: 1 channel x $FANOUT_SUBS SSE subscribers, x$FANOUT_STEP_FACTOR per ${FANOUT_STEP_SECS}s step"
  each_run fanout fanout --capacity -n "$FANOUT_SUBS" -d "$FANOUT_STEP_SECS" \
    --start-rate "$FANOUT_START_RATE" --step-factor "$FANOUT_STEP_FACTOR"
  local cap half
  cap=$(median fanout-capacity:switchyard:capacity_rate)
  half=$(awk -v c="${cap:-0}" 'BEGIN { printf "%.1f", c / 2 }')
  if awk -v h="$half" 'BEGIN { exit !(h > 0) }'; then
    log "fanout latency at half of Switchyard's median capacity: $half events/s x $FANOUT_SUBS"
    each_run fanout fanout -n "$FANOUT_SUBS" -r "$half" -d "$FANOUT_LATENCY_SECS"
  else
    echo "no Switchyard capacity measured: skipping the half-capacity latency run" | tee -a "$PROBLEMS"
  fi
}

scenario_idle() {
  log "idle: $IDLE_STREAMS SSE streams"
  each_run idle idle -n "$IDLE_STREAMS" --settle "$IDLE_SETTLE_SECS"
}

scenario_longpoll() {
  log "longpoll: $LONGPOLL_CONNS connections, event waiting"
  each_run longpoll longpoll -c "$LONGPOLL_CONNS" -d "$LONGPOLL_SECS"
}

scenario_publish() {
  log "publish: $PUBLISH_CONNS publishers x batches of $PUBLISH_BATCH"
  each_run publish publish -c "$PUBLISH_CONNS" -b "$PUBLISH_BATCH" -d "$PUBLISH_SECS"
}

scenario_edit() {
  log "edit: $EDIT_EDITORS editors on one document (no peer: Nchan has no editing)"
  each_run edit edit -n "$EDIT_EDITORS" -d "$EDIT_SECS"
}

scenario_messages() {
  local rate
  rate=$(awk -v m="$MESSAGES_PER_MIN" 'BEGIN { printf "%.2f", m / 60 }')
  log "messages: a group of $MESSAGES_MEMBERS reading their inboxes, $MESSAGES_PER_MIN messages a minute for ${MESSAGES_SECS}s (no peer: Nchan has no conversations)"
  each_run messages fanout --group -n "$MESSAGES_MEMBERS" -r "$rate" -d "$MESSAGES_SECS"
  log "beside it, a broadcast of the same shape: $MESSAGES_MEMBERS SSE subscribers of one channel, $rate events/s"
  each_run messages-broadcast fanout --scenario messages-broadcast -n "$MESSAGES_MEMBERS" -r "$rate" -d "$MESSAGES_SECS"
}

# JSON against protobuf frames on the same server build: the same fan-out at
# a fixed rate, read over WebSocket in each framing (bytes read and server
# CPU per delivered event). Nchan has no such protocol.
scenario_ws() {
  log "ws: 1 channel x $WS_SUBS WebSocket subscribers at $WS_RATE events/s for ${WS_SECS}s, data padded by $WS_PAD bytes, JSON vs protobuf frames"
  local r label labels
  for ((r = 1; r <= RUNS; r++)); do
    labels="switchyard-ws-json switchyard-ws-protobuf"
    if ((r % 2 == 0)); then labels="switchyard-ws-protobuf switchyard-ws-json"; fi
    for label in $labels; do
      run_target "$label" fanout -n "$WS_SUBS" -r "$WS_RATE" -d "$WS_SECS" --pad "$WS_PAD" \
        --transport "${label#switchyard-}"
    done
  done
}

# Many channels, Zipf-skewed: every stream follows several, publishes are
# spread the same way (Nchan: a multiplexed subscriber per stream).
scenario_zipf() {
  log "zipf capacity: $ZIPF_STREAMS SSE streams x $ZIPF_FOLLOW of $ZIPF_CHANNELS channels (Zipf s=$ZIPF_S), publishes spread the same way, x$ZIPF_STEP_FACTOR per ${ZIPF_STEP_SECS}s step"
  each_run zipf zipf --streams "$ZIPF_STREAMS" --follow "$ZIPF_FOLLOW" --channels "$ZIPF_CHANNELS" \
    --zipf-s "$ZIPF_S" -d "$ZIPF_STEP_SECS" --start-rate "$ZIPF_START_RATE" \
    --step-factor "$ZIPF_STEP_FACTOR" --touch-rate "$ZIPF_TOUCH_RATE" --settle "$ZIPF_SETTLE_SECS"
}

# A node's clients reconnecting at once: distinct users, every open writing
# presence (Nchan keeps none: its row is the cost of the connections alone).
scenario_storm() {
  log "storm: $STORM_STREAMS SSE streams of distinct users, $STORM_IN_FLIGHT opens in flight"
  each_run storm idle --storm -n "$STORM_STREAMS" --connect-concurrency "$STORM_IN_FLIGHT" \
    --settle "$STORM_SETTLE_SECS" --timeout 60
}

# The whole run is one function, read before it starts: editing this file
# during a run cannot change what the run does.
main() {
  if [ "$SCENARIO" != ws ]; then ensure_nchan; fi
  build
  snapshot_binaries
  {
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "commit: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$([ "${SKIP_BUILD:-0}" = 1 ] && echo ' (SKIP_BUILD=1: binaries as found, possibly older)')$([ -n "${SWITCHYARD_BIN:-}" ] && echo "; server binary from SWITCHYARD_BIN"); server binary built $(date -r "${SWITCHYARD_BIN:-$REPO/target/release/switchyard}" '+%F %T')"
    echo "runs: $RUNS; server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU; ${PRIO[*]:-default priority}"
  } | tee "$OUT/machine.txt"

  if [ -n "$BASELINE_BIN" ]; then
    echo "baseline: $BASELINE_BIN, built $(date -r "$BASELINE_BIN" '+%F %T')" | tee -a "$OUT/machine.txt"
  fi
  case "$SCENARIO" in
  all)
    scenario_fanout
    scenario_idle
    scenario_longpoll
    scenario_publish
    scenario_edit
    scenario_messages
    ;;
  *) "scenario_$SCENARIO" ;;
  esac

  log "medians over $RUNS runs (raw results: bench-results/$(basename "$OUT")/results.jsonl)"
  "$BENCH" summarize "$RESULTS" | tee "$OUT/summary.md"
  if [ -s "$PROBLEMS" ]; then
    log "server problems seen"
    cat "$PROBLEMS"
  fi
}

main "$@"; exit $?
