"""The validator never hangs, crashes or breaks the program around it (issue 13).

Repros that hung before their fix run in a subprocess with a timeout, so a regression fails
instead of hanging the suite; the subprocess inherits ``PYLOCKDEP_PURE_PYTHON``, so each runs on
the path the suite is testing.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dis
import gc
import io
import linecache
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import pylockdep
from pylockdep import _locks, _signals, _threading, _validator, _waitfor
from pylockdep._fastpath import ACCELERATED
from pylockdep._held import H_LOCK


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; a hang is a failure, not a stuck suite."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: {exc.stdout!r} {exc.stderr!r}")


# -- re-entry: handlers, finalizers and hooks that run while the thread is inside pylockdep ------


def test_lock_made_while_its_thread_registers_a_key() -> None:
    # What a signal handler or __del__ does when it lands inside key registration.
    result = run_python("""
        import pylockdep
        from pylockdep import _classes
        with _classes._keys_lock:
            m = pylockdep.Mutex("made-inside-registration")
        with m:
            pass
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


def test_signal_handlers_making_locks_during_registration() -> None:
    result = run_python("""
        import signal, pylockdep
        from pylockdep import _classes
        hits = 0
        def handler(signum, frame):
            global hits
            if _classes._keys_lock._is_owned():
                hits += 1
            with pylockdep.Mutex(f"made-in-handler"):
                pass
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        for i in range(30000):
            pylockdep.Mutex(f"conn-{i}")
        signal.setitimer(signal.ITIMER_REAL, 0)
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


def test_locks_taken_while_their_thread_is_inside_their_own_bookkeeping() -> None:
    # What a signal handler, finalizer or trace hook finds when it lands inside a reader-writer
    # lock's or an SRCU's internal bookkeeping, or inside validate()'s: each is re-entrant.
    result = run_python("""
        import pylockdep
        from pylockdep import _validator
        with pylockdep.validate(raise_on_report=False) as v:
            for rw in (pylockdep.RWLock("rw"), pylockdep.RWSemaphore("sem")):
                with rw._core()._condition():  # its mutex (the C core's has no other)
                    with rw.read():
                        pass
                    with rw.write():
                        pass
                assert not rw.locked()
            srcu = pylockdep.SRCU("srcu")
            with srcu._mutex:
                with srcu.read():
                    pass
                srcu.synchronize()
            with _validator._validate_lock:
                with pylockdep.validate():
                    pass
        print([r.kind for r in v.reports])
    """)
    assert result.stdout == "[]\n", result.stderr


@pytest.mark.parametrize("kind", ["RWSemaphore", "RWLock"])
def test_signal_handlers_taking_the_reader_writer_lock_their_thread_is_using(kind: str) -> None:
    # Handlers land anywhere, inside the lock's internal bookkeeping too (it hung there before).
    result = run_python(f"""
        import signal, pylockdep
        rw = pylockdep.{kind}("rw")
        hits = 0
        def handler(signum, frame):
            global hits
            hits += 1
            with rw.read():  # a reader inside a reader: reported, never a hang
                pass
        signal.signal(signal.SIGALRM, handler)
        with pylockdep.validate(raise_on_report=False, stream=None) as v:
            signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0002)
            for i in range(20000):  # readers only: no writer makes a reader inside a reader wait
                with rw.read():
                    pass
            signal.setitimer(signal.ITIMER_REAL, 0)
            assert hits > 10 and not rw.locked() and not v.task().held
        print({{(r.kind, r.classes) for r in v.reports}} <= {{("recursive", ("rw",))}})
    """)
    assert result.stdout == "True\n", result.stdout + result.stderr


def test_wait_inside_the_wait_bookkeeping_of_its_own_thread() -> None:
    # A handler that waits for a contended lock while its thread holds the bookkeeping lock.
    result = run_python("""
        import threading, time, pylockdep
        from pylockdep import _waitfor
        m = pylockdep.Mutex("m")
        taken = threading.Event()
        def holder():
            with m:
                taken.set()
                time.sleep(0.2)
        threading.Thread(target=holder).start()
        taken.wait()
        with _waitfor._waits:
            with m:
                pass
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


def test_a_nested_wait_gives_back_the_outer_wait() -> None:
    with pylockdep.validate() as v:
        t = v.task()
        outer = (pylockdep.Mutex("outer"), 0)
        t.waiting = outer
        attempts = iter([False, True])  # the first slice times out: the wait marks itself waiting
        _waitfor.wait(v, t, pylockdep.Mutex("inner"), 0, lambda seconds: next(attempts))
        assert t.waiting is outer
        t.waiting = None


def test_locks_taken_inside_a_check_are_tracked_not_validated() -> None:
    # A finalizer or hook that runs while its thread searches the graph: it takes its locks for
    # real, but no rule runs for them, so the graph never changes under the search.
    with pylockdep.validate(raise_on_report=False) as v:
        a, b, c = pylockdep.Mutex("a"), pylockdep.Mutex("b"), pylockdep.Mutex("c")
        with a, b:
            pass
        cls_a = v.class_for(a._key)
        seen = []

        def check(v: pylockdep.Validator, t: object) -> None:
            for nxt in cls_a.after:  # iterating, as find_path does
                with a, c:  # would add a -> c under the iteration
                    seen.append(nxt.name)
                assert not c.locked() and not a.locked()

        v.run_check(v.task(), check)
        assert seen == ["b"]
        assert [cls.name for cls in cls_a.after] == ["b"]
        assert not v.task().held
        with a, c:  # outside a check the same nesting is validated
            pass
        assert [cls.name for cls in cls_a.after] == ["b", "c"]
        assert v.reports == []


def test_a_lock_taken_inside_a_check_leaves_the_held_stack_as_the_check_sees_it() -> None:
    # A hand-off Lock released for this thread by another one waits in its pending work; a
    # collection's callback that takes a lock while the thread is inside a check must not do
    # that work then: the check is reading the held stack (an IndexError in the instance order).
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        token, inner = threading.Lock(), threading.Lock()
        token.acquire()
        other = threading.Thread(target=token.release)
        other.start()
        while token.locked():  # not join(): waiting for a thread is a lock operation of this one
            time.sleep(0.001)
        t = v.task()
        assert t.pending and [entry[0] for entry in t.held] == [token]
        seen = []

        def check(v: pylockdep.Validator, t: Any) -> None:
            before = list(t.held)
            with inner:
                seen.append([entry[0] for entry in t.held])
            assert t.held == before

        v.run_check(t, check)
        assert seen == [[token, inner]]
        with inner:  # outside a check the pending work is done first
            assert [entry[0] for entry in t.held] == [inner]
        other.join()
        assert v.reports == []


def test_finalizers_taking_locks_during_searches() -> None:
    result = run_python("""
        import gc, pylockdep
        mains = [pylockdep.Mutex(f"main{i}") for i in range(20)]
        finals = [pylockdep.Mutex(f"final{i}") for i in range(20)]
        class Finalized:
            def __init__(self, i):
                self.i = i
                self.me = self  # a cycle: freed by the collector, at any bytecode
            def __del__(self):  # always after whatever main lock is held: a consistent order
                with finals[self.i % 10], finals[10 + (self.i // 10) % 10]:
                    pass
        gc.set_threshold(50)
        for i in range(20000):
            Finalized(i)
            with mains[i % 10], mains[10 + (i // 10) % 10]:
                pass
        gc.collect()
        reports = pylockdep.current().reports
        assert not reports, [r.title for r in reports]
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


# -- reports never break the program ------------------------------------------------------------


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def _room() -> int:
    """How many more nested calls the recursion limit allows from the caller."""

    def down(n: int) -> int:
        try:
            return down(n + 1)
        except RecursionError:
            return n

    return down(0)


def _with_frames_left(left: int, action: Any) -> Any:
    """``action()`` called with only about ``left`` more nested calls allowed."""

    def down(n: int) -> Any:
        return down(n - 1) if n else action()

    return down(_room() - left)


def test_a_program_near_its_recursion_limit_gets_its_report_and_no_recursion_error() -> None:
    """The rules run on the program's stack, many calls deep, and the splat's printing deeper:
    10 calls under the limit, a new chain is validated, an inversion reported, and no
    ``RecursionError`` comes out of pylockdep (the check ran out of frames: it raised out of the
    ``with`` and the report was lost).  The program's limit is its own again after."""
    limit = sys.getrecursionlimit()
    out = io.StringIO()
    with pylockdep.validate(stream=out, raise_on_report=False) as v:
        a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")

        def take(first: Any, second: Any) -> None:
            with first, second:
                pass

        _with_frames_left(10, lambda: take(a, b))
        _with_frames_left(10, lambda: take(b, a))
    assert sys.getrecursionlimit() == limit
    assert [r.kind for r in v.reports] == ["circular"]
    assert "WARNING: possible circular locking dependency detected" in out.getvalue()


def test_a_closed_stream_does_not_break_the_program(capfd: pytest.CaptureFixture[str]) -> None:
    with pylockdep.validate(stream=_BrokenStream(), raise_on_report=False) as v:
        a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")
        with a, b:
            pass
        with b, a:  # reported: the stream fails, the program goes on
            pass
        c, d = pylockdep.Mutex("c"), pylockdep.Mutex("d")
        with c, d:
            pass
        with d, c:
            pass
    assert [r.kind for r in v.reports] == ["circular", "circular"]
    assert list(v.delivery_failures) == ["stream"]
    err = capfd.readouterr().err
    assert err.count("could not deliver a report to the stream: BrokenPipeError") == 1


def test_a_raising_listener_or_log_processor_does_not_break_the_program(capfd: pytest.CaptureFixture[str]) -> None:
    structlog = pytest.importorskip("structlog")

    def processor(logger: object, name: str, event: dict) -> dict:
        raise ValueError("processor failed")

    def listener(report: pylockdep.Report) -> None:
        raise RuntimeError("listener failed")

    delivered: list[str] = []
    structlog.configure(processors=[processor])
    try:
        with pylockdep.validate(raise_on_report=False) as v:
            v.listeners += [listener, lambda report: delivered.append(report.kind)]
            a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")
            with a, b:
                pass
            with b, a:
                pass
    finally:
        structlog.reset_defaults()
    assert [r.kind for r in v.reports] == ["circular"]
    assert delivered == ["circular"]  # the sinks that work still get it
    assert sorted(sink.split(" ")[0] for sink in v.delivery_failures) == ["listener", "structlog"]
    err = capfd.readouterr().err
    assert "to the structlog: ValueError: processor failed" in err
    assert "RuntimeError: listener failed" in err


def test_a_trace_hook_taking_a_lock_inside_a_release_leaves_the_chain_cache_sound() -> None:
    """Pure path: a trace hook takes lock C at one line of A's release, where the held-stack pop is
    spelt out (each line in turn, each time with new locks and a new validator; pop() too, which
    the release calls if interrupted).  Whatever it sees there must not cache a chain as validated
    under a key that claims A while the stack lacks it: the later cycle A -> C, C -> A is found
    every time."""
    result = run_python("""
        import os, sys
        os.environ["PYLOCKDEP_PURE_PYTHON"] = "1"
        import pylockdep
        from pylockdep import _held, _locks
        found = []
        for at_line in range(20):
            A, C = pylockdep.Mutex(f"A{at_line}"), pylockdep.Mutex(f"C{at_line}")
            lines = 0
            def local(frame, event, arg):
                global lines
                if event == "line":
                    lines += 1
                    if lines == at_line + 1:
                        with C:
                            pass
                return local
            def calls(frame, event, arg):
                hooked = (_locks._release.__code__, _held.pop.__code__)
                return local if frame.f_code in hooked and lines <= at_line else None
            with pylockdep.validate(raise_on_report=False, stream=None) as v:
                A.acquire()
                sys.settrace(calls)
                A.release()
                sys.settrace(None)
                with A:
                    with C:
                        pass
                with C:
                    with A:
                        pass
            found.append([r.kind for r in v.reports])
        print(found)
    """)
    assert result.stdout == str([["circular"]] * 20) + "\n", result.stdout + result.stderr


HOOK_AT_EVERY_LINE = """
    import sys, pylockdep
    from pylockdep import _held, _locks
    HOOKED = {_locks.__file__, _held.__file__}
    def run(op, at_line):  # a trace hook takes m at the at_line-th line pylockdep runs in op
        m = pylockdep.Mutex("m")
        state = {"lines": 0, "nested": None}
        def local(frame, event, arg):
            if event == "line" and state["nested"] is None:
                state["lines"] += 1
                if state["lines"] == at_line:
                    try:
                        with m:
                            state["nested"] = "took"
                    except pylockdep.DeadlockError:
                        state["nested"] = "deadlock"
            return local
        def calls(frame, event, arg):
            return local if frame.f_code.co_filename in HOOKED and state["nested"] is None else None
        with pylockdep.validate(raise_on_report=False, stream=None) as v:
            if op == "release":
                m.acquire()
            elif op == "with":  # a known chain, the fast path's (the pure path's with-block)
                with m:
                    pass
            sys.settrace(calls)
            if op == "release":
                m.release()
            elif op == "trylock":
                assert m.trylock()
            elif op == "with":
                assert m.__enter__() is m
            else:
                m.acquire()
            sys.settrace(None)
            if op != "release":
                m.release()
            assert not m.locked() and m._owner is None and not v.task().held
        return state["nested"], [r.kind for r in v.reports]
    outcomes, at_line = [], 1
    while True:
        nested, kinds = run(sys.argv[1], at_line)
        if nested is None:
            break
        outcomes.append(" ".join([nested, *kinds]))
        at_line += 1
    print(outcomes)
"""


@pytest.mark.parametrize("op", ["acquire", "trylock", "with", "release"])
def test_a_trace_hook_taking_the_same_lock_at_any_line_never_hangs(op: str) -> None:
    """A trace hook takes Mutex m at one line of pylockdep's code run by ``m.acquire()``,
    ``m.trylock()``, ``m.__enter__()`` or ``m.release()`` (each line in turn).  Before the real lock is taken (after it
    is released) the hook takes m; from the moment it is taken, whether or not it is recorded yet
    (pushed), the hook's wait is a wait for its own thread: ``DeadlockError`` (with a recursive
    report once m is on the held stack), never a hang.  Afterwards m is free and nothing is held."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(HOOK_AT_EVERY_LINE), op], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: {exc.stdout!r} {exc.stderr!r}")
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = ast.literal_eval(result.stdout)
    assert set(outcomes) <= {"took", "deadlock", "deadlock recursive"}
    refused = ["took" not in outcome for outcome in outcomes]
    if op == "release":  # refused until the real lock is released; on the C path no line runs
        assert refused == sorted(refused, reverse=True)
        assert not outcomes or refused[0] and not refused[-1]
    elif outcomes or op != "with":  # taken by the hook until the outer acquisition takes the real lock
        assert refused == sorted(refused)
        assert not refused[0] and refused[-1]
        assert outcomes[-1] == "deadlock recursive"
    else:  # a with-block on a known chain runs no line of Python on the C path
        assert ACCELERATED


def test_a_hook_taking_the_lock_right_after_the_pure_attempt_waits_for_its_own_thread() -> None:
    """Pure path: the with-block's attempt on the lock is a plain call, which records no owner with
    it, so a hook that runs as the attempt returns (a profile hook's ``c_return`` here; on 3.12, a
    collection another thread asked for) finds the lock taken by nobody known.  Waiting for it
    there is waiting for its own thread: ``DeadlockError`` at the wait's first check, while another
    thread still runs (as a wait for nobody in particular it would wait for that thread), and the
    block is then entered and left as usual."""
    result = run_python("""
        import os, sys, threading, time
        os.environ["PYLOCKDEP_PURE_PYTHON"] = "1"
        import pylockdep
        m = pylockdep.Mutex("m")
        outcome = []
        def hook(frame, event, arg):
            if event == "c_return" and getattr(arg, "__self__", None) is m._real and not outcome:
                try:
                    with m:
                        outcome.append("took")
                except pylockdep.DeadlockError:
                    outcome.append("deadlock")
        done = threading.Event()
        other = threading.Thread(target=lambda: [time.sleep(0.001) for _ in iter(done.is_set, True)])
        other.start()
        with pylockdep.validate(raise_on_report=False, stream=None) as v:
            with m:  # a known chain: the fast path's
                pass
            sys.setprofile(hook)
            with m:
                sys.setprofile(None)
                inside = [e[0] is m for e in v.task().held]
            print(outcome, inside, m.locked(), v.task().held, m._owner)
        done.set()
        other.join()
    """)
    assert result.stdout == "['deadlock'] [True] False [] None\n", result.stderr


# -- asynchronous exceptions --------------------------------------------------------------------

# Both storms' SIGALRM handler (the scripts import signal first): at most one KeyboardInterrupt
# per arming, so that each lands inside the try block that armed it.
ARMED_INTERRUPT = """
    armed = False
    def interrupt(signum, frame):  # at most one interrupt per arming, inside the try below
        global armed
        if armed:
            armed = False
            raise KeyboardInterrupt
    signal.signal(signal.SIGALRM, interrupt)
"""

# The start of a storm script: the path named by its first argument ("c" or "pure"), checked.
STORM_ON_PATH = """
    import os, signal, sys, threading
    if sys.argv[1] == "pure":
        os.environ["PYLOCKDEP_PURE_PYTHON"] = "1"
    import pylockdep
    from pylockdep._fastpath import ACCELERATED
    from pylockdep._held import H_LOCK
    assert ACCELERATED == (sys.argv[1] == "c")
"""

KEYBOARD_INTERRUPT_STORM = (
    STORM_ON_PATH
    + ARMED_INTERRUPT
    + """
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.00002)
    taken_unrecorded = recorded_unreleased = interrupted = 0
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        for run in range(12):
            kind = run % 4  # each with its own __exit__ (a Python function on the pure path)
            if kind == 0:
                lock = block = pylockdep.Mutex(f"m{run}")
            elif kind == 1:
                lock = block = threading.Lock()
            elif kind == 2:
                lock = block = threading.RLock()
            else:
                lock = pylockdep.SpinLock(f"s{run}")
                block = lock.irqsave()
            for _ in range(750):
                try:
                    armed = True
                    with block:
                        pass
                    armed = False
                except KeyboardInterrupt:
                    interrupted += 1
                except pylockdep.DeadlockError:  # the lock is still held by this thread
                    armed = False
                    break
            held = v.task().held
            recorded = any(e[H_LOCK] is lock for e in held)
            if lock._real.locked() and not recorded:
                taken_unrecorded += 1
            elif recorded:
                recorded_unreleased += 1
                held[:] = [e for e in held if e[H_LOCK] is not lock]
            if lock._real.locked():
                lock._real.release()
            if kind == 2:
                lock._ident, lock._count = None, 0
            if kind == 3 and v.task().irqs_off:
                pylockdep.local_irq_enable()
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(taken_unrecorded, recorded_unreleased, interrupted)
"""
)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer()")
@pytest.mark.parametrize("path", ["c", "pure"])
def test_keyboard_interrupts_never_leave_a_with_block_lock_taken(path) -> None:
    """A storm of KeyboardInterrupts on ``with lock:`` (a Mutex, threading's Lock and RLock, an
    irqsave() section): both paths are as safe as CPython's lock, the lock is never left taken,
    held or not.  In pure Python a handler that lands in the release code (as ``__exit__`` is
    entered, say) runs once the lock is released."""
    if path == "c" and not ACCELERATED:
        pytest.skip("the C module is not in use")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KEYBOARD_INTERRUPT_STORM), path],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    taken_unrecorded, recorded_unreleased, interrupted = map(int, result.stdout.split())
    assert interrupted > 100  # the storm did land
    assert (taken_unrecorded, recorded_unreleased) == (0, 0)


RW_KEYBOARD_INTERRUPT_STORM = (
    STORM_ON_PATH
    + ARMED_INTERRUPT
    + """
    def block(section):  # a with-block
        def run():
            with section:
                pass
        return run
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.00002)
    taken_unrecorded = recorded_unreleased = interrupted = 0
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        for run in range(16):  # each lock type with each way in and out, twice
            lock = pylockdep.RWLock(f"rw{run}") if run % 2 else pylockdep.RWSemaphore(f"sem{run}")
            take, release = [
                (block(lock.read()), None),
                (block(lock.write()), None),
                (lock.read_lock, lock.read_unlock) if run % 2 else (lock.down_read, lock.up_read),
                (lock.write_lock, lock.write_unlock) if run % 2 else (lock.down_write, lock.up_write),
            ][run // 2 % 4]
            for _ in range(500):
                try:
                    armed = True
                    take()
                    if release:
                        release()
                    armed = False
                except KeyboardInterrupt:
                    interrupted += 1
                    if release and ACCELERATED and any(e[H_LOCK] is lock for e in v.task().held):
                        # C: take() is a C call, after which CPython runs the handler in the
                        # program's code, as after CPython's own lock.acquire(): the lock is held.
                        release()
                except pylockdep.DeadlockError:  # the lock is still held by this thread
                    armed = False
                    break
            held = v.task().held
            recorded = any(e[H_LOCK] is lock for e in held)
            core = lock._core()  # made now if no attempt got as far as the take (a slow machine)
            if not recorded and (core.is_held(0) or core.is_held(1)):
                taken_unrecorded += 1
            elif recorded:
                recorded_unreleased += 1
                held[:] = [e for e in held if e[H_LOCK] is not lock]
            while core.is_held(1):
                core.release(1)
            if core.is_held(0):
                core.release(0)
            lock._owner = None
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(taken_unrecorded, recorded_unreleased, interrupted)
"""
)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer()")
@pytest.mark.parametrize("path", ["c", "pure"])
def test_keyboard_interrupts_never_leave_a_reader_writer_lock_taken(path) -> None:
    """A storm of KeyboardInterrupts on RWLock and RWSemaphore sections (``with read():``,
    ``with write():``, read_lock/read_unlock, down_read/up_read and the write side's): the lock
    is never left taken, recorded or not.  In pure Python the core is Python code: a handler that
    lands as its take returns runs once the acquisition is recorded, and its exception undoes it
    (it left the lock taken with nobody holding it)."""
    if path == "c" and not ACCELERATED:
        pytest.skip("the C module is not in use")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RW_KEYBOARD_INTERRUPT_STORM), path],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    taken_unrecorded, recorded_unreleased, interrupted = map(int, result.stdout.split())
    assert interrupted > 100  # the storm did land
    assert (taken_unrecorded, recorded_unreleased) == (0, 0)


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """No garbage collection in the block (``gc.disable()``), as before it after."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@pytest.mark.parametrize(("take", "release"), [("read_lock", "read_unlock"), ("write_lock", "write_unlock")])
def test_an_interrupted_reader_writer_acquisition_leaves_the_lock_held_or_free(take, release) -> None:
    """A KeyboardInterrupt at each point in turn where Python code of pylockdep is entered or
    returns, while a new chain is validated and the lock taken: the lock is then either taken and
    on the holder's stack, or not taken, and no handler is left held back.  On the C path the core
    is taken with no Python code between the take and its record in ``_acquire``, and the hook
    raises; on the pure path it calls the handler through the wrapper the pure path installs (as
    CPython calls a signal handler there), which holds it back in the core's take
    (``critical_take``) until the acquisition is recorded: it raised as the take returned."""
    package = os.path.dirname(pylockdep.__file__)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    handler = interrupt if ACCELERATED else _signals.Deferring(interrupt)
    outcomes = set()
    # The collector's hook is pylockdep's code too, but no part of an acquisition: a collection
    # that starts meanwhile would shift the count of events (and drop the hook's exception).
    with pylockdep.validate(raise_on_report=False) as v, collector_off():
        for k in range(1, 5000):
            lock = pylockdep.RWLock(f"rw_ki_{k}")  # a new class: the slow path's validation runs
            events = 0

            def hook(frame, event, arg, k=k):
                nonlocal events
                if event in ("call", "return") and frame.f_code.co_filename.startswith(package):
                    events += 1
                    if events == k:
                        handler(signal.SIGINT, frame)

            sys.setprofile(hook)
            try:
                getattr(lock, take)()
            except KeyboardInterrupt:
                interrupted = True
            else:
                interrupted = False
            finally:
                sys.setprofile(None)
            held = [entry[H_LOCK] for entry in v.task().held]
            assert held in ([], [lock]) and lock.locked() == bool(held), k
            assert not _signals.deferred, k
            outcomes.add((interrupted, bool(held)))
            if held:
                getattr(lock, release)()
            if events < k:  # the acquisition ended before the k-th event
                break
    # Interrupted before the take (or after the push: taken and held), then not interrupted at all.
    assert {(True, False), (False, True)} <= outcomes
    assert not v.task().held


def test_signal_handlers_are_wrapped_where_the_program_does_not_see_it() -> None:
    """What install() changes (the pure path does it at the first use from the main thread):
    handlers in place are wrapped, from the main thread only, and so are handlers installed
    later; signal.getsignal() and signal.signal() give the program's own handlers."""
    result = run_python("""
        import _signal, signal, threading
        from pylockdep import _signals
        def mine(signum, frame): pass
        def other(signum, frame): pass
        # As in an interactive shell: a shell running us in the background may have SIGINT ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGUSR1, mine)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        thread = threading.Thread(target=_signals.install)
        thread.start()
        thread.join()
        assert _signal.getsignal(signal.SIGUSR1) is mine  # only the main thread may change them

        _signals.install()
        installed = _signal.getsignal(signal.SIGUSR1)
        assert isinstance(installed, _signals.Deferring) and installed.handler is mine
        assert signal.getsignal(signal.SIGUSR1) is mine
        assert _signal.getsignal(signal.SIGINT).handler is signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN

        assert signal.signal(signal.SIGUSR1, other) is mine
        assert signal.getsignal(signal.SIGUSR1) is other
        assert _signal.getsignal(signal.SIGUSR1).handler is other
        assert signal.signal(signal.SIGUSR1, signal.SIG_IGN) is other
        assert _signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        assert signal.signal(signal.SIGUSR1, signal.SIG_DFL) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


# The start of a pure-path script whose trace hook calls the installed SIGUSR1 handler (pylockdep's
# wrapper of the program's) as the function named WHERE starts, as CPython does when a signal came
# then; the program's handler records the frame it was given and whether ``lock`` was held, and raises.
HANDLER_AT_CALL_OF_WHERE = """
        import os, signal, sys, _signal
        os.environ["PYLOCKDEP_PURE_PYTHON"] = "1"
        import pylockdep
        seen = []
        def handler(signum, frame):
            seen.append((frame.f_code.co_name, lock.locked(), len(v.task().held)))
            raise KeyboardInterrupt
        signal.signal(signal.SIGUSR1, handler)
        def hook(frame, event, arg):
            if event == "call" and frame.f_code.co_name == WHERE:
                sys.settrace(None)
                _signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, frame)
"""


@pytest.mark.parametrize(("way", "where"), [("with", "__exit__"), ("release", "release"), ("release", "_release")])
def test_a_signal_handler_landing_in_a_release_runs_after_it(way: str, where: str) -> None:
    """Pure path: a handler called as ``__exit__`` or ``release()`` starts (or what it calls,
    ``_release``) runs once the lock is released, given the frame of that method, and its
    KeyboardInterrupt comes out of the with-statement or the call; a handler called in the
    program's code runs at once.  (A trace hook calls the installed handler at the function's
    first line, as CPython does when a signal came then.)"""
    result = run_python(
        (
            HANDLER_AT_CALL_OF_WHERE
            + """
        with pylockdep.validate(raise_on_report=False, stream=None) as v:
            lock = pylockdep.Mutex("m")
            try:
                if WAY == "with":
                    with lock:
                        sys.settrace(hook)
                else:
                    lock.acquire()
                    sys.settrace(hook)
                    lock.release()
            except KeyboardInterrupt:
                print("interrupted after", seen.pop(), lock.locked(), len(v.task().held))
            sys.settrace(None)
            try:
                os.kill(os.getpid(), signal.SIGUSR1)
                print("not interrupted")
            except KeyboardInterrupt:
                print("interrupted at once", seen.pop())
        """
        )
        .replace("WHERE", repr(where))
        .replace("WAY", repr(way))
    )
    method = "__exit__" if way == "with" else "release"
    assert result.stdout == (
        f"interrupted after ('{method}', False, 0) False 0\ninterrupted at once ('<module>', False, 0)\n"
    ), result.stderr


@pytest.mark.parametrize(("lock_type", "where"), [("Mutex", "__enter__"), ("Mutex", "_acquire"), ("Lock", "__enter__")])
def test_a_signal_handler_landing_in_a_with_blocks_entry_runs_at_its_end(lock_type: str, where: str) -> None:
    """Pure path: a handler called as a with-block's ``__enter__`` starts (on a known chain, the
    fast path's), or what it calls on a new chain (``_acquire``), is held back past the take and
    the body, as CPython runs no handler between a with-statement's take and its body: it runs
    once the block's end has released the lock, and its KeyboardInterrupt comes out of the
    with-statement.  (Run at the entry's end, it would find the lock held: in a body that no
    handler can interrupt, a wait for its own thread that plain Python never makes.)"""
    result = run_python(
        (
            HANDLER_AT_CALL_OF_WHERE
            + """
        import threading
        with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
            lock = pylockdep.Mutex("m") if LOCK_TYPE == "Mutex" else threading.Lock()
            if WHERE == "__enter__":  # a known chain
                with lock:
                    pass
            body = []
            try:
                sys.settrace(hook)
                with lock:
                    sys.settrace(None)
                    body.append(lock.locked())
            except KeyboardInterrupt:
                print("interrupted after", body, seen, lock.locked(), len(v.task().held), v.reports)
        """
        )
        .replace("WHERE", repr(where))
        .replace("LOCK_TYPE", repr(lock_type))
    )
    assert result.stdout == "interrupted after [True] [('__exit__', False, 0)] False 0 []\n", result.stderr


def test_a_handler_held_back_runs_in_the_main_thread_only() -> None:
    """A handler that the main thread held back is run by the main thread's release, never by
    another thread's release that ends first."""
    result = run_python("""
        import os, threading
        os.environ["PYLOCKDEP_PURE_PYTHON"] = "1"
        import pylockdep
        from pylockdep import _signals
        ran = []
        lock = pylockdep.Mutex("m")
        _signals.deferred[10] = lambda signum, frame: ran.append(threading.current_thread().name)
        def release_in_a_thread():
            with lock:
                pass
        thread = threading.Thread(target=release_in_a_thread, name="other")
        thread.start()
        thread.join()
        print(ran)
        with lock:
            pass
        print(ran)
    """)
    assert result.stdout == "[]\n['MainThread']\n", result.stderr


KEYBOARD_INTERRUPTS_IN_WAITS = (
    """
    import os, signal, sys, threading, time
    if sys.argv[3] != "suite":  # else the suite's path
        os.environ["PYLOCKDEP_PURE_PYTHON"] = "1" if sys.argv[3] == "pure" else "0"
    import pylockdep
"""
    + ARMED_INTERRUPT
    + """
    lock = getattr(pylockdep, sys.argv[2])("m")  # acquire() and release(): the write side of an RWSemaphore
    go, taken, released = threading.Semaphore(0), threading.Semaphore(0), threading.Semaphore(0)
    def other():  # holds the lock a little while, once per round, so that the main thread waits
        while go.acquire() and lock.acquire():
            taken.release()
            time.sleep(0.0003)
            lock.release()
            released.release()
    threading.Thread(target=other, daemon=True).start()
    taken_unrecorded = interrupted = 0
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        signal.setitimer(signal.ITIMER_REAL, 0.0001, float(sys.argv[1]))
        for _ in range(600):
            go.release()
            taken.acquire()
            try:
                armed = True
                lock.acquire()  # waits; interrupted while waiting or as it takes the lock
                armed = False
                lock.release()
            except KeyboardInterrupt:
                interrupted += 1
            released.acquire()
            if v.task().held:  # interrupted as acquire() returned, as CPython's lock can be
                lock.release()
            elif lock.locked():  # the other thread is done: taken by this one, and not recorded
                taken_unrecorded += 1
                lock._unlock(0)
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(taken_unrecorded, interrupted)
"""
)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer()")
@pytest.mark.parametrize(("kind", "path"), [("Mutex", "suite"), ("RWSemaphore", "c"), ("RWSemaphore", "pure")])
@pytest.mark.parametrize("interval", [0.0003, 0.001])
def test_keyboard_interrupts_in_a_wait_never_leave_a_lock_taken_that_nobody_holds(
    interval: float, kind: str, path: str
) -> None:
    """KeyboardInterrupts while ``acquire()`` waits for a lock another thread holds (the wait is
    Python on both paths): interrupted as it waits or as it takes the lock, the acquisition raises
    and the lock is not taken; never taken with nobody holding it.  (Interrupted as ``acquire()``
    returns, the lock is held, as with CPython's own lock.)  A Mutex on the suite's path; an
    RWSemaphore on both, whose wait and condition are Python code (an interrupt in
    ``Condition.wait`` left the core's mutex released; one as the take returned or as the wait
    left the core's mutex, the lock taken: in pure Python the core is Python code too).
    On the C path without the C module built, "c" runs pure Python."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(KEYBOARD_INTERRUPTS_IN_WAITS), str(interval), kind, path],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: {exc.stdout!r} {exc.stderr!r}")
    assert result.returncode == 0, result.stderr[-3000:]
    taken_unrecorded, interrupted = map(int, result.stdout.split())
    assert interrupted > 50  # the interrupts did land
    assert taken_unrecorded == 0


@pytest.mark.parametrize("hook", [sys.setprofile, sys.settrace])
def test_a_timed_attempt_records_the_owner_as_it_takes_the_lock(hook) -> None:
    """A wait's timed attempt (``_timed_into``) takes the real lock and records its owner with
    nothing in between where other code runs: at every profile event (a C call's return, where
    CPython also runs signal handlers) and trace event in it, a taken lock is its taker's.  (It
    recorded the owner after an ``extend()`` call.)"""
    lock = pylockdep.Mutex("m")
    owner = _validator.active.validator.task()
    seen = []

    def check(frame, event, arg):
        if frame.f_code is _locks._timed_into.__code__:
            seen.append((event, lock._real.locked(), lock._owner is owner))
        return check

    got = [False]
    hook(check)
    try:
        _locks._timed_into(got, lock, 0, owner, 1.0)
    finally:
        hook(None)
    try:
        assert got == [False, True]
        assert ("return", True, True) in seen
        assert all(owned for _, taken, owned in seen if taken), seen
    finally:
        lock._owner = None
        lock._real.release()


SRCU_INTERRUPT_STORM = (
    """
    import signal, threading, pylockdep
    from pylockdep._held import H_LOCK
"""
    + ARMED_INTERRUPT
    + """
    ident = threading.get_ident()
    inconsistent = entered_but_failed = left_open_by_block = interrupted = 0
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.00002)
        for run in range(8):
            srcu = pylockdep.SRCU(f"s{run}")
            for _ in range(2500):
                inside = False
                try:
                    armed = True
                    if run % 2:
                        with srcu.read():
                            inside = True  # no point between __enter__'s return and here where a handler runs
                    else:
                        srcu.read_unlock(srcu.read_lock())  # read_lock() may be interrupted as it returns
                    armed = False
                except KeyboardInterrupt:
                    interrupted += 1
                counted = sum(readers.get(ident, 0) for readers in srcu._readers or ())
                stacked = len(srcu._stack())
                recorded = sum(e[H_LOCK] is srcu for e in v.task().held)
                if not counted == stacked == recorded:
                    inconsistent += 1
                elif counted and run % 2:
                    entered_but_failed += not inside
                    left_open_by_block += inside
                while srcu._stack():  # leave what an interrupted exit left open
                    srcu.read_unlock(srcu._stack()[-1])
            srcu.synchronize()  # hung when an interrupted entry left this thread counted
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(inconsistent, entered_but_failed, left_open_by_block, interrupted, [r.kind for r in v.reports])
"""
)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer()")
def test_keyboard_interrupts_never_leave_an_srcu_read_side_half_entered() -> None:
    """A storm of KeyboardInterrupts on SRCU read sides: the reader's count, its thread's stack of
    indexes and the map on the held stack always agree, and a ``with s.read():`` whose entry raised
    is not entered (main: an interrupt inside the Python entry left the thread counted, and the
    next ``synchronize()`` waited for it for ever), and one that ran is left."""
    result = run_python(SRCU_INTERRUPT_STORM, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    inconsistent, entered_but_failed, left_open_by_block, interrupted, kinds = result.stdout.split(maxsplit=4)
    assert int(interrupted) > 100  # the storm did land
    assert (int(inconsistent), int(entered_but_failed), int(left_open_by_block)) == (0, 0, 0)
    assert kinds.strip() == "[]"


# -- fork ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_another_thread_is_inside_pylockdep() -> None:
    result = run_python("""
        import os, sys, threading, time, pylockdep
        from pylockdep import _classes, _validator, _waitfor
        inside, done = threading.Event(), threading.Event()
        scoped = pylockdep.validate()
        v = scoped.__enter__()
        limit = sys.getrecursionlimit()
        headroom = _validator._headroom
        def busy():  # another thread holds every internal lock when the process forks
            with _classes._keys_lock, _waitfor._waits, _validator._validate_lock, v.graph_lock:
                with headroom, headroom.lock:  # inside a check: the recursion limit raised
                    inside.set()
                    done.wait()
        threading.Thread(target=busy).start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            m = pylockdep.Mutex("made-in-child")
            def hold():
                with m:
                    time.sleep(0.1)
            t = threading.Thread(target=hold)
            t.start()
            time.sleep(0.02)
            with m:  # contended: waits through the bookkeeping
                pass
            t.join()
            with pylockdep.validate():
                pass
            if sys.getrecursionlimit() != limit:
                os._exit(4)  # the thread that raised it is not in the child to put it back
            os._exit(0 if not v.reports else 3)
        done.set()
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    assert result.stdout == "child 0\n", result.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_another_thread_is_inside_a_reader_writer_lock() -> None:
    """The internal mutex of an RWLock and an RWSemaphore, held by another thread at the fork, is
    renewed in the child; a writer left waiting in the parent holds back no reader in the child."""
    result = run_python("""
        import os, threading, pylockdep
        rw, sem = pylockdep.RWLock("rw"), pylockdep.RWSemaphore("sem")
        inside, done = threading.Event(), threading.Event()
        def busy():
            with rw._core()._condition(), sem._core()._condition():  # their mutexes
                inside.set()
                done.wait()
        sem.down_read()
        def write():
            with sem.write():
                pass
        writer = threading.Thread(target=write)  # waits behind the reader
        writer.start()
        while not sem._rw.waiting_writers:
            pass
        threading.Thread(target=busy).start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            with rw.write():
                pass
            sem.up_read()
            with sem.write():  # the writer waiting in the parent is not in the child
                pass
            os._exit(0)
        done.set()
        _, status = os.waitpid(pid, 0)
        sem.up_read()
        writer.join()
        print("child", os.waitstatus_to_exitcode(status))
    """)
    assert result.stdout == "child 0\n", result.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_another_thread_is_inside_an_srcu() -> None:
    """The internal lock of an SRCU, held by another thread at the fork, is renewed in the child;
    a read side left open there by a thread that did not follow is one an ended thread left open:
    synchronize() raises instead of waiting for it for ever."""
    result = run_python("""
        import os, threading, pylockdep
        srcu = pylockdep.SRCU("srcu")
        inside, done = threading.Event(), threading.Event()
        def busy():
            with srcu.read(), srcu._mutex:
                inside.set()
                done.wait()
        threading.Thread(target=busy).start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            with srcu.read():
                pass
            try:
                srcu.synchronize()
            except pylockdep.DeadlockError:
                os._exit(0)
            os._exit(1)
        done.set()
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    assert result.stdout == "child 0\n", result.stderr


# -- bad input ----------------------------------------------------------------------------------

WRONG_SIDE = [
    (pylockdep.RWLock, "write_lock", "read_unlock", "write_unlock", 0),
    (pylockdep.RWLock, "read_lock", "write_unlock", "read_unlock", 1),
    (pylockdep.RWSemaphore, "down_write", "up_read", "up_write", 0),
    (pylockdep.RWSemaphore, "down_read", "up_write", "up_read", 1),
]


@pytest.mark.parametrize(("kind", "take", "wrong", "right", "mode"), WRONG_SIDE)
def test_releasing_the_other_side_is_refused_and_changes_nothing(
    kind: type, take: str, wrong: str, right: str, mode: int
) -> None:
    with pylockdep.validate(raise_on_report=False) as v:
        lock = kind("rw")
        getattr(lock, take)()
        with pytest.raises(RuntimeError, match=f"{wrong}.*'rw'"):
            getattr(lock, wrong)()
        assert [(r.kind, r.classes) for r in v.reports] == [("bad_unlock_balance", ("rw",))]
        assert lock._rw.is_held(mode) and not lock._rw.is_held(1 - mode)
        assert [entry[H_LOCK] for entry in v.task().held] == [lock]
        getattr(lock, right)()
        assert not lock.locked() and not v.task().held
        assert len(v.reports) == 1


def _outcome(lock: object, *args: object) -> object:
    try:
        return lock.acquire(*args)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the exception's type
        return type(exc)


@pytest.mark.parametrize("args", [(None,), ("x",), (1,), (0,), (True, "a"), (False, 1), (None, 0.1)])
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_acquire_arguments_as_cpython_checks_them(kind: str, args: tuple, plain_threading: None) -> None:
    import _thread

    plain = _outcome(getattr(_thread, "allocate_lock" if kind == "Lock" else "RLock")(), *args)
    with pylockdep.validate(), pylockdep.instrument_threading():
        lock = getattr(threading, kind)()
        ours = _outcome(lock, *args)
        assert ours == plain
        if ours is True:
            assert lock.locked() if kind == "Lock" else lock._is_owned()
            lock.release()


def _raised(call: Any, *args: object) -> tuple[type, str] | None:
    try:
        call(*args)
    except Exception as exc:  # noqa: BLE001 - the outcome compared is the exception's type and words
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("state", [5, (), (1,), (1, 2, 3), ("a", 1), (1, "b"), (1.5, 2), (1, None), {1: 2, 3: 4}])
def test_rlock_acquire_restore_refuses_what_cpython_refuses_before_taking_it(state: object, plain_threading: None):
    """A state CPython's RLock._acquire_restore() refuses raised only after taking the lock (left
    held, so the next try was reported recursive and raised DeadlockError)."""
    import _thread

    expected = _raised(_thread.RLock()._acquire_restore, state)
    assert expected is not None and expected[0] is TypeError
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        rl = threading.RLock()
        assert _raised(rl._acquire_restore, state) == expected
        assert _raised(rl._acquire_restore, state) == expected
        assert "unlocked" in repr(rl) and not v.task().held
        rl._acquire_restore([2, threading.get_ident()])  # any sequence of two ints, as CPython's
        assert rl._recursion_count() == 2
        rl._release_save()
    assert v.reports == []


@pytest.mark.parametrize("args", [(), (False,), (True, 0.5), (0,)])
def test_lock_enter_takes_acquire_arguments_as_cpython_s(args: tuple, plain_threading: None) -> None:
    """``_thread.lock.__enter__`` is its ``acquire``: arguments included (ours refused them)."""
    import _thread

    plain = _thread.allocate_lock()
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        assert lock.__enter__(*args) is plain.__enter__(*args) is True
        assert lock.__enter__(False) is plain.__enter__(False) is False  # held: a trylock fails
        lock.release()
        assert not lock.locked()
    assert v.reports == []


def _take_as(how: str, rl: Any) -> None:
    """Take the RLock ``rl`` once, the way ``how`` names."""
    if how == "acquire":
        rl.acquire()
    elif how == "timed":
        assert rl.acquire(timeout=30)
    elif how == "trylock":
        assert rl.acquire(False)
    elif how == "nested":
        pylockdep.nested(rl, 1).__enter__()
    else:  # Condition.wait() taking it back, the recursion state of two with-blocks to restore
        rl._acquire_restore((2, threading.get_ident()))
        rl.release()


@pytest.mark.parametrize("how", ["acquire", "timed", "trylock", "nested", "restore"])
@pytest.mark.parametrize("where", ["before the push", "after the acquisition"])
def test_a_handler_in_the_rlock_owner_may_take_it_again_as_soon_as_it_is_taken(
    how: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPython's RLock records its owner with the take: a signal handler that lands after the
    real take, before the acquisition has set the owner's ident, may take the RLock again (it
    waited for its own thread before: DeadlockError; for ever, before that)."""
    fired: list[tuple[bool, int]] = []

    def handler() -> None:  # what a signal handler of this thread landing there does
        with rl:
            fired.append((rl._is_owned(), rl._recursion_count()))

    # Before the push: a trace hook at the line of _acquire that pushes the lock.
    code = _locks._acquire.__code__
    starts = [n for _, n in dis.findlinestarts(code) if n is not None]  # 3.13 gives None for some
    (push_line,) = [n for n in starts if "held.append(" in linecache.getline(code.co_filename, n)]

    def push_interrupted(frame: types.FrameType, event: str, arg: object) -> object:
        if event == "line" and frame.f_lineno == push_line and frame.f_locals["lock"] is rl and not fired:
            handler()
        return push_interrupted

    def acquire_interrupted(lock: object, *args: object) -> bool:
        taken = real_acquire(lock, *args)
        if lock is rl and not fired:
            handler()
        return taken

    real_acquire = _threading._acquire
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        rl = threading.RLock()
        if where == "before the push":
            sys.settrace(lambda frame, event, arg: push_interrupted if frame.f_code is code else None)
        else:
            monkeypatch.setattr(_threading, "_acquire", acquire_interrupted)
        try:
            _take_as(how, rl)
        finally:
            sys.settrace(None)
            monkeypatch.undo()
        assert fired == [(True, 2)]
        assert rl._is_owned() and rl._recursion_count() == 1 and len(v.task().held) == 1
        rl.release()
        assert not rl._is_owned() and "unlocked" in repr(rl) and not v.task().held
        with rl, rl:
            pass
    assert v.reports == []


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy, pickle.dumps])
@pytest.mark.parametrize(
    "kind",
    [
        pylockdep.RawSpinLock,
        pylockdep.SpinLock,
        pylockdep.RWLock,
        pylockdep.Mutex,
        pylockdep.RWSemaphore,
        pylockdep.SRCU,
    ],
)
def test_a_kernel_lock_refuses_copies_as_cpythons_locks_do(kind: type, copier: object) -> None:
    """A copy would share the real lock under an object of its own: taken inside the original, it hung."""
    with pylockdep.validate() as v:
        lock = kind("orig")
        with pytest.raises(TypeError, match=rf"^cannot pickle '{kind.__module__}\.{kind.__name__}' object$"):
            copier(lock)  # type: ignore[operator]
        idx = lock.read_lock() if kind is pylockdep.SRCU else lock.acquire()
        lock.read_unlock(idx) if kind is pylockdep.SRCU else lock.release()
    assert v.reports == []


# -- limits -------------------------------------------------------------------------------------


def test_no_held_lock_depth_limit_by_default() -> None:
    # Requests that each take a lock and are dropped while it is held pile up on the held stack.
    with pylockdep.validate(raise_on_report=False) as v:
        assert v.options.max_lock_depth is None
        for i in range(80):
            pylockdep.Mutex("request", key=("request", i)).acquire()
        a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")
        with a, b:
            pass
        with b, a:
            pass
        assert [r.kind for r in v.reports] == ["circular"]
        assert not v.off
        v.task().held.clear()


# -- scopes and lifetimes -----------------------------------------------------------------------


def _abba(v: pylockdep.Validator) -> list[str]:
    a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")
    with a, b:
        pass
    with b, a:
        pass
    return [r.kind for r in v.reports]


def test_validate_blocks_of_two_threads_overlapping() -> None:
    # Thread 1 enters, thread 2 enters, thread 1 exits, thread 2 exits: neither stays in force.
    first, second = pylockdep.validate(raise_on_report=False), pylockdep.validate(raise_on_report=False)
    before = pylockdep.current()
    steps = [
        lambda: first.__enter__(),
        lambda: second.__enter__(),
        lambda: first.__exit__(None, None, None),
        lambda: second.__exit__(None, None, None),
    ]
    in_force = []
    for i, step in enumerate(steps):
        worker = threading.Thread(target=step, name=f"thread-{i % 2 + 1}")
        worker.start()
        worker.join()
        in_force.append(pylockdep.current())
    assert in_force == [first.validator, second.validator, second.validator, before]
    assert _abba(pylockdep.Validator()) == []  # a fresh one, not in force: nothing recorded
    assert first.validator.reports == second.validator.reports == []


def test_the_same_validate_entered_twice() -> None:
    before = pylockdep.current()
    scope = pylockdep.validate(raise_on_report=False)
    with scope as v:
        with scope:
            assert pylockdep.current() is v
        assert pylockdep.current() is v
    assert pylockdep.current() is before


def test_a_release_under_another_validator_leaves_no_stale_entry() -> None:
    with pylockdep.validate(raise_on_report=False) as outer:
        a, b = pylockdep.Mutex("A"), pylockdep.Mutex("B")
        a.acquire()
        with pylockdep.validate(raise_on_report=False) as inner:
            a.release()
        with b:
            pass
        with b, a:
            pass
        assert not outer.task().held
        assert outer.reports == inner.reports == []


def test_validators_are_not_kept_alive_by_the_threads_that_used_them() -> None:
    refs = []
    for _ in range(50):
        with pylockdep.validate() as v:
            with pylockdep.Mutex("m"):
                pass
        refs.append(weakref.ref(v))
    del v
    gc.collect()
    # The last one may stay cached by the lock's key and the fast path's per-thread cache.
    assert sum(ref() is not None for ref in refs) <= 2


def test_a_lock_held_by_an_ended_thread_whose_ident_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread ended holding m; this thread got its ident and waits until a third releases m.
    from pylockdep._task import Task

    with pylockdep.validate(raise_on_report=False) as v:
        m = pylockdep.Mutex("m")
        me = v.task()
        ended = Task("ended", me.ident)
        v.tasks[id(ended)] = ended
        m._real.acquire()
        m._owner = ended

        def release_later() -> None:
            time.sleep(0.2)
            m._owner = None
            m._real.release()

        releaser = threading.Thread(target=release_later)
        releaser.start()
        m.acquire()  # waits, and is not refused as a deadlock
        m.release()
        releaser.join()
        assert v.reports == []


def test_a_thread_waiting_for_a_mutex_it_holds_is_still_refused() -> None:
    with pylockdep.validate(raise_on_report=False) as v:
        m = pylockdep.Mutex("m")
        m.acquire()
        with pytest.raises(pylockdep.DeadlockError):
            m.acquire()
        m.release()
        assert [r.kind for r in v.reports] == ["recursive"]


def test_the_chain_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_validator, "CHAIN_CACHE_SIZE", 16)
    with pylockdep.validate(raise_on_report=False) as v:
        locks = [pylockdep.Mutex(f"l{i}") for i in range(12)]
        for i in range(12):
            for j in range(i + 1, 12):
                with locks[i], locks[j]:
                    pass
                assert len(v.chains) < 16
        with locks[11], locks[0]:  # the verdicts do not depend on the cache
            pass
        assert [(r.kind, r.classes) for r in v.reports] == [("circular", ("l0", "l11"))]


def test_daemon_threads_running_at_exit_have_not_ended() -> None:
    result = run_python("""
        import threading, time, pylockdep
        held = threading.Event()
        def daemon():
            with pylockdep.Mutex(f"daemon"):
                held.set()
                time.sleep(60)
        for _ in range(4):
            threading.Thread(target=daemon, daemon=True).start()
            held.wait()
            held.clear()
        print("exiting")
    """)
    assert result.stdout == "exiting\n"
    assert "locks held" not in result.stderr, result.stderr


# -- the stress, short ----------------------------------------------------------------------------


def test_stress_short_variant() -> None:
    # benchmarks/stress.py for 3 seconds: handlers and finalizers making and taking locks inside
    # pylockdep, threads nesting hundreds of classes consistently.  Nothing may be reported, and
    # after the warm-up (every lock set the run can hold) the graph and the chain cache stay as
    # they are.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = ["--seconds", "3", "--threads", "4", "--classes", "300", "--orders", "150"]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.stress", *args], cwd=root, capture_output=True, text=True, timeout=240
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: {exc.stdout!r} {exc.stderr!r}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reports 0, exceptions 0" in result.stdout
    table = result.stdout.split("over time: seconds, RSS MB, dependencies, cached chains\n")[1]
    rows = [line.split() for line in table.splitlines() if line.startswith("    ")]
    assert len(rows) >= 2 and len({(edges, chains) for _, _, edges, chains in rows}) == 1, result.stdout


def test_a_program_that_wraps_threading_get_ident_under_pylockdep_run(tmp_path: object) -> None:
    # pebble replaces threading.get_ident with a function that takes a lock.
    script = os.path.join(str(tmp_path), "wraps_get_ident.py")
    with open(script, "w") as f:
        f.write(
            textwrap.dedent("""
            import threading, queue, concurrent.futures
            _original, _lock, calls = threading.get_ident, threading.Lock(), []
            def get_ident():
                with _lock:
                    calls.append(1)
                return _original()
            threading.get_ident = get_ident
            def work(i):
                queue.Queue().put(i)
                with threading.Condition():
                    return threading.current_thread().name
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                assert len(list(pool.map(work, range(50)))) == 50
            rlock = threading.RLock()
            with rlock, rlock:
                pass
            print("ok", bool(calls))
            """)
        )
    result = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout == "ok True\n", result.stderr
    assert result.returncode == 0
