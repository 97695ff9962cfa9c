#!/usr/bin/env bash
# `cohort ckpt ls|verify|inspect|export` on fixture checkpoints (valid, preempted, incomplete,
# missing shard, flipped payload byte): tables and exit codes, the bad file named, usage
# errors as one line with exit 2, and an export readable by h5dump (and, when h5py is there,
# equal to the fixture's values).
# Usage: cli_test.sh COHORT FIXTURE READER_PY WORK_DIR
set -u
cohort=$1 fixture=$2 reader=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
out=$work/out
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# run NAME EXPECTED_RC ARGS...: runs `cohort ckpt ARGS`, output in $work/NAME.out
run() {
  local name=$1 want=$2
  shift 2
  timeout 60 "$cohort" ckpt "$@" >"$work/$name.out" 2>&1
  local rc=$?
  if [ $rc -ne "$want" ]; then
    fail "$name: 'cohort ckpt $*' exited $rc, expected $want"
    sed 's/^/    /' "$work/$name.out"
  fi
}
# expect NAME REGEX: the output of run NAME matches the extended regex
expect() {
  grep -Eq -- "$2" "$work/$1.out" || { fail "$1: no line matching '$2'"; sed 's/^/    /' "$work/$1.out"; }
}
# flip FILE DATASET: flips one byte in the middle of the dataset's payload (offset: h5dump)
flip() {
  local off size pos byte
  off=$(h5dump -p -H -d "$2" "$1" | awk '/OFFSET/ {print $2; exit}')
  size=$(h5dump -p -H -d "$2" "$1" | awk '/ SIZE / {print $2; exit}')
  [ -n "$off" ] && [ -n "$size" ] || { fail "no offset for $2 in $1"; return; }
  pos=$((off + size / 2))
  byte=$(od -An -tu1 -j "$pos" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((byte ^ 0x55)))" | dd of="$1" bs=1 seek="$pos" conv=notrunc status=none
}

"$fixture" "$out/checkpoint-10" --best 0.7 >/dev/null || fail "fixture 10"
"$fixture" "$out/checkpoint-20" --world 3 --best 0.5 --preempted --expected "$work/expected" \
  >/dev/null || fail "fixture 20"
"$fixture" "$out/checkpoint-5" >/dev/null || fail "fixture 5"
rm -f "$out/checkpoint-5/shard-00001-of-00002.h5"
"$fixture" "$out/checkpoint-30" >/dev/null || fail "fixture 30"
touch "$out/checkpoint-30/checkpoint-is-incomplete.txt"
"$fixture" "$out/checkpoint-40" >/dev/null || fail "fixture 40"
flip "$out/checkpoint-40/shard-00001-of-00002.h5" /model/embed.weight
mkdir -p "$out/runs"

# ---- ls
run ls 0 ls "$out"
steps=$(awk '$2 ~ /^(valid|incomplete|corrupt)$/ {printf "%s ", $1}' "$work/ls.out")
[ "$steps" = "5 10 20 30 40 " ] || fail "ls: steps '$steps', expected '5 10 20 30 40 '"
expect ls '^STEP +STATUS +SIZE +WORLD +BEST_METRIC +PREEMPTED'
expect ls '^5 +corrupt .*shard-00001-of-00002\.h5 is missing'
expect ls '^10 +valid +[0-9.]+ KiB +2 +0\.7 +no'
expect ls '^20 +valid +[0-9.]+ KiB +3 +0\.5 +yes'
expect ls '^30 +incomplete .*checkpoint-is-incomplete\.txt'
expect ls '^40 +valid .*latest valid'  # the cheap check does not read payloads
expect ls '5 checkpoints: 3 valid, 1 incomplete, 1 corrupt'
run ls_verify 0 ls "$out" --verify
expect ls_verify '^40 +corrupt .*shard-00001-of-00002\.h5 dataset /model/embed\.weight: checksum mismatch'
expect ls_verify '^20 +valid .*latest valid, best'
run ls_one 0 ls "$out/checkpoint-10"
expect ls_one '^10 +valid'
run ls_empty 0 ls "$out/runs"
expect ls_empty 'no checkpoint'

# ---- verify
run verify_ok 0 verify "$out/checkpoint-20"
expect verify_ok "^OK $out/checkpoint-20: 12 tensors, 26 chunks in 3 shards"
run verify_flipped 1 verify "$out/checkpoint-40"
expect verify_flipped 'shard-00001-of-00002\.h5 dataset /model/embed\.weight: checksum mismatch'
run verify_missing 1 verify "$out/checkpoint-5"
expect verify_missing 'checkpoint-5/shard-00001-of-00002\.h5 is missing'
run verify_incomplete 1 verify "$out/checkpoint-30"
expect verify_incomplete 'incomplete'
cp -r "$out/checkpoint-10" "$work/truncated"
truncate -s 100000 "$work/truncated/shard-00000-of-00002.h5"
run verify_truncated 1 verify "$work/truncated"
expect verify_truncated 'truncated/shard-00000-of-00002\.h5'
cp -r "$out/checkpoint-10" "$work/garbage"
head -c 500 /dev/urandom >"$work/garbage/manifest.pb"
run verify_garbage 1 verify "$work/garbage"
expect verify_garbage 'garbage/manifest\.pb'

# ---- inspect
run inspect 0 inspect "$out/checkpoint-20"
expect inspect '^status +valid'
expect inspect '^world size +3'
expect inspect '^  global step +20$'
expect inspect '^  epoch +2$'
expect inspect '^  consumed samples +640$'
expect inspect '^  best metric +0\.5$'
expect inspect "^  best checkpoint +$out/checkpoint-20$"
expect inspect '^  optimizer +adamw \(step 20\)$'
expect inspect '^  last learning rate +0\.0008$'
expect inspect '^  preempted +yes'
expect inspect '^  NAME +DTYPE +SHAPE +CHUNKS +BYTES$'
expect inspect '^  model/embed\.weight +float32 +\[600, 70\] +3 +168000$'
expect inspect '^  model/fc\.bias +bfloat16 +\[10\] +3 +20$'
expect inspect '^  model/scale +float64 +\[\] +1 +8$'
expect inspect '^  rng/2/torch_cpu +uint8 +\[5056\] +1 +5056$'
expect inspect '^training arguments: 4 lines'
run inspect_args 0 inspect "$out/checkpoint-20" --args
expect inspect_args '^learning_rate: 0\.001$'
run inspect_incomplete 1 inspect "$out/checkpoint-30"
expect inspect_incomplete '^status +incomplete'

# ---- export
run export 0 export "$out/checkpoint-20" "$work/model.h5"
expect export 'exported 6 tensors'
h5dump -H "$work/model.h5" >"$work/h5dump.out" 2>&1 || fail "h5dump cannot read the export"
grep -Eq 'DATASET "embed.weight"' "$work/h5dump.out" || fail "export: no /embed.weight"
grep -Eq 'DATASPACE +SIMPLE \{ \( 600, 70 \) / \( 600, 70 \) \}' "$work/h5dump.out" ||
  fail "export: /embed.weight has the wrong shape"
if /usr/bin/python3 -c "import h5py, numpy" 2>/dev/null; then
  /usr/bin/python3 "$reader" --export "$work/model.h5" --expected "$work/expected" \
    --prefix model/ || fail "export: values differ from the fixture"
  run export_opt 0 export "$out/checkpoint-20" "$work/opt.h5" --prefix optimizer/exp_avg/
  /usr/bin/python3 "$reader" --export "$work/opt.h5" --expected "$work/expected" \
    --prefix optimizer/exp_avg/ || fail "export --prefix: values differ"
else
  echo "note: /usr/bin/python3 has no h5py; export values checked with h5dump only"
fi
run export_incomplete 1 export "$out/checkpoint-30" "$work/x.h5"
run export_flipped 1 export "$out/checkpoint-40" "$work/x.h5"
expect export_flipped 'checkpoint-40/shard-00001-of-00002\.h5'
[ -e "$work/x.h5" ] || [ -e "$work/x.h5.tmp" ] && fail "a failed export left a file behind"

# ---- usage errors: one line, exit 2
usage() {
  local name=$1
  shift
  run "$name" 2 "$@"
  local n
  n=$(wc -l <"$work/$name.out")
  [ "$n" -eq 1 ] || { fail "$name: $n lines of output, expected one"; sed 's/^/    /' "$work/$name.out"; }
}
usage u_none
usage u_unknown frobnicate
usage u_ls_missing ls
usage u_ls_nodir ls "$work/no-such-dir"
usage u_ls_extra ls "$out" "$out"
usage u_ls_option ls "$out" --bogus
usage u_verify_nodir verify "$work/no-such-dir"
usage u_inspect_missing inspect
usage u_export_missing export "$out/checkpoint-20"
usage u_export_prefix export "$out/checkpoint-20" "$work/y.h5" --prefix
usage u_export_noprefix export "$out/checkpoint-20" "$work/y.h5" --prefix=nothing/
expect u_ls_nodir 'no such directory'
expect u_export_noprefix "no tensor name starts with 'nothing/'"
run help 0 --help
expect help '^usage: cohort ckpt'
run help_sub 0 verify --help
expect help_sub '^usage: cohort ckpt'

# The real tool on damaged input (issue 20 acceptance; the library-level fuzz is in
# integrity_test.cc): every 17th byte of a manifest.pb and 20 shard bytes changed in turn,
# `cohort ckpt verify` exits 1 with one FAILED line each time: no crash, no hang, no OK.
"$fixture" "$work/fuzz/checkpoint-1" >/dev/null || fail "fixture fuzz"
fuzz=$work/fuzz/checkpoint-1
fuzzed=0
for file in manifest.pb shard-00001-of-00002.h5; do
  cp "$fuzz/$file" "$work/pristine"
  size=$(stat -c %s "$work/pristine")
  if [ "$file" = manifest.pb ]; then step=17; else step=$((size / 20)); fi
  for ((pos = 0; pos < size; pos += step)); do
    cp "$work/pristine" "$fuzz/$file"
    byte=$(od -An -tu1 -j "$pos" -N1 "$fuzz/$file" | tr -d ' ')
    printf "$(printf '\\%03o' $((byte ^ 0x21)))" | dd of="$fuzz/$file" bs=1 seek="$pos" conv=notrunc status=none
    timeout 60 "$cohort" ckpt verify "$fuzz" >"$work/fuzz.out" 2>&1
    rc=$?
    fuzzed=$((fuzzed + 1))
    if [ $rc -ne 1 ] || [ "$(grep -c '^cohort ckpt verify: FAILED: ' "$work/fuzz.out")" -ne 1 ]; then
      fail "verify after changing byte $pos of $file: exit $rc"; sed 's/^/    /' "$work/fuzz.out"
      break
    fi
  done
  cp "$work/pristine" "$fuzz/$file"
done
run fuzz_restored 0 verify "$fuzz"
echo "cohort ckpt verify rejected $fuzzed changed bytes"

if [ $failures -eq 0 ]; then
  echo "PASS: cohort ckpt"
  rm -rf "$work"
  exit 0
fi
echo "$failures failures"
exit 1
