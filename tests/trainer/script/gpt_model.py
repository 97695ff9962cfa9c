#!/usr/bin/env python3
"""A tiny GPT (token + position embedding, 2 pre-norm blocks with causal self-attention and
an MLP, final LayerNorm, head tied to the embedding or not), written in plain PyTorch and
exported with torch.jit.script, plus a byte-level token file made from real text.

  gpt_model.py --cases FILE     (one set of the arguments below per line)
  gpt_model.py OUT_DIR [--dtype float64|float32] [--untied] [--loss mean|items|none]
               [--tokens N] [--d_model D] [--heads H] [--max_len L]

writes OUT_DIR/model.pt and OUT_DIR/tokens.bin (uint16 ids, nanoGPT's raw layout). The
model's forward(input_ids, labels=None, num_items_in_batch=None) returns a dict with
"logits" and, when labels are given, "loss" (causal: position t predicts labels[t + 1], as
HF's causal LMs): --loss items divides the token-loss sum by num_items_in_batch when given
(HF's loss kwargs), --loss mean returns the mean over the batch's own targets and takes no
num_items_in_batch, --loss none takes no labels (the Trainer computes the loss), --loss
pixels also needs a pixel_values input (a model that does not fit token samples)."""
import argparse
import glob
import math
import os
import shlex
import sys
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, max_len: int, tied: bool, loss: str):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(2)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.wte.weight
        self.loss_kind = loss

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.size(1)
        pos = torch.arange(t, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def token_loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
        v = logits.size(-1)
        return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1),
                               ignore_index=-100, reduction=reduction)


class ItemsGpt(Gpt):
    def forward(self, input_ids: torch.Tensor, labels: Optional[torch.Tensor] = None,
                num_items_in_batch: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        logits = self.logits(input_ids)
        out = {"logits": logits}
        if labels is not None:
            if num_items_in_batch is None:
                out["loss"] = self.token_loss(logits, labels, "mean")
            else:
                out["loss"] = self.token_loss(logits, labels, "sum") / num_items_in_batch
        return out


class MeanGpt(Gpt):
    def forward(self, input_ids: torch.Tensor,
                labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        logits = self.logits(input_ids)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = self.token_loss(logits, labels, "mean")
        return out


class PixelsGpt(Gpt):
    """Asks for an input token files do not have (the signature check's bad model)."""

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.logits(input_ids) + pixel_values.sum()


class LogitsGpt(Gpt):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.logits(input_ids)


def build(vocab=256, d=32, heads=4, max_len=64, tied=True, loss="items", seed=1234):
    torch.manual_seed(seed)
    cls = {"items": ItemsGpt, "mean": MeanGpt, "none": LogitsGpt, "pixels": PixelsGpt}[loss]
    return cls(vocab, d, heads, max_len, tied, loss)


def real_text_tokens(n):
    """Byte ids of the Debian licence texts (every Debian system has them)."""
    data = b""
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                data += f.read()
        if len(data) >= n:
            break
    if len(data) < n:
        raise SystemExit("not enough text under /usr/share/common-licenses")
    return torch.tensor(list(data[:n]), dtype=torch.int32)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--loss", default="items", choices=["items", "mean", "none", "pixels"])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--d_model", type=int, default=32)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--max_len", type=int, default=64)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    model = build(d=a.d_model, heads=a.heads, max_len=a.max_len, tied=not a.untied, loss=a.loss)
    model = model.to(getattr(torch, a.dtype))
    torch.jit.script(model).save(os.path.join(a.out, "model.pt"))
    ids = real_text_tokens(a.tokens).numpy().astype("<u2")
    ids.tofile(os.path.join(a.out, "tokens.bin"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cases"]:  # one set of arguments per line: one torch import for all
        with open(sys.argv[2]) as f:
            for line in f:
                if line.strip():
                    main(shlex.split(line))
    else:
        main()
