#!/usr/bin/env python3
"""bench/jit: seconds from a preemption signal to a durable JIT checkpoint, next to one
training step and one synchronous checkpoint save measured in the same launch.

Workload: tests/ckpt's train probe (a float64 MLP with a BALLAST_MB buffer, so that the state
and its save have a realistic size) on NP ranks, 100 ms per forward (STEP_MS), kill_wait 1 s.
Each launch runs, interleaved: (A) 20 steps without saves -> the step time; (B) 20 steps with
a save every 5 steps -> the synchronous save time (the Trainer's own "saved ... in X s" lines);
(C) the same job, SIGTERM to one random rank 2-4 s into training -> the Trainer's "durable X s
after the signal". Medians over the launches. Budget = step + save + kill_wait; target: the
signal-to-durable time within the budget (over_budget <= 1).
Usage: jit_bench.py PROBE LAUNCHES MPIEXEC [FLAGS...]"""
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PROBE, LAUNCHES, MPI = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
NP = int(os.environ.get("NP", "2"))
BALLAST = int(os.environ.get("BALLAST_MB", "512"))
STEP_MS = int(os.environ.get("STEP_MS", "100"))
KILL_WAIT = 1.0
COMMON = ["--max_steps=20", "--logging_steps=1", "--report_to=none",
          "--per_device_train_batch_size=3", "--enable_jit_checkpoint=true",
          f"--jit_kill_wait={KILL_WAIT}", f"--probe-step-ms={STEP_MS}",
          f"--probe-ballast-mb={BALLAST}"]


def launch(args, tmp, tag, signal_after=None):
    pids = f"{tmp}/pids-{tag}"
    os.makedirs(pids, exist_ok=True)
    log = f"{tmp}/{tag}.log"
    with open(log, "w") as f:
        p = subprocess.Popen(MPI + ["-n", str(NP), PROBE] + COMMON + args +
                             [f"--output_dir={tmp}/{tag}", f"--probe-pid-dir={pids}"],
                             stdout=f, stderr=subprocess.STDOUT)
    if signal_after is not None:
        victim = random.randrange(NP)
        while p.poll() is None:
            try:
                if os.path.getsize(f"{pids}/phase-{victim}") > 0:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        time.sleep(signal_after)
        with open(f"{pids}/rank-{victim}.pid") as f:
            os.kill(int(f.read()), signal.SIGTERM)
    if p.wait(timeout=600) != 0:
        sys.exit(f"launch {tag} failed:\n" + open(log).read()[-3000:])
    return open(log).read()


def main():
    steps, saves, durable = [], [], []
    for i in range(LAUNCHES):
        with tempfile.TemporaryDirectory(prefix="cohort-jit-bench-") as tmp:
            print(f"launch {i + 1}/{LAUNCHES}", file=sys.stderr, flush=True)
            launch(["--save_strategy=no", f"--probe-out={tmp}/a.txt"], tmp, "a")
            metrics = dict(l.split()[1:3] for l in open(f"{tmp}/a.txt") if l.startswith("metric"))
            steps.append(1.0 / float(metrics["train_steps_per_second"]))
            log = launch(["--save_strategy=steps", "--save_steps=5"], tmp, "b")
            saves += [float(s) for s in re.findall(r"saved \S+ \([\d.]+ MiB in ([\d.]+) s", log)]
            log = launch(["--save_strategy=no", "--max_steps=200"], tmp, "c",
                         signal_after=random.uniform(2, 4))
            m = re.search(r"durable ([\d.]+) s after the signal", log)
            if not m:
                sys.exit("no preemption line:\n" + log[-3000:])
            durable.append(float(m.group(1)))
    step, save, jit = statistics.median(steps), statistics.median(saves), statistics.median(durable)
    budget = step + save + KILL_WAIT
    print(f"\nJIT checkpoint, {NP} ranks, {BALLAST} MiB of ballast + a small MLP (float64), "
          f"medians of {LAUNCHES} launches")
    print(f"{'one training step':<34}{step:8.3f} s   (runs: {', '.join(f'{s:.3f}' for s in steps)})")
    print(f"{'one synchronous save':<34}{save:8.3f} s   ({len(saves)} saves)")
    print(f"{'jit_kill_wait':<34}{KILL_WAIT:8.3f} s")
    print(f"{'budget: step + save + kill_wait':<34}{budget:8.3f} s")
    print(f"{'signal -> durable checkpoint':<34}{jit:8.3f} s   (runs: {', '.join(f'{d:.3f}' for d in durable)})")
    print(f"{'over budget (target <= 1)':<34}{jit / budget:8.3f}")
    print("BENCH " + json.dumps({"signal_to_durable_s": round(jit, 3), "budget_s": round(budget, 3),
                                 "over_budget": round(jit / budget, 3)}))


if __name__ == "__main__":
    main()
