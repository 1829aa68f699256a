"""Reliability stress (issue 13): many threads, thousands of lock classes, random but consistent
nesting, locks made and dropped all the time, and signal handlers and finalizers that make and take
locks at any bytecode, pylockdep's own included.

Every order is consistent (locks are always taken by increasing number; a handler's and a
finalizer's locks come after every ordinary one and never nest in each other), so a correct
validator reports nothing, raises nothing, and its memory stops growing once the graph has.

The universe is bounded, so that the graph does stop growing: the threads nest the pool's locks
in a fixed set of orders (``--orders``, spread over every class), and handlers and finalizers take
their locks in a few fixed ways.  A warm-up, before the timed run, holds every lock set the run can
hold (each order and, as out-of-order releases leave them, each of its subsequences) and runs every
handler and finalizer body under it: every dependency and every chain is known before the clock
starts, so over the run the graph and the chain cache must stay constant, and so must memory.

    python -m benchmarks.stress [--seconds 30] [--threads 16] [--classes 3000] [--orders 1500]

Prints what it did (with RSS, dependencies and cached chains over time) and exits 1 on any report
or exception.  Set PYLOCKDEP_PURE_PYTHON=1 for the pure-Python path.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial

import pylockdep

WINDOW = 6  # a block nests locks at most this far apart in the order
VARIANTS = 4  # the fixed ways a handler (and a finalizer) takes its locks
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

    def __init__(self, classes: int, orders: int, seed: int) -> None:
        self.pool = [pylockdep.Mutex(f"c{i}", key=("stress", i)) for i in range(classes)]
        rng = random.Random(seed)
        # The nesting orders: each a few neighbours in the order, starting all over the pool.
        self.orders = [
            sorted({base + rng.randrange(WINDOW) for _ in range(rng.randint(1, 4))})
            for base in (i * (classes - WINDOW) // orders for i in range(orders))
        ]
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
                    held = [pool[i] for i in rng.choice(self.orders)]
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
                        Finalized(self, rng.randrange(VARIANTS))  # cyclic garbage with a __del__
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
            self.handler_body(self.signals % VARIANTS)
        finally:
            self.inside.busy = False

    def handler_body(self, n: int) -> None:
        """What the signal handler does, in one of the fixed ways ``n``: makes a lock and takes
        two of its own, nested."""
        made = pylockdep.Mutex(f"signal-made{n}", key=("signal-made", n))
        first, second = sorted((n % 16, (n * 7 + 3) % 16))
        with self.handler_locks[first]:
            if second != first:
                with self.handler_locks[second]:
                    pass
        with made:
            pass

    def signal_now(self, body: Callable[[], None]) -> None:
        """Run ``body`` as a signal handler, as the timed run's signals do (what a handler takes
        is validated in a context of its own)."""
        previous = signal.signal(signal.SIGALRM, lambda signum, frame: body())
        try:
            signal.raise_signal(signal.SIGALRM)
        finally:
            signal.signal(signal.SIGALRM, previous)

    def collect_now(self, n: int) -> None:
        """Run the finalizer body ``n`` as the collector runs finalizers, as the timed run's
        garbage does (what a finalizer takes is validated in a context of its own)."""
        Finalized(self, n)
        gc.collect(0)

    def finalizer_body(self, n: int) -> None:
        """What a finalizer does, in one of the fixed ways ``n``."""
        first, second = sorted((n % 32, (n * 11 + 5) % 32))
        with self.finals[first]:
            if second != first:
                with self.finals[second]:
                    pass
        with pylockdep.Mutex(f"final-made{n}", key=("final-made", n)):
            pass

    def warm_up(self) -> int:
        """Hold every lock set the run can hold and run every finalizer body (called, and run by
        the collector) and, in the main thread, every handler body (as a signal handler) under it
        (and under none); returns how many sets.  Run in the main thread and in another: signal
        handlers interrupt only the main thread, so its chains are validated apart from the
        others' (pylockdep's SIGNAL state)."""
        in_main = threading.current_thread() is threading.main_thread()
        held_sets = {()}
        for order in self.orders:
            for size in range(1, len(order) + 1):
                held_sets.update(itertools.combinations(order, size))
        for held in sorted(held_sets):
            locks = [self.pool[i] for i in held]
            for lock in locks:
                lock.acquire()
            for n in range(VARIANTS):
                self.finalizer_body(n)
                self.collect_now(n)
                if in_main:
                    self.signal_now(partial(self.handler_body, n))
                    # A collection that starts in a handler, before it takes its locks, runs the
                    # finalizers in both contexts.
                    self.signal_now(partial(self.collect_now, n))
            for lock in reversed(locks):
                lock.release()
        return len(held_sets)


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
            s.finalizer_body(self.n)
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
    parser.add_argument("--orders", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    v = pylockdep.current()
    stress = Stress(args.classes, args.orders, args.seed)
    began = time.monotonic()
    other = threading.Thread(target=stress.warm_up, name="warm-up")
    other.start()
    other.join()
    held_sets = stress.warm_up()
    warm_up = (time.monotonic() - began, held_sets, v.graph.nr_edges, len(v.chains))
    gc.set_threshold(200)
    signal.signal(signal.SIGALRM, stress.on_signal)
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    threads = [threading.Thread(target=stress.work, args=(i,), name=f"worker-{i}") for i in range(1, args.threads)]
    for t in threads:
        t.start()
    start = time.monotonic()
    samples: list[tuple[float, float, int, int]] = [(0.0, rss_mb(), v.graph.nr_edges, len(v.chains))]

    def sample() -> None:
        while not stress.stop.wait(args.seconds / 10):
            samples.append((time.monotonic() - start, rss_mb(), v.graph.nr_edges, len(v.chains)))

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
    print(
        f"  warm-up {warm_up[0]:.1f} s: {warm_up[1]} lock sets held, dependencies {warm_up[2]},"
        f" cached chains {warm_up[3]}"
    )
    print(f"  classes {len(v.graph.classes)}, dependencies {v.graph.nr_edges}, cached chains {len(v.chains)}")
    # What memory may grow with: the graph (until every dependency the program has was seen) and
    # the chain cache (until CHAIN_CACHE_SIZE keys, then it starts again empty).
    print("  over time: seconds, RSS MB, dependencies, cached chains")
    for t, rss, edges, chains in samples:
        print(f"    {t:5.1f} {rss:7.1f} {edges:8d} {chains:8d}")
    half = [rss for t, rss, _, _ in samples if t >= args.seconds / 2]
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
