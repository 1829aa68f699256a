"""``might_sleep()`` in every execution context, on a normal and on a PREEMPT_RT kernel.

The scheduler's check fires unless the preempt count is zero, interrupts are on and the RCU read-side
depth is what the caller expects (zero for ``might_sleep()`` and sleeping locks; PREEMPT_RT's
``spinlock_t`` expects the nesting it brings).  On PREEMPT_RT a ``spinlock_t`` holder, a softirq, a
bottom-half section and a threaded irq handler are preemptible but inside an RCU read side.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import pytest

import pylockdep


@dataclass(frozen=True)
class Atomic:
    """What the splat says: ``in_atomic()``, ``irqs_disabled()``, preempt count (hex) and RCU depth."""

    in_atomic: int
    irqs_disabled: int
    preempt_count: str
    rcu_depth: int


class Locks:
    def __init__(self) -> None:
        self.raw = pylockdep.RawSpinLock("raw_lock")
        self.spin = pylockdep.SpinLock("spin_lock")
        self.mutex = pylockdep.Mutex("mutex")


RCU_READER = Atomic(0, 0, "0", 1)
# context: (how to enter it, verdict on a normal kernel, verdict on PREEMPT_RT); None = may sleep.
CONTEXTS: dict[str, tuple[Callable[[Locks], AbstractContextManager], Atomic | None, Atomic | None]] = {
    "process": (lambda lk: nullcontext(), None, None),
    "preempt_disabled": (lambda lk: pylockdep.preempt_disabled(), Atomic(1, 0, "1", 0), Atomic(1, 0, "1", 0)),
    "raw_spinlock": (lambda lk: lk.raw, Atomic(1, 0, "1", 0), Atomic(1, 0, "1", 0)),
    "spinlock": (lambda lk: lk.spin, Atomic(1, 0, "1", 0), RCU_READER),
    "spin_lock_irqsave": (lambda lk: lk.spin.irqsave(), Atomic(1, 1, "1", 0), RCU_READER),
    "spin_lock_bh": (lambda lk: lk.spin.bh(), Atomic(1, 0, "201", 0), Atomic(0, 0, "0", 2)),
    "irqs_disabled": (lambda lk: pylockdep.irqs_disabled(), Atomic(0, 1, "0", 0), Atomic(0, 1, "0", 0)),
    "hardirq": (lambda lk: pylockdep.hardirq(), Atomic(1, 1, "10000", 0), Atomic(1, 1, "10000", 0)),
    "hardirq_threaded": (lambda lk: pylockdep.hardirq(threaded=True), Atomic(1, 1, "10000", 0), RCU_READER),
    "softirq": (lambda lk: pylockdep.softirq(), Atomic(1, 0, "100", 0), RCU_READER),
    "bh_disabled": (lambda lk: _bh_disabled(), Atomic(1, 0, "200", 0), RCU_READER),
    "rcu_read": (lambda lk: pylockdep.rcu_read(), RCU_READER, RCU_READER),
}


class _bh_disabled:  # noqa: N801 - a context manager, like the API's
    def __enter__(self) -> None:
        pylockdep.local_bh_disable()

    def __exit__(self, *exc: object) -> None:
        pylockdep.local_bh_enable()


CASES = [(name, rt) for name in CONTEXTS for rt in (False, True)]


@pytest.mark.parametrize(("name", "rt"), CASES, ids=[f"{n}-{'rt' if rt else 'nort'}" for n, rt in CASES])
def test_might_sleep_in_context(name: str, rt: bool) -> None:
    enter, normal, preempt_rt = CONTEXTS[name]
    expected = preempt_rt if rt else normal
    locks = Locks()
    with pylockdep.validate(preempt_rt=rt, raise_on_report=False) as v:
        with enter(locks):
            line = sys._getframe().f_lineno  # the might_sleep() call; the context began a line before
            pylockdep.might_sleep()
    if expected is None:
        assert v.reports == []
        return
    (report,) = v.reports
    assert report.kind == "sleep_in_atomic"
    lines = report.text.splitlines()
    assert lines[0].startswith("BUG: sleeping function called from invalid context at ")
    assert lines[0].endswith(f"test_might_sleep.py:{line + 1}")
    assert report.title == lines[0]
    assert lines[1].startswith(
        f"in_atomic(): {expected.in_atomic}, irqs_disabled(): {expected.irqs_disabled}, non_block: 0, pid: "
    )
    assert lines[2] == f"preempt_count: {expected.preempt_count}, expected: 0"
    assert lines[3] == f"RCU nest depth: {expected.rcu_depth}, expected: 0"
    assert ("irq event stamp: " in report.text) == bool(expected.irqs_disabled)
    if expected.in_atomic:
        # The code that made the section atomic: the ``with`` line, or the helper that disabled bottom halves.
        where = (
            "_bh_disabled.__enter__+test_might_sleep.py:"
            if name == "bh_disabled"
            else f"test_might_sleep_in_context+test_might_sleep.py:{line - 1}"
        )
        at = lines.index("Preemption disabled at:")
        assert where in lines[at + 1]
    else:
        assert "Preemption disabled at:" not in lines


@pytest.mark.parametrize("rt", [False, True], ids=["nort", "rt"])
def test_mutex_inside_spinlock_is_reported_on_both_kernels(rt: bool) -> None:
    """On PREEMPT_RT spinlock_t does not disable preemption, but its holder is an RCU reader: a
    mutex inside still may not sleep."""
    locks = Locks()
    with pylockdep.validate(preempt_rt=rt, raise_on_report=False) as v:
        with locks.spin, locks.mutex:
            pass
    sleeps = [r for r in v.reports if r.kind == "sleep_in_atomic"]
    assert len(sleeps) == 1
    assert sleeps[0].classes == ("spin_lock", "mutex")
    text = sleeps[0].text
    if rt:
        assert "in_atomic(): 0, irqs_disabled(): 0," in text
        assert "RCU nest depth: 1, expected: 0" in text
    else:
        assert "in_atomic(): 1, irqs_disabled(): 0," in text
    # lockdep's own verdict on the nesting, independent of the kernel flavour
    assert [r.kind for r in v.reports if r.kind != "sleep_in_atomic"] == ["invalid_wait_context"]


@pytest.mark.parametrize("rt", [False, True], ids=["nort", "rt"])
def test_spinlock_inside_rcu_read_side_is_fine(rt: bool) -> None:
    """PREEMPT_RT's spin_lock() may sleep, but tolerates the RCU nesting it finds (and adds)."""
    locks = Locks()
    inner = pylockdep.SpinLock("spin_lock_2")
    with pylockdep.validate(preempt_rt=rt, raise_on_report=False) as v:
        with pylockdep.rcu_read(), locks.spin:
            pass
        with pylockdep.rcu_read(), locks.spin, inner:
            pass
    assert v.reports == []


def test_spinlock_inside_raw_spinlock_on_rt_is_a_sleep_in_atomic() -> None:
    """The seed bug: a spinlock_t (an rt_mutex on PREEMPT_RT) under a raw_spinlock_t.  The scheduler
    check names the raw lock as where preemption was disabled; lockdep adds the wait-context splat."""
    locks = Locks()
    with pylockdep.validate(preempt_rt=True, raise_on_report=False) as v:
        with locks.raw:
            line = sys._getframe().f_lineno - 1
            with locks.spin:
                pass
    assert [r.kind for r in v.reports] == ["invalid_wait_context", "sleep_in_atomic"]
    lines = v.reports[1].text.splitlines()
    assert lines[1].startswith("in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: ")
    assert lines[2:4] == ["preempt_count: 1, expected: 0", "RCU nest depth: 0, expected: 0"]
    # pylockdep's own line, not the kernel's: the lock whose might_sleep() fired.
    assert lines[4].startswith("pylockdep: the lock being taken is spin_lock, at ")
    assert "1 lock held by " in lines[5]
    at = lines.index("Preemption disabled at:")
    assert lines[at + 1].endswith(
        f"test_spinlock_inside_raw_spinlock_on_rt_is_a_sleep_in_atomic+test_might_sleep.py:{line}"
    )
    assert " rt_spin_lock" in lines  # the call trace starts in the kernel function that slept


def test_spin_lock_irqsave_leaves_irqs_on_under_rt() -> None:
    """``spin_lock_irqsave`` on a PREEMPT_RT spinlock_t does not disable hard interrupts (a
    raw_spinlock_t's still does)."""
    locks = Locks()
    with pylockdep.validate(preempt_rt=True, raise_on_report=False) as v:
        with locks.spin.irqsave():
            spin_irqs_off = pylockdep.current().task().irqs_off
        with locks.raw.irqsave():
            raw_irqs_off = pylockdep.current().task().irqs_off
    assert (spin_irqs_off, raw_irqs_off) == (False, True)
    assert v.reports == []


def test_preemption_site_is_where_the_section_began() -> None:
    """The earliest of preempt_disable() and the first spinning lock still counted starts the section."""
    locks = Locks()
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.preempt_disabled():
            pass
        with locks.raw:  # a later section starting with a lock: not the stale preempt_disable() site
            raw_line = sys._getframe().f_lineno - 1
            with pylockdep.preempt_disabled():
                pylockdep.might_sleep()
    (report,) = v.reports
    lines = report.text.splitlines()
    assert lines[lines.index("Preemption disabled at:") + 1].endswith(f"test_might_sleep.py:{raw_line}")
    assert "preempt_count: 2, expected: 0" in lines
