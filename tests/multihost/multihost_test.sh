#!/usr/bin/env bash
# Many hosts for real (issue 19): two hosts h0 and h1 as network namespaces (lib.sh), 2 ranks
# each, started by `cohort run -H h0:2,h1:2` through Open MPI's rsh agent; the ranks of
# different hosts talk TCP over the veths. The training program is the checkpoint tests'
# float64 train_probe. One mode per ctest:
#   launch     ranks see hosts h0,h0,h1,h1; TCP connections run between the hosts; the run
#              ends with the parameters of a one-host mpirun -np 4 run (1e-10)
#   slow       delay + pacing, packet loss (wire.py) and a kernel rate limit (tc tbf) switched
#              on mid-training: every run ends with the clean run's parameters (1e-10)
#   partition  h1's link goes down mid-step
#   lost_host  h1 dies mid-step (link down, then SIGKILL of everything in it)
#   save       h1's link goes down while checkpoint-20 is being written
#   eval       h1's link goes down while rank 2 evaluates
#   nodelocal  each host sees its own output_dir (bind mounts): refused without
#              save_on_each_node; with it, one checkpoint copy per host, exact resume
#   slurm      the local Slurm with slurmd n1 in h0 and n2 in h1: an sbatch job of 2 x 2
#              tasks runs cohort run (srun), ranks on n1,n1,n2,n2, one-host parameters
#   elastic    h1 is lost and gone; --max-restarts 1 --min-np 2 finishes on h0 alone with
#              the global batch of 4 ranks, equal to an uninterrupted 4-rank run
#   For partition, lost_host, save and eval: the ranks of h0 end within the collective timeout (15 s) with an
#   error naming the collective, the ranks that did not arrive and their host; h1's ranks
#   (when alive) end by themselves too; every checkpoint either verifies or is marked
#   incomplete, and the newest complete one verifies.
# Usage: multihost_test.sh MODE COHORT PROBE COMPARE_SCRIPT MPIEXEC [FLAGS...]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
mhRunLocked "$0" "$@"
mh_root=$(cd "$(dirname "$0")/../.." && pwd)
mode=$1 cohort=$2 probe=$3 compare=$4
shift 4
mpi=("$@")

timeout_s=15
work=/tmp/cohort-multihost-$mode
mhInit 2 "$work"
mhMpiEnv
export COHORT_COLLECTIVE_TIMEOUT=$timeout_s
# A save's agreement waits on its own timeout (dist::Consensus, default 1800 s): bounded the
# same, so that a partition mid-save ends as fast as one mid-step.
export COHORT_CONSENSUS_TIMEOUT=$timeout_s
cd "$work" || exit 1
run_args=()  # extra `cohort run` options
common=(--logging_steps=1 --learning_rate=0.05 --seed=7 --report_to=none
        --per_device_train_batch_size=3)

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# cohort run on h0:2,h1:2; NAME names the output dir, the log and the run dir.
launch() {
  local name=$1
  shift
  MH_FAIL_LOG=$work/$name.log
  "$cohort" run -H h0:2,h1:2 "${run_args[@]}" --run-dir "$work/$name.runs" -- "$probe" "${common[@]}" \
    --output_dir="$work/$name" "$@" > "$work/$name.log" 2>&1
}

waitFor() {  # waitFor SECONDS WHAT CMD...: poll CMD every 0.05 s
  tryFor "$@" || fail "waited $1 s for $2"
}

# tryFor SECONDS WHAT CMD...: as waitFor, but returns 1 instead of failing; with
# WAIT_JOB=PID it gives up as soon as that job has ended.
tryFor() {
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 20; i++)); do
    "$@" && return 0
    if [[ -n ${WAIT_JOB:-} ]] && ! kill -0 "$WAIT_JOB" 2> /dev/null; then
      echo "     the run ended before $what" >&2
      return 1
    fi
    sleep 0.05
  done
  return 1
}

reference() {  # the same training with every rank on one host (shared memory)
  "${mpi[@]}" -n 4 "$probe" "${common[@]}" --output_dir="$work/ref" --save_strategy=no "$@" \
    > "$work/ref.log" 2>&1 || { tail "$work/ref.log"; fail "reference run"; }
}

# Established TCP connections between the two hosts' addresses, seen from h0.
crossHostTcp() {
  ip netns exec "$(mhNs h0)" ss -Htn state established 2> /dev/null |
    awk -v a="$(mhIp h0)" -v b="$(mhIp h1)" 'index($0, a":") && index($0, b":")' | wc -l
}

testLaunch() {
  reference --max_steps=12 --probe-out="$work/ref.txt"
  COHORT_LOG_LEVEL=info launch run --max_steps=12 --save_steps=6 --probe-step-ms=150 \
    --probe-out="$work/run.txt" &
  local job=$! tcp=0 n
  while kill -0 $job 2> /dev/null; do
    n=$(crossHostTcp)
    ((n > tcp)) && tcp=$n
    sleep 0.2
  done
  wait $job || { tail -30 run.log; fail "cohort run -H h0:2,h1:2 exited $?"; }
  local r host
  for r in 0 1 2 3; do
    host=h$((r / 2))
    grep -q "\[rank $r@$host\]" run.log ||
      { grep "rank $r" run.log | head -3; fail "no log line of rank $r tagged with host $host"; }
    grep -q "\[rank $r@h$((1 - r / 2))\]" run.log && fail "rank $r also logged from the other host"
  done
  grep -q "4 ranks on 2 hosts: h0 (ranks 0-1), h1 (ranks 2-3)" run.log ||
    { grep "hosts" run.log; fail "the start-up line does not name the hosts of the ranks"; }
  ((tcp > 0)) || fail "no TCP connection between h0 and h1 while the job ran (shared memory across hosts?)"
  # A group across hosts reduces in COHORT_ALLREDUCE_SLICE_BYTES_CROSS_HOST slices (8 MiB),
  # one on one host (the reference) in the cache-sized ones.
  grep -q "\[rank 0@h0\].*all-reduce slices of 8388608 bytes: the group spans hosts" run.log ||
    fail "rank 0 did not switch to the cross-host all-reduce slice"
  grep -q "group spans hosts" "$work/ref.log" && fail "the one-host reference run says its group spans hosts"
  python3 "$compare" "$work/ref.txt" "$work/run.txt" --params-only ||
    fail "parameters differ from the one-host run"
  "$cohort" ckpt verify "$work/run/checkpoint-12" > /dev/null || fail "checkpoint-12 does not verify"
  echo "ok   cohort run -H h0:2,h1:2: ranks 0,1 on h0 and 2,3 on h1, $tcp TCP connections between the hosts, parameters equal to one host's (mpirun -np 4), cross-host slices"
}

# Starts a 12-step run, switches FAULT... on at step 2 and off again after the run.
faultyRun() {
  local name=$1 kind=$2
  shift 2
  local t0
  t0=$(now)
  launch "$name" --max_steps=12 --save_strategy=no --probe-out="$work/$name.txt" &
  local job=$!
  waitFor 60 "step 2 of $name" grep -q "step 2/12" "$work/$name.log"
  case $kind in
    wire) mhWireStart h1 "$@" ;;
    tbf) mhRate h1 "$@" ;;
  esac
  wait $job || { mhWireStop; tail -30 "$work/$name.log"; fail "$name: cohort run exited non-zero"; }
  case $kind in
    wire)
      mhWireStop
      tail -1 "$work/wire.log" | grep -q "forwarded [1-9]" || fail "$name: no packet took the faulty wire"
      ;;
    tbf)
      tc -s qdisc show dev "$(mhVeth h1)" | grep -q "Sent [1-9]" || fail "$name: nothing went through tbf"
      mhClear h1
      ;;
  esac
  python3 "$compare" "$work/clean.txt" "$work/$name.txt" ||
    fail "$name: parameters or logged losses differ from the clean run"
  echo "ok   $name ($kind $*): same parameters and losses as the clean run, $(since "$t0") s"
}

testSlow() {
  local t0
  t0=$(now)
  launch clean --max_steps=12 --save_strategy=no --probe-out="$work/clean.txt" ||
    { tail -30 clean.log; fail "clean run"; }
  echo "     clean run: $(since "$t0") s"
  faultyRun delay wire --delay-ms 25 --rate-mbit 20
  faultyRun loss wire --loss 0.05
  grep -q "dropped [1-9]" "$work/wire.log" || fail "wire.py dropped no packet: loss not injected"
  faultyRun rate tbf 5mbit
  sed 's/^/     /' "$work/wire.log"
}

# The fault tests: start a long run, wait for TRIGGER, inject FAULT, then check the ends.
faultTest() {
  local trigger=$1 fault=$2
  shift 2
  local job attempt i
  # The fault needs a complete checkpoint-10 first. A run that does not get there (a stalled
  # start-up was seen once in CI, after 90 s, with no log kept) is shown and started once
  # more: the fault paths are what this test is about, and a second stall still fails.
  for attempt in 1 2; do
    rm -rf "$work/pids" "$work/run" "$work/run.runs"
    mkdir -p "$work/pids"
    launch run --max_steps=400 --save_steps=10 --probe-step-ms=100 --probe-pid-dir="$work/pids" "$@" &
    job=$!
    WAIT_JOB=$job tryFor 90 "checkpoint-10" test -e "$work/run/checkpoint-10/manifest.pb" -a \
      ! -e "$work/run/checkpoint-10/checkpoint-is-incomplete.txt" && break
    echo "     attempt $attempt: no complete checkpoint-10 after 90 s; the run's log:" >&2
    tail -40 "$work/run.log" | sed 's/^/       /' >&2
    ls -la "$work/run" "$work/run/checkpoint-10" 2> /dev/null | sed 's/^/       /' >&2
    ((attempt == 1)) || fail "no complete checkpoint-10 in two attempts"
    pkill -TERM -P $job 2> /dev/null
    for ((i = 0; i < 300; i++)); do kill -0 $job 2> /dev/null && sleep 0.1; done
    pkill -KILL -P $job 2> /dev/null
    wait $job 2> /dev/null
    cd / && mhCleanupAll
    mhInit 2 "$work"
    cd "$work" || exit 1
  done
  waitFor 90 "$trigger" $trigger
  local t0 t_err="" t_end
  t0=$(now)
  case $fault in
    partition) mhPartition h1 ;;
    kill) mhKillHost h1 ;;
  esac
  echo "     $fault of h1 ${SECONDS} s into the test, at $(grep -o 'step [0-9]*/400' run.log | tail -1) (phase of rank 2: $(cat pids/phase-2 2> /dev/null))"
  while kill -0 $job 2> /dev/null; do
    [[ -z $t_err ]] && grep -q "error (rank 0)" run.log && t_err=$(since "$t0")
    sleep 0.1
  done
  wait $job
  local rc=$?
  t_end=$(since "$t0")
  [[ -n $t_err ]] || t_err=$t_end
  ((rc != 0)) || fail "cohort run exited 0 after the $fault"
  # Within the timeout: the peers are asked where they are during its last 5 s, so the
  # error comes at the deadline (+3 s: the step's collective may start after the fault, the
  # line has to reach the log).
  python3 -c "import sys; sys.exit(not float(sys.argv[1]) <= $timeout_s + 3)" "$t_err" ||
    fail "rank 0's error came $t_err s after the $fault (collective timeout $timeout_s s)"
  # The survivors' errors: the collective, the missing ranks, their host.
  local r line
  for r in 0 1; do
    line=$(grep "error (rank $r)" run.log | head -1)
    [[ -n $line ]] || { tail -30 run.log; fail "rank $r (h0) printed no error"; }
    grep -q "on h0: .*timed out after $timeout_s s" <<< "$line" || fail "rank $r: $line"
    grep -q "did not arrive: rank 2 (.*), rank 3 (" <<< "$line" || fail "rank $r does not name ranks 2 and 3: $line"
    grep -q "h1 (ranks 2-3)" <<< "$line" || fail "rank $r does not name host h1: $line"
  done
  grep -q "cohort run: rank [0-3] (h[01]) failed first" run.log || fail "the launcher's summary names no host"
  # h1's ranks, when alive, end by themselves (their own timeout): their wrappers' records.
  if [[ $fault == partition ]]; then
    for r in 2 3; do
      waitFor $((timeout_s + 15)) "rank $r's exit record" test -s "$work/run.runs/attempt-0/rank-$r.status"
      grep -q "outcome=exit value=1" "$work/run.runs/attempt-0/rank-$r.status" ||
        fail "rank $r on h1: $(cat "$work/run.runs/attempt-0/rank-$r.status")"
    done
  fi
  checkpointsSane
  echo "     test done after ${SECONDS} s"
  echo "ok   $fault of h1: rank 0's error after $t_err s, cohort run exit $rc after $t_end s"
  echo "     $(grep -m1 "error (rank 0)" run.log | cut -c1-400)"
  echo "     $(grep "failed first" run.log)"
}

# Every checkpoint verifies or is incomplete (sentinel or no manifest); the newest complete
# one verifies.
checkpointsSane() {
  local d newest="" listing
  for d in "$work"/run/checkpoint-*; do
    if [[ -e $d/checkpoint-is-incomplete.txt || ! -e $d/manifest.pb ]]; then
      echo "     $(basename "$d"): incomplete (sentinel or no manifest)"
    else
      "$cohort" ckpt verify "$d" > /dev/null || fail "$(basename "$d") looks complete but does not verify"
      newest=$d
    fi
  done
  [[ -n $newest ]] || fail "no complete checkpoint left"
  listing=$("$cohort" ckpt ls "$work/run" 2>&1)
  grep -Eq "^${newest##*-} +valid .*latest valid" <<< "$listing" ||
    { echo "$listing"; fail "cohort ckpt ls does not name $(basename "$newest") the latest valid"; }
  echo "     newest complete: $(basename "$newest") (verifies)"
}

phaseIs() { [[ $(cat "$work/pids/phase-2" 2> /dev/null) == "$1" ]]; }
stepAtLeast() { [[ $(grep -o 'step [0-9]*/400' "$work/run.log" | tail -1 | tr -dc '0-9/' | cut -d/ -f1) -ge $1 ]]; }
savingCheckpoint20() { [[ -e $work/run/checkpoint-20/checkpoint-is-incomplete.txt ]]; }
midStep13() { stepAtLeast 13 && phaseIs F; }

# Lost host, then `cohort run --max-restarts 1 --min-np 2`: no rank of h1 leaves an exit
# record (the host is gone with its wrappers), so the launcher restarts at once on h0 alone
# (2 ranks) and tells the program the launched size (COHORT_ELASTIC_WORLD_SIZE=4); the
# Trainer doubles gradient_accumulation_steps, keeping the global batch of 4 x 3 samples, and
# resumes from checkpoint-10 (the newest valid one), resharded to 2 ranks. The run must end
# with the parameters and logged losses of an uninterrupted 4-rank run (1e-10).
testElastic() {
  reference --max_steps=20 --probe-out="$work/ref.txt"
  run_args=(--max-restarts 1 --min-np 2)
  launch run --max_steps=20 --save_steps=10 --probe-step-ms=100 --resume_from_checkpoint=true \
    --probe-out="$work/run.txt" &
  local job=$!
  waitFor 90 "step 13" grep -q "step 13/20" "$work/run.log"
  mhKillHost h1
  ip netns del "$(mhNs h1)"
  wait $job || { tail -30 run.log; fail "cohort run --max-restarts 1 --min-np 2 exited $?"; }
  grep -q "restarting the job (restart 1 of 1) as 2 ranks without h1 (no rank there left an exit record: host lost; --min-np 2); the global batch of 4 ranks stays" run.log ||
    { grep "cohort run" run.log; fail "no restart on the surviving host"; }
  grep -q "gradient_accumulation_steps 1 -> 2 keeps the global batch" run.log ||
    { grep -i "accumulation" run.log; fail "the restart on 2 ranks did not raise the accumulation"; }
  grep -q "resumed from $work/run/checkpoint-10 at step 10 .*resharded from 4 to 2 ranks" run.log ||
    { grep "resumed" run.log; fail "the restart did not resume from checkpoint-10 on 2 ranks"; }
  grep -q "global batch changed" run.log && fail "the global batch changed across the restart"
  python3 "$compare" "$work/ref.txt" "$work/run.txt" ||
    fail "the elastic restart ends elsewhere than the uninterrupted 4-rank run"
  echo "ok   lost host h1 at step 13: restart 1 ran on h0 (2 ranks x 2 accumulation) from checkpoint-10; parameters and losses equal the uninterrupted 4-rank run"
}

# Node-local output directories: each host sees its own $work/out (netns_agent.sh bind-mounts
# $work/out.hK over it in a private mount namespace, COHORT_MH_NODE_LOCAL).
#   1. without save_on_each_node the run stops at start-up (no step trained) with an error
#      naming both hosts;
#   2. with it, each host's directory holds a manifest and only its own ranks' shards, both
#      verify with `cohort ckpt verify`;
#   3. resumed on the same hosts from checkpoint-6 (checkpoint-12 removed), the run ends
#      equal to the uninterrupted run of 2. (1e-10, parameters and every logged loss).
testNodeLocal() {
  local out=$work/out rc h s
  export COHORT_MH_NODE_LOCAL=$out
  mkdir -p "$out" "$out.h0" "$out.h1"
  local args=(--max_steps=12 --save_steps=6)
  nodeLocalRun() {  # nodeLocalRun NAME ARGS...: a run whose output_dir is node-local
    local name=$1
    shift
    "$cohort" run -H h0:2,h1:2 --run-dir "$work/$name.runs" -- "$probe" "${common[@]}" \
      --output_dir="$out" "${args[@]}" "$@" > "$work/$name.log" 2>&1
  }
  nodeLocalRun refused
  rc=$?
  ((rc == 2)) || { tail -20 refused.log; fail "node-local output_dir without save_on_each_node: exit $rc, not 2"; }
  grep -q "output_dir $out is not the same directory on every host: h0 (ranks 0-1) and h1 (ranks 2-3) each see a different one" refused.log ||
    { grep -i "error" refused.log | head -5; fail "no error naming the hosts whose output_dir differs"; }
  grep -q "step 1/" refused.log && fail "the run trained before it noticed the node-local output_dir"
  ls -A "$out.h0" "$out.h1" | grep -q "checkpoint\|cohort-storage" && fail "the refused run left files in output_dir"

  nodeLocalRun full --save_on_each_node=true --probe-out="$work/full.txt" ||
    { tail -30 full.log; fail "save_on_each_node run exited $?"; }
  for h in h0 h1; do
    "$cohort" ckpt verify "$out.$h/checkpoint-12" > "$work/verify-$h.txt" 2>&1 ||
      { cat "$work/verify-$h.txt"; fail "$h's checkpoint-12 does not verify with $h's view"; }
  done
  for s in 0 1 2 3; do
    h=h$((s / 2))
    test -f "$out.$h/checkpoint-12/shard-0000$s-of-00004.h5" || fail "shard $s is not on $h"
    test -e "$out.h$((1 - s / 2))/checkpoint-12/shard-0000$s-of-00004.h5" && fail "shard $s is on both hosts"
  done
  # The same run, resumed from checkpoint-6 (checkpoint-12 removed on both hosts).
  rm -rf "$out.h0/checkpoint-12" "$out.h1/checkpoint-12"
  nodeLocalRun resumed --save_on_each_node=true --resume_from_checkpoint=true \
    --probe-out="$work/resumed.txt" || { tail -30 resumed.log; fail "resume on the same hosts exited $?"; }
  grep -q "resumed from $out/checkpoint-6 at step 6" resumed.log || { grep resume resumed.log; fail "did not resume from checkpoint-6"; }
  python3 "$compare" "$work/full.txt" "$work/resumed.txt" ||
    fail "the resumed save_on_each_node run differs from the uninterrupted one"
  unset COHORT_MH_NODE_LOCAL
  echo "ok   node-local output_dir: refused at start-up without save_on_each_node; with it each host holds its 2 shards + a manifest that verify; a resume from checkpoint-6 equals the uninterrupted run"
  echo "     $(grep -m1 "not the same directory" refused.log | cut -c1-300)"
}

# Through the local Slurm, one slurmd per host: tests/slurm/slurm-local runs slurmd n1 in
# h0's namespace and n2 in h1's (SLURM_LOCAL_NETNS; hostnames n1, n2), slurmctld on the
# bridge address. An sbatch job of 2 nodes x 2 tasks runs `cohort run` (srun inside the
# allocation): ranks 0,1 on n1 and 2,3 on n2, TCP between the hosts, and the parameters of a
# one-host mpirun -np 4 run. Holds /tmp/cohort-slurm.lock while its daemons run (the slurm
# tests start daemons too).
testSlurm() {
  local slurm=$mh_root/tests/slurm
  [[ -x $slurm/with-slurm ]] || fail "no $slurm/with-slurm"
  reference --max_steps=12 --probe-out="$work/ref.txt"
  cat > "$work/job.sh" << JOB
#!/bin/bash
echo "batch host \$(hostname) nodes \$SLURM_JOB_NODELIST tasks \$SLURM_TASKS_PER_NODE"
COHORT_LOG_LEVEL=info "$cohort" run -- "$probe" ${common[*]} --output_dir="$work/run" \
  --max_steps=12 --save_steps=6 --probe-step-ms=60 --probe-out="$work/run.txt"
echo "cohort run exited \$?"
JOB
  cat > "$work/inner.sh" << 'INNER'
set -u
work=$1
job=$(sbatch --parsable --chdir="$work" --time=10 --nodes=2 --ntasks-per-node=2 \
  --cpus-per-task=1 --output="$work/slurm.out" "$work/job.sh") || exit 1
tcp=0
for ((i = 0; i < 900; i++)); do
  [[ -z $(squeue -h -j "${job%%;*}" 2> /dev/null) ]] && break
  n=$(ip netns exec cmh-h0 ss -Htn state established 2> /dev/null |
    awk '/10\.77\.0\.1:/ && /10\.77\.0\.2:/' | wc -l)
  ((n > tcp)) && tcp=$n
  sleep 0.2
done
echo "$tcp" > "$work/tcp"
[[ -z $(squeue -h -j "${job%%;*}" 2> /dev/null) ]] || { echo "job still running after 180 s"; exit 1; }
INNER
  SLURM_LOCAL_NETNS="$(mhNs h0)=$(mhIp h0) $(mhNs h1)=$(mhIp h1) $MH_SUBNET.254" \
    SLURM_LOCAL_GPUS=0 flock -w 300 /tmp/cohort-slurm.lock \
    "$slurm/with-slurm" bash "$work/inner.sh" "$work" > "$work/with-slurm.log" 2>&1 ||
    { cat "$work/with-slurm.log"; tail -30 "$work/slurm.out" 2> /dev/null; fail "the job under the local Slurm with a slurmd per host"; }
  local out=$work/slurm.out
  grep -q "^batch host n1 nodes n\[1-2\] tasks 2(x2)" "$out" || { head -3 "$out"; fail "the batch script did not run on n1 of n[1-2]"; }
  grep -q "^cohort run exited 0" "$out" || { tail -30 "$out"; fail "cohort run under Slurm failed"; }
  grep -q "4 ranks on 2 hosts: n1 (ranks 0-1), n2 (ranks 2-3)" "$out" ||
    { grep "hosts" "$out"; fail "the ranks did not run on the two slurmd hosts"; }
  local r
  for r in 1 2 3; do
    grep -q "\[rank $r@n$((r / 2 + 1))\]" "$out" || fail "no log line of rank $r tagged with host n$((r / 2 + 1))"
  done
  (($(cat "$work/tcp") > 0)) || fail "no TCP connection between h0 and h1 while the job ran"
  python3 "$compare" "$work/ref.txt" "$work/run.txt" --params-only ||
    fail "parameters under Slurm differ from the one-host run"
  echo "ok   sbatch -N2 --ntasks-per-node=2 on slurmd n1 (in h0) and n2 (in h1): cohort run via srun, ranks 0,1 on n1 and 2,3 on n2, $(cat "$work/tcp") TCP connections between the hosts, parameters equal to one host's"
}

case $mode in
  launch) testLaunch ;;
  slurm) testSlurm ;;
  nodelocal) testNodeLocal ;;
  elastic) testElastic ;;
  slow) testSlow ;;
  partition) faultTest midStep13 partition ;;
  lost_host) faultTest midStep13 kill ;;
  save) faultTest savingCheckpoint20 partition --probe-ballast-mb=48 ;;
  eval)
    faultTest "phaseIs E" partition --eval_strategy=steps --eval_steps=15 --probe-data-ms=40
    ;;
  *) fail "unknown mode $mode" ;;
esac
