#!/usr/bin/python3
"""The PyTorch side of tests/trainer/mixed_precision_test.cc: train_lm's model (ByteLm,
examples/lm_model.cc, written out again here) trained for a few steps in a plain loop with
torch.autocast("cpu", dtype=torch.bfloat16) around forward and loss, torch.optim.AdamW and
torch.nn.utils.clip_grad_norm_, on the batches and initial weights the C++ test wrote.

Usage: mixed_precision_reference.py DIR [--fp32]
DIR/meta.json: {"config": {...}, "lr", "weight_decay", "max_grad_norm", "params": [{"name",
"shape"}], "steps": [[[token ids of sample], ...], ...]}; DIR/param-<i>.bin: float32 little
endian. Writes DIR/out/losses.txt (one loss per step) and DIR/out/param-<i>.bin.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Linear):
    """torch::nn::Linear of the C++ frontend (torch/nn/functional/linear.h, LibTorch 1.13):
    addmm for 2-D inputs, else matmul then `+= bias`. Under autocast the bias is then added to
    the bf16 product and rounded again, where Python's F.linear adds it inside the GEMM; the
    two differ by bf16 roundings, so the reference computes what the C++ model computes."""

    def forward(self, x):
        if x.dim() == 2:
            return torch.addmm(self.bias, x, self.weight.t())
        out = x.matmul(self.weight.t())
        out += self.bias
        return out


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        H = self.heads
        hd = D // H
        q, k, v = self.qkv(x).chunk(3, -1)
        split = lambda t: t.view(B, T, H, hd).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(hd)
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, -math.inf)
        y = torch.matmul(torch.softmax(scores, -1), v).transpose(1, 2).reshape(B, T, D)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = Linear(dim, 4 * dim)
        self.out = Linear(4 * dim, dim)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.out(F.gelu(self.fc(self.ln2(h))))


class Embed(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)

    def forward(self, ids):
        return self.embedding(ids)


class ByteLm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed = Embed(c["vocab"], c["dim"])
        self.pos = nn.Parameter(torch.zeros(c["maxLen"], c["dim"]))
        self.layers = c["layers"]
        for i in range(c["layers"]):
            setattr(self, "block%d" % i, Block(c["dim"], c["heads"]))
        self.lnf = nn.LayerNorm(c["dim"])
        self.head = Linear(c["dim"], c["vocab"])

    def forward(self, ids):
        T = ids.shape[1]
        x = self.embed(ids) + self.pos[:T]
        for i in range(self.layers):
            x = getattr(self, "block%d" % i)(x)
        return self.head(self.lnf(x))


def collate(samples):
    longest = max(len(s) for s in samples)
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    labels = torch.full((len(samples), longest), -100, dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    return ids, labels


def main():
    d = sys.argv[1]
    bf16 = "--fp32" not in sys.argv
    torch.set_num_threads(1)
    meta = json.load(open(os.path.join(d, "meta.json")))
    model = ByteLm(meta["config"])
    params = dict(model.named_parameters())
    names = [p["name"] for p in meta["params"]]
    if sorted(names) != sorted(params):
        sys.exit("parameter names differ: %s vs %s" % (sorted(names), sorted(params)))
    with torch.no_grad():
        for i, p in enumerate(meta["params"]):
            a = np.fromfile(os.path.join(d, "param-%d.bin" % i), dtype="<f4")
            params[p["name"]].copy_(torch.from_numpy(a.copy()).view(p["shape"]))
    # HF's decay rule as the Trainer's default: not for biases and normalisation weights.
    nodecay = lambda n: "bias" in n or "norm" in n or "ln" in n
    groups = [
        {"params": [params[n] for n in names if not nodecay(n)], "weight_decay": meta["weight_decay"]},
        {"params": [params[n] for n in names if nodecay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=meta["lr"], betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for samples in meta["steps"]:
        ids, labels = collate(samples)
        target = labels[:, 1:]
        items = int((target != -100).sum())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   target.reshape(-1), reduction="sum", ignore_index=-100)
            loss = loss / items
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), meta["max_grad_norm"])
        opt.step()
        losses.append(float(loss))
    out = os.path.join(d, "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "losses.txt"), "w") as f:
        f.write("".join("%.17g\n" % v for v in losses))
    for i, n in enumerate(names):
        params[n].detach().float().numpy().astype("<f4").tofile(os.path.join(out, "param-%d.bin" % i))


if __name__ == "__main__":
    main()
