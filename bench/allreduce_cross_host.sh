#!/usr/bin/env bash
# The cross-host row of `scripts/bench allreduce` (issue 19): bench_allreduce with one rank on
# each of two hosts h0, h1 (network namespaces on a bridge, tests/multihost/lib.sh), so that
# Cohort's all-reduce and the raw MPI_Allreduce both go over TCP on the veths (Open MPI's
# btl/tcp; no shared memory between the hosts). Sizes 1..64 MiB. Prints the rows as XROW
# (and XCROW, XWORLD) for bench/report_allreduce.py. Needs what the multihost tests need
# (root, ip netns, ...): a missing capability fails with a line naming it.
# Usage: bench/allreduce_cross_host.sh LAUNCHES BENCH_BINARY MPIRUN [MPIRUN FLAGS...]
set -uo pipefail
source "$(dirname "$0")/../tests/multihost/lib.sh"
mhRunLocked "$0" "$@"
launches=$1 bin=$2
shift 2
mhInit 2 /tmp/cohort-bench-cross-host
mhMpiEnv
for i in $(seq 1 "$launches"); do
  echo "cross-host launch $i/$launches: mpirun -np 2 -H h0:1,h1:1 $bin (TCP over veth)" >&2
  "$@" -np 2 -H h0:1,h1:1 "$bin" --min-kib 1024 --max-mib 64 > "$MH_WORK/rows" ||
    fail "cross-host bench_allreduce exited $?"
  sed -n 's/^ROW /XROW /p; s/^CROW /XCROW /p; s/^WORLD /XWORLD /p' "$MH_WORK/rows"
done
