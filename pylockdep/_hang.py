"""What every thread holds and waits for: the dump to read when a program hangs.

Modelled on the kernel's hung-task report followed by ``debug_show_all_locks()``: one line per
thread blocked on a validated lock, naming the threads that hold it, then "Showing all locks held
in the system:" with each thread's held locks, oldest first.  It reads other threads' state
without locking anything, so it can run while they are stuck (and may be a moment out of date).
"""

from __future__ import annotations

import _thread
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _splat, _waitfor
from ._classes import LockClass
from ._plain import plain_lock
from ._primitive import LockMap, Primitive

if TYPE_CHECKING:
    from ._validator import Validator

RULE = "=" * 45


def show_all_locks(v: Validator, header: str = "") -> list[str]:
    """The dump for validator ``v``: blocked threads first, then every thread holding locks."""
    tasks = [t for t in list(v.tasks.values()) if t.held or t.waiting is not None]
    by_ident = {t.ident: t for t in tasks}
    lines = [header] if header else []
    for t in tasks:
        waiting = t.waiting
        if waiting is None:
            continue
        lock, mode = waiting
        holders = [by_ident[i].comm if i in by_ident else f"thread {i}" for i in _blockers(lock, mode, t.ident)]
        lines.append(f"INFO: task {t.comm} blocked on lock:")
        lines.append(_lock_line(v, lock))
        lines.append(f" held by: {', '.join(holders)}" if holders else " held by: (no validated holder)")
    lines += ["", "Showing all locks held in the system:"]
    for t in tasks:
        if t.held:
            lines += _splat.held_lines(v, t)
    if not any(t.held for t in tasks):
        lines.append("no validated locks held (Python's threading locks are validated only when instrumented)")
    lines += ["", RULE, ""]
    return lines


def print_dump(v: Validator, header: str = "", trailer: str = "") -> None:
    """Write :func:`show_all_locks`, then ``trailer``, to the process's standard error.

    That is the real stream even while pytest captures ``sys.stderr``; pytest's file-descriptor
    capture (its default) still collects it.
    """
    stream = sys.__stderr__
    if stream is None:
        return
    stream.write("\n".join(show_all_locks(v, header)) + "\n" + (trailer + "\n" if trailer else ""))
    stream.flush()


def _blockers(lock: Primitive, mode: int, ident: int) -> list[int]:
    """Idents of the threads a waiter for ``lock`` in ``mode`` waits for, as far as is known.

    A lock without an owner (``threading.Lock``) names none, since any thread may release it;
    the thread that took it is named then.  A wait for work (a join, a future) has no taker at all.
    """
    try:
        idents = list(lock._blockers(mode, ident))
    except Exception:  # another thread changed the lock under us; the dump is best effort
        idents = []
    taker = getattr(lock, "_owner", None)
    if not idents and taker is not None:
        idents = [taker.ident]
    return idents


def _lock_line(v: Validator, lock: LockMap) -> str:
    """`` <addr> (name){usage}-{o:i}`` for the lock a thread waits for (no site: not taken yet)."""
    cls = _class_of(v, lock)
    if cls is None:
        return f" {id(lock):016x} ({lock.name})"
    return f" {id(lock):016x}{_splat.lname(v, cls)}"


def _class_of(v: Validator, lock: LockMap) -> LockClass | None:
    key = lock._key  # None for a wait for a pool's worker thread, which has no map of its own
    if key is None or key.validator is not v:
        return None
    return next((cls for cls in key.classes if cls is not None), None)


class Watchdog:
    """A thread that runs an action once an armed deadline passes, unless disarmed first.

    One thread serves every deadline, armed and disarmed in turn (one per test, say), so that
    starting and ending threads does not change the thread counts that tests may check.  It is a
    raw ``_thread`` thread waiting on raw locks: it never appears in ``threading.enumerate()``,
    and never among the threads and locks it reports on (not even with threading instrumented).
    """

    def __init__(self) -> None:
        self._mutex = plain_lock()  # guards the fields below
        self._wake = plain_lock()  # held while the thread has nothing new to look at
        self._wake.acquire()
        self._deadline: float | None = None
        self._action: Callable[[], None] | None = None
        self._stopped = False
        _waitfor.OWN_THREADS.add(_thread.start_new_thread(self._run, ()))

    def arm(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` (on the watchdog's thread) ``delay`` seconds from now; replaces any armed one."""
        self._set(time.monotonic() + delay, action)

    def disarm(self) -> None:
        """Forget the armed action, if it has not run yet."""
        self._set(None, None)

    def stop(self) -> None:
        """End the thread; the watchdog cannot be armed again."""
        with self._mutex:
            self._stopped = True
        self._set(None, None)

    def _set(self, deadline: float | None, action: Callable[[], None] | None) -> None:
        with self._mutex:
            self._deadline, self._action = deadline, action
            if self._wake.locked():
                self._wake.release()

    def _run(self) -> None:
        while True:
            with self._mutex:
                if self._stopped:
                    _waitfor.OWN_THREADS.discard(_thread.get_ident())
                    return
                deadline, action = self._deadline, self._action
                if action is not None and deadline is not None and time.monotonic() >= deadline:
                    self._deadline = self._action = None
                else:
                    action = None
            if action is not None:
                try:
                    action()
                except Exception:  # a raw thread would print it without context
                    print("pylockdep: the watchdog's action failed:", file=sys.__stderr__)
                    traceback.print_exc(file=sys.__stderr__)
                continue
            wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            self._wake.acquire(timeout=wait)
