#!/usr/bin/env python3
"""Aggregates scripts/bench dataloader's rows (stdlib only): RATE lines of bench_dataloader
(cohort, by worker count) and of dataloader_numpy.py (numpy), and the BENCH lines of
bench_torchscript_step when it ran. Prints the table and, last, the BENCH line.
Usage: report_dataloader.py ROWS TORCHSCRIPT_ROWS"""
import json
import statistics
import sys
from collections import defaultdict

rates = defaultdict(list)
sums = set()
samples = set()
with open(sys.argv[1]) as f:
    for line in f:
        p = line.split()
        if p[:1] == ["RATE"]:
            rates[(p[1], int(p[2]))].append(float(p[3]))
            samples.add(int(p[4]))
            sums.add(int(p[5]))
ts = []
ts_note = None
try:
    with open(sys.argv[2]) as f:
        for line in f:
            if line.startswith("BENCH "):
                v = json.loads(line[6:]).get("torchscript_step_over_cpp")
                if v is not None:
                    ts.append(float(v))
            elif line.startswith("NOTE "):
                ts_note = line[5:].strip()
except FileNotFoundError:
    ts_note = "no torchscript_step rows"

numpy = rates.get(("numpy", 0))
if not numpy or not rates.get(("cohort", 0)):
    sys.exit("report_dataloader.py: no cohort or numpy measurements")
med = {k: statistics.median(v) for k, v in rates.items()}
base = med[("numpy", 0)]
print(f"dataloader: token windows of 1024 uint16 ids (64 MiB file, page cache warm), batch 8, "
      f"{sorted(samples)[0]} samples per run, shuffled; input + labels as int64 [8, 1024]; "
      f"medians of {len(numpy)} runs per variant")
print(f"{'variant':<46}{'samples/s':>11}{'MB/s ids':>10}{'over numpy':>12}{'runs':>6}")
rows = [(("cohort", w), f"Cohort token dataset + collator, {w} workers") for w in (0, 2, 4)]
rows.append((("numpy", 0), "numpy.memmap (python3), nanoGPT's reading"))
for key, label in rows:
    if key in med:
        r = med[key]
        print(f"{label:<46}{r:>11.0f}{r * 2048 / 1e6:>10.1f}{r / base:>11.2f}x{len(rates[key]):>6}")
if len(sums) != 1:
    print(f"WARNING: the variants read different windows (checksums {sorted(sums)})")
out = {"token_dataset_over_numpy": round(med[("cohort", 0)] / base, 3)}
for w in (2, 4):
    if ("cohort", w) in med:
        out[f"token_dataset_over_numpy_w{w}"] = round(med[("cohort", w)] / base, 3)
if ts:
    out["torchscript_step_over_cpp"] = round(statistics.median(ts), 3)
    print(f"torchscript_step_over_cpp: median of {len(ts)} launches of bench_torchscript_step "
          f"(C++ step time / TorchScript step time; target >= 0.95): {statistics.median(ts):.3f}")
else:
    out["torchscript_step_over_cpp"] = None
    print(f"torchscript_step_over_cpp: null ({ts_note or 'bench_torchscript_step printed no ratio'})")
print("token_dataset_over_numpy: 0 workers (one thread each side); target >= 1")
print("BENCH " + json.dumps(out))
