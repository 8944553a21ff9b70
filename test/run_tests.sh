#!/usr/bin/env bash
# Runs each test binary given on the command line and prints one line per binary, then the
# totals as the last line: "N passed, M failed" (counting Catch2 test cases). A binary that
# crashes or prints no summary counts as one failure.
set -u
# Idle OpenMP threads sleep instead of spinning: tests launch many short parallel regions (and the
# CUDA emulator runs its own threads), and spinning teams starve each other on 2 cores.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
passed=0; failed=0
logdir=build/test/logs; mkdir -p "$logdir"
for bin in "$@"; do
  name=$(basename "$bin")
  start=$(date +%s)
  timeout "${TEST_TIMEOUT:-900}" "$bin" > "$logdir/$name.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  line=$(grep -E '^(All tests passed|test cases:)' "$logdir/$name.log" | tail -n 1)
  if [[ "$line" =~ All\ tests\ passed.*in\ ([0-9]+)\ test\ case ]]; then
    p=${BASH_REMATCH[1]}; f=0
  elif [[ "$line" =~ test\ cases:\ +([0-9]+)\ \|\ +([0-9]+)\ passed\ \|\ +([0-9]+)\ failed ]]; then
    p=${BASH_REMATCH[2]}; f=${BASH_REMATCH[3]}
  elif [[ "$line" =~ test\ cases:\ +([0-9]+)\ \|\ +([0-9]+)\ failed ]]; then
    p=0; f=${BASH_REMATCH[2]}
  else
    p=0; f=1
  fi
  if [ $rc -ne 0 ] && [ $f -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  status=ok; [ $f -gt 0 ] && status=FAIL
  printf '%-32s %4d passed %3d failed  %4ds  %s\n' "$name" "$p" "$f" "$secs" "$status"
  if [ $f -gt 0 ]; then sed 's/^/    | /' "$logdir/$name.log" | tail -n 60; fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
