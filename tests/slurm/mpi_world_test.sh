#!/usr/bin/env bash
# Run through with-slurm. The sbatch templates start ONE MPI world with srun --mpi=pmix:
# multi-node.sbatch on 2 nodes x 2 tasks and single-node.sbatch on 1 node x 2 tasks, with
# the GPU lines active (the test cluster has 2 fake GPUs a node). A program that exits 0
# without the PREEMPTED marker is not requeued; one that fails ends the job FAILED.
#   mpi_world_test.sh MPI_HELLO SLURM_TEMPLATE_DIR WORKDIR
set -uo pipefail
source "$(dirname "$0")/lib.sh"
hello=$1 templates=$2
slurmTestInit "$3"

export COHORT_PROGRAM=$hello COHORT_ARGS="" COHORT_OUTPUT_DIR=$PWD/out-multi
multi=$(submitTemplate "$templates/multi-node.sbatch" --nodes=2 --ntasks-per-node=2 --gpus-per-node=2)
export COHORT_OUTPUT_DIR=$PWD/out-single
single=$(submitTemplate "$templates/single-node.sbatch" --ntasks-per-node=2 --gpus-per-node=2)
export COHORT_PROGRAM=false COHORT_OUTPUT_DIR=$PWD/out-false
failing=$(submitTemplate "$templates/single-node.sbatch" --ntasks-per-node=1 --gpus-per-node=1)

for j in "$multi" "$single" "$failing"; do waitJobEnd "$j" 90 >/dev/null; done

# checkWorld JOB SIZE EXPECTED_NODES: one line per rank, every rank in one world of SIZE
# whose all-reduce summed to SIZE, rank r on the r-th entry of EXPECTED_NODES.
checkWorld() {
  local job=$1 size=$2 nodes out r line
  read -ra nodes <<<"$3"
  out=$(jobOutput "$job")
  expect test "$(jobField "$job" JobState)" = COMPLETED
  expect test "$(jobField "$job" ExitCode)" = 0:0
  expect test "$(jobField "$job" Restarts)" = 0
  expect test "$(grep -c '^mpi_hello ' "$out")" -eq "$size"
  for ((r = 0; r < size; r++)); do
    line=$(grep "^mpi_hello rank=$r " "$out") || fail "job $job: no line from rank $r"
    [[ $line == *" size=$size sum=$size node=${nodes[r]} procid=$r "* ]] ||
      fail "job $job rank $r: '$line' (want size=$size node=${nodes[r]})"
    [[ $line == *" gpus=0,1" ]] || fail "job $job rank $r: both node GPUs not visible: '$line'"
  done
  expect grep -q "step exited with code 0" "$out"
  if grep -q requeueing "$out"; then fail "job $job requeued without a PREEMPTED marker"; fi
}
checkWorld "$multi" 4 "n1 n1 n2 n2"
node=$(jobField "$single" NodeList)
[[ $node == n[12] ]] || fail "single-node job on '$node'"
checkWorld "$single" 2 "$node $node"

expect test "$(jobField "$failing" JobState)" = FAILED
expect test "$(jobField "$failing" Restarts)" = 0
expect grep -q "step exited with code 1" "$(jobOutput "$failing")"
echo "PASS: 4-rank world across n1,n2; 2-rank world on one node; a failing step is not requeued (${SECONDS}s)"
