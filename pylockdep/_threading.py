"""Python's own locks, validated: :class:`instrument_threading` and the lock types it installs.

While instrumentation is installed, ``threading.Lock()`` and ``threading.RLock()`` make a
:class:`Lock` or :class:`RLock`: drop-in replacements for CPython's ``_thread.lock`` and
``_thread.RLock`` (same behaviour, argument checks, exceptions, ``repr`` shape, weak references,
Condition helpers) that the validator checks as sleeping locks (lock types ``PY_LOCK`` and
``PY_RLOCK``).  Everything in :mod:`threading` that builds on them (``Condition``, ``Event``,
``Semaphore``, ``BoundedSemaphore``, ``Barrier``, ``Timer``) and the standard library around it
(``queue``, ``logging``, ``concurrent.futures``) is covered through them, and so are the other
factories, ``_thread.allocate_lock``, ``_thread.RLock`` and the names modules bound to them before
(``threading._allocate_lock``): those make CPython's lock when threading itself calls them
(``Condition.wait()``'s private waiter lock), or importlib.

Python's semantics win where they differ from the kernel's (``API.md``, "Python's own locks"):

- A ``Lock`` has no owner: any thread may release it, which takes it off the acquirer's held
  stack.  Blocking on a ``Lock`` the thread holds is reported ``recursive`` but waits, since
  another thread may release it; such waits never raise :class:`~pylockdep.DeadlockError`.
- ``acquire(False)`` and timed acquires are trylocks: validated only when they succeed, and no
  dependency leads into them.
- ``RLock`` re-entry by its owner is not an acquisition: no edge, no report.
- Misuse that CPython rejects with an exception (releasing an unlocked ``Lock``, or an ``RLock``
  the thread does not own) raises that exception and is not reported.
- ``_at_fork_reinit()`` and ``os.fork()`` make the child forget the locks other threads held
  (:mod:`pylockdep._fork`).

A lock's class is its type plus the first frame outside :mod:`threading` and pylockdep, named
``KIND@file:line``; KIND is ``Lock`` or ``RLock``, or the :mod:`threading` type that made the lock
(``Condition``, ``Event``, ``Semaphore``, ...), or ``Owner.attr`` where the site stores it in
``self.attr``, the class then being one per type of ``self`` (:mod:`pylockdep._sites`).  So every
``queue.Queue`` mutex is one class (``Queue.mutex@queue.py:NN``), each handler type's lock
another, and ``threading.Event()`` takes its caller's line.  Locks that
:mod:`threading` makes for its own bookkeeping (a ``Thread``'s "started" event, the locks it
rebuilds after ``fork()``), importlib's module locks, pylockdep's own (:mod:`pylockdep._plain`) and
locks made before instrumentation stay CPython's.  A thread's state lock, which ``join()`` waits on
and the interpreter releases when the thread ends, is made in C: it never goes through a factory.
"""

from __future__ import annotations

import _thread
import copyreg
import functools
import operator
import sys
import threading
import warnings
from collections.abc import Callable
from time import monotonic
from types import BuiltinFunctionType, FrameType, FunctionType
from typing import Any, NamedTuple

from . import _held, _locktypes, _waits
from ._classes import LockKey, OwnerKeys, count_made, key_for
from ._fastpath import Fields, accelerate, accelerate_class_call, accelerate_stand_in, new_real_lock
from ._frames import calls_method, getframe, internal_files, is_internal, line_at, outside_frame
from ._locks import _acquire, _check_subclass, _RealLock, _release, pure_fast_with
from ._locktypes import LockType
from ._plain import plain_lock
from ._signals import critical, deferred, run_deferred
from ._sites import (
    NOT_RECENT,
    RECENT_SLOTS,
    UNKNOWN,
    SiteMemo,
    class_name,
    creation_walk,
    makes_attr,
    no_recent,
    owner_key,
    recall,
    remember,
    site_owner_keys,
)
from ._task import Task
from ._validator import active
from ._waitfor import taken_bare, waits_for_work
from ._when_imported import Hook, when_imported

__all__ = ["Lock", "RLock", "install", "instrument_threading", "Nested", "uninstall"]

_get_ident = _thread.get_ident
_getframe = sys._getframe
_new_object = object.__new__  # one global read where object.__new__ is two lookups, for each lock made
# The file name as threading's code objects carry it, for one cheap comparison per acquisition.
_THREADING_FILE = threading.Condition.__init__.__code__.co_filename
# Code in threading that makes locks for threading's own use: they stay plain.
_PLAIN_MAKERS = frozenset({threading.Thread.__init__.__code__, threading._after_fork.__code__})


# -- where a lock is made and taken ------------------------------------------------------------


class ByOwner(NamedTuple):
    """What a stack that makes a lock for ``self.attr`` decides (see :func:`_new_key`): the key
    depends on the type of that ``self``, in the frame ``depth`` frames out from the factory's
    caller.  ``keys`` is the site's (:func:`~pylockdep._sites.site_owner_keys`); the C stand-in
    looks the type up there the same way, and makes the lock itself for a type it finds."""

    depth: int
    ltype: LockType
    keys: OwnerKeys


def _owner_key(answer: ByOwner, frame: FrameType) -> LockKey:
    """The key of a lock that the stack from ``frame`` out makes for its owner (see :class:`ByOwner`)."""
    for _ in range(answer.depth):
        frame = frame.f_back  # type: ignore[assignment]
    return owner_key(answer.keys, frame, "", answer.ltype)


def _site_key(ltype: LockType, kind: str, frame: FrameType | None) -> LockKey | None:
    """The key of a lock made by a factory called from ``frame``, or None to keep it plain."""
    answer = _new_key(ltype, kind, frame)[0]
    return _owner_key(answer, frame) if type(answer) is ByOwner else answer  # type: ignore[arg-type]


def _new_key(ltype: LockType, kind: str, frame: FrameType | None) -> tuple[LockKey | ByOwner | None, int]:
    """The key of a lock made by a factory called from ``frame`` (a :class:`ByOwner` when it
    depends on the owner's type), or None to keep it plain; and how many frames from ``frame``
    outwards decided it (0: not by their code and offsets alone).

    The class is the creation site (:mod:`pylockdep._sites`) reached from the first frame outside
    threading and pylockdep; its name is ``Owner.attr@file:line`` or ``KIND@file:line``, KIND
    being the outermost threading type on the way there (``Event`` for an Event's lock), else
    ``kind``.  None when threading makes the lock for its own bookkeeping.
    """
    start = frame
    looked = 0
    while frame is not None and is_internal(frame.f_code.co_filename, skip_threading=True):
        looked += 1
        code = frame.f_code
        if code in _PLAIN_MAKERS:
            return None, looked
        if code.co_filename == _THREADING_FILE:
            kind = code.co_qualname.partition(".")[0]
        frame = frame.f_back
    if frame is None:
        return None, 0
    frame, more = creation_walk(frame)
    looked = looked + more if more else 0
    if makes_attr(frame):
        depth = 0
        while start is not frame:
            start = start.f_back  # type: ignore[union-attr]
            depth += 1
        return ByOwner(depth, ltype, site_owner_keys(frame, ltype)), looked
    return key_for(class_name(kind, frame), ltype, (frame.f_code, line_at(frame.f_code, frame.f_lasti))), looked


def _acquirer(frame: FrameType) -> FrameType:
    """The frame to name as where a lock was taken, given the frame that called ``acquire()``:
    that frame, unless it is threading's own code (a Condition, an Event, ...) or pylockdep's (the
    pure path's with-block, passing on arguments), and then the first frame outside threading and
    pylockdep, which called it.  (``acquire()`` spells it out for threading's code, a call fewer
    per acquisition.)"""
    if is_internal(frame.f_code.co_filename, skip_threading=True):
        return outside_frame(frame, skip_threading=True) or frame
    return frame


# -- acquiring ---------------------------------------------------------------------------------


def _check_acquire_args(blocking: Any, timeout: Any) -> None:
    """Raise what CPython's ``acquire()`` raises for these arguments: a free lock parses them."""
    plain_lock().acquire(blocking, timeout)


def _take_slow(lock: Lock | RLock, blocking: Any, timeout: Any, frame: FrameType) -> bool:
    """``acquire(blocking, timeout)`` with other arguments than ``blocking=True`` and no timeout,
    by a thread that does not hold ``lock``: the arguments are checked as this Python's own
    ``acquire()`` checks them (3.11 refuses ``acquire(None)``, 3.12 takes it as false); then a
    blocking acquisition, or a trylock validated when it succeeds.  True when the lock was taken."""
    if blocking is not False or timeout != -1:  # acquire(False), Condition._is_owned()'s, is valid
        _check_acquire_args(blocking, timeout)
    if timeout == -1:
        # A trylock of a taken lock fails and changes nothing: no site to find (the walk out of
        # threading was most of the cost of Condition._is_owned(), a trylock of a held Lock).
        if not blocking and lock._real.locked():
            return False
        return _acquire(lock, 0, 0, _acquirer(frame), not blocking)
    frame = _acquirer(frame)
    seconds = timeout if isinstance(timeout, float) else operator.index(timeout)
    deadline = monotonic() + seconds
    real = lock._real
    while not _acquire(lock, 0, 0, frame, True):
        remaining = min(deadline - monotonic(), _thread.TIMEOUT_MAX)
        if remaining <= 0:
            return False
        # Wait for it to come free, then give it back and take it again as a validated trylock.
        # Another thread may win it first (then wait for the rest of the timeout), or release it
        # meanwhile, which a Lock allows.  The outcome is recorded from C (as _locks._timed_into
        # records its own), so a signal handler that raises right after the attempt still finds
        # the lock taken and gives it back: the acquisition then raises having taken nothing.
        came_free: list[bool] = []
        try:
            [*map(operator.iadd, (came_free,), (map(real.acquire, (True,), (remaining,)),))]
        finally:
            if came_free and came_free[-1]:
                try:
                    real.release()
                except RuntimeError:
                    pass
        if not came_free[-1]:
            return False
    return True


def _restore_state(state: Any) -> tuple[int, int]:
    """The ``(count, owner)`` that ``RLock._acquire_restore(state)`` restores: TypeError, in
    CPython's words, for anything its RLock refuses, before the lock is taken."""
    where = "_acquire_restore() argument 1"
    if isinstance(state, dict) or not hasattr(type(state), "__getitem__"):  # not a sequence
        raise TypeError(f"{where} must be 2-item sequence, not {type(state).__name__}")
    if len(state) != 2:
        raise TypeError(f"{where} must be sequence of length 2, not {len(state)}")
    for item, value in enumerate(state):
        if not isinstance(value, int):
            kind = "None" if value is None else type(value).__name__
            raise TypeError(f"{where}, item {item} must be int, not {kind}")
    return state[0], state[1]


def _forget(lock: Lock | RLock) -> None:
    """Take a reinitialised ``lock`` off the held stack of the thread that took it."""
    owner, lock._owner = lock._owner, None
    v = active.validator
    if owner is None or v.tasks.get(id(owner)) is not owner:
        return
    if owner is getattr(v.local, "task", None):
        index = _held.find(owner, lock)
        if index >= 0:
            _held.remove(v, owner, index)
    else:
        owner.pending.append(lock)


# -- the lock types ----------------------------------------------------------------------------

# The classes of locks made directly with no frame outside threading and pylockdep to name them.
_ORPHAN_LOCK_KEY = key_for("Lock", _locktypes.PY_LOCK, None)
_ORPHAN_RLOCK_KEY = key_for("RLock", _locktypes.PY_RLOCK, None)


def _opens_elsewhere(owner: Task, lock: Lock) -> bool:
    """Whether ``lock``, which ``owner`` took, may be a gate that another thread opens: ``owner``
    holds it by a bare ``acquire()``, not a ``with`` block, and either waits for other threads'
    work (see :func:`pylockdep._waitfor.waits_for_work`), or the code that took it never calls a
    ``release()`` (a function that closes the gate for another thread to open, rather than the
    ``acquire()`` ... ``finally: release()`` of a mutex)."""
    code = taken_bare(owner, lock)
    return code is not None and (waits_for_work(owner) or not calls_method(code, "release"))


class Lock(_RealLock):
    """``threading.Lock``, validated as a sleeping lock without an owner (``PY_LOCK``).

    Behaves as ``_thread.lock``: ``acquire(blocking=True, timeout=-1) -> bool``, ``release()``
    (RuntimeError when unlocked), ``locked()``, ``with``, ``_at_fork_reinit()``.  Only
    ``threading.Lock()`` makes one, while :class:`instrument_threading` is active, and, as
    ``_thread.lock`` does from 3.13 on, the type itself (before 3.13 it refuses, as CPython's).
    """

    _owned = False
    __slots__ = ()

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """``_thread.LockType``, the type of the lock this one stands for, so that
        ``isinstance(lock, _thread.LockType)`` holds as code that checks for a lock expects
        (``type(lock)`` still names this class)."""
        return _thread.LockType

    def __new__(cls, *args: Any, **kwargs: Any) -> Lock:
        """As ``_thread.lock()``: refused before 3.13; from 3.13 on a new lock (class from the
        caller's line)."""
        if sys.version_info < (3, 13):
            raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")
        if kwargs:
            raise TypeError("lock() takes no keyword arguments")
        if args:
            raise TypeError(f"lock expected 0 arguments, got {len(args)}")
        return cls._new(_site_key(_locktypes.PY_LOCK, "Lock", _getframe(1)) or _ORPHAN_LOCK_KEY)

    @classmethod
    def _new(cls, key: LockKey) -> Lock:
        """A new unlocked lock of class ``key`` (named ``Lock@file:line``)."""
        self = _new_object(cls)  # _MADE_FIELDS repeats these assignments, for the C stand-in
        self._real = new_real_lock()
        self._key = key
        self._owner = None
        count_made(key, self)
        return self

    def _blockers(self, mode: int, ident: int) -> list[int]:
        # Only a Lock of a site that hands locks off, or may (a token held on after the function
        # that took it returned, see _checks.check_token_held), may be released by another
        # thread: one that only its acquirers ever released waits for its acquirer, as a mutex
        # does.  Unless it may be a gate that another thread opens (threading.Timer(1,
        # gate.release)), not a mutex held across the wait, as a with-block's: _opens_elsewhere.
        owner = self._owner
        key = self._key
        if owner is None or key.handoff or key.token or _opens_elsewhere(owner, self):
            return []
        return [owner.ident]

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (as ``_thread.lock.acquire``); True if it was taken."""
        if timeout == -1:
            if blocking is True:
                try:
                    frame = _getframe(1)
                except ValueError:  # called from C with no Python frame below (atexit.register(lock.acquire))
                    frame = getframe(1)
                if (name := frame.f_code.co_filename) == _THREADING_FILE or internal_files.get(name):
                    frame = outside_frame(frame, True) or frame  # as _acquirer(), spelt out
                _acquire(self, 0, 0, frame)
                return True
            if blocking is False and self._real.locked():
                return False  # a trylock of a taken lock (Condition._is_owned()'s): see _take_slow
        return _take_slow(self, blocking, timeout, getframe(1))

    def __enter__(self, blocking: bool = True, timeout: float = -1) -> bool:
        """``acquire()`` (the with-block's call, with no arguments), as ``_thread.lock``'s."""
        if blocking is not True or timeout != -1:
            return _take_slow(self, blocking, timeout, _getframe(1))
        # From C (the with-block's stand-in, in a case it leaves to Python) or from the pure fast
        # path passing on explicit arguments: sited past pylockdep's frames as well as threading's.
        _acquire(self, 0, 0, _acquirer(_getframe(1)), block=True)
        return True

    @critical  # its only call is __exit__(), which runs what a signal held back
    def release(self) -> None:
        """Release the lock, whichever thread took it; RuntimeError if it is not locked."""
        self.__exit__()

    @critical  # as every way to release: a signal handler runs after the release
    def __exit__(self, *exc: object) -> None:  # the body of release(): a with-block, the usual case, saves a call
        try:
            if not self._real.locked():
                raise RuntimeError("release unlocked lock")
            _release(self, 0)
        finally:
            if deferred:
                run_deferred()

    def locked(self) -> bool:
        """Whether the lock is taken."""
        return self._real.locked()

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked

    @property
    def _is_owned(self) -> Callable[[], bool]:
        """``Condition``'s test that its lock is held, which it reads once, from the lock if it has
        one: the plain lock's ``locked()``.  For a ``_thread.lock``, which has none, threading's
        own test is a trylock released at once if it succeeds: true when any thread holds the lock,
        as ``locked()`` is, without a take to validate and with no Python frame."""
        return self._real.locked

    def _at_fork_reinit(self) -> None:
        _forget(self)
        self._real._at_fork_reinit()

    def __repr__(self) -> str:
        state = "locked" if self._real.locked() else "unlocked"
        return f"<{state} {type(self).__module__}.{type(self).__qualname__} object at {id(self):#x}>"


# Calls made from threading.py itself (Condition, for one) take the Python path, which names the
# caller outside threading as the site.
accelerate(Lock, enter_returns_self=False, skip_file=_THREADING_FILE, blocking_arg=True)
pure_fast_with(Lock, enter_returns_self=False, skip_file=_THREADING_FILE)


class RLock(_RealLock):
    """``threading.RLock``, validated as a sleeping lock with an owner (``PY_RLOCK``).

    Behaves as ``_thread.RLock``: the owner may take it again (not a new acquisition: no edge, no
    report) and must release it as many times; ``_is_owned``, ``_release_save``,
    ``_acquire_restore`` and ``_recursion_count`` serve ``Condition``.  Made by
    ``threading.RLock()`` (or ``threading.Condition()``) while :class:`instrument_threading` is
    active; like ``_thread.RLock``, ``RLock()`` makes one too (class from the caller's line).
    """

    __slots__ = ("_ident", "_count")
    # CPython's module, as its repr shows it: trio asserts that its entry queue's RLock is the
    # signal-safe one, ``_thread``'s (``lock.__class__.__module__ == "_thread"``), and this one is
    # too: the take records the owner at once, and a release holds signal handlers back.
    __module__ = "_thread"

    _ident: int | None
    _count: int

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """``_thread.RLock``, the type of the lock this one stands for (see :attr:`Lock.__class__`)."""
        return _thread.RLock

    def __new__(cls, key: LockKey | None = None) -> RLock:
        """A new unlocked RLock of class ``key``, by default its caller's site."""
        if key is None:
            key = _site_key(_locktypes.PY_RLOCK, "RLock", _getframe(1)) or _ORPHAN_RLOCK_KEY
        self = _new_object(cls)  # _MADE_FIELDS repeats these assignments, for the C stand-in
        self._real = new_real_lock()
        self._key = key
        self._owner = None
        self._ident = None
        self._count = 0
        count_made(key, self)
        return self

    _new = classmethod(__new__)  # as Lock._new: what threading.RLock() calls

    def _blockers(self, mode: int, ident: int) -> list[int]:
        # Between the real take and acquire() setting _ident, the taker is the _owner that the
        # take recorded (see _taking).
        owner = self._ident
        if owner is not None:
            return [owner]
        taker = self._owner
        return [taker.ident] if taker is not None and self._real.locked() else []

    def _taking(self, me: int) -> bool:
        """Whether thread ``me`` has taken the real lock in an acquisition that has not set
        ``_ident`` yet, as a signal handler that landed there finds it; if so, make ``me`` the owner.

        CPython's RLock records its owner with the take: a handler that runs in the owner after
        the take may take it again.  Here the take recorded the taker as ``_owner`` on its own
        line (:func:`~pylockdep._locks._acquire`), and ``_ident`` and ``_count`` (0) follow later,
        so the handler's re-entry sets them, counting the acquisition under way: that one then
        finds ``_ident`` set and leaves the count alone.  Called only when ``_ident`` is None and
        ``_owner`` is not; no call in here, so no other handler comes in between."""
        taker = self._owner  # another thread's release may have cleared it since
        if taker is not None and taker.ident == me and self._ident is None:
            self._count, self._ident = 1, me
            return True
        return False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock, or take it once more if this thread owns it; True if it was taken."""
        me = _get_ident()
        if self._ident == me or (self._ident is None and self._owner is not None and self._taking(me)):
            if timeout != -1 or blocking is not True:
                _check_acquire_args(blocking, timeout)
            self._count += 1
            return True
        if timeout == -1 and blocking is True:
            try:
                frame = _getframe(1)
            except ValueError:  # called from C with no Python frame below (atexit.register(rlock.acquire))
                frame = getframe(1)
            if (name := frame.f_code.co_filename) == _THREADING_FILE or internal_files.get(name):
                frame = outside_frame(frame, True) or frame  # as _acquirer(), spelt out
            _acquire(self, 0, 0, frame)
        elif not _take_slow(self, blocking, timeout, getframe(1)):
            return False
        if self._ident is None:  # no call on this line: a signal handler cannot come in between (see _taking)
            self._count, self._ident = 1, me
        return True

    __enter__ = acquire

    @critical  # its last call checks for handlers held back
    def release(self) -> None:
        """Release once; the last release of the owner frees it.  RuntimeError if not the owner."""
        self.__exit__()

    @critical
    def __exit__(self, *exc: object) -> None:  # the body of release(): a with-block, the usual case, saves a call
        try:
            if self._ident != _get_ident():
                raise RuntimeError("cannot release un-acquired lock")
            self._count = count = self._count - 1
            if not count:
                self._ident = None
                _release(self, 0)
        finally:
            if deferred:
                run_deferred()

    def _is_owned(self) -> bool:
        return self._ident == _get_ident()

    def _recursion_count(self) -> int:
        return self._count if self._ident == _get_ident() else 0

    def _release_save(self) -> tuple[int, int | None]:
        """Release fully for ``Condition.wait()``; returns the state to restore."""
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._ident)
        self._count = 0
        self._ident = None
        _release(self, 0)
        return state

    def _acquire_restore(self, state: tuple[int, int | None]) -> None:
        """Take the lock again after ``Condition.wait()`` and restore the recursion state."""
        count, ident = _restore_state(state)
        frame = _getframe(1)
        if frame.f_code.co_filename == _THREADING_FILE:  # Condition.wait(): as in Lock.__enter__
            frame = outside_frame(frame, True) or frame
        _acquire(self, 0, 0, frame)
        if self._ident is None:  # else a signal handler took it again meanwhile (see _taking)
            self._count, self._ident = count, ident
        else:
            self._count += count - 1

    def _at_fork_reinit(self) -> None:
        _forget(self)
        self._real._at_fork_reinit()
        self._ident = None
        self._count = 0

    def __repr__(self) -> str:
        state = "locked" if self._real.locked() else "unlocked"
        return (
            f"<{state} {type(self).__module__}.{type(self).__qualname__} object owner={self._ident or 0} "
            f"count={self._count} at {id(self):#x}>"
        )


accelerate(RLock, enter_returns_self=False, skip_file=_THREADING_FILE, recursive=True)


# The slots besides _key that Lock._new and RLock.__new__ set (see _fastpath.Fields).
_MADE_FIELDS: dict[type, Fields] = {
    Lock: (("_owner", None), ("_real", new_real_lock)),
    RLock: (("_owner", None), ("_real", new_real_lock), ("_ident", None), ("_count", 0)),
}


class Nested:
    """A with-block holding a :class:`Lock` or :class:`RLock` as a nesting subclass (what
    :func:`pylockdep.nested` returns for them); an RLock its owner holds is only entered again."""

    __slots__ = ("_lock", "_subclass")

    def __init__(self, lock: Lock | RLock, subclass: int) -> None:
        _check_subclass(subclass)
        self._lock = lock
        self._subclass = subclass

    def __enter__(self) -> Lock | RLock:
        lock = self._lock
        if isinstance(lock, RLock):
            me = _get_ident()
            if lock._ident == me or (lock._ident is None and lock._owner is not None and lock._taking(me)):
                lock._count += 1
                return lock
            _acquire(lock, 0, self._subclass, _getframe(1))
            if lock._ident is None:  # as in RLock.acquire
                lock._count, lock._ident = 1, me
        else:
            _acquire(lock, 0, self._subclass, _getframe(1))
        return lock

    @critical  # its last call checks for handlers held back
    def __exit__(self, *exc: object) -> None:
        self._lock.release()


# -- installing --------------------------------------------------------------------------------


# Module attributes are replaced with a plain setattr, not wrapt: importing wrapt imports asyncio,
# logging and more, which would make their module-level locks before a program's first line.
def _stand_in(
    original: Any, lock_type: type[Lock] | type[RLock], ltype: LockType, takes_args: bool, prebound: bool = False
) -> Any:
    """What to put in place of ``threading.Lock``/``RLock``: it makes a ``lock_type`` unless
    threading makes the lock for itself, and it looks like ``original`` (``__wrapped__`` too).

    ``prebound``: the stand-in replaces a name bound before instrumentation (``_thread.RLock``,
    ``functools.RLock``, ``threading._allocate_lock``, ...), which threading's own code and importlib
    also call: for those callers it makes CPython's lock.

    Where ``original`` is a class (``threading.Lock`` from 3.13 on), so is the stand-in: calling
    it makes a lock, ``isinstance``/``issubclass`` accept CPython's locks and ours alike (locks made
    before instrumentation included), and ``threading.Lock | None`` still works in annotations.
    Where ``original`` is a C function (``_thread.allocate_lock``, 3.11's and 3.12's
    ``threading.Lock``), the stand-in is a callable that, like it, does not bind as a method: a
    class attribute ``locktype = _thread.allocate_lock`` called as ``self.locktype()`` gets no
    ``self``, as CPython's lock tests rely on.  Elsewhere it binds as a function does, as CPython's
    factory (``threading.RLock``) is one.
    """
    kind = lock_type.__name__
    deprecated_args = takes_args and sys.version_info >= (3, 13)
    new = lock_type._new
    # The key (or None: plain) found from each stack that called it: a lock made again where one
    # was made before costs a lookup per frame the walk looked at, not the walk.
    made_at: SiteMemo = {}
    recent = no_recent()  # its last answers, by offset

    def make(*args: Any, **kwargs: Any) -> Any:
        caller = _getframe(1)
        code = caller.f_code
        if code is _STAND_IN_CALL:
            caller = caller.f_back
            code = caller.f_code if caller is not None else None
        if prebound and (caller is None or _keeps_plain[code.co_filename]):
            return original(*args, **kwargs)
        if args or kwargs:
            if not takes_args:
                return original(*args, **kwargs)  # CPython's own TypeError
            if deprecated_args:
                warnings.warn(_RLOCK_ARGS_DEPRECATION, DeprecationWarning, stacklevel=2)
        # recall's last answer for a stack at the caller's offset, if this is that stack, recognised
        # by identity (recall looks the rest up).
        key = UNKNOWN
        if caller is not None:
            lasti = caller.f_lasti
            last = recent[lasti] if lasti < RECENT_SLOTS else NOT_RECENT
            if code is last[0]:
                if last[1] is None:
                    key = last[3]
                elif (back := caller.f_back) is not None and back.f_code is last[1] and back.f_lasti == last[2]:
                    key = last[3]
        if key is UNKNOWN:
            key = recall(made_at, caller, recent)
            if key is UNKNOWN:
                key, looked = _new_key(ltype, kind, caller)
                remember(made_at, caller, looked, key)
        if key is None:
            return original(*args, **kwargs)
        return new(_owner_key(key, caller) if type(key) is ByOwner else key)

    # A call at a known site builds the lock in C, when in use, and so does (CPython's lock) a call
    # from threading's own code of a name bound before (a Condition's waiter, at every wait()).
    binds = isinstance(original, FunctionType)
    fast = accelerate_stand_in(
        make,
        made_at,
        lock_type,
        _MADE_FIELDS[lock_type],
        _STAND_IN_CALL,
        binds,
        plain=original if prebound else None,
        keeps_plain=_keeps_plain,
    )
    if isinstance(original, BuiltinFunctionType):  # _thread.allocate_lock: a C function
        return functools.update_wrapper(_builtin_like(fast), original)
    if not isinstance(original, type):  # a function (binding as one), or some other callable put there
        return functools.update_wrapper(fast if binds else make, original)
    return _StandInType(
        original.__name__,
        (),
        {
            "__module__": original.__module__,
            "__qualname__": original.__qualname__,
            "__doc__": original.__doc__,
            "__wrapped__": original,
            "_kinds": (original, lock_type),
            "_make": staticmethod(fast),
        },
    )


class _PlainCallers(dict[str, bool]):
    """``_keeps_plain[filename]``: whether a lock factory called from code in ``filename`` makes
    CPython's own lock: threading's bookkeeping (a Condition's waiter), importlib's module locks.
    pylockdep never calls a factory that instrumentation rebinds (its locks come from
    :mod:`pylockdep._plain`).  Worked out once per file: every ``Condition.wait()`` asks."""

    def __missing__(self, filename: str) -> bool:
        keeps = self[filename] = filename == _THREADING_FILE or filename.startswith("<frozen importlib")
        return keeps


_keeps_plain = _PlainCallers()


# 3.13's threading.RLock() warns about arguments; the stand-in warns alike, at the caller.
_RLOCK_ARGS_DEPRECATION = "Passing arguments to RLock is deprecated and will be removed in 3.15"


class _StandInType(type):
    """The metaclass of a class-shaped stand-in: calling the class makes a lock, and instance and
    subclass checks accept both CPython's lock type and pylockdep's."""

    _kinds: tuple[type, ...]

    def __new__(mcls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> Any:
        """A class statement deriving from a stand-in derives from the CPython class it stands
        for (its instances are CPython's, not validated), or fails as that would: 3.13's
        ``threading.Lock`` accepts no subclasses."""
        if any(isinstance(base, _StandInType) for base in bases):
            bases = tuple(base.__wrapped__ if isinstance(base, _StandInType) else base for base in bases)
            return type(name, bases, namespace, **kwargs)
        return super().__new__(mcls, name, bases, namespace, **kwargs)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._make(*args, **kwargs)

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls._kinds)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls._kinds)

    def __repr__(cls) -> str:
        return repr(cls.__wrapped__)


_STAND_IN_CALL = _StandInType.__call__.__code__
accelerate_class_call(_StandInType)  # the call above in C, when in use


class _BuiltinLike:
    """The shape of a stand-in for a factory that is a C function: callable, with the function's
    names (``functools.update_wrapper``), its repr, pickled by name, and, having no ``__get__``,
    never bound as a method (see :func:`_stand_in`)."""

    def __repr__(self) -> str:
        return repr(self.__wrapped__)  # type: ignore[attr-defined]

    def __reduce__(self) -> str:
        return self.__qualname__  # type: ignore[attr-defined,no-any-return]  # a global, found by name


def _builtin_like(make: Any) -> Any:
    """``make`` when it is the C stand-in (:func:`~pylockdep._fastpath.accelerate_stand_in`), which
    never binds; else a :class:`_BuiltinLike` whose call is ``make`` itself (a static ``__call__``:
    the caller's frame is ``make``'s caller, with no frame in between)."""
    if not isinstance(make, FunctionType):
        return make
    return type("stand_in", (_BuiltinLike,), {"__call__": staticmethod(make)})()


# pickle saves a class or function by name, and refuses one that is not what its name finds
# (multiprocessing's managers pickle a registry holding threading.Lock and threading.RLock).
def _reduce_class_stand_in(cls: _StandInType) -> tuple[Any, tuple[type]]:
    """A class-shaped stand-in pickles as the CPython class it stands for: loading calls
    ``copy.copy()``, which returns a class unchanged, on that class (found by its own name)."""
    import copy  # only when pickling: importing pylockdep stays cheap

    return copy.copy, (cls.__wrapped__,)


copyreg.pickle(_StandInType, _reduce_class_stand_in)


def _pickled_as(stand_in: Any, module: str, attr: str) -> None:
    """Let pickle find a function-shaped stand-in bound at ``module.attr``: it keeps the
    original's name while that name finds the stand-in (its first binding), else takes this one.
    A process that loads it gets what ``module.attr`` is there."""
    if isinstance(stand_in, type):
        return
    home = sys.modules.get(stand_in.__module__)
    if getattr(home, stand_in.__qualname__, None) is not stand_in:
        stand_in.__module__, stand_in.__qualname__ = module, attr


_state_lock = plain_lock()
_installed: dict[str, Any] = {}  # attribute of threading -> the stand-in put there
_rebound: list[tuple[Any, str, Any]] = []  # (module, attribute, stand-in) bound before instrumentation
_depth = 0
_asyncio_hook: Hook | None = None  # waiting for asyncio to be imported


def install() -> None:
    """Make ``threading.Lock()`` and ``threading.RLock()`` return validated locks from now on, and
    asyncio's locks too (now, or once asyncio is imported: :mod:`pylockdep._asyncio`).

    Calls nest: each needs an :func:`uninstall`.  The calling thread's holder is made first (from
    the main thread, with the program's signal handlers wrapped: ``Validator.new_task``), so that
    a handler that runs before anything is taken runs as one.
    """
    global _depth, _asyncio_hook
    active.validator.task()
    with _state_lock:
        _depth += 1
        if _depth == 1:
            # C's RLock() ignores any arguments; allocate_lock() refuses them.
            for lock_type, ltype, takes_args in ((Lock, _locktypes.PY_LOCK, False), (RLock, _locktypes.PY_RLOCK, True)):
                name = lock_type.__name__
                _installed[name] = _stand_in(getattr(threading, name), lock_type, ltype, takes_args)
                setattr(threading, name, _installed[name])
                _pickled_as(_installed[name], "threading", name)
            _rebind_prebound()
            _asyncio_hook = when_imported("asyncio", _instrument_asyncio)
            _waits.install()


def uninstall() -> None:
    """Undo one :func:`install`; the last one puts CPython's factories back.

    Locks already made stay validated.  A factory that someone else replaced after ours is left
    as it is.
    """
    global _depth, _asyncio_hook
    with _state_lock:
        if not _depth:
            raise RuntimeError("threading is not instrumented")
        _depth -= 1
        if not _depth:
            _waits.uninstall()
            for name, wrapper in _installed.items():
                if getattr(threading, name) is wrapper:
                    setattr(threading, name, wrapper.__wrapped__)
            _installed.clear()
            for module, attr, wrapper in _rebound:
                if getattr(module, attr, None) is wrapper:
                    setattr(module, attr, wrapper.__wrapped__)
            _rebound.clear()
            if _asyncio_hook is not None:
                _asyncio_hook.remove()
                _asyncio_hook = None
            for name in ("pylockdep._asyncio_queue", "pylockdep._asyncio"):
                module = sys.modules.get(name)
                if module is not None:
                    module.uninstall()


# _thread's names of its lock type (3.13's threading.Lock is _thread.lock): a type, not a factory.
_LOCK_TYPE_NAMES = ("LockType", "lock")


def _rebind_prebound() -> None:
    """Rebind, in every module imported so far, the names bound to CPython's lock factories before
    instrumentation (``from _thread import RLock`` as 3.11's ``functools`` does for
    ``cached_property``, ``from threading import RLock`` in ``bz2`` or an application,
    ``threading._allocate_lock``/``_CRLock``) and the ``_thread`` module's own factories
    (``allocate_lock``, ``RLock``; not its lock types), as gevent's monkey patching does: locks they
    make from now on are validated.  Locks made before stay CPython's.  pylockdep's own names are
    left alone: its locks, and kvm_model's harness's, come from :mod:`pylockdep._plain`."""
    makers = {
        id(_thread.allocate_lock): (_thread.allocate_lock, Lock, _locktypes.PY_LOCK, False),
        id(_thread.RLock): (_thread.RLock, RLock, _locktypes.PY_RLOCK, True),
    }
    for name, lock_type, ltype, takes_args in (
        ("Lock", Lock, _locktypes.PY_LOCK, False),
        ("RLock", RLock, _locktypes.PY_RLOCK, True),
    ):
        original = _installed[name].__wrapped__
        makers.setdefault(id(original), (original, lock_type, ltype, takes_args))
    stand_ins: dict[int, Any] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.partition(".")[0] == "pylockdep":
            continue
        try:
            names = [(attr, value) for attr, value in vars(module).items() if id(value) in makers]
        except TypeError:
            continue
        for attr, value in names:
            if (module is threading and attr in _installed) or attr in _LOCK_TYPE_NAMES:
                continue
            original, lock_type, ltype, takes_args = makers[id(value)]
            if value is not original:
                continue
            wrapper = stand_ins.get(id(original))
            if wrapper is None:
                wrapper = stand_ins[id(original)] = _stand_in(original, lock_type, ltype, takes_args, prebound=True)
            setattr(module, attr, wrapper)
            _pickled_as(wrapper, module.__name__, attr)
            _rebound.append((module, attr, wrapper))


def _instrument_asyncio(module: object) -> None:
    """Instrument asyncio's locks (:mod:`pylockdep._asyncio`), once asyncio is imported."""
    from . import _asyncio, _asyncio_queue

    _asyncio.install()
    _asyncio_queue.install()


class instrument_threading:  # noqa: N801 - a context manager named as the API promises
    """Validate ``threading.Lock``, ``RLock`` and ``Condition`` (and what is built on them) made
    inside the block; see the module's documentation for the semantics.

    ``with pylockdep.instrument_threading(): ...`` for a block (blocks nest), or
    ``pylockdep.instrument_threading().install()`` for the rest of the process.  Locks made while
    it is active stay validated after it ends.
    """

    def install(self) -> None:
        """Instrument from now on, for the process (until a matching :meth:`uninstall`)."""
        install()

    def uninstall(self) -> None:
        """Undo :meth:`install`."""
        uninstall()

    def __enter__(self) -> instrument_threading:
        install()
        return self

    def __exit__(self, *exc: object) -> None:
        uninstall()
