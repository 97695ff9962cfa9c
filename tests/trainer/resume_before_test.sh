#!/usr/bin/env bash
# Issue 21.9: a resumed train_lm reports as its "before" perplexity that of the checkpoint it
# resumes, not of the freshly initialised model. Run 1 trains 6 steps and saves checkpoint-6;
# run 2 resumes it (and trains 3 more steps): its "before" must equal run 1's "after" (the
# same weights, evaluated on the same held-out split).
# Usage: resume_before_test.sh TRAIN_LM CONFIG MPIEXEC [MPIEXEC_FLAGS...]
set -u
train_lm=$1 config=$2 mpiexec=$3
shift 3
mpiflags=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--config "$config" --output_dir="$work/run" --report_to=none --logging_steps=3)

perplexities() {  # FILE -> "BEFORE AFTER"
  grep -o 'held-out perplexity [0-9.]* -> [0-9.]*' "$1" | tail -1 | awk '{print $3, $5}'
}
timeout 600 "$mpiexec" -n 2 "${mpiflags[@]}" "$train_lm" "${common[@]}" --max_steps=6 \
  --save_steps=6 > "$work/first.out" 2>&1 || { cat "$work/first.out"; echo "FAIL: run 1"; exit 1; }
timeout 600 "$mpiexec" -n 2 "${mpiflags[@]}" "$train_lm" "${common[@]}" --max_steps=9 \
  --save_strategy=no --resume_from_checkpoint=true > "$work/second.out" 2>&1 ||
  { cat "$work/second.out"; echo "FAIL: run 2"; exit 1; }
cat "$work/first.out" "$work/second.out"
grep -q "resumed from $work/run/checkpoint-6 at step 6" "$work/second.out" ||
  { echo "FAIL: run 2 did not resume from checkpoint-6"; exit 1; }
read -r before1 after1 < <(perplexities "$work/first.out")
read -r before2 after2 < <(perplexities "$work/second.out")
echo "run 1: $before1 -> $after1; run 2 (resumed): $before2 -> $after2"
[ -n "$after1" ] && [ -n "$before2" ] || { echo "FAIL: no perplexity lines"; exit 1; }
if [ "$before2" != "$after1" ]; then
  echo "FAIL: the resumed run's 'before' perplexity $before2 is not that of the checkpoint it" \
       "resumed ($after1)"
  exit 1
fi
echo "PASS: the resumed run's 'before' perplexity is the checkpoint's ($before2)"
