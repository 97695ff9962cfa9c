#!/usr/bin/env python3
"""bench/launcher: how long the `cohort` launcher takes to start, next to /bin/true and mpirun.

Start-up (each round, CALLS repetitions, interleaved call by call: A B C A B C ...):
  /bin/true                                  the cost of fork + exec + wait from Python here
  cohort --version                           the binary's own start-up (loader, libraries)
  cohort run --dry-run -np 2 -- ./train      plans the job and prints the mpirun line
With COMPARE_COHORT=PATH (e.g. an older build) its --version and --dry-run join the same
interleaving, so a before/after comparison is measured on the same machine state.
Real launches (each round, REAL_CALLS times, alternating): `cohort run -np 2 -- /bin/true` and
`mpirun -np 2 /bin/true` (B - C is what `cohort run` adds to mpirun).
Milliseconds per call: the median over every call of every round, the spread of the per-round
medians, and the fastest call (on a busy machine the median moves, the minimum much less).
`over true` subtracts /bin/true's median: what the launcher costs beyond starting a process.
Usage: launcher_bench.py COHORT ROUNDS MPIRUN [MPIRUN FLAGS...]"""
import json
import os
import statistics
import subprocess
import sys
import time

COHORT, ROUNDS, MPI = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
CALLS = int(os.environ.get("CALLS", "50"))
REAL_CALLS = int(os.environ.get("REAL_CALLS", "5"))
COMPARE = os.environ.get("COMPARE_COHORT", "")


def timed(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ms = (time.perf_counter() - t0) * 1e3
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return ms


def dry(cohort):
    return [cohort, "run", "--dry-run", "-np", "2", "--", "./train"]


STARTUP = {  # key: (label, argv)
    "true": ("/bin/true", ["/bin/true"]),
    "version": ("cohort --version", [COHORT, "--version"]),
    "dry": ("cohort run --dry-run -np 2 -- ./train", dry(COHORT)),
}
if COMPARE:
    STARTUP["version_cmp"] = ("COMPARE_COHORT --version", [COMPARE, "--version"])
    STARTUP["dry_cmp"] = ("COMPARE_COHORT run --dry-run -np 2 -- ./train", dry(COMPARE))
REAL = {
    "cohort": ("cohort run -np 2 -- /bin/true", [COHORT, "run", "-np", "2", "--", "/bin/true"]),
    "mpirun": ("mpirun -np 2 /bin/true", MPI + ["-np", "2", "/bin/true"]),
}


def main():
    times = {k: [] for k in list(STARTUP) + list(REAL)}
    round_medians = {k: [] for k in times}
    for r in range(ROUNDS):
        print(f"round {r + 1}/{ROUNDS}: {CALLS} x ({', '.join(STARTUP)}), "
              f"{REAL_CALLS} x (cohort run, mpirun)", file=sys.stderr)
        this = {k: [] for k in times}
        for _ in range(CALLS):  # interleaved: A B C A B C
            for k, (_, argv) in STARTUP.items():
                this[k].append(timed(argv))
        for _ in range(REAL_CALLS):
            for k, (_, argv) in REAL.items():
                this[k].append(timed(argv))
        for k, v in this.items():
            times[k] += v
            round_medians[k].append(statistics.median(v))
    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f"launcher: ms per call, {ROUNDS} rounds, {os.cpu_count()} cores, load average "
          f"{load:.1f} at the end")
    print(f"{'variant':<48}{'calls':>7}{'median':>9}{'rounds':>15}{'min':>8}{'over true':>11}")
    for k, (label, _) in list(STARTUP.items()) + list(REAL.items()):
        spread = f"{min(round_medians[k]):.1f}-{max(round_medians[k]):.1f}"
        over = f"{med[k] - med['true']:.1f}" if k in STARTUP and k != "true" else ""
        print(f"{label:<48}{len(times[k]):>7}{med[k]:>9.2f}{spread:>15}{min(times[k]):>8.2f}"
              f"{over:>11}")
    overhead = med["cohort"] - med["mpirun"]
    print(f"{'cohort run over mpirun (medians)':<48}{'':>7}{overhead:>9.1f}")
    out = {
        "true_ms": round(med["true"], 2),
        "version_ms": round(med["version"], 2),
        "version_over_true_ms": round(med["version"] - med["true"], 2),
        "dry_run_ms": round(med["dry"], 2),
        "dry_run_over_true_ms": round(med["dry"] - med["true"], 2),
        "dry_run_min_ms": round(min(times["dry"]), 2),
        "cohort_run_np2_ms": round(med["cohort"], 1), "mpirun_np2_ms": round(med["mpirun"], 1),
        "cohort_run_overhead_ms": round(overhead, 1), "load_average": round(load, 1)}
    if COMPARE:
        out["compare_version_ms"] = round(med["version_cmp"], 2)
        out["compare_dry_run_ms"] = round(med["dry_cmp"], 2)
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
