"""The wait-context matrix of the kernel's ``lib/locking-selftest.c`` ("wait context tests").

The selftests run it with CONFIG_PROVE_RAW_LOCK_NESTING: the inner lock (or RCU read side) is taken
inside the outer context, and the verdict is lockdep's alone (``[ BUG: Invalid wait context ]`` or
silence).  The matrix is the same on a normal and on a PREEMPT_RT kernel, so it runs on both.

Where a sleeping lock is taken in atomic context the scheduler's ``might_sleep()`` check fires as
well (the kernel prints both splats); each cell checks that too, and that "ok" cells stay silent.
The softirq row is a real softirq, with hard interrupts on (the selftest's ``SOFTIRQ_ENTER()`` also
disables them, which changes nothing for lockdep but would make PREEMPT_RT's sleeping spinlock_t
fail ``might_sleep()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

import pylockdep

INNER = ("rcu", "raw", "spin", "mutex")


@contextmanager
def _rcu_bh() -> Iterator[None]:
    """``rcu_read_lock_bh()``: bottom halves off and an RCU read side whose map has RCU's wait types."""
    pylockdep.local_bh_disable()
    try:
        with pylockdep.rcu_read():
            yield
    finally:
        pylockdep.local_bh_enable()


class Locks:
    """The selftest's outer locks (``*_A``) and inner locks (``*_B``), one class each."""

    def __init__(self) -> None:
        self.raw = {x: pylockdep.RawSpinLock(f"raw_lock_{x}") for x in "AB"}
        self.spin = {x: pylockdep.SpinLock(f"lock_{x}") for x in "AB"}
        self.mutex = {x: pylockdep.Mutex(f"mutex_{x}") for x in "AB"}

    def inner(self, kind: str) -> AbstractContextManager:
        """The inner context of a cell: an RCU read side or one of the ``*_B`` locks."""
        if kind == "rcu":
            return pylockdep.rcu_read()
        return {"raw": self.raw, "spin": self.spin, "mutex": self.mutex}[kind]["B"]


# row label -> (how to enter the outer context, class names it holds, verdict per inner column)
ROWS: dict[str, tuple[Callable[[Locks], AbstractContextManager], tuple[str, ...], str]] = {
    "in hardirq context": (lambda lk: pylockdep.hardirq(threaded=True), (), "ok ok ok F"),
    "in hardirq context (not threaded)": (lambda lk: pylockdep.hardirq(), (), "ok ok F F"),
    "in softirq context": (lambda lk: pylockdep.softirq(), (), "ok ok ok F"),
    "in RCU context": (lambda lk: pylockdep.rcu_read(), ("rcu_read_lock",), "ok ok ok F"),
    "in RCU-bh context": (lambda lk: _rcu_bh(), ("rcu_read_lock",), "ok ok ok F"),
    "in RCU-sched context": (lambda lk: pylockdep.rcu_read_sched(), ("rcu_read_lock_sched",), "ok ok F F"),
    "in RAW_SPINLOCK context": (lambda lk: lk.raw["A"], ("raw_lock_A",), "ok ok F F"),
    "in SPINLOCK context": (lambda lk: lk.spin["A"], ("lock_A",), "ok ok ok F"),
    "in MUTEX context": (lambda lk: lk.mutex["A"], ("mutex_A",), "ok ok ok ok"),
}

# Outer contexts that are atomic (a sleeping lock inside them also fails might_sleep()) on each kernel.
_ATOMIC = {
    False: {
        "in hardirq context",
        "in hardirq context (not threaded)",
        "in softirq context",
        "in RCU context",
        "in RCU-bh context",
        "in RCU-sched context",
        "in RAW_SPINLOCK context",
        "in SPINLOCK context",
    },
    # On PREEMPT_RT: real hardirqs and raw spinlocks; the rest are RCU read sides (threaded handlers and
    # softirqs run with bottom halves disabled, a spinlock_t holder is an RCU reader), which only
    # a sleeping lock that does not expect that RCU nesting (a mutex) trips over.
    True: {"in hardirq context (not threaded)", "in RCU-sched context", "in RAW_SPINLOCK context"},
}
_RCU_READER_ON_RT = {
    "in hardirq context",
    "in softirq context",
    "in RCU context",
    "in RCU-bh context",
    "in SPINLOCK context",
}

CELLS = [(row, inner, rt) for row in ROWS for inner in INNER for rt in (False, True)]
_INNER_CLASS = {"rcu": "rcu_read_lock", "raw": "raw_lock_B", "spin": "lock_B", "mutex": "mutex_B"}
_CONTEXT_VALUE = {"in hardirq context": 3, "in hardirq context (not threaded)": 2, "in softirq context": 3}


def _expected_kinds(row: str, inner: str, rt: bool) -> list[str]:
    verdict = ROWS[row][2].split()[INNER.index(inner)]
    sleeps = (
        inner == "mutex"
        and (row in _ATOMIC[rt] or (rt and row in _RCU_READER_ON_RT))
        or (inner == "spin" and rt and row in _ATOMIC[rt])
    )
    if verdict == "ok":
        assert not sleeps
        return []
    # A mutex checks might_sleep() before lockdep; PREEMPT_RT's spinlock_t after it.
    if inner == "mutex":
        return ["sleep_in_atomic", "invalid_wait_context"] if sleeps else ["invalid_wait_context"]
    return ["invalid_wait_context", "sleep_in_atomic"] if sleeps else ["invalid_wait_context"]


@pytest.mark.parametrize(
    ("row", "inner", "rt"), CELLS, ids=[f"{row}-{inner}-{'rt' if rt else 'nort'}" for row, inner, rt in CELLS]
)
def test_wait_context_matrix(row: str, inner: str, rt: bool) -> None:
    enter, held, _ = ROWS[row]
    locks = Locks()
    with pylockdep.validate(preempt_rt=rt, prove_raw_lock_nesting=True, raise_on_report=False) as v:
        with enter(locks), locks.inner(inner):
            pass
    expected = _expected_kinds(row, inner, rt)
    assert [r.kind for r in v.reports] == expected
    if not expected:
        return
    (report,) = (r for r in v.reports if r.kind == "invalid_wait_context")
    assert report.classes == held + (_INNER_CLASS[inner],)
    assert report.title == "[ BUG: Invalid wait context ]"
    lines = report.text.splitlines()
    context = _CONTEXT_VALUE.get(row, 5)
    assert lines[lines.index("other info that might help us debug this:") + 1] == f"context-{{{context}:{context}}}"


def test_wait_types_printed_with_and_without_raw_nesting() -> None:
    """``-{outer:inner}``: with raw-lock nesting spinlock_t is CONFIG (3) and a mutex SLEEP (4);
    without it CONFIG collapses onto SPIN (2) and SLEEP is 3, so only sleeping-in-spinning fails."""
    locks = Locks()
    for nesting, spin, mutex, raw_spin_ok in ((True, "{3:3}", "{4:4}", False), (False, "{2:2}", "{3:3}", True)):
        with pylockdep.validate(prove_raw_lock_nesting=nesting, raise_on_report=False) as v:
            with locks.raw["A"], locks.spin["B"]:
                pass
            with locks.spin["A"], locks.mutex["B"]:
                pass
        kinds = [r.kind for r in v.reports if r.kind == "invalid_wait_context"]
        assert len(kinds) == (1 if raw_spin_ok else 2)
        text = v.reports[-1].text
        assert f"(lock_A){{+.+.}}-{spin}" in text
        assert f"(mutex_B){{....}}-{mutex}" in text
