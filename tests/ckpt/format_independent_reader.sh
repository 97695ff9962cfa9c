#!/usr/bin/env bash
# The independent reader: a checkpoint written by Cohort's format library (2 and 3 ranks) is
# read with tests/ckpt/independent_reader.py, which follows only docs/checkpoint-format.md
# (h5py + its own protobuf decoding + its own CRC32C), and must equal the fixture's values;
# a flipped payload byte must make that reader fail on the checksum too.
# Usage: format_independent_reader.sh FIXTURE READER_PY WORK_DIR
# Exit 77 (CTest: skipped) when /usr/bin/python3 has no h5py/numpy.
set -u
fixture=$1 reader=$2 work=$3
python=/usr/bin/python3
if ! "$python" -c "import h5py, numpy" 2>/dev/null; then
  echo "SKIP: $python cannot import h5py and numpy (apt-get install python3-h5py python3-numpy)"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for world in 2 3; do
  ckpt=$work/w$world/checkpoint-20
  "$fixture" "$ckpt" --world "$world" --expected "$work/w$world/expected" --best 0.5 \
    || { fail "fixture (world $world)"; continue; }
  timeout 120 "$python" "$reader" "$ckpt" --expected "$work/w$world/expected" \
    || fail "independent reader on the world-$world checkpoint"
done

# A flipped byte inside the payload of a large dataset (its file offset from h5py).
ckpt=$work/w2/checkpoint-20
cp -r "$ckpt" "$work/flipped"
"$python" - "$work/flipped/shard-00001-of-00002.h5" <<'PY' || fail "could not corrupt the copy"
import sys, h5py
path = sys.argv[1]
with h5py.File(path, "r") as f:
    d = f["/model/embed.weight"]
    offset = d.id.get_offset() + d.id.get_storage_size() // 2
with open(path, "r+b") as f:
    f.seek(offset)
    b = f.read(1)
    f.seek(offset)
    f.write(bytes([b[0] ^ 0x10]))
PY
out=$(timeout 120 "$python" "$reader" "$work/flipped" --expected "$work/w2/expected" 2>&1)
rc=$?
if [ $rc -ne 1 ] || ! grep -q "shard-00001-of-00002.h5 /model/embed.weight: checksum mismatch" <<<"$out"; then
  fail "a flipped byte: reader rc $rc, output: $out"
fi

# A checkpoint with the sentinel is refused.
cp -r "$ckpt" "$work/incomplete" && touch "$work/incomplete/checkpoint-is-incomplete.txt"
out=$(timeout 120 "$python" "$reader" "$work/incomplete" --expected "$work/w2/expected" 2>&1)
[ $? -eq 1 ] && grep -q incomplete <<<"$out" || fail "sentinel not honoured: $out"

if [ $failures -eq 0 ]; then
  echo "PASS: the independent reader agrees with Cohort"
  rm -rf "$work"
  exit 0
fi
exit 1
