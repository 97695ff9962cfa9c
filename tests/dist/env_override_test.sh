#!/usr/bin/env bash
# Override notices under mpiexec: each variable set to a non-default value is logged once
# ("COHORT_X set by environment to Y"), by rank 0 only, even with COHORT_LOG_LEVEL=info on
# every rank; variables set to their default value (in any spelling) are not logged.
# dist::init tunes the host allocator on every rank (cohort/dist/allocator.h).
# Usage: env_override_test.sh PROBE NP MPIEXEC [MPIEXEC FLAGS...]
set -uo pipefail
probe=$1; np=$2; shift 2
out=$(COHORT_LOG_LEVEL=info COHORT_CHECK_COLLECTIVES=0 COHORT_DEVICE=cpu \
      COHORT_ALLREDUCE_SLICE_BYTES=1048576 COHORT_COLLECTIVE_TIMEOUT=600.0 COHORT_CKPT_COPY_AHEAD=on \
      "$@" -n "$np" "$probe" 2>&1)
rc=$?
fail=0
check() {  # check WHAT EXPECTED_COUNT PATTERN
  local n
  n=$(grep -c -- "$3" <<<"$out")
  if [[ $n -ne $2 ]]; then
    echo "FAIL: $1: $n lines match '$3', expected $2"
    fail=1
  fi
}
[[ $rc -eq 0 ]] || { echo "FAIL: probe exited $rc"; fail=1; }
check "every rank ran" "$np" "probe rank [0-9]* done"
check "dist::init tuned malloc on every rank" "$np" "probe rank [0-9]* allocator tuned$"
check "LOG_LEVEL once" 1 "COHORT_LOG_LEVEL set by environment to info"
check "CHECK_COLLECTIVES once" 1 "COHORT_CHECK_COLLECTIVES set by environment to 0"
check "DEVICE once" 1 "COHORT_DEVICE set by environment to cpu"
check "all from rank 0" 3 "\[rank 0\].*set by environment to"
check "none from other ranks" 0 "\[rank [1-9][0-9]*\].*set by environment"
check "defaults are no override" 0 "SLICE_BYTES set by\|TIMEOUT set by\|COPY_AHEAD set by"
if [[ $fail -ne 0 ]]; then
  echo "--- output"; echo "$out"; exit 1
fi
echo "ok: $np ranks, 3 overrides logged once each by rank 0"
