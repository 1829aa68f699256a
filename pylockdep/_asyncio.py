"""asyncio's locks, validated, with the asyncio task as the holder.

The kernel picture maps directly: the event loop's thread is a CPU, an asyncio task is a task, and
an ``await`` that suspends the task is ``schedule()``.  While instrumentation is installed
(:func:`install`, which :func:`pylockdep.instrument_threading` calls):

- ``asyncio.Lock``, ``Semaphore``, ``BoundedSemaphore``, ``Condition`` and ``Event`` make the
  subclasses below.  Each *is* CPython's own class of the running Python, so waiting, fairness,
  cancellation, ``locked()`` and the ``repr`` shape are exactly CPython's; the subclass only adds the
  bookkeeping around them.
- Every step of an asyncio task runs with the task's own holder (:class:`TaskHolder`, a
  :class:`pylockdep._task.Task` made for the asyncio task) as the thread's current holder: whatever
  the step takes, an ``asyncio.Lock`` or a ``threading.Lock`` alike, goes on the task's held stack
  and into the one graph shared with threads.  The switch happens in ``asyncio.events.Handle._run``,
  through which every loop of the standard library runs a task's steps.

What each type is to the validator:

- ``Lock`` (and a ``Condition``'s lock) is a sleeping lock with an owner, the task that took it
  (lock type ``asyncio.Lock``): ordered, checked for recursion and for real wait cycles among tasks.
  CPython lets another task release it; that release takes it off the taker's stack, with no report,
  and makes the lock's class a hand-off signal, as a ``threading.Lock`` released by another thread
  (:func:`_check_releaser`); a lock held on after the function that took it returned may be a token
  another task hands back, as a ``threading.Lock`` may (:func:`pylockdep._checks.check_token_held`).
  ``wait_for(lock.acquire(), timeout)``, asyncio's timed acquire, is a trylock, as ``threading``'s
  ``acquire(timeout=...)`` is (:func:`_timed`).
- ``Semaphore`` and ``BoundedSemaphore`` are counters, not owner locks, and the kernel's lockdep does
  not track ``struct semaphore`` either: they get no class, no held entry and no dependencies.
  ``acquire()`` is checked as the kernel's ``down()`` is, as a function that may sleep.
- ``Event.wait()`` may sleep too, and is checked the same way.

Awaiting a task is a wait for work, modelled as :mod:`pylockdep._waits` models joining a thread: a
task runs holding a completion map of its own, ``(task)file:line`` after the line that made the task
(:func:`_create_task`), and a task that suspends awaiting other tasks (directly, through ``gather()``,
``wait_for()``, ``asyncio.wait()`` or a ``TaskGroup``'s exit) while it holds locks touches the awaited
tasks' maps when it resumes, with the locks it held all through the wait.  A lock held by the
awaiter that the awaited task takes is then an ordinary cycle in the graph.  An awaited task that
comes to wait for one of those locks closes a wait cycle that may never let the awaiter resume: the
maps are touched once the callbacks already due on the loop have run, if the cycle still stands
(:func:`_touch_if_still_stuck`).  A task that ends cancelled is no work the awaiter waited for: its
map is not touched.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import itertools
import os
import sys
import threading
import weakref
from asyncio import events
from collections.abc import Callable, Sequence
from sys import _getframe
from types import CodeType, CoroutineType, FrameType
from typing import Any

from . import _checks, _frames, _locktypes, _waitfor, _waits
from ._classes import LockKey, key_for
from ._fastpath import accelerate_step, holder_changed
from ._frames import Site, Stack, arguments, format_file_line, is_harness, is_internal, stack_standing_in
from ._held import (
    H_CLASS,
    H_CODE,
    H_LASTI,
    H_LOCK,
    H_READ,
    H_TRYLOCK,
    chain_key,
    do_pending,
    find,
    held_site,
    pop,
    push,
    remove,
    variant,
)
from ._report import DeadlockError
from ._sites import class_name, creation_frame, makes_attr, owner_key, site_owner_keys
from ._task import Task, is_main_thread
from ._validator import Validator, active

__all__ = ["BoundedSemaphore", "Condition", "Event", "Lock", "Semaphore", "TaskHolder", "install", "uninstall"]

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_current_task = asyncio.current_task  # a C function from 3.12 on, where the fast path calls it
_running_loop = events._get_running_loop
# Whether a task's step can run outside Handle._run (3.12's eager tasks run their first step inside
# create_task(), within the creating task's step): only then can the holder in place be another
# task's.  Before 3.12 every step goes through Handle._run, which puts the task's holder in place.
_EAGER_TASKS = sys.version_info >= (3, 12)


_get_ident = _thread.get_ident
# Files that a lock was taken or made from, taken as a site as they are (outside asyncio, pylockdep
# and harnesses): the fast path takes a lock there without _site_frame().
_site_files: set[str] = set()

# CPython's own classes, whatever instrumentation does to the asyncio namespace later.
_PlainLock = asyncio.locks.Lock
_PlainSemaphore = asyncio.locks.Semaphore
_PlainBoundedSemaphore = asyncio.locks.BoundedSemaphore
_PlainCondition = asyncio.locks.Condition
_PlainEvent = asyncio.locks.Event
_plain_run = events.Handle._run
_plain_create_task = asyncio.base_events.BaseEventLoop.create_task


# -- holders -----------------------------------------------------------------------------------


class TaskHolder(Task):
    """An asyncio task as a holder of locks: its own held stack and context, for one validator.

    ``comm`` prints ``task name/id`` (the id is the asyncio task's ``id()``).  ``loop_thread`` is the
    ident of the thread whose loop runs the task; ``running`` the asyncio task while one of its steps
    runs (else None).  ``takes_for_awaiter``: whether the task runs nothing but a lock's
    ``acquire()`` or a condition's ``wait()`` (see :func:`_task_exited`); then ``awaiter`` is the
    holder that made it, for whom it takes the lock (None if not known: see :func:`_create_task`),
    and ``passes_on`` says whether ``wait_for()`` made it, so that its awaiter holds what it took
    once it ends (see :func:`_pass_to_awaiter`).  A task that 3.11's ``wait_for()`` made to run an
    ``asyncio.Queue``'s ``get()`` has its ``awaiter`` and ``passes_on`` too: the awaiter takes the
    item (:mod:`pylockdep._asyncio_queue`).  ``queue_span``: the span of ``asyncio.Queue``
    items it took and has not marked done (:mod:`pylockdep._asyncio_queue`), or its last one,
    closed (a count of 0), or None.
    """

    __slots__ = (
        "task_ref",
        "loop_thread",
        "running",
        "work",
        "working",
        "awaiting",
        "takes_for_awaiter",
        "awaiter",
        "passes_on",
        "queue_span",
    )
    by_the_thousand = True

    def __init__(self, task: asyncio.Task, holders: dict[int, TaskHolder]) -> None:
        loop_thread = _get_ident()
        # Signals interrupt the loop's thread: the holder's ident is the task's, not a thread's.
        super().__init__(task.get_name(), id(task), signals_on=is_main_thread(loop_thread))
        # Forget the holder when the task object goes (a task destroyed while pending included).
        self.task_ref = _task_ref(task, holders)
        self.loop_thread = loop_thread
        self.running: asyncio.Task | None = None
        coro = task.get_coro()
        self.work = _task_map(task, coro)  # the task's completion map (None: not a coroutine's task)
        self.working = False  # whether its steps have started: it holds ``work`` from then on
        # The tasks it waits for while suspended, each with its map (a tuple: most tasks never hold
        # a lock across an await, and an empty one costs nothing).
        self.awaiting: Sequence[tuple[_waits.CompletionMap, asyncio.Task]] = ()
        # Read now: 3.12.1's Task.get_coro() of an eager task that ended inside create_task() crashes.
        self.takes_for_awaiter = getattr(coro, "cr_code", None) in _TAKES_FOR_AWAITER
        self.awaiter: Task | None = getattr(task, _AWAITER, None)
        self.passes_on = getattr(task, _PASSES_ON, False)
        self.queue_span: _waits._Span | None = None


class _TaskRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to an asyncio task that, when the task goes, drops its holder from
    ``holders`` (keyed by the task's ``id()``): one object per task, where a callback closing over
    the two would add a function and its cells to each.  Made by :func:`_task_ref`."""

    __slots__ = ("key", "holders")
    key: int
    holders: dict[int, TaskHolder]

    @staticmethod
    def _gone(ref: _TaskRef) -> None:
        ref.holders.pop(ref.key, None)


def _task_ref(task: asyncio.Task, holders: dict[int, TaskHolder]) -> _TaskRef:
    """A :class:`_TaskRef` to ``task``: weakref's own constructor, then the two slots (a
    ``__new__`` and ``__init__`` of the class's own would cost four times as much, per task)."""
    ref = _TaskRef(task, _TaskRef._gone)
    ref.key = id(task)
    ref.holders = holders
    return ref


def holder_of(v: Validator, task: asyncio.Task) -> TaskHolder:
    """The holder of ``task`` in validator ``v``, made (and registered with ``v``) on first use."""
    holders: dict[int, TaskHolder] = v.async_holders  # type: ignore[assignment]
    h = holders.get(id(task))
    if h is None:
        h = holders[id(task)] = TaskHolder(task, holders)
        v.tasks[id(h)] = h
    return h


def _current_holder(v: Validator) -> Task:
    """The holder of whatever runs now: the current asyncio task's, else the thread's Task."""
    t = getattr(v.local, "task", None)
    if type(t) is TaskHolder and not _EAGER_TASKS:
        return t  # every step of a task runs with its holder in place (see _EAGER_TASKS)
    try:
        task = _current_task()
    except RuntimeError:  # no running loop: a plain thread
        task = None
    if task is None:
        return t if t is not None and type(t) is not TaskHolder else v.task()
    if type(t) is TaskHolder and t.ident == id(task):
        return t
    h = holder_of(v, task)
    if not h.working and h.work is not None:
        # A step that did not go through Handle._run: an eager task's first (3.12+), inside
        # create_task().  Its work starts here, so that what it takes depends on its map.
        _as_holder(v, h, lambda: _start_work(h, task))
    return h


def _as_holder(v: Validator, h: TaskHolder, action: Callable[[], None]) -> None:
    """Run ``action`` with ``h`` as the thread's current holder, then put the current one back."""
    local = v.local
    current = v.task()
    local.task = h
    holder_changed()
    try:
        action()
    finally:
        local.task = current
        holder_changed()


def _start_work(h: TaskHolder, task: asyncio.Task) -> None:
    """The task ``h`` (the current holder) starts its work: it holds its map from now on."""
    h.working = True
    _waits.hold(h.work, _coro_frame(task) or _getframe())  # type: ignore[arg-type]


def _step(handle: events.Handle) -> None:
    """``Handle._run`` while instrumented: a task's step runs with the task's holder current.

    After the step, a task that finished is checked for locks it still holds, and one that
    suspended for thread locks held across the ``await``.
    """
    task = getattr(handle._callback, "__self__", None)
    v = active.validator
    try:
        if not isinstance(task, asyncio.Task) or v.off:
            _plain_run(handle)
            return
        local = v.local
        outer = v.task()  # the thread's own Task, made first so that the thread's exit is seen
        h = holder_of(v, task)
        local.task = h
        holder_changed()
        work = h.work
        if work is not None and not h.working:
            _start_work(h, task)
        if h.awaiting:
            _waited(h, task)
        h.running = task
        try:
            _plain_run(handle)
        finally:
            h.running = None
            try:
                _after_step(v, h, task)
            finally:
                local.task = outer
                holder_changed()
    finally:
        # As Handle._run drops ``self``: a task that raised keeps its traceback, whose frames link
        # back to this one (3.12+), so holding the task or its handle here would keep the task, and
        # its "exception was never retrieved", alive until the garbage collector runs.
        task = handle = None


def _after_step(v: Validator, h: TaskHolder, task: asyncio.Task) -> None:
    """A step of ``task`` ran, its holder ``h`` still current: a task that finished is done with its
    work and checked for locks it still holds; one that suspended holding locks, for those it holds
    across the ``await``."""
    if task.done():
        if h.queue_span is not None:  # taken last, released first
            close_queue_span(v, h.queue_span)
        if h.working:
            _waits.release(h.work)  # type: ignore[arg-type]
        _task_exited(v, h)
    elif h.held:
        _task_suspended(v, h, task)


# What runs a handle while instrumented: _step, its common case in C (see accelerate_step).
_run_handle = accelerate_step(_step, _plain_run, _after_step, asyncio.Task, TaskHolder, events.Handle)


def _task_exited(v: Validator, h: TaskHolder) -> None:
    """The task finished (returned, raised or was cancelled): report the owned locks it still
    holds, unless the task ran nothing but a lock's ``acquire()`` or a condition's ``wait()``: a
    task made to take the lock for whoever awaits it, as 3.11's ``wait_for(lock.acquire(), t)``
    and ``wait_for(cond.wait(), t)`` make one, ends holding the lock by design, and the awaiter
    releases it (an asyncio lock has no owner in CPython).  The awaiter holds it from then on
    (:func:`_pass_to_awaiter`)."""
    v.async_holders.pop(h.ident, None)
    v.tasks.pop(id(h), None)
    if h.queue_span is not None:  # an eager task that ended inside create_task(): the map goes with its stack
        close_queue_span(v, h.queue_span)
    if h.held and h.takes_for_awaiter:
        _pass_to_awaiter(v, h)
    if h.held and not h.takes_for_awaiter:
        v.run_check(h, _checks.check_held_at_exit, False)
        if any(_checks.check_passed_on(entry[H_CLASS]) for entry in h.held):
            v.ended_holding.append(h)  # another task may release them: judged when validation ends


def close_queue_span(v: Validator, span: _waits._Span) -> None:
    """Close ``span``, a task's items of an ``asyncio.Queue`` (:mod:`pylockdep._asyncio_queue`):
    the task holds the queue's map no more, from now on if it is the current holder, else from
    its next step (or never, if it has ended: the map goes with its stack)."""
    h = span.holder
    if span.spans.pop(h, None) is not span:
        return
    span.count = 0  # closed; the task keeps it, to open it again at its next item of the queue
    if v.local.task is h:
        _waits.release(span.map)
    else:
        h.pending.append(span.map)


def _pass_to_awaiter(v: Validator, h: TaskHolder) -> None:
    """The task that 3.11's ``wait_for()`` made took its locks for the holder awaiting it (see
    :func:`_task_exited`): that holder holds them from now on, taken where the task took them, so
    that what it takes under them depends on them, as when it takes a lock itself (from 3.12 on,
    ``wait_for()`` runs the acquisition in the awaiter).  Each is pushed on the awaiter's stack,
    its new chain validated as an acquisition's.  The awaiter's wait is over, so the maps it
    awaits are touched first, with the locks it held all through it (:func:`_waited`): what it
    takes over was not among them.  A task the program made to run a lock's ``acquire()`` keeps
    what it took (whoever awaits it, if anyone, is not known); nothing passes to an awaiter that
    is no longer running."""
    awaiter = h.awaiter
    if not h.passes_on or awaiter is None or v.tasks.get(id(awaiter)) is not awaiter:
        return
    entries = list(h.held)
    while h.held:
        pop(h)

    def take_over() -> None:
        task = awaiter.task_ref()
        if awaiter.awaiting and task is not None:
            _waited(awaiter, task)
        for entry in entries:
            lock, cls, read, trylock = entry[H_LOCK], entry[H_CLASS], entry[H_READ], entry[H_TRYLOCK]
            key = chain_key(awaiter.key, awaiter.ctx, variant(cls, read, trylock))
            if key not in v.chains:
                v.validate_chain(awaiter, lock, cls, read, trylock, key, *held_site(entry))
            push(awaiter, lock, cls, read, trylock, entry[H_CODE], entry[H_LASTI], key)
            if getattr(lock, "_owner", None) is h:
                lock._owner = awaiter

    _as_holder(v, awaiter, take_over)


def _task_suspended(v: Validator, h: TaskHolder, task: asyncio.Task) -> None:
    """The task yielded to its loop: locks that block the thread must not be held across that, and
    while it holds locks, the tasks it awaits are noted, to be touched when it resumes."""
    held = h.held
    if any(_checks.blocks_thread(entry[H_CLASS].ltype) for entry in held):
        v.run_check(h, _checks.check_scheduling_while_atomic, suspended_stack(task))
    if any(not entry[H_CLASS].ltype.pseudo for entry in held):
        h.awaiting = _awaited_maps(v, task)
        if any(_blocked_by(v, awaited, h) for _, awaited in h.awaiting):
            _touch_if_still_stuck(v, h)  # the task may never resume to tell


def _waited(h: TaskHolder, task: asyncio.Task) -> None:
    """The task resumes after awaiting tasks: the locks it held all through the wait (those it
    holds now, as a suspended task takes nothing) wait for them, so their maps are touched, but
    for those of tasks that ended cancelled: the awaiter did not wait for their work.

    Touching on resumption rather than on suspension leaves out a lock that the awaited work
    released for the awaiter meanwhile: 3.11's ``wait_for(cond.wait(), timeout)`` runs the
    condition's wait, which gives the awaiter's lock back, in a task of its own.
    """
    awaited, h.awaiting = h.awaiting, ()
    if any(not entry[H_CLASS].ltype.pseudo for entry in h.held):
        frame = _coro_frame(task, innermost=True)
        with stack_standing_in(suspended_stack(task)):
            for work, awaited_task in awaited:
                if not awaited_task.cancelled():
                    _waits.touch(work, frame)  # type: ignore[arg-type]


def _blocked_by(v: Validator, task: asyncio.Task, h: TaskHolder) -> bool:
    """Whether ``task`` waits for a lock that the holder ``h`` holds, with no cancellation of it
    on its way (a cancelled task runs next, to raise)."""
    if task.done() or task._must_cancel:  # type: ignore[attr-defined]
        return False
    waiter = task._fut_waiter  # type: ignore[attr-defined]
    if waiter is None or waiter.done():
        return False
    a = v.async_holders.get(id(task))
    return a is not None and a.waiting is not None and getattr(a.waiting[0], "_owner", None) is h


def _touch_if_still_stuck(v: Validator, h: TaskHolder) -> None:
    """A task that ``h`` (suspended, holding locks) awaits waits, or is about to wait, for one of
    those locks: a wait cycle that may never let ``h`` resume to touch the maps it awaits.  Touch
    them as ``h`` (the locks it holds have been held all through its wait so far), so that the
    cycle is reported while the tasks are stuck; but only once the callbacks already due on the
    loop have run, and if the cycle still stands then.  A cancellation or a release already on its
    way ends it (CPython's own lock tests schedule one, then await the task that waits): no
    deadlock, in this run or any other."""
    task = h.task_ref()
    if task is None:
        return
    wait = h.awaiting

    def touch_if_stuck() -> None:
        if h.awaiting is wait and any(_blocked_by(v, awaited, h) for _, awaited in wait):
            _as_holder(v, h, lambda: _waited(h, task))

    try:
        task.get_loop().call_soon(touch_if_stuck)
    except RuntimeError:  # a closed loop runs nothing more: the cycle stands
        _as_holder(v, h, lambda: _waited(h, task))


def _create_task(original: Callable[..., asyncio.Task]) -> Callable[..., asyncio.Task]:
    """``BaseEventLoop.create_task``, which every standard way to make a task goes through: the
    task's map is named after the line that asked for the task (``(task)file:line``, the first
    line outside asyncio and pylockdep, with the precision rules of lock classes)."""

    def create_task(self: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
        v = active.validator
        if v.off:
            return original(self, coro, **kwargs)
        frame = _getframe(1)
        in_wait_for = False
        while frame is not None and (
            frame.f_code.co_filename.startswith(_ASYNCIO_DIR) or is_internal(frame.f_code.co_filename)
        ):
            in_wait_for = in_wait_for or frame.f_code is _WAIT_FOR
            frame = frame.f_back
        key = _waits.map_key("task", _asking_frame(frame, coro)) if frame is not None else None
        if key is not None:
            key = _key_for_coroutine(key, coro)
        asked = _threadsafe.pop(id(coro), None)
        work = asked[1] if asked is not None and asked[0] is coro else None  # run_coroutine_threadsafe()'s
        if work is not None:
            key = work._key
        # An eager task (3.12+) runs its first step inside, before the task is returned: its map
        # is made from here then.
        outer, _making.made = getattr(_making, "made", None), (coro, key)
        try:
            task = original(self, coro, **kwargs)
        finally:
            _making.made = outer
        if key is not None:
            setattr(task, _MAP_KEY, key)
        if work is not None:
            work.task = weakref.ref(task)
        code = getattr(coro, "cr_code", None)
        # A task of a lock's acquire() or a condition's wait() (see TaskHolder), or of a queue's
        # get(), whose item is its maker's (see _asyncio_queue).
        if code in _TAKES_FOR_AWAITER or code is _QUEUE_GET_CODE:
            setattr(task, _AWAITER, _current_holder(v))
            if in_wait_for:
                setattr(task, _PASSES_ON, True)
                if code is _ACQUIRE_CODE:
                    setattr(task, _TIMED, True)  # wait_for() makes one only with a timeout
        if task.done():
            h = v.async_holders.get(id(task))
            if h is not None:  # an eager task that ran to its end inside create_task()
                if h.working:
                    _as_holder(v, h, lambda: _waits.release(h.work))  # type: ignore[arg-type]
                _task_exited(v, h)
        return task

    create_task.__doc__ = original.__doc__
    return create_task


def _asking_frame(frame: FrameType, coro: Any) -> FrameType:
    """The line that asked for a task of ``coro``, from ``frame``, the first frame outside asyncio
    and pylockdep: its :func:`~pylockdep._sites.creation_frame` (callers of helpers that only
    return what they made take their place), or, while ``coro`` was handed to that line's function
    as an argument (a generic helper, ``run_in_task(coro)`` or a timeout wrapper), the caller that
    made the coroutine: each line of a caller asks for its own kind of work, where the helper's one
    line would join one call's lock to another call's job."""
    while True:
        frame = creation_frame(frame)
        caller = frame.f_back
        if (
            caller is None
            or caller.f_code.co_filename.startswith(_ASYNCIO_DIR)
            or is_internal(caller.f_code.co_filename)
        ):
            return frame
        if not _handed_in(frame, coro):
            return frame
        frame = caller


def _handed_in(frame: FrameType, coro: Any) -> bool:
    """Whether ``coro`` is the value of an argument of ``frame``'s function now, or of an attribute
    of one (a job object whose method makes a task of ``self.coro``).  A helper may take a
    coroutine or something else on the same line: this is asked at each task it makes."""
    for value in arguments(frame):
        if value is coro:
            return True
        try:
            attributes = object.__getattribute__(value, "__dict__")
        except AttributeError:
            continue
        if type(attributes) is dict and len(attributes) <= _FEW_ATTRIBUTES:
            if any(attribute is coro for attribute in attributes.values()):
                return True
    return False


# An object with more attributes than this is not a job that carries its coroutine: not searched.
_FEW_ATTRIBUTES = 32


def _work_code(coro: Any) -> CodeType | None:
    """The code of the coroutine function whose work a task of ``coro`` does: ``coro``'s own, or,
    when an argument of ``coro``'s function is a coroutine, that coroutine's work (a wrapper, such
    as the inner ``guarded(c)`` of a gather-with-a-limit helper, runs what it was handed)."""
    code = getattr(coro, "cr_code", None)
    for _ in range(_WRAPPERS):
        frame = getattr(coro, "cr_frame", None)
        if frame is None:
            break
        inner = next((value for value in arguments(frame) if type(value) is CoroutineType), None)
        if inner is None:
            break
        coro, code = inner, inner.cr_code
    return code


# How many wrappers deep _work_code looks for the coroutine a task runs.
_WRAPPERS = 4


def _key_for_coroutine(key: LockKey, coro: Any) -> LockKey:
    """The key of the maps of tasks running ``coro`` made at ``key``'s line: ``key`` for the first
    coroutine function a line makes tasks of; a key of its own for each other one, named
    ``(task)function@file:line``.  A generic helper's line (``create_task(coro)`` then await it)
    runs unrelated work: one map class for it all would join the lock one caller holds while it
    awaits its job to the lock another caller's job takes, a false cycle.  A wrapper coroutine
    counts as the coroutine it was handed (:func:`_work_code`)."""
    code = _work_code(coro)
    if code is None:
        return key
    functions = _site_functions.get(key)
    if functions is None:
        functions = _site_functions[key] = {id(code): (code, key)}
    found = functions.get(id(code))
    if found is None:
        site = key.site
        name = f"(task){code.co_name}@{format_file_line(site)}" if site is not None else f"(task){code.co_name}"
        found = functions[id(code)] = (code, key_for(name, _locktypes.COMPLETION, site, ("task", key, code)))
    return found[1]


# A key of a task-making line -> (code, key) for each coroutine function it made tasks of, by the
# id of its code (see above).
_site_functions: dict[LockKey, dict[int, tuple[Any, LockKey]]] = {}
_instrumented_create_task = _create_task(_plain_create_task)
_MAP_KEY = "_lockdep_map_key"  # on a task made by create_task(): the key of its map's class
_making = threading.local()  # .made: (coroutine, key of its map) while create_task() makes its task


def _made_at() -> Stack:
    """The line that made the running task, as a stack (empty when unknown): what a report shows of a
    task none of whose own frames is the program's, as ``create_task(lock.acquire())`` makes."""
    try:
        task = _current_task()
    except RuntimeError:  # no running loop
        return ()
    site = getattr(getattr(task, _MAP_KEY, None), "site", None)
    return () if site is None else (site,)


# A task's stack ends at the event loop's Handle._run, or at the line that made it.
_frames.loop_runner = _plain_run.__code__
_frames.task_made_at = _made_at


def _task_map(task: asyncio.Task, coro: object) -> _waits.CompletionMap | None:
    """A new completion map for ``task``, whose coroutine is ``coro``: of class
    ``(task)function@file:line``, the definition of its coroutine function (None for a task of some
    other awaitable).  A task made through ``create_task`` gets one named after the line that made
    it instead (:func:`_create_task`)."""
    code = getattr(coro, "cr_code", None)
    if code is None:
        return None
    made_at = getattr(task, _MAP_KEY, None)
    if made_at is None:
        made = getattr(_making, "made", None)
        if made is not None and made[0] is coro:
            made_at = made[1]
    if made_at is not None:
        return _waits.CompletionMap(made_at)
    key = _task_keys.get(id(code))
    if key is None:
        site = (code, code.co_firstlineno)
        name = f"(task){code.co_name}@{format_file_line(site)}"
        key = _task_keys[id(code)] = key_for(name, _locktypes.COMPLETION, site)
    return _waits.CompletionMap(key)


# id(coroutine code) -> the key of its tasks' maps, whose site holds the code, so the id stays
# that code's (hashing a code object hashes its contents).
_task_keys: dict[int, LockKey] = {}


def _awaited_maps(v: Validator, task: asyncio.Task) -> list[tuple[_waits.CompletionMap, asyncio.Task]]:
    """The tasks a suspended ``task`` waits for, each with its map: those of the future it awaits
    (:func:`_tasks_of`), else those of the futures one of asyncio's waiting coroutines in its chain
    waits for (:data:`_WAITING`); other futures stand for no known work."""
    tasks = _tasks_of(task._fut_waiter) or [
        found for future in _awaited_by_asyncio(task) for found in _tasks_of(future)
    ]
    found = []
    for awaited in tasks:
        if awaited.done():
            work = _task_map(awaited, awaited.get_coro())  # a finished task has no holder any more: one of its class
        else:
            work = holder_of(v, awaited).work
        if work is not None:
            found.append((work, awaited))
    return found


def _tasks_of(future: Any, depth: int = 0) -> list[asyncio.Task]:
    """The tasks that awaiting ``future`` waits for: the task itself, the tasks a ``gather()``'s
    future gathers, or those of the future a ``shield()``'s outer future shields (nested up to a
    few levels); none for any other future."""
    future = _unshielded(future)
    if isinstance(future, asyncio.Task):
        return [future]
    children = getattr(future, "_children", None)
    if not children or depth > 8:
        return []
    return [task for child in children for task in _tasks_of(child, depth + 1)]


def _awaited_by_asyncio(task: asyncio.Task) -> Any:
    """The futures that the innermost of asyncio's waiting coroutines in ``task``'s chain of
    awaits waits for (none when no such coroutine is suspended there)."""
    found: Any = ()
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None)
        if frame is None:
            break
        waits_for = _WAITING.get(id(frame.f_code))
        if waits_for is not None:
            found = waits_for[1](frame.f_locals)
        coro = getattr(coro, "cr_await", None)
    return found


def _waiting_coroutines() -> dict[int, tuple[CodeType, Callable[[Any], Any]]]:
    """asyncio's coroutines that wait for tasks through a future of their own, by the id of their
    code (hashing a code object hashes its contents), each with its code and what reads the
    futures it waits for from its frame's locals: ``asyncio.wait()``'s ``_wait()`` (none when it
    polls, with a zero timeout), a
    ``TaskGroup``'s exit, and 3.11's ``wait_for()`` with a timeout (from 3.12 on, ``wait_for()``
    awaits the task itself)."""
    readers: list[tuple[CodeType, Callable[[Any], Any]]] = [
        (asyncio.tasks._wait.__code__, lambda f: () if _waitfor.polls(f.get("timeout")) else f.get("fs", ())),  # type: ignore[attr-defined]
        (asyncio.TaskGroup.__aexit__.__code__, lambda f: f["self"]._tasks),
    ]
    if sys.version_info < (3, 12):
        readers.append((asyncio.tasks.wait_for.__code__, lambda f: (f.get("fut"),)))
    return {id(code): (code, read) for code, read in readers}


_WAITING = _waiting_coroutines()


def _coro_frame(task: asyncio.Task, innermost: bool = False) -> FrameType | None:
    """The frame of ``task``'s coroutine, or with ``innermost`` the innermost frame outside
    pylockdep and asyncio of the chain of coroutines it awaits (where it is suspended)."""
    found = None
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if not (is_internal(frame.f_code.co_filename) or frame.f_code.co_filename.startswith(_ASYNCIO_DIR)):
            found = frame
        if not innermost:
            break
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


def suspended_stack(task: asyncio.Task) -> Stack:
    """Where a suspended task waits: its chain of awaiting coroutines, innermost first."""
    sites: list[Site] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if not is_internal(frame.f_code.co_filename):
            sites.append((frame.f_code, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    sites.reverse()
    return tuple(sites)


# -- acquiring and releasing -------------------------------------------------------------------


def _site_frame(frame: FrameType) -> FrameType:
    """The first frame outside pylockdep and asyncio from ``frame`` out (a Condition's wait() re-takes
    its lock from inside asyncio: the site is the caller's), but no further than the task's outermost
    coroutine (the event loop's frames lie beyond it): a task whose coroutine is ``acquire()`` or
    ``Condition.wait()`` itself took the lock there."""
    last = frame
    while True:
        filename = frame.f_code.co_filename
        if is_harness(filename):
            return last
        if not (filename.startswith(_ASYNCIO_DIR) or is_internal(filename)):
            _site_files.add(filename)
            return frame
        back = frame.f_back
        if back is None:
            return frame
        last, frame = frame, back


def _new_key(kind: str, frame: FrameType | None) -> LockKey:
    """The key of an asyncio lock made from ``frame``: its creation site, the first frame outside
    pylockdep and asyncio, named as a threading lock's is (:func:`pylockdep._sites.class_name`:
    ``Owner.attr@file:line``, ``name@file:line``, else ``KIND@file:line``); one per type of ``self``
    where the site stores it in ``self.attr``, as for a threading lock."""
    if frame is None:
        return key_for(f"{kind}@?", _locktypes.ASYNC_LOCK, None)
    frame = _site_frame(frame)
    if makes_attr(frame):
        return owner_key(site_owner_keys(frame, _locktypes.ASYNC_LOCK), frame, kind, _locktypes.ASYNC_LOCK)
    return key_for(class_name(kind, frame), _locktypes.ASYNC_LOCK, (frame.f_code, frame.f_lineno))


def _validate(lock: Lock, frame: FrameType, trylock: bool = False) -> Task | None:
    """Check the acquisition of ``lock`` at ``frame`` by the current holder, before it waits, or
    with ``trylock`` after a timed acquisition took it (:func:`_timed`).

    Returns the holder (None when validation is off).  If the lock is held, the holder is marked
    as waiting for it; a wait that closes a cycle of waiting holders raises
    :class:`DeadlockError` (after lockdep's report, made on validation), unless a timeout of the
    task will end it (:func:`_times_out`).
    """
    v = active.validator
    if v.off:
        return None
    t = getattr(v.local, "task", None)
    if type(t) is not TaskHolder or t.ident != id(_current_task()):
        t = _current_holder(v)
    if t.busy:
        return None
    if t.pending:
        do_pending(v, t)
    if not trylock and (lock._locked or lock._waiters):
        lock._get_loop()  # what CPython raises before it would wait (a lock of another loop) comes first
    owner, classes = lock._key.cache
    cls = classes[0] if owner is v else None
    if cls is None:
        cls = v.class_for(lock._key)
    key = chain_key(t.key, t.ctx, variant(cls, 0, trylock))
    if key not in v.chains:
        v.validate_chain(t, lock, cls, 0, trylock, key, frame.f_code, frame.f_lineno)
    if trylock:
        return t
    holder = lock._owner
    if holder is t and lock._key.handoff and not _others_may_release(lock):
        v.self_deadlock(t, lock)  # a bare acquire()'s lock taken again, nobody left to release it
        raise DeadlockError(_waitfor.describe_cycle([(t, lock)]))
    if holder is not None:
        if type(holder) is TaskHolder and type(t) is TaskHolder and any(m is t.work for m, _ in holder.awaiting):
            _touch_if_still_stuck(v, holder)  # this task is about to wait for the lock
        t.waiting = (lock, 0)
        # A cycle needs the holder to wait too; the last holder to wait is the one that closes it.
        if holder is t or holder.waiting is not None:
            cycle = _waitfor.find_wait_cycle(v, t)
            if cycle is not None and not _times_out(_current_task()):
                t.waiting = None
                raise DeadlockError(_waitfor.describe_cycle(cycle))
    return t


def _others_may_release(lock: Lock) -> bool:
    """Whether something other than the current task could still release ``lock``, which the
    task took with a bare ``acquire()`` and now waits for again: another unfinished task of its
    loop, a timeout that will cancel the wait (:func:`_times_out`), a callback the loop is to run
    (a timer's ``lock.release``, one another thread or an executor's future scheduled), or another
    thread that may still act (it may schedule one: ``call_soon_threadsafe(lock.release)``)."""
    current = _current_task()
    if _times_out(current):
        return True
    loop = lock._get_loop()
    if any(task is not current and not task.done() for task in asyncio.all_tasks(loop)):
        return True
    if getattr(loop, "_ready", None) or getattr(loop, "_scheduled", None):
        return True
    return _waitfor.another_thread_runs(active.validator)


def _times_out(task: asyncio.Task | None) -> bool:
    """Whether ``task`` runs inside an ``asyncio.timeout()`` block still to expire (3.12's
    ``wait_for()`` runs its awaitable in one): a wait of it ends by itself, cancelled, so however
    it waits it is no deadlock.  Read from the loop's timers, and from its ready queue, where a
    timeout already due when the block began waits (an event loop without ``_scheduled`` and
    ``_ready`` tells nothing: no timeout)."""
    if task is None:
        return False
    loop = task.get_loop()
    for handle in itertools.chain(getattr(loop, "_scheduled", ()), getattr(loop, "_ready", ())):
        timeout = getattr(getattr(handle, "_callback", None), "__self__", None)
        if isinstance(timeout, asyncio.Timeout) and timeout._task is task and not handle.cancelled():
            return True
    return False


def _push(lock: Lock, t: Task, frame: FrameType, trylock: bool = False) -> None:
    """Record ``lock`` as held by ``t``, taken at ``frame`` (by a trylock: a timed acquisition)."""
    v = active.validator
    owner, classes = lock._key.cache
    cls = classes[0] if owner is v else v.class_for(lock._key)
    lock._owner = t
    push(t, lock, cls, 0, trylock, frame.f_code, frame.f_lasti, chain_key(t.key, t.ctx, variant(cls, 0, trylock)))
    if len(t.held) >= v.max_lock_depth:
        v.depth_exceeded(t)


def _timed(frame: FrameType) -> bool:
    """Whether the acquisition asked for at ``frame`` (``acquire()``'s caller) is timed, and so a
    trylock, as ``threading``'s ``acquire(timeout=...)`` is: ``wait_for(lock.acquire(), timeout)``
    with a timeout, whether it awaits ``acquire()`` in the task (3.12 on) or in a task of its own,
    made for it (3.11, and a timeout of 0 or less from 3.12 on; see :func:`_create_task`).  Such a
    wait ends by itself: no dependency leads into the lock and it waits for no one."""
    if frame.f_code is _WAIT_FOR:
        return frame.f_locals.get("timeout") is not None
    return getattr(_current_task(), _TIMED, False)


def _remove(owner: Task, lock: Lock) -> None:
    """Take ``lock`` off its holder's stack when it is not the most recent lock there."""
    index = find(owner, lock)
    if index >= 0:
        remove(active.validator, owner, index)


def _check_releaser(lock: Lock, owner: Task) -> None:
    """``lock``, taken by ``owner``, is released by whatever runs now: by another task (or thread),
    its class is a hand-off signal, as a ``threading.Lock``'s released by another thread is
    (:func:`pylockdep._checks.check_handoff`).  A task made to take it for its awaiter (3.11's
    ``wait_for()`` makes one) took it for the task that made it; a task that 3.11's ``wait_for()``
    made to run ``cond.wait()``, which releases its awaiter's lock first, releases it for the
    awaiter.  A taker under another validator, or not known, tells nothing."""
    v = active.validator
    if v.off:
        return
    taker = owner.awaiter if getattr(owner, "takes_for_awaiter", False) else owner  # type: ignore[attr-defined]
    releaser = _current_holder(v)
    if getattr(releaser, "passes_on", False):
        releaser = releaser.awaiter  # type: ignore[attr-defined]
    if taker is None or releaser is taker:
        return
    if v.tasks.get(id(taker)) is taker or any(ended is taker for ended in v.ended_holding):
        lock._key.handoff = True


def _might_sleep(what: str) -> None:
    """The kernel's ``might_sleep()`` for an asyncio wait (``down()``, waiting for an event)."""
    v = active.validator
    if v.off:
        return
    t = _current_holder(v)
    if not (t.preempt or t.hardirq or t.softirq or t.bh or t.irqs_off or t.rcu or t.spins):
        return
    frame = _site_frame(_getframe(2))
    v.run_check(t, _checks.check_might_sleep, (frame.f_code, frame.f_lineno), ["__might_sleep", what], 0)


# -- the types ---------------------------------------------------------------------------------


class Lock(_PlainLock):
    """``asyncio.Lock``, validated as a sleeping lock owned by the task that took it."""

    def __init__(self, *, _key: LockKey | None = None) -> None:
        super().__init__()
        self._key = _key if _key is not None else _new_key("Lock", _getframe(1))
        self._owner: Task | None = None
        # The fast path's last chain key and what it made it from: (t.key, t.ctx, variant, key).
        self._chain: tuple[Any, ...] = (None, None, None, None)

    def __getstate__(self) -> dict[str, Any]:
        """What a copy or a pickle keeps (CPython's lock is a plain object): CPython's state and the
        class, not the holder (a task of this process) nor the fast path's memo."""
        state = dict(self.__dict__)
        state["_owner"], state["_chain"] = None, (None, None, None, None)
        return state

    @property
    def name(self) -> str:
        """The lock class's name, ``Lock@file:line``."""
        return self._key.name

    _owned = True

    def _blockers(self, mode: int, ident: int) -> list[int]:
        # A hand-off signal or a token (see Lock's place in the module docstring) may be released
        # by another task: its taker is not the one its waiters wait for.
        owner = self._owner
        key = self._key
        return [owner.ident] if owner is not None and not (key.handoff or key.token) else []

    def _is_held(self, read: int) -> bool:
        return self._locked

    async def _take(self, frame: FrameType) -> None:
        """Validate, wait as CPython's ``acquire()`` does (same fairness and cancellation), push;
        a timed acquisition (:func:`_timed`) is validated as a trylock once it took the lock."""
        filename = frame.f_code.co_filename
        timed = _timed(frame)
        if filename.startswith(_ASYNCIO_DIR):  # a Condition, or a task running acquire() itself
            frame = _site_frame(_getframe(1))
        elif not (is_internal(filename) or is_harness(filename)):
            _site_files.add(filename)  # a site as _site_frame() takes it: the fast path may use it
        if timed:
            await _PlainLock.acquire(self)
            t = _validate(self, frame, trylock=True)
            if t is not None:
                _push(self, t, frame, trylock=True)
            return
        t = _validate(self, frame)
        if t is None:
            await _PlainLock.acquire(self)
            return
        try:
            await _PlainLock.acquire(self)
        finally:
            t.waiting = None
        _push(self, t, frame)

    async def acquire(self) -> bool:
        """Take the lock (as ``asyncio.Lock.acquire``), after validating the acquisition."""
        await self.__aenter__()
        return True

    async def __aenter__(self) -> None:
        # The fast path: the lock is free with no waiter queued (what CPython's acquire() takes
        # without suspending, so taking it here spares a coroutine), the current task's holder is
        # in place and this chain of held locks was validated before.  Anything else: _take().
        # The chain key is made again only when its ingredients are other objects than last time
        # (tests/test_asyncio.py holds it to chain_key()'s).
        frame = _getframe(1)
        code = frame.f_code
        if code is _ACQUIRE_CODE:
            frame = frame.f_back  # type: ignore[assignment]
            code = frame.f_code
            if code is _CONDITION_ENTER and (back := frame.f_back) and back.f_code.co_filename in _site_files:
                # async with a Condition: its __aenter__ in asyncio awaits acquire(); the site is its
                # caller, as _site_frame() finds it (and as _take() takes it).
                frame, code = back, back.f_code
        if not (self._locked or self._waiters):
            v = active.validator
            try:
                t = v.local.task
            except AttributeError:  # a thread that took no lock yet
                t = None
            if (
                type(t) is TaskHolder
                and (not _EAGER_TASKS or t.running is _current_task())
                and not (v.off or t.busy or t.pending)
            ):
                owner, classes = self._key.cache
                cls = classes[0] if owner is v else None
                if cls is not None and code.co_filename in _site_files:
                    prev = t.key
                    ctx = t.ctx
                    variant = cls.variants[0]
                    last = self._chain
                    if last[0] is prev and last[1] is ctx and last[2] is variant:
                        key = last[3]
                    else:
                        key = chain_key(prev, ctx, variant)
                        self._chain = (prev, ctx, variant, key)
                    if key in v.chains:
                        self._locked = True
                        self._owner = t
                        push(t, self, cls, 0, False, code, frame.f_lasti, key)
                        if len(t.held) >= v.max_lock_depth:
                            v.depth_exceeded(t)
                        return
        await self._take(frame)

    def release(self) -> None:
        """Release the lock (RuntimeError when it is not locked), whichever task took it."""
        _PlainLock.release(self)
        owner = self._owner
        if owner is not None:
            self._owner = None
            if owner is not getattr(active.validator.local, "task", None):
                _check_releaser(self, owner)
            held = owner.held
            if held and held[-1][H_LOCK] is self:
                pop(owner)
            else:
                _remove(owner, self)

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        # release() inlined: one call fewer per block.
        if self._locked and not self._waiters:
            self._locked = False  # CPython's release() when no waiter is to be woken: two calls fewer
        else:
            _PlainLock.release(self)
        owner = self._owner
        if owner is not None:
            self._owner = None
            if owner is not getattr(active.validator.local, "task", None):
                _check_releaser(self, owner)
            held = owner.held
            if held and held[-1][H_LOCK] is self:
                pop(owner)
            else:
                _remove(owner, self)


_ACQUIRE_CODE = Lock.acquire.__code__
_CONDITION_ENTER = _PlainCondition.__aenter__.__code__  # asyncio's _ContextManagerMixin.__aenter__
_TAKES_FOR_AWAITER = (_ACQUIRE_CODE, _PlainCondition.wait.__code__)  # see TaskHolder
_QUEUE_GET_CODE = asyncio.queues.Queue.get.__code__  # a task of it takes its item for its maker
_WAIT_FOR = asyncio.tasks.wait_for.__code__
_TIMED = "_lockdep_timed"  # on a task that wait_for() made to run a lock's acquire(): see _timed()
_AWAITER = "_lockdep_awaiter"  # on a task that takes for its awaiter: the holder that made it
_PASSES_ON = "_lockdep_passes_on"  # on such a task that wait_for() made: see _pass_to_awaiter()


class Condition(_PlainCondition):
    """``asyncio.Condition``; made without a lock, its lock is a validated :class:`Lock` of class
    ``Condition@file:line``."""

    def __init__(self, lock: Any = None) -> None:
        if lock is None:
            lock = Lock(_key=_new_key("Condition", _getframe(1)))
        super().__init__(lock)


class Semaphore(_PlainSemaphore):
    """``asyncio.Semaphore``: not an owner lock, so not in the graph; ``acquire()`` may sleep."""

    async def acquire(self) -> bool:
        """Take one unit (as ``asyncio.Semaphore.acquire``)."""
        _might_sleep("down")
        return await super().acquire()


class BoundedSemaphore(_PlainBoundedSemaphore):
    """``asyncio.BoundedSemaphore``: as :class:`Semaphore`."""

    async def acquire(self) -> bool:
        """Take one unit (as ``asyncio.BoundedSemaphore.acquire``)."""
        _might_sleep("down")
        return await super().acquire()


class Event(_PlainEvent):
    """``asyncio.Event``: ``wait()`` may sleep."""

    async def wait(self) -> bool:
        """Wait until the event is set (as ``asyncio.Event.wait``)."""
        _might_sleep("wait_for_completion")
        return await super().wait()


# -- waiting on the loop's own thread ------------------------------------------------------------

_plain_run_coroutine_threadsafe = asyncio.tasks.run_coroutine_threadsafe


class _LoopFuture(concurrent.futures.Future):
    """The future of :func:`run_coroutine_threadsafe`: waiting for it on the thread that runs its
    loop would never end, so it is reported and refused; with a timeout it can only time out, so
    it is reported, and left to time out."""

    _pylockdep_loop: asyncio.AbstractEventLoop

    def result(self, timeout: float | None = None) -> Any:
        """As ``concurrent.futures.Future.result``."""
        try:
            self._check_own_loop("result", timeout)
            return super().result(timeout)
        finally:
            self = None  # as CPython's result(): the exception it raises must not keep the future alive

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As ``concurrent.futures.Future.exception``."""
        self._check_own_loop("exception", timeout)
        return super().exception(timeout)

    def _check_own_loop(self, method: str, timeout: float | None) -> None:
        """Report a wait for this future on its own loop's thread that may block (no timeout, or
        a positive one; a zero timeout only polls); refuse it without a timeout."""
        if (timeout is not None and timeout <= 0) or self.done() or _running_loop() is not self._pylockdep_loop:
            return
        v = active.validator
        t = _current_holder(v)
        frame = _site_frame(_getframe(2))
        what = f"Future.{method}() of run_coroutine_threadsafe()"
        v.run_check(t, _checks.check_wait_in_own_loop, what, (frame.f_code, frame.f_lineno), timeout)
        if timeout is None:
            raise DeadlockError(f"deadlock: {t.comm} would wait for ever for {what}, on that loop's own thread")


class _TaskWork(_waits.CompletionMap):
    """What the future of :func:`run_coroutine_threadsafe` waits for
    (:func:`pylockdep._waits.future_waits_for`): the map of the task that will run the coroutine on
    the loop, of class ``(task)file:line`` after the line that asked for it, which the task holds
    while it runs; and the task, once the loop has made it (:func:`_create_task`).  A thread that
    waits for the future, holding a lock the coroutine takes, closes a cycle through the map, as
    waiting for a pool's work does; and when the task waits for that thread, the wait raises
    :class:`DeadlockError` instead of hanging."""

    __slots__ = ("task",)

    def __init__(self, key: LockKey) -> None:
        super().__init__(key)
        self.task: weakref.ref[asyncio.Task] | None = None

    def blockers(self) -> tuple[list[int], bool]:
        """The holder the waiter waits for: the task while it is not done (none before the loop
        made it, or after)."""
        task = self.task() if self.task is not None else None
        return ([id(task)] if task is not None and not task.done() else []), False


# id() of a coroutine given to run_coroutine_threadsafe() -> (it, its future's _TaskWork), until the
# loop makes its task (_create_task takes it from here).
_threadsafe: dict[int, tuple[Any, _TaskWork]] = {}


def run_coroutine_threadsafe(coro: Any, loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future:
    """``asyncio.run_coroutine_threadsafe``, whose future is a wait for the task that runs ``coro``
    (:class:`_TaskWork`) and refuses a wait on the loop's own thread."""
    v = active.validator
    work = None
    if not v.off and asyncio.iscoroutine(coro):
        key = _waits.map_key("task", creation_frame(_getframe(1)))
        if key is not None:
            work = _TaskWork(_key_for_coroutine(key, coro))
            _threadsafe[id(coro)] = (coro, work)
    try:
        future = _plain_run_coroutine_threadsafe(coro, loop)
    except BaseException:
        _threadsafe.pop(id(coro), None)
        raise
    future.__class__ = _LoopFuture
    future._pylockdep_loop = loop  # type: ignore[attr-defined]
    if work is not None:
        _waits.future_waits_for(future, work)
    return future


# -- shield(): the outer future stands for what it shields ---------------------------------------

_plain_shield = asyncio.tasks.shield
# shield()'s outer futures, each mapped to the future (a task, a gather()'s) it shields, while both
# live: awaiting one is awaiting that (see _tasks_of).
_shielded: weakref.WeakKeyDictionary[asyncio.Future, asyncio.Future] = weakref.WeakKeyDictionary()


def _unshielded(future: Any) -> Any:
    """The future ``future`` shields if it is a ``shield()``'s outer future, else ``future``."""
    try:
        return _shielded.get(future, future)
    except TypeError:  # None, or no future
        return future


def shield(arg: Any) -> Any:
    """``asyncio.shield``, whose outer future stands for the task (or ``gather()``) it shields:
    awaiting it is a wait for that."""
    loop = _running_loop()
    if asyncio.iscoroutine(arg) and loop is not None:
        arg = loop.create_task(arg)  # as shield() makes it, named after the caller's line
    outer = _plain_shield(arg)
    if outer is not arg and isinstance(arg, asyncio.Future):
        _shielded[outer] = arg
    return outer


# -- installing --------------------------------------------------------------------------------

_REPLACED = {
    "Lock": Lock,
    "Condition": Condition,
    "Semaphore": Semaphore,
    "BoundedSemaphore": BoundedSemaphore,
    "Event": Event,
}


# A coroutine awaiting an executor's future (run_in_executor(), wrap_future()) blocks no thread:
# asyncio reads the finished future for it, in the loop's thread.
_waits.READS_DONE_FUTURES.append(asyncio.futures._copy_future_state.__code__)


def install() -> None:
    """Make asyncio's lock types the validated ones, run task steps with their holders, name tasks'
    maps after the lines that make them and watch ``run_coroutine_threadsafe()``'s and
    ``shield()``'s futures."""
    for module in (asyncio, asyncio.locks):
        for name, replacement in _REPLACED.items():
            setattr(module, name, replacement)
    for module in (asyncio, asyncio.tasks):
        module.run_coroutine_threadsafe = run_coroutine_threadsafe  # type: ignore[attr-defined]
        module.shield = shield  # type: ignore[attr-defined]
    events.Handle._run = _run_handle  # type: ignore[method-assign]
    asyncio.base_events.BaseEventLoop.create_task = _instrumented_create_task  # type: ignore[method-assign]


def uninstall() -> None:
    """Put CPython's types, functions (``run_coroutine_threadsafe``, ``shield``), ``Handle._run``
    and ``create_task`` back (locks already made stay validated)."""
    for module in (asyncio, asyncio.locks):
        for name, replacement in _REPLACED.items():
            if getattr(module, name) is replacement:
                setattr(module, name, replacement.__mro__[1])
    for module in (asyncio, asyncio.tasks):
        if module.run_coroutine_threadsafe is run_coroutine_threadsafe:  # type: ignore[attr-defined]
            module.run_coroutine_threadsafe = _plain_run_coroutine_threadsafe  # type: ignore[attr-defined]
        if module.shield is shield:  # type: ignore[attr-defined]
            module.shield = _plain_shield  # type: ignore[attr-defined]
    if events.Handle._run is _run_handle:
        events.Handle._run = _plain_run  # type: ignore[method-assign]
    if asyncio.base_events.BaseEventLoop.create_task is _instrumented_create_task:
        asyncio.base_events.BaseEventLoop.create_task = _plain_create_task  # type: ignore[method-assign]
