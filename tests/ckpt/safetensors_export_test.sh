#!/usr/bin/env bash
# `cohort ckpt export --format safetensors` read by an independent reader (safetensors_check.py,
# written from the published format alone) equals `cohort ckpt export` HDF5 bit for bit, for
# --dtype keep, float32 and bf16 (bf16: numpy's round-to-nearest-even of the values), at
# prefix model/ and "" (every tensor); bad options are usage errors (exit 2).
# Usage: safetensors_export_test.sh COHORT FIXTURE CHECK_PY WORK_DIR
set -u
cohort=$1 fixture=$2 check=$3 work=$4
if ! /usr/bin/python3 -c 'import numpy, h5py' 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 lacks numpy or h5py"; exit 77
fi
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ck=$work/checkpoint-20
"$fixture" "$ck" --world 3 >/dev/null || fail "fixture"

for prefix in model/ ""; do
  tag=${prefix%/}; tag=${tag:-all}
  "$cohort" ckpt export "$ck" "$work/$tag.h5" --prefix "$prefix" >/dev/null || fail "hdf5 export $tag"
  for mode in keep float32 bf16; do
    out=$work/$tag-$mode.safetensors
    if ! "$cohort" ckpt export "$ck" "$out" --prefix "$prefix" --format safetensors --dtype "$mode" \
        >"$work/$tag-$mode.log" 2>&1; then
      fail "export $tag $mode: $(cat "$work/$tag-$mode.log")"; continue
    fi
    [ -e "$out.tmp" ] && fail "$out.tmp left behind"
    /usr/bin/python3 "$check" equals-h5 "$out" "$work/$tag.h5" "$mode" || fail "compare $tag $mode"
  done
done
# The conversions changed something (the test would not notice an ignored --dtype otherwise).
/usr/bin/python3 "$check" differ "$work/model-keep.safetensors" "$work/model-bf16.safetensors" \
  >/dev/null || fail "bf16 export equals the keep export"

# Usage errors: exit 2, one line.
expect_rc() {
  local want=$1; shift
  "$cohort" ckpt export "$@" >"$work/usage.out" 2>&1
  local rc=$?
  [ $rc -eq "$want" ] || fail "'cohort ckpt export $*' exited $rc, expected $want: $(cat "$work/usage.out")"
}
expect_rc 2 "$ck" "$work/x.safetensors" --format onnx
expect_rc 2 "$ck" "$work/x.safetensors" --format safetensors --dtype int4
expect_rc 2 "$ck" "$work/x.h5" --dtype bf16
# A damaged checkpoint: exit 1 and nothing published.
cp -r "$ck" "$work/broken"
touch "$work/broken/checkpoint-is-incomplete.txt"
expect_rc 1 "$work/broken" "$work/broken.safetensors" --format safetensors
[ -e "$work/broken.safetensors" ] && fail "an incomplete checkpoint was exported"

if [ $failures -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "safetensors export: all cases passed"
