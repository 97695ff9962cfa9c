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

# A version 1 checkpoint (no manifest or shard-file checksums) still reads.
"$fixture" "$work/v1/checkpoint-20" --version 1 --expected "$work/v1/expected" --best 0.5 > /dev/null &&
  timeout 120 "$python" "$reader" "$work/v1/checkpoint-20" --expected "$work/v1/expected" ||
  fail "independent reader on a version 1 checkpoint"

# A changed manifest byte and a changed byte of HDF5's structures (a dataset attribute, which
# h5py would read without complaint): the checksums of version 2 catch both.
cp -r "$work/w2/checkpoint-20" "$work/edited"
"$python" - "$work/edited" <<'PY' || fail "could not edit the copy"
import sys
d = sys.argv[1]
with open(d + "/manifest.pb", "r+b") as f:
    raw = bytearray(f.read()); raw[len(raw) // 2] ^= 0x01; f.seek(0); f.write(raw)
PY
out=$(timeout 120 "$python" "$reader" "$work/edited" --expected "$work/w2/expected" 2>&1)
[ $? -eq 1 ] && grep -q "manifest checksum mismatch" <<<"$out" || fail "edited manifest: $out"
cp -r "$work/w2/checkpoint-20" "$work/attr"
"$python" - "$work/attr/shard-00000-of-00002.h5" <<'PY' || fail "could not edit the copy"
import sys
p = sys.argv[1]
raw = bytearray(open(p, "rb").read())
i = raw.find(b"optimizer/exp_avg/embed.weight")
raw[i + 10] ^= 0x20
open(p, "wb").write(raw)
PY
out=$(timeout 120 "$python" "$reader" "$work/attr" --expected "$work/w2/expected" 2>&1)
[ $? -eq 1 ] && grep -q "shard-00000-of-00002.h5" <<<"$out" || fail "edited shard metadata: $out"

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
