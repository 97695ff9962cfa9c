#!/usr/bin/env python3
"""The independent reference of the TorchScript parity test: ONE PyTorch process trains the
same TorchScript model file with torch.optim.AdamW on the same global batches, then compares
its parameters with the model.safetensors files cohort-train wrote.

  reference.py --cases FILE      (one set of the arguments below per line)
  reference.py --model model.pt --tokens tokens.bin --seq_len T --steps S --global_batch G
               --seed SEED --lr LR --weight_decay WD --warmup W --max_grad_norm C
               --tolerance TOL  RUN.safetensors...

The batches: the token file cut into windows of T tokens (labels = input; position t
predicts token t + 1), taken in the order of docs/trainer.md's global batch plan (the
permutation of data_order_reference.py, seed = data_seed else seed); step k uses the k-th G
windows of that order. Loss: the model's own (sum of token losses / the step's targets
through num_items_in_batch when forward takes it, else its mean), or the cross-entropy of
its logits. Schedule: HF's linear warmup/decay. Clipping: clip_grad_norm_. No decay for
names with bias/norm/ln (HF's default). Exit 1 when any run differs by more than TOL
(relative L2 over all parameters, and max relative per tensor printed)."""
import argparse
import json
import os
import shlex
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from data_order_reference import order  # noqa: E402

DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16,
          "F16": torch.float16, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        raw = bytearray(blob[8 + n + lo:8 + n + hi])
        t = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]) if raw else torch.empty(0)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def lr_factor(step, warmup, total):
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def main(argv=None):
    ap = argparse.ArgumentParser()
    for name, kind in [("model", str), ("tokens", str), ("seq_len", int), ("steps", int),
                       ("global_batch", int), ("seed", int), ("lr", float),
                       ("weight_decay", float), ("warmup", int), ("max_grad_norm", float),
                       ("tolerance", float)]:
        ap.add_argument("--" + name, type=kind, required=True)
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = torch.jit.load(a.model)
    model.train()
    schema = model.forward.schema
    takes = [arg.name for arg in schema.arguments][1:]
    ids = torch.from_numpy(np.fromfile(a.tokens, dtype="<u2").astype(np.int64))
    windows = ids[: (len(ids) // a.seq_len) * a.seq_len].reshape(-1, a.seq_len)
    perm = order(windows.size(0), a.seed, 0)
    assert a.steps * a.global_batch <= len(perm), "the test stays in epoch 0"

    named = list(model.named_parameters())  # deduplicated (a tied head appears once)
    decay = [p for n, p in named if not any(k in n for k in ("bias", "norm", "ln"))]
    no_decay = [p for n, p in named if any(k in n for k in ("bias", "norm", "ln"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, a.warmup, a.steps))
    for step in range(a.steps):
        x = windows[perm[step * a.global_batch:(step + 1) * a.global_batch]]
        items = torch.tensor((x.size(0) * (x.size(1) - 1)), dtype=torch.int64)
        kwargs = {}
        if "labels" in takes:
            kwargs["labels"] = x
        if "num_items_in_batch" in takes:
            kwargs["num_items_in_batch"] = items
        out = model(x, **kwargs)
        if isinstance(out, dict) and "loss" in out:
            loss = out["loss"]
        else:
            logits = out["logits"] if isinstance(out, dict) else out
            v = logits.size(-1)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, v), x[:, 1:].reshape(-1), reduction="sum") / items
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.max_grad_norm)
        opt.step()
        sched.step()

    want = {n: p.detach() for n, p in named}
    initial = {n: p.detach() for n, p in torch.jit.load(a.model).named_parameters()}
    moved = sum(float((want[n] - initial[n]).double().norm() ** 2) for n in want) ** 0.5
    bad = 0
    for run in a.runs:
        got = read_safetensors(run)
        names_ok = set(got) == set(want)
        if not names_ok:
            print("FAIL %s: names differ: %s" % (run, sorted(set(got) ^ set(want))))
        common = [n for n in want if n in got]
        num = sum(float((got[n].double() - want[n].double()).norm() ** 2) for n in common)
        den = sum(float(want[n].double().norm() ** 2) for n in common)
        rel = (num / den) ** 0.5
        worst = max(float((got[n].double() - want[n].double()).abs().max() /
                          want[n].double().abs().max().clamp_min(1e-300)) for n in common)
        ok = rel <= a.tolerance and names_ok
        print("%s %s: relative L2 %.3e, worst tensor max-rel %.3e (tolerance %.0e; the "
              "parameters moved by %.3e in L2)" % ("ok  " if ok else "FAIL", run, rel, worst,
                                                  a.tolerance, moved))
        bad += 0 if ok else 1
    if moved == 0.0:
        print("FAIL the reference did not move the parameters")
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cases"]:  # one case per line of the file: one torch import for all
        with open(sys.argv[2]) as f:
            results = [main(shlex.split(line)) for line in f if line.strip()]
        sys.exit(1 if any(results) else 0)
    sys.exit(main())
