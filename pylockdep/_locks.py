"""The lock types: real locks that threads block on, validated as the kernel types they model.

The fast path of every acquisition is :func:`_acquire` (and :func:`_release`): find the thread's
state and the lock's class, fold the lock into the chain key, and if that chain was validated
before, do nothing else but take the lock and push it.  A new chain goes to
:meth:`Validator.validate_chain`; a wait goes to :func:`pylockdep._waitfor.wait`.

The C fast path (``pylockdep/_csrc/``) repeats the known-chain case of both in C for ``with``, ``acquire()``
and ``release()``, the sections and the reader-writer locks' methods, and keeps the reader-writer
locks' state itself (see :mod:`pylockdep._fastpath`): a change to what the fast path reads or
writes here must be made there too.
"""

from __future__ import annotations

import _thread
import dis
import itertools
import threading
import weakref
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from functools import partial
from operator import attrgetter, iadd, methodcaller
from sys import _getframe
from time import monotonic
from types import CodeType, FrameType, FunctionType
from typing import Any

from . import _context, _locktypes, _waitfor
from ._checks import check_made_locked
from ._classes import MAX_SUBCLASSES, LockKey, key_for
from ._fastpath import ACCELERATED, RWCore, accelerate, accelerate_new, accelerate_rw, accelerate_section, new_real_lock
from ._frames import _CONTEXTLIB_FILE, Site, caller_site, getframe, internal_files, is_internal, line_at, outside_frame
from ._held import H_LOCK, H_PREV_KEY, VARIANT_TRY, do_pending, find, pop, remove
from ._plain import plain_rlock
from ._primitive import Primitive
from ._signals import critical, critical_take, deferred, run_deferred, run_deferred_undoing
from ._task import Task
from ._validator import Validator, active

_Condition = threading.Condition  # CPython's own, whatever instrumentation does later


def _acquire(
    lock: Primitive, read: int, subclass: int, frame: FrameType, trylock: bool = False, block: bool = False
) -> bool:
    """Take ``lock`` as ``read`` (0 write, 1 reader, 2 recursive reader): validate, wait, push.

    A ``trylock`` takes the lock only if it is free and is validated only when it succeeds (a
    failed trylock changes nothing); returns whether the lock was taken.  ``frame`` is the
    caller's, for the acquisition site.

    Each real attempt stores its outcome (``taken``; a wait's attempts append theirs to
    ``waited``) and, when it took the lock, the taker as the lock's owner, on one line that calls
    no Python code, where no signal handler, finalizer or trace hook runs: C code makes the attempt,
    reading the property ``_try_write`` for an exclusive one, else testing ``True in map(...)``.  So
    a hook that runs later, before the lock is pushed, and waits for the same lock is seen waiting
    for its own thread (``DeadlockError``, not a hang); and an acquisition interrupted by a signal
    handler's exception (KeyboardInterrupt) after taking the real lock is undone: as with CPython's
    own lock, the exception means the lock was not taken.  A handler held back while the pure
    reader-writer core took the lock (see :func:`~pylockdep._signals.critical_take`) is run here
    once the outcome is recorded: after the push, or on the way out of an acquisition that took
    nothing.  Except after the push of a with-block's entry (``block``): CPython runs no handler
    between a with-statement's taking its lock and the body, and none runs in a body with no
    call; so a handler held back then runs at the block's end, after the release (its
    ``__exit__`` is :func:`~pylockdep._signals.critical`), or at the end of a lock operation in
    the body.
    """
    taken = False
    waited = _NOT_WAITED
    try_args = _MODE_ARGS[read]
    try:
        v = active.validator
        if v.off:
            if not (taken := True in map(lock._try, try_args) if read else lock._try_write):
                if trylock:
                    if deferred:
                        run_deferred()
                    return False
                waited = [False]
                _waitfor.wait(v, v.task(), lock, read, partial(_timed_into, waited, lock, read, None))
            if deferred:
                run_deferred()
            return True
        try:
            t = v.local.task
        except AttributeError:
            t = v.new_task()
        if trylock:
            lock._owner = t if (taken := True in map(lock._try, try_args) if read else lock._try_write) else lock._owner
            if not taken:
                if deferred:
                    run_deferred()
                return False
        if t.pending:
            do_pending(v, t)
        owner, classes = lock._key.cache
        cls = classes[subclass] if owner is v else None
        if cls is None:
            cls = v.class_for(lock._key, subclass)
        # chain_key() and push() spelt out here, the hot path, a call fewer each (a test holds
        # them in step); the entry's key and context are those the chain key was made from.
        prev = t.key
        ctx = t.ctx
        key = hash((prev, ctx, cls.variants[read + VARIANT_TRY if trylock else read]))
        # Only a new chain can be too deep: the first stack of a depth over the limit is a new
        # chain, and the report of its depth turns validation off for good.
        if new_chain := key not in v.chains:
            if not trylock and check_made_locked(lock, read, frame):
                lock._owner = t if (taken := lock._try_write) else lock._owner
                if taken:  # see check_made_locked: a trylock's chain
                    trylock = True
                    key = hash((prev, ctx, cls.variants[VARIANT_TRY]))
                    new_chain = key not in v.chains
            if new_chain:
                v.validate_chain(t, lock, cls, read, trylock, key, frame.f_code, frame.f_lineno, lasti=frame.f_lasti)
        if not trylock:
            lock._owner = t if (taken := True in map(lock._try, try_args) if read else lock._try_write) else lock._owner
            if not taken:
                waited = [False]
                _waitfor.wait(v, t, lock, read, partial(_timed_into, waited, lock, read, t))
        # The instruction offset, not f_lineno: finding the line costs time proportional to the
        # function's length, so it is worked out only when a report prints the site.
        held = t.held
        held.append((lock, cls, read, trylock, frame.f_code, frame.f_lasti, prev, t.irq, cls.spins, ctx))
        t.key = key
        if new_chain and len(held) >= v.max_lock_depth:  # a call: a handler may raise after it, still undone
            v.depth_exceeded(t)
        if deferred and not block:
            run_deferred()
    except BaseException:
        if taken or waited[-1]:
            _undo_acquire(lock, read)  # which runs what is held back
        elif deferred:
            run_deferred()
        raise
    return True


_NOT_WAITED = [False]  # the outcomes of a wait's attempts (see _timed_into) before any wait
_MODE_ARGS = ((0,), (1,), (2,))  # the argument of _try(read), by read mode


def _timed_into(got: list[bool], lock: Primitive, read: int, owner: Task | None, seconds: float) -> bool:
    """One timed attempt of a wait, its outcome appended to ``got`` and, if it took the lock,
    ``owner`` recorded as its owner, on one line with no call after the attempt (see
    :func:`_acquire`): ``map`` calls ``iadd`` from C, so a handler that runs later finds the
    outcome in ``got``."""
    attempt = map(lock._timed, _MODE_ARGS[read], (seconds,))  # lazy: the attempt is made below
    lock._owner = owner if [*map(iadd, (got,), (attempt,))][0][-1] else lock._owner
    return got[-1]


@critical
def _undo_acquire(lock: Primitive, read: int) -> None:
    """Forget and release ``lock``, which an interrupted acquisition took (and may have pushed)."""
    try:
        v = active.validator
        if not v.off:
            t = v.task()
            index = find(t, lock)
            if index >= 0:
                remove(v, t, index)
        _unlock_real(lock, read)
    finally:
        if deferred:
            run_deferred()


def _release(lock: Primitive, read: int) -> None:
    """Release ``lock``: pop it (or find it deeper in the stack), then release the real lock.

    The lock stays its holder's (``_owner``) until the real lock is released: a hook that runs
    between the pop and the release and waits for the lock is seen waiting for its own thread.
    Then the owner is forgotten, unless another thread took the lock meanwhile, on a line of no
    calls (no handler runs between reading and writing it).
    """
    v = active.validator
    if not v.off:
        try:
            t = v.local.task
        except AttributeError:
            t = v.new_task()
        held = t.held
        if held and (entry := held[-1])[H_LOCK] is lock and not t.pending:
            # Looked up first, so that the release below runs no Python code: the plain lock's own
            # release() when there is one (a property's lookup is the dearer part of _unlock).
            real = lock._real
            unlock = lock._unlock if real is None else real.release
            try:
                # pop() spelt out, the hot path, a call fewer (a test holds them in step).
                t.key = entry[H_PREV_KEY]
                held.pop()
            finally:  # interrupted or not, the lock is released and off the stack
                if held and held[-1] is entry:
                    pop(t)
                if real is None:
                    unlock(read)
                else:
                    unlock()
                lock._owner = None if lock._owner is t else lock._owner
            return
        if not _release_slow(v, t, lock, read):
            return
    elif not lock._is_held(read):
        return
    _unlock_real(lock, read)


def _unlock_real(lock: Primitive, read: int) -> None:
    """Release the real lock, then forget its owner unless another thread took it meanwhile (the
    owner stays until the release: see :func:`_release`)."""
    owner = lock._owner
    lock._unlock(read)
    lock._owner = None if lock._owner is owner else lock._owner


def _release_slow(v: Validator, t: Task, lock: Primitive, read: int) -> bool:
    """A release that is not of the most recent lock.  Returns whether to release the real lock."""
    if t.pending:
        do_pending(v, t, lock)  # a run pending from releasing its bottom stays so for this one
    index = find(t, lock)
    if index >= 0:
        remove(v, t, index)
        return True
    if not lock._is_held(read):
        if v.stolen.pop(lock, None) is not t:
            v.bad_unlock(t, lock, lock.name)
        return False
    v.release_unheld(t, lock, lock.name, owner_may_differ=not lock._owned)
    return True


class _Tracked:
    """A lock pylockdep tracks: the :class:`pylockdep._primitive.LockMap` part every lock type shares.

    Subclasses make it a :class:`pylockdep._primitive.Primitive` by providing the real lock
    (``_try``, ``_timed``, ``_is_held``, ``_unlock`` and ``_blockers``).
    """

    _owned = True
    __slots__ = ("_key", "_owner", "__weakref__")
    _key: LockKey
    _owner: Task | None
    #: The plain lock beneath (see :class:`_RealLock`), which :func:`_release` releases with its own
    #: ``release()``; None for a lock with another primitive, released through ``_unlock``.
    _real: Any = None

    #: ``_try(0)``, made by reading the attribute: the getter is C (``methodcaller``), so no Python
    #: code runs between the attempt and its reader's use of the outcome when ``_try`` is C (see
    #: :func:`_acquire`); cheaper than the ``map`` that any mode can go through.
    _try_write = property(methodcaller("_try", 0))

    @property
    def name(self) -> str:
        """The name the lock class was registered under."""
        return self._key.name

    def __reduce_ex__(self, protocol: int) -> Any:
        """Refuse pickling and ``copy``, as CPython's locks do: a copy would share the real lock
        under a lock object of its own, so taking the copy inside the original would hang
        unreported.  The message names the type the lock stands for (``self.__class__``:
        ``_thread.lock`` for an instrumented ``threading.Lock``), as CPython's does."""
        cls = self.__class__
        raise TypeError(f"cannot pickle '{cls.__module__}.{cls.__qualname__}' object")


class _Validated(_Tracked):
    """The base of pylockdep's own lock types (the kernel's, SRCU, RCU): made with a name (and
    optionally a key), of the kernel lock type ``_ltype``."""

    _ltype: _locktypes.LockType = _locktypes.MUTEX
    __slots__ = ()

    def __init__(self, name: str, *, key: Hashable | None = None) -> None:
        self._key = _creation_key(type(self), name, key, _getframe(1))
        self._owner = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a public lock type that inherits its ``__init__`` one under its own name (the same
        code), so that a wrong call names the type the user called: ``SpinLock.__init__() missing
        1 required positional argument: 'name'``, not a private base."""
        super().__init_subclass__(**kwargs)
        if "__init__" not in vars(cls) and not cls.__name__.startswith("_"):
            init = cls.__init__
            own = FunctionType(init.__code__, init.__globals__, init.__name__, init.__defaults__, init.__closure__)
            own.__kwdefaults__ = init.__kwdefaults__
            own.__annotations__ = init.__annotations__
            own.__doc__ = init.__doc__
            own.__qualname__ = f"{cls.__qualname__}.__init__"
            cls.__init__ = own  # type: ignore[misc]

    def locked(self) -> bool:
        """Whether some thread holds it."""
        return self._is_held(0)

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<{type(self).__name__} {self.name!r} ({self._ltype.name}) {state} at {id(self):#x}>"


# Sites that made locks: (id(code), offset, name, key, type) of the frame that called a lock type
# -> (code, the locks' key).  A lock made again where one was made before costs this lookup, not
# a walk of the stack.  Each entry holds its code object, so the id in its key stays that code's.
_made_at: dict[tuple[Any, ...], tuple[CodeType, LockKey]] = {}
_NOT_MADE = (None, None, None, None, None)
# In front of _made_at: indexed by the offset of the calling instruction,
# (code, name, key, type, the locks' key) of the last lock made from a site at that offset, else
# _NOT_MADE.  Indexing a list by the offset and comparing the rest by identity builds no tuple,
# hashes nothing and asks no code object's id (a dict keyed by offset costs 20 ns more).  Sites at
# one offset in different code take turns, each turn a lookup in _made_at; offsets past the
# table's end always go there.
_made_here: list[tuple[Any, ...]] = [_NOT_MADE] * 4096


def _creation_key(cls: type[_Validated], name: str, key: Hashable | None, frame: FrameType) -> LockKey:
    """The key of a lock of type ``cls`` named ``name`` (or of the explicit ``key``) whose
    constructor ``frame`` called: :func:`~pylockdep._classes.key_for` at the first frame outside
    pylockdep (``frame`` itself unless it is pylockdep's).  TypeError for a bad name or key.

    A lock made again where the last one at this offset was made (a loop, a pool filling up) is
    recognised in :data:`_made_here` by identity; else :data:`_made_at` is asked, then the stack."""
    code = frame.f_code
    lasti = frame.f_lasti
    try:
        made = _made_here[lasti]
    except IndexError:
        made = _NOT_MADE
    if made[0] is code and made[1] is name and made[2] is key and made[3] is cls:
        return made[4]  # type: ignore[no-any-return]
    try:
        found = _made_at.get((id(code), lasti, name, key, cls))
    except TypeError:  # an unhashable name or key, refused below
        found = None
    if found is not None:
        if lasti < len(_made_here):
            _made_here[lasti] = (code, name, key, cls, found[1])
        return found[1]
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__}() needs a non-empty name (str), not {name!r}")
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"{cls.__name__}(): key must be hashable, not {type(key).__name__}") from None
    made = key_for(name, cls._ltype, caller_site(), key)
    if not is_internal(code.co_filename):  # ``frame`` is the site: later calls from it may skip the walk
        _made_at[id(code), lasti, name, key, cls] = (code, made)
        if lasti < len(_made_here):
            _made_here[lasti] = (code, name, key, cls, made)
    return made


class _PseudoLock(_Validated):
    """A lock map with no lock beneath (the kernel's bare ``lockdep_map``): taking it succeeds at
    once and releasing it frees nothing, but it is pushed on the holder's stack and validated like
    any lock, so the rules see an ordinary class.  RCU's read-side maps are pseudo-locks; so are
    the completion maps a wait for a thread or for work would touch (taken and released at once).
    """

    __slots__ = ()

    def _try(self, read: int) -> bool:
        return True

    def _timed(self, read: int, seconds: float) -> bool:
        return True

    def _is_held(self, read: int) -> bool:
        """Whether the calling thread's current holder holds it."""
        return find(active.validator.task(), self) >= 0

    def _unlock(self, read: int) -> None:
        """Nothing to release."""

    def _blockers(self, mode: int, ident: int) -> list[int]:
        return []


class _RealLock(_Tracked):
    """A tracked lock over one plain lock (``_real``, from :func:`pylockdep._fastpath.new_real_lock`):
    the kernel's exclusive locks and :mod:`threading`'s stand-ins.

    ``_try`` and ``_unlock`` are the real lock's own methods, looked up on each use rather than
    kept per instance: ``_try(read)`` is its ``acquire(blocking=False)`` (``read`` is always 0
    here) and ``_unlock(read)`` its ``__exit__``, which releases and ignores its arguments.  Being
    C methods, they take or release the lock with no Python code in between, where a signal handler
    could run (see :func:`_acquire`).  The C fast path takes and releases ``_real`` directly; a
    subclass with another primitive overrides both and keeps ``_real`` None.
    """

    __slots__ = ("_real",)
    _real: Any  # a lock as ``_thread.allocate_lock()`` makes

    # Properties whose getters are C (attrgetter): looking them up runs no Python code either.
    _try = property(attrgetter("_real.acquire"))
    _unlock = property(attrgetter("_real.__exit__"))

    def _timed(self, read: int, seconds: float) -> bool:
        # Taken inside a list display and returned with no call after: a signal handler's
        # exception cannot come between taking the lock and reporting it taken.
        return [*map(self._real.acquire, (True,), (seconds,))][0]

    def _is_held(self, read: int) -> bool:
        return self._real.locked()


class _Lock(_Validated, _RealLock):
    """A lock with the kernel's and Python's spellings: acquire/release, lock/unlock, trylock, with."""

    __slots__ = ()

    def __init__(self, name: str, *, key: Hashable | None = None) -> None:  # _Validated's, with the real lock
        self._key = _creation_key(type(self), name, key, _getframe(1))
        self._owner = None
        self._real = new_real_lock()  # accelerate_new() below repeats these assignments

    def _blockers(self, mode: int, ident: int) -> list[int]:
        owner = self._owner
        return [owner.ident] if owner is not None else []

    def acquire(self) -> bool:
        """Take the lock, waiting as long as needed (``spin_lock``/``mutex_lock``); returns True."""
        _acquire(self, 0, 0, getframe(1))
        return True

    @critical  # so are the other ways to release: a signal handler runs after the release
    def release(self) -> None:
        """Release the lock (``spin_unlock``/``mutex_unlock``)."""
        try:
            _release(self, 0)
        finally:
            if deferred:
                run_deferred()

    def trylock(self) -> bool:
        """Take the lock if it is free; True on success.  A trylock adds no dependency into it."""
        return _acquire(self, 0, 0, getframe(1), trylock=True)

    lock = acquire
    unlock = release

    def __enter__(self) -> _Lock:
        _acquire(self, 0, 0, _getframe(1), block=True)
        return self

    @critical
    def __exit__(self, *exc: object) -> None:
        try:
            _release(self, 0)
        finally:
            if deferred:
                run_deferred()

    def nested(self, subclass: int) -> AbstractContextManager[_Lock]:
        """Hold the lock as subclass ``subclass`` (1..7), like ``spin_lock_nested``/``mutex_lock_nested``."""
        _check_subclass(subclass)
        return _new_held(self, 0, subclass, 0)


# A chain key memo's entry for a chain with none: no context equals None.
_NO_STEP = (None, None)


def pure_fast_with(cls: type[_RealLock], *, enter_returns_self: bool, skip_file: str = "") -> None:
    """On the pure path, give ``cls`` the with-block's fast path that the C module gives it
    otherwise (:func:`~pylockdep._fastpath.accelerate`): a ``__enter__`` and an ``__exit__`` that
    do the common case themselves, with no call of :func:`_acquire` or :func:`_release`.  Does
    nothing when the C module is in use.

    ``cls`` must keep a plain lock in ``_real`` (as :class:`_RealLock` does), and so must its
    subclasses.  The common case of ``__enter__`` is an acquisition with no arguments, by a holder
    with nothing pending, on a chain validated before (found in the chain cache, and then in a memo
    on the lock's class, ``LockClass.steps``, which :meth:`~pylockdep.Validator.forget_chains` empties
    with the cache: a hit costs a dict lookup instead of hashing the chain), whose lock is free; from code in
    ``skip_file`` (threading's own; "" for none), or with one from contextlib's (an ``ExitStack``),
    it is sited at the first frame outside threading, contextlib and pylockdep, as
    :func:`~pylockdep._threading._acquirer` sites it.  Any other acquisition is
    :func:`_acquire`'s, or with arguments the ``__enter__`` that ``cls`` had.  The common case of
    ``__exit__`` is the release of the lock on top of the holder's stack; any other is the
    ``__exit__`` that ``cls`` had.  Both change the stack as :func:`_acquire` and :func:`_release`
    do (a test holds them in step).  ``__enter__`` returns the lock when ``enter_returns_self``,
    else True.

    The attempt on the lock is a plain call, not :func:`_acquire`'s line of C that records its
    owner with it: ``__enter__`` is :func:`~pylockdep._signals.critical_take`, so a signal handler
    that would run right after the attempt runs once the outcome is recorded, at the block's end
    (see :func:`_acquire`).  A finalizer or profile hook may still run there (a collection another
    thread asked for, on 3.12): if it waits for the same lock, it finds the attempt interrupted in
    its own thread and waits for its own thread (:func:`pylockdep._waitfor.adopt_interrupted_attempt`).
    """
    if ACCELERATED:
        return
    enter_general = cls.__enter__
    exit_general = cls.__exit__
    result_of_enter = None if enter_returns_self else True
    program_code = None  # the code that entered last, when neither skip_file's nor contextlib's

    @critical_take
    def __enter__(self: Any, *args: Any) -> Any:
        nonlocal program_code
        if args:  # acquire()'s arguments (threading.Lock's with-block takes them)
            return _enter_declined(self, enter_general, args)
        frame = _getframe(1)
        code = frame.f_code
        # A Condition taking its lock, or an ExitStack: sited as _threading._acquirer sites it
        # (pylockdep's own code enters no program's lock).
        if skip_file and code is not program_code:
            if (name := code.co_filename) == skip_file or name == _CONTEXTLIB_FILE:
                # outside_frame(), spelt out for its common case: the caller is the program's
                caller = frame.f_back
                if (
                    caller is None
                    or (name := caller.f_code.co_filename) == skip_file
                    or internal_files.get(name) is not False
                ):
                    caller = outside_frame(frame, skip_threading=True)
                frame = caller or frame
                code = frame.f_code
            else:  # the program's: the next entry from the same code needs no test
                program_code = code
        v = active.validator
        try:
            t = v.local.task
        except AttributeError:
            t = None
        owner, classes = self._key.cache
        if t is not None and not v.off and not t.pending and owner is v and (cls := classes[0]) is not None:
            prev = t.key
            ctx = t.ctx
            # Known chain: the memo's, else chain_key() spelt out as in _acquire and found cached.
            try:  # a subscript rather than get(): no call
                step = cls.steps[prev]
            except KeyError:
                step = _NO_STEP
            if step[0] == ctx:
                key = step[1]
            else:
                era = v.chains_forgotten  # before the lookup: a chain forgotten meanwhile is not memoised
                if (key := hash((prev, ctx, cls.variants[0]))) in v.chains:
                    cls.steps[prev] = (ctx, key)
                    if v.chains_forgotten != era:  # forget_chains() counts, then empties the memos
                        cls.steps.pop(prev, None)
                else:
                    key = None
            if key is not None:
                taken = False
                try:
                    self._owner = t if (taken := self._real.acquire(0)) else self._owner  # TAKING's line
                    if taken:
                        t.held.append((self, cls, 0, False, code, frame.f_lasti, prev, t.irq, cls.spins, ctx))
                        t.key = key
                        # What a signal held back here runs at the block's end (see _acquire).
                        return result_of_enter or self  # True, or the lock
                except BaseException:
                    if taken:
                        _undo_acquire(self, 0)  # which runs what is held back
                    elif deferred:
                        run_deferred()
                    raise
        # Anything else, a lock that another thread holds (a wait) included: the general way.
        _acquire(self, 0, 0, frame, block=True)
        return result_of_enter or self

    @critical
    def __exit__(self: Any, exc_type: object = None, exc: object = None, tb: object = None) -> None:
        v = active.validator
        try:
            t = v.local.task
        except AttributeError:
            return exit_general(self, exc_type, exc, tb)
        held = t.held
        if v.off or not held or (entry := held[-1])[H_LOCK] is not self or t.pending:
            return exit_general(self, exc_type, exc, tb)
        real = self._real
        try:
            try:  # pop() spelt out, as in _release
                t.key = entry[H_PREV_KEY]
                held.pop()
            finally:  # interrupted or not, the lock is released and off the stack
                if held and held[-1] is entry:
                    pop(t)
                real.release()
                self._owner = None if self._owner is t else self._owner
        finally:
            if deferred:
                run_deferred()

    cls.__enter__ = __enter__  # type: ignore[method-assign]
    cls.__exit__ = __exit__  # type: ignore[method-assign]
    code = __enter__.__code__
    _waitfor.TAKING[code] = next(i.positions.lineno for i in dis.get_instructions(code) if i.argval == "acquire")


def _enter_declined(lock: Any, enter: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``enter(lock, *args)``: a with-block's entry with arguments, which the pure fast path
    leaves to the class's own ``__enter__``.  A signal handler held back meanwhile runs here if
    the lock was not taken, else at the block's end (see :func:`_acquire`)."""
    try:
        result = enter(lock, *args)
    except BaseException:
        if deferred:
            run_deferred()
        raise
    if deferred and result is False:
        run_deferred()
    return result


# What a _Held section changes around the lock.
_IRQSAVE = 1  # hard interrupts off (spin_lock_irqsave)
_BH = 2  # bottom halves off (spin_lock_bh)
_READ_MODE = -1  # as ``read``: RWLock's read mode in the context at acquisition (RWLock._read_mode)


class _Held:
    """A with-block that holds ``lock`` one particular way: what ``nested()``, ``read()``,
    ``irqsave()`` and ``bh()`` return.

    ``context`` (``_IRQSAVE``, ``_BH`` or 0) is changed before the lock is taken and restored after
    it is released, even when taking or releasing it raises.  A class rather than a generator:
    these blocks are taken as often as plain ``with lock:``.  Made through ``_new_held``, which
    the C module replaces, as it does the common case of entering and leaving one (see
    :func:`~pylockdep._fastpath.accelerate_section`).
    """

    __slots__ = ("_lock", "_read", "_subclass", "_context", "_mode")

    def __init__(self, lock: _Lock, read: int, subclass: int, context: int) -> None:
        self._lock = lock
        self._read = read
        self._subclass = subclass
        self._context = context

    @critical  # pure path: a signal handler that comes between the context's change and the take waits
    def __enter__(self) -> _Lock:
        context = self._context
        frame = _getframe(1)
        if context == _IRQSAVE:
            _context.irq_save_for(self._lock._ltype, _site_of(frame), self)
        elif context == _BH:
            _context.bh_disable_at(_site_of(frame))
        return self._take(frame)  # nothing else: a critical function's call

    @critical
    def _take(self, frame: FrameType) -> _Lock:
        """Take the lock, the context changed, for the block in ``frame``; if that raises, restore
        the context.  (The C ``__enter__`` calls it when it changed the context but cannot take the
        lock itself.)  A signal handler held back meanwhile runs once both are done; if it raises,
        the block is left as its end would leave it."""
        lock = self._lock
        try:
            self._mode = mode = lock._read_mode() if self._read == _READ_MODE else self._read
            _acquire(lock, mode, self._subclass, frame)
        except BaseException:
            self._restore(frame)
            raise
        if deferred:
            run_deferred_undoing(self.__exit__, None, None, None)
        return lock

    @critical
    def __exit__(self, *exc: object) -> None:
        """Release the lock and restore the context.  A section left without being entered is
        left as if it had been entered with interrupts off: its lock is released (a bad unlock
        balance when not held) and bottom halves enabled (a context imbalance when not disabled),
        as the kernel's unlock calls are judged."""
        try:
            try:
                mode = self._mode
            except AttributeError:  # not entered (a reader releases alike in either read mode)
                mode = self._mode = 1 if self._read == _READ_MODE else self._read
            _release(self._lock, mode)
        finally:
            try:
                self._restore(_getframe(1))
            finally:
                if deferred:
                    run_deferred()

    def _restore(self, frame: FrameType) -> None:
        """Undo the context change, for the block in ``frame`` (also called by the C methods, when
        they cannot)."""
        if self._context == _IRQSAVE:
            _context.irq_restore_for(self, _site_of(frame))
        elif self._context == _BH:
            _context.bh_enable_at(_site_of(frame))


def _site_of(frame: FrameType) -> Site | None:
    """The site of ``frame``'s current line, or None (look it up) when ``frame`` is pylockdep's:
    what :func:`~pylockdep._frames.caller_site` finds from a call ``frame`` makes, without a walk."""
    code = frame.f_code
    return None if is_internal(code.co_filename) else (code, line_at(code, frame.f_lasti))


def _check_subclass(subclass: int) -> None:
    """A nesting subclass is an int from 0 to 7: TypeError for another type, ValueError out of range."""
    if not isinstance(subclass, int):
        raise TypeError(f"subclass must be an int from 0 to {MAX_SUBCLASSES - 1}, not {type(subclass).__name__}")
    if not 0 <= subclass < MAX_SUBCLASSES:
        raise ValueError(f"subclass must be an int from 0 to {MAX_SUBCLASSES - 1}, not {subclass!r}")


class _SpinningLock(_Lock):
    """Locks with ``_irqsave``/``_irq``/``_bh`` forms."""

    __slots__ = ()

    def irqsave(self) -> AbstractContextManager[_SpinningLock]:
        """``spin_lock_irqsave``: disable hard interrupts (not on PREEMPT_RT for ``spinlock_t``), then lock."""
        return _new_held(self, 0, 0, _IRQSAVE)

    irq = irqsave

    def bh(self) -> AbstractContextManager[_SpinningLock]:
        """``spin_lock_bh``: disable bottom halves, then lock."""
        return _new_held(self, 0, 0, _BH)


class RawSpinLock(_SpinningLock):
    """``raw_spinlock_t``: spins on every kernel, so it disables preemption and nests only spinning locks."""

    _ltype = _locktypes.RAW_SPINLOCK
    __slots__ = ()


class SpinLock(_SpinningLock):
    """``spinlock_t``: spins on a normal kernel; on PREEMPT_RT a sleeping rt_mutex."""

    _ltype = _locktypes.SPINLOCK
    __slots__ = ()


class Mutex(_Lock):
    """``struct mutex``: a sleeping lock with an owner."""

    _ltype = _locktypes.MUTEX
    __slots__ = ()


# Every reader-writer core that has waited, for forgetting its waiters in a forked child (pylockdep._fork).
every_rw_core: weakref.WeakSet[_RWCore | _CRWCore] = weakref.WeakSet()

# The internal mutexes of the pure-Python reader-writer cores and of the SRCUs, dealt out in turn
# as they are made (internal_mutex()): a mutex for each (and, for a core, the weak reference that
# renewed it after a fork) cost more memory and time than the rest of the lock, while each holds its
# mutex only for a few statements per operation, or waits on a condition over it, which releases
# it.  Re-entrant, as their own were: a finalizer or trace hook may take a reader-writer lock or
# enter a read side while its thread is inside one (this one or another sharing its mutex).
# Renewed after a fork.
internal_mutexes = tuple(plain_rlock() for _ in range(64))
#: The next of :data:`internal_mutexes`, for a lock being made (a C call: the C module calls it too).
internal_mutex: Callable[[], _thread.RLock] = itertools.cycle(internal_mutexes).__next__


class _RWWaits:
    """The wait of a reader-writer core, Python on both paths: the waiter sleeps on the core's
    condition (its ``_condition()``), counted in ``sleepers`` (a release wakes them) and, if it
    writes, in ``waiting_writers`` (which hold back new readers that are not recursive), until the
    core's ``_take(read, ident)`` lets it in or ``seconds`` pass.

    The condition's mutex is taken and released, and the core taken, in ``timed_acquire``'s own
    frame by C code (no ``Condition.__enter__``, ``__exit__`` or ``wait_for``, whose Python frames
    a signal handler's exception could interrupt with the mutex or the lock taken): on the pure
    path a handler that comes there is held back until the acquisition has recorded the outcome
    (:func:`~pylockdep._signals.critical_take`); one that comes while it sleeps
    (``Condition.wait``) runs at once."""

    __slots__ = ()
    sleepers: int
    waiting_writers: dict[int, int] | None

    @critical_take
    def timed_acquire(self, read: int, seconds: float) -> bool:
        ident = _thread.get_ident()
        cond = self._condition()  # type: ignore[attr-defined]
        mutex = self._mutex  # type: ignore[attr-defined]  # the condition's
        # The take stores its outcome in taken with no point in between where a signal handler
        # runs (map calls _take from C); an exception raised after it, before the outcome reaches
        # the caller (leaving the with-block is a call, after which CPython runs handlers), gives
        # the lock back: the wait then raises with the lock not taken, as an acquisition must.
        taken = False
        try:
            with mutex:
                if not read:
                    waiting = self.waiting_writers
                    if waiting is None:
                        waiting = self.waiting_writers = {}
                    waiting[ident] = waiting[ident] + 1 if ident in waiting else 1
                self.sleepers += 1
                try:
                    deadline = monotonic() + seconds
                    take = self._take  # type: ignore[attr-defined]
                    while not (taken := True in map(take, (read,), (ident,))) and (left := deadline - monotonic()) > 0:
                        try:
                            cond.wait(left)
                        except BaseException:
                            # A handler's exception between Condition.wait's release of the mutex
                            # and its try block leaves the mutex released: the state below needs it.
                            if not mutex._is_owned():
                                mutex.acquire()
                            raise
                finally:
                    self.sleepers -= 1
                    if not read:
                        waiting = self.waiting_writers
                        count = waiting[ident] - 1  # type: ignore[index]
                        if count:
                            waiting[ident] = count  # type: ignore[index]
                        else:
                            del waiting[ident]  # type: ignore[union-attr]
            return taken
        except BaseException:
            if taken:
                self.release(read)  # type: ignore[attr-defined]
            raise


class _RWCore(_RWWaits):
    """Readers and a writer, with writer preference: a waiting writer holds back new readers that
    are not recursive.  Holders are thread idents.  The pure-Python core; with the C module,
    :class:`_CRWCore` keeps the same state in C.

    The internal mutex, one of :data:`internal_mutexes`, is re-entrant: a signal handler, finalizer or
    trace hook may take a reader-writer lock while its thread is inside this core.  Each change of
    state is made by statements that call nothing (no point where such code runs), after any call
    the operation makes, so nested code finds the state whole, and the operation reads it again
    after.
    """

    __slots__ = ("_mutex", "_cond", "writer", "readers", "waiting_writers", "sleepers", "__weakref__")

    def __init__(self) -> None:
        # The fast operations take the bare mutex; only waits go through the condition, made by
        # the first (most locks never see one, and a Condition costs more than the rest together).
        self._mutex = internal_mutex()
        self._cond: threading.Condition | None = None
        self.writer: int | None = None
        # Holders and waiters by thread ident, each map made when it gets its first entry (readers
        # is dropped again when its last reader leaves): most locks are only ever written.
        self.readers: dict[int, int] | None = None
        self.waiting_writers: dict[int, int] | None = None
        self.sleepers = 0  # threads waiting on the condition: a release wakes them

    def _at_fork_reinit(self) -> None:
        """In a forked child: no waiters (they did not follow the fork).  Holders stay: the lock
        stays held by a thread that is gone, as a ``threading.Lock`` does.  (The mutex is renewed
        with the others of :data:`internal_mutexes`.)"""
        self._cond = None
        self.waiting_writers = None
        self.sleepers = 0

    def _take(self, read: int, ident: int) -> bool:
        """Take the lock for ``ident`` in mode ``read`` if nothing holds it back; whether it did
        (under the mutex).  The checks and the update call nothing (see the class)."""
        if self.writer is not None:
            return False
        readers = self.readers
        if read:
            if read == 1 and self.waiting_writers:
                return False
            if readers is None:
                readers = self.readers = {}
            readers[ident] = readers[ident] + 1 if ident in readers else 1
            return True
        if readers:
            return False
        self.writer = ident
        return True

    @critical_take
    def try_acquire(self, read: int) -> bool:
        ident = _thread.get_ident()
        with self._mutex:
            return self._take(read, ident)

    def _condition(self) -> threading.Condition:
        """The condition over the mutex that waiters sleep on, made on first use."""
        cond = self._cond
        if cond is None:
            with self._mutex:
                cond = self._cond
                if cond is None:
                    every_rw_core.add(self)  # from here on its waiters are forgotten after a fork
                    cond = self._cond = _Condition(self._mutex)
        return cond

    def is_held(self, read: int) -> bool:
        with self._mutex:
            return bool(self.readers) if read else self.writer is not None

    def release(self, read: int) -> None:
        """Release mode ``read``: a reader releases its own hold, or another reader's when it has
        none (a read side released by another thread; RuntimeError when there is no reader)."""
        ident = _thread.get_ident()
        with self._mutex:
            if read:
                readers = self.readers
                if not readers:
                    raise RuntimeError("release of a read side no thread holds")
                holder = ident if ident in readers else next(iter(readers))
                count = readers[holder] - 1
                if count:
                    readers[holder] = count
                else:
                    del readers[holder]
                    if not readers:
                        self.readers = None
            else:
                self.writer = None
            if self.sleepers:  # so the condition was made
                self._cond.notify_all()  # type: ignore[union-attr]

    def blockers(self, read: int) -> list[int]:
        with self._mutex:
            found = [self.writer] if self.writer is not None else []
            if read:
                if read != 2:
                    found += list(self.waiting_writers or ())
            else:
                found += list(self.readers or ())
            return found


if RWCore is not None:

    class _CRWCore(RWCore, _RWWaits):
        """The reader-writer core of the C module (``pylockdep._speedups.RWCore``): the state of
        :class:`_RWCore`, taken and released by C code that calls nothing, so it needs no mutex;
        only a wait does, made with its condition by the first wait (and forgotten in a forked
        child, ``_at_fork_reinit``).  Its ``_take``, ``try_acquire``, ``release``, ``is_held`` and
        ``blockers`` are :class:`_RWCore`'s; a release wakes sleepers with ``_wake()``."""

        __slots__ = ()

        def _condition(self) -> threading.Condition:
            """The condition waiters sleep on, and its mutex, made by the first wait."""
            cond = self._cond
            if cond is None:
                with _first_core:
                    cond = self._cond
                    if cond is None:
                        every_rw_core.add(self)  # from here on its mutex is renewed after a fork
                        mutex = self._mutex = plain_rlock()
                        cond = self._cond = _Condition(mutex)
            return cond

        def _wake(self) -> None:
            """Wake the waiters (called by a release that finds ``sleepers``)."""
            cond = self._condition()
            with cond:
                cond.notify_all()

    _new_core: type[_RWCore] | type[_CRWCore] = _CRWCore
else:
    _new_core = _RWCore


# Held while a reader-writer lock stores its first core (re-entrant: a finalizer or signal handler
# that runs meanwhile may take another reader-writer lock for the first time).
_first_core = plain_rlock()


class _RWLockBase(_Lock):
    """Shared behaviour of the reader-writer locks."""

    __slots__ = ("_rw",)

    def __init__(self, name: str, *, key: Hashable | None = None) -> None:  # _Validated's, with the core
        self._key = _creation_key(type(self), name, key, _getframe(1))
        self._owner = None
        self._real = None  # its primitive is the reader-writer core, ...
        self._rw: _RWCore | _CRWCore | None = None  # ... made by the first use (see _core); _RW_FIELDS repeats these

    def _core(self) -> _RWCore | _CRWCore:
        """The reader-writer core, made on first use: locks are often made in numbers and taken
        by few.  Two threads may both make one; the first to store it wins."""
        core = self._rw
        if core is None:
            made = _new_core()
            with _first_core:
                core = self._rw
                if core is None:
                    core = self._rw = made
        return core

    # The core's own methods, looked up by properties: _acquire and _release call them with no
    # Python code between the core's change and its caller's record of it when the core is C.
    @property
    def _try(self) -> Callable[[int], bool]:
        return (self._rw or self._core()).try_acquire

    @property
    def _unlock(self) -> Callable[[int], None]:
        return (self._rw or self._core()).release

    @property
    def _timed(self) -> Callable[[int, float], bool]:
        # Keep waiting writers registered across the polls of the deadlock check.
        return (self._rw or self._core()).timed_acquire

    def _is_held(self, read: int) -> bool:
        return (self._rw or self._core()).is_held(read)

    def _blockers(self, mode: int, ident: int) -> list[int]:
        return (self._rw or self._core()).blockers(mode)

    def locked(self) -> bool:
        core = self._rw or self._core()
        return core.is_held(0) or core.is_held(1)

    @critical
    def _unlock_side(self, read: int, op: str) -> None:
        """Release the side ``read`` names, for the unlock call ``op``.  Releasing the side nobody
        holds while the other side is held (``write_lock(); read_unlock()``) is a bad unlock
        balance: reported, refused with :class:`RuntimeError`, and the lock (real and as
        validated) left as it was.  Releasing a free lock is reported as for any lock."""
        try:
            core = self._rw or self._core()
            if not core.is_held(read) and core.is_held(0 if read else 1):
                v = active.validator
                v.bad_unlock(v.task(), self, self.name)
                side = "reading" if read else "writing"
                raise RuntimeError(f"{op}() of {self.name!r}, which no thread holds for {side}")
            _release(self, read)
        finally:
            if deferred:
                run_deferred()

    def read(self) -> AbstractContextManager[_RWLockBase]:
        """Hold the read side for the block."""
        return _new_held(self, 1, 0, 0)

    def write(self) -> _RWLockBase:
        """Hold the write side for the block: ``with l.write():`` is ``with l:``."""
        return self


class RWLock(_RWLockBase, _SpinningLock):
    """``rwlock_t``: readers and writers that spin on a normal kernel and sleep on PREEMPT_RT.

    As with queued rwlocks, a reader is recursive (never waits behind a waiting writer) only in
    interrupt context.
    """

    _ltype = _locktypes.RWLOCK
    __slots__ = ()

    def _read_mode(self) -> int:
        """A reader in interrupt context (hardirq, softirq, bottom halves off) is recursive.
        The C fast path makes the same choice for ``read()`` sections."""
        t = active.validator.task()
        return 2 if (t.hardirq or t.softirq or t.bh) else 1

    def read(self) -> AbstractContextManager[RWLock]:
        """Hold the read side for the block, recursive in interrupt context."""
        return _new_held(self, _READ_MODE, 0, 0)

    def read_lock(self) -> None:
        """``read_lock``."""
        _acquire(self, self._read_mode(), 0, getframe(1))

    @critical  # its last call checks for handlers held back
    def read_unlock(self) -> None:
        """``read_unlock``; RuntimeError if the read side is not held."""
        self._unlock_side(1, "read_unlock")

    def write_lock(self) -> None:
        """``write_lock``."""
        _acquire(self, 0, 0, getframe(1))

    @critical  # its last call checks for handlers held back
    def write_unlock(self) -> None:
        """``write_unlock``; RuntimeError if the write side is not held."""
        self._unlock_side(0, "write_unlock")

    def read_trylock(self) -> bool:
        """``read_trylock``: True if the read side was taken."""
        return _acquire(self, self._read_mode(), 0, getframe(1), trylock=True)

    def write_trylock(self) -> bool:
        """``write_trylock``: True if the write side was taken."""
        return _acquire(self, 0, 0, getframe(1), trylock=True)


class RWSemaphore(_RWLockBase):
    """``struct rw_semaphore``: sleeping readers and writers; readers are not recursive."""

    _ltype = _locktypes.RWSEM
    __slots__ = ()

    def down_read(self) -> None:
        """``down_read``."""
        _acquire(self, 1, 0, getframe(1))

    @critical  # its last call checks for handlers held back
    def up_read(self) -> None:
        """``up_read``; RuntimeError if the read side is not held."""
        self._unlock_side(1, "up_read")

    def down_write(self) -> None:
        """``down_write``."""
        _acquire(self, 0, 0, getframe(1))

    @critical  # its last call checks for handlers held back
    def up_write(self) -> None:
        """``up_write``; RuntimeError if the write side is not held."""
        self._unlock_side(0, "up_write")

    def down_read_trylock(self) -> bool:
        """``down_read_trylock``: True if the read side was taken."""
        return _acquire(self, 1, 0, getframe(1), trylock=True)

    def down_write_trylock(self) -> bool:
        """``down_write_trylock``: True if the write side was taken."""
        return _acquire(self, 0, 0, getframe(1), trylock=True)


accelerate(_Lock, enter_returns_self=True)
for _made in (RawSpinLock, SpinLock, Mutex):  # not the reader-writer locks, whose _real is None
    pure_fast_with(_made, enter_returns_self=True)
_new_held = accelerate_section(_Held, _Lock)
# A lock made again at a known site is built in C (when in use) as _Lock.__init__ builds it.
for _made in (RawSpinLock, SpinLock, Mutex):
    accelerate_new(_made, _made_at, (("_owner", None), ("_real", new_real_lock)))
_RW_FIELDS = (("_owner", None), ("_real", None), ("_rw", None))  # _RWLockBase.__init__'s
for _made in (RWLock, RWSemaphore):
    accelerate_new(_made, _made_at, _RW_FIELDS)
# Their cores and their common methods in C (when in use); each wraps the Python method it replaces.
accelerate_rw(
    _RWLockBase,
    _Held,
    {
        _RWLockBase: {"read": ("section", 1), "write": ("self", 0)},
        RWLock: {
            "read": ("section", _READ_MODE),
            "read_lock": ("lock", _READ_MODE),
            "read_unlock": ("unlock", 1),
            "write_lock": ("lock", 0),
            "write_unlock": ("unlock", 0),
        },
        RWSemaphore: {
            "down_read": ("lock", 1),
            "up_read": ("unlock", 1),
            "down_write": ("lock", 0),
            "up_write": ("unlock", 0),
        },
    },
)
