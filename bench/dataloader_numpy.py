#!/usr/bin/python3
"""The baseline of scripts/bench dataloader: nanoGPT's way of reading training windows, with
numpy.memmap (Debian's python3-numpy), over the same windows as bench_dataloader's timed
steps (ORDER: one window index per line, from bench_dataloader --dump-order).

Per step of BATCH windows it builds what the Cohort collator hands the model: input ids and
labels as int64 arrays of shape [BATCH, SEQ] (labels = input, the model shifts). The memmap
is opened once (nanoGPT re-opens it per batch, which only costs more).
Usage: dataloader_numpy.py FILE SEQ BATCH ORDER [REPEATS]
Prints per repeat: RATE numpy 0 <samples/s> <samples> <checksum of the first ids>."""
import sys
import time

import numpy as np


def main():
    path, seq, batch, order_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    order = [int(line) for line in open(order_path)]
    steps = len(order) // batch
    data = np.memmap(path, dtype=np.uint16, mode="r")
    for _ in range(repeats):
        checksum = 0
        t0 = time.perf_counter()
        for s in range(steps):
            ix = order[s * batch:(s + 1) * batch]
            x = np.stack([data[i * seq:(i + 1) * seq].astype(np.int64) for i in ix])
            y = x.copy()
            checksum += int(x[:, 0].sum())
        seconds = time.perf_counter() - t0
        del y
        print(f"RATE numpy 0 {steps * batch / seconds:.1f} {steps * batch} {checksum}", flush=True)


if __name__ == "__main__":
    main()
