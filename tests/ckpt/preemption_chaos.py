#!/usr/bin/env python3
"""Chaos test of the JIT checkpoint (issue 7) on 4 real ranks.

Each case starts a fresh training run, waits until ONE randomly chosen rank is in a target
phase (loading data, forward/backward, evaluation, or a periodic checkpoint save, seen through
the probe's phase file or the save's sentinel), sends that rank SIGTERM (sometimes a second
signal follows), and then requires: every rank exits 0; the log names the signalled rank, the
phase and the agreed step S; exactly one new complete checkpoint of step S (no incomplete
directory, S the newest); PREEMPTED names it; and a resume from it to the end reproduces the
uninterrupted run's parameters (float64, 1e-10). At least 10 cases, and every phase at least
once. The seed is printed (CHAOS_SEED=<n> repeats a run).
Usage: preemption_chaos.py PROBE MPIEXEC [MPIEXEC FLAGS...]"""
import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PROBE, MPI = sys.argv[1], sys.argv[2:]
HERE = os.path.dirname(os.path.abspath(__file__))
NP = 4
COMMON = ["--max_steps=24", "--logging_steps=1", "--learning_rate=0.05", "--seed=7",
          "--report_to=none", "--per_device_train_batch_size=3", "--save_steps=4",
          "--eval_strategy=steps", "--eval_steps=5", "--per_device_eval_batch_size=2",
          "--enable_jit_checkpoint=true", "--jit_kill_wait=0.3",
          "--probe-step-ms=50", "--probe-data-ms=30", "--probe-ballast-mb=96"]
PHASES = {"D": "data loading", "F": "forward/backward/update", "E": "evaluation",
          "S": "checkpoint save"}


def run(args, log, timeout=180):
    with open(log, "w") as f:
        return subprocess.run(MPI + ["-n", str(NP), PROBE] + COMMON + args, stdout=f,
                              stderr=subprocess.STDOUT, timeout=timeout).returncode


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def one_case(tmp, case, target, rng, ref):
    out, pids = f"{tmp}/case{case}", f"{tmp}/pids{case}"
    os.makedirs(pids)
    log = f"{tmp}/case{case}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(MPI + ["-n", str(NP), PROBE] + COMMON +
                                [f"--output_dir={out}", f"--probe-pid-dir={pids}"],
                                stdout=f, stderr=subprocess.STDOUT)
    victim = rng.randrange(NP)
    not_before = None
    sent = False
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not sent:
        phase_file = read(f"{pids}/phase-{victim}")
        if not phase_file:  # not training yet
            time.sleep(0.01)
            continue
        if not_before is None:
            not_before = time.time() + rng.uniform(0.2, 2.0)
        if time.time() >= not_before:
            if target == "S":
                hit = glob.glob(f"{out}/checkpoint-*/checkpoint-is-incomplete.txt")
            else:
                hit = phase_file[:1] == target
            if hit:
                pid = int(read(f"{pids}/rank-{victim}.pid"))
                os.kill(pid, signal.SIGTERM)
                sent = True
                if rng.random() < 0.3:  # a second signal must not restart kill_wait
                    time.sleep(0.1)
                    other = rng.randrange(NP)
                    try:
                        os.kill(int(read(f"{pids}/rank-{other}.pid")), signal.SIGTERM)
                    except (OSError, ValueError):
                        pass
                break
        time.sleep(0.002)
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None, f"case {case}: the job did not end within 120 s after the signal"
    text = read(log)
    if not sent:
        return None, None  # the run ended before the target phase came: not a case
    m = re.search(r"preemption: SIGTERM received on rank (\d+) at \S+ during ([^;]+); stop agreed "
                  r"at step (\d+); checkpoint (\S+) durable ([\d.]+) s after the signal", text)
    problems = []
    if rc != 0:
        problems.append(f"exit code {rc}")
    if not m:
        problems.append("no preemption line in the log")
        return None, f"case {case} ({PHASES[target]}): " + "; ".join(problems) + "\n" + text[-3000:]
    rank, phase, step, ckpt = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
    if rank != victim:
        problems.append(f"signalled rank {victim}, the log says {rank}")
    if ckpt != f"{out}/checkpoint-{step}":
        problems.append(f"checkpoint path {ckpt}")
    dirs = sorted(glob.glob(f"{out}/checkpoint-*"), key=lambda d: int(d.rsplit("-", 1)[1]))
    incomplete = [d for d in dirs if os.path.exists(f"{d}/checkpoint-is-incomplete.txt")
                  or not os.path.exists(f"{d}/manifest.pb")]
    if incomplete:
        problems.append(f"incomplete checkpoints left: {incomplete}")
    if not dirs or dirs[-1] != ckpt:
        problems.append(f"newest checkpoint {dirs[-1] if dirs else None}, expected {ckpt}")
    if read(f"{out}/PREEMPTED").strip() != f"checkpoint-{step}":
        problems.append(f"PREEMPTED says {read(f'{out}/PREEMPTED').strip()!r}")
    # Resume to the end and compare with the uninterrupted run.
    rc2 = run([f"--output_dir={out}", "--resume_from_checkpoint=true",
               f"--probe-out={out}.txt"], f"{tmp}/resume{case}.log")
    if rc2 != 0:
        problems.append(f"resume exited {rc2}")
    elif f"resumed_from {ckpt}" not in read(f"{out}.txt"):
        problems.append("the resume did not start from the JIT checkpoint")
    else:
        cmp = subprocess.run([sys.executable, f"{HERE}/compare_runs.py", ref, f"{out}.txt",
                              "--params-only"], capture_output=True, text=True)
        if cmp.returncode != 0:
            problems.append("resumed parameters differ:\n" + cmp.stdout)
    summary = (f"case {case}: SIGTERM to rank {victim} aimed at {PHASES[target]}, landed in "
               f"{phase}; stop at step {step}; durable {m.group(5)} s after the signal")
    if problems:
        return phase, summary + "\n  FAIL " + "\n  FAIL ".join(problems)
    shutil.rmtree(out, ignore_errors=True)
    return phase, summary


def main():
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    print(f"chaos seed {seed} (CHAOS_SEED={seed} repeats it)", flush=True)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="cohort-chaos-")
    failures, seen, cases = [], set(), 0
    try:
        ref = f"{tmp}/ref.txt"
        if run([f"--output_dir={tmp}/ref", "--save_strategy=no", f"--probe-out={ref}"],
               f"{tmp}/ref.log") != 0:
            print(read(f"{tmp}/ref.log")[-3000:])
            return 1
        attempts = 0
        while attempts < 24 and (cases < 10 or len(seen) < len(PHASES)):
            missing = [p for p in PHASES if PHASES[p] not in seen]
            target = missing[0] if cases >= 10 and missing else rng.choice(list(PHASES))
            attempts += 1
            phase, message = one_case(tmp, attempts, target, rng, ref)
            if message is None:
                continue
            cases += 1
            print(message, flush=True)
            if "FAIL" in message or phase is None:
                failures.append(message)
            else:
                seen.add(phase)
        print(f"{cases} cases; phases hit: {sorted(seen)}")
        if cases < 10:
            failures.append(f"only {cases} cases ran")
        for p in PHASES.values():
            if p not in seen:
                failures.append(f"no case landed in {p}")
        for f in failures:
            print("FAILED: " + f.splitlines()[0])
        return 1 if failures else 0
    finally:
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}")


if __name__ == "__main__":
    sys.exit(main())
