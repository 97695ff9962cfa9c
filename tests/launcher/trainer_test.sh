#!/usr/bin/env bash
# `cohort run -np 4` with the real Trainer (issue 8):
#  preempt  SIGTERM to the launcher: every rank gets the preemption signal, the JIT
#           checkpoint (1 GiB of state, kill_wait 1 s: well past mpirun's own 1 s SIGTERM ->
#           SIGKILL) completes and everything exits 0;
#  restart  --max-restarts 1 after rank 2 SIGKILLs itself at step 12: the job is relaunched,
#           resumes from checkpoint-10 and ends with the parameters of an uninterrupted run.
# Usage: trainer_test.sh preempt|restart COHORT PROBE COMPARE_SCRIPT MPIEXEC [FLAGS...]
set -uo pipefail
mode=$1 cohort=$2 probe=$3 compare=$4; shift 4
mpi=("$@")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--max_steps=20 --logging_steps=1 --learning_rate=0.05 --seed=7 --report_to=none
        --per_device_train_batch_size=3 --enable_jit_checkpoint=true --jit_kill_wait=1)
fail() { echo "FAIL $*"; exit 1; }

case $mode in
  preempt)
    mkdir -p "$tmp/pids"
    "$cohort" run -np 4 -- "$probe" "${common[@]}" --max_steps=100000 --save_strategy=no \
      --probe-step-ms=50 --probe-ballast-mb=1024 --output_dir="$tmp/out" \
      --probe-pid-dir="$tmp/pids" > "$tmp/run.log" 2>&1 &
    job=$!
    for _ in $(seq 1 600); do
      [[ -s $tmp/pids/phase-0 && -s $tmp/pids/phase-3 ]] && break; sleep 0.1
    done
    sleep 1
    t0=$(date +%s.%N)
    kill -TERM $job
    wait $job; rc=$?
    t=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
    [[ $rc -eq 0 ]] || { tail -20 "$tmp/run.log"; fail "cohort run exited $rc"; }
    n=$(grep -c "rank [0-3]: SIGTERM received" "$tmp/run.log")
    [[ $n -eq 4 ]] || { grep "received" "$tmp/run.log"; fail "$n of 4 ranks saw the signal"; }
    line=$(grep "preemption: SIGTERM received" "$tmp/run.log") || fail "no preemption line"
    step=$(sed -n 's/.*stop agreed at step \([0-9]*\);.*/\1/p' <<< "$line")
    [[ $(cat "$tmp/out/PREEMPTED") == "checkpoint-$step" ]] || fail "PREEMPTED: $(cat "$tmp/out/PREEMPTED")"
    "$cohort" ckpt verify "$tmp/out/checkpoint-$step" > /dev/null || fail "checkpoint-$step does not verify"
    echo "ok   SIGTERM to cohort run: 4/4 ranks signalled, checkpoint-$step (1 GiB) durable, exit 0 after ${t} s"
    echo "     $(sed 's/.*preemption: //' <<< "$line")"
    ;;
  restart)
    "${mpi[@]}" -n 4 "$probe" "${common[@]}" --save_strategy=no --output_dir="$tmp/ref" \
      --probe-out="$tmp/ref.txt" > "$tmp/ref.log" 2>&1 || { tail "$tmp/ref.log"; fail "reference run"; }
    "$cohort" run -np 4 --max-restarts 1 -- "$probe" "${common[@]}" --save_steps=5 \
      --resume_from_checkpoint=true --probe-kill-at=12:2 --output_dir="$tmp/out" \
      --probe-out="$tmp/out.txt" > "$tmp/run.log" 2>&1
    rc=$?
    [[ $rc -eq 0 ]] || { tail -20 "$tmp/run.log"; fail "cohort run exited $rc"; }
    grep -q "rank 2 .*failed first.*signal 9\|rank 2 .*failed first.*SIGKILL" "$tmp/run.log" ||
      { grep -i "fail\|restart" "$tmp/run.log"; fail "the first failure (rank 2, SIGKILL) is not named"; }
    grep -qi "restart" "$tmp/run.log" || fail "no restart reported"
    grep -q "resumed from $tmp/out/checkpoint-10 at step 10" "$tmp/run.log" || fail "did not resume from checkpoint-10"
    python3 "$compare" "$tmp/ref.txt" "$tmp/out.txt" --params-only || fail "final parameters differ"
    echo "ok   --max-restarts 1: rank 2 SIGKILLed at step 12, relaunched, resumed from checkpoint-10, same final parameters"
    ;;
esac
