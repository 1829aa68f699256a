"""The calling thread's execution context: interrupts, bottom halves, preemption, sleeping.

These change the per-thread counters lockdep and the scheduler read (see :class:`Task`) and run
the checks that belong to context changes: re-enabling interrupts marks the held locks as taken
with interrupts on, and ``might_sleep()`` is the scheduler's atomicity check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import _checks, _splat
from ._classes import ENABLED_HARDIRQ, ENABLED_HARDIRQ_READ, ENABLED_SOFTIRQ, ENABLED_SOFTIRQ_READ
from ._frames import Site, caller_site
from ._locktypes import LockType
from ._task import H_CLASS, H_LOCK, H_READ, Task
from ._validator import Validator, active


def _here() -> tuple[Validator, Task]:
    v = active.validator
    return v, v.task()


def _imbalance(v: Validator, t: Task, what: str) -> None:
    site = caller_site()
    v.report_now("context_imbalance", lambda task: _splat.context_imbalance(v, task, what, site), (),
                 site=site, dedupe=(what, site))


def _mark_held(v: Validator, t: Task, write_bit: int, read_bit: int, site: Site) -> None:
    """Interrupts were just enabled: every held validated lock is now held with them on."""
    if v.off or t.busy or not t.held:
        return
    with v.graph_lock:
        for entry in list(t.held):
            cls = entry[H_CLASS]
            if cls.validated:
                bit = read_bit if entry[H_READ] else write_bit
                _checks.mark_lock(v, t, cls, entry[H_LOCK], entry[H_READ], bit, site)
    v.flush()


def local_irq_disable() -> None:
    """Disable hard interrupts on this (simulated) CPU."""
    v, t = _here()
    if not t.irqs_off:
        t.irqs_off_site = caller_site()
    t.irqs_off = True
    t.update_ctx()


def local_irq_enable() -> None:
    """Enable hard interrupts; the locks held now become taken-with-irqs-enabled."""
    v, t = _here()
    if t.hardirq:
        _imbalance(v, t, "local_irq_enable() in hardirq context")
        return
    was_off = t.irqs_off
    t.irqs_off = False
    t.update_ctx()
    if was_off:
        site = caller_site()
        _mark_held(v, t, ENABLED_HARDIRQ, ENABLED_HARDIRQ_READ, site)
        if not (t.bh or t.softirq):
            _mark_held(v, t, ENABLED_SOFTIRQ, ENABLED_SOFTIRQ_READ, site)


@contextmanager
def irqs_disabled() -> Iterator[None]:
    """``local_irq_save()`` ... ``local_irq_restore()``: interrupts off for the block."""
    v, t = _here()
    was_off = t.irqs_off
    local_irq_disable()
    try:
        yield
    finally:
        if not was_off:
            local_irq_enable()


@contextmanager
def irqs_saved_for(ltype: LockType) -> Iterator[None]:
    """The irq half of ``spin_lock_irqsave``: a no-op for ``spinlock_t`` on PREEMPT_RT."""
    v = active.validator
    if v.preempt_rt and ltype.sleeps_on_rt:
        yield
        return
    with irqs_disabled():
        yield


def local_bh_disable() -> None:
    """Disable softirqs (bottom halves) on this CPU."""
    v, t = _here()
    _note_atomic(t)
    t.bh += 1
    t.update_ctx()


def local_bh_enable() -> None:
    """Re-enable softirqs; with hard irqs on, held locks become taken-with-softirqs-enabled."""
    v, t = _here()
    if not t.bh:
        _imbalance(v, t, "local_bh_enable()")
        return
    t.bh -= 1
    t.update_ctx()
    if not t.bh and not t.softirq and not t.irqs_off:
        _mark_held(v, t, ENABLED_SOFTIRQ, ENABLED_SOFTIRQ_READ, caller_site())


@contextmanager
def bh_disabled() -> Iterator[None]:
    """Bottom halves disabled for the block."""
    local_bh_disable()
    try:
        yield
    finally:
        local_bh_enable()


def _note_atomic(t: Task) -> None:
    """Remember where an atomic section starts (for 'Preemption disabled at:')."""
    if not (t.preempt or t.spins or t.hardirq or t.softirq or t.bh):
        t.atomic_site = caller_site()
        t.atomic_depth = len(t.held)


def preempt_disable() -> None:
    """Disable preemption: nothing that sleeps is allowed until ``preempt_enable()``."""
    v, t = _here()
    _note_atomic(t)
    t.preempt += 1
    t.update_ctx()


def preempt_enable() -> None:
    """Re-enable preemption."""
    v, t = _here()
    if not t.preempt:
        _imbalance(v, t, "preempt_enable()")
        return
    t.preempt -= 1
    t.update_ctx()


@contextmanager
def preempt_disabled() -> Iterator[None]:
    """Preemption disabled for the block."""
    preempt_disable()
    try:
        yield
    finally:
        preempt_enable()


@contextmanager
def hardirq(threaded: bool = False) -> Iterator[None]:
    """Run the block as a hard interrupt handler.

    A true hard interrupt (an IPI, a timer) runs with interrupts off and only really spinning
    locks are valid in it.  ``threaded=True`` is a device handler that PREEMPT_RT runs in a
    thread: ``spinlock_t`` is allowed; on PREEMPT_RT it is preemptible, with interrupts on.
    """
    v, t = _here()
    as_thread = threaded and v.preempt_rt
    saved = (t.irqs_off, t.irqs_off_site)
    if not as_thread:
        _note_atomic(t)
        t.hardirq += 1
        t.irqs_off = True
        t.irqs_off_site = caller_site()
    if threaded:
        t.hardirq_threaded += 1
    t.update_ctx()
    try:
        yield
    finally:
        if not as_thread:
            t.hardirq -= 1
            t.irqs_off, t.irqs_off_site = saved
        if threaded:
            t.hardirq_threaded -= 1
        t.update_ctx()


@contextmanager
def softirq() -> Iterator[None]:
    """Run the block as a softirq handler: hard interrupts stay enabled, bottom halves are off."""
    v, t = _here()
    if not v.preempt_rt:
        _note_atomic(t)
    t.softirq += 1
    t.update_ctx()
    try:
        yield
    finally:
        t.softirq -= 1
        t.update_ctx()


def might_sleep() -> None:
    """Check that the caller may sleep here: preemptible, interrupts on, outside RCU readers."""
    v, t = _here()
    if v.off or t.busy:
        return
    site = caller_site()
    with v.graph_lock:
        _checks.check_might_sleep(v, t, site, ["__might_sleep", "might_sleep"], 0)
    v.flush()


def lockdep_assert_held(lock: object) -> None:
    """Report ``assert_held`` unless this thread holds ``lock``."""
    v, t = _here()
    if v.off or t.busy or any(entry[H_LOCK] is lock for entry in t.held):
        return
    key = getattr(lock, "_key", None)
    if key is None:
        raise TypeError(f"lockdep_assert_held() needs a pylockdep lock, not {type(lock).__name__}")
    cls = v.class_for(key)
    site = caller_site()
    v.report_now("assert_held", lambda task: _splat.assert_held(v, task, cls, key.name, site, "is running"),
                 (cls,), site=site, dedupe=(site,))

