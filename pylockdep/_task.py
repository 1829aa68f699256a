"""Per-thread state: the held-lock stack and the execution context.

A :class:`Task` is one thread as one validator sees it (the kernel's ``task_struct`` fields that
lockdep and the scheduler's atomicity checks read).  Only its own thread changes it, except for
:attr:`Task.foreign_releases`, which other threads may append to.

Held locks are plain tuples, indexed by the ``H_*`` constants, because they are built on every
acquisition.  ``pylockdep/_speedups.c`` builds and reads them too (and reads the Task's slots by
name): keep its ``H_*`` list in step.
"""

from __future__ import annotations

import threading
from typing import Any

from ._frames import Site, line_at

# Fields of a held-lock tuple.
H_LOCK = 0  # the lock instance
H_CLASS = 1  # its LockClass
H_READ = 2  # 0 exclusive, 1 non-recursive reader, 2 recursive reader
H_TRYLOCK = 3  # taken by a trylock
H_CODE = 4  # code object where it was taken
H_LASTI = 5  # (instruction offset in the code: see held_site)
H_PREV_KEY = 6  # chain key before this lock was pushed
H_IRQ = 7  # irq context it was taken in: 2 * in hardirq + in softirq
H_SPIN = 8  # whether taking it disabled preemption
H_CTX = 9  # context signature when it was taken

# Ways of taking a lock, mixed into the chain key (LockClass.variants).
VARIANT_WRITE = 0
VARIANT_READ = 1
VARIANT_RECURSIVE_READ = 2
VARIANT_TRY = 3  # + read mode
VARIANT_SYNC = 6

CHAIN_ROOT = 0x5EED


def held_site(entry: tuple) -> Site:
    """Where a held lock was taken, as (code, line)."""
    return (entry[H_CODE], line_at(entry[H_CODE], entry[H_LASTI]))


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
    """One thread's locks and context, for one validator.

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
        "thread",
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

    def __init__(self, thread: threading.Thread) -> None:
        self.held: list[tuple] = []
        self.key = CHAIN_ROOT
        self.name = thread.name
        self.ident = thread.ident or 0
        self.thread = thread
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
        self.foreign_releases: list[Any] = []
        self.waiting: Any = None
        self.busy = False
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
