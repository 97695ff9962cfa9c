#!/usr/bin/env bash
# A bad configuration under mpirun: every rank exits 2, exactly one "config error:" line
# naming the field is printed, and nothing hangs (each run is bounded by `timeout`).
# Usage: config_exit_test.sh PROBE FIXTURES_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -u
probe=$1 fixtures=$2 mpiexec=$3
shift 3
mpiflags=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# Open MPI aborts the whole job as soon as one rank exits non-zero, which can kill a
# rank's wrapper before it records its code; a second run with that policy off lets every
# rank run to its own exit so that each exit code can be checked.
noabort=()
if "$mpiexec" --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
  noabort=(--mca orte_abort_on_non_zero_status 0)
fi

# run NAME NP EXPECTED_RC EXPECTED_SUBSTRING ARGS...
run() {
  local name=$1 np=$2 want=$3 needle=$4
  shift 4
  local out=$work/$name.out ok=1
  # 1. As a user runs it: mpirun's status is the ranks' code, one error line, no hang.
  timeout 120 "$mpiexec" -n "$np" "${mpiflags[@]}" "$probe" "$@" >"$out" 2>&1
  local mpirc=$?
  if [ $mpirc -eq 124 ]; then
    echo "FAIL $name: timed out (hang)"; ok=0
  elif [ $mpirc -ne "$want" ]; then
    echo "FAIL $name: mpirun exited $mpirc, expected $want"; ok=0
  fi
  if [ "$want" = 2 ]; then
    local lines
    # Count occurrences, not lines: two ranks' lines can arrive merged into one.
    lines=$(grep -o 'config error: ' "$out" | wc -l)
    if [ "$lines" -ne 1 ]; then
      echo "FAIL $name: $lines 'config error:' messages, expected exactly 1"; ok=0
    fi
    if ! grep '^config error: ' "$out" | grep -q -- "$needle"; then
      echo "FAIL $name: the error line does not name '$needle'"; ok=0
    fi
  elif ! grep -q -- "$needle" "$out"; then
    echo "FAIL $name: output lacks '$needle'"; ok=0
  fi
  # 2. Every rank's own exit code, recorded by a wrapper around the probe.
  rm -f "$work/$name".rc.*
  timeout 120 "$mpiexec" -n "$np" "${mpiflags[@]}" "${noabort[@]}" sh -c \
    '"$0" "$@"; rc=$?; echo $rc > "'"$work/$name"'.rc.${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}"; exit $rc' \
    "$probe" "$@" >"$out.ranks" 2>&1
  [ $? -eq 124 ] && { echo "FAIL $name: timed out (hang) in the per-rank run"; ok=0; }
  local n
  n=$(ls "$work/$name".rc.* 2>/dev/null | wc -l)
  if [ "$n" -ne "$np" ]; then
    echo "FAIL $name: $n of $np ranks reported an exit code"; ok=0
  fi
  for f in "$work/$name".rc.*; do
    [ -e "$f" ] || continue
    if [ "$(cat "$f")" != "$want" ]; then
      echo "FAIL $name: rank ${f##*.rc.} exited $(cat "$f"), expected $want"; ok=0
    fi
  done
  if [ $ok -eq 1 ]; then
    echo "ok   $name ($np ranks, each exited $want)"
  else
    failures=$((failures + 1))
    echo "---- output of $name:"; cat "$out" "$out.ranks"; echo "----"
  fi
}

run good        2 0 "OK 2 ranks, logging every 10 of 100 steps" --config "$fixtures/good.txtpb" train
run prefetch    2 2 dataloader_prefetch_factor --config "$fixtures/bad_prefetch.txtpb" train
run cli_typo    2 2 "did you mean --learning_rate" --config "$fixtures/good.txtpb" --learning_rat=1
run no_eval     2 2 eval_strategy --eval_strategy=steps train
run on_start    4 2 eval_on_start --eval_on_start --eval_strategy=epoch train
run bad_type    2 2 per_device_train_batch_size --per_device_train_batch_size=eight
run no_file     2 2 "/nonexistent/job.txtpb" --config /nonexistent/job.txtpb
run fp16_bf16   2 2 "at most one of fp16 and bf16" --fp16 --bf16
run fp16_cpu    2 2 "fp16: needs a CUDA device" --fp16 train
run tf32_cpu    2 2 "tf32: needs an Ampere" --tf32
run hf_json     2 0 "OK 2 ranks" --config "$fixtures/hf_training_args.json" train eval

if [ $failures -ne 0 ]; then
  echo "$failures case(s) failed"; exit 1
fi
echo "all config exit cases passed"
