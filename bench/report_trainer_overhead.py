#!/usr/bin/env python3
"""Aggregates bench_trainer_overhead / trainer_overhead_pytorch.py output (RATE, LOSS and
CHECK lines, all rounds in one file) and prints the table and the BENCH line (stdlib only).

Ratios are of the medians over all runs of each variant; the paired ratio (each Trainer run
over the hand-written run next to it in the same process) is shown as well, because it is
less sensitive to load that changes between rounds."""
import json
import statistics
import sys
from collections import defaultdict

rates = defaultdict(list)
tokens = defaultdict(set)
losses = defaultdict(list)
cpu = defaultdict(list)  # variant -> [process CPU ms per step]
cpu_paired = []
checks = []
phases = defaultdict(lambda: defaultdict(list))  # variant -> phase -> [ms per step]
pending = {}
paired = []
lockstep = []  # (Trainer ms/step, hand-written ms/step, median per-step ratio) per run
with open(sys.argv[1]) as f:
    for line in f:
        p = line.split()
        if p[:1] == ["RATE"]:
            variant, rate = p[1], float(p[2])
            rates[variant].append(rate)
            tokens[variant].add((int(p[3]), int(p[4])))
            # The C++ bench prints the two variants of one pair back to back.
            if variant in ("trainer", "handwritten"):
                pending[variant] = rate
                if len(pending) == 2:
                    paired.append(pending["trainer"] / pending["handwritten"])
                    pending = {}
        elif p[:1] == ["CPU"]:
            cpu[p[1]].append(float(p[2]))
            if p[1] == "handwritten" and cpu["trainer"]:
                cpu_paired.append(cpu["handwritten"][-1] / cpu["trainer"][-1])
        elif p[:1] == ["LOSS"]:
            losses[p[1]].append(float(p[2]))
        elif p[:1] == ["PHASES"]:
            for item in p[2:]:
                name, ms = item.split("=")
                phases[p[1]][name].append(float(ms))
        elif p[:1] == ["LOCKSTEP"]:
            lockstep.append((float(p[1]), float(p[2]), float(p[3])))
        elif p[:1] == ["CHECK"]:
            checks.append(" ".join(p[1:]))

missing = [v for v in ("trainer", "handwritten", "pytorch") if not rates[v]]
if missing:
    sys.exit(f"report_trainer_overhead.py: no measurements of {', '.join(missing)}")


def med(values):
    return statistics.median(values)


a, b, c = med(rates["trainer"]), med(rates["handwritten"]), med(rates["pytorch"])
steps, tok = sorted(tokens["trainer"])[0]
same_data = len(set().union(*tokens.values())) == 1
print(f"trainer_overhead: train_lm's ByteLm (default LmConfig), batch 8, AdamW lr 3e-3 wd 0.01, "
      f"clip 1.0, linear schedule; world 1, 1 thread; {steps} measured steps after warmup; "
      f"medians of {len(rates['trainer'])}/{len(rates['handwritten'])}/{len(rates['pytorch'])} runs")
print(f"{'variant':<36}{'steps/s':>9}{'tokens/s':>10}{'mean loss':>11}{'runs':>6}")
rows = [("A  Cohort Trainer", "trainer"), ("B  hand-written LibTorch loop", "handwritten"),
        ("C  PyTorch (python3-torch)", "pytorch")]
for label, key in rows:
    r = med(rates[key])
    loss = f"{med(losses[key]):11.4f}" if losses[key] else f"{'':>11}"
    print(f"{label:<36}{r:9.2f}{r * tok / max(steps, 1):10.0f}{loss}{len(rates[key]):6d}")
lock_ratio = None
if lockstep:
    # The headline: the two loops alternating step by step in one process (the Trainer's
    # onStepEnd runs the hand-written step), so both see the same machine within
    # milliseconds; whole runs seconds apart differ here by up to 1.5x in step time.
    lock_ratio = med([hand / tr for tr, hand, _ in lockstep])
    print(f"Trainer / hand-written, lockstep (step by step): {lock_ratio:.3f} (target >= 0.95; "
          f"median of {len(lockstep)} runs: "
          + ", ".join(f"{hand / tr:.3f}" for tr, hand, _ in lockstep)
          + f"; Trainer {med([x[0] for x in lockstep]):.2f}, hand-written "
          f"{med([x[1] for x in lockstep]):.2f} ms/step; median per-step ratio "
          f"{med([x[2] for x in lockstep]):.3f})")
print(f"Trainer / hand-written, whole runs: {a / b:.3f} (paired in-process median "
      f"{med(paired):.3f})")
cpu_ratio = None
if cpu["trainer"] and cpu["handwritten"]:
    # CPU time per step barely moves with load from other processes: the comparison that
    # still holds on a busy machine (wall-time ratios there swing by 2x between runs).
    cpu_ratio = med(cpu["handwritten"]) / med(cpu["trainer"])
    print(f"by CPU time: Trainer {med(cpu['trainer']):.2f}, hand-written "
          f"{med(cpu['handwritten']):.2f} ms/step; hand-written / Trainer {cpu_ratio:.3f} "
          f"(paired median {med(cpu_paired):.3f})")
solo_ratio = None
if rates["trainer_solo"] and rates["handwritten_solo"]:
    # Each variant alone in its own process (one per round, order alternating): no variant
    # runs on the heap and page state the other one left behind.
    solo_ratio = med(rates["trainer_solo"]) / med(rates["handwritten_solo"])
    print(f"separate processes: Trainer {med(rates['trainer_solo']):.2f}, hand-written "
          f"{med(rates['handwritten_solo']):.2f} steps/s; Trainer / hand-written {solo_ratio:.3f} "
          f"(medians of {len(rates['trainer_solo'])}/{len(rates['handwritten_solo'])} processes)")
print(f"Trainer / PyTorch:      {a / c:.3f} (target >= 1.3)")
print(f"hand-written / PyTorch: {b / c:.3f} (no framework at all: what the same kernels allow)")
untuned_ratio = tuned_torch_ratio = None
if rates["trainer_untuned"] and rates["trainer_solo"]:
    # dist::Runtime's glibc malloc thresholds (COHORT_MALLOC_TUNING, dist/allocator.h) off,
    # against the Trainer alone in its own process with them on.
    untuned_ratio = med(rates["trainer_untuned"]) / med(rates["trainer_solo"])
    print(f"Trainer with COHORT_MALLOC_TUNING=0: {med(rates['trainer_untuned']):.2f} steps/s, "
          f"{untuned_ratio:.3f} of the tuned Trainer's (separate processes)")
if rates["pytorch_tuned"]:
    tuned_torch_ratio = a / med(rates["pytorch_tuned"])
    print(f"PyTorch with the same malloc thresholds (GLIBC_TUNABLES): "
          f"{med(rates['pytorch_tuned']):.2f} steps/s; Trainer / that {tuned_torch_ratio:.3f}")
if phases:
    # Where a step's time goes (medians, ms per step over all steps, warmup included); a
    # phase the hand-written loop does not have is blank there.
    names = ["data", "step_stats", "forward_backward", "grad_sync", "clip", "optimizer",
             "bookkeeping"]
    names += sorted(set(n for v in phases.values() for n in v) - set(names))
    print(f"{'phase (ms/step)':<20}{'A Trainer':>11}{'B loop':>9}{'A - B':>8}")
    totals = {}
    for n in names:
        cells = {v: med(phases[v][n]) if phases[v].get(n) else None
                 for v in ("trainer", "handwritten")}
        a_ms, b_ms = cells["trainer"], cells["handwritten"]
        fmt = lambda x: f"{x:.3f}" if x is not None else ""
        diff = f"{(a_ms or 0) - (b_ms or 0):+.3f}"
        print(f"{n:<20}{fmt(a_ms):>11}{fmt(b_ms):>9}{diff:>8}")
    for v in ("trainer", "handwritten"):
        totals[v] = sum(med(x) for x in phases[v].values())
    print(f"{'sum':<20}{totals['trainer']:11.3f}{totals['handwritten']:9.3f}"
          f"{totals['trainer'] - totals['handwritten']:+8.3f}")
for check in sorted(set(checks)):
    print(f"check: {check}")
if not same_data:
    print("WARNING: the variants measured different token counts: "
          + ", ".join(f"{k}={sorted(v)}" for k, v in tokens.items()))
print("BENCH " + json.dumps({
    "trainer_over_handwritten": round(lock_ratio if lock_ratio else a / b, 3),
    "trainer_over_handwritten_runs": round(a / b, 3),
    "speedup_vs_pytorch": round(a / c, 3),
    "handwritten_vs_pytorch": round(b / c, 3),
    "trainer_over_handwritten_cpu": round(cpu_ratio, 3) if cpu_ratio else None,
    "trainer_over_handwritten_separate": round(solo_ratio, 3) if solo_ratio else None,
    "trainer_untuned_malloc_over_tuned": round(untuned_ratio, 3) if untuned_ratio else None,
    "speedup_vs_pytorch_same_malloc": round(tuned_torch_ratio, 3) if tuned_torch_ratio else None,
}))
