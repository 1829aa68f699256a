"""The calling thread's execution context: interrupts, bottom halves, preemption, sleeping.

These change the per-thread counters lockdep and the scheduler read (see :class:`Task`) and run
the checks that belong to context changes: re-enabling interrupts marks the held locks as taken
with interrupts on, and ``might_sleep()`` is the scheduler's atomicity check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import Any

from . import _checks
from ._classes import ENABLED_HARDIRQ, ENABLED_HARDIRQ_READ, ENABLED_SOFTIRQ, ENABLED_SOFTIRQ_READ, LockKey
from ._frames import Site, caller_site
from ._held import H_LOCK
from ._locktypes import LockType
from ._signals import critical, deferred, run_deferred, run_deferred_undoing
from ._task import Task
from ._validator import Validator, active


def _here() -> tuple[Validator, Task]:
    v = active.validator
    return v, v.task()


def _imbalance(v: Validator, t: Task, call: str, detail: str) -> None:
    """Report a context call that has nothing to undo (or is not allowed here); change nothing."""
    v.run_check(t, _checks.check_context_call, call, detail, caller_site())


class _Between:
    """A with-block that runs ``enter()`` before and ``leave()`` after, however it ends.

    A class rather than a generator: these blocks sit on paths a program takes very often.
    """

    __slots__ = ("_enter", "_leave")

    def __init__(self, enter: Callable[[], None], leave: Callable[[], None]) -> None:
        self._enter = enter
        self._leave = leave

    @critical  # a signal handler that comes while the context changes runs once it has
    def __enter__(self) -> None:
        self._enter()
        if deferred:
            run_deferred_undoing(self._leave)

    @critical
    def __exit__(self, *exc: object) -> None:
        try:
            self._leave()
        finally:
            if deferred:
                run_deferred()


def _mark_held(v: Validator, t: Task, write_bit: int, read_bit: int) -> None:
    """Interrupts are being enabled: every held validated lock is now held with them on.  Only
    when one of them is not marked so yet does marking take the graph lock."""
    if t.held and _checks.held_unmarked(t, write_bit, read_bit):
        v.run_check(t, _checks.mark_held_locks, write_bit, read_bit)


# -- irq event stamps: where interrupts were last turned on and off -----------------------------
# ``site`` is the caller's site when the caller knows it (a lock section has its frame at hand);
# None looks it up (a frame walk), only when the state really changes.


def _hardirqs_off(t: Task, site: Site | None) -> None:
    if not t.irqs_off:
        trace = t.irqtrace
        trace.events += 1
        trace.hardirq_disable_event, trace.hardirq_disable_site = trace.events, site or caller_site()
        t.irqs_off = True


def _hardirqs_on(t: Task, site: Site | None) -> None:
    if t.irqs_off:
        trace = t.irqtrace
        trace.events += 1
        trace.hardirq_enable_event, trace.hardirq_enable_site = trace.events, site or caller_site()
        t.irqs_off = False


def _softirqs_changed(t: Task, was_enabled: bool, site: Site | None) -> None:
    """Record a softirq on/off transition after ``bh``/``softirq`` changed."""
    enabled = _softirqs_enabled(t)
    if enabled != was_enabled:
        trace = t.irqtrace
        trace.events += 1
        if enabled:
            trace.softirq_enable_event, trace.softirq_enable_site = trace.events, site or caller_site()
        else:
            trace.softirq_disable_event, trace.softirq_disable_site = trace.events, site or caller_site()


def _softirqs_enabled(t: Task) -> bool:
    return not (t.bh or t.softirq)


# -- hard interrupts ---------------------------------------------------------------------------


def local_irq_disable() -> None:
    """Disable hard interrupts on this (simulated) CPU."""
    _irq_disable(None)


def _irq_disable(site: Site | None) -> None:
    v, t = _here()
    if not t.irqs_off:
        _hardirqs_off(t, site)
        t.update_ctx()


def local_irq_enable() -> None:
    """Enable hard interrupts; the locks held now become taken-with-irqs-enabled.

    Not allowed inside a hard interrupt handler (the handler returns with interrupts off): that is
    reported as a context imbalance and changes nothing.
    """
    _irq_enable(None)


def _irq_enable(site: Site | None) -> None:
    v, t = _here()
    if t.hardirq:
        _imbalance(
            v,
            t,
            "local_irq_enable() in hardirq context",
            "but interrupts stay disabled until the hardirq handler returns!",
        )
        return
    if not t.irqs_off:
        return
    # As lockdep does, the held locks are marked before the irq state flips (a splat says HE0).
    _mark_held(v, t, ENABLED_HARDIRQ, ENABLED_HARDIRQ_READ)
    if _softirqs_enabled(t):
        _mark_held(v, t, ENABLED_SOFTIRQ, ENABLED_SOFTIRQ_READ)
    _hardirqs_on(t, site)
    t.update_ctx()


class _IrqsSaved:
    """``local_irq_save()`` ... ``local_irq_restore()`` around a with-block (see
    :func:`irq_save_for`: one object may be entered again inside its own block, or by many
    threads at once)."""

    __slots__ = ()

    @critical  # as _Between's
    def __enter__(self) -> None:
        irq_save_for(None, None, self)
        if deferred:
            run_deferred_undoing(irq_restore_for, self, None)

    @critical
    def __exit__(self, *exc: object) -> None:
        try:
            irq_restore_for(self, None)
        finally:
            if deferred:
                run_deferred()


def irqs_disabled() -> AbstractContextManager[None]:
    """``local_irq_save()`` ... ``local_irq_restore()``: interrupts off for the block."""
    return _IrqsSaved()


def irq_save_for(ltype: LockType | None, site: Site | None, block: object) -> None:
    """The irq half of ``spin_lock_irqsave`` for a lock of type ``ltype`` (None: no lock) at
    ``site`` (None: the caller's), entering the with-block ``block``: hard interrupts off, and
    whether they were on kept on the holder's stack of saved states (:attr:`Task.irq_saves`),
    as the kernel keeps its ``flags`` in the caller's frame, not in anything shared: a block
    object entered again inside itself, or by several threads at once, restores for each exit
    what its own entry found.  A no-op for ``spinlock_t`` on PREEMPT_RT, which saves "off"."""
    v = active.validator
    t = v.task()
    if v.preempt_rt and ltype is not None and ltype.sleeps_on_rt:
        was_on = False
    else:
        was_on = not t.irqs_off
        _irq_disable(site)
    if t.irq_saves is None:
        t.irq_saves = []
    t.irq_saves.append((block, was_on))


def irq_restore_for(block: object, site: Site | None) -> None:
    """Undo the holder's most recent :func:`irq_save_for` of ``block``, at ``site`` (None: the
    caller's): hard interrupts back on if they were on at that entry.  Nothing when the holder
    has no entry of ``block`` (a block left without being entered is left as if entered with
    interrupts off)."""
    saves = active.validator.task().irq_saves or []
    for i in range(len(saves) - 1, -1, -1):
        if saves[i][0] is block:
            if saves.pop(i)[1]:
                _irq_enable(site)
            return


# -- bottom halves -----------------------------------------------------------------------------


def local_bh_disable() -> None:
    """Disable softirqs (bottom halves) on this CPU."""
    bh_disable_at(None)


def bh_disable_at(site: Site | None) -> None:
    """:func:`local_bh_disable` called at ``site`` (None: the caller's)."""
    v, t = _here()
    if not v.preempt_rt:
        _note_atomic(v, t, site)
    was_enabled = _softirqs_enabled(t)
    t.bh += 1
    _softirqs_changed(t, was_enabled, site)
    t.update_ctx()


def local_bh_enable() -> None:
    """Re-enable softirqs; with hard irqs on, held locks become taken-with-softirqs-enabled."""
    bh_enable_at(None)


def bh_enable_at(site: Site | None) -> None:
    """:func:`local_bh_enable` called at ``site`` (None: the caller's)."""
    v, t = _here()
    if not t.bh:
        _imbalance(v, t, "unbalanced local_bh_enable()", "but bottom halves are not disabled!")
        return
    was_enabled = _softirqs_enabled(t)
    t.bh -= 1
    _softirqs_changed(t, was_enabled, site)
    t.update_ctx()
    # Unlike hard irqs, softirqs count as enabled before the held locks are marked.
    if _softirqs_enabled(t) and not t.irqs_off:
        _mark_held(v, t, ENABLED_SOFTIRQ, ENABLED_SOFTIRQ_READ)


# -- preemption --------------------------------------------------------------------------------


def _note_atomic(v: Validator, t: Task, site: Site | None) -> None:
    """Remember where an atomic section that is not a spinning lock starts ('Preemption disabled at:'):
    ``site``, or the caller's when None.

    Called just before the counter that makes the thread atomic goes up.
    """
    if not t.nonlock_atomic(v.preempt_rt):
        t.atomic_site = site or caller_site()
        t.atomic_depth = len(t.held)


def preempt_disable() -> None:
    """Disable preemption: nothing that sleeps is allowed until ``preempt_enable()``."""
    v, t = _here()
    _note_atomic(v, t, None)
    t.preempt += 1
    t.update_ctx()


def preempt_enable() -> None:
    """Re-enable preemption."""
    v, t = _here()
    if not t.preempt:
        _imbalance(v, t, "unbalanced preempt_enable()", "but preemption is not disabled!")
        return
    t.preempt -= 1
    t.update_ctx()


def preempt_disabled() -> AbstractContextManager[None]:
    """Preemption disabled for the block."""
    return _Between(preempt_disable, preempt_enable)


# -- interrupt handlers ------------------------------------------------------------------------


class _Handler:
    """The with-block of :func:`hardirq` or :func:`softirq` (``name``): each entry runs a new
    ``run()`` block.  Entering it while it runs, or leaving it when it does not, is a RuntimeError
    that changes nothing (a generator's block would fail inside :mod:`contextlib`)."""

    __slots__ = ("_name", "_run", "_running")

    def __init__(self, name: str, run: Callable[[], AbstractContextManager[None]]) -> None:
        self._name = name
        self._run = run
        self._running: AbstractContextManager[None] | None = None

    @critical  # a signal handler that comes while the handler's context is set up runs once it is
    def __enter__(self) -> None:
        if self._running is not None:
            raise RuntimeError(f"{self._name}(): this handler block is already running")
        running = self._run()
        running.__enter__()
        self._running = running
        if deferred:
            run_deferred_undoing(self.__exit__, None, None, None)

    @critical
    def __exit__(self, *exc: Any) -> bool | None:
        try:
            running = self._running
            if running is None:
                raise RuntimeError(f"{self._name}(): this handler block was left without being entered")
            self._running = None
            return running.__exit__(*exc)
        finally:
            if deferred:
                run_deferred()


def hardirq(threaded: bool = False) -> AbstractContextManager[None]:
    """Run the block as a hard interrupt handler.

    A true hard interrupt (an IPI, a timer) runs with interrupts off and only really spinning
    locks are valid in it.  ``threaded=True`` is a device handler that PREEMPT_RT runs in a
    thread: ``spinlock_t`` is allowed; on PREEMPT_RT it is preemptible, with interrupts on and,
    as the kernel's forced-threaded handlers run, with bottom halves disabled.  TypeError when
    ``threaded`` is not a bool.
    """
    if not isinstance(threaded, bool):
        raise TypeError(f"hardirq(): threaded must be a bool, not {type(threaded).__name__}")
    return _Handler("hardirq", partial(_hardirq, threaded))


@contextmanager
@critical  # its setting up and putting back: a signal handler that comes then waits (see _Handler)
def _hardirq(threaded: bool) -> Iterator[None]:
    """One run of a :func:`hardirq` block."""
    v, t = _here()
    as_thread = threaded and v.preempt_rt
    was_off = t.irqs_off
    if as_thread:
        local_bh_disable()
    else:
        _note_atomic(v, t, None)
        _hardirqs_off(t, None)
        t.hardirq += 1
    if threaded:
        t.hardirq_threaded += 1
    t.update_ctx()
    try:
        yield
    finally:
        if threaded:
            t.hardirq_threaded -= 1
        if as_thread:
            local_bh_enable()
        else:
            t.hardirq -= 1
            if not was_off:
                _hardirqs_on(t, None)
        t.update_ctx()  # a handler held back here: run by _Handler.__exit__, which called this


def softirq() -> AbstractContextManager[None]:
    """Run the block as a softirq handler: hard interrupts stay enabled, bottom halves are off."""
    return _Handler("softirq", _softirq)


@contextmanager
@critical  # as _hardirq
def _softirq() -> Iterator[None]:
    """One run of a :func:`softirq` block."""
    v, t = _here()
    if not v.preempt_rt:
        _note_atomic(v, t, None)
    was_enabled = _softirqs_enabled(t)
    t.softirq += 1
    _softirqs_changed(t, was_enabled, None)
    t.update_ctx()
    try:
        yield
    finally:
        t.softirq -= 1
        _softirqs_changed(t, False, None)
        t.update_ctx()  # a handler held back here: run by _Handler.__exit__, which called this


def might_sleep() -> None:
    """Check that the caller may sleep here: preemptible, interrupts on, outside RCU readers."""
    v, t = _here()
    v.run_check(t, _checks.check_might_sleep, caller_site(), ["__might_sleep", "might_sleep"], 0)


def lockdep_assert_held(lock: object) -> None:
    """Report ``assert_held`` unless this thread holds ``lock``."""
    v, t = _here()
    if v.off or t.busy or any(entry[H_LOCK] is lock for entry in t.held):
        return
    if not isinstance(getattr(lock, "_key", None), LockKey):  # the lock types themselves included
        raise TypeError(f"lockdep_assert_held() needs a pylockdep lock, not {type(lock).__name__}")
    v.run_check(t, _checks.check_assert_held, lock, caller_site())
