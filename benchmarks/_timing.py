"""Timing helpers shared by the lock-overhead benchmarks.

Each benchmark times the same loop on plain and validated locks in one run; these helpers build
the loops (a ``with`` block at depth 1, four nested ``with`` blocks at depth 4) and time them.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

LOOPS = 50_000
REPEATS = 7


def depth1(lock: object) -> Callable[[], None]:
    """A loop of LOOPS ``with lock:`` blocks."""

    def run() -> None:
        for _ in range(LOOPS):
            with lock:
                pass

    return run


def depth4(a: object, b: object, c: object, d: object) -> Callable[[], None]:
    """A loop of LOOPS ``with a, b, c, d:`` blocks."""

    def run() -> None:
        for _ in range(LOOPS):
            with a, b, c, d:
                pass

    return run


def best(fn: Callable[[], None]) -> float:
    """Seconds per loop iteration of ``fn``, best of REPEATS, after one untimed warm-up run.

    The warm-up lets the validator see (and cache) the lock chain before timing starts.
    """
    fn()
    return min(timeit.repeat(fn, number=1, repeat=REPEATS)) / LOOPS
