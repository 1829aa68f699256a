"""The garbage collector as Python's other interrupt: the GC usage state.

A collection runs the finalizers of the garbage it finds (``__del__`` methods, weakref callbacks,
``weakref.finalize``) in whichever thread started it, at an allocation or a ``gc.collect()``,
between two instructions of whatever that thread was running, whatever it holds.  CPython's
documentation of ``object.__del__`` warns that a finalizer taking a lock may so deadlock with the
code it interrupted.  The collector is therefore an interrupt that every thread may take:
:func:`_phase`, one of ``gc.callbacks``, marks the collecting thread's holder ``in_gc`` from the
start of a collection to its end, and the rules give the locks taken meanwhile the GC usage state
(see :func:`pylockdep._checks.acquire_usage`).  ``in_gc`` is one of the holder's context
counters, so a chain taken in a finalizer is validated apart from the same chain taken outside.

Not seen: a finalizer that runs because the last reference to its object went away, which no hook
announces.  It interrupts its thread just as well, but only where that thread drops the reference.
"""

from __future__ import annotations

import gc
from _thread import get_ident
from typing import Any

from ._signals import dropping, raise_landed
from ._task import Task

#: Whether :func:`install` is still to be done: until the first holder is made
#: (``Validator.new_task``).
wanted = True
#: The object whose ``validator`` is the active validator (``pylockdep._validator.active``, set
#: there: that module imports this one).
active: Any = None
# The holder the running collection marked, unmarked when it ends (one collection runs at a time).
_collecting: Task | None = None
# The thread running a collection, while one runs.
_collecting_ident: int | None = None


@dropping
def _phase(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks``' hook: mark the calling thread's holder as running a collection, from its
    ``start`` to its ``stop``.  A thread that has no holder yet gets none here (a collection may
    start before :mod:`threading` knows the thread, which would name its holder): the holder a
    finalizer's first lock makes is marked then (:func:`adopt`).

    The collector drops what its callbacks raise: a signal that lands here is kept and raised
    again as the collection stops (see :func:`pylockdep._signals.dropping`), so that a
    ``KeyboardInterrupt`` reaches the program, and the holder's flag is not left set."""
    global _collecting, _collecting_ident
    if phase == "start":
        v = active.validator
        if v.off:
            return
        _collecting_ident = get_ident()
        t = getattr(v.local, "task", None)
        if t is not None:
            _mark(t)
    else:
        _collecting_ident = None
        if _collecting is not None:
            t, _collecting = _collecting, None
            t.in_gc = False
            t.update_ctx()
        raise_landed()


def adopt(t: Task) -> None:
    """``t`` was just made the calling thread's holder: if a collection runs on the thread (a
    finalizer took the thread's first lock), ``t`` runs in it."""
    if _collecting_ident == get_ident() and _collecting is None:
        _mark(t)


def _mark(t: Task) -> None:
    global _collecting
    t.in_gc = True
    t.update_ctx()
    _collecting = t


def install() -> None:
    """Add :func:`_phase` to ``gc.callbacks`` (once)."""
    global wanted
    wanted = False
    if _phase not in gc.callbacks:
        gc.callbacks.append(_phase)
