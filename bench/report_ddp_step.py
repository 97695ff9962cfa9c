#!/usr/bin/env python3
"""Aggregates bench_ddp_step / ddp_step_pytorch.py launches (median over launches of each
launch's median step time) and prints the table and the BENCH line (stdlib only)."""
import json
import statistics
import sys
from collections import defaultdict

steps = defaultdict(list)
phases = defaultdict(list)
comm_bytes = {}
last = None
with open(sys.argv[1]) as f:
    for line in f:
        p = line.split()
        if p[:1] == ["STEP"]:
            last = (p[1], int(p[2]))
            steps[last].append(float(p[3]))
        elif p[:1] == ["BYTES"]:
            comm_bytes[(p[1], int(p[2]))] = int(p[3])
        elif p[:1] == ["PHASES"] and last:
            phases[last].append([float(p[i]) for i in (2, 4, 6, 8)])

def med(key):
    return statistics.median(steps[key]) if steps[key] else float("nan")

c1 = med(("cohort_overlap", 1))
c2 = med(("cohort_overlap", 2))
c2n = med(("cohort_no_overlap", 2))
c2b = med(("cohort_overlap_bf16comm", 2))
b32 = comm_bytes.get(("cohort_overlap", 2), 0)
b16 = comm_bytes.get(("cohort_overlap_bf16comm", 2), 0)
bytes_ratio = b16 / b32 if b32 else float("nan")
p1 = med(("pytorch_ddp", 1))
p2 = med(("pytorch_ddp", 2))
n = len(steps[("cohort_overlap", 1)])
print(f"ddp_step: 25 M-parameter MLP, batch 32/rank, AdamW, 1 thread/rank; median of {n} launches")
print(f"{'variant':<28} {'world 1':>9} {'world 2':>9} {'w2/w1':>7}")
print(f"{'cohort (overlap)':<28} {c1:8.3f}s {c2:8.3f}s {c2 / c1:7.2f}")
print(f"{'cohort (no overlap)':<28} {'':>9} {c2n:8.3f}s {c2n / c1:7.2f}")
print(f"{'cohort (overlap, bf16 comm)':<28} {'':>9} {c2b:8.3f}s {c2b / c1:7.2f}"
      f"   gradient bytes/step/rank: {b16 / 2**20:.1f} MiB vs float32 {b32 / 2**20:.1f} MiB"
      f" ({bytes_ratio:.3f}x)")
print(f"{'pytorch DDP (gloo)':<28} {p1:8.3f}s {p2:8.3f}s {p2 / p1:7.2f}")
for key, rows in sorted(phases.items()):
    m = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"  phases {key[0]} w{key[1]}: forward {m[0]:.3f} backward {m[1]:.3f} "
          f"finish {m[2]:.3f} optimizer {m[3]:.3f} s (rank 0)")
print(f"throughput at world 2, cohort / pytorch DDP: {p2 / c2:.2f}x")
print("BENCH " + json.dumps({
    "w2_over_w1": round(c2 / c1, 3),
    "w2_over_w1_no_overlap": round(c2n / c1, 3),
    "bf16_comm_bytes_over_fp32": round(bytes_ratio, 4),
    "w2_bf16comm_over_w2": round(c2b / c2, 3),
    "speedup_vs_pytorch_ddp": round(p2 / c2, 3),
    "speedup_vs_pytorch_ddp_w1": round(p1 / c1, 3),
}))
