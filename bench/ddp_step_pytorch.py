#!/usr/bin/env python3
"""Baseline for bench/ddp_step: the same MLP, batch and AdamW trained with PyTorch
DistributedDataParallel on gloo (Debian's python3-torch; run with /usr/bin/python3).
One process per rank, started by scripts/bench with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT.
Prints `STEP pytorch_ddp <world> <median step seconds>` on rank 0."""
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn

torch.set_num_threads(1)
rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
warmup = 2
dims = [int(d) for d in os.environ.get("DDP_BENCH_DIMS", "1024,2560,2560,2560,2560,1024").split(",")]
batch = int(os.environ.get("DDP_BENCH_BATCH", "32"))

dist.init_process_group("gloo", rank=rank, world_size=world)
torch.manual_seed(0)
layers = []
for i in range(len(dims) - 1):
    layers.append(nn.Linear(dims[i], dims[i + 1]))
    if i + 2 < len(dims):
        layers.append(nn.ReLU())
model = nn.Sequential(*layers)
ddp = nn.parallel.DistributedDataParallel(model)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
g = torch.Generator().manual_seed(1 + rank)
x = torch.randn(batch, dims[0], generator=g)
y = torch.randn(batch, dims[-1], generator=g)
times = []
for step in range(warmup + steps):
    dist.barrier()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=False)
    loss = ((ddp(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    dt = torch.tensor([time.perf_counter() - t0])
    dist.all_reduce(dt, op=dist.ReduceOp.MAX)
    if step >= warmup:
        times.append(dt.item())
if rank == 0:
    params = sum(p.numel() for p in model.parameters())
    print(f"STEP pytorch_ddp {world} {statistics.median(times):.6f} params={params}", flush=True)
dist.destroy_process_group()
