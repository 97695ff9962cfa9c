#!/usr/bin/env bash
# Run through with-slurm. `cohort run` in an uneven allocation (issue 21): a batch job of
# -N2 -n3 gets SLURM_TASKS_PER_NODE=2,1; `cohort run -- mpi_hello` must start ONE world of
# 3 ranks (2 on the first node, 1 on the second) through srun, and `-np 4` must be a usage
# error (exit 2), not an srun failure.
#   uneven_test.sh COHORT MPI_HELLO WORKDIR
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cohort=$(readlink -f "$1")
hello=$(readlink -f "$2")
slurmTestInit "$3"

cat >job.sh <<SCRIPT
#!/bin/bash
echo "tasks_per_node=\$SLURM_TASKS_PER_NODE ntasks=\$SLURM_NTASKS"
"$cohort" run --dry-run -- "$hello" | head -n 1
"$cohort" run -- "$hello"
echo "cohort run exited \$?"
"$cohort" run -np 4 -- "$hello"
echo "cohort run -np 4 exited \$?"
SCRIPT
job=$(sbatch --parsable --chdir="$PWD" --time=10 --nodes=2 --ntasks=3 --cpus-per-task=1 \
  --output="$PWD/uneven-%j.out" job.sh) || fail "sbatch"
job=${job%%;*}
SLURM_TEST_JOBS+=("$job")
waitJobEnd "$job" 120 >/dev/null
out=$PWD/uneven-$job.out
cat "$out"
expect grep -q "^tasks_per_node=2,1 ntasks=3$" "$out"
expect grep -q "3 ranks on 2 nodes (2,1) via srun" "$out"
expect test "$(grep -c 'mpi_hello rank=[0-2] size=3 sum=3 ' "$out")" -eq 3
expect grep -q "^mpi_hello rank=0 size=3 sum=3 node=n1 " "$out"
expect grep -q "^\[rank 1\] mpi_hello rank=1 size=3 sum=3 node=n1 " "$out"
expect grep -q "^\[rank 2\] mpi_hello rank=2 size=3 sum=3 node=n2 " "$out"
expect grep -q "^cohort run exited 0$" "$out"
if grep -q "can't honor" "$out"; then fail "srun warned about the command cohort run gave it"; fi
expect grep -q "exceeds the Slurm allocation: 3 tasks on 2 nodes (2,1)" "$out"
expect grep -q "^cohort run -np 4 exited 2$" "$out"
echo "PASS: salloc -N2 -n3: one world of 3 ranks (2,1) through cohort run; -np 4 exits 2 (${SECONDS}s)"
