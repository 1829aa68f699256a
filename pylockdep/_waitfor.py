"""Actual deadlocks: a wait that can never end is refused instead of hanging.

Lockdep proves what *could* deadlock.  When a thread is about to block, this module also asks
whether it *will* block for ever: the lock's holders (or, for readers and writers, whoever it
queues behind) are followed through what each of them waits for; coming back to the waiting
thread is a cycle of threads, and the wait raises :class:`DeadlockError`.

A lock with an owner (an ``RLock``, the kernel's types) whose owner thread ended can never come
free either: waiting for it raises at once.  A ``threading.Lock`` has no owner, but one that only
its acquirers ever released waits for its acquirer, like a mutex (``Lock._blockers``); a hand-off
signal (released by another thread at least once, or a token held on across functions) waits
for nobody in particular; so does a thread waiting for a Lock it holds itself, or that a thread
which ended holds.  Such a wait is stuck only when no thread that could release the Lock may
still move: :func:`stuck_waits` finds the threads that wait for one another for ever.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
from collections.abc import Callable, Container, Mapping
from time import monotonic
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ._frames import current_frames, enters_with, other_threads_frames
from ._held import H_CODE, H_LASTI, H_LOCK
from ._locktypes import RCU, RCU_SCHED, SRCU
from ._plain import plain_rlock
from ._primitive import Primitive
from ._report import DeadlockError
from ._signals import deferred, handles_signals, run_deferred
from ._task import Task

if TYPE_CHECKING:
    from ._validator import Validator

POLL_SECONDS = 0.05
# Most waits end quickly: the first slice of one is waited for without the deadlock check, whose
# cost (the checks below, marking the thread waiting, searching for a cycle) would otherwise
# dominate short waits, such as for a lock another thread holds for a few lines.  A cycle is then
# found at most this much later.  The C fast path waits the same slice for a contended lock before
# it hands the acquisition to Python (the constant is written into its header), which waits its
# own: there the check comes after twice the slice.
FIRST_SLICE_SECONDS = 0.01
# The longest time between two deadlock checks of one wait (see wait()).
CHECK_SECONDS_MAX = 0.5
# A thread just started with _thread.start_new_thread is seen nowhere until it runs: a thread
# waiting for a Lock it holds itself must find itself alone this long before nobody is left.
SELF_WAIT_GRACE_SECONDS = 0.25
# How often the main thread's end is checked for joins that can never end (see stuck_at_exit).
EXIT_CHECK_SECONDS = 0.25
#: The idents of pylockdep's own threads (the hang watchdog's), which never release a program's lock.
OWN_THREADS: set[int] = set()


# Re-entrant: a signal handler may wait for a lock while its thread is inside this bookkeeping.
_waits = plain_rlock()


def find_wait_cycle(v: Validator, t: Task) -> list[tuple[Task, Primitive]] | None:
    """The cycle of (task, lock it waits for) that starts and ends at ``t``, if there is one.

    A wait usually ends when any one of its blockers moves: it is stuck for ever when one of them
    leads back to ``t``.  A wait whose ``_needs_all`` is true after its ``_blockers()`` call (work
    queued behind a full pool, which any worker may pick up) is stuck only when every blocker is:
    each one leads back to ``t`` or is already on the path being followed.
    """
    search = _CycleSearch(v, t)
    try:
        found = search.visit(t)
    except RecursionError:  # a chain of waits longer than the stack allows (each thread joining
        return None  # the one before: hundreds): not followed to its end, rather than raise here
    return search.path if found else None


class _CycleSearch:
    """The state of one :func:`find_wait_cycle`: an object rather than nested functions, which
    would refer to one another and leave a reference cycle for the collector after every wait."""

    __slots__ = ("t", "by_ident", "path", "seen", "on_path")

    def __init__(self, v: Validator, t: Task) -> None:
        self.t = t
        self.by_ident = {task.ident: task for task in list(v.tasks.values())}
        self.path: list[tuple[Task, Primitive]] = []
        self.seen: set[int] = set()
        self.on_path: set[int] = set()

    def visit(self, task: Task) -> bool:
        """Whether the wait of ``task`` leads back to ``t``; if so, it is on :attr:`path`."""
        waiting = task.waiting
        if waiting is None:
            if not joining_at_exit(task.ident):
                return False
            waiting = (JOINS_AT_EXIT, 0)
        lock, mode = waiting
        path = self.path
        mark = len(path)
        path.append((task, lock))
        self.on_path.add(task.ident)
        blockers = lock._blockers(mode, task.ident)
        if getattr(lock, "_needs_all", False):
            found = bool(blockers) and all(self.stuck(ident) for ident in blockers)
        else:
            found = any(self.reaches(ident, lock) for ident in blockers)
        self.on_path.discard(task.ident)
        if not found:
            del path[mark:]
        return found

    def reaches(self, ident: int, lock: Primitive) -> bool:
        """Whether the thread ``ident``, which holds ``lock``, is ``t`` or leads back to it."""
        t = self.t
        # A lock held under t's ident by a thread that ended (its ident reused by t) is not t's;
        # one that t has taken and not pushed yet (a hook running in between waits) is.  A wait
        # whose blockers are read live (a join: the threads still running) names t only while t runs.
        if ident == t.ident and (
            getattr(lock, "_live_blockers", False) or t.holds(lock, False) or getattr(lock, "_owner", None) is t
        ):
            return True
        holder = self.by_ident.get(ident)
        if holder is None or ident in self.seen:
            return False
        self.seen.add(ident)
        return self.visit(holder)

    def stuck(self, ident: int) -> bool:
        """Whether the thread ``ident`` can never pick up work queued behind a full pool."""
        if ident == self.t.ident or ident in self.on_path:
            return True
        holder = self.by_ident.get(ident)
        return holder is not None and self.visit(holder)


def polls(timeout: float | None) -> bool:
    """Whether a wait given ``timeout`` only polls: a zero or negative timeout never blocks, so it
    waits for nothing and touches no map (``join(0)``, ``result(timeout=0)``), as an acquisition
    with one is a trylock."""
    return timeout is not None and timeout <= 0


def wait(v: Validator, t: Task, lock: Primitive, mode: int, acquire_timed: Callable[[float], bool]) -> None:
    """Block until ``acquire_timed`` succeeds, unless the wait closes a cycle of waiting threads.

    The wait is checked (:func:`_check`) once the first :data:`FIRST_SLICE_SECONDS` of it have
    passed and again at each poll (every :data:`POLL_SECONDS`) while it is young, so a cycle that
    forms while threads race into their waits is still found; then less often, a quarter of the
    wait's age apart, at most :data:`CHECK_SECONDS_MAX` (a hundred threads idle in their waits
    would otherwise cost a quarter of a processor).  A lock held by a suspended asyncio task of the
    event loop that runs on this very thread can never come free: that raises after the first
    slice too.
    """
    if acquire_timed(FIRST_SLICE_SECONDS):
        return
    if deferred:  # a failed attempt: what a signal held back runs now, as after each poll below
        run_deferred()
    # A signal handler or finalizer may wait inside this thread's own wait: put the outer wait back.
    outer = t.waiting
    alone_since = None  # when the wait, for a hand-off, was first found stuck (see _check)
    started = next_check = monotonic()
    try:
        while True:
            now = monotonic()
            if now >= next_check:
                next_check = now + min((now - started) / 4, CHECK_SECONDS_MAX)
                alone_since = _check(v, t, lock, mode, alone_since)
            if acquire_timed(POLL_SECONDS):
                return  # the caller runs what the attempt held back (see _signals.critical_take)
            if deferred:  # a failed attempt: held back no longer than one poll
                run_deferred()
    finally:
        t.waiting = outer


def _check(v: Validator, t: Task, lock: Primitive, mode: int, alone_since: float | None) -> float | None:
    """One deadlock check of the wait of ``t`` for ``lock``: raise DeadlockError if it can never end.

    A wait for a hand-off (a Lock it holds itself, one its ended acquirer holds, one that names no
    blocker, or a queue's join that any thread may end: :func:`_is_handoff`) is stuck when nobody
    may move to release it (:func:`stuck_waits`), and given up only once found stuck for
    :data:`SELF_WAIT_GRACE_SECONDS` (a thread just started is seen nowhere yet): ``alone_since`` is
    when it was first found so at the checks before, None if it was not at the last; this returns
    it, updated.  Any other wait is stuck when it closes a cycle (:func:`find_wait_cycle`).
    """
    adopt_interrupted_attempt(t, lock)
    check_own_loop(v, t, lock)
    check_owner_ended(t, lock, mode)  # at each check: the owner may end while this thread waits
    with _waits:
        # Marking this thread as waiting, checking for a cycle and, on one, giving up the wait
        # happen together, so of the threads that close a cycle exactly one refuses.
        t.waiting = (lock, mode)
        owner = getattr(lock, "_owner", None)
        cycle = stuck = None
        if _is_handoff(v, lock, t, lock._blockers(mode, t.ident)):
            stuck, alone_since = _stuck_for_a_while(v, t, alone_since)
        else:
            cycle = find_wait_cycle(v, t)
            if cycle is not None and any(getattr(wait, "_ends_by_anyone", False) for _, wait in cycle):
                # Through a wait that any thread may end (the join of a queue whose items other
                # threads than their consumers mark done): a deadlock only while nobody may move.
                cycle = cycle if stuck_waits(v, t, handoff=False) is not None else None
            elif cycle is None and getattr(lock, "_live_blockers", False):
                # A wait for threads (a join, a future, a queue's join) with no cycle of marked
                # waits may still never end: behind threads idle in Python's own wait for anyone
                # to act (a consumer in Queue.get() that no thread is left to feed).
                if _waits_on_idle_threads(lock._blockers(mode, t.ident)):
                    stuck, alone_since = _stuck_for_a_while(v, t, alone_since)
                else:
                    alone_since = None
        if cycle is not None or stuck is not None:
            t.waiting = None
    if cycle is not None:
        raise DeadlockError(describe_cycle(cycle))
    if stuck is not None:
        if owner is t:  # a Lock it holds itself
            v.self_deadlock(t, lock)
            raise DeadlockError(describe_cycle([(t, lock)]))
        if owner in v.ended_holding:
            raise DeadlockError(
                f"deadlock: {t.comm} would wait for ever on {lock.name!r}: {owner.comm}, which took it, ended"
                " without releasing it, and no other thread is left that could"
            )
        if getattr(lock, "_live_blockers", False):  # a wait for threads; a lock's is reported as a lock's
            v.hung(t, stuck)
        raise DeadlockError(describe_stuck(stuck))
    return alone_since


Stuck = list[tuple[str, Primitive]]


def _stuck_for_a_while(v: Validator, t: Task, alone_since: float | None) -> tuple[Stuck | None, float | None]:
    """:func:`stuck_waits` for ``t``, once they have been found stuck for
    :data:`SELF_WAIT_GRACE_SECONDS` (a thread just started is seen nowhere yet), else None; and
    when they were first found stuck (``alone_since``, from the check before), None if not now."""
    stuck = stuck_waits(v, t)
    if stuck is None:
        return None, None
    if alone_since is None:
        return None, monotonic()
    return (stuck if monotonic() - alone_since >= SELF_WAIT_GRACE_SECONDS else None), alone_since


def another_thread_runs(v: Validator) -> bool:
    """Whether a thread other than the calling one may still act: one that runs Python code
    outside any wait (neither in a wait of pylockdep's nor idle in Python's own, :func:`idle_wait`),
    or one that native code started and Python does not see; pylockdep's own threads do not."""
    frames = other_threads_frames()
    if _native_threads() > len(frames) + 1:
        return True
    waiting = _waiting_threads(v)
    return any(
        ident not in waiting and ident not in OWN_THREADS and idle_wait(frame, frames) is None
        for ident, frame in frames.items()
    )


def _waiting_threads(v: Validator) -> set[int]:
    """The idents of the threads in a wait of pylockdep's (marked ``waiting``)."""
    return {task.ident for task in list(v.tasks.values()) if task.waiting is not None}


def _waits_on_idle_threads(blockers: list[int]) -> bool:
    """Whether each of the threads ``blockers`` (one at least) is idle in Python's own wait for any
    thread to act (:func:`idle_wait`).  Such a thread decides nothing itself, so a wait for it is
    the one to give up; a thread in a wait of pylockdep's is checked on its own and gives up for
    itself (the worker waiting for a hand-off that its joiner holds)."""
    frames = other_threads_frames()
    return bool(blockers) and all(
        (f := frames.get(i)) is not None and idle_wait(f, frames) is not None for i in blockers
    )


def stuck_at_exit(v: Validator, alone_since: float | None) -> tuple[Stuck | None, float | None]:
    """For the main thread at its end, joining the non-daemon threads (:data:`JOINS_AT_EXIT`): the
    waits that keep those joins from ever ending, as :func:`_stuck_for_a_while` finds them, while
    each of those threads is idle in Python's own wait for anyone (a worker in a ``Queue.get()``
    that no thread is left to feed); None while it is elsewhere, or a thread may still decide."""
    main = threading.main_thread().ident
    if main is None or not joining_at_exit(main) or not _waits_on_idle_threads(JOINS_AT_EXIT._blockers(0, main)):
        return None, None
    t = next((task for task in list(v.tasks.values()) if type(task) is Task and task.ident == main), None)
    return _stuck_for_a_while(v, t or Task("MainThread", main), alone_since)


def stuck_waits(v: Validator, t: Task, handoff: bool = True) -> list[tuple[str, Primitive]] | None:
    """The waits that can never end, as (thread name, what it waits for), ``t``'s first, if
    ``t``'s, a wait for a hand-off (:func:`_is_handoff`) unless ``handoff`` is false, is one of
    them; else None.

    A thread may still move if it is not waiting, and so may one whose wait some moving thread may
    let end: a wait for a ``threading.Lock`` nobody holds; for a hand-off (a Lock that names no
    blocker, that the waiter holds itself or that a thread which ended holds: any other thread may
    release it), a wait any thread may end (``_ends_by_anyone``: a queue's join) or a thread idle
    in Python's own wait for any thread to act (:func:`idle_wait`: an untimed ``Condition.wait()``,
    a pool's worker waiting for work) once any other thread may move; for work queued behind a full pool
    (``_needs_all``) once any of its blockers may; for anything else (a lock with holders, a join)
    once all of its blockers may.  The threads left wait for one another for ever.

    The main thread at its end waits for :data:`JOINS_AT_EXIT`.  A waiting main thread still moves
    if the program handles a signal in Python: the handler, run in the wait, may let anything go
    (a SIGTERM handler that tells the workers to stop).  Not when that wait is a handler's own:
    the code it interrupted, and what it holds, stay where they are until it returns (a handler
    that waits for a lock its thread holds, CPython's bpo-14976, is a deadlock).  pylockdep's own threads
    (:data:`OWN_THREADS`) release no program's lock and count for nothing.  A thread seen nowhere
    counts as moving: one started with ``_thread`` and not running yet (``_thread._count()`` says
    it exists), or one that native code started (:func:`_native_threads`), which may call back into
    Python at any time (a C library's callback releasing a Lock).

    Of the stuck threads, those holding what the others wait for give up first (None for the
    others until then): see :func:`_gives_up_first`.
    """
    frames = other_threads_frames()
    main = threading.main_thread().ident
    waits: dict[int, tuple[Task | None, str, Primitive, int]] = {}
    for task in list(v.tasks.values()):
        waiting = task.waiting
        if waiting is not None:
            waits[task.ident] = (task, task.comm, *waiting)
    if main not in waits and joining_at_exit(main, frames):
        waits[main] = (None, "MainThread", JOINS_AT_EXIT, 0)
    for ident, frame in frames.items():
        if ident not in waits and (idle := idle_wait(frame, frames)) is not None:
            thread = threading._active.get(ident)  # type: ignore[attr-defined]
            waits[ident] = (None, thread.name if thread is not None else str(ident), idle, 0)
    main_wait = waits.get(main)
    if handles_signals() and not (main_wait is not None and main_wait[0] is not None and main_wait[0].in_signal):
        waits.pop(main, None)
    # The usual case, decided at once: a thread runs Python code outside any wait, and may end t's.
    if handoff and _runs_outside_waits(frames, waits, t):
        return None
    alive = {thread.ident for thread in threading.enumerate() if thread.is_alive()}
    alive.update(frames)
    alive.add(_thread.get_ident())
    alive.discard(None)
    if _thread._count() > len(alive - {main}) or _native_threads() > len(alive):  # threads not seen
        return None
    waits = {ident: wait for ident, wait in waits.items() if ident in alive}
    moving = alive - waits.keys() - OWN_THREADS
    changed = True
    while changed and t.ident in waits:
        changed = False
        for ident, (task, _, lock, mode) in list(waits.items()):
            if _may_end(v, ident, task, lock, mode, moving):
                moving.add(ident)
                del waits[ident]
                changed = True
    if t.ident not in waits or not _gives_up_first(v, waits, t):
        return None
    first = waits.pop(t.ident)
    return [(name, lock) for _, name, lock, _ in (first, *waits.values())]


class _IdleWait:
    """What a thread waits for when it waits in Python's own code for any other thread to act: in
    ``Condition.wait()`` with no timeout (a ``Queue.get()``, an ``Event.wait()``, a
    ``Semaphore.acquire()``: any thread may notify), or as a pool's worker idle in its work
    queue's ``get()`` (any thread may submit): a wait that any thread may end (``_ends_by_anyone``),
    which may end once any other thread may move (see :func:`stuck_waits`).  Seen only there, in
    the threads' frames: no thread is marked waiting for one."""

    _owned = True
    _ends_by_anyone = True
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


NOTIFY = _IdleWait("(a notify, in Condition.wait())")
NEW_WORK = _IdleWait("(new work, idle in its pool)")
# Condition.wait()'s code: a thread whose innermost Python frame runs it waits there.
_CONDITION_WAIT = threading.Condition.wait.__code__


def idle_wait(frame: FrameType, frames: Mapping[int, FrameType] | None = None) -> _IdleWait | None:
    """What the thread whose innermost Python frame is ``frame`` waits for in Python's own code,
    if it waits there for any other thread to act (see :class:`_IdleWait`): in ``Condition.wait()``
    with no timeout, not notified yet (its waiter is still among the Condition's), or as a
    ``ThreadPoolExecutor``'s worker in its work queue while that is empty.  A wait with a timeout
    ends by itself: not one; nor does a thread notified, or with work queued, that has yet to run
    again (it waits for the interpreter's lock, which the caller holds: seen at that moment, a
    busy producer and consumer both look idle).  ``frames`` are the other threads' innermost
    frames, as the caller read them (read here if not given).  (The frame's locals are read only
    for these waits, and only here, on the way to deciding a stuck wait.)"""
    code = frame.f_code
    if code is _CONDITION_WAIT:
        scope = frame.f_locals
        if scope.get("timeout", 0) is not None or (waiter := scope.get("waiter")) is None:
            return None
        return NOTIFY if waiter in getattr(scope.get("self"), "_waiters", ()) else None
    pool = sys.modules.get("concurrent.futures.thread")
    worker = getattr(pool, "_worker", None)
    if worker is not None and code is getattr(worker, "__code__", None):
        frames = current_frames() if frames is None else frames
        return NEW_WORK if _no_work_coming(frame.f_locals, code, frames) else None
    return None


def _no_work_coming(scope: Mapping[str, Any], worker: CodeType, frames: Mapping[int, FrameType]) -> bool:
    """Whether a ``ThreadPoolExecutor`` worker, whose ``_worker`` frame (of code ``worker``) has
    the locals ``scope``, has no work coming: its work queue is empty, and the pool counts as many
    idle workers as it has workers waiting in that queue, by their innermost ``frames`` (a submit
    claims an idle worker first, and on 3.13 its put hands the item to a waiting worker at once,
    leaving the queue empty before that worker runs)."""
    work = scope.get("work_queue")
    if work is None or work.qsize():
        return False
    reference = scope.get("executor_reference")
    executor = reference() if reference is not None else None
    idle = getattr(getattr(executor, "_idle_semaphore", None), "_value", None)
    if idle is None:
        return True
    waiting = sum(
        1
        for thread in list(getattr(executor, "_threads", ()))
        if (frame := frames.get(thread.ident)) is not None and frame.f_code is worker
    )
    return idle >= waiting


def _native_threads() -> int:
    """How many threads the process has, Python's and those native code started, where the system
    tells (Linux's ``/proc``); else 0."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _gives_up_first(v: Validator, waits: dict[int, tuple[Task | None, str, Primitive, int]], t: Task) -> bool:
    """Whether ``t``, stuck with the threads of ``waits``, is to give up its wait now: unless the
    Lock it waits for was taken by another of them that waits for a hand-off too, which then
    gives up first (the worker waiting for the Lock it holds itself, rather than the thread
    waiting for that worker's Lock), unless such takers lead back to ``t`` (each holds a token the
    other waits for: any may).  A taker whose wait is no hand-off (a join) never decides for a
    hand-off: ``t`` does."""
    holder = t
    seen = set()
    while True:
        owner = getattr(waits[holder.ident][2], "_owner", None)
        if owner is None or owner is holder or owner.ident not in waits or waits[owner.ident][0] is not owner:
            return holder is t
        _, _, lock, mode = waits[owner.ident]
        if not _is_handoff(v, lock, owner, lock._blockers(mode, owner.ident)):
            return holder is t
        if owner is t:
            return True
        if owner.ident in seen:
            return False  # a cycle of takers without t: theirs to give up
        seen.add(owner.ident)
        holder = owner


def _may_end(v: Validator, ident: int, task: Task | None, lock: Primitive, mode: int, moving: set[int]) -> bool:
    """Whether the wait of the thread ``ident`` (``task``, if it has one) for ``lock`` may end
    once the threads ``moving`` move (see :func:`stuck_waits`)."""
    if not lock._owned and getattr(lock, "_owner", None) is None:
        return True
    if getattr(lock, "_ends_by_anyone", False):  # a queue's join, an idle wait: any thread may end it
        return bool(moving)
    blockers = lock._blockers(mode, ident)
    if task is not None and _is_handoff(v, lock, task, blockers):
        return bool(moving)
    if getattr(lock, "_needs_all", False):
        return any(blocker in moving for blocker in blockers)
    return all(blocker in moving for blocker in blockers)


def _is_handoff(v: Validator, lock: Primitive, task: Task, blockers: list[int]) -> bool:
    """Whether ``task``'s wait for ``lock``, which ``blockers`` block, is a wait for a hand-off: a
    held ``threading.Lock`` that any thread may release, as it names no blocker, or ``task`` holds
    it itself, or the thread that took it ended; or a wait that any thread may end (a queue's
    join once its items were seen marked done by others: ``_ends_by_anyone``), or a queue's join
    among whose blockers ``task`` is (``_joins_queue``)."""
    if getattr(lock, "_ends_by_anyone", False):
        return True
    if getattr(lock, "_joins_queue", False):  # a consumer joining its own queue, or consumers that ended
        return task.ident in blockers or not any(ident in threading._active for ident in blockers)
    if lock._owned:
        return False
    owner = getattr(lock, "_owner", None)
    return owner is not None and (not blockers or owner is task or owner in v.ended_holding)


# threading's end of the main thread, which joins every non-daemon thread before the interpreter
# runs its exit handlers: a thread there releases nothing until those threads have ended.
_SHUTDOWN_CODE = threading._shutdown.__code__  # type: ignore[attr-defined]


def joining_at_exit(ident: int, frames: dict[int, FrameType] | None = None) -> bool:
    """Whether the thread ``ident`` is the main thread at its end, in threading's ``_shutdown()``,
    where it waits for :data:`JOINS_AT_EXIT`.  ``frames``: :func:`~pylockdep._frames.current_frames`
    if the caller has them; else they are copied only for the main thread."""
    if ident != threading.main_thread().ident:
        return False
    frame = (current_frames() if frames is None else frames).get(ident)
    return frame is not None and frame.f_code is _SHUTDOWN_CODE


def waits_for_work(task: Task) -> bool:
    """Whether the thread of ``task`` waits for other threads' work, not for a lock: a join, a
    future, a queue, or the main thread's end (a wait whose blockers are read live)."""
    waiting = task.waiting
    if waiting is not None:
        return getattr(waiting[0], "_live_blockers", False)
    return joining_at_exit(task.ident)


class _JoinsAtExit:
    """The wait of the main thread at its end, as the deadlock check sees it: for every live
    non-daemon thread, each of which it joins (stuck as soon as one of them is)."""

    _owned = True
    _needs_all = False
    _live_blockers = True  # see _CycleSearch.reaches
    name = "(non-daemon threads, joined at exit)"

    def _blockers(self, mode: int, ident: int) -> list[int]:
        return [
            thread.ident
            for thread in threading.enumerate()
            if not thread.daemon and thread.ident != ident and thread.is_alive() and thread.ident is not None
        ]


JOINS_AT_EXIT = _JoinsAtExit()


def describe_cycle(cycle: list[tuple[Task, Primitive]]) -> str:
    """One line per waiting thread: who waits for which lock held by whom."""
    if len(cycle) == 1:
        task, lock = cycle[0]
        if getattr(lock, "_needs_all", False):
            return f"deadlock: {task.comm} would wait for ever on {lock.name!r}, queued behind itself in a full pool"
        return (
            f"deadlock: {task.comm} would wait for ever on {lock.name!r}, which it holds itself (or which waits for it)"
        )
    parts = [f"{task.comm} waits for {lock.name!r}" for task, lock in cycle]
    return "deadlock: " + " -> ".join(parts) + f" -> held by {cycle[0][0].comm}"


def describe_stuck(stuck: list[tuple[str, Primitive]]) -> str:
    """One line for threads that wait for one another for ever, the first of them the one that gives up."""
    parts = [f"{name} waits for {lock.name!r}" for name, lock in stuck]
    return "deadlock: " + ", ".join(parts) + "; no other thread is left that could let these waits end"


#: The code of the pure path's with-block entries (see :func:`pylockdep._locks.pure_fast_with`),
#: each with the line of its attempt on the lock, which records no owner with the attempt.
TAKING: dict[CodeType, int] = {}


def adopt_interrupted_attempt(t: Task, lock: Primitive) -> None:
    """Record ``t`` as the owner of ``lock`` if ``lock`` is locked with no owner and a frame of
    this thread's stack is a pure with-block entry of ``lock`` stopped at its attempt on it
    (:data:`TAKING`): a finalizer or profile hook that runs between the attempt and the recording
    of its outcome, and waits for the lock, waits for its own thread, which took it.  (The attempt
    may have failed only if the lock's holder is itself stopped between its attempt and that
    recording; this runs after the wait's first slice.)"""
    if getattr(lock, "_owner", True) is not None or not lock._is_held(0):
        return
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        line = TAKING.get(frame.f_code)
        if line is not None and frame.f_lineno == line and frame.f_locals.get("self") is lock:
            lock._owner = t
            return
        frame = frame.f_back


def check_own_loop(v: Validator, t: Task, lock: Primitive) -> None:
    """Refuse to block a thread on a lock that a suspended asyncio task of the thread's own event
    loop holds: only the blocked thread could run that task again (the task's suspension was
    reported as ``scheduling_while_atomic``).  Unless it is a ``threading.Lock`` that the task
    took by a bare ``acquire()``, not a ``with`` block, which another thread may release, while
    one runs Python code outside any wait."""
    owner = getattr(lock, "_owner", None)
    if owner is None or owner is t or getattr(owner, "loop_thread", None) != _thread.get_ident() or owner.running:
        return
    if not lock._owned and taken_bare(owner, lock) is not None:
        if _runs_outside_waits(other_threads_frames(), _waiting_threads(v), t):
            return
    raise DeadlockError(
        f"deadlock: {t.comm} would block the event loop's thread for ever on {lock.name!r}, held by "
        f"{owner.comm}, a task of that loop suspended while holding it"
    )


def taken_bare(holder: Task, lock: Primitive) -> CodeType | None:
    """The code that took ``lock``, which ``holder`` holds, by a bare ``acquire()``; None if
    ``holder`` holds it by a ``with`` block (whose end releases it in the same thread), or not at
    all.  A ``threading.Lock`` held so may be a gate or a signal that another thread releases."""
    entry = next((e for e in list(holder.held) if e[H_LOCK] is lock), None)
    if entry is None or enters_with(entry[H_CODE], entry[H_LASTI]):
        return None
    return entry[H_CODE]  # type: ignore[no-any-return]


def _runs_outside_waits(frames: dict[int, FrameType], waiting: Container[int], t: Task) -> bool:
    """Whether a thread other than ``t``'s runs Python code (is in ``frames``) outside the waits of
    the threads ``waiting``, and is not one of pylockdep's own: it may let a hand-off go."""
    return any(ident != t.ident and ident not in waiting and ident not in OWN_THREADS for ident in frames)


def check_owner_ended(t: Task, lock: Primitive, mode: int) -> None:
    """Refuse to block a thread on a lock with an owner (an ``RLock``, the kernel's types) whose
    owner thread ended without releasing it: no other thread may release such a lock, so the wait
    could never end (the owner's end was reported as ``lock_held_at_exit``).  A thread counts as
    ended when it is neither among :mod:`threading`'s live threads nor running Python code.  (An
    SRCU's or RCU's readers are :mod:`pylockdep._rcu`'s to judge.)"""
    key = getattr(lock, "_key", None)
    if key is None or not key.ltype.owned or key.ltype.suspends or key.ltype in (SRCU, RCU, RCU_SCHED):
        return
    owners = lock._blockers(mode, t.ident)
    if not owners:
        return
    owner = getattr(lock, "_owner", None)
    alive = {thread.ident for thread in threading.enumerate() if thread.is_alive()}
    if any(ident in alive for ident in owners):
        return
    # Only then the threads running Python code that threading does not know: the interpreter's
    # list of threads is locked for the copy, which is not to be done at each wait.
    running = other_threads_frames()
    if any(ident in running for ident in owners):
        return
    # The owners read first may have released the lock and ended before the threads were listed
    # (this thread may lose the GIL in between): only owners that still hold it ended holding it.
    if getattr(lock, "_owner", None) is not owner or lock._blockers(mode, t.ident) != owners:
        return
    raise DeadlockError(
        f"deadlock: {t.comm} would wait for ever on {lock.name!r}: its owner, thread {owners[0]}, ended without"
        " releasing it"
    )
