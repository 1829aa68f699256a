"""The C fast path (pylockdep._speedups, built from pylockdep/_csrc/): same state and reports as the
Python path, every other case handed to Python, no leaks, safe under threads.

The rest of the suite runs once with the C module and once with PYLOCKDEP_PURE_PYTHON=1 (see the
README's test command); these tests look at the seam between the two.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import inspect
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

import pylockdep
from pylockdep import _classes, _collector, _context, _fastpath, _frames, _held, _locks, _rcu, _task, _threading, _waits
from pylockdep._classes import LockClass, LockKey, key_for
from pylockdep._held import (
    CHAIN_ROOT,
    H_CLASS,
    H_CODE,
    H_CTX,
    H_LASTI,
    H_LOCK,
    H_PREV_KEY,
    H_READ,
    H_TRYLOCK,
    HELD_FIELDS,
    HeldLock,
    chain_key,
    held_site,
    variant,
)
from pylockdep._locktypes import COMPLETION
from pylockdep._validator import active

PURE = os.environ.get("PYLOCKDEP_PURE_PYTHON", "") not in ("", "0")
needs_c = pytest.mark.skipif(not _fastpath.ACCELERATED, reason="the C fast path is not in use")


def test_the_c_module_is_built_and_used_unless_turned_off():
    # A machine with a C compiler (CI's) must build it: a silent fallback would hide a broken build.
    assert _fastpath.ACCELERATED is not PURE
    enter = pylockdep.Mutex.__enter__
    assert (type(enter).__name__ == "Acquire") is not PURE


def test_pure_python_switch_in_a_fresh_process():
    code = (
        "import pylockdep, pylockdep._fastpath as f, inspect; "
        "print(f.ACCELERATED, inspect.isfunction(pylockdep.Mutex.__enter__))"
    )
    env = dict(os.environ, PYLOCKDEP_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


class SlowCalls:
    """Counts the calls that reach the Python acquire/release paths."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.acquires = self.releases = 0
        acquire, release = _locks._acquire, _locks._release

        def counted_acquire(*args, **kwargs):
            self.acquires += 1
            return acquire(*args, **kwargs)

        def counted_release(*args, **kwargs):
            self.releases += 1
            return release(*args, **kwargs)

        for module in (_locks, _threading):
            monkeypatch.setattr(module, "_acquire", counted_acquire)
            monkeypatch.setattr(module, "_release", counted_release)


@needs_c
def test_a_known_chain_never_reaches_python(monkeypatch):
    slow = SlowCalls(monkeypatch)
    a, b = pylockdep.Mutex("fp_A"), pylockdep.SpinLock("fp_B")
    with pylockdep.validate() as v:
        with a, b:  # new chains: validated in Python
            pass
        assert (slow.acquires, slow.releases) == (2, 0)
        for _ in range(10):
            with a, b:
                pass
            a.acquire()
            a.release()
        assert (slow.acquires, slow.releases) == (2, 0)
        # Out of order: the release of a (not the most recent lock) goes to Python.
        a.lock()
        b.lock()
        a.unlock()
        b.unlock()
        assert slow.releases == 1
    assert v.reports == []


def test_a_chain_the_cache_forgot_is_validated_again(monkeypatch):
    slow = SlowCalls(monkeypatch)
    a, b = pylockdep.Mutex("fp_forget_a"), pylockdep.Mutex("fp_forget_b")
    with pylockdep.validate() as v:
        # The second time on the fast path, which keeps the chains it found in the cache (C) or
        # memoises them in their classes (pure).
        for _ in range(2):
            with a, b:
                pass
        assert slow.acquires == 2
        v.forget_chains()
        assert v.class_for(b._key).steps == {}  # the pure memo goes with the cache
        with a, b:
            pass
        assert slow.acquires == 4  # validated in Python again, and cached again
        assert len(v.chains) == 2
        with a, b:
            pass
        assert slow.acquires == 4
    assert v.reports == []


@needs_c
def test_each_odd_case_goes_to_python(monkeypatch):
    slow = SlowCalls(monkeypatch)
    a = pylockdep.Mutex("fp_odd")
    with pylockdep.validate() as v:
        with a:
            pass
        seen = slow.acquires
        with a.nested(1):  # another subclass
            pass
        assert a.trylock()  # a trylock
        a.release()
        assert slow.acquires == seen + 2
        v.off = True  # validation off
        with a:
            pass
        # nested() on a new chain and validation off; nested()'s release is of the most recent lock
        assert (slow.acquires, slow.releases) == (seen + 3, 1)
        v.off = False
    with pylockdep.validate():  # another validator: the key's cached classes are not its own
        with a:
            pass
        assert slow.acquires == seen + 4
    done = []

    def other_thread():  # a thread with no state yet
        with a:
            done.append(True)

    with pylockdep.validate():
        with a:
            pass
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert done == [True]


def entries(v: pylockdep.Validator) -> list[HeldLock]:
    """The held stack without the code positions, which differ between the two ways of calling."""
    held = v.task().held
    assert all(type(e) is tuple and len(e) == len(HELD_FIELDS) for e in held)
    return [e[:H_CODE] + (None, None) + e[H_LASTI + 1 :] for e in held]


@needs_c
def test_fast_and_slow_paths_leave_the_same_state():
    locks = [pylockdep.Mutex("fp_m1"), pylockdep.SpinLock("fp_s2"), pylockdep.RWLock("fp_rw3")]
    with pylockdep.validate(preempt_rt=False) as v:
        for lock in locks:  # validate the chain
            lock.__enter__()
        for lock in reversed(locks):
            lock.__exit__(None, None, None)
        states = {}
        for way in ("fast", "slow"):
            steps = []
            for lock in locks:
                enter = type(lock).__enter__
                (enter if way == "fast" else enter.__wrapped__)(lock)
                t = v.task()
                top = t.held[-1]
                taken_as = variant(top[H_CLASS], top[H_READ], top[H_TRYLOCK])
                assert t.key == chain_key(top[H_PREV_KEY], top[H_CTX], taken_as)
                steps.append((entries(v), t.key, t.spins, t.preempt, lock._owner is t))
            for lock in reversed(locks):
                leave = type(lock).__exit__
                (leave if way == "fast" else leave.__wrapped__)(lock, None, None, None)
                t = v.task()
                steps.append((entries(v), t.key, t.spins, t.preempt, lock._owner))
            states[way] = steps
        assert states["fast"] == states["slow"]
        assert [step[2] for step in states["fast"][:3]] == [0, 1, 2]  # spinning locks are counted
    assert v.reports == []


def test_python_acquire_and_release_change_the_stack_as_push_and_pop_do():
    """_locks._acquire and _release spell out _held.chain_key(), push() and pop() on their hot path:
    each acquisition (exclusive, reader, recursive reader, trylock, a nesting subclass, a spinning
    lock, over locks already held, chain new or known) leaves the stack, chain key and spin count
    that push() leaves from the state before it, and each release what pop() leaves."""
    m, s, rw, rs = pylockdep.Mutex, pylockdep.SpinLock, pylockdep.RWLock, pylockdep.RWSemaphore
    ways = [(m("ps_m"), 0, 0, False), (rs("ps_rs"), 1, 0, True), (m("ps_m2"), 0, 2, True), (rs("ps_rs2"), 0, 0, False)]
    ways += [(rw("ps_rw"), 1, 0, False), (rw("ps_rw2"), 2, 0, True), (s("ps_s"), 0, 0, False), (s("ps_s2"), 0, 0, True)]

    def state(t: _task.Task) -> tuple[list[HeldLock], int]:
        return list(t.held), t.key

    with pylockdep.validate(raise_on_report=False, stream=None, preempt_rt=False) as v:
        t = v.task()
        for _ in range(2):  # new chains, then known ones
            for below in range(len(ways)):
                held_below = ways[:below]
                for lock, read, subclass, trylock in held_below:
                    assert _locks._acquire(lock, read, subclass, sys._getframe(), trylock)
                lock, read, subclass, trylock = ways[below]
                twin = _task.Task("twin", 0)
                twin.held, twin.key, twin.ctx, twin.irq = list(t.held), t.key, t.ctx, t.irq
                assert _locks._acquire(lock, read, subclass, sys._getframe(), trylock)
                top = t.held[-1]
                cls = v.class_for(lock._key, subclass)
                key = chain_key(twin.key, twin.ctx, variant(cls, read, trylock))
                _held.push(twin, lock, cls, read, trylock, top[H_CODE], top[H_LASTI], key)
                assert state(t) == state(twin)
                for lock, read, _, _ in reversed(ways[: below + 1]):
                    twin.held, twin.key = state(t)
                    _held.pop(twin)
                    _locks._release(lock, read)
                    assert state(t) == state(twin)
                assert state(t) == ([], CHAIN_ROOT)
        assert v.reports == []
        assert len(v.chains) >= len(ways)


needs_pure = pytest.mark.skipif(_fastpath.ACCELERATED, reason="the pure path's with-block is replaced by C")


@needs_pure
def test_the_pure_memo_keeps_no_chain_forgotten_while_it_was_looked_up(monkeypatch):
    """The pure with-block memoises a chain it found in the cache (LockClass.steps) and drops the
    memo when the cache's era read before the lookup has changed: a chain forgotten between the
    lookup and the memo is taken through _acquire the next time, and validated again."""
    slow = SlowCalls(monkeypatch)
    a = pylockdep.Mutex("fp_memo_race")
    with pylockdep.validate() as v:
        with a:  # a new chain: validated and cached
            pass
        assert slow.acquires == 1 and len(v.chains) == 1

        class ForgetAfterLookup(set):
            def __contains__(self, key: object) -> bool:
                found = super().__contains__(key)
                v.forget_chains()  # another thread's, right after the lookup
                return found

        monkeypatch.setattr(v, "chains", ForgetAfterLookup(v.chains))
        with a:  # found, then forgotten before the memo
            pass
        assert slow.acquires == 1 and len(v.chains) == 0
        monkeypatch.setattr(v, "chains", set())
        with a:
            pass
        assert slow.acquires == 2 and len(v.chains) == 1  # validated again
        with a:
            pass
        assert slow.acquires == 2  # and memoised now
    assert v.reports == []


@needs_pure
def test_the_pure_with_block_changes_the_stack_as_push_and_pop_do(monkeypatch):
    """_locks.pure_fast_with's ``__enter__`` and ``__exit__`` spell out chain_key(), push() and
    pop(): a with-block on a Mutex, a SpinLock or an instrumented threading.Lock, over each stack of
    the others, leaves the stack, chain key and spin count that push() leaves (and the site of the
    caller's line), and its end what pop() leaves.  On a known chain neither goes through
    _acquire or _release; threading's own code (a Condition's with-block) is sited outside it."""
    slow = SlowCalls(monkeypatch)
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        locks = [pylockdep.Mutex("pw_m"), threading.Lock(), pylockdep.SpinLock("pw_s")]  # sleeping locks first
        t = v.task()
        for known in (False, True):
            for below in range(len(locks)):
                for lock in locks[:below]:
                    lock.__enter__()
                lock = locks[below]
                twin = _task.Task("twin", 0)
                twin.held, twin.key, twin.ctx, twin.irq = list(t.held), t.key, t.ctx, t.irq
                before = (slow.acquires, slow.releases)
                line = sys._getframe().f_lineno + 1
                got = lock.__enter__()
                assert got is (True if isinstance(lock, _threading.Lock) else lock)
                top = t.held[-1]
                assert held_site(top) == (sys._getframe().f_code, line)
                cls = v.class_for(lock._key, 0)
                key = chain_key(twin.key, twin.ctx, cls.variants[0])
                _held.push(twin, lock, cls, 0, False, top[H_CODE], top[H_LASTI], key)
                assert (list(t.held), t.key) == (list(twin.held), twin.key)
                assert lock._owner is t
                for lock in reversed(locks[: below + 1]):
                    _held.pop(twin)
                    lock.__exit__(None, None, None)
                    assert (list(t.held), t.key) == (list(twin.held), twin.key)
                    assert lock._owner is None and not lock.locked()
                if known:
                    assert (slow.acquires, slow.releases) == before
        cond = threading.Condition(threading.Lock())
        for _ in range(2):
            line = sys._getframe().f_lineno + 1
            with cond:
                assert held_site(t.held[-1]) == (sys._getframe().f_code, line)
        plain = threading.Lock()  # acquire()'s arguments: the class's own __enter__, sited here
        for args in ((False,), (True, -1)):
            line = sys._getframe().f_lineno + 1
            assert plain.__enter__(*args) is True and plain.__enter__(False) is False
            assert held_site(t.held[-1]) == (sys._getframe().f_code, line)
            plain.__exit__(None, None, None)
        with pytest.raises(TypeError):
            locks[0].__enter__(True)
        assert not locks[0].locked() and t.held == []
    assert v.reports == []


def sections(in_softirq: bool) -> list[tuple[str, object, object]]:
    """(label, lock, section factory) for the sections that change no context; in softirq context
    only those valid there (an RWLock reader, which is recursive there)."""
    mutex, rwlock = pylockdep.Mutex("fp_sec_m"), pylockdep.RWLock("fp_sec_rw")
    rwsem = pylockdep.RWSemaphore("fp_sec_rs")
    made = [] if in_softirq else [("nested", mutex, lambda: mutex.nested(3)), ("rwsem.read", rwsem, rwsem.read)]
    return [*made, ("rwlock.read", rwlock, rwlock.read)]  # sleeping locks first, as they may nest


@needs_c
@pytest.mark.parametrize("in_softirq", [False, True])
def test_sections_on_a_known_chain_never_reach_python(monkeypatch, in_softirq):
    slow = SlowCalls(monkeypatch)
    outer = pylockdep.SpinLock("fp_sec_outer") if in_softirq else pylockdep.Mutex("fp_sec_outer")
    with pylockdep.validate() as v, contextlib.ExitStack() as stack:
        if in_softirq:
            stack.enter_context(pylockdep.softirq())
        for label, lock, section in sections(in_softirq):
            with outer, section():
                pass
            seen = (slow.acquires, slow.releases)
            for _ in range(5):
                with outer, section() as got:
                    assert got is lock
                    top = v.task().held[-1]
                    expected = 2 if in_softirq and label == "rwlock.read" else 1 if "read" in label else 0
                    subclass = 3 if label == "nested" else 0
                    assert (top[H_LOCK], top[H_READ], top[H_CLASS].subclass) == (lock, expected, subclass)
            assert (slow.acquires, slow.releases) == seen, label
    assert v.reports == []


@needs_c
@pytest.mark.parametrize("in_softirq", [False, True])
def test_fast_and_slow_sections_leave_the_same_state(in_softirq):
    with pylockdep.validate() as v, contextlib.ExitStack() as stack:
        if in_softirq:
            stack.enter_context(pylockdep.softirq())
        made = sections(in_softirq)
        blocks = [section() for _, _, section in made]
        for block in blocks:  # validate the chain
            block.__enter__()
        for block in reversed(blocks):
            block.__exit__(None, None, None)
        t = v.task()
        states = {}
        for way in ("fast", "slow"):
            steps, opened = [], []
            for _, lock, section in made:
                block = section()
                enter = type(block).__enter__
                assert (enter if way == "fast" else enter.__wrapped__)(block) is lock
                opened.append(block)
                steps.append((entries(v), t.key, t.spins, block._mode, lock._owner is t, lock.locked()))
            for block in reversed(opened):
                leave = type(block).__exit__
                (leave if way == "fast" else leave.__wrapped__)(block, None, None, None)
                steps.append((entries(v), t.key, t.spins, block._lock._owner, block._lock.locked()))
            states[way] = steps
        assert states["fast"] == states["slow"]
    assert v.reports == []


def called_by_the_operation(frame, package: str) -> bool:
    """Whether ``frame`` is a function of pylockdep's (in ``package``) that the operation under
    test called: not the garbage collector's hooks, which a collection calls wherever it starts."""
    hooks = (_collector._begin.__code__, _collector._end.__code__)
    return frame.f_code.co_filename.startswith(package) and frame.f_code not in hooks


def python_calls(block) -> int:
    """How many of pylockdep's Python functions ``with block(): pass`` calls, the second time at
    one line (the first teaches the C path its site)."""
    package = os.path.dirname(pylockdep.__file__)
    calls = []

    def profile(frame, event, arg):
        if event == "call" and called_by_the_operation(frame, package):
            calls.append(frame.f_code.co_name)

    for _ in range(2):
        calls.clear()
        sys.setprofile(profile)
        try:
            with block():
                pass
        finally:
            sys.setprofile(None)
    return len(calls)


class _Owner:
    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.Lock()


class _OtherOwner(_Owner):
    __slots__ = ()


@needs_c
def test_a_lock_made_for_self_is_built_in_c_for_an_owner_type_seen_before():
    with pylockdep.validate(), pylockdep.instrument_threading():
        assert python_functions(_Owner)  # the site's owner types are learned in Python
        assert python_functions(_Owner) == []
        assert python_functions(_OtherOwner)  # a new type: Python finds its key
        assert python_functions(_OtherOwner) == []
        assert _OtherOwner().lock._key is not _Owner().lock._key


@needs_c
def test_context_sections_on_a_known_chain_run_in_c_but_the_method_making_them():
    spin = pylockdep.SpinLock("fp_ctx_spin")
    with pylockdep.validate() as v:
        for block in (spin.irqsave, spin.irq, spin.bh):
            with block():  # the chain is learned
                pass
            assert python_calls(block) == 1, block  # the method: the section is made in C
        t = v.task()
        assert (t.held, t.irqs_off, t.bh, t.irqtrace.events) == ([], False, 0, 18)
        with_line = python_calls.__code__.co_firstlineno + 14
        assert t.irqtrace.softirq_enable_site == (python_calls.__code__, with_line)
    assert v.reports == []


def test_a_section_is_made_as_its_class_makes_it():
    lock = pylockdep.SpinLock("fp_made")
    fields = ("_lock", "_read", "_subclass", "_context")
    for args in ((lock, 0, 0, _locks._IRQSAVE), (lock, _locks._READ_MODE, 0, 0), (lock, 0, 3, 0)):
        made, plain = _locks._new_held(*args), _locks._Held(*args)
        assert type(made) is _locks._Held
        assert [getattr(made, name) for name in fields] == [getattr(plain, name) for name in fields] == list(args)
        assert not hasattr(made, "_mode")
    with pytest.raises(TypeError):  # other arguments go to the class, which refuses them as before
        _locks._new_held(lock, 0, 0)


def context_state(v: pylockdep.Validator, events_before: int) -> tuple:
    t = v.task()
    trace = t.irqtrace
    stamps = [getattr(trace, name) for name in _task.IrqTrace.__slots__ if name != "events"]
    return (
        entries(v),
        t.key,
        t.ctx,
        t.irq,
        t.irqs_off,
        t.bh,
        t.spins,
        t.atomic_site,
        t.atomic_depth,
        trace.events - events_before,
        [s - events_before if isinstance(s, int) and s else s for s in stamps],  # 0: never
    )


@needs_c
@pytest.mark.parametrize("way", ["irqsave", "bh"])
def test_fast_and_slow_context_sections_leave_the_same_state(way):
    spin = pylockdep.SpinLock("fp_ctx_same")
    with pylockdep.validate() as v:
        states = {}
        for path in ("fast", "fast", "slow"):  # the first learns the chain and the site
            block = getattr(spin, way)()
            enter, leave = type(block).__enter__, type(block).__exit__
            if path == "slow":
                enter, leave = enter.__wrapped__, leave.__wrapped__
            before = v.task().irqtrace.events
            assert enter(block) is spin
            inside = context_state(v, before)
            leave(block, None, None, None)
            states[path] = (inside, context_state(v, before), v.task().irq_saves)
        assert states["fast"] == states["slow"]
        assert states["fast"][0][4:6] == ((True, 0) if way == "irqsave" else (False, 1))
    assert v.reports == []


class ContextCalls:
    """Counts the calls of _context's section entry points (the C path makes none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("irq_save_for", "irq_restore_for", "bh_disable_at", "bh_enable_at"):
            real = getattr(_context, name)
            monkeypatch.setattr(_context, name, self._counted(name, real))

    def _counted(self, name, real):
        def counted(*args):
            self.calls.append(name)
            return real(*args)

        return counted


@needs_c
def test_a_context_section_hands_what_it_cannot_do_to_python(monkeypatch):
    calls = ContextCalls(monkeypatch)
    spin, inner, mutex = pylockdep.SpinLock("fp_hand_a"), pylockdep.SpinLock("fp_hand_b"), pylockdep.Mutex("fp_hand_m")
    with pylockdep.validate() as v:
        for _ in range(2):  # the second time at each line: the chains and the sites are known
            del calls.calls[:]
            with spin.irqsave(), inner.irqsave():  # the inner one: interrupts already off, in C
                pass
        assert calls.calls == []
        for _ in range(2):
            del calls.calls[:]
            with mutex, spin.irqsave():  # interrupts back on with a lock held that is marked so: C
                pass
        assert calls.calls == []
        other = pylockdep.SpinLock("fp_hand_c")
        with spin.irqsave():
            other.acquire()  # taken with interrupts off
        calls.calls.clear()
        with inner.irqsave():  # interrupts back on with a lock held that is not marked so: Python
            pass
        other.release()
        assert calls.calls == ["irq_save_for", "irq_restore_for"]  # a new site, then the marking
        for _ in range(2):
            del calls.calls[:]
            with spin.bh(), inner.bh():  # bottom halves already off: Python
                pass
        assert calls.calls == ["bh_disable_at", "bh_enable_at"]
    with pylockdep.validate(preempt_rt=True) as rt:
        for _ in range(2):
            del calls.calls[:]
            with spin.irqsave():  # a sleeping lock there: Python knows interrupts stay on
                pass
        assert calls.calls == ["irq_save_for"]  # and nothing to restore: the C __exit__ sees that
        assert rt.task().irqs_off is False
    assert v.reports == rt.reports == []


@pytest.mark.parametrize("way", ["irqsave", "bh"])
def test_a_context_section_whose_lock_raises_restores_the_context(monkeypatch, way):
    rwlock = pylockdep.RWLock("fp_ctx_raises")

    class Refusing(_locks._RWCore):  # a primitive of Python's (the C path calls its methods)
        __slots__ = ()

        def try_acquire(self, read):
            raise OSError("the primitive failed")

    raised = []
    with pylockdep.validate() as v:
        for attempt in range(3):  # the chain and the site are known by the third: the C path
            if attempt == 2:
                rwlock._rw = Refusing()
            try:
                with getattr(rwlock, way)():
                    pass
            except OSError:
                raised.append(attempt)
        assert raised == [2]
        t = v.task()
        assert (t.held, t.irqs_off, t.bh, rwlock.locked()) == ([], False, 0, False)
    assert v.reports == []


@needs_c
def test_a_fast_acquisition_records_its_own_line(monkeypatch):
    slow = SlowCalls(monkeypatch)
    a, b = pylockdep.Mutex("fp_site_A"), pylockdep.Mutex("fp_site_B")
    a1, a2 = pylockdep.Mutex("fp_site_C"), pylockdep.Mutex("fp_site_C")  # one class
    with pylockdep.validate(raise_on_report=False) as v:
        for _ in range(2):
            with a:
                line = sys._getframe().f_lineno
                assert held_site(v.task().held[-1])[1] == line - 1
                with b:
                    pass
        assert slow.acquires == 2
        # A report printed while the lock is held shows the line of the fast acquisition.
        for _ in range(2):
            with a1:
                pass
        with a1:
            taken_at = sys._getframe().f_lineno - 1
            with a2:
                pass
    (report,) = v.reports
    assert report.kind == "recursive"
    assert f"test_fastpath.py:{taken_at}" in report.text


@needs_c
def test_depth_limit_is_checked_on_the_fast_path():
    locks = [pylockdep.Mutex(f"fp_depth_{i}", key=("fp_depth", i)) for i in range(3)]
    with pylockdep.validate(raise_on_report=False, max_lock_depth=3) as v:
        with locks[0], locks[1]:
            pass
        v.reports.clear()
        with locks[0], locks[1]:  # depth 2: both on the fast path
            pass
        assert v.reports == []
        with locks[0], locks[1], locks[2]:
            pass
    assert [r.kind for r in v.reports] == ["limit_exceeded"]
    assert "MAX_LOCK_DEPTH too low" in v.reports[0].text


def test_contended_fast_acquisition_waits_and_detects_self_deadlock():
    a = pylockdep.Mutex("fp_contended")
    with pylockdep.validate(raise_on_report=False) as v:
        with a:
            pass
        holding, release = threading.Event(), threading.Event()

        def holder():
            with a:
                holding.set()
                release.wait()

        thread = threading.Thread(target=holder)
        thread.start()
        holding.wait()
        threading.Timer(0.05, release.set).start()
        with a:  # known chain, lock taken: waits in Python until the holder lets go
            assert a._owner is v.task()
        thread.join()
        with a:
            with pytest.raises(pylockdep.DeadlockError):
                a.acquire()
    assert [r.kind for r in v.reports] == ["recursive"]


def test_wrong_arguments_are_refused_as_in_python():
    a = pylockdep.Mutex("fp_args")
    with pylockdep.validate(raise_on_report=False) as v:
        with pytest.raises(TypeError):
            a.acquire(True)
        with pytest.raises(TypeError):
            a.release(1)
        with pytest.raises(TypeError):
            a.acquire(blocking=True)
        with pytest.raises((AttributeError, TypeError)):
            pylockdep.Mutex.__enter__(object())
        with pytest.raises(TypeError):
            pylockdep.Mutex.__enter__()
        assert not a.locked()
        # A release of a lock nobody holds is a report, not a crash, on either path.
        a.release()
    assert [r.kind for r in v.reports] == ["bad_unlock_balance"]


def test_accelerated_methods_keep_their_python_face():
    for method in (
        pylockdep.Mutex.acquire,
        pylockdep.Mutex.__enter__,
        pylockdep.SpinLock.release,
        pylockdep.Mutex.__exit__,
    ):
        python = getattr(method, "__wrapped__", method)
        assert method.__doc__ == python.__doc__
        assert method.__name__ == python.__name__
        assert inspect.signature(method) == inspect.signature(python)
    assert pylockdep.Mutex.lock is pylockdep.Mutex.acquire
    assert pylockdep.Mutex.unlock is pylockdep.Mutex.release
    a = pylockdep.Mutex("fp_face")
    with pylockdep.validate():
        assert a.acquire() is True
        a.release()
        with a as entered:
            assert entered is a


def test_instrumented_threading_lock_uses_the_caller_outside_threading():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        cond = threading.Condition(lock)
        for _ in range(2):
            assert lock.__enter__() is True
            lock.__exit__(None, None, None)
            with cond:  # Condition.__enter__ calls lock.__enter__ from threading.py
                line = sys._getframe().f_lineno - 1
                (entry,) = v.task().held
                assert held_site(entry)[0].co_filename == __file__
                assert held_site(entry)[1] == line
        with pytest.raises(RuntimeError):
            lock.release()
        assert isinstance(lock, _threading.Lock)
    assert v.reports == []


def test_no_memory_is_kept_per_acquisition():
    a, b = pylockdep.Mutex("fp_leak_A"), pylockdep.SpinLock("fp_leak_B")
    with pylockdep.validate():

        def loop(n):
            for _ in range(n):
                with a, b:
                    pass

        loop(100)
        refs = sys.getrefcount(a), sys.getrefcount(active.validator), sys.getrefcount(v_task := active.validator.task())
        tracemalloc.start()
        try:
            loop(1000)
            before = tracemalloc.get_traced_memory()[0]
            loop(20_000)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert (sys.getrefcount(a), sys.getrefcount(active.validator)) == refs[:2]
        assert sys.getrefcount(v_task) == refs[2]
        # Leaking one small object per acquisition would be over 600 kB here.
        assert grown < 64 * 1024


def test_many_threads_on_shared_locks_stay_consistent():
    locks = [pylockdep.Mutex("fp_shared_A"), pylockdep.SpinLock("fp_shared_B"), pylockdep.RWLock("fp_shared_C")]
    counter = [0]
    errors = []

    def worker():
        try:
            for i in range(2000):
                first = locks[i % 2]
                with first, locks[2]:
                    counter[0] += 1
        except BaseException as exc:  # noqa: BLE001 - any failure of the validator is the test's
            errors.append(exc)

    with pylockdep.validate() as v:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(not t.held for t in v.tasks.values())
    assert errors == []
    assert counter[0] == 8000
    assert v.reports == []
    assert not any(lock.locked() for lock in locks)


def test_held_entries_chain_their_keys():
    a, b = pylockdep.Mutex("fp_keys_A"), pylockdep.Mutex("fp_keys_B")
    with pylockdep.validate() as v:
        for _ in range(2):
            with a, b:
                t = v.task()
                first, second = t.held
                assert first[H_LOCK] is a and second[H_LOCK] is b
                assert second[H_PREV_KEY] != first[H_PREV_KEY]
                inner_key = t.key
            assert t.key == first[H_PREV_KEY]
        with a, b:
            assert v.task().key == inner_key


def test_instrumented_rlock_counts_reentry_and_checks_the_owner(monkeypatch):
    slow = SlowCalls(monkeypatch)
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        rlock = threading.RLock()
        for _ in range(2):
            with rlock:
                assert rlock.acquire() is True  # the owner again: counted, not a new acquisition
                assert rlock._recursion_count() == 2
                assert len(v.task().held) == 1
                rlock.release()
                assert rlock._is_owned()
            assert not rlock._is_owned() and rlock._recursion_count() == 0 and not v.task().held
        if _fastpath.ACCELERATED:
            assert (slow.acquires, slow.releases) == (1, 0)
        errors = []

        def stranger():
            try:
                rlock.release()
            except RuntimeError as exc:
                errors.append(str(exc))

        with rlock:
            thread = threading.Thread(target=stranger)
            thread.start()
            thread.join()
            assert rlock._recursion_count() == 1
        assert errors == ["cannot release un-acquired lock"]
        with pytest.raises(RuntimeError):
            rlock.release()
        # Condition.wait() releases the RLock fully and takes it back with its count.
        cond = threading.Condition(rlock)
        with cond, cond:
            assert not cond.wait(0.01)
            assert rlock._recursion_count() == 2 and len(v.task().held) == 1
    assert v.reports == []


@pytest.mark.parametrize("kind", [pylockdep.RWLock, pylockdep.RWSemaphore])
def test_readers_and_writers_under_contention_all_get_through(kind):
    lock = kind("fp_rw_contended")
    state = {"value": 0, "readers": 0, "max_readers": 0}
    errors = []

    def worker(n):
        try:
            for i in range(300):
                if (i + n) % 3:
                    with lock.read():
                        state["readers"] += 1
                        state["max_readers"] = max(state["max_readers"], state["readers"])
                        assert state["value"] >= 0
                        state["readers"] -= 1
                else:
                    with lock.write():
                        assert state["readers"] == 0
                        state["value"] += 1
        except BaseException as exc:  # noqa: BLE001 - any failure of the lock is the test's
            errors.append(exc)

    with pylockdep.validate() as v:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert state["value"] == 400
    assert not lock.locked()
    assert v.reports == []


def test_the_c_module_reads_held_entries_through_the_generated_layout():
    # One source: _held.HELD_FIELDS and _fastpath.SPEEDUPS_ABI, written into the header.
    header = Path(_fastpath.LAYOUT_HEADER)
    assert header.read_text() == _fastpath.layout_header(), "run tools/layout_header.py"
    sources = {path.name: path.read_text() for path in header.parent.glob("*.[ch]")}
    assert '#include "_held_layout.h"' in sources["speedups.h"]
    for name, source in sources.items():
        if name != header.name:  # no layout or ABI number of its own
            assert not re.search(r"enum \{ H_|ABI\", \d", source), name
    header = _fastpath.layout_header()
    enum = re.search(r"enum \{ (H_LOCK[^}]*) \};", header).group(1).split(", ")
    python = sorted((value, name) for name, value in vars(_held).items() if re.fullmatch(r"H_[A-Z_]+", name))
    assert enum == [name for _, name in python] + ["H_FIELDS"]
    assert [getattr(_held, name) for name in enum[:-1]] == list(range(len(HELD_FIELDS)))
    assert re.search(r"held_fields\[\] = \{(.*), NULL\}", header).group(1).split(", ") == [
        f'"{name}"' for name in HELD_FIELDS
    ]


@needs_c
def test_the_c_module_refuses_held_fields_it_was_not_built_for():
    speedups = _fastpath._speedups
    assert speedups.ABI == _fastpath.SPEEDUPS_ABI
    args = (active, pylockdep.Validator, _task.Task, LockKey, LockClass)
    marks = (
        _classes.ENABLED_HARDIRQ,
        _classes.ENABLED_HARDIRQ_READ,
        _classes.ENABLED_SOFTIRQ,
        _classes.ENABLED_SOFTIRQ_READ,
    )
    caches = (_task.IrqTrace, _frames.internal_files, _frames._lines, marks)
    reordered = (HELD_FIELDS[1], HELD_FIELDS[0], *HELD_FIELDS[2:])
    renamed = (*HELD_FIELDS[:-1], "context")
    for wrong in (reordered, renamed, HELD_FIELDS[:-1], list(HELD_FIELDS), tuple):
        with pytest.raises(TypeError):
            speedups.setup(*args, wrong, *caches)
    speedups.setup(*args, HELD_FIELDS, *caches)  # the module is still set up for the real ones
    a = pylockdep.Mutex("fp_refused")
    with pylockdep.validate() as v:
        for _ in range(2):
            with a:
                assert type(v.task().held[-1]) is tuple


@needs_c
def test_an_entry_someone_keeps_is_never_reused():
    a, b = pylockdep.Mutex("fp_kept_A"), pylockdep.Mutex("fp_kept_B")
    with pylockdep.validate() as v:
        for _ in range(2):
            with a:
                pass
        with a:
            kept = v.task().held[-1]
            before = tuple(kept)
        for _ in range(100):
            with a, b:
                pass
        assert tuple(kept) == before and kept[H_LOCK] is a


REAL_LOCKS = [_thread.allocate_lock] + ([_fastpath.new_real_lock] if _fastpath.ACCELERATED else [])


@pytest.mark.parametrize("make", REAL_LOCKS, ids=lambda make: make.__name__)
def test_the_real_lock_behaves_as_cpythons(make):
    # The C module's RealLock stands where CPython's lock stood: the same calls, results and errors.
    lock = make()
    assert lock.acquire() is True and lock.locked()
    assert lock.acquire(False) is False and lock.acquire(blocking=False) is False
    assert lock.acquire(True, 0.01) is False and lock.acquire(timeout=0) is False
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    for args, error in (((False, 1), ValueError), ((True, -2), ValueError), ((True, 1e300), OverflowError)):
        with pytest.raises(error):
            lock.acquire(*args)
    with pytest.raises(TypeError):
        lock.acquire(1, 2, 3)
    lock.acquire()
    lock._at_fork_reinit()
    assert not lock.locked()
    lock.acquire()
    got = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(True, 30)))
    waiter.start()
    lock.release()
    waiter.join()
    assert got == [True] and lock.locked()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
@pytest.mark.parametrize("make", REAL_LOCKS, ids=lambda make: make.__name__)
def test_a_signal_interrupts_a_wait_on_the_real_lock(make):
    # A handler that raises ends the wait with its exception; one that returns lets it go on.
    lock = make()
    lock.acquire()
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        if len(calls) == 1:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            lock.acquire(True, 30)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert lock.acquire(True, 0.3) is False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(calls) == 2


@needs_c
def test_validated_locks_block_on_the_c_real_lock():
    with pylockdep.instrument_threading():
        locks = [pylockdep.Mutex("fp_real_M"), pylockdep.RWLock("fp_real_RW"), threading.Lock(), threading.RLock()]
    assert [type(lock._real).__name__ for lock in locks] == ["RealLock", "NoneType", "RealLock", "RealLock"]
    assert locks[1]._rw is None  # a reader-writer lock's primitive, made by the first use
    assert isinstance(locks[1]._core(), _fastpath._speedups.RWCore)  # whose state C takes and releases
    assert locks[1]._core() is locks[1]._rw


@needs_c
def test_the_fast_path_follows_the_active_validator_and_thread(monkeypatch):
    # The C module keeps each thread's Task per validator: switching validators, or threads, must
    # never push on another validator's or thread's stack.
    a = pylockdep.Mutex("fp_switch_A")
    with pylockdep.validate() as outer:
        for _ in range(2):
            with a:
                assert [e[H_LOCK] for e in outer.task().held] == [a]
        with pylockdep.validate() as inner:
            slow = SlowCalls(monkeypatch)
            for _ in range(2):
                with a:
                    assert [e[H_LOCK] for e in inner.task().held] == [a]
                    assert outer.task().held == []
            assert slow.acquires == 1  # a new chain for the inner validator, then the fast path
            seen = []

            def other_thread():
                with a:
                    seen.append([e[H_LOCK] for e in inner.task().held])
                with a:
                    seen.append([e[H_LOCK] for e in inner.task().held])
                seen.append(inner.task() is not main_task)

            main_task = inner.task()
            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
            assert seen == [[a], [a], True] and main_task.held == []
        with a:
            assert [e[H_LOCK] for e in outer.task().held] == [a]
    assert outer.reports == [] and inner.reports == []


@needs_c
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_condition_takes_its_lock_on_the_fast_path_sited_at_its_caller(monkeypatch, kind):
    # Condition.__enter__ takes the lock from threading.py: C finds the caller outside threading,
    # as the Python path does, once Python has seen that caller's file.
    with pylockdep.validate() as v, pylockdep.instrument_threading():
        cond = threading.Condition(getattr(threading, kind)())
        with cond:  # a new chain: Python
            pass
        slow = SlowCalls(monkeypatch)
        for _ in range(3):
            with cond:
                line = sys._getframe().f_lineno - 1
                (entry,) = v.task().held
                assert (held_site(entry)[0].co_filename, held_site(entry)[1]) == (__file__, line)
        assert (slow.acquires, slow.releases) == (0, 0)
    assert v.reports == []


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_a_threading_lock_an_exitstack_enters_is_sited_at_its_caller_on_every_path(kind):
    """The site of a threading lock that an ``ExitStack`` enters is the frame that called into
    contextlib, on the general path and on the fast ones, C and pure, though the chain became known
    from a lock taken directly.  Sited in contextlib, whose call has returned, the lock looked
    held on past its taker (a token that another thread may hand back): a cycle through it was
    held back until validation ended."""
    with pylockdep.validate() as v, pylockdep.instrument_threading():
        lock = getattr(threading, kind)()
        with lock:  # the chain, known from here on
            pass
        for _ in range(3):
            with contextlib.ExitStack() as stack:
                stack.enter_context(lock)
                line = sys._getframe().f_lineno - 1
                (entry,) = v.task().held
                assert held_site(entry) == (sys._getframe().f_code, line)
    assert v.reports == []


@needs_c
def test_a_failed_trylock_of_a_threading_lock_is_answered_in_c(monkeypatch):
    # Condition._is_owned() asks lock.acquire(False) of a Lock: when it is taken, nothing changes.
    with pylockdep.validate() as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        slow = SlowCalls(monkeypatch)
        with lock:
            before = list(v.task().held), v.task().key
            assert lock.acquire(False) is False and lock.acquire(0) is False
            assert (list(v.task().held), v.task().key) == before
            assert slow.acquires == 1  # the with-block's first, new chain
        assert lock.acquire(False) is True  # free: Python's trylock takes and records it
        assert slow.acquires == 2 and [e[H_TRYLOCK] for e in v.task().held] == [True]
        lock.release()
        cond = threading.Condition(lock)
        with cond:
            cond.notify()  # owned: no RuntimeError
        with pytest.raises(RuntimeError):
            cond.notify()
    with pytest.raises(TypeError):
        pylockdep.Mutex("fp_try_M").acquire(False)  # the kernel types' acquire() takes no argument
    assert v.reports == []


@pytest.mark.usefixtures("plain_threading")
def test_a_condition_tests_an_instrumented_lock_as_cpython_tests_a_plain_one():
    """Condition reads its lock's ``_is_owned`` once.  threading's own, for a ``_thread.lock``, is a
    trylock released at once: true when any thread holds the lock.  The instrumented Lock's gives
    the same answers with no Python call and no take to validate."""
    with pylockdep.instrument_threading():
        lock = threading.Lock()
        cond = threading.Condition(lock)
    taken, done = threading.Event(), threading.Event()

    def hold():
        with lock:
            taken.set()
            done.wait()

    with pylockdep.validate() as v:
        assert python_functions(cond._is_owned) == [] and cond._is_owned() is False
        with pytest.raises(RuntimeError, match="un-acquired"):
            cond.notify()
        with cond:
            assert python_functions(cond._is_owned) == [] and cond._is_owned() is True
            cond.notify()
        other = threading.Thread(target=hold)
        other.start()
        taken.wait()
        cond.notify()  # another thread holds it: owned, for CPython's test of a plain lock too
        done.set()
        other.join()
        assert not v.task().held
    assert v.reports == []


@needs_c
def test_the_c_walk_for_caller_site_finds_what_python_finds(monkeypatch):
    from pylockdep import _frames

    # A frame in threading.py (skipped with skip_threading) asking for its caller's site.
    namespace: dict = {}
    code = "def ask(frames):\n    return frames.caller_site(), frames.caller_site(skip_threading=True)\n"
    exec(compile(code, threading.__file__, "exec"), namespace)

    def sites():
        return namespace["ask"](_frames), pylockdep.Mutex("fp_site_M")._key.site, via_contextlib()

    @contextlib.contextmanager
    def section():
        yield namespace["ask"](_frames)

    def via_contextlib():
        with section() as found:
            return found

    in_c = sites()
    monkeypatch.setattr(_frames, "c_outside_site", None)
    in_python = sites()
    assert in_c == in_python
    (inside, outside), _, _ = in_c
    assert inside[0].co_filename == threading.__file__ and outside[0].co_name == "sites"
    # A file Python has not classified yet: C leaves the answer to the Python walk.
    exec(compile("def call(f): return f({}, None)", "<never-seen>", "exec"), namespace)
    assert namespace["call"](_fastpath._speedups.outside_site) is None


@needs_c
def test_condition_wait_releases_and_restores_an_rlock_on_the_fast_path(monkeypatch):
    # Condition.wait() calls the RLock's _release_save() and _acquire_restore(): in C on a known
    # chain, with the recursion count and owner restored and the site at the wait's caller.
    with pylockdep.validate() as v, pylockdep.instrument_threading():
        cond = threading.Condition()
        rlock = cond._lock
        for _ in range(2):  # the first round learns the chains in Python
            slow = SlowCalls(monkeypatch)
            with cond, cond:
                assert cond.wait(0) is False
                line = sys._getframe().f_lineno - 1
                assert (rlock._count, rlock._ident) == (2, threading.get_ident())
                (entry,) = v.task().held
                assert (held_site(entry)[0].co_filename, held_site(entry)[1]) == (__file__, line)
            assert (rlock._count, rlock._ident) == (0, None) and not rlock._real.locked()
        assert (slow.acquires, slow.releases) == (0, 0)
        with pytest.raises(RuntimeError):
            rlock._release_save()  # not held: the Python method's error
    assert v.reports == []


class CountedKeys:
    """Counts the lock constructions that reach the Python ``__init__`` (its key lookup)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        creation_key = _locks._creation_key

        def counted(*args, **kwargs):
            self.calls += 1
            return creation_key(*args, **kwargs)

        monkeypatch.setattr(_locks, "_creation_key", counted)
        monkeypatch.setattr(_rcu, "_creation_key", counted)


@pytest.mark.parametrize(
    "kind", [pylockdep.Mutex, pylockdep.SpinLock, pylockdep.RawSpinLock, pylockdep.RWLock, pylockdep.RWSemaphore]
)
def test_a_lock_made_again_at_its_site_is_made_as_python_makes_it(monkeypatch, kind):
    counted = CountedKeys(monkeypatch)
    made = [(kind("fp_made"), kind("fp_made", key="fp_made_key")) for _ in range(3)]
    # In C only the first of each site and name reaches Python; in pure Python every one does.
    assert counted.calls == (6 if PURE else 2)
    for plain, keyed in made:
        for lock, key in ((plain, made[0][0]._key), (keyed, made[0][1]._key)):
            assert type(lock) is kind
            assert lock._key is key
            assert lock._owner is None
            if issubclass(kind, _locks._RWLockBase):  # its primitive: a core made by the first use
                assert (lock._real, lock._rw) == (None, None)
            else:
                assert type(lock._real) is type(_fastpath.new_real_lock())
            assert not lock.locked()
    assert made[0][0]._key is not made[0][1]._key
    primitives = [lock._real if lock._real is not None else lock._core() for pair in made for lock in pair]
    assert len({id(primitive) for primitive in primitives}) == 6
    with pylockdep.validate() as v:
        for lock in [lock for pair in made for lock in pair]:
            with lock:
                pass
    assert v.reports == []


def test_an_srcu_made_again_at_its_site_is_made_as_python_makes_it(monkeypatch):
    counted = CountedKeys(monkeypatch)
    made = [pylockdep.SRCU("fp_srcu") for _ in range(3)]
    assert counted.calls == (3 if PURE else 1)
    for s in made:
        assert type(s) is pylockdep.SRCU and s._key is made[0]._key
        assert (s._owner, s._cond, s._sync_owner, s._tls) == (None, None, None, None)
        assert (s._idx, s._draining, s._flipped) == (0, 1, False)
        assert type(s._mutex) is type(_thread.RLock()) and not s._mutex._is_owned()  # re-entrant (reliability)
        assert s._readers is None  # made by the first read side
    assert len({id(s._mutex) for s in made}) == 3
    with pylockdep.validate() as v:
        for s in made:
            with s.read() as idx:
                assert s._readers[idx] == {threading.get_ident(): 1} and s._readers[idx ^ 1] == {}
            s.synchronize()
            assert s.read_lock_held() is False
    assert v.reports == []


def test_other_calls_of_a_lock_type_reach_python_init(monkeypatch):
    class Mine(pylockdep.Mutex):
        __slots__ = ()

    counted = CountedKeys(monkeypatch)
    for _ in range(2):
        Mine("fp_sub")  # a subclass is not accelerated
    assert counted.calls == 2
    names = [pylockdep.Mutex("".join(["fp_", "same"])) for _ in range(2)]  # equal names, two objects
    assert counted.calls == (4 if PURE else 3)  # the second found by its equal name
    assert names[0]._key is names[1]._key
    for _ in range(2):
        with pytest.raises(TypeError, match="positional"):
            pylockdep.Mutex("fp_args", "key")
        with pytest.raises(TypeError, match="unexpected keyword"):
            pylockdep.Mutex("fp_args", other=1)
        with pytest.raises(TypeError, match="key must be hashable"):
            pylockdep.Mutex("fp_args", key=[])
        with pytest.raises(TypeError, match="name"):
            pylockdep.Mutex(["fp_args"])


@pytest.mark.usefixtures("plain_threading")
def test_threading_locks_made_again_at_a_site_are_made_as_python_makes_them(monkeypatch):
    built = []
    new = _threading.Lock.__dict__["_new"].__func__
    monkeypatch.setattr(_threading.Lock, "_new", classmethod(lambda cls, key: built.append(key) or new(cls, key)))
    with pylockdep.instrument_threading():
        made = [threading.Lock() for _ in range(3)]
        line = inspect.currentframe().f_lineno - 1
        rlocks = [threading.RLock() for _ in range(3)]
    # In C only the first reaches Python (Lock._new); in pure Python every one does.
    assert len(built) == (3 if PURE else 1)
    # A class-shaped stand-in (3.13's threading.Lock) is called through its metaclass's C __call__.
    assert (type(vars(_threading._StandInType)["__call__"]).__name__ == "CallMake") is not PURE
    for lock in made:
        assert type(lock) is _threading.Lock
        assert lock._key is made[0]._key
        assert lock.name == f"Lock@test_fastpath.py:{line}"
        assert lock._owner is None
        assert type(lock._real) is type(_fastpath.new_real_lock())
        assert not lock.locked()
    for rlock in rlocks:
        assert type(rlock) is _threading.RLock
        assert rlock._key is rlocks[0]._key
        assert (rlock._owner, rlock._ident, rlock._count) == (None, None, 0)
        assert type(rlock._real) is type(_fastpath.new_real_lock())
    assert len({id(lock._real) for lock in made + rlocks}) == 6
    with pylockdep.validate() as v:
        for lock in made + rlocks:
            with lock:
                pass
    assert v.reports == []


@pytest.mark.usefixtures("plain_threading")
def test_other_calls_of_a_threading_stand_in_reach_python():
    with pylockdep.instrument_threading():
        for _ in range(2):
            with pytest.raises(TypeError):
                threading.Lock(1)
            # threading's own locks stay CPython's, made again or not
            assert type(threading.Thread(target=len)._started._cond._lock) is _thread.LockType
        assert repr(threading.Lock) == repr(threading.Lock.__wrapped__)


def test_a_condition_waits_on_cpythons_lock_made_with_no_python_call():
    """threading's own call of a name bound before instrumentation (``_allocate_lock()``, the
    waiter of every ``Condition.wait()``) gets CPython's lock, answered in C on the C path: a
    block that notifies and waits runs no Python function of pylockdep.  Other callers of that
    name still get validated locks."""
    with pylockdep.validate() as v, pylockdep.instrument_threading():
        cond = threading.Condition()
        waiters = []

        def block():
            with cond:
                cond.notify()
                cond.wait(0)

        def wait_in_thread():
            with cond:
                assert cond.wait(30)

        block()  # learns the chains
        if _fastpath.ACCELERATED:
            assert python_functions(block) == []
        thread = threading.Thread(target=wait_in_thread)
        thread.start()
        while not cond._waiters:
            time.sleep(0.001)
        with cond:
            waiters += cond._waiters
            cond.notify()
        thread.join()
        assert type(waiters[0]) is _thread.LockType and not hasattr(waiters[0], "_key")
        assert hasattr(threading._allocate_lock(), "_key")  # called from here: validated
    assert v.reports == []


@pytest.mark.usefixtures("plain_threading")
def test_the_rlock_stand_in_is_built_in_c_and_binds_as_a_method_as_threading_rlock_does(monkeypatch):
    built = []
    new = _threading.RLock.__dict__["_new"].__func__
    monkeypatch.setattr(_threading.RLock, "_new", classmethod(lambda cls, key: built.append(key) or new(cls, key)))

    class Holder:
        pass

    with pylockdep.instrument_threading():
        rlocks = [threading.RLock() for _ in range(3)]
        Holder.make = threading.RLock  # a Python function, as CPython's: bound when read from an instance
        bound = Holder().make
        # An argument to RLock() is deprecated from 3.13 on, as CPython's own RLock() warns.
        with pytest.warns(DeprecationWarning) if sys.version_info >= (3, 13) else contextlib.nullcontext():
            made = bound()
    # threading.RLock is a function on every version: its C stand-in binds as one.
    assert (type(Holder.__dict__["make"]).__name__ == "StandIn") is not PURE
    assert Holder.make is Holder.__dict__["make"] and bound.__self__.__class__ is Holder
    assert len(built) == (1 if not PURE else 3) + 1  # the bound call has an argument: Python makes it
    assert type(made) is _threading.RLock and made._key is built[-1]
    assert all(type(r) is _threading.RLock and r._key is rlocks[0]._key for r in rlocks)


@needs_c
@pytest.mark.usefixtures("plain_threading")
def test_an_rlocks_owner_check_is_answered_in_c():
    with pylockdep.instrument_threading():
        r = threading.RLock()
    owned = []
    with pylockdep.validate() as v:
        assert python_functions(lambda: owned.append(r._is_owned())) == []
        with r:
            assert python_functions(lambda: owned.append(r._is_owned())) == []
            other = threading.Thread(target=lambda: owned.append(r._is_owned()))
            other.start()
            other.join()
        r._ident = _thread.get_ident() + 0.0  # not an int: Python compares
        assert python_functions(lambda: owned.append(r._is_owned())) == ["_is_owned"]
        r._ident = None
    assert owned == [False, True, False, True] and v.reports == []


# -- reader-writer locks ---------------------------------------------------------------------------


def rw_pairs() -> list[tuple[str, object, str, str, int]]:
    """(label, lock, take, release, read mode held) for the kernel spellings of the reader-writer locks."""
    rw, sem = pylockdep.RWLock("fp_rw_pairs_rw"), pylockdep.RWSemaphore("fp_rw_pairs_sem")
    return [
        ("read_lock", rw, "read_lock", "read_unlock", 1),
        ("write_lock", rw, "write_lock", "write_unlock", 0),
        ("down_read", sem, "down_read", "up_read", 1),
        ("down_write", sem, "down_write", "up_write", 0),
    ]


@needs_c
def test_reader_writer_locks_on_a_known_chain_run_in_c():
    rw, sem = pylockdep.RWLock("fp_rw_c_rw"), pylockdep.RWSemaphore("fp_rw_c_sem")
    with pylockdep.validate() as v:
        for block in (rw.read, rw.write, lambda: rw, sem.read, sem.write, lambda: sem):
            with block():  # the chain is learned
                pass
            assert python_calls(block) == 0, block
        for label, lock, take, release, mode in rw_pairs():
            getattr(lock, take)()
            getattr(lock, release)()
            package, t = os.path.dirname(pylockdep.__file__), v.task()
            calls = []
            sys.setprofile(lambda frame, event, arg, calls=calls: calls.append(frame) if event == "call" else None)
            try:
                getattr(lock, take)()
                top = t.held[-1]
                getattr(lock, release)()
            finally:
                sys.setprofile(None)
            assert [f for f in calls if called_by_the_operation(f, package)] == [], label
            assert (top[H_LOCK], top[H_READ]) == (lock, mode)
            assert not lock.locked() and not v.task().held
    assert v.reports == []


@needs_c
def test_fast_and_slow_reader_writer_methods_leave_the_same_state():
    with pylockdep.validate() as v:
        outer = pylockdep.Mutex("fp_rw_same_outer")
        t = v.task()
        for label, lock, take, release, _ in rw_pairs():
            with outer:
                getattr(lock, take)()  # the chain is learned
                getattr(lock, release)()
            states = {}
            for way in ("fast", "slow"):
                fast_take, fast_release = vars(type(lock)).get(take), vars(type(lock)).get(release)
                assert type(fast_take).__name__ == type(fast_release).__name__ == "RWMethod"
                call = (lambda m: m) if way == "fast" else (lambda m: m.__wrapped__)
                with outer:
                    call(fast_take)(lock)
                    core = lock._rw
                    held = (entries(v), t.key, lock._owner is t, core.writer, core.readers, lock.locked())
                    call(fast_release)(lock)
                    released = (entries(v), t.key, lock._owner, core.writer, core.readers, lock.locked())
                states[way] = (held, released)
            assert states["fast"] == states["slow"], label
    assert v.reports == []


def core_steps(core: object, seed: int = 17) -> list[tuple]:
    """What ``core`` answers over a fixed random run of takes by three threads' idents, waiting
    writers coming and going, and releases by a thread that holds nothing (this one)."""
    rng = random.Random(seed)
    seen = []
    for _ in range(300):
        op = rng.choice(["take", "take", "take", "release", "wait"])
        read, ident = rng.choice([0, 1, 2]), rng.choice([1, 2, 3])
        writers = rng.choice([None, {}, {9: 1}])
        answer = None
        if op == "take":
            answer = core._take(read, ident)
        elif op == "wait":
            core.waiting_writers = writers
        elif core.is_held(1 if read else 0):
            core.release(read)
        blockers = [sorted(core.blockers(mode)) for mode in (0, 1, 2)]
        readers = None if core.readers is None else dict(core.readers)  # the Python core's changes later
        seen.append((answer, core.writer, readers, core.is_held(0), core.is_held(1), blockers))
    return seen


@needs_c
def test_the_c_reader_writer_core_keeps_the_python_cores_state():
    assert core_steps(_locks._new_core()) == core_steps(_locks._RWCore())


def test_a_read_release_of_a_free_reader_writer_core_is_refused():
    for core in (_locks._new_core(), _locks._RWCore()):
        core._take(1, 1)
        core.release(1)  # another thread's hold: released for it
        with pytest.raises(RuntimeError, match="read side"):
            core.release(1)
        assert (core.writer, core.readers, core.is_held(0), core.is_held(1)) == (None, None, False, False)


# -- SRCU and RCU read sides -------------------------------------------------------------------------


def explicit_python_calls(enter, leave) -> int:
    """How many of pylockdep's Python functions ``leave(enter())`` calls, the second time."""
    package = os.path.dirname(pylockdep.__file__)
    calls = []

    def profile(frame, event, arg):
        if event == "call" and called_by_the_operation(frame, package):
            calls.append(frame.f_code.co_name)

    for _ in range(2):
        calls.clear()
        sys.setprofile(profile)
        try:
            leave(enter())
        finally:
            sys.setprofile(None)
    return len(calls)


@needs_c
def test_read_sides_on_a_known_chain_run_in_c():
    s = pylockdep.SRCU("fp_srcu_c")
    with pylockdep.validate() as v:
        assert python_calls(s.read) == 0  # the read side is made in C too
        assert python_calls(pylockdep.rcu_read) == 1  # rcu_read() itself
        assert explicit_python_calls(s.read_lock, s.read_unlock) == 0
        assert explicit_python_calls(pylockdep.rcu_read_lock, lambda _: pylockdep.rcu_read_unlock()) == 0
        t = v.task()
        assert (t.held, t.rcu, _rcu._thread_depth(), s._readers, s._stack()) == ([], 0, 0, ({}, {}), [])
    assert v.reports == []


def read_side_state(v: pylockdep.Validator, s: pylockdep.SRCU) -> tuple:
    t = v.task()
    counters = tuple(dict(readers) for readers in s._readers or ())
    return (entries(v), t.key, t.ctx, t.irq, t.rcu, _rcu._thread_depth(), counters, list(s._stack()), s._owner is t)


@needs_c
def test_fast_and_slow_read_sides_leave_the_same_state():
    s, outer = pylockdep.SRCU("fp_srcu_same"), pylockdep.Mutex("fp_srcu_outer")
    srcu_side, rcu_side = s.read(), pylockdep.rcu_read()

    def steps(fast: bool) -> list[tuple]:
        def way(method):
            return method if fast else method.__wrapped__

        found = []
        with outer:
            found.append(read_side_state(v, s))
            idx = way(type(srcu_side).__enter__)(srcu_side)
            found.append((idx, *read_side_state(v, s)))
            way(type(rcu_side).__enter__)(rcu_side)
            found.append(read_side_state(v, s))
            inner = way(pylockdep.SRCU.read_lock)(s)
            found.append((inner, *read_side_state(v, s)))
            way(pylockdep.rcu_read_lock)()
            found.append(read_side_state(v, s))
            way(pylockdep.rcu_read_unlock)()
            found.append(read_side_state(v, s))
            way(pylockdep.SRCU.read_unlock)(s, inner)
            found.append(read_side_state(v, s))
            way(type(rcu_side).__exit__)(rcu_side, None, None, None)
            found.append(read_side_state(v, s))
            way(type(srcu_side).__exit__)(srcu_side, None, None, None)
            found.append(read_side_state(v, s))
        return found

    with pylockdep.validate() as v:
        steps(fast=False)  # the chains are learned
        assert steps(fast=True) == steps(fast=False)
        assert explicit_python_calls(s.read_lock, s.read_unlock) == 0  # the fast way did run in C
    assert v.reports == []


def python_functions(run) -> list[str]:
    """The names of pylockdep's Python functions that ``run()`` calls."""
    package = os.path.dirname(pylockdep.__file__)
    calls: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and called_by_the_operation(frame, package):
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


@needs_c
def test_read_sides_hand_what_they_cannot_do_to_python():
    s = pylockdep.SRCU("fp_srcu_slow")

    def block():
        with s.read():
            pass

    def nested():
        with s.read(), s.read():
            pass

    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        assert "_enter" in python_functions(block)  # the thread's first read side makes its stack
        assert python_functions(block) == []
        assert "_enter" in python_functions(nested)  # a chain not known yet
        assert python_functions(nested) == []
        idx = s.read_lock()
        s._sync_owner = -1  # as while a grace period waits: the end wakes it, in Python
        s._cond = threading.Condition(s._mutex)
        assert "read_unlock" in python_functions(lambda: s.read_unlock(idx))
        s._sync_owner = None
        assert "_bad_index" in python_functions(lambda: s.read_unlock(idx))  # no longer this thread's
        assert (v.task().held, s._readers, s._stack()) == ([], ({}, {}), [])
        assert "rcu_read_unlock" in python_functions(pylockdep.rcu_read_unlock)  # not inside one
    assert [r.kind for r in v.reports] == ["bad_unlock_balance", "bad_unlock_balance"]


# -- completion maps of thread-pool work (pylockdep._waits) ----------------------------------------


def work_maps(workers: int, name: str) -> tuple[_waits._PoolMap, _waits._WorkMap]:
    """The map of a pool of ``workers`` and a work item's, as the pool and a ``submit()`` make them."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers)  # no thread until a submit()
    pool = _waits._PoolMap(key_for(f"(wq_completion){name}", COMPLETION, None), executor)
    return pool, _waits._WorkMap(key_for(f"(work_completion){name}", COMPLETION, None), pool)


def held_state(t: _task.Task, *maps: _waits.CompletionMap) -> tuple:
    return [tuple(entry) for entry in t.held], t.key, [m._owner for m in maps]


@needs_c
def test_work_maps_on_a_known_chain_are_held_released_and_touched_in_c():
    pool, work = work_maps(4, "fp_maps")
    other = _waits._WorkMap(work._key, pool)  # another item submitted by the same line
    hold, release, touch = _waits._hold_maps, _waits._release_maps, _waits._touch_work
    frame = (lambda: sys._getframe())()  # a frame that stays at one instruction
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        t = v.task()
        assert "_acquire" in python_functions(lambda: hold((pool, work), frame))  # new chains: Python
        held = held_state(t, pool, work)
        assert python_functions(lambda: release((work, pool))) == []
        assert held_state(t, pool, work) == ([], CHAIN_ROOT, [None, None])
        assert python_functions(lambda: hold((pool, work), frame)) == []
        assert held_state(t, pool, work) == held  # the entries Python pushed, field for field
        release((work, pool))
        assert "_touch" in python_functions(lambda: touch(work, frame))  # a new chain: Python
        assert python_functions(lambda: touch(work, frame)) == []
        hold((other,), frame)
        assert python_functions(lambda: touch(work, frame)) == []  # another item of its class is held
        assert python_functions(lambda: release((other,))) == []
        assert held_state(t, pool, work, other) == ([], CHAIN_ROOT, [None, None, None])
    assert v.reports == []


@needs_c
def test_work_maps_hand_what_they_cannot_do_to_python():
    pool, work = work_maps(4, "fp_maps_slow")
    single_pool, single_work = work_maps(1, "fp_maps_single")
    hold, release, touch = _waits._hold_maps, _waits._release_maps, _waits._touch_work
    frame = sys._getframe()
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        t = v.task()
        for _ in range(2):
            hold((pool, work), frame)
            # out of order: Python takes each map off where it is
            assert "_release" in python_functions(lambda: release((pool, work)))
            assert held_state(t, pool, work) == ([], CHAIN_ROOT, [None, None])
            # a pool of one worker: Python touches the pool's map too (the kernel's ordered workqueue)
            assert python_functions(lambda: touch(single_work, frame)).count("_touch") == 2
        hold((pool,), frame)
        assert python_functions(lambda: touch(work, frame)).count("_touch") == 2  # from inside the pool
        release((pool,))
        for call in (lambda: hold((pool, work), frame), lambda: release((work, pool))):
            t.pending.append(object())  # another thread released a lock for this one
            assert {"_hold_maps", "_release_maps"} & set(python_functions(call))
        assert held_state(t, pool, work) == ([], CHAIN_ROOT, [None, None])
    assert [(r.kind, set(r.classes)) for r in v.reports] == [("recursive", {"(wq_completion)fp_maps_slow"})]


def slots_set(obj) -> set[str]:
    """The names of the slots of ``obj`` that hold a value."""
    return {name for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ()) if hasattr(obj, name)}


@needs_c
def test_thread_pool_tasks_call_no_python_function_of_pylockdep_once_their_sites_are_known():
    """submit(), the work item's construction and run, and result()/exception() of a done future
    run in C (pylockdep._csrc/pool.c) once the submit's line and the chains are known."""
    from concurrent.futures.thread import _WorkItem

    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        methods = (
            concurrent.futures.ThreadPoolExecutor.submit,
            _WorkItem.__init__,
            _WorkItem.run,
            concurrent.futures.Future.result,
            concurrent.futures.Future.exception,
        )
        assert {type(m).__name__ for m in methods} == {"PoolMethod"}
        started, release = threading.Event(), threading.Event()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)  # one worker: waits touch the pool too
        pool.submit(lambda: (started.set(), release.wait()))
        started.wait()  # its worker is busy: what is submitted now stays queued
        for _ in range(3):  # as workers that finished three items leave it: submit() starts no other worker
            pool._idle_semaphore.release()

        submitted = []

        def submit():  # its own line: a helper that returned the future would be its caller's
            submitted.append(pool.submit(int, "7"))

        try:
            python_functions(submit)  # learns the line, and the stack that makes its Future's lock
            assert python_functions(submit) == []
            items = [pool._work_queue.get_nowait() for _ in range(2)]
            idle = items[1]._lockdep_work  # the pool's idle map of the line's work, found in C
            assert items[0]._lockdep_work is idle and items[1].future._lockdep_work is idle
            assert idle is idle.pool.idle[idle._key] and (idle._owner, idle.runner) == (None, None)
            python_functions(items[0].run)  # run here, as the worker would: learns the chain
            future = items[1].future
            own = []
            future.add_done_callback(lambda f: own.extend((f._lockdep_work, f._lockdep_work._owner)))  # in the run
            assert python_functions(items[1].run) == []
            assert v.task().held == []
            # made in C: the slots _WorkMap.__init__ sets, no more, no fewer; the runner, this thread
            assert slots_set(own[0]) == slots_set(_waits._WorkMap(idle._key, idle.pool, 1))
            assert (own[1], own[0].runner, own[0].pool) == (v.task(), threading.get_ident(), idle.pool)
            assert future._lockdep_work is idle
            assert future.result() == 7
            assert python_functions(future.result) == []
            assert python_functions(future.exception) == []
            other = concurrent.futures.Future()  # no pool's: a process pool's, a user's
            other.set_result(8)
            assert other.result() == 8 and other.exception() is None
            assert python_functions(other.result) == [] and python_functions(other.exception) == []
            with pytest.raises(concurrent.futures.TimeoutError):
                concurrent.futures.Future().result(0)  # not done: the original's own timeout
        finally:
            release.set()
            pool.shutdown()
    assert v.reports == []


@needs_c
def test_asyncio_task_steps_after_the_first_run_in_c_with_the_tasks_holder():
    """Handle._run is a PoolMethod of role step (pylockdep/_csrc/step.c): a task's steps after its first, while
    it holds nothing but its work's map, call no Python function of pylockdep's, and run with the
    task's holder current and running it; what the task ran in between (a thread lock's block, on
    a known chain) was the holder's."""
    import asyncio

    from pylockdep import _asyncio

    package = os.path.dirname(pylockdep.__file__)
    calls: list[str] = []
    seen: list[object] = []

    def profile(frame, event, arg):
        if event == "call" and called_by_the_operation(frame, package):
            calls.append(frame.f_code.co_name)

    def in_python_step() -> bool:
        frame = sys._getframe()
        while frame is not None and frame.f_code is not _asyncio._step.__code__:
            frame = frame.f_back
        return frame is not None

    async def worker(lock):
        holder = v.task()
        with lock:  # learns the chain
            pass
        await asyncio.sleep(0)  # the first step (Python's: it made the holder) ends here
        seen.append(in_python_step())
        sys.setprofile(profile)
        with lock:
            seen.append((v.local.task is holder, holder.running is asyncio.current_task(), holder.held[-1][H_LOCK]))
        await asyncio.sleep(0)  # the end of a step and the start of the next, both in C
        sys.setprofile(None)
        seen.append(in_python_step())
        return holder

    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        assert type(asyncio.events.Handle._run).__name__ == "PoolMethod"
        lock = threading.Lock()
        outer = v.task()
        holder = asyncio.run(worker(lock))
        assert v.local.task is outer and holder.running is None
    assert seen == [False, (True, True, lock), False]
    assert calls == []
    assert v.reports == []


SUBINTERPRETERS = """
import importlib
try:
    interpreters = importlib.import_module("_interpreters")
except ImportError:
    interpreters = importlib.import_module("_xxsubinterpreters")
from pylockdep import _fastpath
code = '''
import pylockdep
from pylockdep import _fastpath
a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")
with pylockdep.validate(raise_on_report=False, stream=None) as v:
    with a, b:
        pass
    with b, a:
        pass
print("sub", [r.kind for r in v.reports], _fastpath.ACCELERATED, flush=True)
'''
for _ in range(3):
    i = interpreters.create()
    interpreters.run_string(i, code)
    interpreters.destroy(i)
print("main", _fastpath.ACCELERATED)
"""


def test_subinterpreters_run_pylockdep_in_pure_python_and_the_main_one_keeps_its_c_module():
    """The C module keeps one state for the process: a second interpreter's pylockdep made its
    second import fail (too many classes for the C module's table)."""
    done = subprocess.run([sys.executable, "-c", SUBINTERPRETERS], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["sub ['circular'] False"] * 3 + [f"main {not PURE}"], done.stderr
