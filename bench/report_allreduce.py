#!/usr/bin/env python3
"""Aggregates bench_allreduce launches: per size and variant, the median busbw over
launches; the ratio is the median over launches of each launch's Cohort / MPI (the two are
interleaved inside a launch, and launches here differ by up to 5x, so only same-launch
ratios compare like with like; the ratio of the medians is printed next to it). Prints the
table and the BENCH line (stdlib only)."""
import json
import statistics
import sys
from collections import defaultdict

busbw = defaultdict(list)
contended = defaultdict(list)  # CROW: one CPU-bound thread per rank competes for its core
cross = defaultdict(list)  # XROW: 2 hosts x 1 rank, TCP over veth (allreduce_cross_host.sh)
world = None
with open(sys.argv[1]) as f:
    for line in f:
        parts = line.split()
        if parts[:1] == ["ROW"]:
            busbw[(int(parts[1]), parts[2])].append(float(parts[4]))
        elif parts[:1] == ["CROW"]:
            contended[(int(parts[1]), parts[2])].append(float(parts[4]))
        elif parts[:1] == ["XROW"]:
            cross[(int(parts[1]), parts[2])].append(float(parts[4]))
        elif parts[:1] == ["WORLD"]:
            world = int(parts[1])

sizes = sorted({s for s, _ in busbw})
def launch_ratio(rows, s):
    """Median over launches of each launch's Cohort / MPI busbw at size s."""
    return statistics.median(a / b for a, b in zip(rows[(s, "cohort")], rows[(s, "mpi")]))


def fmt(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"

print(f"all-reduce, float32 sum, {world} ranks, median of {len(busbw[(sizes[0], 'mpi')])} launches")
print(f"{'size':>9} | {'cohort algbw':>12} {'cohort busbw':>12} | {'mpi algbw':>9} {'mpi busbw':>9} | "
      f"ratio (per launch, median) | of medians")
factor = 2 * (world - 1) / world if world and world > 1 else 1.0
ratios = {}
med = {}
for s in sizes:
    c = statistics.median(busbw[(s, "cohort")])
    m = statistics.median(busbw[(s, "mpi")])
    med[s] = c
    ratios[s] = launch_ratio(busbw, s)
    print(f"{fmt(s):>9} | {c / factor:9.2f} GB/s {c:7.2f} GB/s | {m / factor:6.2f} GB/s {m:6.2f} GB/s | "
          f"{ratios[s]:26.2f} | {c / m:10.2f}")
big = [s for s in sizes if s >= 1 << 20]
# Launches differ in kind (MPI at 1 MiB runs at ~2 or ~9 GB/s here): show each one.
print("per launch: MPI busbw at 1 MiB, then Cohort / MPI at each size >= 1 MiB")
print(f"{'launch':>6} | {'mpi 1 MiB':>9} | " + " ".join(f"{fmt(s):>7}" for s in big))
for i in range(len(busbw[(big[0], "mpi")])):
    cells = " ".join(f"{busbw[(s, 'cohort')][i] / busbw[(s, 'mpi')][i]:7.2f}" for s in big)
    print(f"{i + 1:>6} | {busbw[(big[0], 'mpi')][i]:4.2f} GB/s | {cells}")
csizes = sorted({s for s, _ in contended})
cratios = {}
if csizes:
    print("contended (one CPU-bound thread per rank on the rank's core):")
    for s in csizes:
        c = statistics.median(contended[(s, "cohort")])
        m = statistics.median(contended[(s, "mpi")])
        cratios[s] = launch_ratio(contended, s)
        print(f"{fmt(s):>9} | cohort busbw {c:6.2f} GB/s | mpi busbw {m:6.2f} GB/s | "
              f"ratio (per launch, median) {cratios[s]:.2f}")
xsizes = sorted({s for s, _ in cross})
xratios = {}
if xsizes:
    print(f"cross-host: 2 hosts x 1 rank, TCP over veth, median of {len(cross[(xsizes[0], 'mpi')])} launches")
    for s in xsizes:
        c = statistics.median(cross[(s, "cohort")])
        m = statistics.median(cross[(s, "mpi")])
        xratios[s] = launch_ratio(cross, s)
        print(f"{fmt(s):>9} | cohort busbw {c:6.3f} GB/s | mpi busbw {m:6.3f} GB/s | "
              f"ratio (per launch, median) {xratios[s]:.2f}")
result = {
    "busbw_ratio_min_ge_1MiB": round(min(ratios[s] for s in big), 3),
    "busbw_256MiB_over_16MiB": round(med[max(sizes)] / med[16 << 20], 3) if (16 << 20) in med else None,
    "busbw_ratio_256MiB": round(ratios[max(sizes)], 3),
    "cohort_busbw_16MiB_GBps": round(med.get(16 << 20, 0), 3),
    "cohort_busbw_256MiB_GBps": round(med[max(sizes)], 3),
    "world": world,
}
for s in csizes:
    result[f"contended_ratio_{s >> 20}MiB"] = round(cratios[s], 3)
if xsizes:
    result["cross_host_ratio_min_ge_1MiB"] = round(min(xratios[s] for s in xsizes if s >= 1 << 20), 3)
    result["cross_host_mpi_busbw_16MiB_GBps"] = round(statistics.median(cross[(16 << 20, "mpi")]), 3) if (16 << 20, "mpi") in cross else None
print("BENCH " + json.dumps(result))
