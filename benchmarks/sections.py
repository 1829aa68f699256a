"""Cost of the other ways of holding a lock, on a chain already seen, against ``threading.Lock``.

Run: ``python benchmarks/sections.py``.  Each figure is the best of several repeats of a loop of
``with <section>:`` blocks, timed in the same run as ``with threading.Lock():``.  No goals: the
figures say what kernel-style code (``irqsave()``, read sides, ``nested()``) pays per block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from _timing import LOOPS, best

import pylockdep
from pylockdep._fastpath import ACCELERATED


def loop(section: Callable[[], AbstractContextManager[object]]) -> Callable[[], None]:
    """A loop of LOOPS ``with section():`` blocks."""

    def run() -> None:
        for _ in range(LOOPS):
            with section():
                pass

    return run


def main() -> int:
    plain = threading.Lock()
    base = best(loop(lambda: plain))
    print(f"fast path: {'C (pylockdep/_speedups.c)' if ACCELERATED else 'pure Python'}")
    print(f"{'with threading.Lock()':28} {base * 1e9:6.0f} ns")
    with pylockdep.validate() as v:
        mutex, spin = pylockdep.Mutex("bench_mutex"), pylockdep.SpinLock("bench_spin")
        rwlock, rwsem = pylockdep.RWLock("bench_rwlock"), pylockdep.RWSemaphore("bench_rwsem")
        srcu = pylockdep.SRCU("bench_srcu")
        sections: list[tuple[str, Callable[[], AbstractContextManager[object]]]] = [
            ("with mutex", lambda: mutex),
            ("with mutex.nested(1)", lambda: mutex.nested(1)),
            ("with spin.irqsave()", spin.irqsave),
            ("with spin.bh()", spin.bh),
            ("with rwlock.read()", rwlock.read),
            ("with rwlock.write()", rwlock.write),
            ("with rwsem.read()", rwsem.read),
            ("with pylockdep.rcu_read()", pylockdep.rcu_read),
            ("with srcu.read()", srcu.read),
        ]
        for name, section in sections:
            cost = best(loop(section))
            print(f"{name:28} {cost * 1e9:6.0f} ns  ratio {cost / base:5.1f}x")
    assert not v.reports
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
