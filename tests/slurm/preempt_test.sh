#!/usr/bin/env bash
# Run through with-slurm. Preemption with the sbatch templates, end to end: the program
# (mpi_preempt, a stand-in that keeps the trainer's contract) is signalled while it runs,
# every rank sees SIGTERM, the ranks agree to stop, write a "checkpoint" and the PREEMPTED
# marker and exit 0; the batch script requeues the job; the requeued run resumes from the
# checkpoint and the job ends COMPLETED with Restarts=1.
#   preempt_test.sh MPI_PREEMPT SLURM_TEMPLATE_DIR WORKDIR MODE
# MODE: steps      `scancel --signal=TERM JOB`: Slurm signals the step's tasks directly
#       batch      `scancel --batch --signal=TERM JOB`: only the batch shell, which forwards
#                  (the path that --signal=B:TERM@grace takes), single-node template
#       time_limit --time=1 --signal=B:TERM@20: the real time-limit warning, which slurmctld
#                  sends between 50 and 20 s before the end (after the step started)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
program=$1 templates=$2 mode=$4
slurmTestInit "$3"

out=$PWD/output
export COHORT_PROGRAM=$program COHORT_ARGS="--max_seconds=90" COHORT_OUTPUT_DIR=$out
case $mode in
  steps)
    ranks=4
    job=$(submitTemplate "$templates/multi-node.sbatch" --nodes=2 --ntasks-per-node=2 --gpus-per-node=2) ;;
  batch)
    ranks=2
    job=$(submitTemplate "$templates/single-node.sbatch" --ntasks-per-node=2 --gpus-per-node=2) ;;
  time_limit)
    ranks=4
    job=$(submitTemplate "$templates/multi-node.sbatch" --nodes=2 --ntasks-per-node=2 --gpus-per-node=2 \
      --time=1 --signal=B:TERM@20) ;;
  *) fail "unknown mode '$mode'" ;;
esac

allRunning() { [[ $(countFiles "$out/running.*") -eq $ranks ]]; }
waitFor 60 "$ranks ranks to start" allRunning
case $mode in
  steps) scancel --signal=TERM "$job" || fail "scancel --signal=TERM $job" ;;
  batch) scancel --batch --signal=TERM "$job" || fail "scancel --batch --signal=TERM $job" ;;
  time_limit) ;;  # slurmctld sends it itself
esac
allStopped() { [[ $(countFiles "$out/term.*") -eq $ranks ]]; }
waitFor 75 "every rank to stop on SIGTERM" allStopped
state=$(waitJobEnd "$job" 60)

log=$(jobOutput "$job")
expect test "$state" = COMPLETED
expect test "$(jobField "$job" Restarts)" = 1
expect test "$(jobField "$job" ExitCode)" = 0:0
step=$(sed -n 's/^step=//p' "$out/checkpoint")
[[ $step =~ ^[0-9]+$ ]] || fail "no checkpoint step in $out/checkpoint"
for ((r = 0; r < ranks; r++)); do
  grep -qx "saw_term=1 step=$step .*" "$out/term.$r" || fail "rank $r: $(cat "$out/term.$r")"
  grep -q "^mpi_preempt rank=$r size=$ranks .* restart=1 resumed step=$step$" "$log" ||
    fail "rank $r did not resume from step $step after the requeue"
done
expect grep -q "restart 0\] preempted, checkpoint written (checkpoint): requeueing" "$log"
expect grep -q "restart 1\] step exited with code 0" "$log"
if [[ $mode != steps ]]; then expect grep -q "restart 0\] SIGTERM received: forwarding" "$log"; fi
expect test -f "$out/done"
expect test ! -e "$out/PREEMPTED"
# --open-mode=append: both runs of the job in one file, the first run's lines first.
expect test "$(grep -c 'starting ' "$log")" -eq 2
echo "PASS: $mode: $ranks ranks saw SIGTERM, checkpoint at step $step, requeued, resumed (${SECONDS}s)"
