"""Holder state: the held-lock stack and the execution context.

A :class:`Task` is one *holder* of locks as one validator sees it (the kernel's ``task_struct``
fields that lockdep and the scheduler's atomicity checks read); :mod:`pylockdep._held` says what a
holder is and owns the entries of the held stack and the operations on it.  Today each Task is a
thread's.  Only the holder itself changes it, except for :attr:`Task.foreign_releases`, which
other threads may append to.  ``pylockdep/_speedups.c`` reads and writes a Task's slots by name.
"""

from __future__ import annotations

from typing import Any

from ._frames import Site
from ._held import CHAIN_ROOT, HeldLock
from ._primitive import LockMap, Primitive


class IrqTrace:
    """When this thread last turned hard and soft interrupts on and off (the kernel's ``irqtrace_events``).

    ``events`` counts every on/off transition; each ``*_event`` is the count at that transition and
    each ``*_site`` where it happened (None: never).
    """

    __slots__ = (
        "events",
        "hardirq_enable_event",
        "hardirq_enable_site",
        "hardirq_disable_event",
        "hardirq_disable_site",
        "softirq_enable_event",
        "softirq_enable_site",
        "softirq_disable_event",
        "softirq_disable_site",
    )

    def __init__(self) -> None:
        self.events = 0
        self.hardirq_enable_event = self.hardirq_disable_event = 0
        self.softirq_enable_event = self.softirq_disable_event = 0
        self.hardirq_enable_site: Site | None = None
        self.hardirq_disable_site: Site | None = None
        self.softirq_enable_site: Site | None = None
        self.softirq_disable_site: Site | None = None


class Task:
    """One holder's locks and context (today always a thread's), for one validator.

    Context counters follow the kernel: ``preempt`` counts preempt_disable() and held spinning
    locks, ``hardirq``/``softirq`` the interrupt handlers being run, ``bh`` local_bh_disable()
    nesting, ``rcu`` RCU read-side nesting.  ``irqs_off`` is the hard-interrupt flag.
    ``ctx`` summarises all of them for the chain cache and changes whenever one does.
    """

    __slots__ = (
        "held",
        "key",
        "ctx",
        "name",
        "ident",
        "preempt",
        "hardirq",
        "hardirq_threaded",
        "softirq",
        "bh",
        "irqs_off",
        "rcu",
        "atomic_site",
        "atomic_depth",
        "irqtrace",
        "foreign_releases",
        "waiting",
        "busy",
        "srcu_reads",
        "spins",
        "irq",
        "__weakref__",
    )

    def __init__(self, name: str, ident: int) -> None:
        """A holder with nothing held, named ``name``; ``ident`` is the thread ident of a thread's
        Task (what a lock's ``_blockers()`` names its holders by)."""
        self.held: list[HeldLock] = []
        self.key = CHAIN_ROOT
        self.name = name
        self.ident = ident
        self.preempt = 0
        self.hardirq = 0
        self.hardirq_threaded = 0
        self.softirq = 0
        self.bh = 0
        self.irqs_off = False
        self.rcu = 0
        self.spins = 0  # held locks that disabled preemption
        self.irq = 0  # 2 * (in a hard interrupt) + (in a softirq), lockdep's irq_context
        self.atomic_site: Site | None = None  # where preempt_disable() went from 0 to 1
        self.atomic_depth = 0  # how many locks were held then
        self.irqtrace = IrqTrace()
        self.foreign_releases: list[LockMap] = []
        self.waiting: tuple[Primitive, int] | None = None  # the lock it waits for, and the mode
        self.busy = 0  # lockdep_recursion: while non-zero, nothing this thread does is validated
        self.srcu_reads: dict[Any, list[int]] = {}
        self.ctx = 0
        self.update_ctx()

    @property
    def comm(self) -> str:
        """``name/ident`` as splats print a task."""
        return f"{self.name}/{self.ident}"

    def update_ctx(self) -> None:
        """Recompute the context signature and irq context after a context counter changed."""
        self.irq = 2 * (self.hardirq > 0) + (self.softirq > 0)
        self.ctx = hash(
            (self.preempt, self.hardirq, self.hardirq_threaded, self.softirq, self.bh, self.irqs_off, self.rcu)
        )

    def in_interrupt(self) -> bool:
        """The kernel's ``in_interrupt()``: hardirq, softirq, or bottom halves disabled."""
        return bool(self.hardirq or self.softirq or self.bh)
