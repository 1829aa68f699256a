"""Cost of an instrumented ``threading.Lock`` (and ``RLock``) against CPython's own.

Run: ``python benchmarks/threading_overhead.py``.  Each figure is the best of several repeats of
a ``with lock:`` block on a chain already validated (depth 1), or of four nested ``with`` blocks
(depth 4), timed in the same run as the same code on the plain lock.  Prints the ratios.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from _timing import best, depth1, depth4

import pylockdep


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
                print(
                    f"threading.{kind:5} depth {depth}: plain {plain[depth] * 1e9:6.0f} ns  instrumented "
                    f"{instrumented[depth] * 1e9:6.0f} ns  ratio {ratio:5.2f}x"
                )
    assert not v.reports
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
