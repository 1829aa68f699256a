"""Cost of a validated acquire+release on a chain already seen, against ``threading.Lock``.

Run: ``python benchmarks/overhead.py``.  Each figure is the best of several repeats of a ``with``
block (depth 1) or four nested ``with`` blocks (depth 4), timed in the same run as the same code on
``threading.Lock``.  Goals (issue 2): at most 4x at depth 1 and at most 5x per lock at depth 4.
With ``PYLOCKDEP_PURE_PYTHON=1`` it measures the pure-Python path instead of the C one.
"""

from __future__ import annotations

import threading

from _timing import best, depth1, depth4

import pylockdep
from pylockdep._fastpath import ACCELERATED

GOALS = {1: 4.0, 4: 5.0}


def main() -> int:
    plain = [threading.Lock() for _ in range(4)]
    base = {1: best(depth1(plain[0])), 4: best(depth4(*plain))}
    print(f"fast path: {'C (pylockdep/_speedups.c)' if ACCELERATED else 'pure Python'}")
    print(f"threading.Lock: depth 1 {base[1] * 1e9:7.0f} ns   depth 4 {base[4] * 1e9:7.0f} ns")
    failed = 0
    with pylockdep.validate() as v:
        for kind in (pylockdep.Mutex, pylockdep.SpinLock):
            locks = [kind(f"bench_{kind.__name__}_{i}") for i in range(4)]
            for depth, fn in ((1, depth1(locks[0])), (4, depth4(*locks))):
                cost = best(fn)
                ratio = cost / base[depth]
                ok = ratio <= GOALS[depth]
                failed += not ok
                per = "per lock " if depth > 1 else ""
                print(
                    f"{kind.__name__:9} depth {depth}: {cost * 1e9:7.0f} ns  ratio {per}{ratio:5.2f}x "
                    f"(goal <= {GOALS[depth]:.0f}x) {'ok' if ok else 'MISSED'}"
                )
    assert not v.reports
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
