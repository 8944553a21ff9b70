#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UBSan; `make fuzz-targets`) and runs
# each for a given number of inputs:
#   bash dev/fuzz/run_fuzz.sh [RUNS] [TARGET...]    # default 1000000 inputs each, all targets
# FUZZ_MAX_TIME=S also stops each target after S seconds (the summary gives the inputs run).
# Targets: every dev/fuzz/fuzz_*.cpp (see each file's comment for the reader and its contract).
# Seeds: each target writes its own (fixture files, valid inputs) into build/fuzz/seeds/<target>;
# new interesting inputs go to build/fuzz/corpus/<target>. A failure leaves crash-*/timeout-*/
# oom-* files in build/fuzz/artifacts/<target>/ and stops the script with a non-zero exit.
# Limits: 10 s per input, 2 GiB RSS, 1 GiB per allocation: a hang or an unbounded allocation is
# a failure like a crash. The last line sums the inputs run per target.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${1:-1000000}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in dev/fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
make -s -j"$(nproc)" $(printf 'build/fuzz/%s ' "${targets[@]}")
summary=""
for t in "${targets[@]}"; do
  seeds=build/fuzz/seeds/$t corpus=build/fuzz/corpus/$t art=build/fuzz/artifacts/$t
  rm -rf "$seeds"; mkdir -p "$corpus" "$art"
  FUZZ_WRITE_SEEDS="$seeds" "build/fuzz/$t"
  echo "== $t: $runs inputs ($(ls "$seeds" | wc -l) seeds, $(ls "$corpus" | wc -l) in the corpus)"
  log=build/fuzz/$t.log
  start=$(date +%s)
  # -max_len: the largest seed (fixture files) or 4096, whichever is larger
  maxlen=$(find "$seeds" -type f -printf '%s\n' | sort -n | tail -n 1)
  [ "${maxlen:-0}" -lt 4096 ] && maxlen=4096
  if ! "build/fuzz/$t" -runs="$runs" -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -print_final_stats=1 ${FUZZ_MAX_TIME:+-max_total_time=$FUZZ_MAX_TIME} -artifact_prefix="$art/" "$corpus" "$seeds" > "$log" 2>&1; then
    tail -n 40 "$log"
    echo "FAILED: $t (artifacts in $art/, log $log)"
    exit 1
  fi
  done_runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
  counts=$(grep -E "^$t: " "$log" | tail -n 1)
  echo "   $counts in $(( $(date +%s) - start )) s"
  summary+="$t=${done_runs:-?} "
done
echo "fuzz summary ($(date -u +%Y-%m-%d)): ${summary}no failure"
