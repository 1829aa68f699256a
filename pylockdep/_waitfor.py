"""Actual deadlocks: a wait that can never end is refused instead of hanging.

Lockdep proves what *could* deadlock.  When a thread is about to block, this module also asks
whether it *will* block for ever: the lock's holders (or, for readers and writers, whoever it
queues behind) are followed through what each of them waits for; coming back to the waiting
thread is a cycle of threads, and the wait raises :class:`DeadlockError`.  Locks without an owner
(``threading.Lock``) never count: any thread may still release them.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._primitive import Primitive
from ._report import DeadlockError
from ._task import Task

if TYPE_CHECKING:
    from ._validator import Validator

POLL_SECONDS = 0.05
_waits = _thread.allocate_lock()


def find_wait_cycle(v: Validator, t: Task) -> list[tuple[Task, Primitive]] | None:
    """The cycle of (task, lock it waits for) that starts and ends at ``t``, if there is one."""
    by_ident = {task.ident: task for task in list(v.tasks.values())}
    path: list[tuple[Task, Primitive]] = []
    seen: set[int] = set()

    def visit(task: Task) -> bool:
        waiting = task.waiting
        if waiting is None:
            return False
        lock, mode = waiting
        path.append((task, lock))
        for ident in lock._blockers(mode, task.ident):
            if ident == t.ident:
                return True
            holder = by_ident.get(ident)
            if holder is not None and ident not in seen:
                seen.add(ident)
                if visit(holder):
                    return True
        path.pop()
        return False

    return path if visit(t) else None


def wait(v: Validator, t: Task, lock: Primitive, mode: int, acquire_timed: Callable[[float], bool]) -> None:
    """Block until ``acquire_timed`` succeeds, unless the wait closes a cycle of waiting threads.

    The cycle is checked before blocking and again every :data:`POLL_SECONDS`, so a cycle that
    forms while threads race into their waits is still found.  A lock held by a suspended asyncio
    task of the event loop that runs on this very thread can never come free: that raises at once.
    """
    check_own_loop(t, lock)
    try:
        while True:
            with _waits:
                # Marking this thread as waiting, checking for a cycle and, on one, giving up the
                # wait happen together, so of the threads that close a cycle exactly one refuses.
                t.waiting = (lock, mode)
                cycle = find_wait_cycle(v, t) if lock._owned else None
                if cycle is not None:
                    t.waiting = None
            if cycle is not None:
                raise DeadlockError(describe_cycle(cycle))
            if acquire_timed(POLL_SECONDS):
                return
    finally:
        t.waiting = None


def describe_cycle(cycle: list[tuple[Task, Primitive]]) -> str:
    """One line per waiting thread: who waits for which lock held by whom."""
    if len(cycle) == 1:
        task, lock = cycle[0]
        return (
            f"deadlock: {task.comm} would wait for ever on {lock.name!r}, which it holds itself (or which waits for it)"
        )
    parts = [f"{task.comm} waits for {lock.name!r}" for task, lock in cycle]
    return "deadlock: " + " -> ".join(parts) + f" -> held by {cycle[0][0].comm}"


def check_own_loop(t: Task, lock: Primitive) -> None:
    """Refuse to block a thread on a lock that a suspended asyncio task of the thread's own event
    loop holds: only the blocked thread could run that task again (the task's suspension was
    reported as ``scheduling_while_atomic``)."""
    owner = getattr(lock, "_owner", None)
    if owner is None or owner is t or getattr(owner, "loop_thread", None) != _thread.get_ident() or owner.running:
        return
    raise DeadlockError(
        f"deadlock: {t.comm} would block the event loop's thread for ever on {lock.name!r}, held by "
        f"{owner.comm}, a task of that loop suspended while holding it"
    )
