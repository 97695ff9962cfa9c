#!/usr/bin/env bash
# End-to-end tests of `cohort run` (issue 8). One function per CTest test.
# Usage: launcher_test.sh CASE COHORT PROBE [EXTRA]
#   COHORT: the built `cohort` executable; PROBE: tests/launcher/rank_probe; EXTRA: a further
#   program the case needs (fatal_line: tests/trainer's config_probe).
# Each check prints "ok ..." or "FAIL ..."; the test fails when any check failed.
set -uo pipefail
case_name=$1
cohort=$(readlink -f "$2")
probe=$(readlink -f "$3")
extra=${4:+$(readlink -f "$4")}  # a further program some cases need
work=$(mktemp -d "${TMPDIR:-/tmp}/cohort-launcher-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
real_mpirun=$(command -v mpirun || true)
base_path=/usr/local/bin:/usr/bin:/bin

check() {  # DESC COMMAND...: passes when COMMAND succeeds
  local desc=$1
  shift
  if "$@"; then
    echo "ok   $desc"
  else
    echo "FAIL $desc"
    failures=$((failures + 1))
  fi
}
has() { grep -qF -- "$2" <<< "$1"; }       # TEXT LITERAL
lacks() { ! grep -qF -- "$2" <<< "$1"; }   # TEXT LITERAL
show() { echo "---- $1"; cat; echo "----"; }

# Runs `cohort ARGS` with exactly the environment given before "--" (env -i).
# Sets $out (stdout), $err (stderr) and $rc.
run_cohort() {
  local envs=()
  while [[ $1 != "--" ]]; do envs+=("$1"); shift; done
  shift
  env -i HOME="$work" TMPDIR="$work" "${envs[@]}" "$cohort" "$@" > "$work/stdout" 2> "$work/stderr"
  rc=$?
  out=$(< "$work/stdout")
  err=$(< "$work/stderr")
}

# Waits up to 60 s for COUNT files named PREFIX-* in DIR.
wait_for_files() {  # DIR PREFIX COUNT
  local i
  for ((i = 0; i < 600; i++)); do
    [[ $(find "$1" -name "$2-*" 2> /dev/null | wc -l) -ge $3 ]] && return 0
    sleep 0.1
  done
  return 1
}

now() { date +%s.%N; }
no_process() { ! pgrep -f -- "$1" > /dev/null; }  # no live process has PATTERN in its command
# No live process has PATTERN within 20 s (a hang detector: a busy machine reaps slowly).
gone() {
  local i
  for ((i = 0; i < 200; i++)); do no_process "$1" && return 0; sleep 0.1; done
  return 1
}
elapsed_below() { awk -v a="$1" -v b="$2" -v max="$3" 'BEGIN { exit !(b - a < max) }'; }
elapsed_at_least() { awk -v a="$1" -v b="$2" -v min="$3" 'BEGIN { exit !(b - a >= min) }'; }

test_dry_run_mpirun() {
  local p=PATH=$base_path
  run_cohort "$p" NCCL_DEBUG=INFO COHORT_LOG_LEVEL=debug LD_LIBRARY_PATH=/opt/lib \
    OPENBLAS_VERBOSE=2 UNRELATED_VAR=1 -- run --dry-run -np 4 --cores-per-node 2 -- ./train --lr 0.1
  show "dry run, 4 ranks on 2 cores" <<< "$out"
  check "exit 0" test "$rc" -eq 0
  check "mpirun line, unbound and oversubscribed" \
    has "$out" "/mpirun -np 4 --map-by slot --bind-to none --oversubscribe"
  if [[ $(id -u) == 0 ]]; then
    check "--allow-run-as-root as root" has "$out" " --allow-run-as-root "
  else
    check "no --allow-run-as-root when not root" lacks "$out" "--allow-run-as-root"
  fi
  check "no mpirun output tags (issue 21)" lacks "$out" "--tag-output"
  check "the wrappers relay ranks > 0 as [rank r] lines" has "$out" "COHORT_RANK_OUTPUT=prefix"
  check "programs start with the stop signals held" has "$out" "COHORT_HOLD_SIGNALS=1"
  check "no progress-bar override off a terminal" lacks "$out" "COHORT_PROGRESS_BAR"
  local x
  for x in COHORT_LOG_LEVEL LD_LIBRARY_PATH NCCL_DEBUG OPENBLAS_VERBOSE PATH COHORT_RUN_STATUS_DIR \
    COHORT_RESTART_COUNT COHORT_NODE_LAYOUT; do
    check "-x $x" has "$out" " -x $x "
  done
  check "unrelated variables are not forwarded" lacks "$out" "UNRELATED_VAR"
  check "OMP_NUM_THREADS not forwarded when unset" lacks "$out" "-x OMP_NUM_THREADS"
  check "the wrapper runs the program" has "$out" " $cohort _rank-exec -- ./train --lr 0.1"
  check "rank variables" has "$out" "RANK=0..3 WORLD_SIZE=4 NODE_RANK=0 "
  check "LOCAL_* variables" has "$out" "LOCAL_RANK=0..3 LOCAL_WORLD_SIZE=4"
  check "1 thread per rank with 4 ranks on 2 cores" has "$out" "OMP_NUM_THREADS=1 ("
  check "OpenBLAS threads too" has "$out" "OPENBLAS_NUM_THREADS=1 ("

  run_cohort "$p" -- run --dry-run -np 2 --cores-per-node 8 -- ./train
  show "dry run, 2 ranks on 8 cores" <<< "$out"
  check "binds 4 cores per rank" has "$out" "-np 2 --map-by slot:PE=4 --bind-to core"
  check "no --oversubscribe when cores suffice" lacks "$out" "--oversubscribe"
  check "4 threads per rank" has "$out" "OMP_NUM_THREADS=4 (the cores bound to each rank)"
  check "COHORT_CORES_PER_RANK=4" has "$out" "COHORT_CORES_PER_RANK=4"

  run_cohort "$p" OMP_NUM_THREADS=3 -- run --dry-run -np 2 --cores-per-node 8 -- ./train
  check "the user's OMP_NUM_THREADS is forwarded" has "$out" " -x OMP_NUM_THREADS "
  check "the user's OMP_NUM_THREADS is kept" has "$out" "OMP_NUM_THREADS=3 (set by the user; kept)"
  check "OPENBLAS_NUM_THREADS still computed" has "$out" "OPENBLAS_NUM_THREADS=4 ("

  run_cohort "$p" -- run --dry-run -H nodeA:2,nodeB:2 --cores-per-node 4 -x FOO=bar -- ./train
  show "dry run, two hosts" <<< "$out"
  check "-H with the planned counts" has "$out" "-np 4 -H nodeA:2,nodeB:2 --map-by slot:PE=2 --bind-to core"
  check "two node ranks" has "$out" "NODE_RANK=0..1"
  check "node layout" has "$out" "COHORT_NODE_LAYOUT=2,2"
  check "-x FOO=bar forwards FOO" has "$out" " -x FOO "
  check "-x FOO=bar sets FOO" has "$out" "  FOO=bar"
  check "multi-node status records default to the working directory" \
    has "$out" "COHORT_RUN_STATUS_DIR=$PWD/.cohort-run-XXXXXX/attempt-0"

  printf '# two nodes\nnodeA slots=2\n\nnodeB:3 max_slots=4  # comment\n' > "$work/hosts"
  run_cohort "$p" -- run --dry-run --hostfile "$work/hosts" -np 4 --cores-per-node 4 -- ./train
  check "hostfile: -np 4 fills nodeA then nodeB" has "$out" "-np 4 -H nodeA:2,nodeB:2 "

  run_cohort "$p" CUDA_VISIBLE_DEVICES=0,1,2 -- run --dry-run --cores-per-node 6 -- ./train
  check "nproc-per-node auto = CUDA_VISIBLE_DEVICES entries" has "$out" "-np 3 --map-by slot:PE=2"
  run_cohort "$p" CUDA_VISIBLE_DEVICES= -- run --dry-run --nproc-per-node auto -- ./train
  check "nproc-per-node auto on a CPU node = 1" has "$out" "-np 1 "

  run_cohort "$p" SLURM_JOB_ID=7 SLURM_NNODES=2 -- run --dry-run -H nodeA:1 -- ./train
  check "auto picks mpirun when hosts are named, even in Slurm" has "$out" "/mpirun -np 1 -H nodeA:1"
  run_cohort "$p" SLURM_JOB_ID=7 SLURM_NNODES=2 SLURM_NTASKS_PER_NODE=2 -- \
    run --dry-run --launcher mpirun --cores-per-node 4 -- ./train
  check "mpirun inside Slurm maps ppr per node" has "$out" "-np 4 --map-by ppr:2:node:PE=2 --bind-to core"

  if [[ $(id -u) == 0 ]]; then
    local as_nobody
    as_nobody=$(env -i PATH=$base_path HOME=/tmp setpriv --reuid=65534 --regid=65534 --clear-groups \
      "$cohort" run --dry-run -np 1 -- ./train 2>&1)
    if [[ $? == 0 ]]; then
      check "no --allow-run-as-root for a non-root user" lacks "$as_nobody" "--allow-run-as-root"
    else
      echo "skip non-root check (cannot run as nobody here): $as_nobody"
    fi
  fi
  # Its start-up time is a benchmark (scripts/bench launcher), not a check: a busy machine
  # makes any time limit flaky.
}

test_dry_run_srun() {
  mkdir -p "$work/bin"
  printf '#!/bin/sh\necho "fake srun must not run" >&2\nexit 99\n' > "$work/bin/srun"
  chmod +x "$work/bin/srun"
  local p=PATH=$work/bin:$base_path slurm=(SLURM_JOB_ID=42 SLURM_NNODES=2)
  run_cohort "$p" "${slurm[@]}" SLURM_NTASKS_PER_NODE=2 SLURM_CPUS_ON_NODE=8 NCCL_DEBUG=INFO -- \
    run --dry-run -- ./train --resume
  show "dry run in a 2-node Slurm allocation" <<< "$out"
  check "exit 0" test "$rc" -eq 0
  check "srun line from the allocation" has "$out" \
    "$work/bin/srun --mpi=pmix --nodes=2 --ntasks=4 --ntasks-per-node=2 --kill-on-bad-exit=1 --unbuffered $cohort _rank-exec -- ./train --resume"
  check "srun passes the environment itself: no -x" lacks "$out" " -x "
  check "no mpirun flags" lacks "$out" "--allow-run-as-root"
  check "rank variables over two nodes" has "$out" "RANK=0..3 WORLD_SIZE=4 NODE_RANK=0..1"
  check "LOCAL_WORLD_SIZE=2" has "$out" "LOCAL_RANK=0..1 LOCAL_WORLD_SIZE=2"
  check "layout" has "$out" "COHORT_NODE_LAYOUT=2,2"
  check "threads: 8 cores / 2 ranks" has "$out" "OMP_NUM_THREADS=4 (cores of the node"

  run_cohort "$p" "${slurm[@]}" 'SLURM_TASKS_PER_NODE=4(x2)' -- run --dry-run -np 6 -- ./train
  check "SLURM_TASKS_PER_NODE=4(x2), -np 6" has "$out" "--nodes=2 --ntasks=6 --kill-on-bad-exit=1 "
  run_cohort "$p" "${slurm[@]}" SLURM_NTASKS_PER_NODE=2 -- run --dry-run -np 3 -- ./train
  check "-np 3 in 2x2: 2,1 without a per-node count" has "$out" "--nodes=2 --ntasks=3 --kill-on-bad-exit=1 "
  run_cohort "$p" "${slurm[@]}" SLURM_NTASKS_PER_NODE=2 -- run --dry-run -np 2 -- ./train
  check "-np 2 in 2x2 uses one node" has "$out" "--nodes=1 --ntasks=2 --ntasks-per-node=2 "
  # Uneven allocations (issue 21): salloc -N2 -n3 gives SLURM_TASKS_PER_NODE=2,1.
  local uneven=(SLURM_JOB_ID=42 SLURM_NNODES=2 SLURM_TASKS_PER_NODE=2,1 SLURM_NTASKS=3)
  run_cohort "$p" "${uneven[@]}" -- run --dry-run -- ./train
  show "dry run in salloc -N2 -n3" <<< "$out"
  check "2,1: 3 ranks, not 4" has "$out" "--nodes=2 --ntasks=3 --kill-on-bad-exit=1 "
  check "2,1: layout" has "$out" "COHORT_NODE_LAYOUT=2,1"
  check "2,1: LOCAL_WORLD_SIZE by node" has "$out" "LOCAL_WORLD_SIZE=2,1 (by node)"
  run_cohort "$p" "${uneven[@]}" -- run --dry-run -np 3 -- ./train
  check "2,1: explicit -np 3 works" test "$rc" -eq 0
  check "2,1: -np 3 planned as 2,1" has "$out" "--nodes=2 --ntasks=3 --kill-on-bad-exit=1 "
  run_cohort "$p" "${uneven[@]}" -- run --dry-run -np 2 -- ./train
  check "2,1: -np 2 on the first node" has "$out" "--nodes=1 --ntasks=2 --ntasks-per-node=2 "
  run_cohort "$p" SLURM_JOB_ID=42 SLURM_NNODES=3 'SLURM_TASKS_PER_NODE=2(x2),1' SLURM_NTASKS=5 -- \
    run --dry-run -- ./train
  check "2(x2),1: 5 ranks, not 6" has "$out" "--nodes=3 --ntasks=5 --kill-on-bad-exit=1 "
  check "2(x2),1: layout" has "$out" "COHORT_NODE_LAYOUT=2,2,1"
  run_cohort "$p" SLURM_JOB_ID=42 SLURM_NNODES=2 SLURM_TASKS_PER_NODE='2(x2)' SLURM_NTASKS=3 -- \
    run --dry-run -- ./train
  check "-n3 on 2x2 CPUs: SLURM_NTASKS caps the total" has "$out" "--nodes=2 --ntasks=3 "
  run_cohort "$p" "${uneven[@]}" -- run --dry-run --launcher mpirun --cores-per-node 4 -- ./train
  check "mpirun in 2,1 fills the allocation's slots in order" has "$out" \
    "-np 3 --map-by slot:PE=2 --bind-to core"
  run_cohort PATH=$base_path "${slurm[@]}" -- run --dry-run --srun "$work/bin/srun" \
    --nproc-per-node 3 -- ./train
  check "--srun PATH and --nproc-per-node 3" has "$out" "--nodes=2 --ntasks=6 --ntasks-per-node=3 "
}

# Runs cohort and checks: exit 2, nothing on stdout, exactly one line on stderr naming PATTERN.
expect_usage_error() {  # DESC PATTERN ENV... -- ARGS...
  local desc=$1 pattern=$2
  shift 2
  run_cohort "$@"
  local lines
  lines=$(printf '%s' "$err" | grep -c '')
  if [[ $rc == 2 && -z $out && $lines == 1 ]] && has "$err" "$pattern"; then
    echo "ok   $desc: $err"
  else
    echo "FAIL $desc: rc=$rc, want 2 and one line with '$pattern'; stdout='$out' stderr='$err'"
    failures=$((failures + 1))
  fi
}

test_bad_input() {
  local p=PATH=$base_path
  mkdir -p "$work/empty"
  printf 'nodeA slots=two\n' > "$work/bad_slots"
  printf 'nodeA\nnodeB turbo=yes\n' > "$work/bad_word"
  expect_usage_error "unknown option" "unknown option '--frobnicate'" "$p" -- run --frobnicate -- ./x
  expect_usage_error "-np 0" "-np needs an integer >= 1, got '0'" "$p" -- run -np 0 -- ./x
  expect_usage_error "-np abc" "-np needs an integer >= 1, got 'abc'" "$p" -- run -np abc -- ./x
  expect_usage_error "-np without value" "-np needs a value" "$p" -- run -np
  expect_usage_error "missing program" "no program to run" "$p" -- run -np 2
  expect_usage_error "missing program after --" "no program to run" "$p" -- run -np 2 --
  expect_usage_error "hostfile bad slots" "$work/bad_slots:1: bad number" "$p" -- \
    run --hostfile "$work/bad_slots" -- ./x
  expect_usage_error "hostfile unknown word" "$work/bad_word:2: unexpected 'turbo=yes'" "$p" -- \
    run --hostfile "$work/bad_word" -- ./x
  expect_usage_error "hostfile missing" "cannot read '$work/nope'" "$p" -- \
    run --hostfile "$work/nope" -- ./x
  expect_usage_error "-H bad slots" "-H: bad slot count in 'a:0'" "$p" -- run -H a:0 -- ./x
  expect_usage_error "-np beyond the hosts" "-np 8 exceeds the 4 slots" "$p" -- \
    run -np 8 -H a:2,b:2 -- ./x
  expect_usage_error "-H and --hostfile" "either -H or --hostfile" "$p" -- \
    run -H a --hostfile "$work/bad_word" -- ./x
  expect_usage_error "mpirun not installed" "mpirun not found on PATH" PATH="$work/empty" -- \
    run -np 2 -- ./x
  expect_usage_error "--mpirun not executable" "--mpirun /nonexistent/mpirun: not an executable" \
    "$p" -- run --mpirun /nonexistent/mpirun -- ./x
  expect_usage_error "srun not installed" "srun not found on PATH" PATH="$work/empty" \
    SLURM_JOB_ID=1 SLURM_NNODES=1 -- run -- ./x
  expect_usage_error "srun outside Slurm" "--launcher srun needs a Slurm allocation" "$p" -- \
    run --launcher srun -- ./x
  expect_usage_error "bad --launcher" "--launcher must be mpirun, srun or auto" "$p" -- \
    run --launcher pbs -- ./x
  expect_usage_error "bad --grace-period" "--grace-period needs seconds >= 0, got '-1'" "$p" -- \
    run --grace-period -1 -- ./x
  expect_usage_error "--min-np above -np" "--min-np 5 is larger than -np 4" "$p" -- \
    run -np 4 --min-np 5 -- ./x
  expect_usage_error "-x of an unset variable" "-x NOT_SET_ANYWHERE: NOT_SET_ANYWHERE is not set" \
    "$p" -- run -x NOT_SET_ANYWHERE -- ./x
  expect_usage_error "Slurm without SLURM_NNODES" "SLURM_NNODES is not set" "$p" SLURM_JOB_ID=1 -- \
    run -- ./x
  expect_usage_error "-np beyond the allocation" \
    "-np 9 exceeds the Slurm allocation: 8 tasks on 2 nodes (4,4)" \
    "$p" SLURM_JOB_ID=1 SLURM_NNODES=2 SLURM_NTASKS_PER_NODE=4 -- run --srun /bin/true -np 9 -- ./x
  expect_usage_error "-np beyond an uneven allocation" \
    "-np 4 exceeds the Slurm allocation: 3 tasks on 2 nodes (2,1)" "$p" SLURM_JOB_ID=1 \
    SLURM_NNODES=2 SLURM_TASKS_PER_NODE=2,1 SLURM_NTASKS=3 -- run --srun /bin/true -np 4 -- ./x
  expect_usage_error "SLURM_TASKS_PER_NODE for other nodes" \
    "SLURM_TASKS_PER_NODE='2,1' does not describe the 3 nodes" "$p" SLURM_JOB_ID=1 \
    SLURM_NNODES=3 SLURM_TASKS_PER_NODE=2,1 -- run --srun /bin/true -- ./x
  expect_usage_error "unknown command" "cohort: unknown command 'launch'" "$p" -- launch
  expect_usage_error "_rank-exec outside mpirun/srun" "not started by mpirun or srun" "$p" -- \
    _rank-exec -- ./x
}

test_rank_exec_slurm_env() {
  local p=PATH=$base_path st=$work/status
  mkdir -p "$st"
  local slurm=(SLURM_PROCID=3 SLURM_NTASKS=4 SLURM_LOCALID=1 SLURM_NODEID=1
    'SLURM_STEP_TASKS_PER_NODE=2(x2)' COHORT_RUN_STATUS_DIR="$st")
  run_cohort "$p" "${slurm[@]}" -- _rank-exec -- "$probe" env
  echo "$out"
  check "srun task 3 of 2x2" has "$out" "RANK=3 WORLD_SIZE=4 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 NODE_RANK=1"
  check "a thread count is set" grep -qE "OMP_NUM_THREADS=[1-9][0-9]* OPENBLAS_NUM_THREADS=[1-9]" <<< "$out"
  check "exit 0" test "$rc" -eq 0
  check "started record" test -f "$st/rank-3.started"
  check "status record: exit 0" grep -q "outcome=exit value=0 " "$st/rank-3.status"

  run_cohort "$p" "${slurm[@]}" OMP_NUM_THREADS=5 -- _rank-exec -- "$probe" env
  check "the user's OMP_NUM_THREADS is kept" has "$out" "OMP_NUM_THREADS=5 "

  local ompi=(OMPI_COMM_WORLD_RANK=5 OMPI_COMM_WORLD_SIZE=8 OMPI_COMM_WORLD_LOCAL_RANK=1
    OMPI_COMM_WORLD_LOCAL_SIZE=4 COHORT_NODE_LAYOUT=4,4 COHORT_RUN_STATUS_DIR="$st")
  run_cohort "$p" "${ompi[@]}" -- _rank-exec -- "$probe" env
  check "Open MPI rank 5 of 4,4 is on node 1" has "$out" \
    "RANK=5 WORLD_SIZE=8 LOCAL_RANK=1 LOCAL_WORLD_SIZE=4 NODE_RANK=1"

  run_cohort "$p" OMPI_COMM_WORLD_RANK=2 OMPI_COMM_WORLD_SIZE=3 OMPI_COMM_WORLD_LOCAL_RANK=0 \
    OMPI_COMM_WORLD_LOCAL_SIZE=1 COHORT_NODE_LAYOUT=2,1 -- _rank-exec -- "$probe" env
  check "Open MPI rank 2 of 2,1 is alone on node 1" has "$out" \
    "RANK=2 WORLD_SIZE=3 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 NODE_RANK=1"
  run_cohort "$p" SLURM_PROCID=2 SLURM_NTASKS=3 SLURM_LOCALID=0 SLURM_NODEID=1 \
    SLURM_STEP_TASKS_PER_NODE=2,1 -- _rank-exec -- "$probe" env
  check "srun task 2 of 2,1" has "$out" "RANK=2 WORLD_SIZE=3 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 NODE_RANK=1"

  run_cohort "$p" "${ompi[@]}" -- _rank-exec -- sh -c 'exit 7'
  check "exit code passed through" test "$rc" -eq 7
  check "status record: exit 7" grep -q "rank=5 .*outcome=exit value=7 " "$st/rank-5.status"
  check "the failure is reported on stderr" has "$err" "rank 5 on"
  run_cohort "$p" "${ompi[@]}" -- _rank-exec -- sh -c 'kill -KILL $$'
  check "death by SIGKILL passed through" test "$rc" -eq 137
  check "status record: signal 9" grep -q "outcome=signal value=9 " "$st/rank-5.status"
  run_cohort "$p" "${ompi[@]}" -- _rank-exec -- "$work/no-such-program"
  check "missing program: 127 and a message" test "$rc" -eq 127
  check "missing program message" has "$err" "cannot run '$work/no-such-program'"

  # SIGUSR1 (what mpirun forwards) reaches the program as SIGTERM.
  mkdir -p "$work/sig"
  env -i PATH=$base_path "${ompi[@]}" "$cohort" _rank-exec -- "$probe" preempt "$work/sig" 0 \
    > "$work/sig.out" 2>&1 &
  local pid=$!
  check "the program started" wait_for_files "$work/sig" ready 1
  kill -USR1 "$pid"
  wait "$pid"
  check "wrapper exit 0 after the stop" test $? -eq 0
  check "SIGUSR1 arrives as SIGTERM" grep -q SIGTERM "$work/sig/signal-5"
  check "status record names the received signal" grep -q "received=SIGUSR1" "$st/rank-5.status"
}

# The dry run's OMP_NUM_THREADS prediction for ARGS (what the ranks must then see).
predicted_threads() {
  env -i PATH=$base_path "$cohort" run --dry-run "$@" -- x | sed -n 's/^  OMP_NUM_THREADS=\([0-9]*\).*/\1/p'
}

test_rank_env() {
  local p=PATH=$base_path r threads
  run_cohort "$p" -- run -np 4 --run-dir "$work/run" -- "$probe" env
  show "4 ranks" <<< "$out"
  check "exit 0" test "$rc" -eq 0
  threads=$(predicted_threads -np 4)
  for r in 0 1 2 3; do
    local tag="\[rank $r\] "
    [[ $r == 0 ]] && tag=""
    check "rank $r variables" grep -qE "^${tag}RANK=$r WORLD_SIZE=4 LOCAL_RANK=$r LOCAL_WORLD_SIZE=4 NODE_RANK=0 OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads COHORT_RESTART_COUNT=0\$" <<< "$out"
    check "rank $r status record" grep -q "outcome=exit value=0 " "$work/run/attempt-0/rank-$r.status"
  done
  run_cohort "$p" -- run -np 1 -- "$probe" env
  threads=$(predicted_threads -np 1)
  echo "$out"
  check "1 rank gets the node's $threads cores as threads" has "$out" "OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "
  run_cohort "$p" OMP_NUM_THREADS=3 -- run -np 2 -- "$probe" env
  threads=$(predicted_threads -np 2)
  echo "$out"
  check "the user's OMP_NUM_THREADS reaches every rank" test "$(grep -c 'OMP_NUM_THREADS=3 ' <<< "$out")" -eq 2
  check "OPENBLAS_NUM_THREADS computed" test "$(grep -c "OPENBLAS_NUM_THREADS=$threads " <<< "$out")" -eq 2
  check "no temp run dir left behind" test -z "$(find "$work" -maxdepth 1 -name 'cohort-run-*')"
}

# Starts `cohort run ARGS` in the background (stdout+stderr to $work/out); sets $pid.
start_cohort() {
  env -i PATH=$base_path HOME="$work" TMPDIR="$work" "$cohort" run "$@" > "$work/out" 2>&1 &
  pid=$!
}

preempt_with() {  # SIGNAL SAVE_S DIR
  local sig=$1 save=$2 dir=$3 t0 t1 rc
  mkdir -p "$dir"
  start_cohort -np 4 --grace-period 60 -- "$probe" preempt "$dir" "$save"
  check "4 ranks ready" wait_for_files "$dir" ready 4
  t0=$(now)
  kill -"$sig" "$pid"
  wait "$pid"
  rc=$?
  t1=$(now)
  show "SIG$sig, save $save s" < "$work/out"
  echo "the job ended $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s after SIG$sig"
  check "SIG$sig: exit 0" test "$rc" -eq 0
  check "SIG$sig: every rank saw SIGTERM" test "$(grep -l SIGTERM "$dir"/signal-* | wc -l)" -eq 4
  check "SIG$sig: every rank finished its save" test "$(find "$dir" -name 'saved-*' | wc -l)" -eq 4
  check "SIG$sig: the save ran its full $save s (not killed after ~1 s)" elapsed_at_least "$t0" "$t1" "$save"
  check "SIG$sig: reported" grep -q "stopped by SIG$sig; all 4 ranks exited 0" "$work/out"
}

test_preempt_sigterm() {
  preempt_with TERM 5 "$work/term"
  preempt_with INT 1 "$work/int"
}

test_preempt_grace_expired() {
  local dir=$work/p t0 t1 rc
  mkdir -p "$dir"
  start_cohort -np 4 --grace-period 2 -- "$probe" preempt "$dir" 30
  check "4 ranks ready" wait_for_files "$dir" ready 4
  t0=$(now)
  kill -TERM "$pid"
  wait "$pid"
  rc=$?
  t1=$(now)
  show "grace 2 s, save 30 s" < "$work/out"
  check "exit 124 when the grace period ran out" test "$rc" -eq 124
  # Bounds with room for a busy machine, below what the bug would take (the 30 s save).
  check "killed after the grace period, not after the 30 s save" elapsed_below "$t0" "$t1" 25
  check "no save finished" test -z "$(find "$dir" -name 'saved-*')"
  check "no rank program left running" gone "$probe preempt $dir"

  # A second stop signal cuts the grace period short: exit 128 + the first signal.
  dir=$work/twice
  mkdir -p "$dir"
  start_cohort -np 2 --grace-period 60 -- "$probe" preempt "$dir" 30
  check "2 ranks ready" wait_for_files "$dir" ready 2
  t0=$(now)
  kill -TERM "$pid"
  wait_for_files "$dir" signal 2
  kill -TERM "$pid"
  wait "$pid"
  rc=$?
  t1=$(now)
  show "two SIGTERMs" < "$work/out"
  check "second signal: exit 143" test "$rc" -eq 143
  check "second signal: ends at once, not after the 30 s save" elapsed_below "$t0" "$t1" 25
  check "second signal: reported" grep -q "got SIGTERM again: stopping the ranks now" "$work/out"
}

test_fail_fast() {
  local dir=$work/f t0 t1 rc
  mkdir -p "$dir"
  t0=$(now)
  start_cohort -np 4 -- "$probe" fail 2 1 "$dir"
  wait "$pid"
  rc=$?
  t1=$(now)
  show "rank 2 exits 1" < "$work/out"
  echo "the job took $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s (rank 2 fails after 1 s)"
  check "exit code of the failed rank" test "$rc" -eq 1
  # Room for a busy machine's start-up, below what the bug would take (the others' 60 s).
  check "ends long before the other ranks' 60 s" elapsed_below "$t0" "$t1" 40
  check "names the rank that failed first" grep -qE "^cohort run: rank 2 \(.*\) failed first: exit code 1$" "$work/out"
  check "no rank program left running" gone "$probe fail 2 1 $dir"
}

test_max_restarts() {
  local rc
  mkdir -p "$work/once" "$work/twice"
  start_cohort -np 4 -- "$probe" restart "$work/once" 1
  wait "$pid"
  rc=$?
  show "no restarts" < "$work/out"
  check "without restarts: 128+9" test "$rc" -eq 137
  check "names the SIGKILLed rank" grep -qE "rank 1 \(.*\) failed first: killed by signal 9 \(SIGKILL\)" "$work/out"

  start_cohort -np 4 --max-restarts 1 -- "$probe" restart "$work/twice" 1
  wait "$pid"
  rc=$?
  show "--max-restarts 1" < "$work/out"
  check "with one restart: exit 0" test "$rc" -eq 0
  check "says it restarted" grep -q "restarting the job (restart 1 of 1) as 4 ranks" "$work/out"
  check "every rank resumed in restart 1" test "$(grep -c 'resumed (restart 1)' "$work/out")" -eq 4
}

test_min_np_shrink() {
  [[ -n $real_mpirun ]] || { echo "FAIL no mpirun"; return; }
  mkdir -p "$work/bin"
  # A host that cannot be reached: mpirun fails before any rank starts.
  cat > "$work/bin/mpirun" << EOF
#!/bin/sh
case " \$* " in *badhost*) echo "fake mpirun: cannot reach badhost" >&2; exit 1;; esac
exec $real_mpirun "\$@"
EOF
  chmod +x "$work/bin/mpirun"
  local rc
  start_cohort -H localhost:2,badhost:2 --min-np 2 --max-restarts 1 --mpirun "$work/bin/mpirun" \
    -- "$probe" env
  wait "$pid"
  rc=$?
  show "a node that never starts, --min-np 2" < "$work/out"
  check "exit 0 on the smaller world" test "$rc" -eq 0
  check "reports the launch failure" grep -q "no rank reported a failure (0 of 4 ranks started)" "$work/out"
  check "restarts with one node less" grep -q "restart 1 of 1) as 2 ranks with one node less" "$work/out"
  check "2 ranks ran" test "$(grep -c 'WORLD_SIZE=2 ' "$work/out")" -eq 2

  start_cohort -H localhost:2,badhost:2 --max-restarts 1 --mpirun "$work/bin/mpirun" -- "$probe" env
  wait "$pid"
  rc=$?
  check "without --min-np the size stays and it fails" test "$rc" -eq 1
  check "restarted at full size" grep -q "restart 1 of 1) as 4 ranks$" "$work/out"
}

# A rank's fatal error line (issue 21): written with one write(), so mpirun tags it once and
# it arrives whole, UTF-8 intact and control characters escaped (it came byte by byte, one
# "[1,0]<stderr>:" tag per byte). EXTRA: tests/trainer's config_probe.
test_fatal_line() {
  [[ -n $real_mpirun ]] || { echo "FAIL no mpirun"; failures=$((failures + 1)); return; }
  local bad=$work/conf-é$'\x1b'[31m-ü.txtpb root=() line
  [[ $(id -u) == 0 ]] && root=(--allow-run-as-root)
  timeout 120 "$real_mpirun" -np 2 --oversubscribe "${root[@]}" --tag-output \
    "$extra" --config "$bad" > "$work/stdout" 2> "$work/stderr"
  rc=$?
  show "config error under mpirun --tag-output" < "$work/stderr"
  check "exit 2" test "$rc" -eq 2
  check "rank 0's stderr tagged once: one write()" \
    test "$(grep -o '\[[0-9]*,0\]<stderr>:' "$work/stderr" | wc -l)" -eq 1
  line=$(grep '^\[[0-9]*,0\]<stderr>:' "$work/stderr")
  check "the whole error on it" has "$line" "<stderr>:config error: "
  check "UTF-8 kept whole" has "$line" "conf-é"
  check "ESC escaped" has "$line" 'conf-é\x1b[31m-ü.txtpb'
  check "no raw control byte" lacks "$line" $'\x1b'

  # A message longer than PIPE_BUF: still one write(), cut with " [...]".
  local long
  long=$work/$(printf 'x%.0s' {1..5000})
  timeout 120 "$real_mpirun" -np 1 --oversubscribe "${root[@]}" --tag-output \
    "$extra" --config "$long" > "$work/stdout" 2> "$work/stderr"
  check "long message: tagged once" \
    test "$(grep -o '\[[0-9]*,0\]<stderr>:' "$work/stderr" | wc -l)" -eq 1
  line=$(grep '^\[[0-9]*,0\]<stderr>:' "$work/stderr")
  check "long message: cut at 4096 bytes with ' [...]'" \
    test "${#line}" -le $((4096 + 20)) -a "${line: -6}" = " [...]"
}

# Console output (issue 21): rank 0's bytes as written ('\r' redraws, a UTF-8 character
# written in two pieces), other ranks' lines whole and prefixed "[rank r] " although their
# programs write them byte by byte; no mpirun tags. --rank-output on-error shows them only
# for a rank that fails.
test_console_output() {
  local p=PATH=$base_path
  run_cohort "$p" -- run -np 3 -- "$probe" chatty -1
  show "3 chatty ranks: stdout" <<< "$out"
  show "stderr" <<< "$err"
  check "exit 0" test "$rc" -eq 0
  check "no mpirun tags" lacks "$out$err" "]<std"
  check "rank 0 as written, redraws included" \
    grep -qF $'progress 1/3\rprogress 2/3\rprogress 3/3' "$work/stdout"
  check "rank 0's UTF-8 whole" grep -qx "rank 0 says été" "$work/stdout"
  local r
  for r in 1 2; do
    check "rank $r: one whole prefixed line" grep -qx "\[rank $r\] hello from rank $r été" "$work/stdout"
    check "rank $r: stderr line whole on stderr" grep -qx "\[rank $r\] warning from rank $r" "$work/stderr"
    check "rank $r: last line without newline still whole" \
      grep -qx "\[rank $r\] no newline at the end of rank $r" "$work/stdout"
  done
  check "every rank-1/2 line is whole" test "$(grep -c '^\[rank [12]\] ' "$work/stdout")" -eq 4

  run_cohort "$p" -- run -np 3 --rank-output on-error -- "$probe" chatty -1
  check "on-error, all succeed: exit 0" test "$rc" -eq 0
  check "on-error, all succeed: rank 0 shown" grep -qx "rank 0 says été" "$work/stdout"
  check "on-error, all succeed: ranks 1, 2 not shown" lacks "$out$err" "[rank "
  run_cohort "$p" -- run -np 3 --rank-output on-error --max-restarts 0 -- "$probe" chatty 2
  show "on-error, rank 2 fails: stdout" <<< "$out"
  check "on-error, rank 2 fails: exit 1" test "$rc" -eq 1
  check "on-error: the failed rank's lines shown" grep -qx "\[rank 2\] hello from rank 2 été" "$work/stdout"
  check "on-error: its stderr too" grep -qx "\[rank 2\] warning from rank 2" "$work/stderr"
  check "on-error: rank 1 (exit 0) not shown" lacks "$out$err" "[rank 1]"
  expect_usage_error "bad --rank-output" "--rank-output must be prefix or on-error, got 'all'" \
    "$p" -- run --rank-output all -- ./x
}

"test_$case_name"
echo "$case_name: $failures failed check(s)"
[[ $failures -eq 0 ]]
