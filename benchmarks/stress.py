"""Reliability stress (issue 13): many threads, thousands of lock classes, random but consistent
nesting, locks made and dropped all the time, and signal handlers and finalizers that make and take
locks at any bytecode, pylockdep's own included.

Every order is consistent (locks are always taken by increasing number; a handler's and a
finalizer's locks come after every ordinary one and never nest in each other), so a correct
validator reports nothing, raises nothing, and its memory stops growing once the graph has.

    python -m benchmarks.stress [--seconds 30] [--threads 16] [--classes 3000]

Prints what it did and exits 1 on any report or exception.  Set PYLOCKDEP_PURE_PYTHON=1 for the
pure-Python path.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import signal
import sys
import threading
import time

import pylockdep

WINDOW = 6  # a block nests locks at most this far apart in the order
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Resident memory of this process, in MB (Linux), or 0 where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return 0.0


class Stress:
    """The shared state of one run."""

    def __init__(self, classes: int, seed: int) -> None:
        self.pool = [pylockdep.Mutex(f"c{i}", key=("stress", i)) for i in range(classes)]
        self.finals = [pylockdep.Mutex(f"final{i}", key=("final", i)) for i in range(32)]
        self.handler_locks = [pylockdep.Mutex(f"signal{i}", key=("signal", i)) for i in range(16)]
        self.errors: list[str] = []
        self.acquisitions = 0
        self.made = 0
        self.finalized = 0
        self.signals = 0
        self.stop = threading.Event()
        self.inside = threading.local()  # in a handler or finalizer: the other one stays out
        self.seed = seed

    def work(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        pool = self.pool
        count = made = 0
        try:
            while not self.stop.is_set():
                for _ in range(200):
                    # Neighbours in the order: the graph saturates, so memory must stop growing.
                    base = rng.randrange(len(pool) - WINDOW)
                    picks = sorted(set(base + rng.randrange(WINDOW) for _ in range(rng.randint(1, 4))))
                    held = [pool[i] for i in picks]
                    for lock in held:
                        lock.acquire()
                    if rng.random() < 0.3:
                        rng.shuffle(held)  # releases in any order
                    for lock in held:
                        lock.release()
                    count += 1
                    if rng.random() < 0.05:  # a lock replaced: the old one dropped, a new one made
                        i = rng.randrange(len(pool))
                        pool[i] = pylockdep.Mutex(f"c{i}", key=("stress", i))
                        made += 1
                    if rng.random() < 0.05:
                        Finalized(self, rng.randrange(1 << 30))  # cyclic garbage with a __del__
        except BaseException as exc:  # noqa: BLE001 - counted and printed: the run must have none
            self.errors.append(f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")
        self.acquisitions += count
        self.made += made

    def on_signal(self, signum: int, frame: object) -> None:
        if getattr(self.inside, "busy", False):
            return
        self.inside.busy = True
        try:
            self.signals += 1
            n = self.signals
            made = pylockdep.Mutex(f"signal-made{n % 8}", key=("signal-made", n % 8))
            first, second = sorted((n % 16, (n * 7 + 3) % 16))
            with self.handler_locks[first]:
                if second != first:
                    with self.handler_locks[second]:
                        pass
            with made:
                pass
        finally:
            self.inside.busy = False


class Finalized:
    """Garbage in a reference cycle whose finalizer makes and takes locks in whichever thread the
    collector runs."""

    def __init__(self, stress: Stress, n: int) -> None:
        self.stress, self.n, self.me = stress, n, self

    def __del__(self) -> None:
        s = self.stress
        if getattr(s.inside, "busy", False):
            return
        s.inside.busy = True
        try:
            first, second = sorted((self.n % 32, (self.n >> 5) % 32))
            with s.finals[first]:
                if second != first:
                    with s.finals[second]:
                        pass
            with pylockdep.Mutex(f"final-made{self.n % 8}", key=("final-made", self.n % 8)):
                pass
            s.finalized += 1
        except BaseException as exc:  # noqa: BLE001
            s.errors.append(f"finalizer: {type(exc).__name__}: {exc}")
        finally:
            s.inside.busy = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--classes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    v = pylockdep.current()
    stress = Stress(args.classes, args.seed)
    gc.set_threshold(200)
    signal.signal(signal.SIGALRM, stress.on_signal)
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    threads = [threading.Thread(target=stress.work, args=(i,), name=f"worker-{i}") for i in range(1, args.threads)]
    for t in threads:
        t.start()
    samples: list[tuple[float, float, int]] = []
    start = time.monotonic()

    def sample() -> None:
        while not stress.stop.wait(args.seconds / 10):
            samples.append((time.monotonic() - start, rss_mb(), len(v.chains)))

    sampler = threading.Thread(target=sample, name="sampler")
    sampler.start()
    timer = threading.Timer(args.seconds, stress.stop.set)
    timer.start()
    stress.work(0)  # the main thread works too: signals land in pylockdep's own code
    signal.setitimer(signal.ITIMER_REAL, 0)
    for t in threads:
        t.join()
    sampler.join()
    gc.collect()

    path = "pure" if os.environ.get("PYLOCKDEP_PURE_PYTHON") else "C"
    print(f"stress ({path} path, Python {sys.version.split()[0]}): {args.threads} threads, {args.seconds:g} s")
    print(
        f"  acquisition blocks {stress.acquisitions}, locks made {stress.made}, signals {stress.signals},"
        f" finalizers {stress.finalized}"
    )
    print(f"  classes {len(v.graph.classes)}, dependencies {v.graph.nr_edges}, cached chains {len(v.chains)}")
    half = [rss for t, rss, _ in samples if t >= args.seconds / 2]
    if samples:
        print("  RSS MB over time: " + ", ".join(f"{t:.0f}s {rss:.0f}" for t, rss, _ in samples))
    if half:
        print(f"  RSS growth over the second half: {half[-1] - half[0]:+.1f} MB")
    print(f"  reports {len(v.reports)}, exceptions {len(stress.errors)}")
    for report in v.reports[:3]:
        print(report.text)
    for error in stress.errors[:5]:
        print(" ", error)
    return 1 if v.reports or stress.errors else 0


if __name__ == "__main__":
    sys.exit(main())
