#!/usr/bin/env bash
# Issue 16 B: the Trainer on a token file (llm.c layout) resumed mid-epoch at another world
# size continues with the same windows. Reference: 1 rank x batch 2 x accumulation 2 for 12
# steps (the 26 windows make 7 steps per epoch: the run crosses an epoch). Legs: 2 ranks x
# batch 2 x accumulation 1 for 5 steps (checkpoint-5), then 1 rank x accumulation 2 resumes
# to step 12. Every rank records (global step, window) for each window it trained on; the
# legs together must have consumed exactly the reference's windows at every step.
# Then bad token files at 2 ranks: a wrong llm.c magic is exit 2 with one "config error:"
# line naming the file; a token id >= vocab, found as the window is read, is exit != 0 with
# an "error (rank N): token file ..." line, and no hang.
# Usage: token_resume_test.sh TOKEN_PROBE WORKDIR MPIEXEC [MPIEXEC_FLAGS...]
set -u
probe=$1 work=$2 mpiexec=$3
shift 3
mpiflags=("$@")
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
T=8
# llm.c GPT-2 layout: 256 int32 (magic, version 1, count), then uint16 ids; token i = i, so a
# window's first token / T is its index. bad_magic.bin: the same with magic + 1.
python3 - "$work" "$T" <<'PY' || fail "could not write the token files"
import array, sys
work, T = sys.argv[1], int(sys.argv[2])
n = 26 * T + 3  # a 3-token tail that no window uses
for name, magic in (("tokens.bin", 20240520), ("bad_magic.bin", 20240521)):
    head = array.array("i", [0] * 256)
    head[0], head[1], head[2] = magic, 1, n
    with open(f"{work}/{name}", "wb") as f:
        head.tofile(f)
        array.array("H", range(n)).tofile(f)
PY
run() {  # NP LOG ARGS...
  local np=$1 log=$2
  shift 2
  timeout 300 "$mpiexec" -n "$np" "${mpiflags[@]}" "$probe" --report_to=none --logging_steps=1 \
    --per_device_train_batch_size=2 --learning_rate=0.5 --data_seed=7 "$@" > "$log" 2>&1
}
data=("files=$work/tokens.bin" "seq_len=$T" "vocab=$((26 * T + 3))")
run 1 "$work/ref.out" "${data[@]}" "record=$work/ref" --output_dir="$work/ref" \
  --gradient_accumulation_steps=2 --max_steps=12 --save_strategy=no ||
  { cat "$work/ref.out"; fail "reference run"; }
run 2 "$work/leg1.out" "${data[@]}" "record=$work/leg" --output_dir="$work/legs" \
  --gradient_accumulation_steps=1 --max_steps=5 --save_strategy=steps --save_steps=5 ||
  { cat "$work/leg1.out"; fail "leg 1 (2 ranks)"; }
run 1 "$work/leg2.out" "${data[@]}" "record=$work/leg" --output_dir="$work/legs" \
  --gradient_accumulation_steps=2 --max_steps=12 --save_strategy=no --resume_from_checkpoint=true ||
  { cat "$work/leg2.out"; fail "leg 2 (1 rank, resumed)"; }
cat "$work/ref.out" "$work/leg1.out" "$work/leg2.out"
grep -q "resumed from $work/legs/checkpoint-5 at step 5" "$work/leg2.out" ||
  fail "leg 2 did not resume from checkpoint-5"
sort -n -k1,1 -k2,2 "$work"/ref.rank* > "$work/ref.windows"
sort -n -k1,1 -k2,2 "$work"/leg.rank* > "$work/leg.windows"
[ "$(wc -l < "$work/ref.windows")" -ge 40 ] || fail "the reference recorded too few windows"
if ! diff "$work/ref.windows" "$work/leg.windows" > "$work/windows.diff"; then
  head -20 "$work/windows.diff"
  fail "the resumed legs (2 ranks, then 1) trained on other windows than the reference"
fi
echo "PASS: 12 steps, $(wc -l < "$work/ref.windows") windows: the same at 1 rank and at 2 ranks resumed on 1"

run 2 "$work/magic.out" "files=$work/bad_magic.bin" "seq_len=$T" "vocab=1000" dtype=llmc --output_dir="$work/m"
rc=$?
cat "$work/magic.out"
[ $rc -eq 2 ] || fail "a bad magic exited $rc, not 2"
[ "$(grep -c "config error: token file $work/bad_magic.bin (llm.c format): bad magic 20240521" "$work/magic.out")" -eq 1 ] ||
  fail "a bad magic is not one config error line naming the file"

run 2 "$work/vocab.out" "${data[@]/vocab=*/vocab=100}" --output_dir="$work/v" --max_steps=12
rc=$?
cat "$work/vocab.out"
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a token id >= vocab exited $rc"
grep -Eq "^error \(rank [01]\): token file $work/tokens.bin: token id [0-9]+ at token index [0-9]+ \(byte offset [0-9]+\) is >= vocab_size 100" "$work/vocab.out" ||
  fail "a token id >= vocab is not an error line naming the file"
echo "PASS: bad magic exit 2, token id >= vocab exit $rc, each with one line naming the file"
rm -rf "$work"
