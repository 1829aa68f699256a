"""The micro-benchmarks: one lock operation against the plain-Python equivalent, in one process.

Run through ``python -m benchmarks`` (which runs this module once per path, C and pure, and
prints the table), or alone: ``python -m benchmarks.micro [--rounds R] [--loops L] [--only TEXT]``
prints one JSON object per measure.  ``--one NAME --side base|subject --count N`` runs one side
of one measure ``N`` times and nothing else, for the instruction counts of ``--instructions``.

Every measure times the subject and its baseline in alternation (:func:`_timing.alternate`); the
baseline is CPython's own (``threading.Lock``, ``threading.RLock``, a queue made before
instrumentation).  Memory is measured once with :mod:`tracemalloc`, and the 8-thread scaling as
CPU time per operation, alternating one thread and eight.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import threading
import tracemalloc
import types
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from queue import Queue
from time import thread_time_ns
from typing import Any

import pylockdep
from pylockdep._fastpath import ACCELERATED

from ._timing import Loop, Ratio, alternate

_PACKAGE_DIR = os.path.dirname(pylockdep.__file__)


def _with_globals_of_now(function: Any) -> Any:
    """``function`` reading a copy of its module's globals as they are now, or ``function`` itself
    when it is no Python function.  ``threading.RLock()`` is a Python function that calls the module
    global ``_CRLock``, which instrumentation rebinds: the baseline would run pylockdep's stand-in."""
    if not isinstance(function, types.FunctionType):
        return function
    return types.FunctionType(
        function.__code__, dict(function.__globals__), function.__name__, function.__defaults__, function.__closure__
    )


#: CPython's factories, whatever instrumentation does later.
#: Kept in a tuple rather than as module names: instrumentation rebinds every module-level name bound
#: to CPython's lock factories, and the baselines must stay plain while it is installed.
_PLAIN_FACTORIES = (threading.Lock, _with_globals_of_now(threading.RLock))


def plain_lock() -> Any:
    """A CPython ``threading.Lock()``, even while instrumentation is installed."""
    return _PLAIN_FACTORIES[0]()


def plain_rlock() -> Any:
    """A CPython ``threading.RLock()``, even while instrumentation is installed."""
    return _PLAIN_FACTORIES[1]()


def plain_condition() -> Any:
    """A ``threading.Condition`` over a CPython ``RLock``, even while instrumentation is installed."""
    return threading.Condition(plain_rlock())


# -- loop shapes: the baseline and the subject run the same code on different objects -----------


def with_block(lock: Any) -> Loop:
    """``with lock: pass``, n times."""

    def loop(n: int) -> None:
        for _ in range(n):
            with lock:
                pass

    return loop


def with_four(a: Any, b: Any, c: Any, d: Any) -> Loop:
    """``with a, b, c, d: pass``, n times."""

    def loop(n: int) -> None:
        for _ in range(n):
            with a, b, c, d:
                pass

    return loop


def with_call(section: Callable[[], Any]) -> Loop:
    """``with section(): pass``, n times (``section`` is a bound method such as ``spin.irqsave``)."""

    def loop(n: int) -> None:
        for _ in range(n):
            with section():
                pass

    return loop


def calls(make: Callable[[], Any]) -> Loop:
    """``make()``, n times (lock creation, from one line: one class)."""

    def loop(n: int) -> None:
        for _ in range(n):
            make()

    return loop


def put_get(q: Any) -> Loop:
    """``q.put(1); q.get()``, n times."""

    def loop(n: int) -> None:
        for _ in range(n):
            q.put(1)
            q.get()

    return loop


def submit_result(pool: Any) -> Loop:
    """``pool.submit(int).result()``, n times: hand work to a pool and wait for it."""

    def loop(n: int) -> None:
        for _ in range(n):
            pool.submit(int).result()

    return loop


def start_join() -> Loop:
    """Make, start and join a thread that does nothing, n times."""

    def loop(n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=int)
            t.start()
            t.join()

    return loop


def uninstrumented(loop: Loop) -> Loop:
    """``loop`` with threading's instrumentation off while it runs (waits are modelled by
    patching Thread, the pools and Queue for the whole process, so a plain baseline needs it)."""

    def run(n: int) -> None:
        instrumentation = pylockdep.instrument_threading()
        instrumentation.uninstall()
        try:
            loop(n)
        finally:
            instrumentation.install()

    return run


def notify_wait(cond: Any) -> Loop:
    """``with cond: cond.notify(); cond.wait(0)``, n times: a wait that times out at once."""

    def loop(n: int) -> None:
        for _ in range(n):
            with cond:
                cond.notify()
                cond.wait(0)

    return loop


# -- the measures ------------------------------------------------------------------------------


@dataclass
class Measure:
    """One row of the table: ``make()`` returns (baseline, subject) loops; goals are ratios."""

    name: str
    group: str
    goal_c: float | None
    goal_pure: float | None
    make: Callable[[ExitStack], tuple[Loop, Loop]]
    loops: int = 1000  # iterations per round (at the default --loops 1000)


def _instrumented(stack: ExitStack) -> None:
    stack.enter_context(pylockdep.instrument_threading())


def _lock_rows() -> list[Measure]:
    rows = []
    plain = [plain_lock() for _ in range(4)]
    for label, factory in (
        ("Mutex", lambda i: pylockdep.Mutex(f"bench_mutex_{i}")),
        ("SpinLock", lambda i: pylockdep.SpinLock(f"bench_spin_{i}")),
        ("threading.Lock (instrumented)", None),
    ):

        def make1(stack: ExitStack, factory: Any = factory) -> tuple[Loop, Loop]:
            return with_block(plain[0]), with_block(_four(stack, factory)[0])

        def make4(stack: ExitStack, factory: Any = factory) -> tuple[Loop, Loop]:
            return with_four(*plain), with_four(*_four(stack, factory))

        rows.append(Measure(f"with {label}, depth 1", "locks", 1.5, 5.0, make1))
        rows.append(Measure(f"with {label}, depth 4, per lock", "locks", 1.5, 5.0, make4, loops=500))

    def rlock_first(stack: ExitStack) -> tuple[Loop, Loop]:
        _instrumented(stack)
        return with_block(plain_rlock()), with_block(threading.RLock())

    def rlock_again(stack: ExitStack) -> tuple[Loop, Loop]:
        base = plain_rlock()
        _instrumented(stack)
        subject = threading.RLock()
        for lock in (base, subject):
            lock.acquire()
            stack.callback(lock.release)
        return with_block(base), with_block(subject)

    rows.append(Measure("with threading.RLock (instrumented), first", "locks", 1.5, None, rlock_first))
    rows.append(Measure("with threading.RLock (instrumented), re-entry", "locks", 1.5, None, rlock_again))
    return rows


def _four(stack: ExitStack, factory: Callable[[int], Any] | None) -> list[Any]:
    """Four locks of four classes: ``factory(i)``, or instrumented ``threading.Lock()``s."""
    if factory is not None:
        return [factory(i) for i in range(4)]
    _instrumented(stack)
    a = threading.Lock()
    b = threading.Lock()
    c = threading.Lock()
    d = threading.Lock()
    return [a, b, c, d]


def _section_rows() -> list[Measure]:
    plain = plain_lock()
    spin = pylockdep.SpinLock("bench_section_spin")
    mutex = pylockdep.Mutex("bench_section_mutex")
    rwlock = pylockdep.RWLock("bench_section_rwlock")
    rwsem = pylockdep.RWSemaphore("bench_section_rwsem")
    srcu = pylockdep.SRCU("bench_section_srcu")
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("spin.irqsave()", spin.irqsave),
        ("spin.irq()", spin.irq),
        ("spin.bh()", spin.bh),
        ("mutex.nested(1)", lambda: mutex.nested(1)),
        ("rwlock.read()", rwlock.read),
        ("rwlock.write()", rwlock.write),
        ("rwsem.read()", rwsem.read),
        ("rwsem.write()", rwsem.write),
        ("srcu.read()", srcu.read),
        ("pylockdep.rcu_read()", pylockdep.rcu_read),
    ]
    rows = []
    for label, section in sections:

        def make(stack: ExitStack, section: Any = section) -> tuple[Loop, Loop]:
            return with_block(plain), with_call(section)

        rows.append(Measure(f"with {label}", "sections", 4.0, None, make))
    return rows


def _creation_rows() -> list[Measure]:
    rows = []
    kinds: list[tuple[str, Callable[[], Any]]] = [
        ("Mutex", lambda: pylockdep.Mutex("bench_new")),
        ("SpinLock", lambda: pylockdep.SpinLock("bench_new")),
        ("RawSpinLock", lambda: pylockdep.RawSpinLock("bench_new")),
        ("RWLock", lambda: pylockdep.RWLock("bench_new")),
        ("RWSemaphore", lambda: pylockdep.RWSemaphore("bench_new")),
        ("SRCU", lambda: pylockdep.SRCU("bench_new")),
    ]
    for label, factory in kinds:

        def make(stack: ExitStack, factory: Any = factory) -> tuple[Loop, Loop]:
            return calls(lambda: plain_lock()), calls(factory)

        rows.append(Measure(f"new {label}", "creation", 3.0, 3.0, make))
    for label, plain_factory in (("Lock", plain_lock), ("RLock", plain_rlock), ("Condition", plain_condition)):

        def make_threading(stack: ExitStack, label: str = label, plain_factory: Any = plain_factory) -> Any:
            _instrumented(stack)
            return calls(lambda: plain_factory()), calls(lambda: getattr(threading, label)())

        rows.append(Measure(f"new threading.{label} (instrumented)", "creation", 3.0, 3.0, make_threading))
    return rows


def _threading_rows() -> list[Measure]:
    def queue(stack: ExitStack) -> tuple[Loop, Loop]:
        base = Queue()
        _instrumented(stack)
        return put_get(base), put_get(Queue())

    def condition(stack: ExitStack) -> tuple[Loop, Loop]:
        base = plain_condition()
        _instrumented(stack)
        return notify_wait(base), notify_wait(threading.Condition())

    def pool(stack: ExitStack) -> tuple[Loop, Loop]:
        from concurrent.futures import ThreadPoolExecutor  # here: it imports logging, with its locks

        base = ThreadPoolExecutor(max_workers=1)
        stack.callback(base.shutdown)
        _instrumented(stack)
        subject = ThreadPoolExecutor(max_workers=1)
        stack.callback(subject.shutdown)
        return uninstrumented(submit_result(base)), submit_result(subject)

    def threads(stack: ExitStack) -> tuple[Loop, Loop]:
        _instrumented(stack)
        return uninstrumented(start_join()), start_join()

    return [
        Measure("queue.Queue put+get (instrumented)", "threading", 2.0, 2.0, queue),
        Measure("Condition notify+wait(0) (instrumented)", "threading", 2.0, 2.0, condition),
        Measure("ThreadPoolExecutor submit+result (instrumented)", "threading", 2.0, 2.0, pool, loops=200),
        Measure("Thread start+join (instrumented)", "threading", 1.5, 1.5, threads, loops=100),
    ]


def async_with_block(lock: Any, event_loop: Any) -> Loop:
    """``async with lock: pass``, n times, in one task of ``event_loop``."""

    async def body(n: int) -> None:
        for _ in range(n):
            async with lock:
                pass

    def loop(n: int) -> None:
        event_loop.run_until_complete(body(n))

    return loop


def _asyncio_rows() -> list[Measure]:
    def uncontended(stack: ExitStack) -> tuple[Loop, Loop]:
        import asyncio  # here: importing asyncio makes locks of its own, which no other measure wants

        base = asyncio.Lock()
        _instrumented(stack)
        event_loop = asyncio.new_event_loop()
        stack.callback(event_loop.close)
        return async_with_block(base, event_loop), async_with_block(asyncio.Lock(), event_loop)

    return [Measure("async with asyncio.Lock (instrumented), uncontended", "asyncio", 3.0, 3.0, uncontended)]


def measures() -> list[Measure]:
    """Every timed measure, in table order."""
    return _lock_rows() + _section_rows() + _creation_rows() + _threading_rows() + _asyncio_rows()


# -- which path ran ----------------------------------------------------------------------------


def python_calls_per_op(loop: Loop, n: int = 50) -> float:
    """Calls of pylockdep's Python functions per iteration of ``loop``: 0 when C did all of it."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call" and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            count += 1

    sys.setprofile(profile)
    try:
        loop(n)
    finally:
        sys.setprofile(None)
    return count / n


def path_label(calls_per_op: float) -> str:
    """``C`` when no pylockdep Python code ran, else how many Python calls an operation made."""
    if not ACCELERATED:
        return "pure"
    return "C" if calls_per_op == 0 else f"py {calls_per_op:.3g}/op"


# -- memory and scaling ------------------------------------------------------------------------


class PlainWrapper:
    """The baseline of memory: a Python object wrapping a CPython lock."""

    __slots__ = ("_lock", "__weakref__")

    def __init__(self) -> None:
        self._lock = plain_lock()


def bytes_per_instance(make: Callable[[], Any], count: int = 2000) -> float:
    """Memory each of ``count`` live instances made by ``make()`` costs (tracemalloc)."""
    keep: list[Any] = [None] * count  # allocated before counting starts
    make()  # the first of a kind pays once for its class (and its first validation): not counted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            keep[i] = make()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return (after - before) / count


def _taken_once(lock: Any) -> Any:
    """``lock``, after one ``with lock:`` (which makes what a lock makes on first use)."""
    with lock:
        pass
    return lock


def memory_rows(count: int) -> list[dict[str, Any]]:
    """Bytes per instance of each lock type against :class:`PlainWrapper` (goal 1.5x)."""
    rows = []
    with pylockdep.instrument_threading():
        kinds: list[tuple[str, Callable[[], Any]]] = [
            ("Mutex", lambda: pylockdep.Mutex("bench_mem")),
            ("SpinLock", lambda: pylockdep.SpinLock("bench_mem")),
            ("RWLock", lambda: pylockdep.RWLock("bench_mem")),
            ("RWLock (taken once)", lambda: _taken_once(pylockdep.RWLock("bench_mem"))),
            ("threading.Lock (instrumented)", lambda: threading.Lock()),
            ("threading.RLock (instrumented)", lambda: threading.RLock()),
        ]
        base = bytes_per_instance(PlainWrapper, count)
        for label, make in kinds:
            size = bytes_per_instance(make, count)
            rows.append(
                _row(
                    f"memory per {label}",
                    "memory",
                    1.5,
                    1.5,
                    figure=size / base,
                    median=None,
                    rounds=1,
                    note=f"{size:.0f} B vs {base:.0f} B",
                )
            )
    return rows


def _per_op_cpu(lock_for: Callable[[int], Any], threads: int, loops: int) -> float:
    """CPU nanoseconds per ``with lock:`` when ``threads`` threads each loop on their own lock."""
    locks = [lock_for(i) for i in range(threads)]
    times = [0] * threads
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        lock = locks[i]
        with lock:  # validated once, off the clock
            pass
        start.wait()
        t0 = thread_time_ns()
        for _ in range(loops):
            with lock:
                pass
        times[i] = thread_time_ns() - t0

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(times) / (threads * loops)


def scaling_row(rounds: int, loops: int) -> dict[str, Any]:
    """Throughput per thread-second with 8 threads on their own Mutexes against 1 thread,
    divided by the same ratio for plain locks (goal >= 0.9)."""
    plain = lambda i: plain_lock()  # noqa: E731
    mutex = lambda i: pylockdep.Mutex("bench_scaling")  # noqa: E731
    samples: dict[tuple[str, int], list[float]] = {(k, n): [] for k in ("plain", "mutex") for n in (1, 8)}
    for _ in range(rounds):
        for kind, make in (("plain", plain), ("mutex", mutex)):
            for n in (1, 8):
                samples[kind, n].append(_per_op_cpu(make, n, loops))
    best = {k: min(v) for k, v in samples.items()}
    med = {k: statistics.median(v) for k, v in samples.items()}
    # Throughput per thread-second is 1 / CPU time per operation; 8 threads against 1.
    plain_scale = best["plain", 1] / best["plain", 8]
    mutex_scale = best["mutex", 1] / best["mutex", 8]
    median = (med["mutex", 1] / med["mutex", 8]) / (med["plain", 1] / med["plain", 8])
    return _row(
        "8 threads vs 1, own Mutex each (vs plain's)",
        "scaling",
        0.9,
        0.9,
        figure=mutex_scale / plain_scale,
        median=median,
        rounds=rounds,
        note=f"Mutex {mutex_scale:.2f}x, plain {plain_scale:.2f}x",
        higher_is_better=True,
    )


# -- running -----------------------------------------------------------------------------------


def _row(name: str, group: str, goal_c: float | None, goal_pure: float | None, **fields: Any) -> dict[str, Any]:
    row = {
        "name": name,
        "group": group,
        "goal": goal_c if ACCELERATED else goal_pure,
        "path": "C" if ACCELERATED else "pure",
        "higher_is_better": False,
        "note": "",
    }
    row.update(fields)
    return row


def run_measure(m: Measure, rounds: int, loops: int) -> dict[str, Any]:
    """Time one measure; its row for the table."""
    with ExitStack() as stack, pylockdep.validate() as v:
        baseline, subject = m.make(stack)
        n = max(1, m.loops * loops // 1000)
        ratio: Ratio = alternate(baseline, subject, rounds=rounds, loops=n)
        path = path_label(python_calls_per_op(subject))
    if v.reports:
        raise AssertionError(f"{m.name}: the benchmark made reports: {[r.kind for r in v.reports]}")
    return _row(
        m.name,
        m.group,
        m.goal_c,
        m.goal_pure,
        figure=ratio.minimum,
        median=ratio.median,
        rounds=ratio.rounds,
        path=path,
        note=f"{ratio.subject_ns:.0f} ns vs {ratio.base_ns:.0f} ns",
    )


def run_one(name: str, side: str, count: int) -> None:
    """Set up measure ``name`` and run its ``side`` ``count`` times (for callgrind)."""
    (m,) = [m for m in measures() if m.name == name]
    with ExitStack() as stack, pylockdep.validate():
        baseline, subject = m.make(stack)
        loop = baseline if side == "base" else subject
        loop(100)  # the same warm-up at every count
        loop(count)


def describe() -> dict[str, Any]:
    """What ran: Python version and path."""
    return {"python": platform.python_version(), "path": "C" if ACCELERATED else "pure"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--loops", type=int, default=1000, help="iterations per round, for a 1000-loop measure")
    parser.add_argument("--groups", default="locks,sections,creation,threading,asyncio,memory,scaling")
    parser.add_argument("--only", default="", help="run only measures whose name contains this text")
    parser.add_argument("--list", action="store_true", help="print the measures' names")
    parser.add_argument("--one", help="run one side of one measure (for --instructions)")
    parser.add_argument("--side", choices=("base", "subject"), default="subject")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.one:
        run_one(args.one, args.side, args.count)
        return 0
    groups = set(args.groups.split(","))
    chosen = [m for m in measures() if m.group in groups and args.only in m.name]
    if args.list:
        print("\n".join(m.name for m in chosen))
        return 0
    print(json.dumps({"describe": describe()}), flush=True)
    for m in chosen:
        print(json.dumps(run_measure(m, args.rounds, args.loops)), flush=True)
    if "memory" in groups and args.only in "memory per":
        for row in memory_rows(max(50, args.loops * 2)):
            print(json.dumps(row), flush=True)
    if "scaling" in groups and args.only in "8 threads vs 1":
        print(json.dumps(scaling_row(max(1, args.rounds // 10), max(10, args.loops * 20))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
