"""Cost of an instrumented ``threading.Lock`` (and ``RLock``) against CPython's own.

Run: ``python benchmarks/threading_overhead.py``.  Each figure is the best of several repeats of
a ``with lock:`` block on a chain already validated (depth 1), or of four nested ``with`` blocks
(depth 4), timed in the same run as the same code on the plain lock.  Prints the ratios.
"""

from __future__ import annotations

import threading
import timeit
from collections.abc import Callable

import pylockdep

LOOPS = 50_000
REPEATS = 7


def depth1(lock: object) -> Callable[[], None]:
    def run() -> None:
        for _ in range(LOOPS):
            with lock:
                pass
    return run


def depth4(a: object, b: object, c: object, d: object) -> Callable[[], None]:
    def run() -> None:
        for _ in range(LOOPS):
            with a, b, c, d:
                pass
    return run


def best(fn: Callable[[], None]) -> float:
    """Seconds per loop iteration, best of REPEATS."""
    fn()  # warm up: the chain is validated once here
    return min(timeit.repeat(fn, number=1, repeat=REPEATS)) / LOOPS


def four(factory: Callable[[], object]) -> list[object]:
    """Four locks of four classes (one creation line each)."""
    a = factory()
    b = factory()
    c = factory()
    d = factory()
    return [a, b, c, d]


def measure(kind: str) -> dict[int, float]:
    """Seconds per iteration at depth 1 and 4 for threading.<kind>, as it is now."""
    locks = four(getattr(threading, kind))
    return {1: best(depth1(locks[0])), 4: best(depth4(*locks))}


def main() -> int:
    with pylockdep.validate() as v:
        for kind in ("Lock", "RLock"):
            plain = measure(kind)
            with pylockdep.instrument_threading():
                instrumented = measure(kind)
            for depth in (1, 4):
                ratio = instrumented[depth] / plain[depth]
                print(f"threading.{kind:5} depth {depth}: plain {plain[depth] * 1e9:6.0f} ns  instrumented "
                      f"{instrumented[depth] * 1e9:6.0f} ns  ratio {ratio:5.2f}x")
    assert not v.reports
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
