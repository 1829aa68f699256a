"""Holder state: the held-lock stack and the execution context.

A :class:`Task` is one *holder* of locks as one validator sees it (the kernel's ``task_struct``
fields that lockdep and the scheduler's atomicity checks read); :mod:`pylockdep._held` says what a
holder is and owns the entries of the held stack and the operations on it.  Today each Task is a
thread's.  Only the holder itself changes it, except for :attr:`Task.pending`, to which
other threads append the locks they release on its behalf.  The C fast path
(``pylockdep/_csrc/``) reads and writes a Task's slots by name.
"""

from __future__ import annotations

import threading
from operator import attrgetter
from typing import Any

from ._frames import Site
from ._held import CHAIN_ROOT, H_CLASS, H_IRQ, H_LOCK, H_PREV_KEY, H_READ, H_SPIN, HeldLock, _Run, held_site
from ._identity import TaskIdentity
from ._instances import Nearest
from ._locktypes import RCU, RCU_SCHED, SRCU, WAIT_CONFIG, WAIT_MAX, WAIT_SPIN
from ._primitive import LockMap, Primitive

# Units of the kernel's preempt_count(), as might_sleep() prints it.
PREEMPT_OFFSET = 0x1
SOFTIRQ_OFFSET = 0x100  # serving a softirq
SOFTIRQ_DISABLE_OFFSET = 0x200  # per local_bh_disable()
HARDIRQ_OFFSET = 0x10000  # per hard interrupt level


#: A holder's context counters, in the order its context signature hashes them (``ctx``, see
#: :meth:`Task.update_ctx`; the C module hashes the same slots in the same order).  A C getter: what
#: runs a signal handler recomputes the signature with no Python call (see pylockdep._signals).
context_counters = attrgetter(
    "preempt", "hardirq", "hardirq_threaded", "softirq", "bh", "irqs_off", "rcu", "in_signal", "signals_on", "in_gc"
)


def is_main_thread(ident: int) -> bool:
    """Whether ``ident`` is the main thread's, the one that runs Python signal handlers."""
    return ident == threading.main_thread().ident


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


# What segment_waits() has found for a holder that has looked for nothing yet: one tuple for them
# all (a program may have many asyncio tasks, each a holder).
_NO_SEGMENT: tuple[int, int, frozenset[int]] = (CHAIN_ROOT, -1, frozenset())
# What the spins property has counted for a holder that has held nothing yet: nothing spins.
_NO_SPINS = (CHAIN_ROOT, 0)


class Task:
    """One holder's locks and context (today always a thread's), for one validator.

    Context counters follow the kernel: ``preempt`` counts preempt_disable() and held spinning
    locks, ``hardirq``/``softirq`` the interrupt handlers being run, ``bh`` local_bh_disable()
    nesting, ``rcu`` RCU read-side nesting.  ``irqs_off`` is the hard-interrupt flag.
    ``in_signal`` says whether a Python signal handler is running on it (one inside another
    changes nothing the rules read, so is no new context), and ``signals_on`` whether the
    holder runs on the main thread, where handlers interrupt (Python's SIGNAL usage state).
    ``in_gc`` says whether the garbage collector is running the finalizers of what it collects on
    it (the GC usage state; any thread may start a collection).  ``interrupted`` identifies the frame
    that the running signal handler or collection interrupted (its ``id()``, None outside one): what
    lies above it on the stack is the interrupt's own code (see :mod:`pylockdep._guards`).
    ``ctx`` summarises all of them for the chain cache and changes whenever one does.
    """

    __slots__ = (
        "held",
        "key",
        "ctx",
        "name",
        "ident",
        "identity",
        "preempt",
        "hardirq",
        "hardirq_threaded",
        "softirq",
        "bh",
        "irqs_off",
        "irq_saves",
        "rcu",
        "in_signal",
        "signals_on",
        "in_gc",
        "interrupted",
        "atomic_site",
        "atomic_depth",
        "irqtrace",
        "pending",
        "waiting",
        "busy",
        "irq",
        "segment",
        "nearest",
        "replaying",
        "lasti",
        "spin_memo",
        "__weakref__",
    )
    #: Whether holders of this kind come and go by the thousand (asyncio tasks): what they leave
    #: held is reported once per set of classes, not for each.
    by_the_thousand = False

    def __init__(
        self, name: str, ident: int, identity: TaskIdentity | None = None, signals_on: bool | None = None
    ) -> None:
        """A holder with nothing held, named ``name``; ``ident`` is the thread ident of a thread's
        Task (what a lock's ``_blockers()`` names its holders by); ``identity`` the task the thread
        stands for in splats, if the program gave one (:func:`pylockdep.identify_thread`);
        ``signals_on`` whether signal handlers interrupt it (default: ``ident`` is the main thread's)."""
        self.held: list[HeldLock] = []
        self.key = CHAIN_ROOT
        self.name = name
        self.ident = ident
        self.identity = identity
        self.preempt = 0
        self.hardirq = 0
        self.hardirq_threaded = 0
        self.softirq = 0
        self.bh = 0
        self.irqs_off = False
        # (with-block, whether interrupts were on at its entry) of the irqsave() blocks entered,
        # oldest first (see _context.irq_save_for); None until the first
        self.irq_saves: list[tuple[object, bool]] | None = None
        self.rcu = 0
        self.in_signal = False  # a Python signal handler is running (see pylockdep._signals._handle)
        # whether Python signal handlers may interrupt it
        self.signals_on = is_main_thread(ident) if signals_on is None else signals_on
        self.in_gc = False  # a garbage collection runs on it (see pylockdep._collector)
        self.interrupted: int | None = None
        self.irq = 0  # 2 * (in a hard interrupt) + (in a softirq), lockdep's irq_context
        self.atomic_site: Site | None = None  # where preempt_disable() went from 0 to 1
        self.atomic_depth = 0  # how many locks were held then
        self.irqtrace = IrqTrace()
        # Work on the held stack that the slow path does before the holder's next lock operation
        # (pylockdep._held.do_pending): locks other threads released on its behalf, and first,
        # if any, a run of entries whose chain keys are still to be written (pylockdep._held._Run).
        # While it is not empty, every fast path, C or Python, defers to the slow path.
        self.pending: list[LockMap | _Run] = []
        self.waiting: tuple[Primitive, int] | None = None  # the lock it waits for, and the mode
        self.busy = 0  # lockdep_recursion: while non-zero, nothing this thread does is validated
        self.ctx = 0
        self.update_ctx()
        # What segment_waits() last found: a chain key, the irq context of the top entry of the
        # stack it names, and the inner wait types of that entry's irq segment.
        self.segment: tuple[int, int, frozenset[int]] = _NO_SEGMENT
        # What the instance order last found held (pylockdep._instances.InstanceOrder.held_by):
        # kept by the slow path, forgotten where locks are taken unchecked or entries move.
        self.nearest: Nearest | None = None
        # What Validator.validate_chain() says of the lock it validates: the offset of the
        # instruction taking it (-1 when not known), and whether it is held already, pushed again.
        self.lasti = -1
        self.replaying = False
        # What the spins property last counted: the chain key of a stack and its count.
        self.spin_memo = _NO_SPINS

    @property
    def spins(self) -> int:
        """How many held locks disable preemption, by the flags their entries were pushed with.

        Counted when a check asks: the hot paths keep no count.  The count of the stack below the
        top entry depends only on the classes it holds, which the chain key the top entry was
        pushed on names: it is kept (``spin_memo``) under that key, and found for a stack one lock
        deeper from that lock alone, so that a thread taking lock after lock on new chains
        (``concurrent.futures.wait()`` on a thousand futures), asked at each, does not count its
        stack each time.  Keys come from the entries, never from ``key``, which a finalizer running
        in the middle of a push or pop sees out of step with the stack.
        """
        held = self.held
        if not held:
            return 0
        top = held[-1]
        below = top[H_PREV_KEY]
        key, count = self.spin_memo
        if below != key:
            # (While a run's entries keep their old places' keys, nothing is read from them.)
            if not self.pending and len(held) >= 2 and held[-2][H_PREV_KEY] == key:
                count += 1 if held[-2][H_SPIN] else 0  # one lock deeper than the kept stack
            else:
                count = sum(1 for entry in held[:-1] if entry[H_SPIN])
            if not self.pending:
                self.spin_memo = (below, count)
        return count + 1 if top[H_SPIN] else count

    def forget_spins(self) -> None:
        """Forget what :attr:`spins` counted: which classes spin has changed (the kernel flavour)."""
        self.spin_memo = _NO_SPINS

    @property
    def pid(self) -> int:
        """The pid splats print: the identity's, else the thread ident."""
        return self.identity.pid if self.identity is not None else self.ident

    @property
    def cpu(self) -> int:
        """The CPU splats print: the identity's, else 0."""
        return self.identity.cpu if self.identity is not None else 0

    @property
    def comm(self) -> str:
        """``name/pid`` as splats print a task."""
        return f"{self.name}/{self.pid}"

    def update_ctx(self) -> None:
        """Recompute the context signature and irq context after a context counter changed."""
        self.irq = 2 * (self.hardirq > 0) + (self.softirq > 0)
        self.ctx = hash(context_counters(self))

    def holds(self, lock: Any, exclusive: bool) -> bool:
        """Whether this holder holds ``lock`` (for writing, when ``exclusive``); SRCU and RCU count
        their read sides (``read_lock_held()``), having nothing else a holder could hold."""
        if getattr(lock, "_ltype", None) in (SRCU, RCU, RCU_SCHED):
            return lock.read_lock_held()
        return any(entry[H_LOCK] is lock and not (exclusive and entry[H_READ]) for entry in self.held)

    # -- what the context counters mean (read by the rules in _checks) ---------------------------

    def preempt_count(self, preempt_rt: bool) -> int:
        """The kernel's ``preempt_count()``: preemption, spinning locks, softirq and hardirq levels.

        On PREEMPT_RT softirqs and bottom-half sections run in preemptible threads and do not count,
        and neither does a ``spinlock_t`` (``spins`` only counts locks that disable preemption).
        """
        count = (self.preempt + self.spins) * PREEMPT_OFFSET + self.hardirq * HARDIRQ_OFFSET
        if not preempt_rt:
            count += self.softirq * SOFTIRQ_OFFSET + self.bh * SOFTIRQ_DISABLE_OFFSET
        return count

    def rcu_depth(self, preempt_rt: bool) -> int:
        """RCU read-side nesting (``rcu_preempt_depth()``).

        On PREEMPT_RT taking a ``spinlock_t``/``rwlock_t`` enters an RCU read side, and so does the
        first ``local_bh_disable()`` (which softirq processing also goes through).
        """
        depth = self.rcu
        if preempt_rt:
            depth += sum(1 for entry in self.held if entry[H_CLASS].ltype.sleeps_on_rt)
            depth += bool(self.bh or self.softirq)
        return depth

    def nonlock_atomic(self, preempt_rt: bool) -> bool:
        """Whether something other than a held spinning lock makes the holder atomic right now."""
        return bool(self.preempt or self.hardirq or (not preempt_rt and (self.softirq or self.bh)))

    def atomic_section_site(self, preempt_rt: bool) -> Site | None:
        """Where the current atomic section began (``Preemption disabled at:``).

        That is the earlier of the first held lock that disabled preemption and the call
        (``preempt_disable()``, ``local_bh_disable()``, an interrupt handler) that made the count
        non-zero while no such lock was counted.
        """
        held = self.held
        first_spin = next((i for i, e in enumerate(held) if e[H_SPIN]), None)
        nonlock = self.nonlock_atomic(preempt_rt)
        if nonlock and self.atomic_site is not None and (first_spin is None or self.atomic_depth <= first_spin):
            return self.atomic_site
        if first_spin is not None:
            return held_site(held[first_spin])
        return self.atomic_site if nonlock else None

    def wait_context(self) -> int:
        """The wait type the context allows: SPIN in a hard interrupt, CONFIG in a threaded
        handler or a softirq, anything (MAX) in process context."""
        if self.hardirq:
            return WAIT_CONFIG if self.hardirq_threaded else WAIT_SPIN
        if self.hardirq_threaded or self.softirq:
            return WAIT_CONFIG
        return WAIT_MAX

    def irq_segment(self, irq: int | None = None) -> list[HeldLock]:
        """The held locks on top of the stack taken in irq context ``irq``, by default the current
        one (lockdep's irq segment)."""
        if irq is None:
            irq = self.irq
        held = self.held
        i = len(held)
        while i and held[i - 1][H_IRQ] == irq:
            i -= 1
        return held[i:]

    def segment_waits(self) -> frozenset[int]:
        """The inner wait types of the locks in :meth:`irq_segment`, each once.

        What it finds depends only on the classes held and the contexts they were taken in, which
        the chain key names: it is kept (``segment``) for the key it was found under, and found
        for a stack one lock deeper from that lock alone, so that a thread taking lock after lock
        on new chains (``concurrent.futures.wait()`` on a thousand futures) does not scan its
        stack each time.  Only the slow path asks; the fast paths, which push and pop on known
        chains, leave the kept answer as it is, to be used again if the key comes back.
        """
        held = self.held
        if not held:
            return frozenset()
        key, irq, waits = self.segment
        if key != self.key:
            top = held[-1]
            inner = top[H_CLASS].ltype.inner
            if top[H_PREV_KEY] == key and not self.pending:  # pushed on the key kept (no run's key is stale)
                waits = (waits if inner in waits else waits | {inner}) if top[H_IRQ] == irq else frozenset((inner,))
            else:
                waits = frozenset(entry[H_CLASS].ltype.inner for entry in self.irq_segment(top[H_IRQ]))
            irq = top[H_IRQ]
            self.segment = (self.key, irq, waits)
        return waits if irq == self.irq else frozenset()

    def irq_flags(self) -> str:
        """``[HC0[0]:SC0[0]:HE1:SE1]``: in a hardirq / softirq (with the kernel's counts), hard / soft irqs enabled.

        The softirq count is that of ``softirq_count()``: one per softirq being served, two per
        ``local_bh_disable()``.  Softirqs being enabled does not depend on hard irqs.
        """
        he = int(not self.irqs_off)
        se = int(not (self.bh or self.softirq))
        hc, sc = self.hardirq, self.softirq
        return f"[HC{int(hc > 0)}[{hc}]:SC{int(sc > 0)}[{sc + 2 * self.bh}]:HE{he}:SE{se}]"
