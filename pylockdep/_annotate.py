"""Annotations a program makes about its locks: :func:`set_class`, :func:`nested`, :class:`lockdep_off`.

These teach the validator what it cannot see for itself, as the kernel's ``lockdep_set_class()``,
``mutex_lock_nested()`` and ``lockdep_off()`` do.  Each accepts locks pylockdep does not validate
(CPython's own, made before or without instrumentation) and then does nothing, so annotated code
runs the same with and without pylockdep.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from . import _waits
from ._classes import LockKey, count_made, keep_made_at, key_for, lock_key
from ._frames import caller_site, format_file_line
from ._locks import _check_subclass
from ._locktypes import COMPLETION
from ._task import Task
from ._threading import Lock, Nested, RLock
from ._validator import active

__all__ = ["lockdep_off", "nested", "set_class"]

L = TypeVar("L")


def set_class(lock: Any, name: str) -> None:
    """Give ``lock`` its own lock class, named ``name`` (the kernel's ``lockdep_set_class()``).

    Every lock of one type given the same ``name`` shares that class, wherever it was made; the
    class is the lock's from its next acquisition on.  A Python lock's class name gets the site of
    the first ``set_class()`` call for it, ``NAME@file.py:LINE`` (so suppressions and outside
    tools can match it); a kernel lock type's is ``name`` as given.  Since one name may gather
    locks made at many sites, a report names each such lock it shows with where that lock was
    made (``, made at file.py:LINE`` on its line).  A lock pylockdep does not validate is left
    alone; anything that is not a lock is a TypeError.

    A ``queue.Queue`` or an ``asyncio.Queue`` takes a name too: its map, whose class is otherwise
    the line that made it (every worker object's queue made in one ``__init__`` shares it), gets
    the class ``(queue)NAME@file.py:LINE`` from then on; call it before the queue's items are
    taken.  A queue made without instrumentation is left alone.
    """
    if _is_queue(lock):
        _set_queue_class(lock, name)
        return
    key = _lock_key(lock, "set_class")
    _check_class_name(name)
    if not key:
        return
    ltype = key.ltype
    site = caller_site()
    shown = f"{name}@{format_file_line(site)}" if ltype.python else name
    keep_made_at(lock, key.site)
    lock._key = new = key_for(shown, ltype, site, ("set_class", ltype.name, name))
    count_made(new, lock)


def _is_queue(obj: object) -> bool:
    """Whether ``obj`` is a queue of :mod:`queue` or :mod:`asyncio` (neither imported for this)."""
    return any(
        module is not None and isinstance(obj, module.Queue)
        for module in (sys.modules.get("queue"), sys.modules.get("asyncio"))
    )


def _check_class_name(name: object) -> None:
    """A class name given to :func:`set_class` must be a non-empty str: TypeError otherwise."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a lock class needs a non-empty name (str), not {name!r}")


def _set_queue_class(q: Any, name: str) -> None:
    """:func:`set_class` of a queue: a class of its own for its map, named after ``name``."""
    _check_class_name(name)
    m = getattr(q, _waits._MAP, None)
    if isinstance(m, _waits.CompletionMap):
        site = caller_site()
        m._key = key_for(f"(queue){name}@{format_file_line(site)}", COMPLETION, site, ("set_class", "queue", name))


def nested(lock: L, subclass: int) -> AbstractContextManager[L]:
    """Hold ``lock`` for a with-block as nesting subclass ``subclass`` (1..7), as ``.nested()``
    does for the kernel lock types (``mutex_lock_nested()``).

    Works for instrumented ``threading.Lock``/``RLock`` (an RLock its owner holds is only entered
    again) and for the kernel lock types; any other lock is simply held.  A subclass that is not
    an int is a TypeError, one out of range a ValueError, and so is anything that is not a lock
    a TypeError, for every lock alike.
    """
    key = _lock_key(lock, "nested")
    _check_subclass(subclass)
    if isinstance(lock, (Lock, RLock)):
        return Nested(lock, subclass)
    method = getattr(lock, "nested", None)
    if method is not None and key:
        return method(subclass)
    return lock  # type: ignore[return-value]  # CPython's own locks are context managers


def _lock_key(lock: object, caller: str) -> LockKey | bool:
    """:func:`~pylockdep._classes.lock_key` of an annotation's lock; TypeError for what is not a
    lock, which an annotation would otherwise skip in silence."""
    key = lock_key(lock)
    if key is None:
        raise TypeError(f"{caller}() needs a lock (with acquire() and release()), not {type(lock).__name__}")
    return key


class lockdep_off:  # noqa: N801 - a context manager named as the API promises
    """Suspend validation for the calling thread inside the block (the kernel's ``lockdep_off()``).

    Nothing the thread does in the block is checked or learned: no dependency, no report.  Locks
    it takes there are still tracked as held, so releasing them after the block is fine, and a
    lock held across the block's end orders the locks taken after it as usual.  A wait that would
    never end still raises :class:`~pylockdep.DeadlockError`.  Blocks nest; other threads are not
    affected.  It applies to the validator in force when the block starts.
    """

    __slots__ = ("_task",)

    def __enter__(self) -> None:
        t: Task = active.validator.task()
        t.busy += 1
        self._task = t

    def __exit__(self, *exc: object) -> None:
        t: Task | None = getattr(self, "_task", None)
        if t is None or t.busy <= 0:  # a negative count would leave the thread unvalidated for good
            raise RuntimeError("lockdep_off(): block left more often than entered")
        t.busy -= 1
        t.nearest = None  # the locks taken in the block were not checked
