#!/usr/bin/python3
"""A faulty wire between the multihost tests' hosts, in user space (issue 19).

This kernel has no sch_netem (tc netem: "Specified qdisc kind is unknown"), so delay and
packet loss are made here: the wire gives every host namespace a TUN device (cmht), routes
each other host's /32 through it (the test subnet's /24 stays on the veth, so taking the
routes away puts traffic back on the bridge without breaking a TCP connection), and moves
IP packets between the TUN devices, holding each for DELAY, dropping LOSS of them at random
and pacing them to RATE. Faults apply to every packet from or to a faulty host.

  wire.py --prefix cmh --hosts h0,h1 --faulty h1 [--delay-ms D] [--loss P] [--rate-mbit R]
          --ready FILE

It writes FILE once the routes are in place, and on SIGTERM/SIGINT removes its routes and
exits (the TUN devices go with its file descriptors). No busy waiting: select() sleeps
until a packet arrives or the next held packet is due.
"""
import argparse
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"wire.py: ip {' '.join(args)}: {r.stderr.strip()}")


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prefix", default="cmh")
    p.add_argument("--subnet", default="10.77.0")
    p.add_argument("--hosts", required=True)
    p.add_argument("--faulty", required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0, help="fraction of packets dropped")
    p.add_argument("--rate-mbit", type=float, default=0.0, help="0: unlimited")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ready", required=True)
    a = p.parse_args()
    random.seed(a.seed)
    hosts = a.hosts.split(",")
    faulty = set(a.faulty.split(","))
    addr = {h: f"{a.subnet}.{int(h[1:]) + 1}" for h in hosts}
    by_ip = {bytes(int(x) for x in addr[h].split(".")): h for h in hosts}

    fds = {}
    for h in hosts:
        dev = f"{a.prefix}t{h[1:]}"
        fds[h] = open_tun(dev)
        ns = f"{a.prefix}-{h}"
        ip("link", "set", dev, "netns", ns)
        ip("-n", ns, "link", "set", dev, "name", "cmht", "mtu", "1500", "up")

    def routes(verb):
        for h in hosts:
            for o in hosts:
                if o != h:
                    ip("-n", f"{a.prefix}-{h}", "route", verb, f"{addr[o]}/32", "dev", "cmht",
                       "src", addr[h], check=(verb == "add"))

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    routes("add")
    with open(a.ready, "w") as f:
        f.write(f"{os.getpid()}\n")

    held = []  # (due, seq, dst host, packet)
    seq = 0
    next_free = {}  # per (src, dst): when the paced link is free again
    stats = {"forwarded": 0, "dropped": 0}
    delay = a.delay_ms / 1000.0
    bytes_per_s = a.rate_mbit * 1e6 / 8
    host_of_fd = {fd: h for h, fd in fds.items()}
    try:
        while not stopping:
            now = time.monotonic()
            while held and held[0][0] <= now:
                _, _, dst, pkt = heapq.heappop(held)
                try:
                    os.write(fds[dst], pkt)
                    stats["forwarded"] += 1
                except OSError:
                    stats["dropped"] += 1
            timeout = max(0.0, held[0][0] - now) if held else 1.0
            try:
                ready, _, _ = select.select(list(fds.values()), [], [], timeout)
            except InterruptedError:
                continue
            for fd in ready:
                src = host_of_fd[fd]
                while True:
                    try:
                        pkt = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if len(pkt) < 20 or pkt[0] >> 4 != 4:
                        continue  # IPv4 only (IPv6 router solicitations and the like)
                    dst = by_ip.get(pkt[16:20])
                    if dst is None or dst == src:
                        continue
                    hit = src in faulty or dst in faulty
                    if hit and a.loss > 0 and random.random() < a.loss:
                        stats["dropped"] += 1
                        continue
                    due = time.monotonic() + (delay if hit else 0.0)
                    if hit and bytes_per_s > 0:
                        start = max(due, next_free.get((src, dst), 0.0))
                        next_free[(src, dst)] = start + len(pkt) / bytes_per_s
                        due = next_free[(src, dst)]
                    seq += 1
                    heapq.heappush(held, (due, seq, dst, pkt))
    finally:
        routes("del")
        print(f"wire.py: forwarded {stats['forwarded']} packets, dropped {stats['dropped']}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
