#!/usr/bin/env python3
"""PyTorch baseline for bench/trainer_overhead (run with Debian's python3-torch:
/usr/bin/python3). The same byte-level transformer as examples/lm_model.cc (embedding 256x64,
learned positions, 2 pre-LN blocks of causal self-attention with 4 heads and a GELU MLP 4x,
final LayerNorm, linear head), built in the same order so that torch.manual_seed(0) gives the
same initial weights as at::manual_seed(0) in C++. The corpus is read and chunked as
examples::readCorpus / ByteTextDataset do; the batches come from ORDER_FILE, written by
`bench_trainer_overhead --dump-order`, so all variants see the same batches in the same order.
Per-device batch 8, AdamW(lr 3e-3, weight decay 0.01, not on biases and norms), global
gradient clipping at 1.0, linear schedule, one thread.

usage: trainer_overhead_pytorch.py ORDER_FILE WARMUP STEPS
prints: RATE pytorch <steps/s> <measured steps> <tokens in measured steps>
        LOSS pytorch <mean loss over all steps>"""
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
CORPUS = "/usr/share/common-licenses"
VOCAB, DIM, HEADS, LAYERS, MAX_LEN = 256, 64, 4, 2, 128
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 3e-3, 0.01, 1.0


def read_corpus(directory):
    # Regular files (symlinks followed, as std::filesystem::is_regular_file), each once: by
    # resolved path, in the order of those paths (examples::readCorpus).
    paths = sorted({os.path.realpath(os.path.join(directory, n)) for n in os.listdir(directory)
                    if os.path.isfile(os.path.join(directory, n))})
    return b"".join(open(p, "rb").read() for p in paths)


def chunk(text, max_len):
    # Chunks of 16..max_len bytes that end after the last line break of the window when that
    # keeps >= 16 bytes (ByteTextDataset).
    chunks, pos, n = [], 0, len(text)
    while pos + 16 <= n:
        end = min(n, pos + max_len)
        for i in range(end - 1, pos + 15, -1):
            if text[i] == 0x0A:
                end = i + 1
                break
        chunks.append((pos, end - pos))
        pos = end
    return chunks


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = (p.view(b, t, self.heads, hd).transpose(1, 2) for p in self.qkv(x).chunk(3, -1))
        scores = q @ k.transpose(-2, -1) / math.sqrt(hd)
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        return self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        return h + self.out(F.gelu(self.fc(self.ln2(h))))


class Embed(nn.Module):  # the parameter names of trainer::NoisyEmbedding
    def __init__(self, vocab, dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)

    def forward(self, x):
        return self.embedding(x)


class ByteLm(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = Embed(VOCAB, DIM)
        self.pos = nn.Parameter(torch.randn(MAX_LEN, DIM) * 0.02)
        self.block_names = []
        for i in range(LAYERS):
            setattr(self, f"block{i}", Block(DIM, HEADS))
            self.block_names.append(f"block{i}")
        self.lnf = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, ids):
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for name in self.block_names:
            x = getattr(self, name)(x)
        return self.head(self.lnf(x))


def collate(text, chunks, indices):
    # trainer::defaultCollate: inputs padded with 0, labels with -100, to the longest.
    longest = max(chunks[i][1] for i in indices)
    inp = torch.zeros(len(indices), longest, dtype=torch.long)
    labels = torch.full((len(indices), longest), -100, dtype=torch.long)
    for row, i in enumerate(indices):
        off, n = chunks[i]
        ids = torch.frombuffer(bytearray(text[off:off + n]), dtype=torch.uint8).long()
        inp[row, :n] = ids
        labels[row, :n] = ids
    return inp, labels


def main():
    order_file, warmup, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    text = read_corpus(CORPUS)
    chunks = chunk(text, MAX_LEN)
    train = chunks[: len(chunks) * 9 // 10]
    with open(order_file) as f:
        header = f.readline().split()
        batches = [[int(i) for i in line.split()] for line in f if line.strip()]
    want = {"corpus_bytes": len(text), "chunks": len(chunks), "train": len(train)}
    got = {header[k]: int(header[k + 1]) for k in range(0, len(header), 2)}
    if got != want:
        sys.exit(f"trainer_overhead_pytorch.py: corpus differs from the C++ one: {got} vs {want}")
    total = warmup + steps
    if len(batches) < total:
        sys.exit(f"trainer_overhead_pytorch.py: {order_file} holds {len(batches)} steps, "
                 f"{total} needed")

    torch.manual_seed(0)
    model = ByteLm()
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = "bias" in name or "norm" in name or "ln" in name
        (no_decay if skip else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    params = decay + no_decay
    ends, loss_sum, tokens = [], 0.0, 0
    for step in range(total):
        inp, labels = collate(text, train, batches[step])
        if step >= warmup:
            tokens += sum(train[i][1] for i in batches[step])
        for g in opt.param_groups:
            g["lr"] = LR * max(0.0, (total - step) / total)
        opt.zero_grad()
        logits = model(inp)
        target = labels[:, 1:].reshape(-1)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), target, ignore_index=-100,
                               reduction="sum") / (target != -100).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        opt.step()
        loss_sum += loss.item()
        ends.append(time.perf_counter())
    rate = steps / (ends[-1] - ends[warmup - 1])
    print(f"RATE pytorch {rate:.4f} {steps} {tokens}")
    print(f"LOSS pytorch {loss_sum / total:.6f}", flush=True)


if __name__ == "__main__":
    main()
