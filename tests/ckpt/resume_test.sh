#!/usr/bin/env bash
# Resume equivalence across world sizes (issue 6): an uninterrupted 12-step run on 4 ranks
# is the reference; a run stopped and checkpointed at step 6 on 4 ranks resumes on 2, 1 and
# 3 ranks (and one on 2 ranks resumes on 4) with the accumulation adjusted so the global
# batch stays 12. Parameters and every logged loss must equal the reference (float64 1e-10).
# Usage: resume_test.sh PROBE MPIEXEC [MPIEXEC FLAGS...]
set -euo pipefail
probe=$1; shift
mpi=("$@")
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--max_steps=12 --logging_steps=1 --learning_rate=0.05 --warmup_steps=2 --seed=7
        --report_to=none --dataloader_num_workers=0)

# world -> per-device batch and accumulation for a global batch of 12
layout() {
  case $1 in
    1) echo "--per_device_train_batch_size=3 --gradient_accumulation_steps=4" ;;
    2) echo "--per_device_train_batch_size=3 --gradient_accumulation_steps=2" ;;
    3) echo "--per_device_train_batch_size=4 --gradient_accumulation_steps=1" ;;
    4) echo "--per_device_train_batch_size=3 --gradient_accumulation_steps=1" ;;
  esac
}
run() {  # run NP ARGS...
  local np=$1; shift
  "${mpi[@]}" -n "$np" "$probe" "${common[@]}" $(layout "$np") "$@" > "$tmp/last.log" 2>&1 ||
    { cat "$tmp/last.log"; echo "FAILED: $np ranks: $*"; exit 1; }
}

run 4 --output_dir="$tmp/ref" --save_strategy=no --probe-out="$tmp/ref.txt"
fail=0
for from in 4 2; do
  run "$from" --output_dir="$tmp/part$from" --save_strategy=steps --save_steps=6 --probe-stop-at=6
  test -f "$tmp/part$from/checkpoint-6/manifest.pb" || { echo "no checkpoint-6 from $from ranks"; exit 1; }
  if [[ $from == 4 ]]; then targets="2 1 3"; else targets="4"; fi
  for to in $targets; do
    out="$tmp/resume-$from-$to"
    mkdir -p "$out" && cp -r "$tmp/part$from/checkpoint-6" "$out/"
    run "$to" --output_dir="$out" --save_strategy=no --resume_from_checkpoint=true \
        --probe-out="$out.txt"
    grep -q "resharded from $from to $to ranks" "$tmp/last.log" ||
      { echo "no resharding line for $from -> $to"; cat "$tmp/last.log"; fail=1; }
    grep -q "^resumed_from $out/checkpoint-6" "$out.txt" || { echo "did not resume from step 6"; fail=1; }
    echo "== $from ranks -> $to ranks"
    python3 "$here/compare_runs.py" "$tmp/ref.txt" "$out.txt" || fail=1
  done
done
exit $fail
