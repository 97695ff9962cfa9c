#!/usr/bin/env bash
# Fine-tuning from pretrained weights, Python on both ends (issue 17):
#  1. numpy writes init.safetensors from the published format (safetensors_check.py);
#  2. with learning_rate 0 the saved model.safetensors equals init.safetensors bit for bit
#     (the weights were loaded, and saveModel writes them unchanged);
#  3. training 3 steps on 2 ranks: model.safetensors equals the step-3 Cohort checkpoint's
#     tensors (via `cohort ckpt export` HDF5, read with h5py) and differs from init;
#  4. a file with a missing, an unexpected and a shape-mismatched name: every rank exits 2,
#     ONE "config error:" line lists all three, nothing is trained or written;
#  5. a file whose names carry "model.": fails without the prefix map, loads with it;
#  and a Cohort checkpoint directory as the initialisation (3b).
# Usage: weights_finetune_test.sh PROBE COHORT CHECK_PY WORK MPIEXEC [MPIEXEC_FLAGS...]
set -u
probe=$1 cohort=$2 check=$3 work=$4 mpiexec=$5
shift 5
mpiflags=("$@")
if ! /usr/bin/python3 -c 'import numpy, h5py' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 lacks numpy or h5py"; exit 77
fi
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
py() { /usr/bin/python3 "$check" "$@"; }
noabort=()
if "$mpiexec" --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
  noabort=(--mca orte_abort_on_non_zero_status 0)
fi
common=(--per_device_train_batch_size=4 --report_to=jsonl --logging_steps=1)

# run NAME NP ARGS...: rc in $work/NAME.rc.<rank>, output in $work/NAME.out
run() {
  local name=$1 np=$2
  shift 2
  rm -f "$work/$name".rc.*
  timeout 300 "$mpiexec" -n "$np" "${mpiflags[@]}" "${noabort[@]}" sh -c \
    '"$0" "$@"; rc=$?; echo $rc > "'"$work/$name"'.rc.${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}"; exit $rc' \
    "$probe" "$@" >"$work/$name.out" 2>&1
  [ $? -eq 124 ] && fail "$name: timed out (hang)"
}
# every_rank NAME NP RC: each of the NP ranks exited RC
every_rank() {
  local n f
  n=$(ls "$work/$1".rc.* 2>/dev/null | wc -l)
  [ "$n" -eq "$2" ] || { fail "$1: $n of $2 ranks reported"; sed 's/^/    /' "$work/$1.out"; return; }
  for f in "$work/$1".rc.*; do
    [ "$(cat "$f")" = "$3" ] || { fail "$1: rank ${f##*.rc.} exited $(cat "$f"), expected $3";
                                   sed 's/^/    /' "$work/$1.out"; return; }
  done
}

py write-init "$work" || fail "write-init"

# 2. learning rate 0: the saved weights are the initial ones.
run frozen 2 init="$work/init.safetensors" "${common[@]}" --output_dir="$work/frozen" \
  --max_steps=2 --learning_rate=0 --save_strategy=no
every_rank frozen 2 0
py same "$work/init.safetensors" "$work/frozen/model.safetensors" || fail "lr 0: saved != init"
[ -s "$work/frozen/training_args.json" ] || fail "no training_args.json"

# 3. three steps: saveModel == the step-3 checkpoint, != init.
run tuned 2 init="$work/init.safetensors" "${common[@]}" --output_dir="$work/tuned" \
  --max_steps=3 --learning_rate=0.05 --save_strategy=steps --save_steps=3
every_rank tuned 2 0
"$cohort" ckpt export "$work/tuned/checkpoint-3" "$work/tuned.h5" >/dev/null || fail "export"
py equals-h5 "$work/tuned/model.safetensors" "$work/tuned.h5" keep || fail "saveModel != checkpoint"
py differ "$work/init.safetensors" "$work/tuned/model.safetensors" >/dev/null ||
  fail "training did not change the weights"

# 3b. a Cohort checkpoint as the initialisation (its model/ tensors), on 1 rank.
run from_ckpt 1 init="$work/tuned/checkpoint-3" "${common[@]}" --output_dir="$work/from_ckpt" \
  --max_steps=1 --learning_rate=0 --save_strategy=no
every_rank from_ckpt 1 0
py same "$work/tuned/model.safetensors" "$work/from_ckpt/model.safetensors" ||
  fail "init from a checkpoint: saved != the checkpoint's weights"

# 4. strict: one error with all three names, exit 2 on every rank, before training.
run strict 2 init="$work/bad.safetensors" "${common[@]}" --output_dir="$work/strict" --max_steps=2
every_rank strict 2 2
lines=$(grep -o 'config error: ' "$work/strict.out" | wc -l)
[ "$lines" -eq 1 ] || fail "strict: $lines 'config error:' messages, expected 1"
for needle in "missing from the file (1): fc2.bias" "unexpected in the file (1): extra.weight" \
              "shape mismatch (1): fc1.weight: file [8, 5], model [8, 6]"; do
  grep '^config error: ' "$work/strict.out" | grep -qF -- "$needle" || fail "strict: no '$needle'"
done
grep -q "training:" "$work/strict.out" && fail "strict: training started"
[ -e "$work/strict/model.safetensors" ] && fail "strict: a model was saved"

# 5. the prefix map.
run renamed_plain 2 init="$work/renamed.safetensors" "${common[@]}" --output_dir="$work/rp" \
  --max_steps=1
every_rank renamed_plain 2 2
run renamed 2 init="$work/renamed.safetensors" prefix=model.= "${common[@]}" \
  --output_dir="$work/renamed" --max_steps=2 --learning_rate=0 --save_strategy=no
every_rank renamed 2 0
py same "$work/init.safetensors" "$work/renamed/model.safetensors" || fail "prefix map: saved != init"

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "fine-tuning round trip: all cases passed"
