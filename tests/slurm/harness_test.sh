#!/usr/bin/env bash
# shellcheck disable=SC2016  # the bash -c scripts expand their own variables
# The local Slurm harness itself: `slurm-local start` brings up munged, slurmctld and slurmd
# n1/n2 with both nodes idle; `stop` ends exactly the recorded daemons, a running job's
# processes included, and leaves no process behind; with-slurm propagates the command's
# exit code and stops the cluster, even when it is itself SIGKILLed (watchdog).
#   harness_test.sh WORKDIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$1
rm -rf "$work"
mkdir -p "$work"
SECONDS=0

fail() {
  echo "FAIL: $*" >&2
  for f in "$work"/*/log/*.log; do [[ -f $f ]] && { echo "---- $f"; tail -n 15 "$f"; } >&2; done
  exit 1
}

# Processes still running (not zombies) whose environment names cluster dir $1: the
# daemons (COHORT_SLURM_LOCAL), their slurmstepd, and job tasks (SLURM_CONF).
clusterProcs() {
  local p
  for p in /proc/[0-9]*; do
    [[ ${p#/proc/} == "$$" || ${p#/proc/} == "$BASHPID" ]] && continue
    grep -qzxF -e "COHORT_SLURM_LOCAL=$1" -e "SLURM_CONF=$1/slurm.conf" "$p/environ" 2>/dev/null ||
      continue
    grep -q '^State:.*Z' "$p/status" 2>/dev/null && continue
    echo "${p#/proc/} $(tr '\0' ' ' 2>/dev/null <"$p/cmdline")"
  done
}
alive() { [[ -d /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# ---- start, a job, stop ----
dir=$work/cluster
trap '"$here/slurm-local" stop "$dir" >/dev/null 2>&1' EXIT
"$here/slurm-local" start "$dir" || fail "start"
pids=()
for name in munged slurmctld slurmd-n1 slurmd-n2; do
  pid=$(cat "$dir/pids/$name" 2>/dev/null) || fail "no PID recorded for $name"
  alive "$pid" || fail "$name (PID $pid) is not running"
  pids+=("$pid")
done
# Not exported into this shell: its own processes would then look like cluster processes.
conf=$("$here/slurm-local" env "$dir" | sed -n 's/^export SLURM_CONF=//p')
[[ $conf == "$dir/slurm.conf" ]] || fail "env printed SLURM_CONF=$conf"
sl() { SLURM_CONF=$conf "$@"; }
states=$(sl sinfo -h -N -o '%N=%t' | sort -u | tr '\n' ' ')
[[ $states == "n1=idle n2=idle " ]] || fail "sinfo: $states"
if "$here/slurm-local" start "$dir" 2>/dev/null; then fail "a second start on a live dir succeeded"; fi
job=$(sl sbatch --parsable -N2 --ntasks-per-node=1 -o "$work/sleep-%j.out" --wrap "srun sleep 300") ||
  fail "sbatch"
tasks() {
  local procs
  procs=$(clusterProcs "$dir")
  grep -c '/sleep 300' <<<"$procs"
}
for ((t = 0; t < 240; t++)); do  # up to 60 s: room for a busy machine
  [[ $(tasks) -eq 2 ]] && break
  sleep 0.25
done
[[ $(tasks) -eq 2 ]] || fail "job $job: not one task on each node: $(clusterProcs "$dir")"
"$here/slurm-local" stop "$dir" || fail "stop"
for pid in "${pids[@]}"; do alive "$pid" && fail "PID $pid still runs after stop"; done
left=$(clusterProcs "$dir")
[[ -z $left ]] || fail "processes left behind after stop: $left"
"$here/slurm-local" stop "$dir" || fail "a second stop is not a no-op"

# ---- with-slurm: exit code, environment, cleanup ----
SLURM_LOCAL_PARENT=$work "$here/with-slurm" bash -c \
  'echo "$COHORT_SLURM_LOCAL_DIR" >"$1"; squeue >/dev/null && exit 7' _ "$work/dir7"
rc=$?
[[ $rc -eq 7 ]] || fail "with-slurm returned $rc, not the command's 7"
d7=$(cat "$work/dir7")
[[ -n $d7 && -f $d7/slurm.conf ]] || fail "with-slurm: no cluster dir seen by the command"
left=$(clusterProcs "$d7")
[[ -z $left ]] || fail "processes left behind by with-slurm: $left"
SLURM_LOCAL_PARENT=$work "$here/with-slurm" true || fail "with-slurm true failed"

# ---- with-slurm SIGKILLed: the watchdog stops the cluster ----
SLURM_LOCAL_PARENT=$work "$here/with-slurm" bash -c 'echo "$COHORT_SLURM_LOCAL_DIR" >"$1"; exec sleep 300' \
  _ "$work/dirk" >/dev/null 2>&1 &
wpid=$!
for ((t = 0; t < 240; t++)); do [[ -s $work/dirk ]] && break; sleep 0.25; done
dk=$(cat "$work/dirk" 2>/dev/null) || fail "with-slurm did not start the command"
procs=$(clusterProcs "$dk")
sleeper=$(awk '/ sleep 300/ {print $1}' <<<"$procs")
kill -KILL "$wpid"
wait "$wpid" 2>/dev/null
[[ -n $sleeper ]] && kill "$sleeper" 2>/dev/null  # the command itself is the caller's to end
for ((t = 0; t < 120; t++)); do
  [[ -z $(clusterProcs "$dk") ]] && break
  sleep 0.25
done
left=$(clusterProcs "$dk")
[[ -z $left ]] || fail "watchdog did not stop the cluster of a SIGKILLed with-slurm: $left"
echo "PASS: start/stop/env, no process left (job tasks included), exit code and watchdog (${SECONDS}s)"
