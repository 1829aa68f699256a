"""Waits are dependencies: completion maps for threads, thread-pool work and queues.

The commonest Python deadlock is not two locks taken in opposite orders but a thread waiting for
other work while it holds a lock that work needs.  The kernel solved this for workqueues, and this
module follows its model.  A work item runs *holding* a pseudo-lock (a lockdep map with no lock
behind it) that stands for its completion, and one for its queue; whoever waits for the work
(``flush_work()``, ``flush_workqueue()``) acquires and at once releases the same map.  So a lock
held by the waiter and taken inside the work is an ordinary cycle in the one lock graph, found from
a run in which nothing hung: the waiter touches the map even when the work is long done.

Maps here (:class:`CompletionMap`, lock type :data:`~pylockdep._locktypes.COMPLETION`), each named
after the source line that made what it stands for:

- ``(thread)FILE:LINE``: a :class:`threading.Thread` made there.  ``run()`` executes holding it;
  ``join()``, with or without a timeout, touches it.
- ``(work_completion)FILE:LINE``: work given to a :class:`concurrent.futures.ThreadPoolExecutor`
  by a ``submit()`` (or ``map()``) called there.  The work runs holding it;
  ``Future.result()``/``exception()``, ``concurrent.futures.wait()`` and ``as_completed()`` on
  its futures touch it.
- ``(wq_completion)FILE:LINE``: a thread pool made there.  Every work item runs holding it too;
  ``shutdown(wait=True)`` (and so leaving ``with executor:``) touches it, as ``flush_workqueue()``
  does.  Waiting for a future of a pool touches the pool's map as well when the pool has a single
  worker (the kernel's ordered workqueue) or when the waiter is itself a work item of that pool:
  the kernel's "flush from inside the same workqueue", reported as recursive locking.  Such a
  wait deadlocks as soon as every worker does it, and at once with ``max_workers=1``.
- ``(queue)FILE:LINE``: a :class:`queue.Queue` made there.  A consumer holds it from ``get()``
  until the matching ``task_done()`` (its spans nest: one map per thread, counted); ``join()``
  touches it.

Threads of a pool run no map of their own: their work items carry the pool's and the work's.
``ProcessPoolExecutor``'s management thread and its queues' feeder threads are plain threads, so
their joins are covered.  Waits with a timeout count as waits: one that can only end by timing
out is a stall, and an error path, in production.

Two instances of one map class are judged apart, as Python's locks are: waiting for a thread
while running another thread made by the same line adds no dependency.

``Event.wait()`` and ``Condition.wait()`` are *not* modelled as completions.  The kernel tried
exactly that in 2017 (cross-release) and reverted it: a condition may be signalled by any thread,
so treating each wait as a dependency on one class of waker gave false reports no annotation could
silence.  The waits above each have one known completer, which is why they are sound.

A wait that really would hang for ever raises :class:`~pylockdep.DeadlockError` instead: joining
a thread (or waiting for a future, or ``Queue.join()``) while a thread that must finish first is
itself waiting, directly or through others, for the caller; for a future still queued, only when
every worker of its pool is so stuck.  :mod:`pylockdep._waitfor` finds these cycles.  A wait
with a timeout ends by itself and never raises (its dependency is validated all the same).

The mechanism is generic: :func:`hold`, :func:`release` and :func:`touch` take any map and work on
the calling holder, so other kinds of work (asyncio tasks) can reuse it.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from functools import partial, update_wrapper
from time import monotonic
from types import CodeType, FrameType, ModuleType
from typing import Any

from . import _waitfor
from ._classes import LockKey, key_for
from ._fastpath import accelerate_pool, accelerate_waits
from ._frames import arguments, format_file_line, getframe, is_internal
from ._held import H_CLASS, H_LOCK, VARIANT_SYNC, VARIANT_TRY, chain_key, do_pending, find, pop, push
from ._locks import _acquire, _PseudoLock, _release
from ._locktypes import COMPLETION
from ._plain import plain_lock, plain_rlock
from ._sites import creation_frame, name_on_line
from ._task import Task
from ._validator import Validator, active
from ._when_imported import Hook, when_imported

__all__ = ["CompletionMap", "future_waits_for", "hold", "install", "release", "touch", "uninstall"]

# Its wrappers may be called from C with no Python frame below them (atexit.register(pool.shutdown)).
_getframe = getframe
_get_ident = _thread.get_ident


# -- the maps ----------------------------------------------------------------------------------


class CompletionMap(_PseudoLock):
    """A pseudo-lock that stands for the completion of some work (the kernel's ``lockdep_map``
    of a work item or workqueue, with no lock behind it).

    Held by whoever does the work (:func:`hold`/:func:`release`), touched by whoever waits for it
    (:func:`touch`).  Maps made by one source line for one kind of work share one class, named
    ``(kind)file:line``, of lock type :data:`~pylockdep._locktypes.COMPLETION`.
    """

    _ltype = COMPLETION
    _owned = False  # any thread may end a span (Queue.task_done() from another thread)
    __slots__ = ()

    def __init__(self, key: LockKey) -> None:
        self._key = key
        self._owner = None

    def _is_held(self, read: int) -> bool:
        """Always: a release of a map held before the validator started is forgotten quietly."""
        return True

    def __repr__(self) -> str:
        return f"<CompletionMap {self.name} at {id(self):#x}>"


def map_key(kind: str, frame: FrameType | None, made: object = None) -> LockKey | None:
    """The key of a ``(kind)`` map made for work created at ``frame`` (walked out of pylockdep,
    threading, concurrent.futures and queue to the line that asked for it, and out of helpers that
    only return what they made, as a lock's creation site is), or None when no such line exists
    (threading's own threads).

    ``made`` is the object the map stands for (a thread, a pool, a queue) when one is being
    constructed: the constructors of a subclass (``__init__`` methods running on ``made``, as
    ``super().__init__()`` chains them) are walked out of too, so the site is the line that made
    the object, not the subclass's call to its base (which every instance of every subclass of
    that base would share).
    """
    if made is None and frame is not None:  # work created at a known site (a submit() per task)
        found = _keys_at.get((id(frame.f_code), frame.f_lasti, kind))
        if found is not None:
            return found[1]
    asked = frame
    frame = _user_frame(frame)
    while frame is not None and made is not None and _constructs(frame, made):
        frame = _user_frame(frame.f_back)
    if frame is None:
        return None
    frame = creation_frame(frame)  # a helper that returns what it made is its caller's line
    site = (frame.f_code, frame.f_lineno)
    name = name_on_line(f"({kind}){format_file_line(site)}", frame)  # a second site on its line: :COL
    key = _map_keys.get((name, id(site[0])))
    if key is None:
        key = _map_keys[name, id(site[0])] = key_for(name, COMPLETION, site)
    if made is None and frame is asked:  # the key follows from the frame's code and offset alone
        _keys_at[id(frame.f_code), frame.f_lasti, kind] = (frame.f_code, key)
    return key


# (name, id(code)) -> key, which holds the code: spares hashing the code.
_map_keys: dict[tuple[str, int], LockKey] = {}
# (id(code), offset, kind) of a frame that is its own site -> (code, key): spares the walk.  Each
# entry holds its code object, so the id in its key stays that code's.  Keyed as every site memo is
# (pylockdep._csrc's site_key()), for the C stand-in of submit() to look up too.
_keys_at: dict[tuple[int, int, str], tuple[CodeType, LockKey]] = {}


_STDLIB_WORK_FILES = tuple(
    os.path.dirname(threading.__file__) + os.sep + name
    for name in ("threading.py", "queue.py", os.path.join("concurrent", "futures") + os.sep)
)
_user_files: dict[str, bool] = {}  # file name -> whether _user_frame stops at its frames


def _user_frame(frame: FrameType | None) -> FrameType | None:
    """The first frame outside pylockdep and the standard library's threads, pools and queues."""
    while frame is not None:
        filename = frame.f_code.co_filename
        user = _user_files.get(filename)
        if user is None:
            user = _user_files[filename] = not is_internal(filename) and not filename.startswith(_STDLIB_WORK_FILES)
        if user:
            return frame
        frame = frame.f_back
    return None


def _constructs(frame: FrameType, made: object) -> bool:
    """Whether ``frame`` is an ``__init__`` method running on ``made``."""
    if frame.f_code.co_name != "__init__":
        return False
    given = arguments(frame)
    return bool(given) and given[0] is made


def _waiter_frame(frame: FrameType) -> FrameType:
    """Where a wait is shown as made: the user's line, else the first frame outside pylockdep."""
    found = _user_frame(frame)
    if found is not None:
        return found
    while is_internal(frame.f_code.co_filename) and frame.f_back is not None:
        frame = frame.f_back
    return frame


# -- holding and touching ----------------------------------------------------------------------


def hold(m: CompletionMap, frame: FrameType) -> None:
    """The calling holder starts the work ``m`` stands for: push ``m``, taken at ``frame``, so
    every lock taken until :func:`release` depends on it.

    Starting work never waits, so nothing already held comes to depend on ``m``: it is pushed as
    a trylock is (a consumer that opens a queue span while running a thread adds no
    thread -> queue dependency), and the locks taken inside still depend on what lies below it.
    """
    _hold_maps((m,), frame)


def _hold_maps(maps: tuple[CompletionMap, ...], frame: FrameType) -> None:
    """:func:`hold` each of ``maps``, in order.

    A map has no lock beneath, so on a chain validated before, holding it is only the push: done
    here, as the C fast path does it for real locks; anything else is
    :func:`~pylockdep._locks._acquire`'s.
    """
    v = active.validator
    t = None if v.off else getattr(v.local, "task", None)
    for m in maps:
        if t is not None and not t.pending:
            owner, classes = m._key.cache
            cls = classes[0] if owner is v else None
            if cls is not None:
                key = chain_key(t.key, t.ctx, cls.variants[VARIANT_TRY])
                if key in v.chains and len(t.held) + 1 < v.max_lock_depth:
                    m._owner = t
                    push(t, m, cls, 0, True, frame.f_code, frame.f_lasti, key)
                    continue
        _acquire(m, 0, 0, frame, True)


def release(m: CompletionMap) -> None:
    """The calling holder is done with the work ``m`` stands for."""
    _release_maps((m,))


def _release_maps(maps: tuple[CompletionMap, ...]) -> None:
    """:func:`release` each of ``maps``, in order.

    Popping a map off the top of the stack frees nothing: done here; anything else is
    :func:`~pylockdep._locks._release`'s.
    """
    v = active.validator
    t = None if v.off else getattr(v.local, "task", None)
    for m in maps:
        if t is not None:
            held = t.held
            if held and held[-1][H_LOCK] is m and not t.pending:
                pop(t)
                m._owner = None if m._owner is t else m._owner
                continue
        _release(m, 0)


def touch(m: CompletionMap, frame: FrameType) -> None:
    """The calling holder waits for the work ``m`` stands for: acquire and release ``m`` at once
    (the kernel's ``lock_map_acquire(); lock_map_release()`` in ``flush_work()``), at ``frame``.

    Every lock held now gets a dependency on ``m``, checked as any acquisition is (a lock the
    work takes closes a cycle; waiting inside the work itself is recursive).  Holding another
    instance of ``m``'s class (another thread made by the same line) adds nothing: instances are
    judged apart.
    """
    v = active.validator
    if not v.off:
        _touch(v, v.task(), m, frame, False)


def _touch(v: Validator, t: Task, m: CompletionMap, frame: FrameType, waiter: bool) -> None:
    """:func:`touch` by ``t``, the calling thread's holder in ``v``, at ``frame``; when ``waiter``,
    at :func:`_waiter_frame` of ``frame`` (the call of a waiting method), walked to only when the
    chain is new: most waits repeat one seen before."""
    if t.busy:
        return
    if t.pending:
        do_pending(v, t)  # locks other threads released for this one are not held any more
    owner, classes = m._key.cache
    cls = classes[0] if owner is v else None
    if cls is None:
        cls = v.class_for(m._key)
    for entry in t.held:
        if entry[H_CLASS] is cls and entry[H_LOCK] is not m:
            return
    key = chain_key(t.key, t.ctx, cls.variants[VARIANT_SYNC])
    if key not in v.chains:
        if waiter:
            frame = _waiter_frame(frame)
        v.validate_chain(t, m, cls, 0, False, key, frame.f_code, frame.f_lineno, sync=True)


def _touch_waited(m: CompletionMap, caller: FrameType) -> None:
    """:func:`touch` by a waiting method that ``caller`` called (the site is its :func:`_waiter_frame`)."""
    v = active.validator
    if not v.off:
        _touch(v, v.task(), m, caller, True)


# -- waiting without hanging -------------------------------------------------------------------


class _Wait:
    """What a thread waits for, as the deadlock check sees it: the threads that must move first.

    ``_blockers`` names them; ``_needs_all`` (set by each ``_blockers`` call) says whether the wait
    ends when any of them moves (False: a thread to join, a running work item) or only stays for
    ever when all of them are stuck (True: work queued behind a saturated pool).
    """

    _owned = True
    # Its blockers are the threads that must move first, read afresh at each search, not the holders
    # of a lock: the waiting thread among them is in the cycle (see _waitfor._CycleSearch.reaches).
    _live_blockers = True
    __slots__ = ("_key", "_idents", "_needs_all", "_name")

    def __init__(
        self, m: CompletionMap | None, idents: Callable[[], tuple[list[int], bool]], name: str = "(thread)"
    ) -> None:
        self._key = m._key if m is not None else None
        self._idents = idents
        self._needs_all = False
        self._name = name  # for a wait with no map: a thread made before validation, or by a pool

    @property
    def name(self) -> str:
        return self._key.name if self._key is not None else self._name

    def _blockers(self, mode: int, ident: int) -> list[int]:
        idents, self._needs_all = self._idents()
        return idents


class _QueueJoin(_Wait):
    """A ``Queue.join()``'s wait, for the consumers with items not marked done.  Any thread may
    mark an item done, so a joiner among those consumers (a dispatcher whose workers call
    ``task_done()``) waits for a hand-off, as for a ``threading.Lock`` it holds itself
    (``_joins_queue``).  So does every joiner of a queue whose items a thread other than their
    consumer was seen to mark done (``_ends_by_anyone``): stuck only when nobody may move (see
    :func:`pylockdep._waitfor.stuck_waits`), even through a cycle of waits.  Until then the
    consumers mark their own items done, as ``queue``'s documentation has them do."""

    __slots__ = ("_map",)
    _joins_queue = True

    def __init__(self, m: _QueueMap, idents: Callable[[], tuple[list[int], bool]]) -> None:
        super().__init__(m, idents)
        self._map = m

    @property
    def _ends_by_anyone(self) -> bool:
        return self._map.done_by_others


def _wait(what: _Wait, done: Callable[[float], bool], timeout: float | None) -> None:
    """Block until ``done(seconds)`` (which waits at most ``seconds``) says the work is done, or
    until ``timeout`` passes; raise DeadlockError if a wait without a timeout closes a cycle of
    waiting threads.  A wait with a timeout ends by itself: it never raises (its dependency was
    validated when it touched the map), and no other thread's wait is stuck behind it."""
    if timeout is not None:
        deadline = monotonic() + max(timeout, 0)
        while not done(min(_waitfor.POLL_SECONDS, max(deadline - monotonic(), 0))):
            if monotonic() >= deadline:
                return
        return
    v = active.validator
    if v.off:
        while not done(_waitfor.POLL_SECONDS):
            pass
        return
    _waitfor.wait(v, v.task(), what, 0, done)


# -- threading.Thread --------------------------------------------------------------------------

_UNSET = object()
_MAP = "_lockdep_map"  # a Thread's map: a CompletionMap, or None for a pool's worker; a pool's, a queue's
# The maps of pools, work items and queues, whose methods run per item, are set with
# object.__setattr__ and read with getattr, never through the instance's __dict__: on 3.11 and
# 3.12, touching an object's __dict__ makes every later attribute access on it take a slower path
# (a Queue's put() and get() cost 2,700 more instructions once its __dict__ was read).  What is
# read is checked to be a map: a __getattr__ may answer for an object that has none.
# The code of ThreadPoolExecutor._adjust_thread_count, which makes the pools' workers (once
# concurrent.futures.thread is patched).
_SPAWNING_CODE: CodeType | None = None


def _thread_init(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        maker = _getframe(1)
        while maker is not None and _constructs(maker, self):
            maker = maker.f_back  # a subclass's __init__, calling its base's
        if maker is not None and maker.f_code is _SPAWNING_CODE:
            self.__dict__[_MAP] = None  # a pool's worker: its work items carry the maps
            return
        key = map_key("thread", _getframe(1), self)
        if key is not None:
            self.__dict__[_MAP] = CompletionMap(key)

    return __init__


def _thread_bootstrap_inner(original: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
    def _bootstrap_inner(self: threading.Thread) -> None:
        m = self.__dict__.get(_MAP)
        if m is None:
            original(self)
            return
        own_run = self.__dict__.get("run", _UNSET)
        run = self.run

        def run_holding_map() -> None:
            hold(m, _getframe(1))  # at threading's _bootstrap_inner, as the kernel shows process_one_work
            try:
                run()
            finally:
                release(m)

        self.run = run_holding_map  # type: ignore[method-assign]
        try:
            original(self)
        finally:
            if own_run is _UNSET:
                self.__dict__.pop("run", None)
            else:
                self.run = own_run  # type: ignore[method-assign]

    return _bootstrap_inner


def _thread_join(original: Callable[..., None]) -> Callable[..., None]:
    def join(self: threading.Thread, timeout: float | None = None) -> None:
        m = self.__dict__.get(_MAP, _UNSET)
        if m is _UNSET or not self._started.is_set() or self is threading.current_thread():
            original(self, timeout)  # not ours, or CPython's own RuntimeError
            return
        if m is not None and not _waitfor.polls(timeout):
            _touch_waited(m, _getframe(1))
        if not self.is_alive():
            original(self, timeout)
            return

        def blockers() -> tuple[list[int], bool]:
            ident = self.ident
            return ([ident] if ident is not None and self.is_alive() else []), False

        def ended(seconds: float) -> bool:
            original(self, seconds)
            return not self.is_alive()

        _wait(_Wait(m, blockers, f"(thread){self.name}"), ended, timeout)

    return join


# -- concurrent.futures ------------------------------------------------------------------------

_WORK = "_lockdep_work"  # on a _WorkItem and its Future: the _WorkMap of the item (see _WorkMap)
# Thread ident -> (the pool's map, the work's key) while that thread runs a submit() of a pool with
# a map.  A dict rather than a threading.local, whose attributes cost more to set and get (some 600
# instructions more per task on 3.11).
_submitting: dict[int, tuple[_PoolMap, LockKey | None]] = {}


class _PoolMap(CompletionMap):
    """The map of a thread pool, which also knows the pool, how many workers it may run, and the
    map its work items of each class carry while they are not running (:meth:`idle_work`).

    The pool is held weakly: a future (which carries the map of its work, and so this) must not
    keep its executor alive, since a collected executor is how a pool dropped without
    ``shutdown()`` lets its workers end.
    """

    __slots__ = ("executor", "max_workers", "idle")

    def __init__(self, key: LockKey, executor: Any) -> None:
        self._key = key
        self._owner = None
        self.executor = weakref.ref(executor)
        self.max_workers: int = executor._max_workers
        self.idle: dict[LockKey, _WorkMap] = {}

    def idle_work(self, key: LockKey) -> _WorkMap:
        """The map of this pool's work items of class ``key`` that are queued or finished, one for
        them all: only a running item has a map of its own (see :func:`_work_item_run`), so the
        many futures a program keeps cost no object each, nor the collector any time."""
        work = self.idle.get(key)
        if work is None:
            work = self.idle[key] = _WorkMap(key, self)
        return work


class _WorkMap(CompletionMap):
    """The map of a work item of a thread pool, which also knows its pool's map and who runs it.

    An item and its future carry the pool's shared map of their class (:meth:`_PoolMap.idle_work`,
    whose ``runner`` is None) until a worker runs the item; the future carries a map of the item's
    own, naming its runner, while it runs.  The C stand-in of ``_WorkItem.run`` builds one by
    setting the four slots that ``__init__`` sets (see :func:`pylockdep._fastpath.accelerate_pool`):
    keep the two in step."""

    __slots__ = ("pool", "runner")

    def __init__(self, key: LockKey, pool: _PoolMap, runner: int | None = None) -> None:
        self._key = key  # CompletionMap's, inline: one is made per item run
        self._owner = None
        self.pool = pool
        self.runner = runner

    def blockers(self) -> tuple[list[int], bool]:
        """The threads the work's waiter waits for: its runner, else (queued) every worker of a
        saturated pool, all of which must be stuck for the wait to be."""
        runner = self.runner
        if runner is not None:
            return [runner], False
        executor = self.pool.executor()
        if executor is None:
            return [], False  # the pool was dropped: its workers finish what is queued, then end
        workers = [w.ident for w in list(executor._threads) if w.ident is not None]
        if len(workers) < self.pool.max_workers:
            return [], False  # the pool can still start a worker for it
        return workers, True


def _future_blockers(future: Any) -> tuple[list[int], bool]:
    """The blockers of the map ``future`` carries now: its queued item's (the pool's workers), or
    its running item's (the runner), read again at each poll of a wait, which may begin before
    the item runs."""
    return getattr(future, _WORK).blockers()  # type: ignore[no-any-return]


def _touch_work(work: _WorkMap, caller: FrameType) -> None:
    """A waiter waits for ``work``, in a waiting method that ``caller`` called: touch its map, and
    its pool's when that pool runs one item at a time or the waiter is one of the pool's own items."""
    v = active.validator
    if v.off:
        return
    t = v.task()
    _touch(v, t, work, caller, True)
    pool = work.pool
    if pool.max_workers == 1 or (t.held and find(t, pool) >= 0):
        _touch(v, t, pool, caller, True)


# Each work item holds and releases two maps and is waited for once: the common case of each in C,
# when in use (the functions above stay the definition, and do every other case).
_hold_maps, _release_maps, _touch_work = accelerate_waits(  # type: ignore[assignment]
    _hold_maps, _release_maps, _touch_work, CompletionMap, _WorkMap, _PoolMap
)


def _pool_init(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        key = map_key("wq_completion", _getframe(1), self)
        if key is not None:
            object.__setattr__(self, _MAP, _PoolMap(key, self))

    return __init__


def _pool_submit(original: Callable[..., Any]) -> Callable[..., Any]:
    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        pool = getattr(self, _MAP, None)
        ident = _get_ident()
        previous = _submitting.pop(ident, None)  # an outer submit()'s, hidden from this one's work
        if isinstance(pool, _PoolMap):
            _submitting[ident] = (pool, map_key("work_completion", _getframe(1)))
        try:
            future = original(self, fn, *args, **kwargs)
            if isinstance(pool, _PoolMap) and _running(pool):
                future.__dict__[_SUBMITTED_INSIDE] = True  # see _touch_future
            return future
        finally:
            if previous is None:
                _submitting.pop(ident, None)
            else:
                _submitting[ident] = previous

    return submit


def _pool_shutdown(original: Callable[..., None]) -> Callable[..., None]:
    def shutdown(self: Any, wait: bool = True, *, cancel_futures: bool = False) -> None:
        m = getattr(self, _MAP, None)
        if wait and isinstance(m, _PoolMap):
            _touch_waited(m, _getframe(1))
        original(self, wait, cancel_futures=cancel_futures)

    return shutdown


def _work_item_init(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, future: Any, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        original(self, future, fn, args, kwargs)
        submitting = _submitting.get(_get_ident())
        if submitting is not None and submitting[1] is not None:
            pool, key = submitting
            work = pool.idle_work(key)
            object.__setattr__(self, _WORK, work)
            object.__setattr__(future, _WORK, work)

    return __init__


def _work_item_run(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: Any) -> None:
        work = getattr(self, _WORK, None)
        future = None
        try:
            if not isinstance(work, _WorkMap):
                original(self)
                return
            frame = _getframe(1)  # the pool's _worker, as the kernel shows process_one_work
            pool = work.pool
            idle, work = work, _WorkMap(work._key, pool, _get_ident())  # its own map while it runs
            future = self.future
            object.__setattr__(future, _WORK, work)
            try:
                _hold_maps((pool, work), frame)
                try:
                    original(self)
                finally:
                    _release_maps((work, pool))
            finally:
                object.__setattr__(future, _WORK, idle)
        finally:
            # As _WorkItem.run drops ``self`` when the call raised: the exception's traceback links
            # back to this frame, so holding the work item (and its future) here would keep the
            # exception alive until the garbage collector runs.
            self = future = None

    return run


def _when_done(future: Any) -> Callable[[float], bool]:
    """What waits at most ``seconds`` for ``future`` to finish or be cancelled, saying whether it has.

    It waits on a bare lock that a done-callback releases, never on the future's condition: a
    thread marked as waiting must not hold, even for a moment, a lock that the thread it waits
    for needs to finish (``set_result()`` takes the condition), or the deadlock check would see
    a cycle that is not there.
    """
    signal = plain_lock()
    signal.acquire()
    add = type(future).add_done_callback  # CPython's own, where the wrapper below is (a callback of ours)
    getattr(add, "__wrapped__", add)(future, lambda _: signal.release())
    return lambda seconds: signal.acquire(True, seconds)


_DONE_STATES: set[str] = set()  # filled when concurrent.futures._base is patched
_TAKEN_STATES: set[str] = set()  # the done states and RUNNING: a pool's worker took the work
#: A future's attribute: its work was submitted by an item of its own pool (see _touch_future).
_SUBMITTED_INSIDE = "_lockdep_submitted_inside"
#: A future's attribute: the idents of the threads in its add_done_callback() now, which calls the
#: callback at once when the future is done (see _future_add_done_callback).
_IN_CALLBACKS = "_lockdep_in_callbacks"
#: Code whose ``Future.result()`` and ``exception()`` calls read a future that is done by design,
#: and so wait for nothing: asyncio's ``_copy_future_state`` (added by :mod:`pylockdep._asyncio`),
#: which hands an executor future's outcome to the coroutine that awaited it without blocking.  A
#: list, not a set: a code object's hash is worked out again at every lookup.
READS_DONE_FUTURES: list[CodeType] = []


def _running(work: CompletionMap) -> bool:
    """Whether the calling thread runs ``work``, or an item of the pool ``work`` (it holds the map)."""
    v = active.validator
    if v.off:
        return False
    t = v.task()
    return bool(t.held) and find(t, work) >= 0


def _future_wait(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Future.result`` or ``Future.exception``: touch the work (pool work's, or another map a
    future was given: :func:`future_waits_for`), then wait for it without hanging."""

    def wait_then(self: Any, timeout: float | None = None) -> Any:
        try:
            work = getattr(self, _WORK, None)
            if not isinstance(work, CompletionMap) or _waitfor.polls(timeout) or self._condition._is_owned():
                # Not work with a map; a poll; or called by concurrent.futures.wait() itself, which
                # holds every future's condition (released by any real wait) and was accounted for
                # on entry.
                return original(self, timeout)
            if self._state in _DONE_STATES and (
                _running(work)
                or _getframe(1).f_code in READS_DONE_FUTURES
                or _get_ident() in getattr(self, _IN_CALLBACKS, ())
            ):
                # A done callback of the future, run by the thread that ran its work or by the one
                # that added it to a done future: the result is there before any callback runs, so
                # this never waits.  Nor does a reader of futures that are done by design.
                return original(self, timeout)
            if isinstance(work, _WorkMap):
                _touch_future(self, work, _getframe(1))
            else:
                _touch_waited(work, _getframe(1))
            if self._state not in _DONE_STATES:
                _wait(_Wait(work, partial(_future_blockers, self)), _when_done(self), timeout)
                return original(self, 0)  # done, or CPython's TimeoutError
            return original(self, timeout)
        finally:
            # As CPython's result() does: the future's exception, raised through this frame, must not
            # keep the future (and so itself) alive in a cycle that only the collector frees.
            self = None

    return wait_then


def _future_add_done_callback(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Future.add_done_callback``, which calls the callback at once, in the caller's thread,
    when the future is done: meanwhile the thread is marked as running the future's callbacks,
    which read it done (see :func:`_future_wait`).  The callback stored is the caller's own
    (code that removes it from ``_done_callbacks`` finds it); one called later runs in the thread
    that completes the future, for a pool's work its worker, which holds the work's map."""

    def add_done_callback(self: Any, fn: Callable[[Any], object]) -> None:
        try:
            inside = self.__dict__.setdefault(_IN_CALLBACKS, set())
        except AttributeError:  # a future without a __dict__: no work of a pool's either
            return original(self, fn)  # type: ignore[no-any-return]
        ident = _get_ident()
        if ident in inside:  # a callback adding another to the same future: the outer call unmarks
            return original(self, fn)  # type: ignore[no-any-return]
        inside.add(ident)
        try:
            return original(self, fn)  # type: ignore[no-any-return]
        finally:
            inside.discard(ident)

    return add_done_callback


def future_waits_for(future: Any, work: CompletionMap) -> None:
    """Make a wait for ``future`` (its ``result()``, ``exception()``) a wait for ``work``, the map
    of what completes it, which ``work.blockers()`` names as pool work's map does (see
    :class:`_WorkMap`): touched by the waiter, and followed by the deadlock check."""
    setattr(future, _WORK, work)


def _touch_future(future: Any, work: _WorkMap, caller: FrameType) -> None:
    """A waiter waits for ``future``, pool work: touch the work (:func:`_touch_work`, which touches
    its pool too where the pool runs one item at a time or the waiter is one of its items).

    An item of the pool waits for nothing of the pool, though, for work the pool has taken from
    its queue already (running or done) that no item of the pool submitted.  The pool takes its
    items in order: such work was submitted before the waiter was taken, and is taken before it
    in every run (s3transfer's tasks read the futures of the tasks submitted before them).  Work
    still queued, or that an item submitted (and so maybe after the waiter was taken: a worker
    that was free this time may not be the next), is a wait for the pool."""
    if _running(work.pool) and _taken_from_outside(future):
        _touch_waited(work, caller)
    else:
        _touch_work(work, caller)


def _taken_from_outside(future: Any) -> bool:
    """Whether ``future``'s work was taken from its pool's queue (running or done) and submitted by
    no item of the pool (see :func:`_touch_future`)."""
    return future._state in _TAKEN_STATES and _SUBMITTED_INSIDE not in future.__dict__


def _touch_futures(fs: Iterable[Any], caller: FrameType) -> None:
    seen: set[tuple[int, bool]] = set()
    for future in fs:
        work = getattr(future, _WORK, None)
        if isinstance(work, _WorkMap) and (key := (id(work._key), _taken_from_outside(future))) not in seen:
            seen.add(key)
            _touch_future(future, work, caller)


def _futures_wait(original: Callable[..., Any]) -> Callable[..., Any]:
    def wait(fs: Iterable[Any], timeout: float | None = None, return_when: str = "ALL_COMPLETED") -> Any:
        fs = set(fs)
        if not _waitfor.polls(timeout):
            _touch_futures(fs, _getframe(1))
        return original(fs, timeout, return_when)

    return wait


def _futures_as_completed(original: Callable[..., Any]) -> Callable[..., Any]:
    def as_completed(fs: Iterable[Any], timeout: float | None = None) -> Any:
        fs = list(fs)
        if not _waitfor.polls(timeout):
            _touch_futures(fs, _getframe(1))
        return original(fs, timeout)

    return as_completed


# -- queue.Queue -------------------------------------------------------------------------------

# Guards every queue's spans and every _Span's count.  Re-entrant: a signal handler may use a queue
# while its thread is in here (what it does in between is a few dict operations).
_spans_lock = plain_rlock()
_current_span = threading.local()  # .span: the calling thread's open _Span, if any


class _QueueMap(CompletionMap):
    """The map of a queue, which also knows the consumers' open spans on it: thread ident ->
    that thread's :class:`_Span`."""

    __slots__ = ("spans", "done_by_others")

    def __init__(self, key: LockKey) -> None:
        super().__init__(key)
        self.spans: dict[int, _Span] = {}
        #: Whether a thread with no open span marked an item done (see _QueueJoin).
        self.done_by_others = False

    def __reduce_ex__(self, protocol: int) -> Any:
        """A copied or pickled queue (an ``asyncio.Queue`` may be) gets a map of its own, of the same
        class, with no span open."""
        return type(self), (self._key,)


class _Span:
    """A consumer thread's open ``get()``..``task_done()`` span on one queue: it holds the queue's
    map until ``count`` items are marked done (or it opens a span on another queue)."""

    __slots__ = ("map", "spans", "holder", "count")

    def __init__(self, m: CompletionMap, spans: dict[int, _Span], holder: Any) -> None:
        self.map = m
        self.spans = spans
        self.holder = holder
        self.count = 1


def _queue_init(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, maxsize: int = 0) -> None:
        original(self, maxsize)
        key = map_key("queue", _getframe(1), self)
        if key is not None:
            object.__setattr__(self, _MAP, _QueueMap(key))

    return __init__


def _queue_get(original: Callable[..., Any]) -> Callable[..., Any]:
    def get(self: Any, block: bool = True, timeout: float | None = None) -> Any:
        item = original(self, block, timeout)
        m = getattr(self, _MAP, None)
        if isinstance(m, _QueueMap) and not active.validator.off:
            # Counted in the caller's open span there (the common case, inline), else one is opened.
            ident = _get_ident()
            with _spans_lock:
                span = m.spans.get(ident)
                if span is not None:
                    span.count += 1
            if span is None:
                _open_span(m, ident, _getframe(1))
        return item

    return get


def _open_span(m: _QueueMap, ident: int, frame: FrameType) -> None:
    """The calling thread (``ident``) took an item from a queue: count it in its open span there,
    or open one.

    A thread has one span open at a time: one on another queue (whose items it took and never
    marked done) is closed first, so spans left open by consumers that never call
    ``task_done()`` neither pile up nor outlive the thread's next ``get()`` elsewhere.
    """
    spans = m.spans
    with _spans_lock:
        span = spans.get(ident)
        if span is not None:
            span.count += 1
            return
    previous = getattr(_current_span, "span", None)
    if previous is not None:
        _close(previous, ident)
    hold(m, _waiter_frame(frame))
    span = _Span(m, spans, active.validator.task())
    with _spans_lock:
        spans[ident] = span
    _current_span.span = span


def _close(span: _Span, ident: int) -> None:
    """Close ``span`` (the thread ``ident``'s) unless it is closed already.  A signal handler that
    uses queues may run in the middle of this, or of any other use of the spans, in the same
    thread: each step leaves them whole for it, and the span's map is released once."""
    with _spans_lock:
        found = span.spans.pop(ident, None)
        if found is not span:
            if found is not None:  # another span, which a handler opened meanwhile: not this one
                span.spans[ident] = found
            return
    mine = ident == _get_ident()
    if mine:
        _current_span.span = None
    if mine and span.holder is active.validator.task():
        release(span.map)
    else:  # another thread's span, or this thread's opened outside the asyncio task running now
        span.holder.pending.append(span.map)


def _queue_task_done(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def task_done(self: Any) -> None:
        m = getattr(self, _MAP, None)
        if isinstance(m, _QueueMap):
            _end_one(m)
        original(self)

    return task_done


def _end_one(m: _QueueMap) -> None:
    """One item of a queue is done: count it off the caller's open span there, else any thread's
    (and the queue's items are known to be marked done by others than their consumers)."""
    ident = _get_ident()
    spans = m.spans
    with _spans_lock:
        if ident not in spans:
            m.done_by_others = True
            ident = next(iter(spans), -1)
        span = spans.get(ident)
        if span is None:
            return
        span.count -= 1
        if span.count:
            return
    _close(span, ident)


def _queue_join(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def join(self: Any) -> None:
        m = getattr(self, _MAP, None)
        if not isinstance(m, _QueueMap):
            original(self)
            return
        _touch_waited(m, _getframe(1))
        spans = m.spans

        def blockers() -> tuple[list[int], bool]:
            with _spans_lock:
                return list(spans), False

        def finished(seconds: float) -> bool:
            with self.all_tasks_done:
                if self.unfinished_tasks:
                    self.all_tasks_done.wait(seconds)
                return not self.unfinished_tasks

        if self.unfinished_tasks:
            _wait(_QueueJoin(m, blockers), finished, None)

    return join


# -- installing --------------------------------------------------------------------------------

# module name -> [(owner attribute path, attribute, wrapper factory)]
_PATCHES: dict[str, list[tuple[str, str, Callable[[Any], Any]]]] = {
    "threading": [
        ("Thread", "__init__", _thread_init),
        ("Thread", "_bootstrap_inner", _thread_bootstrap_inner),
        ("Thread", "join", _thread_join),
    ],
    "concurrent.futures._base": [
        ("Future", "result", _future_wait),
        ("Future", "exception", _future_wait),
        ("Future", "add_done_callback", _future_add_done_callback),
        ("", "wait", _futures_wait),
        ("", "as_completed", _futures_as_completed),
    ],
    "concurrent.futures.thread": [
        ("ThreadPoolExecutor", "__init__", _pool_init),
        ("ThreadPoolExecutor", "submit", _pool_submit),
        ("ThreadPoolExecutor", "shutdown", _pool_shutdown),
        ("_WorkItem", "__init__", _work_item_init),
        ("_WorkItem", "run", _work_item_run),
    ],
    "queue": [
        ("Queue", "__init__", _queue_init),
        ("Queue", "get", _queue_get),
        ("Queue", "task_done", _queue_task_done),
        ("Queue", "join", _queue_join),
    ],
}
# Names that modules re-export from a patched one: (module, name, source module).
_REEXPORTS = (
    ("concurrent.futures", "wait", "concurrent.futures._base"),
    ("concurrent.futures", "as_completed", "concurrent.futures._base"),
)

# The wrappers that run once per task of a thread pool get C stand-ins for their common case, when
# the C module is in use (the wrappers stay the definition, and do every other case).
_C_ROLES: dict[Callable[[Any], Any], str] = {
    _pool_submit: "submit",
    _work_item_init: "work_init",
    _work_item_run: "run",
    _future_wait: "result",
}
_pool_stand_in = accelerate_pool(
    (_hold_maps, _release_maps),
    _submitting,
    _keys_at,
    "work_completion",
    _MAP,
    _WORK,
    _DONE_STATES,
    READS_DONE_FUTURES,
    _IN_CALLBACKS,
    _WorkMap,
)

_undo: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, original, wrapper)


def _patch(module: ModuleType) -> None:
    """Put the wrappers in ``module`` (one of :data:`_PATCHES`)."""
    global _SPAWNING_CODE
    if module.__name__ == "concurrent.futures._base":
        _DONE_STATES.update({module.CANCELLED, module.CANCELLED_AND_NOTIFIED, module.FINISHED})
        _TAKEN_STATES.update({*_DONE_STATES, module.RUNNING})
    elif module.__name__ == "concurrent.futures.thread":
        _SPAWNING_CODE = module.ThreadPoolExecutor._adjust_thread_count.__code__
    for owner_name, attribute, factory in _PATCHES[module.__name__]:
        owner = getattr(module, owner_name) if owner_name else module
        original = owner.__dict__[attribute]
        wrapper = update_wrapper(factory(original), original)  # the original's name and doc, __wrapped__
        role = _C_ROLES.get(factory)
        if role is not None:
            wrapper = _pool_stand_in(role, wrapper, original)
        setattr(owner, attribute, wrapper)
        _undo.append((owner, attribute, original, wrapper))
    # A package importing the names while it is being imported gets the wrappers; one imported
    # already has the originals.
    for name, attribute, source in _REEXPORTS:
        reexporting = sys.modules.get(name)
        if source == module.__name__ and reexporting is not None:
            _set_reexport(reexporting, attribute, module)


def _set_reexport(module: ModuleType, attribute: str, source: ModuleType) -> None:
    original = module.__dict__.get(attribute)
    wrapper = source.__dict__[attribute]
    if original is not None and original is not wrapper:
        setattr(module, attribute, wrapper)
        _undo.append((module, attribute, original, wrapper))


_hooks: list[Hook] = []  # waiting for the modules not imported yet


def install() -> None:
    """Model waits from now on: patch the modules already imported, the others once imported
    (instrumenting imports nothing, so it makes no lock before the program does).

    Called by :func:`pylockdep._threading.install`, under its lock, once per nesting.
    """
    for name in _PATCHES:
        hook = when_imported(name, _patch)
        if hook is not None:
            _hooks.append(hook)


def uninstall() -> None:
    """Put back every patched attribute; objects made meanwhile keep their maps, unused."""
    while _hooks:
        _hooks.pop().remove()
    while _undo:
        owner, attribute, original, wrapper = _undo.pop()
        if owner.__dict__.get(attribute) is wrapper:
            setattr(owner, attribute, original)
