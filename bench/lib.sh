# Shared by bench/run.sh and bench/cluster.sh: the settings both take from
# the environment (pinning, priority, token secret, quiet-machine wait),
# logging, installing Nchan, building, ports, and waiting for a quiet
# machine. Expects REPO, OUT, WORK and PG_URL to be set by the caller.

SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SECRET=${SWITCHYARD_BENCH_SECRET:-switchyard-bench-secret-0123456789}
BENCH_NICE=${BENCH_NICE:--10}
QUIET_IDLE_PCT=${QUIET_IDLE_PCT:-60}
QUIET_WAIT_SECS=${QUIET_WAIT_SECS:-30}
PRIO=(nice -n "$BENCH_NICE")
if ! "${PRIO[@]}" true 2>/dev/null; then PRIO=(); fi

log() { printf '\n== %s\n' "$*" | tee -a "$OUT/run.log"; }

# --- setup ---------------------------------------------------------------

ensure_nchan() {
  if command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    return
  fi
  log "installing Nchan (nginx-light, libnginx-mod-nchan)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light libnginx-mod-nchan
}

build() {
  if [ "${SKIP_BUILD:-0}" = 1 ]; then return; fi
  log "building release binaries"
  (cd "$REPO" && cargo build --release -p switchyard -p switchyard-bench)
}

snapshot_binaries() {
  mkdir -p "$WORK/bin"
  cp "${SWITCHYARD_BIN:-$REPO/target/release/switchyard}" "$WORK/bin/switchyard"
  cp "$REPO/target/release/switchyard-bench" "$WORK/bin/"
  if [ -n "${SWITCHYARD_BASELINE_BIN:-}" ]; then
    cp "$SWITCHYARD_BASELINE_BIN" "$WORK/bin/switchyard-baseline"
  fi
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() { # port, seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if ! port_free "$1"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Whole-machine idle share over one second, %.
cpu_idle_pct() {
  local u n s i w x y z t1 i1 t2 i2
  read -r _ u n s i w x y z _ </proc/stat
  t1=$((u + n + s + i + w + x + y + z)) i1=$((i + w))
  sleep 1
  read -r _ u n s i w x y z _ </proc/stat
  t2=$((u + n + s + i + w + x + y + z)) i2=$((i + w))
  echo $((100 * (i2 - i1) / (t2 - t1 > 0 ? t2 - t1 : 1)))
}

# Waits (bounded) for other processes to leave the CPUs mostly idle.
wait_quiet() {
  local k idle=0
  for ((k = 0; k < QUIET_WAIT_SECS; k++)); do
    idle=$(cpu_idle_pct)
    if ((idle >= QUIET_IDLE_PCT)); then break; fi
  done
  QUIET_NOTE="machine ${idle}% idle before the run"
}

pg_bench_url() {
  local base=${PG_URL%%\?*}
  echo "${base%/*}/switchyard_bench"
}
