#!/usr/bin/env bash
# Holds the server to its own openapi.yaml: runs schemathesis (PyPI) with
# its default checks over every operation that is not a stream (SSE and
# WebSocket are left out), once with a user token and once with a service
# token, against a server this script starts on 127.0.0.1:0 with a fresh
# SQLite database; then checks the events of a few SSE streams against
# the spec's SseEvent. Exits non-zero on any finding.
#
#   tests/schemathesis/run.sh            # after `cargo build` (or --release)
#   SWITCHYARD_BIN=path/to/switchyard tests/schemathesis/run.sh
#   SCHEMATHESIS_SEED=123 tests/schemathesis/run.sh    # replay a run
#   SCHEMATHESIS_EXAMPLES=200 tests/schemathesis/run.sh  # look harder
#   SCHEMATHESIS_DATABASE_URL=postgres://... tests/schemathesis/run.sh  # on Postgres
#
# Needs `st` (pip install schemathesis), curl and a built binary: the newest
# of target/{release,debug}/switchyard unless SWITCHYARD_BIN names one.
# Bounded: about two minutes in all on two cores with the default examples.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."

examples="${SCHEMATHESIS_EXAMPLES:-40}"
target="${CARGO_TARGET_DIR:-target}"

bin="${SWITCHYARD_BIN:-}"
if [[ -z "$bin" ]]; then
  for candidate in "$target/release/switchyard" "$target/debug/switchyard"; do
    if [[ -x "$candidate" && ( -z "$bin" || "$candidate" -nt "$bin" ) ]]; then
      bin="$candidate"
    fi
  done
fi
[[ -n "$bin" && -x "$bin" ]] || { echo "no switchyard binary: run cargo build first (or set SWITCHYARD_BIN)" >&2; exit 2; }
command -v st >/dev/null || { echo "schemathesis is not installed: pip install schemathesis" >&2; exit 2; }

work="$(mktemp -d)"
server_pid=""
ticker_pid=""
cleanup() {
  [[ -n "$ticker_pid" ]] && kill "$ticker_pid" 2>/dev/null || true
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export SWITCHYARD_JWT_SECRET="schemathesis-$RANDOM-$RANDOM-$RANDOM"
# Created here: the server's redirections happen in its own process, later.
: >"$work/server.out"
: >"$work/server.err"
SWITCHYARD_LISTEN=127.0.0.1:0 \
SWITCHYARD_DATABASE_URL="${SCHEMATHESIS_DATABASE_URL:-sqlite://$work/switchyard.db}" \
SWITCHYARD_RATE_LIMITS=off \
RUST_LOG=warn \
  "$bin" serve >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
base=""
for _ in $(seq 1 100); do
  base="$(sed -n 's/^switchyard listening on //p' "$work/server.out")"
  [[ -n "$base" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$base" ]] || { echo "the server did not start" >&2; cat "$work/server.err" >&2; exit 1; }
echo "schemathesis against $bin at $base"

# A user who reads and writes the resource namespaces, and a backend.
user="$("$bin" token --sub alice --name Alice --channels 'task:*,project:*,conversation:*' --publish 'task:*' --ttl 1h)"
service="$("$bin" token --sub backend --role service --ttl 1h)"

# A poll waits up to 30 s for an event on its channels, which always
# include the caller's own: an event there every half second answers every
# waiting poll, so the run stays short and polls are answered as clients
# see them (with events).
(
  while sleep 0.5; do
    for who in alice backend; do
      curl -s -o /dev/null -X POST "$base/realtime/broadcast" \
        -H "Authorization: Bearer $service" -H 'Content-Type: application/json' \
        -d "{\"channel\":\"user:$who\",\"event\":\"tick\",\"data\":{\"n\":1}}" || true
    done
  done
) &
ticker_pid=$!

status=0
for who in user service; do
  token="$user"
  [[ "$who" == service ]] && token="$service"
  echo
  echo "=== with a $who token ==="
  (
    cd "$work"
    st --config-file "$here/schemathesis.toml" run "$base/openapi.yaml" \
      --url "$base" \
      --header "Authorization: Bearer $token" \
      --exclude-path-regex '^/(realtime/sse|realtime/connect|ws)$' \
      --max-examples "$examples" \
      --request-timeout 40 \
      --generation-database none \
      --no-color \
      ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"}
  ) || status=1
done
# The SSE stream cannot be tested like the rest (it never ends), but its
# events can: each stream is read for two seconds (the ticker above puts
# events on it) and every event checked against SseEvent.
echo
echo "=== SSE events, with a user token ==="
(
  cd "$work"
  st --config-file "$here/schemathesis.toml" run "$base/openapi.yaml" \
    --url "$base" \
    --header "Authorization: Bearer $user" \
    --include-path /realtime/sse \
    --phases examples,fuzzing \
    --max-examples 5 \
    --request-timeout 2 \
    --generation-database none \
    --no-color \
    ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"}
) || status=1

if [[ "$status" != 0 ]]; then
  echo "schemathesis found disagreements between the server and openapi.yaml (above)" >&2
fi
exit "$status"
