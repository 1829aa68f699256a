"""What every thread holds and waits for: the dump to read when a program hangs.

Modelled on the kernel's hung-task report followed by ``debug_show_all_locks()``: one line per
thread blocked on a validated lock, naming the threads that hold it, then "Showing all locks held
in the system:" with each thread's held locks, oldest first.  It reads other threads' state
without locking anything, so it can run while they are stuck (and may be a moment out of date).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import _splat
from ._classes import LockClass

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


def _blockers(lock: Any, mode: int, ident: int) -> list[int]:
    """Idents of the threads a waiter for ``lock`` in ``mode`` waits for, as far as is known.

    A lock without an owner (``threading.Lock``) names none, since any thread may release it;
    the thread that took it is named then.
    """
    blockers = getattr(lock, "_blockers", None)
    try:
        idents = list(blockers(mode, ident)) if blockers is not None else []
    except Exception:  # another thread changed the lock under us; the dump is best effort
        idents = []
    taker = getattr(lock, "_owner", None)
    if not idents and taker is not None:
        idents = [taker.ident]
    return idents


def _lock_line(v: Validator, lock: Any) -> str:
    """`` <addr> (name){usage}-{o:i}`` for the lock a thread waits for (no site: not taken yet)."""
    cls = _class_of(v, lock)
    if cls is None:
        return f" {id(lock):016x} ({getattr(lock, 'name', type(lock).__name__)})"
    return f" {id(lock):016x}{_splat.lname(v, cls)}"


def _class_of(v: Validator, lock: Any) -> LockClass | None:
    key = getattr(lock, "_key", None)
    if key is None or key.validator is not v:
        return None
    return next((cls for cls in key.classes if cls is not None), None)
