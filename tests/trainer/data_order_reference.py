#!/usr/bin/env python3
"""The global sample order of docs/trainer.md ("The global batch plan"), written from that
text alone: MT19937-64 seeded with seed * 1000003 + epoch, Fisher-Yates from the last
position down, each draw by Lemire's multiply-and-reject method on the raw 64-bit output.
Prints one line per case "n seed epoch: order..." (cases as arguments "n,seed,epoch")."""
import sys

M64 = (1 << 64) - 1


class MT19937_64:
    N, M = 312, 156

    def __init__(self, seed):
        self.mt = [seed & M64]
        for i in range(1, self.N):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & M64)
        self.index = self.N

    def _twist(self):
        mt = self.mt
        for i in range(self.N):
            x = (mt[i] & 0xFFFFFFFF80000000) | (mt[(i + 1) % self.N] & 0x7FFFFFFF)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            mt[i] = mt[(i + self.M) % self.N] ^ xa
        self.index = 0

    def next(self):
        if self.index >= self.N:
            self._twist()
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & M64


def draw_below(engine, s):
    product = engine.next() * s
    low = product & M64
    if low < s:
        threshold = ((1 << 64) - s) % s
        while low < threshold:
            product = engine.next() * s
            low = product & M64
    return product >> 64


def order(n, seed, epoch):
    engine = MT19937_64((seed * 1000003 + epoch) & M64)
    out = list(range(n))
    for i in range(n - 1, 0, -1):
        j = draw_below(engine, i + 1)
        out[i], out[j] = out[j], out[i]
    return out


if __name__ == "__main__":
    for case in sys.argv[1:]:
        n, seed, epoch = (int(x) for x in case.split(","))
        print(f"{n} {seed} {epoch}:" + "".join(f" {v}" for v in order(n, seed, epoch)))
