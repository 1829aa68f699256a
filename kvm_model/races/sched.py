"""Deterministic interleaving of model threads.

Model threads are real threads.  Before each step that touches shared state a model thread calls
:meth:`Scheduler.point` with the step's name and stops there; the driver (:meth:`Scheduler.run`, in the
caller's thread) then picks which stopped thread runs its next step, as a policy says: :class:`Replay`
follows a written schedule, :class:`RandomPolicy` draws from a seeded generator.  Only the chosen thread
runs, until its next point or its end, so every step is atomic with respect to the other model threads and
the possible interleavings are exactly the orders of steps.  The same choices give the same run, every time.

A :class:`SchedLock` is a lock the driver knows about: a thread waiting for it is simply not runnable, so no
schedule can break its mutual exclusion and no real thread ever blocks on it.  A point may also wait for a
condition other threads make true (``until``): an IPI sender that must wait until the target CPU has
interrupts on again is not runnable while that CPU's thread keeps them off.

Nothing can hang the caller: the driver waits for a running step at most ``timeout`` seconds, and a schedule
that names a finished thread, a thread at another step or a thread waiting for a lock fails at once with a
:class:`ScheduleError` that says so.  Model threads are daemon threads; when a run ends early, those stopped
at a point are woken and unwound.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pylockdep import _plain

START = "<start>"  # name of the record holding what a thread does before its first point


class ScheduleError(Exception):
    """The schedule cannot be followed, or the model threads can no longer make progress."""


class ScheduleTimeout(ScheduleError):
    """A model thread neither reached its next point nor finished in time."""


class ModelThreadError(Exception):
    """A model thread failed (raised, or ended holding a lock); ``__cause__`` holds its exception if any."""


class _Aborted(BaseException):
    """Raised at a point to unwind a model thread whose run was abandoned."""


@dataclass(frozen=True)
class Pending:
    """A thread stopped at a point: the step it will run next and, if that step takes a :class:`SchedLock`
    that is held or waits for another thread (``until``), what it waits for (``blocked_by``)."""

    thread: str
    step: str
    blocked_by: str | None

    @property
    def runnable(self) -> bool:
        return self.blocked_by is None


@dataclass
class StepRecord:
    """One step as it ran: who ran it, its name and what the model said it did (:meth:`Scheduler.note`).
    ``scheduled`` is false for a thread's start-up code, which runs before any choice is made."""

    thread: str
    step: str
    scheduled: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class Trace:
    """Every step of a run, in the order they ran."""

    records: list[StepRecord]

    @property
    def schedule(self) -> list[str]:
        """The choices made, as ``thread:step`` entries that :class:`Replay` replays exactly."""
        return [f"{r.thread}:{r.step}" for r in self.records if r.scheduled]


class Policy(Protocol):
    """Decides who runs next.  ``pending`` lists every live thread in spawn order; at least one is runnable.
    Returns the name of a runnable thread, or raises :class:`ScheduleError`."""

    def choose(self, pending: Sequence[Pending]) -> str: ...


class Replay:
    """Follow a written schedule, then let the first runnable thread (in spawn order) run until all finish.

    Each entry is ``"thread"`` or ``"thread:step"``.  When ``strict``, an entry naming a thread that has no
    pending step or is waiting for a lock, or whose step differs from the thread's pending one, raises
    :class:`ScheduleError`.  When not strict (replaying the thread order of one variant on another variant of
    the code, which may take other steps), step names are ignored and entries that cannot run are skipped.
    """

    def __init__(self, entries: Sequence[str], *, strict: bool = True) -> None:
        self._entries = list(entries)
        self._strict = strict
        self._next = 0

    def choose(self, pending: Sequence[Pending]) -> str:
        while self._next < len(self._entries):
            entry = self._entries[self._next]
            self._next += 1
            problem = _entry_problem(entry, pending, check_step=self._strict)
            if problem is None:
                return entry.partition(":")[0]
            if self._strict:
                raise ScheduleError(f"schedule entry {self._next} {entry!r}: {problem}")
        return next(p.thread for p in pending if p.runnable)


def _entry_problem(entry: str, pending: Sequence[Pending], *, check_step: bool) -> str | None:
    """Why ``entry`` cannot run now, or None if it can."""
    thread, _, step = entry.partition(":")
    found = next((p for p in pending if p.thread == thread), None)
    if found is None:
        return f"{thread} has no pending step (it has finished, or there is no such thread)"
    if check_step and step and step != found.step:
        return f"{thread} is at step {found.step!r}, not {step!r}"
    if not found.runnable:
        return f"{thread} is waiting at {found.step!r} for {found.blocked_by}"
    return None


class RandomPolicy:
    """Pick uniformly among the runnable threads, with a caller-owned (seeded) generator."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, pending: Sequence[Pending]) -> str:
        return self._rng.choice([p.thread for p in pending if p.runnable])


class SchedLock:
    """A lock whose acquisition is a scheduled step named after the lock (``with lock:``).

    The driver runs that step only while the lock is free, so at most one model thread holds it and a thread
    waiting for it never occupies a real thread's time.  Releasing is not a step.
    """

    def __init__(self, sched: Scheduler, name: str) -> None:
        self._sched = sched
        self.name = name
        self.owner: str | None = None

    def __enter__(self) -> SchedLock:
        self._sched.point(self.name, lock=self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.owner = None


@dataclass(eq=False)
class _ModelThread:
    name: str
    body: Callable[[], None]
    record: StepRecord
    state: str = "new"  # new -> running <-> waiting -> done
    step: str | None = None
    wants: SchedLock | None = None
    until: Callable[[], str | None] | None = None
    error: BaseException | None = None


class Scheduler:
    """Runs a set of model threads one step at a time.  Use: :meth:`lock` and :meth:`spawn` to build the
    model, then :meth:`run` once; model code calls :meth:`point` and :meth:`note` from its threads."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self.timeout = timeout
        # A bare CPython lock: the driver's own synchronisation is not part of any lock graph being validated.
        self._cond = threading.Condition(_plain.plain_lock())
        self._threads: list[_ModelThread] = []
        self._locks: list[SchedLock] = []
        self._by_ident: dict[int, _ModelThread] = {}
        self._granted: _ModelThread | None = None
        self._aborted = False
        self._records: list[StepRecord] = []
        self._started = False

    # --- building the model ---------------------------------------------------------------------------

    def lock(self, name: str) -> SchedLock:
        """A new :class:`SchedLock` of this scheduler."""
        lock = SchedLock(self, name)
        self._locks.append(lock)
        return lock

    def spawn(self, name: str, body: Callable[[], None]) -> None:
        """Register a model thread; it starts when :meth:`run` is called."""
        if self._started or any(t.name == name for t in self._threads):
            raise ValueError(f"cannot spawn {name!r} now (already running, or the name is taken)")
        self._threads.append(_ModelThread(name, body, StepRecord(name, START, scheduled=False)))

    # --- called by model threads ----------------------------------------------------------------------

    def point(self, step: str, *, lock: SchedLock | None = None, until: Callable[[], str | None] | None = None) -> None:
        """Stop the calling model thread before ``step`` until the driver lets it run.  With ``lock``, the
        step takes that lock: it is runnable only while the lock is free, and returns holding it.  With
        ``until``, it is runnable only while ``until()`` returns None (else the thread it waits for)."""
        me = self._current()
        with self._cond:
            me.state, me.step, me.wants, me.until = "waiting", step, lock, until
            self._cond.notify_all()
            while self._granted is not me and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise _Aborted
            self._granted = None
            me.state, me.wants, me.until = "running", None, None
            if lock is not None:
                lock.owner = me.name

    def note(self, text: str) -> None:
        """Attach a line describing what the calling thread's current step did (kept in the trace)."""
        self._current().record.notes.append(text)

    def current(self) -> str:
        """The name of the calling model thread."""
        return self._current().name

    def _current(self) -> _ModelThread:
        me = self._by_ident.get(threading.get_ident())
        if me is None:
            raise RuntimeError("point() and note() may only be called from a thread started by Scheduler.run")
        return me

    # --- the driver -----------------------------------------------------------------------------------

    def run(self, policy: Policy) -> Trace:
        """Run every spawned thread to its end, choosing each step with ``policy``; return the trace.

        Raises :class:`ScheduleError` (or :class:`ScheduleTimeout`) when the schedule cannot be followed and
        :class:`ModelThreadError` when a model thread fails.  Callable once per scheduler.
        """
        if self._started:
            raise RuntimeError("a Scheduler runs once")
        self._started = True
        try:
            for t in self._threads:  # start-up code runs alone, in spawn order
                self._records.append(t.record)
                t.state = "running"
                thread = threading.Thread(target=self._thread_main, args=(t,), name=f"model:{t.name}")
                thread.daemon = True
                thread.start()
                self._settle(t)
            while pending := self._pending():
                if not any(p.runnable for p in pending):
                    waits = ", ".join(f"{p.thread} at {p.step!r} (waiting for {p.blocked_by})" for p in pending)
                    raise ScheduleError(f"deadlock: every live thread waits for another: {waits}")
                self._grant(self._chosen(policy, pending))
        finally:
            self._abandon()
        return Trace(self._records)

    def _pending(self) -> list[Pending]:
        with self._cond:
            return [Pending(t.name, t.step or "", self._blocker(t)) for t in self._threads if t.state == "waiting"]

    @staticmethod
    def _blocker(t: _ModelThread) -> str | None:
        """The thread ``t`` waits for at its point, or None if it can run."""
        if t.wants is not None and t.wants.owner is not None:
            return f"a lock held by {t.wants.owner}"
        if t.until is not None and (other := t.until()) is not None:
            return other
        return None

    def _chosen(self, policy: Policy, pending: Sequence[Pending]) -> _ModelThread:
        name = policy.choose(pending)
        if not any(p.thread == name and p.runnable for p in pending):
            raise ScheduleError(f"policy chose {name!r}, which is not a runnable thread")
        return next(t for t in self._threads if t.name == name)

    def _grant(self, t: _ModelThread) -> None:
        with self._cond:
            t.record = StepRecord(t.name, t.step or "", scheduled=True)
            self._records.append(t.record)
            self._granted = t
            self._cond.notify_all()
        self._settle(t)

    def _settle(self, t: _ModelThread) -> None:
        """Wait until ``t`` (just started or granted) stops at a point or ends; report how it failed if so."""
        with self._cond:
            calm = self._cond.wait_for(
                lambda: self._granted is None and all(x.state != "running" for x in self._threads),
                self.timeout,
            )
        where = f"step {t.record.step!r}"
        if not calm:
            raise ScheduleTimeout(
                f"{t.name} neither reached its next point nor ended within {self.timeout} s of starting {where}"
            )
        if t.error is not None:
            raise ModelThreadError(f"{t.name} raised {t.error!r} during {where}") from t.error
        held = [lock.name for lock in self._locks if lock.owner == t.name]
        if t.state == "done" and held:
            raise ModelThreadError(f"{t.name} ended holding {', '.join(held)}")

    def _thread_main(self, t: _ModelThread) -> None:
        with self._cond:
            self._by_ident[threading.get_ident()] = t
        try:
            t.body()
        except _Aborted:
            pass
        except BaseException as exc:  # reported by the driver, in the caller's thread
            t.error = exc
        finally:
            with self._cond:
                t.state, t.step = "done", None
                self._cond.notify_all()

    def _abandon(self) -> None:
        """Wake every thread still stopped at a point so that it unwinds and ends."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
