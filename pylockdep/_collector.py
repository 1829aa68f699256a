"""The garbage collector as Python's other interrupt: the GC usage state.

A collection runs the finalizers of the garbage it finds (``__del__`` methods, weakref callbacks,
``weakref.finalize``) in whichever thread started it, at an allocation or a ``gc.collect()``,
between two instructions of whatever that thread was running, whatever it holds.  CPython's
documentation of ``object.__del__`` warns that a finalizer taking a lock may so deadlock with the
code it interrupted.  The collector is therefore an interrupt that every thread may take:
two of ``gc.callbacks``, :func:`_begin` kept first and :func:`_end` kept last, mark the
collecting thread's holder ``in_gc`` from the start of a collection to its end, and the rules give
the locks taken meanwhile the GC usage state (see :func:`pylockdep._checks.acquire_usage`).  The
program's own ``gc.callbacks`` hooks run in between, as interrupting as a finalizer
(prometheus_client's GC metrics once observed their histograms there, under the histograms'
locks).  ``in_gc`` is one of the holder's context counters, so a chain taken in a finalizer is
validated apart from the same chain taken outside.

A finalizer may take a lock that is itself garbage, as ``IOBase.__del__`` closes its own file
under the buffer's lock: no live thread can reach that lock, so none can hold it.  Whether a lock
was garbage is known only once the collection has freed it, so the usage of a lock taken in a
finalizer waits for the collection's end (:func:`decide_at_end`) and counts only if the lock
survived it.

Not seen: a finalizer that runs because the last reference to its object went away, which no hook
announces.  It interrupts its thread just as well, but only where that thread drops the reference.
"""

from __future__ import annotations

import gc
import sys
import weakref
from _thread import get_ident
from collections.abc import Callable, Hashable
from typing import Any

from ._frames import outside_frame
from ._signals import dropping, raise_landed
from ._task import Task

#: Whether :func:`install` is still to be done: until the first holder is made
#: (``Validator.new_task``).
wanted = True
#: The object whose ``validator`` is the active validator (``pylockdep._validator.active``, set
#: there: that module imports this one).
active: Any = None
# The holder the running collection marked, unmarked when it ends (one collection runs at a time),
# and its GC flag and interrupted frame before: a collection may start inside a signal handler,
# whose interrupted frame the holder gets back when the collection ends.
_collecting: Task | None = None
_before: tuple[bool, int | None] = (False, None)
# The thread running a collection, while one runs.
_collecting_ident: int | None = None
# The identity of the frame the running collection interrupted: the holder's ``interrupted`` while it
# runs.  Not the frame: a reference to it would keep alive what its code refers to, such as a task
# the collection would otherwise finalize.
_interrupted: int | None = None
# The usages that wait for the running collection's end, by what decide_at_end() was given as key:
# weak references to the locks taken, and what marks the usage if one of them survives.
_undecided: dict[Hashable, tuple[list[weakref.ref], Callable[[object], None]]] = {}


# The phases, looked up in sets: an == of two strings may meet the recursion limit, a set's
# lookup of a string does not.
_START, _STOP = frozenset({"start"}), frozenset({"stop"})


@dropping
def _begin(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks``' first hook: at a collection's ``start``, mark the calling thread's holder
    as running it (:func:`_start`).  A hook put before it (``gc.callbacks.insert(0, ...)``) ran
    outside the collection this time; this one moves back to the front for the next.

    The collector drops what its callbacks raise: a signal that lands here is kept (see
    :func:`pylockdep._signals.dropping`) and raised again by :func:`_end` as the collection stops,
    so that a ``KeyboardInterrupt`` reaches the program rather than a finalizer, and the holder's
    flag is not left set."""
    if phase in _START:
        callbacks = gc.callbacks
        if callbacks[0] is not _begin:
            # CPython calls the list's items by index as it stands: with this one moved from here
            # to the front, the next index is still the next hook.
            _drop(callbacks, _begin, len(callbacks))
            callbacks.insert(0, _begin)
        try:
            _start()
        except RecursionError:
            pass  # a collection at the program's recursion limit: left unmarked, not a traceback


@dropping
def _end(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks``' last hook: at a collection's ``stop``, once every other hook has run,
    unmark the holder and decide the usages left for the end.  A hook appended
    after it would run after that: this one appends itself again, which CPython, calling the
    list's items by index as it grows, calls after them, and the first place is then dropped.
    The signals kept in the collection's hooks are raised again last (see :func:`_begin`)."""
    global _collecting, _collecting_ident
    if phase not in _STOP:
        return
    callbacks = gc.callbacks
    if callbacks[-1] is not _end:
        callbacks.append(_end)
        return
    # Unmarked with no call first: at the recursion limit a call may be refused, and the rest then
    # waits (the holder's context signature for its next change; the usages left for the end, an
    # earlier place of this hook and the signals kept for the next collection's end).
    _collecting_ident = _interrupted = None
    t, _collecting = _collecting, None
    if t is not None:
        t.in_gc, t.interrupted = _before
    try:
        _drop(callbacks, _end, len(callbacks) - 1)  # the place it was called from first
        if t is not None:
            t.update_ctx()
        _decide()
        raise_landed()
    except RecursionError:
        pass


def _drop(callbacks: list[Any], hook: object, end: int) -> None:
    """Take ``hook`` out of ``callbacks[:end]`` (by identity: a comparison may meet the recursion
    limit)."""
    for index in range(end - 1, -1, -1):
        if callbacks[index] is hook:
            del callbacks[index]


def _start() -> None:
    """A collection starts in this thread: mark its holder.  A thread that has no holder yet gets
    none here (a collection may start before :mod:`threading` knows the thread, which would name
    its holder): the holder a finalizer's first lock makes is marked then (:func:`adopt`)."""
    global _collecting_ident, _interrupted
    v = active.validator
    if v.off:
        return
    _collecting_ident = get_ident()
    _interrupted = id(outside_frame(sys._getframe(1)))
    t = getattr(v.local, "task", None)
    if t is not None:
        _mark(t)


def adopt(t: Task) -> None:
    """``t`` was just made the calling thread's holder: if a collection runs on the thread (a
    finalizer took the thread's first lock), ``t`` runs in it."""
    if _collecting_ident == get_ident() and _collecting is None:
        _mark(t)


def _mark(t: Task) -> None:
    global _collecting, _before
    _before = (t.in_gc, t.interrupted)
    _collecting = t  # the collection's end unmarks it, whatever fails after
    t.in_gc = True
    t.interrupted = _interrupted
    t.update_ctx()


def install() -> None:
    """Put :func:`_begin` first in ``gc.callbacks`` and :func:`_end` last (once)."""
    global wanted
    wanted = False
    if _begin not in gc.callbacks:
        gc.callbacks.insert(0, _begin)
        gc.callbacks.append(_end)


def decide_at_end(key: Hashable, lock: object, marker: Callable[[], Callable[[object], None]]) -> bool:
    """Leave the usage of ``lock``, taken in a finalizer of the running collection, to the
    collection's end, and return True: then ``mark(survivor)`` is called with ``lock`` if the
    collection did not free it, where ``mark`` is what ``marker()`` returns.  Acquisitions with the
    same ``key`` share one ``mark``, made at the first (so a collection that finalizes many objects
    of one class captures one stack), and it is called for the first of their locks that survived.
    Returns False, with nothing done, for a lock that cannot be referenced weakly."""
    try:
        ref = weakref.ref(lock)
    except TypeError:
        return False
    waiting = _undecided.get(key)
    if waiting is None:
        _undecided[key] = ([ref], marker())
    else:
        waiting[0].append(ref)
    return True


def _decide() -> None:
    """The collection ended: mark the usages whose lock survived it; forget those of its garbage."""
    if not _undecided:
        return
    waiting = list(_undecided.values())
    _undecided.clear()
    for refs, mark in waiting:
        survivor = next((lock for lock in (ref() for ref in refs) if lock is not None), None)
        if survivor is not None:
            mark(survivor)
