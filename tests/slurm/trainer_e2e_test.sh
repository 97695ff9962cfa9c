#!/usr/bin/env bash
# Run through with-slurm. The Trainer end to end on a real Slurm (issue 8): the multi-node
# template with 2 nodes x 2 tasks runs a float64 training job via srun as one 4-rank world;
# `scancel --signal=TERM` makes it write a JIT checkpoint and exit 0; the template requeues
# the job; the requeued run resumes from that checkpoint and finishes with the same final
# parameters as an uninterrupted 4-rank run (float64, 1e-10).
#   trainer_e2e_test.sh PROBE SLURM_TEMPLATE_DIR WORKDIR COMPARE_SCRIPT MPIEXEC [FLAGS...]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
probe=$1 templates=$2 compare=$4
slurmTestInit "$3"
shift 4
mpi=("$@")

out=$PWD/output
train="--max_steps=40 --logging_steps=1 --learning_rate=0.05 --seed=7 --report_to=none
  --per_device_train_batch_size=3 --save_steps=10 --enable_jit_checkpoint=true --jit_kill_wait=0.5
  --probe-step-ms=60"
# The reference: the same job uninterrupted, 4 ranks under mpirun.
# shellcheck disable=SC2086
"${mpi[@]}" -n 4 "$probe" $train --output_dir="$PWD/ref" --probe-out="$PWD/ref.txt" \
  > ref.log 2>&1 || fail "reference run: $(tail -5 ref.log)"

export COHORT_PROGRAM=$probe COHORT_OUTPUT_DIR=$out
export COHORT_ARGS="$train --probe-pid-dir=$PWD/pids --probe-out=$PWD/final.txt"
mkdir -p pids
job=$(submitTemplate "$templates/multi-node.sbatch" --nodes=2 --ntasks-per-node=2 --gpus-per-node=2)
training() { [[ $(countFiles "pids/phase-*") -eq 4 ]] && [[ -s pids/phase-0 && -s pids/phase-3 ]]; }
waitFor 90 "4 ranks to train" training
sleep 1
scancel --signal=TERM "$job" || fail "scancel --signal=TERM $job"
state=$(waitJobEnd "$job" 150)
log=$(jobOutput "$job")
expect test "$state" = COMPLETED
expect test "$(jobField "$job" Restarts)" = 1
grep -q "preemption: SIGTERM received on rank [0-3] .* stop agreed at step [0-9]*; checkpoint $out/checkpoint-[0-9]* durable" "$log" ||
  fail "no preemption line in $log"
step=$(sed -n 's/.*stop agreed at step \([0-9]*\);.*/\1/p' "$log" | head -1)
grep -q "resumed from $out/checkpoint-$step at step $step" "$log" ||
  fail "the requeued run did not resume from checkpoint-$step"
grep -q "4 ranks x 1 accumulation" "$log" || fail "not one 4-rank world"
expect test ! -e "$out/PREEMPTED"
python3 "$compare" "$PWD/ref.txt" "$PWD/final.txt" --params-only || fail "final parameters differ"
echo "ok   preempted at step $step, requeued, resumed, final parameters equal the uninterrupted run"
