#!/usr/bin/env bash
# HF's checkpoint policies through the Trainer on 2 ranks: save_total_limit rotation with the
# newest and the best protected, save_strategy=best, load_best_model_at_end.
# Usage: policy_test.sh PROBE MPIEXEC [MPIEXEC FLAGS...]
set -euo pipefail
probe=$1; shift
mpi=("$@")
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--max_steps=8 --logging_steps=1 --learning_rate=0.05 --seed=7 --report_to=none
        --per_device_train_batch_size=3 --gradient_accumulation_steps=2
        --eval_strategy=steps --eval_steps=2 --metric_for_best_model=score --greater_is_better=false)
fail=0
run() {
  "${mpi[@]}" -n 2 "$probe" "${common[@]}" "$@" > "$tmp/last.log" 2>&1 ||
    { cat "$tmp/last.log"; echo "FAILED: $*"; exit 1; }
}
expect_dirs() {  # expect_dirs OUT "4 8" WHAT
  local got
  got=$(cd "$1" && ls -d checkpoint-* 2>/dev/null | sed 's/checkpoint-//' | sort -n | tr '\n' ' ' | sed 's/ $//')
  if [[ "$got" == "$2" ]]; then echo "ok   $3: checkpoints {$got}"; else
    echo "FAIL $3: checkpoints {$got}, expected {$2}"; fail=1; fi
}

# Scores at steps 2,4,6,8 (lower is better): best at 4.
run --output_dir="$tmp/l2" --save_steps=2 --save_total_limit=2 --probe-metrics=5,1,3,4
expect_dirs "$tmp/l2" "4 8" "save_total_limit=2, best=4 != newest"
run --output_dir="$tmp/l1" --save_steps=2 --save_total_limit=1 --probe-metrics=5,1,3,4
expect_dirs "$tmp/l1" "4 8" "save_total_limit=1 keeps the best and the newest"
run --output_dir="$tmp/l2b" --save_steps=2 --save_total_limit=2 --probe-metrics=5,4,3,1
expect_dirs "$tmp/l2b" "6 8" "save_total_limit=2, best == newest"
run --output_dir="$tmp/best" --save_strategy=best --probe-metrics=5,1,3,0.5
expect_dirs "$tmp/best" "2 4 8" "save_strategy=best saves on improvement only"
grep -q 'best_model_checkpoint: ".*checkpoint-8"' "$tmp/best/checkpoint-8/manifest.txtpb" ||
  { echo "FAIL best_model_checkpoint not recorded"; fail=1; }

# load_best_model_at_end: the final weights are those of step 4.
run --output_dir="$tmp/lb" --save_steps=2 --load_best_model_at_end=true \
    --probe-metrics=5,1,3,4 --probe-out="$tmp/lb.txt"
grep -q "^best $tmp/lb/checkpoint-4" "$tmp/lb.txt" || { echo "FAIL best is not checkpoint-4"; fail=1; }
run --output_dir="$tmp/at4" --save_strategy=no --probe-stop-at=4 --probe-metrics=5,1,3,4 \
    --probe-out="$tmp/at4.txt"
echo "load_best_model_at_end vs the weights after step 4:"
python3 "$here/compare_runs.py" "$tmp/at4.txt" "$tmp/lb.txt" --params-only || fail=1
run --output_dir="$tmp/last" --save_strategy=no --probe-metrics=5,1,3,4 --probe-out="$tmp/last.txt"
if python3 "$here/compare_runs.py" "$tmp/at4.txt" "$tmp/last.txt" --params-only > /dev/null; then
  echo "FAIL the step-8 weights equal the step-4 weights: the check above proves nothing"; fail=1
fi
# save_async: the same checkpoints, written in the background while training goes on; a
# resume from one continues the same trajectory; rotation counts completed saves only.
run --output_dir="$tmp/async" --save_steps=2 --save_async=true --save_total_limit=2 \
    --probe-metrics=5,4,3,1 --probe-out="$tmp/async.txt"
expect_dirs "$tmp/async" "6 8" "save_async with save_total_limit=2"
for d in "$tmp"/async/checkpoint-*; do
  [[ -f $d/manifest.pb && ! -e $d/checkpoint-is-incomplete.txt ]] || { echo "FAIL $d incomplete"; fail=1; }
done
python3 "$here/compare_runs.py" "$tmp/last.txt" "$tmp/async.txt" --params-only || fail=1
rm -rf "$tmp/async/checkpoint-8"
run --output_dir="$tmp/async" --save_strategy=no --resume_from_checkpoint=true \
    --probe-metrics=5,4,3,1 --probe-out="$tmp/async-resumed.txt"
grep -q "^resumed_from $tmp/async/checkpoint-6" "$tmp/async-resumed.txt" || { echo "FAIL not resumed from 6"; fail=1; }
echo "resume from an async checkpoint:"
python3 "$here/compare_runs.py" "$tmp/last.txt" "$tmp/async-resumed.txt" --params-only || fail=1

# save_async with 256 MiB of weights (+ Adam moments) and no background copy: the writer
# reads them in place, and an optimizer step that starts before it is done first copies
# what is left (printed below: here the write usually ends first, a step being slower;
# checkpointer_test releases at every point of a write). Training is unchanged, and
# resuming from an async checkpoint continues exactly.
big=(--probe-ballast-param-mb=256 --probe-metrics=5,4,3,1)
run --output_dir="$tmp/bigref" --save_strategy=no "${big[@]}" --probe-out="$tmp/bigref.txt"
COHORT_CKPT_COPY_AHEAD=0 run --output_dir="$tmp/big" --save_steps=2 --save_async=true \
  "${big[@]}" --probe-out="$tmp/big.txt"
copies=$(grep -c "optimizer step first copied" "$tmp/last.log" || true)
echo "     $copies of 4 async saves had bytes left for the optimizer step to copy"
grep -m 1 "optimizer step first copied" "$tmp/last.log" | sed 's/^.*async save: /     e.g. /' || true
python3 "$here/compare_runs.py" "$tmp/bigref.txt" "$tmp/big.txt" --params-only || fail=1
rm -rf "$tmp/big/checkpoint-6" "$tmp/big/checkpoint-8"
run --output_dir="$tmp/big" --save_strategy=no --resume_from_checkpoint=true "${big[@]}" \
    --probe-out="$tmp/big-resumed.txt"
grep -q "^resumed_from $tmp/big/checkpoint-4" "$tmp/big-resumed.txt" || { echo "FAIL not resumed from 4"; fail=1; }
echo "resume from an async checkpoint of 256 MiB weights:"
python3 "$here/compare_runs.py" "$tmp/bigref.txt" "$tmp/big-resumed.txt" --params-only || fail=1
rm -rf "$tmp/big" "$tmp/bigref"

# A fresh run (no resume) into an output_dir with an earlier run's checkpoints: refused,
# naming them, unless overwrite_output_dir deletes them first.
mkdir -p "$tmp/l2/checkpoint-99" && touch "$tmp/l2/checkpoint-99/checkpoint-is-incomplete.txt"
if "${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$tmp/l2" --save_steps=2 \
    > "$tmp/fresh.log" 2>&1; then
  echo "FAIL a fresh run into $tmp/l2 (earlier checkpoints) succeeded"; fail=1
elif grep -q "holds checkpoints of an earlier run (.*checkpoint-99" "$tmp/fresh.log" &&
     ! grep -q "Segmentation\|core dumped\|terminate called" "$tmp/fresh.log"; then
  echo "ok   a fresh run into an output_dir with earlier checkpoints is refused, naming them"
else
  echo "FAIL fresh run into $tmp/l2: no clear error"; tail -5 "$tmp/fresh.log"; fail=1
fi
expect_dirs "$tmp/l2" "4 8 99" "the refused run left the earlier checkpoints alone"
touch "$tmp/l2/PREEMPTED"
run --output_dir="$tmp/l2" --save_steps=2 --save_total_limit=2 --overwrite_output_dir=true \
    --probe-metrics=5,4,3,1
expect_dirs "$tmp/l2" "6 8" "overwrite_output_dir replaced the earlier run's checkpoints"
# One line (rank 0) names what it deletes, the size and where.
deleting="overwrite_output_dir: deleting the earlier run's 3 checkpoint\\(s\\) \\([0-9.]+ MiB\\) in $tmp/l2: checkpoint-4 checkpoint-8 checkpoint-99 PREEMPTED$"
if [[ $(grep -cE -- "$deleting" "$tmp/last.log") == 1 && ! -e $tmp/l2/PREEMPTED ]]; then
  echo "ok   overwrite_output_dir names what it deletes: $(grep -o 'overwrite_output_dir: deleting.*' "$tmp/last.log")"
else
  echo "FAIL no single line naming the deleted checkpoints and PREEMPTED (or PREEMPTED is left):"
  grep overwrite_output_dir "$tmp/last.log"; fail=1
fi
exit $fail
