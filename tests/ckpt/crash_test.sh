#!/usr/bin/env bash
# Crash safety and corruption through the Trainer on 2 ranks:
#  1. rank 1 SIGKILLed while it writes checkpoint-4 (a 256 MiB buffer makes the save long):
#     checkpoint-4 stays incomplete (sentinel), checkpoint-2 stays valid;
#  2. resume_from_checkpoint=true skips checkpoint-4, resumes from checkpoint-2 and ends
#     with the parameters of an uninterrupted run (rotation then removes the dead save);
#  3. flipped bytes in the newest checkpoint: auto-resume skips it (named), an explicit path
#     to it fails with CheckpointCorrupt naming the shard.
# Usage: crash_test.sh PROBE COHORT_CLI|- MPIEXEC [MPIEXEC FLAGS...]
set -uo pipefail
probe=$1; cli=$2; shift 2
mpi=("$@")
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'kill $killer 2>/dev/null; rm -rf "$tmp"' EXIT
killer=
common=(--max_steps=6 --logging_steps=1 --learning_rate=0.05 --seed=7 --report_to=none
        --per_device_train_batch_size=3 --gradient_accumulation_steps=2 --save_steps=2
        --probe-ballast-mb=256)
fail=0
out=$tmp/run

"${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$tmp/ref" --save_strategy=no \
  --probe-out="$tmp/ref.txt" > "$tmp/ref.log" 2>&1 || { cat "$tmp/ref.log"; exit 1; }

# 1. SIGKILL rank 1 as soon as its shard of checkpoint-4 appears.
mkdir -p "$tmp/pids"
(
  end=$((SECONDS + 300))  # a hang detector: a busy machine may take long to get there
  while ((SECONDS < end)); do
    if [[ -e "$out/checkpoint-4/shard-00001-of-00002.h5" && -f "$tmp/pids/rank-1.pid" ]]; then
      kill -9 "$(cat "$tmp/pids/rank-1.pid")"; echo "killed rank 1 during the save" > "$tmp/killed"; exit 0
    fi
    sleep 0.005
  done
) &
killer=$!
"${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$out" --probe-pid-dir="$tmp/pids" \
  > "$tmp/crash.log" 2>&1
rc=$?
kill $killer 2>/dev/null  # the job is over: a killer still polling has missed the save
wait $killer
if [[ ! -f $tmp/killed ]]; then echo "FAIL the killer never fired"; cat "$tmp/crash.log"; exit 1; fi
[[ $rc -ne 0 ]] || { echo "FAIL the job exited 0 after a rank was killed"; fail=1; }
if [[ -f $out/checkpoint-4/checkpoint-is-incomplete.txt && ! -f $out/checkpoint-4/manifest.pb ]]; then
  echo "ok   checkpoint-4 is incomplete after the kill"
else
  echo "FAIL checkpoint-4: $(ls "$out/checkpoint-4")"; fail=1
fi
[[ -f $out/checkpoint-2/manifest.pb && ! -e $out/checkpoint-2/checkpoint-is-incomplete.txt ]] ||
  { echo "FAIL checkpoint-2 damaged"; fail=1; }
if [[ $cli != - ]]; then
  "$cli" ckpt ls "$out" > "$tmp/ls.txt" 2>&1
  if grep -E '^\s*4\b.*incomplete' "$tmp/ls.txt" > /dev/null && grep -E '^\s*2\b.*valid' "$tmp/ls.txt" > /dev/null; then
    echo "ok   cohort ckpt ls: step 4 incomplete, step 2 valid"
  else
    echo "FAIL cohort ckpt ls output:"; cat "$tmp/ls.txt"; fail=1
  fi
fi

# 2. Auto-resume skips the dead save.
"${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$out" --resume_from_checkpoint=true \
  --probe-out="$tmp/resumed.txt" > "$tmp/resume.log" 2>&1 || { cat "$tmp/resume.log"; echo "FAIL resume"; exit 1; }
grep -q "skipping .*checkpoint-4 is incomplete" "$tmp/resume.log" || { echo "FAIL no skip line"; fail=1; }
grep -q "^resumed_from $out/checkpoint-2" "$tmp/resumed.txt" || { echo "FAIL not resumed from 2"; fail=1; }
python3 "$here/compare_runs.py" "$tmp/ref.txt" "$tmp/resumed.txt" || fail=1
[[ ! -e $out/checkpoint-4 || -f $out/checkpoint-4/manifest.pb ]] || { echo "FAIL the dead save was not cleaned up"; fail=1; }

# 3. Flip bytes in the middle of the newest checkpoint's shard 0 (inside the buffer).
python3 - "$out/checkpoint-6/shard-00000-of-00002.h5" <<'PY'
import os, sys
p = sys.argv[1]; size = os.path.getsize(p)
with open(p, "r+b") as f:
    f.seek(size // 2); b = f.read(8); f.seek(size // 2); f.write(bytes(x ^ 0xFF for x in b))
PY
"${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$out" --resume_from_checkpoint=true \
  --probe-out="$tmp/skip.txt" > "$tmp/skip.log" 2>&1 || { cat "$tmp/skip.log"; echo "FAIL resume past a corrupt checkpoint"; exit 1; }
grep -q "skipping $out/checkpoint-6: .*checksum mismatch.*shard-00000-of-00002.h5" "$tmp/skip.log" ||
  grep -q "skipping $out/checkpoint-6: .*shard-00000-of-00002.h5.*checksum mismatch" "$tmp/skip.log" ||
  { echo "FAIL no line naming the corrupt shard"; grep -i skip "$tmp/skip.log"; fail=1; }
grep -q "^resumed_from $out/checkpoint-" "$tmp/skip.txt" && ! grep -q "^resumed_from $out/checkpoint-6" "$tmp/skip.txt" ||
  { echo "FAIL resumed from the corrupt checkpoint"; fail=1; }
# The run re-saved checkpoint-6; damage it again and name it explicitly: a clear error.
python3 - "$out/checkpoint-6/shard-00001-of-00002.h5" <<'PY'
import os, sys
p = sys.argv[1]; size = os.path.getsize(p)
with open(p, "r+b") as f:
    f.seek(size // 2); b = f.read(8); f.seek(size // 2); f.write(bytes(x ^ 0xFF for x in b))
PY
"${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$out" \
  --resume_from_checkpoint="$out/checkpoint-6" > "$tmp/explicit.log" 2>&1
rc=$?
if [[ $rc -ne 0 ]] && grep -q "checksum mismatch" "$tmp/explicit.log" && grep -q "shard-00001-of-00002.h5" "$tmp/explicit.log"; then
  echo "ok   an explicit corrupt checkpoint fails (exit $rc) naming the shard"
else
  echo "FAIL explicit corrupt resume: exit $rc"; tail -5 "$tmp/explicit.log"; fail=1
fi
if grep -q "Segmentation\|core dumped\|terminate called" "$tmp"/*.log; then echo "FAIL a crash dump"; fail=1; fi
exit $fail
