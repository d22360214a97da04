#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another,
# with `cargo +nightly fuzz`, starting from the committed seeds and what
# earlier runs found (fuzz/corpus/, not committed). Exits non-zero if any
# target found a crash; libFuzzer leaves the input in fuzz/artifacts/.
#
#   fuzz/run.sh 600                  # ten minutes each
#   fuzz/run.sh 60 ot_transform      # one target
#
# Built with debug assertions (overflow checks) and AddressSanitizer.
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} == 0 ]]; then
  targets=(request_head ot_parse ot_transform publish_body poll_body ws_messages)
fi

cargo +nightly fuzz build --debug-assertions
failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "=== $target: ${seconds}s ==="
  log="$(mktemp)"
  if cargo +nightly fuzz run --debug-assertions "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
      >"$log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done [0-9]+ runs)' "$log" || true
  else
    failed+=("$target")
    tail -n 60 "$log"
  fi
  rm -f "$log"
done
if [[ ${#failed[@]} != 0 ]]; then
  echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "no crashes"
