#!/usr/bin/env bash
# Stop signals during start-up (issue 21): SIGTERM, SIGINT and SIGUSR1, sent to `cohort run`
# or to one rank (its program, or its wrapper for SIGINT) at moments over the first seconds
# of a 2-rank train_lm job, from the launcher's first instruction on. Every run must end
# with exit 0 and either a checkpoint that verifies (named by PREEMPTED) or the line
# "stopped before the first step". No timing is asserted: each run only has a generous
# hang-detecting limit.
# Usage: startup_signal_test.sh COHORT TRAIN_LM CONFIG
set -uo pipefail
cohort=$(readlink -f "$1")
train_lm=$(readlink -f "$2")
config=$(readlink -f "$3")
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-startup-signal.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
runs=0
limit=${STARTUP_SIGNAL_LIMIT_S:-240}  # seconds a run may take (a lower value checks old code quickly)

now() { date +%s.%N; }
later() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }  # A > B
# Sleeps until DELAY seconds after T0 (at once when that has passed).
sleep_until() {  # T0 DELAY
  local left
  left=$(awk -v t0="$1" -v d="$2" -v n="$(now)" 'BEGIN { x = t0 + d - n; print (x > 0 ? x : 0) }')
  sleep "$left"
}
# True once PID has SIGTERM blocked (cohort's startup hook ran: its first instruction).
# While it waits in sigtimedwait the kernel shows the waited signals as unblocked.
term_blocked() {
  local mask
  mask=$(sed -n 's/^SigBlk:\s*//p' "/proc/$1/status" 2> /dev/null) || return 1
  [[ -n $mask ]] && (((0x$mask >> 14) & 1)) && return 0
  [[ $(cat "/proc/$1/wchan" 2> /dev/null) == do_sigtimedwait* ]]
}
wait_for() {  # SECONDS CMD...: polls every 10 ms
  local end
  end=$(awk -v n="$(now)" -v s="$1" 'BEGIN { printf "%.3f", n + s }')
  shift
  until "$@"; do
    later "$(now)" "$end" && return 1
    sleep 0.01
  done
}
# Running, not a zombie waiting for `wait`.
alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:\s*Z' "/proc/$1/status" 2> /dev/null; }
dead() { ! alive "$1"; }

# run_case SIG TARGET DELAY. TARGET: cohort | program (rank 1's program) | wrapper (rank 1's
# `cohort _rank-exec`). DELAY: seconds after cohort's first instruction; a rank is signalled
# at that moment or as soon as it exists.
run_case() {
  local sig=$1 target=$2 delay=$3
  runs=$((runs + 1))
  local n=$runs out=$work/out$runs run=$work/run$runs log=$work/log$runs pid rc t0 victim=
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$work" TMPDIR="$work" OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 "$cohort" run -np 2 --grace-period 150 --run-dir "$run" -- \
    "$train_lm" --config "$config" --output_dir="$out" --max_steps=100000 \
    --save_strategy=no --logging_steps=100000 --jit_kill_wait=0.5 > "$log" 2>&1 &
  pid=$!
  if ! wait_for 30 term_blocked "$pid"; then
    echo "FAIL case $n: cohort never blocked SIGTERM"
    failures=$((failures + 1))
  fi
  t0=$(now)
  if [[ $target == cohort ]]; then
    sleep_until "$t0" "$delay"
    victim=$pid
  else
    if wait_for 120 test -s "$run/attempt-0/rank-1.started"; then
      sleep_until "$t0" "$delay"
      victim=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' "$run/attempt-0/rank-1.started")
      if [[ $target == program ]]; then
        local child=""
        # shellcheck disable=SC2016  # expanded by eval
        wait_for 10 eval 'child=$(pgrep -P "$victim" | head -n 1); [[ -n $child ]]'
        victim=$child
      fi
    fi
  fi
  local at
  at=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
  if [[ -n $victim ]]; then kill -"$sig" "$victim"; fi
  # A run ends well within the grace period; the limit only catches a hang.
  if ! wait_for "$limit" dead "$pid"; then
    echo "FAIL case $n: SIG$sig to $target at ${at}s: still running after $limit s"
    kill -TERM "$pid"; sleep 1; kill -TERM "$pid"; sleep 12; kill -KILL "$pid" 2> /dev/null
  fi
  wait "$pid"
  rc=$?
  local what=""
  if [[ -z $victim ]]; then
    what="rank 1 never started"
  elif [[ $rc -ne 0 ]]; then
    what="exit $rc"
  elif grep -q "stopped before the first step" "$log"; then
    [[ ! -e $out/checkpoint-0 ]] || what="a checkpoint-0 beside 'stopped before the first step'"
    [[ -z $what ]] && what="ok: stopped before the first step"
  elif [[ -f $out/PREEMPTED ]]; then
    local ckpt
    ckpt=$(head -n 1 "$out/PREEMPTED")
    if [[ $ckpt =~ ^checkpoint-[1-9][0-9]*$ ]] && "$cohort" ckpt verify "$out/$ckpt" > "$log.verify" 2>&1; then
      what="ok: $ckpt verified"
    else
      what="PREEMPTED names '$ckpt', which does not verify: $(tail -n 2 "$log.verify" 2> /dev/null)"
    fi
  else
    what="exit 0 but neither a checkpoint nor 'stopped before the first step'"
  fi
  if [[ $what == ok:* ]]; then
    echo "ok   case $n: SIG$sig to $target at ${at}s: exit 0, ${what#ok: }"
  else
    echo "FAIL case $n: SIG$sig to $target at ${at}s: $what"
    echo "---- log of case $n"
    tail -n 30 "$log"
    echo "----"
    failures=$((failures + 1))
  fi
  rm -rf "$out" "$run"
}

start=$(now)
# Moments over the first seconds: the launcher planning and starting mpirun, mpirun
# starting the wrappers, the programs loading LibTorch and MPI, evaluating, first steps.
run_case TERM cohort 0
run_case INT cohort 0.02
run_case USR1 cohort 0.1
run_case TERM program 0
run_case INT wrapper 0.2
run_case USR1 program 0.4
run_case TERM cohort 0.3
run_case INT cohort 0.6
run_case USR1 cohort 1
run_case TERM program 1.2
run_case INT wrapper 1.8
run_case TERM cohort 2.5
run_case USR1 program 3
run_case INT cohort 4
run_case TERM program 6
echo "$runs runs in $(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }') s," \
  "$failures failed"
[[ $failures -eq 0 && $runs -ge 12 ]]
