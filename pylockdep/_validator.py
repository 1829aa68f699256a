"""The validator: one dependency graph, its chain cache, the threads it has seen and its reports.

The acquire and release fast paths live in :mod:`pylockdep._locks` (the held stack they push and
pop in :mod:`pylockdep._held`); they call in here only for a chain of held locks not seen before
(:meth:`Validator.validate_chain`), a release of a lock the thread does not hold
(:meth:`Validator.release_unheld`, :meth:`Validator.bad_unlock`), or a wait (:mod:`pylockdep._waitfor`).
Every rule (:mod:`pylockdep._checks`) runs through :meth:`Validator.run_check`, under
:attr:`Validator.graph_lock`, and reports through :meth:`Validator.report`; reports are handed to
listeners only after the lock is dropped, so user code (a print, a logger) never runs under it.
"""

from __future__ import annotations

import _thread
import dataclasses
import os
import sys
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import CodeType
from typing import TYPE_CHECKING, Any

from . import _checks, _collector, _signals, _splat
from ._classes import MAX_SUBCLASSES, LockClass, LockKey
from ._frames import Site, caller_site, format_file_line
from ._graph import Graph, LimitExceeded
from ._held import H_CLASS, H_LOCK, HeldLock
from ._identity import identity_of
from ._instances import Held, InstanceOrder, same_instances
from ._locktypes import may_hand_off
from ._options import Options
from ._plain import plain_rlock
from ._report import LockdepViolation, Report
from ._task import Task

_get_ident = _thread.get_ident  # bound once: programs may wrap threading.get_ident

if TYPE_CHECKING:
    from ._suppress import Suppressions

#: Chain keys a validator remembers at most: some 60 bytes each, so about 16 MB.
CHAIN_CACHE_SIZE = 1 << 18

#: Chains one instance of a class of Python's locks keeps the verdict of (Instance.chains): one
#: per chain and lock taken, so a lock taken in as many places is validated once per place; they
#: go with the lock, and a dead lock's chains with it.
INSTANCE_CHAINS = 64

#: Every validator alive (the after-fork reset renews each one's graph lock).
every_validator: weakref.WeakSet[Validator] = weakref.WeakSet()


class Validator:
    """One lockdep instance: the graph, the chain cache, per-thread state and the reports.

    Made from :class:`~pylockdep._options.Options` (``options``), changed by the option names
    given as keywords (``Validator(preempt_rt=True)``); a wrong option raises here.  The options
    in force are :attr:`options`.
    """

    # The attributes the fast paths read are slots (the C fast path reads them in place).
    __slots__ = (
        "off",
        "local",
        "chains",
        "chains_forgotten",
        "max_lock_depth",
        "preempt_rt",
        "async_holders",
        "__dict__",
        "__weakref__",
    )

    def __init__(self, options: Options | None = None, /, **changes: Any) -> None:
        if options is None:
            options = Options()
        elif not isinstance(options, Options):
            raise TypeError(f"options must be a pylockdep.Options, not {type(options).__name__}")
        options = options.replace(**changes)
        self.graph = Graph()
        self.instances = InstanceOrder()  # how instances of one class of Python's locks nest
        self.apply(options)
        self.graph_lock = plain_rlock()
        self.chains: set[int] = set()
        # (chain key, id(code), line) -> code, for a site (code, line): see remember_site.
        self.site_chains: dict[tuple[int, int, int], CodeType] = {}
        # Times the chain cache was emptied: the C fast path keeps the chains it found in it until
        # this changes (the cache only grows in between), so it is emptied only by forget_chains().
        self.chains_forgotten = 0
        self.reports: list[Report] = []
        # Reports that a suppression or the baseline silenced: kept and counted, never printed.
        self.suppressed: list[Report] = []
        self.suppress: Suppressions | None = None
        self.listeners: list[Callable[[Report], None]] = []
        self.local = threading.local()
        self.tasks: dict[int, Task] = {}
        # The holders of asyncio tasks, by id() of the task (see pylockdep._asyncio.holder_of).
        self.async_holders: dict[int, Task] = {}
        # Thread ident -> the holder of that thread while its end is handled there (see
        # _thread_exited), when its local storage is gone: task() answers it without touching
        # self.local, which would make the storage again for a thread that no longer clears it.
        self.exiting: dict[int, Task] = {}
        # Threads that ended holding threading.Locks (which another thread may still release):
        # judged when validation ends (check_leaked_locks).
        self.ended_holding: list[Task] = []
        # Owned locks another thread released while their owner held them (a bad unlock), each
        # with that owner: its release of the lock, now free, is the same fault, not reported again.
        self.stolen: weakref.WeakKeyDictionary[Any, Task] = weakref.WeakKeyDictionary()
        # In a forked child, the threading locks its thread held at the fork and forgot there, each
        # with that thread (pylockdep._fork): its own release of one later is no bad unlock.
        self.forgotten_at_fork: weakref.WeakKeyDictionary[Any, Task] = weakref.WeakKeyDictionary()
        # Reports held back until finish(): each with the classes that may still drop it (hand-off
        # candidates, gates) and its dedupe key.
        self.held_back: list[tuple[Report, tuple[LockClass, ...], tuple[LockClass, ...], tuple]] = []
        self.off = False
        self.debug_locks = True  # cleared by the first lockdep report when the option report_once is on
        self.any_irq_usage = False
        self.any_signal_safe = False  # some class was taken in a signal handler (IN-SIGNAL)
        self.origin: str | None = None
        self.taint = "Not tainted"
        self._seen: set[Hashable] = set()
        self._pending: list[Report] = []
        # Sinks that failed to take a report (see flush): sink -> the first error.
        self.delivery_failures: dict[str, str] = {}
        # This validator's classes per key; a key caches only the last validator's list, so a
        # validator that is active again (after a nested validate()) gets its classes back.
        self._key_classes: dict[LockKey, list[LockClass | None]] = {}
        every_validator.add(self)

    def apply(self, options: Options) -> None:
        """Put ``options`` in force.  The C fast path reads ``max_lock_depth`` and ``preempt_rt``, and
        the checks read ``preempt_rt``, ``nesting``, ``stream`` and ``raise_on_report``, as attributes."""
        self.options = options
        self.preempt_rt = options.preempt_rt
        self.prove_raw_lock_nesting = options.prove_raw_lock_nesting
        self.nesting = options.nesting
        self.raise_on_report = options.raise_on_report
        self.stream = options.stream
        self.max_lock_depth = options.max_lock_depth if options.max_lock_depth is not None else sys.maxsize
        self.graph.max_classes = options.max_classes
        self.graph.max_dependencies = options.max_dependencies
        self.era = options.era
        self.report_once = options.report_once

    # -- threads -------------------------------------------------------------------------------

    def task(self) -> Task:
        """The calling thread's state, created on first use."""
        if self.exiting:
            t = self.exiting.get(_get_ident())
            if t is not None:
                return t
        try:
            return self.local.task
        except AttributeError:
            return self.new_task()

    def new_task(self) -> Task:
        """Create the calling thread's holder and arrange to hear when the thread ends."""
        if _signals.wanted:  # before the holder is stored: done again if a handler interrupts it
            _signals.install()
        if _collector.wanted:
            _collector.install()
        ident = _get_ident()
        # Not threading.current_thread(): for a thread that threading did not start, that would
        # make a _DummyThread as a side effect, one that 3.13 tears down noisily at exit.
        thread = threading._active.get(ident)
        t = Task(thread.name if thread is not None else f"thread-{ident}", ident, identity_of(thread))
        self.local.task = t
        self.local.exit_sentinel = _ExitSentinel(weakref.ref(self), t, os.getpid())
        self.tasks[id(t)] = t
        _collector.adopt(t)
        return t

    def _thread_exited(self, t: Task, pid: int) -> None:
        """A thread ended: locks it still holds are reported, as lockdep does at task exit.

        Only locks with an owner count: a ``threading.Lock`` may still be released by another
        thread (and those other threads already released are forgotten).  In a child process
        the threads that did not follow ``fork()`` did not end: they live on in the parent.
        """
        self.tasks.pop(id(t), None)
        if pid != os.getpid() or not t.held:  # most threads end holding nothing: nothing to judge
            return
        released = {id(lock) for lock in t.pending}
        t.held = [entry for entry in t.held if id(entry[H_LOCK]) not in released]
        ident = _get_ident()
        if ident == t.ident:  # in the ending thread, whose local storage is being torn down
            self.exiting[ident] = t
        try:
            self.run_check(t, _checks.check_held_at_exit)
        finally:
            if self.exiting.get(ident) is t:
                del self.exiting[ident]
        if any(_checks.check_passed_on(entry[H_CLASS]) for entry in t.held):
            self.ended_holding.append(t)

    def finish(self) -> None:
        """Validation ends (``validate()`` exits, the program or the test session is done): report
        the ``threading.Lock``s that threads which ended still hold and nobody released, and the
        reports held back for a ``threading.Lock`` that never proved to be a hand-off signal or for
        a gate lock that proved not to be the only one of its class."""
        if self.ended_holding:
            self.run_check(self.task(), _checks.check_leaked_locks)
        if self.held_back:
            with self.graph_lock:
                held_back, self.held_back = self.held_back, []
                for report, tokens, gates, key in held_back:
                    if any(cls.key.handoff for cls in tokens) or any(_checks.check_gate(cls) for cls in gates):
                        continue
                    if gates:
                        if key in self._seen:
                            continue
                        self._seen.add(key)
                    self._publish(report)
            self.flush()

    def class_for(self, key: LockKey, subclass: int = 0) -> LockClass:
        """The class of ``key``/``subclass`` in this validator, registering it on first use."""
        owner, classes = key.cache
        if owner is self:
            cls = classes[subclass]
            if cls is not None:
                return cls
        limited = False
        with self.graph_lock:
            classes = self._key_classes.setdefault(key, [None] * MAX_SUBCLASSES)
            key.cache = (self, classes)
            cls = classes[subclass]
            if cls is None:
                try:
                    cls = self.graph.new_class(key, subclass)
                except LimitExceeded as exc:
                    self.limit_reached(self.task(), exc)
                    limited = True
                    cls = LockClass(-1, key, subclass, key.name)
                cls.spins = key.ltype.spins_under(self.preempt_rt)
                classes[subclass] = cls
        if limited:
            self.flush()  # the limit's report: no check runs here to deliver it
        return cls

    # -- the rare path of an acquisition -------------------------------------------------------

    def validate_chain(
        self,
        t: Task,
        lock: object,
        cls: LockClass,
        read: int,
        trylock: bool,
        chain_key: int,
        code: Any,
        line: int,
        sync: bool = False,
        lasti: int = -1,
        replaying: bool = False,
    ) -> None:
        """Run every rule for an acquisition whose chain of held locks is new, then remember it
        (:meth:`remember_chain`).  ``lasti`` is the offset of the taking instruction in ``code``,
        when known (see :func:`pylockdep._checks.check_loop_taken`); ``replaying`` says the lock
        is held already, pushed again after a release from under it (:func:`pylockdep._held.remove`)."""
        if not replaying and (node := self.instances.known(lock)) is not None and node.chains:
            known = node.chains.get(chain_key)
            if known is not None and self._same_instances(t, cls, lock, known):
                return
        if self.site_known(chain_key, (code, line)) and not replaying:
            return
        t.lasti = lasti
        t.replaying = replaying
        self.run_check(t, _checks.check_new_chain, lock, cls, read, trylock, sync, chain_key, (code, line))

    def remember_chain(self, chain_key: int) -> None:
        """Cache ``chain_key`` as validated: after its validation, or without one for a chain that a
        validation is known to find nothing new in (see :func:`pylockdep._held.remove`).

        The chain cache only saves work: when it reaches :data:`CHAIN_CACHE_SIZE` keys it starts
        again empty (chains seen again are validated again, with the same verdicts), so a long run
        whose graph stopped growing stops growing too.
        """
        self.chains.add(chain_key)
        if len(self.chains) >= CHAIN_CACHE_SIZE:
            self.forget_chains()

    def remember_site(self, chain_key: int, site: Site) -> None:
        """Cache ``chain_key`` as validated when its lock is taken at ``site``'s line: the verdict
        of a lock whose usages re-entrancy guards keep apart (:mod:`pylockdep._guards`), which
        another line may take unguarded."""
        if len(self.site_chains) >= CHAIN_CACHE_SIZE:
            self.site_chains.clear()
        self.site_chains[chain_key, id(site[0]), site[1]] = site[0]

    def site_known(self, chain_key: int, site: Site) -> bool:
        """Whether :meth:`remember_site` cached ``chain_key`` taken at ``site``."""
        return bool(self.site_chains) and self.site_chains.get((chain_key, id(site[0]), site[1])) is site[0]

    def remember_instances(self, t: Task, chain_key: int, cls: LockClass, lock: object) -> None:
        """Cache ``chain_key`` as validated for the instances of ``cls`` that ``t`` holds and for
        ``lock``, an instance of it that ``t`` does not hold: the verdict of a chain on which
        instances of one class nest (:func:`pylockdep._checks.check_instance_order`).  One set of
        instances per chain and lock taken, the last: taking two given locks of one class in a
        loop (two accounts in order), or walking a list hand over hand, is validated once per
        pair, not at each turn."""
        free, cell = self._instances_under(t, cls, lock)
        if free:
            node = self.instances.node(lock)
            if node.chains is None or len(node.chains) >= INSTANCE_CHAINS:
                node.chains = {}
            node.chains[chain_key] = cell

    def _same_instances(self, t: Task, cls: LockClass, lock: object, known: Held) -> bool:
        """Whether ``t`` takes ``lock`` over the instances of ``cls`` that :meth:`remember_instances`
        kept with the chain and that lock (``known``), the lock not held itself."""
        free, cell = self._instances_under(t, cls, lock)
        return free and same_instances(cell, known)

    def _instances_under(self, t: Task, cls: LockClass, lock: object) -> tuple[bool, Held]:
        """Whether ``t`` does not hold ``lock`` itself, and the instances of ``cls`` it holds
        (:meth:`InstanceOrder.held_by <pylockdep._instances.InstanceOrder.held_by>`)."""
        cell, may_hold = self.instances.held_by(t, cls, lock)
        return not (may_hold and any(entry[H_LOCK] is lock for entry in t.held)), cell

    def forget_chains(self) -> None:
        """Empty the chain cache: every chain is validated again the next time it is taken.  (The C
        fast path trusts the chains it found until ``chains_forgotten`` changes, just after; the pure
        one's memos, ``LockClass.steps``, are emptied after that, so that a memo made while this
        ran either sees the count changed or is emptied.)"""
        self.chains.clear()
        self.instances.forget_chains()
        self.site_chains.clear()
        self.chains_forgotten += 1
        for classes in list(self._key_classes.values()):
            for cls in classes:
                if cls is not None:
                    cls.steps.clear()

    def depth_exceeded(self, t: Task) -> None:
        """The held stack outgrew ``max_lock_depth``: stop validating, as lockdep does."""
        self.run_check(t, _checks.check_lock_depth)

    def limit_reached(self, t: Task, exc: LimitExceeded) -> None:
        """Report a capacity limit and turn validation off for good (under the graph lock)."""
        _checks.check_limit(self, t, exc.args[0], [])

    # -- releases ------------------------------------------------------------------------------

    def release_unheld(self, t: Task, lock: Any, name: str, owner_may_differ: bool) -> None:
        """A release of a lock that is not on this thread's stack.

        If another thread holds it, that thread forgets it (and, for a lock with an owner, the
        release is a bad unlock balance, as the kernel says of a mutex released by another
        task; the owner's own release of it later is then no second report: see
        :func:`pylockdep._locks._release_slow`).  A lock taken before this validator started is
        ignored.
        """
        owner = getattr(lock, "_owner", None)
        if owner is None:
            return  # taken before pylockdep saw it, or while validation was off
        if self.tasks.get(id(owner)) is not owner:
            # Taken by a thread that has ended, or under another validator: the one that pushed
            # it forgets it at its holder's next lock operation, rather than keep a stale entry
            # (pending is a list that only its holder's thread empties, so appending
            # from here is safe).
            if (
                owner_may_differ
                and may_hand_off(lock._key.ltype)
                and any(ended is owner for ended in self.ended_holding)
            ):
                lock._key.handoff = True  # handed back for a thread that ended holding it
            owner.pending.append(lock)
            return
        if owner is not t:
            owner.pending.append(lock)
            if owner_may_differ and may_hand_off(lock._key.ltype):
                lock._key.handoff = True  # a threading.Lock used as a signal
                return
            self.stolen[lock] = owner  # whose own release of it later is this bad unlock's echo
        elif self.forgotten_at_fork.pop(lock, None) is t:
            return  # held at the fork, forgotten in the child, released by its holder now
        self.bad_unlock(t, lock, name)

    def self_deadlock(self, t: Task, lock: Any) -> None:
        """Report a thread waiting for ever for a ``threading.Lock`` it holds (then it raises)."""
        self.run_check(t, _checks.check_self_deadlock, lock, caller_site(skip_threading=True))

    def hung(self, t: Task, stuck: list[tuple[str, Any]]) -> None:
        """Report ``t``'s wait, which can never end behind the waits ``stuck`` (its own first)."""
        self.run_check(t, _checks.check_hung_task, stuck, caller_site(skip_threading=True))

    def decide_token(self, t: Task, cls: LockClass, held: list[HeldLock], lock: object = None) -> bool:
        """Decide now whether ``cls`` is a token class, as validating again the entries of ``held``
        (``t``'s, in order), ``lock``'s excepted, would (:func:`pylockdep._checks.check_token_class`);
        whether that was decided (not while validation is off or ``t`` is inside pylockdep)."""
        return bool(self.run_check(t, _checks.check_token_class, cls, held, lock))

    def bad_unlock(self, t: Task, lock: object, name: str, site: Site | None = None) -> None:
        """Report a release of a lock this thread does not hold."""
        self.run_check(t, _checks.check_unlock, lock, name, site or caller_site())

    # -- reports -------------------------------------------------------------------------------

    def run_check(self, t: Task, check: Callable[..., object], *args: Any) -> Any:
        """The one path from a rule to a printed report; what the check returned (None when it did
        not run).

        Unless validation is off or the thread is already inside pylockdep (``busy``: checking or
        printing), run ``check(self, t, *args)`` under the graph lock; the check decides whether
        its rule is broken and, if so, calls :meth:`report`.  A capacity limit met on the way is
        reported and turns validation off.  Reports made reach the stream and listeners after the
        graph lock is dropped (:meth:`flush`).

        This is lockdep's recursion guard: a signal handler, finalizer or trace hook that runs
        while its thread checks takes and releases its locks for real and they are tracked, but
        no rule is run for them, so a search never sees the graph change under it.

        The check and the printing run with :data:`RECURSION_HEADROOM` more frames allowed than
        the program's recursion limit: they run on the program's stack, and a program close to
        its limit must neither lose a report nor get a ``RecursionError`` out of them.
        """
        me = self.task()
        if self.off or t.busy or me.busy:
            return None
        result = None
        with _headroom:
            me.busy += 1
            try:
                with self.graph_lock:
                    try:
                        result = check(self, t, *args)
                    except LimitExceeded as exc:
                        self.limit_reached(t, exc)
            finally:
                me.busy -= 1
            self.flush()
        return result

    def report(
        self,
        kind: str,
        classes: Iterable[LockClass],
        splat: Callable[[str], list[str]],
        *,
        site: Site | None = None,
        dedupe: tuple = (),
        title: Mapping[str, object] | None = None,
        until_handoff: tuple[LockClass, ...] = (),
        unless_gated: tuple[LockClass, ...] = (),
    ) -> Report | None:
        """Record a report of ``kind`` unless the same problem (kind, classes in any order,
        ``dedupe``) was reported before; only then is the splat built.

        With ``until_handoff`` (``threading.Lock`` classes), the report is built now but held back
        until validation ends (:meth:`finish`), and dropped if by then one of the classes has shown
        itself a hand-off signal (:func:`pylockdep._checks.check_handoff`).  With ``unless_gated``
        (the gates of a cycle, :func:`pylockdep._checks.check_gated`), likewise, and dropped if one
        of them is still the only lock of its class; such a report does not count as made until
        then (the same problem found again with no gate is reported).

        Called by a check under :meth:`run_check` (the graph lock held).  The report's title is
        that of ``kind`` (:func:`pylockdep._splat.title`, filled in with ``title``);
        ``splat(title)`` builds the text around it.  The report reaches listeners at the next
        :meth:`flush`.  With the option ``report_once``, the first lockdep report (not a suppressed
        one) turns lockdep's reports off, as the kernel's ``debug_locks_off()`` does; only the
        kinds of :data:`pylockdep._splat.PRINTED_WHEN_LOCKDEP_OFF` are made after that.
        """
        if not self.debug_locks and kind not in _splat.PRINTED_WHEN_LOCKDEP_OFF:
            return None
        classes = tuple(classes)
        key = (kind, tuple(sorted(c.id for c in classes)), dedupe)  # a cycle from any of its classes
        if key in self._seen:
            return None
        self._seen.add(key)
        heading = _splat.title(kind, self.era, **(title or {}))
        t = self.task()
        report = Report(
            kind=kind,
            title=heading,
            text="\n".join(splat(heading)).strip("\n"),
            classes=tuple(c.bare_name for c in classes),
            threads=(t.comm,),
            sites=(format_file_line(site),) if site else (),
            origin=self.origin,
        )
        if until_handoff or unless_gated:
            if unless_gated:
                self._seen.discard(key)
            self.held_back.append((report, until_handoff, unless_gated, key))
            return report
        self._publish(report)
        return report

    def _publish(self, report: Report) -> None:
        """Record a built report as made (or suppressed); it reaches listeners at :meth:`flush`."""
        kind = report.kind
        why = self.suppress.reason(report) if self.suppress is not None else None
        if why is not None:
            report = dataclasses.replace(report, suppressed=True, suppressed_by=why)
            self.suppressed.append(report)
        else:
            self.reports.append(report)
            if self.report_once and kind in _splat.LOCKDEP_OFF_AFTER:
                self.debug_locks = False  # debug_locks_off(): the kernel's lockdep reports once
        self._pending.append(report)

    def flush(self) -> None:
        """Hand new reports to the stream, listeners and (once the application configured
        structlog) one structured log event each, outside the graph lock.

        A suppressed report reaches the listeners only (flagged ``suppressed``): no splat, no log.
        Delivery never raises into the program: the report is already recorded, every sink that
        works gets it, and a sink that fails (a closed pipe, a raising log processor or listener)
        is named once on the process's stderr, if that works.
        """
        if not self._pending:
            return
        t = self.task()
        t.busy += 1  # locks taken while printing are not validated (lockdep_recursion)
        try:
            while self._pending:
                report = self._pending.pop(0)
                if not report.suppressed:
                    if self.stream is not None:
                        self._deliver("stream", _write_splat, report, self.stream)
                    # Only an application that imported structlog can have configured it; not
                    # importing it here keeps logging's own locks out of pylockdep's imports.
                    structlog = sys.modules.get("structlog")
                    if structlog is not None:
                        self._deliver("structlog", _log_event, report, structlog)
                for listener in list(self.listeners):
                    self._deliver(f"listener {listener!r}", listener, report)
        finally:
            t.busy -= 1
            t.nearest = None  # the locks taken while printing were not checked

    def _deliver(self, sink: str, send: Callable[..., object], report: Report, *args: Any) -> None:
        """``send(report, *args)``; a failure is recorded in :attr:`delivery_failures` and said once
        per sink, never raised."""
        try:
            send(report, *args)
        except Exception as exc:  # noqa: BLE001 - whatever a sink raises, the program goes on
            if sink not in self.delivery_failures:
                self.delivery_failures[sink] = f"{type(exc).__name__}: {exc}"
                _say(f"pylockdep: could not deliver a report to the {sink}: {type(exc).__name__}: {exc}")

    def check(self) -> None:
        """Raise :class:`LockdepViolation` if anything was reported."""
        if self.reports:
            raise LockdepViolation(self.reports)


#: Frames a rule and the printing of its report may use beyond the program's recursion limit.
RECURSION_HEADROOM = 500


class _Headroom:
    """Raises the interpreter's recursion limit (one for all its threads) by
    :data:`RECURSION_HEADROOM` while any thread is inside: the first to enter raises it, the last
    to leave puts the program's limit back.  One that leaves deeper than that limit cannot (Python
    refuses a limit below the current depth): it leaves the limit raised for the next one to put
    back.  A limit the program changed meanwhile stands."""

    __slots__ = ("lock", "inside", "raised_to")

    def __init__(self) -> None:
        self.lock = plain_rlock()  # re-entrant: a signal handler may check inside a check's bookkeeping
        self.inside = 0
        self.raised_to = 0  # the limit while inside: the program's plus RECURSION_HEADROOM

    def __enter__(self) -> None:
        with self.lock:
            if not self.inside:
                limit = sys.getrecursionlimit()
                if limit != self.raised_to:  # else still raised: the last one out could not lower it
                    self.raised_to = limit + RECURSION_HEADROOM
                    sys.setrecursionlimit(self.raised_to)
            self.inside += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.inside = max(self.inside - 1, 0)  # 0 already: a thread that forked, inside
            if not self.inside:
                self._lower()

    def _lower(self) -> None:
        if sys.getrecursionlimit() == self.raised_to:
            try:
                sys.setrecursionlimit(self.raised_to - RECURSION_HEADROOM)
            except RecursionError:
                pass  # this thread is deeper than the program's limit allows: left to the next

    def after_fork_in_child(self) -> None:
        """The threads inside in the parent are gone: a new lock, nobody inside, the limit put back."""
        self.lock._at_fork_reinit()
        self.inside = 0
        self._lower()


_headroom = _Headroom()


def _write_splat(report: Report, stream: Any) -> None:
    """Print a report's splat on ``stream``, and flush it if it can be (a stream needs only
    ``write()``)."""
    stream.write(report.text + "\n\n")
    flush = getattr(stream, "flush", None)
    if flush is not None:
        flush()


def _log_event(report: Report, structlog: Any) -> None:
    """One structured log event for a report, once the application configured structlog."""
    if structlog.is_configured():
        structlog.get_logger("pylockdep").warning(
            "lockdep_report",
            kind=report.kind,
            title=report.title,
            classes=list(report.classes),
            threads=list(report.threads),
            sites=list(report.sites),
            origin=report.origin,
        )


def _say(message: str) -> None:
    """Write one line on the process's standard error (fd 2), ignoring any failure."""
    try:
        os.write(2, (message + "\n").encode(errors="replace"))
    except OSError:
        pass


class _ExitSentinel:
    """Lives in a thread's local storage, which the thread's end clears: then it tells the
    validator, if that still exists (held weakly: a thread that used it must not keep it alive),
    that the thread ended.  Not at interpreter exit: a daemon thread still running then has not
    ended holding anything, and the main thread's storage is cleared only then."""

    __slots__ = ("validator", "task", "pid")

    def __init__(self, validator: weakref.ref[Validator], task: Task, pid: int) -> None:
        self.validator = validator
        self.task = task
        self.pid = pid

    def __del__(self) -> None:
        v = self.validator()
        if v is not None and not sys.is_finalizing():
            v._thread_exited(self.task, self.pid)


class _Active:
    """Which validator is in force for the whole process."""

    __slots__ = ("validator",)
    validator: Validator


active = _Active()
default = Validator(stream=sys.stderr, raise_on_report=False)
active.validator = default
_signals.active = active
_collector.active = active
_validate_lock = plain_rlock()  # re-entrant: a handler may open a validate() block inside another's bookkeeping


# One [validator, previous] pair per open validate() block, oldest first (under _validate_lock).
_entered: list[list[Validator]] = []


class validate:  # noqa: N801 - a context manager named as the API promises
    """Validate everything that runs inside the block with a fresh validator (empty graph).

    The validator in force is process-wide: while the block is open it is in force for every
    thread, threads started inside included.  With several blocks open at once (entered by
    several threads, or the same ``validate()`` entered twice), the most recently entered block
    that is still open is in force; when a block exits, the one in force before it is again,
    unless that one has exited meanwhile (then the one in force before *that*, and so on, down to
    the default validator).  A finished validator is never in force again.

    On exit, if anything was reported and ``raise_on_report`` is true, :class:`LockdepViolation`
    is raised (unless the block is already raising).  ``as v`` gives the :class:`Validator`,
    whose ``reports`` list what it found.  Other options are those of :class:`Validator`.
    Exiting a block more times than it was entered is a RuntimeError (the validator's verdict
    was given at the first exit).
    """

    def __init__(self, options: Options | None = None, /, **changes: Any) -> None:
        self.validator = Validator(options, **changes)

    def __enter__(self) -> Validator:
        with _validate_lock:
            _entered.append([self.validator, active.validator])
            active.validator = self.validator
        # The holder, made now (from the main thread, the program's signal handlers wrapped first:
        # new_task): a handler that runs in the block before anything is taken runs as one.
        self.validator.task()
        return self.validator

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        v = self.validator
        with _validate_lock:
            index = next((i for i in range(len(_entered) - 1, -1, -1) if _entered[i][0] is v), None)
            if index is None:
                raise RuntimeError("validate() block exited more times than it was entered")
            _, previous = _entered.pop(index)
            # Blocks entered after this one go back, when they exit, to what this one replaced.
            for later in _entered[index:]:
                if later[1] is v:
                    later[1] = previous
            if active.validator is v:
                active.validator = previous
        v.finish()
        if exc_type is None and v.raise_on_report:
            v.check()


def configure(**changes: Any) -> Validator:
    """Set options (:class:`~pylockdep._options.Options` names) of the process-wide default
    validator, the one outside every ``validate()``.

    Options left out or given as None keep their value; a wrong value raises here and changes
    nothing.  Changing the kernel flavour forgets the chain cache, since cached verdicts depended
    on it.  Returns the default validator.
    """
    v = default
    with v.graph_lock:
        v.apply(v.options.replace(**{name: value for name, value in changes.items() if value is not None}))
        for cls in v.graph.classes:
            cls.spins = cls.ltype.spins_under(v.preempt_rt)
        for t in list(v.tasks.values()):  # what their stacks' keys counted may have changed too
            t.forget_spins()
        v.forget_chains()
    return v


def current() -> Validator:
    """The validator in force now."""
    return active.validator
