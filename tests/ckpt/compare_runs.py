#!/usr/bin/env python3
"""Compares two train_probe outputs: every parameter and every logged value of the steps both
runs logged must agree to a relative tolerance (default 1e-10, float64 exactness).
Usage: compare_runs.py REF OTHER [--tol 1e-10] [--params-only] [--from-step N]"""
import sys


def load(path):
    params, logs, meta = {}, {}, {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "param":
                params[parts[1]] = [float(v) for v in parts[2:]]
            elif parts[0] == "log":
                logs[(parts[1], int(parts[2]))] = float(parts[3])
            else:
                meta[parts[0]] = parts[1] if len(parts) > 1 else ""
    return params, logs, meta


def main():
    args = sys.argv[1:]
    tol, params_only, from_step = 1e-10, False, 0
    if "--tol" in args:
        i = args.index("--tol"); tol = float(args[i + 1]); del args[i:i + 2]
    if "--params-only" in args:
        args.remove("--params-only"); params_only = True
    if "--from-step" in args:
        i = args.index("--from-step"); from_step = int(args[i + 1]); del args[i:i + 2]
    (rp, rl, rm), (op, ol, om) = load(args[0]), load(args[1])
    bad = []
    if set(rp) != set(op):
        bad.append(f"parameter names differ: {sorted(rp)} vs {sorted(op)}")
    worst = 0.0
    for name in rp:
        a, b = rp[name], op.get(name, [])
        if len(a) != len(b):
            bad.append(f"{name}: {len(a)} vs {len(b)} values")
            continue
        scale = max(1e-300, max(abs(v) for v in a))
        d = max((abs(x - y) for x, y in zip(a, b)), default=0.0) / scale
        worst = max(worst, d)
        if d > tol:
            bad.append(f"{name}: relative difference {d:.3e} > {tol:g}")
    compared = 0
    if not params_only:
        for key, v in rl.items():
            if key[1] < from_step or key not in ol:
                continue
            compared += 1
            d = abs(v - ol[key]) / max(1e-300, abs(v))
            worst = max(worst, d)
            if d > tol:
                bad.append(f"log {key[0]} at step {key[1]}: {v!r} vs {ol[key]!r}")
        missing = [k for k in rl if k[1] >= from_step and k not in ol]
        if missing:
            bad.append(f"steps logged by {args[0]} but not by {args[1]}: {sorted(missing)[:5]}")
    if not params_only and rm.get("final_step") != om.get("final_step"):
        bad.append(f"final step {rm.get('final_step')} vs {om.get('final_step')}")
    print(f"compare {args[0]} {args[1]}: {len(rp)} parameters, {compared} logged values, "
          f"worst relative difference {worst:.3e}")
    for b in bad:
        print("  MISMATCH " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
