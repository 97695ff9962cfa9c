#!/usr/bin/env bash
# scripts/gpu-check on a machine without a GPU: it must say so in its verdict line, exit 0
# with the GPU tests skipped, and take under 60 s (the build it may reuse is already there).
# On a machine WITH a GPU this check does not apply (the kit would build and run there).
set -uo pipefail
src=$1 build=$2
if "$src/scripts/gpu-check" --detect >/dev/null 2>&1; then
  echo "gpu_check_test: a GPU is visible here; the no-GPU verdict is not checked"
  exit 0
fi
start=$(date +%s%N)
out=$("$src/scripts/gpu-check" --build-dir "$build" 2>&1)
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 )); secs="$((ms / 1000)).$(printf %03d $((ms % 1000)))"
echo "$out"
echo "gpu_check_test: exit $rc after ${secs}s"
fail=0
[[ $rc == 0 ]] || { echo "FAIL: exit code $rc, expected 0"; fail=1; }
grep -q '^gpu-check: no GPU' <<<"$out" || { echo "FAIL: no 'gpu-check: no GPU' verdict line"; fail=1; }
grep -Eq '^gpu-check: 0 passed, 0 failed, [1-9][0-9]* skipped$' <<<"$out" ||
  { echo "FAIL: no '0 passed, 0 failed, N skipped' line naming the skipped GPU tests"; fail=1; }
(( ms < 60000 )) || { echo "FAIL: took ${secs}s (limit 60 s)"; fail=1; }
exit $fail
