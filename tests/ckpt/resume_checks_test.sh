#!/usr/bin/env bash
# Resume decisions and checks through the Trainer on 2 ranks (issue 20):
#  1. a crash during the FIRST save: under `cohort run --max-restarts 1` with
#     resume_from_checkpoint=true, rank 1 is SIGKILLed while it writes checkpoint-2 (a
#     256 MiB buffer makes the save long). The relaunched job finds only that interrupted
#     save, starts fresh saying so in one line, and exits 0 with the parameters and every
#     logged value of an uninterrupted run;
#  2. a checkpoint that had COMPLETED and is damaged, with no valid one beside it: resume
#     refuses naming the damaged file (exit 2 when the damage shows before loading, e.g. a
#     truncated shard; 1, CheckpointCorrupt, when a checksum fails while loading);
#  3. a checkpoint whose shapes or dtypes do not fit the model (a transposed weight has the
#     same number of elements, so element-range reads would load it): one error listing
#     every mismatch, exit 2.
# Usage: resume_checks_test.sh PROBE COHORT_CLI FIXTURE MPIEXEC [MPIEXEC FLAGS...]
set -uo pipefail
probe=$1; cohort=$2; fixture=$3; shift 3
mpi=("$@")
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
killer=
trap '[[ -n $killer ]] && kill $killer 2>/dev/null; rm -rf "$tmp"' EXIT
common=(--max_steps=6 --logging_steps=1 --learning_rate=0.05 --seed=7 --report_to=none
        --per_device_train_batch_size=3 --gradient_accumulation_steps=2 --save_steps=2
        --probe-ballast-mb=256)
fail=0

"${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$tmp/ref" --save_strategy=no \
  --probe-out="$tmp/ref.txt" > "$tmp/ref.log" 2>&1 || { cat "$tmp/ref.log"; exit 1; }

# 1. SIGKILL rank 1 as soon as its shard of the first checkpoint appears (first attempt only).
out=$tmp/first
mkdir -p "$tmp/pids"
(
  for _ in $(seq 1 12000); do
    if [[ -e "$out/checkpoint-2/shard-00001-of-00002.h5" && -f "$tmp/pids/rank-1.pid" ]]; then
      kill -9 "$(cat "$tmp/pids/rank-1.pid")"; echo "killed rank 1 during the first save" > "$tmp/killed"
      exit 0
    fi
    sleep 0.005
  done
) &
killer=$!
"$cohort" run -np 2 --max-restarts 1 -- "$probe" "${common[@]}" --output_dir="$out" \
  --resume_from_checkpoint=true --probe-pid-dir="$tmp/pids" --probe-out="$tmp/first.txt" \
  > "$tmp/first.log" 2>&1
rc=$?
wait $killer; killer=
if [[ ! -f $tmp/killed ]]; then echo "FAIL the killer never fired"; tail -20 "$tmp/first.log"; exit 1; fi
if [[ $rc -eq 0 ]]; then
  echo "ok   cohort run --max-restarts 1 exits 0 after rank 1 died in the first save"
else
  echo "FAIL cohort run exited $rc after a crash in the first save:"
  grep -i "resume\|error\|restart\|fail" "$tmp/first.log" | head -10; fail=1
fi
n=$(grep -c "no checkpoint in $out ever completed ($out/checkpoint-2: save interrupted; kept.*starting fresh" "$tmp/first.log")
if [[ $n -eq 1 ]]; then
  echo "ok   one line says the interrupted save was found and the run starts fresh"
else
  echo "FAIL $n 'starting fresh' lines:"; grep -i "resume\|skipping" "$tmp/first.log"; fail=1
fi
if [[ -f $tmp/first.txt ]] && python3 "$here/compare_runs.py" "$tmp/ref.txt" "$tmp/first.txt"; then
  echo "ok   the relaunched run has the parameters and every logged value of an uninterrupted one"
else
  echo "FAIL the trajectory differs from the uninterrupted run"; fail=1
fi
[[ -f $out/checkpoint-2/manifest.pb && ! -e $out/checkpoint-2/checkpoint-is-incomplete.txt ]] ||
  { echo "FAIL the dead save was not replaced by the relaunched run's checkpoint-2"; fail=1; }

# 2. Keep only checkpoint-2 (complete) and damage it: refused, naming the file. A truncated
#    shard shows before loading (a ConfigError, exit 2); a flipped data byte while loading
#    (CheckpointCorrupt).
for damage in truncate flip; do
  lost=$tmp/lost-$damage
  mkdir -p "$lost" && cp -r "$out/checkpoint-2" "$lost/"
  python3 - "$lost/checkpoint-2/shard-00000-of-00002.h5" "$damage" <<'PY'
import os, sys
p, how = sys.argv[1], sys.argv[2]; size = os.path.getsize(p)
if how == "truncate":
    os.truncate(p, size - 4096)
else:
    with open(p, "r+b") as f:
        f.seek(size // 2); b = f.read(8); f.seek(size // 2); f.write(bytes(x ^ 0xFF for x in b))
PY
  "${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$lost" --resume_from_checkpoint=true \
    > "$tmp/lost-$damage.log" 2>&1
  rc=$?
  shard="$lost/checkpoint-2/shard-00000-of-00002.h5"
  if [[ $damage == truncate ]]; then
    pattern="no valid checkpoint in $lost.*completed but damaged.*$shard"; want=2
  else
    pattern="$shard.*checksum mismatch"; want=1
  fi
  if [[ $rc -eq $want ]] && grep -q "$pattern" "$tmp/lost-$damage.log" &&
     ! grep -q "starting fresh" "$tmp/lost-$damage.log"; then
    echo "ok   damaged ($damage) complete checkpoint, none valid beside it: refused (exit $rc) naming the shard"
  else
    echo "FAIL damaged ($damage) complete checkpoint: exit $rc"
    grep -i "resume\|error" "$tmp/lost-$damage.log" | head -5; fail=1
  fi
done

# 3. Shapes and dtypes that do not fit the model (the manifest edited and re-sealed).
fit=$tmp/fit
mkdir -p "$fit" && cp -r "$out/checkpoint-4" "$fit/"
"$fixture" "$fit/checkpoint-4" --edit model/fc1.weight 6,16 > /dev/null &&
  "$fixture" "$fit/checkpoint-4" --edit optimizer/exp_avg/fc1.weight 6,16 > /dev/null &&
  "$fixture" "$fit/checkpoint-4" --edit model/scale 4 int64 > /dev/null ||
  { echo "FAIL could not edit the manifest"; exit 1; }
"${mpi[@]}" -n 2 "$probe" "${common[@]}" --output_dir="$fit" \
  --resume_from_checkpoint="$fit/checkpoint-4" > "$tmp/fit.log" 2>&1
rc=$?
line=$(grep "does not fit the model" "$tmp/fit.log" | head -1)
if [[ $rc -eq 2 ]] && grep -q "(3 mismatches)" <<< "$line" &&
   grep -q "model/fc1.weight: checkpoint \[6, 16\] float64, model \[16, 6\] float64" <<< "$line" &&
   grep -q "optimizer/exp_avg/fc1.weight: checkpoint \[6, 16\] float64, model \[16, 6\] float64" <<< "$line" &&
   grep -q "model/scale: checkpoint \[4\] int64, model \[4\] float64" <<< "$line"; then
  echo "ok   a transposed weight and a relabelled dtype: one error (exit 2) listing all 3 mismatches"
else
  echo "FAIL shape check: exit $rc: ${line:-no mismatch line}"; grep -i "error" "$tmp/fit.log" | head -3; fail=1
fi
if grep -q "Segmentation\|core dumped\|terminate called" "$tmp"/*.log; then echo "FAIL a crash dump"; fail=1; fi
exit $fail
