#!/usr/bin/env python3
"""Aggregates scripts/bench ckpt (bench/ckpt_dd.sh and bench_ckpt launches): for every
variant the median over launches of each launch's median, a table in MB/s (1 MB = 1e6
bytes, as dd prints), and the BENCH line (stdlib only)."""
import json
import statistics
import sys
from collections import defaultdict

dd = defaultdict(list)  # variant -> [MB/s per launch]
ck = defaultdict(lambda: defaultdict(list))  # (world, variant) -> launch -> [seconds]
ckbytes = {}
launch = defaultdict(int)  # world -> launches seen
state = cache = ddcache = fsline = ""
with open(sys.argv[1]) as f:
    for line in f:
        p = line.split()
        if p[:1] == ["STATE"]:  # STATE <world> <n> tensors <bytes> bytes: a launch starts
            launch[int(p[1])] += 1
            state = f"{p[2]} tensors, {int(p[4]) / 2**20:.0f} MiB float32"
        elif p[:1] == ["CKPT"]:  # CKPT <world> <variant> <seconds> <bytes>
            w = int(p[1])
            ck[(w, p[2])][launch[w]].append(float(p[3]))
            ckbytes[(w, p[2])] = int(p[4])
        elif p[:1] == ["DD"]:  # DD <variant> <bytes> <seconds>
            dd[p[1]].append(int(p[2]) / float(p[3]) / 1e6)
        elif p[:1] == ["CACHE"]:
            cache = p[1]
        elif p[:1] == ["DDCACHE"]:
            ddcache = p[1]
        elif p[:1] == ["FS"]:
            fsline = " ".join(p[1:])


def secs(w, v):
    """Median over launches of the per-launch median seconds (nan when not measured)."""
    per = [statistics.median(x) for x in ck[(w, v)].values() if x]
    return statistics.median(per) if per else float("nan")


def mbps(w, v):
    s = secs(w, v)
    return ckbytes.get((w, v), 0) / s / 1e6 if s == s else float("nan")


def med(v):
    return statistics.median(dd[v]) if dd[v] else float("nan")


worlds = sorted({w for (w, _) in ck})
nl = min(launch.values()) if launch else 0
print(f"ckpt: {state}; {nl} launches per world, medians; page cache emptied before every "
      f"measurement ({cache or '?'}; dd: {ddcache or '?'}); {fsline}")
print(f"disk, dd bs=8M, new file: O_DIRECT write {med('direct_write'):.0f} MB/s, buffered write "
      f"{med('buffered_write'):.0f} MB/s (both fdatasync), cold read {med('read_cold'):.0f} MB/s "
      f"buffered, {med('read_cold_direct'):.0f} MB/s O_DIRECT")
cols = [("save_sync", "save"), ("load_cold", "load cold"), ("load_full_rank0", "1 rank reads all"),
        ("torch_save", "torch::save"), ("torch_load", "torch::load")]
print(f"{'MB/s':<8}" + "".join(f"{c[1]:>18}" for c in cols))
for w in worlds:
    print(f"{'world ' + str(w):<8}" + "".join(f"{mbps(w, c[0]):>18.0f}" for c in cols))
print(f"{'seconds':<8}{'sync save':>12}{'async 1st':>12}{'async later':>12}{'async total':>12}"
      f"{'memcpy':>9}{'later/sync':>12}")
for w in worlds:
    s, a1, a, t, c = (secs(w, v) for v in ("save_sync", "async_stall_first", "async_stall",
                                            "async_total", "memcpy"))
    print(f"{'world ' + str(w):<8}{s:>12.3f}{a1:>12.3f}{a:>12.3f}{t:>12.3f}{c:>9.3f}"
          f"{a / s:>12.3f}")

print("in training steps (forward + backward of a model with a third of the state as "
      "parameters, 32 tokens per rank, then an optimizer step; seconds):")
print(f"{'':<8}{'compute':>9}{'sync blk':>10}{'async blk':>11}{'blk ratio':>11}"
      f"{'win plain':>11}{'+sync':>8}{'+async':>8}{'win ratio':>11}")
for w in worlds:
    c, sb, ab, wp, ws, wa = (secs(w, v) for v in (
        "step_compute", "step_sync_block", "step_async_block", "window_plain", "window_sync",
        "window_async"))
    print(f"{'world ' + str(w):<8}{c:>9.3f}{sb:>10.3f}{ab:>11.3f}{ab / sb:>11.3f}{wp:>11.3f}"
          f"{ws - wp:>8.3f}{wa - wp:>8.3f}{(wa - wp) / (ws - wp):>11.3f}")

best = max(worlds, key=lambda w: mbps(w, "save_sync"))
best_load = max(worlds, key=lambda w: mbps(w, "load_cold"))
save, load = mbps(best, "save_sync"), mbps(best_load, "load_cold")
torch_save = mbps(1, "torch_save")  # the whole state from one process, as a rank-0 save
copy_stall = secs(best, "async_stall") / secs(best, "save_sync")
stall = secs(best, "step_async_block") / secs(best, "step_sync_block")
window = ((secs(best, "window_async") - secs(best, "window_plain")) /
          (secs(best, "window_sync") - secs(best, "window_plain")))
print(f"headline: Cohort save {save:.0f} MB/s at world {best} / dd O_DIRECT "
      f"{med('direct_write'):.0f} = {save / med('direct_write'):.2f} (target >= 0.8); "
      f"cold load {load:.0f} MB/s at world {best_load} / dd cold read {med('read_cold'):.0f} = "
      f"{load / med('read_cold'):.2f} (>= 0.8); / torch::save of the whole state in one process "
      f"{torch_save:.0f} = {save / torch_save:.2f} (>= 3); at world {best}, in training steps: "
      f"async stall / sync save = {stall:.3f} (<= 0.1), the steps' extra time with an async "
      f"save / with a sync save = {window:.3f}; a snapshot copied at the call / sync save = "
      f"{copy_stall:.3f}")
print("BENCH " + json.dumps({
    "save_over_direct_dd": round(save / med("direct_write"), 3),
    "load_over_dd": round(load / med("read_cold"), 3),
    "save_speedup_vs_torch_save": round(save / torch_save, 3),
    "async_stall_over_sync": round(stall, 3),
    "async_window_cost_over_sync": round(window, 3),
    "copying_snapshot_over_sync": round(copy_stall, 3),
    "save_world": best,
    "load_world": best_load,
}))
