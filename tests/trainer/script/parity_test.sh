#!/usr/bin/env bash
# Issue 16's acceptance test: a GPT-style model written in Python (gpt_model.py: embedding,
# 2 causal-attention blocks, tied or untied head), exported with torch.jit.script, trained
# by cohort-train on a token file made from real text (/usr/share/common-licenses) for 20
# steps at 1, 2 and 4 ranks with the same global batch (8 windows: 4x2, 2x2, 2x1 per-device
# x accumulation), ends with the parameters of ONE PyTorch process training the same file
# with torch.optim.AdamW on the same batches (reference.py): float64 within 1e-10 relative,
# float32 within 1e-5 relative L2. Three model flavours: the loss divided by
# num_items_in_batch (HF's loss kwargs), a mean loss rescaled by the Trainer, logits only.
# Bad inputs end with one error line and exit code 2 on every rank, no hang.
# Usage: parity_test.sh COHORT_TRAIN MPIEXEC WORK_DIR [MPI FLAGS...]
set -uo pipefail
prog=$1; mpiexec=$2; work=$3; shift 3
mpiflags=("$@")
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
if ! $py -c "import torch" 2>/dev/null; then echo "SKIP: /usr/bin/python3 has no torch (python3-torch)"; exit 77; fi
rm -rf "$work"; mkdir -p "$work"
fail=0
steps=20; seq=16; seed=11; lr=0.003; wd=0.1; warmup=2; clip=1.0

cat > "$work/args.txtpb" <<ARGS
max_steps: $steps
learning_rate: $lr
weight_decay: $wd
warmup_steps: $warmup
lr_scheduler_type: "linear"
max_grad_norm: $clip
seed: $seed
logging_steps: 5
save_strategy: "steps"
save_steps: 10
report_to: "jsonl"
overwrite_output_dir: true
ARGS

# run NAME NP PER_DEVICE ACCUM MODEL_DIR [extra args]
run() {
  local name=$1 np=$2 b=$3 acc=$4 dir=$5; shift 5
  timeout 300 "$mpiexec" -n "$np" "${mpiflags[@]}" "$prog" --model "$dir/model.pt" \
    --train_files "$dir/tokens.bin" --seq_len $seq --vocab_size 256 --config "$work/args.txtpb" \
    --per_device_train_batch_size=$b --gradient_accumulation_steps=$acc \
    --output_dir="$work/out-$name" "$@" > "$work/$name.log" 2>&1
}

# The cases: FLAVOUR DTYPE TOLERANCE HEAD LR RANKS... Model flavours (gpt_model.py --loss):
# items = the loss divided by num_items_in_batch (HF's loss kwargs), mean = a mean loss the
# Trainer rescales, none = logits only (the Trainer's loss). float32 rounding differs with
# the reduction order; a smaller step keeps Adam's normalised updates from amplifying it.
cases=("items float64 1e-10 tied $lr 1 2 4"
       "mean float64 1e-10 untied $lr 2"
       "none float32 1e-5 tied 0.001 2")
# One Python process exports every model (a torch import costs seconds).
: > "$work/export.txt"
for c in "${cases[@]}"; do
  read -r flavour dtype tol head plr nps <<< "$c"
  echo "$work/$flavour-$dtype-$head --dtype $dtype --loss $flavour --tokens 8192" \
    "$([[ $head == untied ]] && echo --untied)" >> "$work/export.txt"
done
echo "$work/pixels --loss pixels --tokens 1024" >> "$work/export.txt"  # for the signature check
$py "$here/gpt_model.py" --cases "$work/export.txt" || { echo "FAIL export"; exit 1; }
echo "     exported at ${SECONDS}s"
: > "$work/reference.txt"
for c in "${cases[@]}"; do
  read -r flavour dtype tol head plr nps <<< "$c"
  dir="$work/$flavour-$dtype-$head"
  runs=()
  for np in $nps; do
    b=2; acc=1
    case $np in 1) b=4; acc=2;; 2) b=2; acc=2;; 4) b=2; acc=1;; esac
    name="$flavour-$dtype-$head-np$np"
    if ! run "$name" "$np" $b $acc "$dir" --learning_rate=$plr; then
      echo "FAIL cohort-train $name:"; tail -5 "$work/$name.log"; fail=1; continue
    fi
    runs+=("$work/out-$name/model.safetensors")
    echo "     cohort-train $name done at ${SECONDS}s"
  done
  [[ ${#runs[@]} -gt 0 ]] || continue
  echo "--model $dir/model.pt --tokens $dir/tokens.bin --seq_len $seq --steps $steps" \
    "--global_batch 8 --seed $seed --lr $plr --weight_decay $wd --warmup $warmup" \
    "--max_grad_norm $clip --tolerance $tol ${runs[*]}" >> "$work/reference.txt"
done
# One PyTorch process computes every reference and compares.
$py "$here/reference.py" --cases "$work/reference.txt" || fail=1
echo "     references done at ${SECONDS}s"

# The run wrote checkpoints and logs as the Trainer does.
out="$work/out-items-float64-tied-np2"
for f in checkpoint-10/manifest.pb checkpoint-20/manifest.pb log_history.jsonl model.safetensors; do
  [[ -e $out/$f ]] && echo "ok   $f" || { echo "FAIL missing $out/$f"; fail=1; }
done

# --init_from: a run started from the trained weights with learning rate 0 saves exactly
# those weights (AdamW's decay is lr-scaled too), where a run from the random init does not.
init="$out/model.safetensors"
for from in "$init" ""; do
  name=init-random
  [[ -n $from ]] && name=init-trained
  if run "$name" 2 2 1 "$work/items-float64-tied" --learning_rate=0 --max_steps=1 \
      --save_strategy=no ${from:+--init_from "$from"}; then
    $py - "$init" "$work/out-$name/model.safetensors" "${from:+same}" <<'PY' || fail=1
import json, struct, sys
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n]); head.pop("__metadata__", None)
    return {k: raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in head.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
same = a == b
want = sys.argv[3] == "same"
print(("ok   " if same == want else "FAIL ") + f"--init_from: {len(b)} tensors "
      + ("equal to" if same else "differ from") + " the trained weights")
sys.exit(0 if same == want else 1)
PY
  else
    echo "FAIL cohort-train $name:"; tail -5 "$work/$name.log"; fail=1
  fi
done

# Bad inputs: one clear line, exit 2, every rank ends (timeout 120: no hang).
dir="$work/items-float64-tied"
bad() {  # bad NAME EXPECTED_TEXT ARGS...
  local name=$1 want=$2; shift 2
  timeout 120 "$mpiexec" -n 2 "${mpiflags[@]}" "$prog" --config "$work/args.txtpb" \
    --output_dir="$work/out-bad" --seq_len $seq "$@" > "$work/bad-$name.log" 2>&1
  local code=$?
  if [[ $code -eq 2 ]] && grep -q -- "$want" "$work/bad-$name.log"; then
    echo "ok   $name (${SECONDS}s): exit 2, $(grep -m1 -- "$want" "$work/bad-$name.log" | cut -c1-150)"
  else
    echo "FAIL $name: exit $code (want 2 and '$want'):"; tail -5 "$work/bad-$name.log"; fail=1
  fi
}
head -c 5000 /dev/urandom > "$work/garbage.pt"
bad garbage-model "cannot be loaded" --model "$work/garbage.pt" --train_files "$dir/tokens.bin"
bad signature "needs 'pixel_values'" --model "$work/pixels/model.pt" --train_files "$dir/tokens.bin"
bad token-file "tokens-missing.bin" --model "$dir/model.pt" --train_files "$work/tokens-missing.bin"
bad init-from "no-such-weights" --model "$dir/model.pt" --train_files "$dir/tokens.bin" \
  --init_from "$work/no-such-weights.safetensors"
echo "time: ${SECONDS}s"
exit $fail
