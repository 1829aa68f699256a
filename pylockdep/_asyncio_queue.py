"""``asyncio.Queue.join()`` is a wait, modelled as :mod:`pylockdep._waits` models ``queue.Queue``'s.

A task that takes an item from a queue (``get()``, ``get_nowait()``) holds the queue's map,
``(queue)FILE:LINE`` after the line that made the queue, until it marks the item done
(``task_done()``): every lock it takes meanwhile depends on the map.  A task that awaits ``join()``
touches the map first, with the locks it holds.  So a lock held across ``join()`` that a consumer
takes while it holds an item is an ordinary cycle in the graph, reported from a run in which the
join did not hang (a timeout ended it, or the consumer took the lock before the join).

The spans are kept per asyncio task, as ``queue.Queue``'s are per thread: a task has one open at a
time (taking an item of another queue closes it first), counting the items it took;
``task_done()`` by a task with no span open on the queue counts off another task's (the queue's
items are marked done by others than their consumers, as in a pipeline), whose map is released
when that task next runs.  A task that ends with a span open closes it as it ends
(``TaskHolder.queue_span``, :func:`pylockdep._asyncio.close_queue_span`).  Items
taken outside any task (a plain thread's ``get_nowait()``) and queues that asyncio makes for its
own use (``as_completed()``'s) are not followed.  A task of ``get()`` itself
(``create_task(queue.get())`` raced with ``asyncio.wait()``, and on 3.11
``wait_for(queue.get(), timeout)``, which runs the ``get()`` in a task of its own) takes its item for
the task that made it: the item is counted in that task's span, while it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from sys import _getframe
from typing import Any

from . import _waits
from ._asyncio import (
    _ASYNCIO_DIR,
    _QUEUE_GET_CODE,
    TaskHolder,
    _as_holder,
    _current_holder,
    _site_files,
    _site_frame,
    close_queue_span,
)
from ._validator import Validator, active

__all__ = ["install", "uninstall"]

_Queue = asyncio.queues.Queue
_MAP = _waits._MAP  # on an instrumented queue: its _waits._QueueMap, as on a queue.Queue


def _init(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, maxsize: int = 0) -> None:
        original(self, maxsize)
        frame = _getframe(1)
        if not frame.f_code.co_filename.startswith(_ASYNCIO_DIR):
            key = _waits.map_key("queue", frame, self)
            if key is not None:
                setattr(self, _MAP, _waits._QueueMap(key))

    return __init__


def _get_nowait(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def get_nowait(self: Any) -> Any:
        item = original(self)
        m = getattr(self, _MAP, None)
        if m is not None:
            v = active.validator
            if not v.off:
                h = _current_holder(v)
                if type(h) is TaskHolder:
                    if type(h.awaiter) is TaskHolder and v.tasks.get(id(h.awaiter)) is h.awaiter:
                        h = h.awaiter  # a task of get() (3.11's wait_for() makes one) takes it for its maker
                    span = h.queue_span
                    if span is not None and span.map is m and span.count:
                        span.count += 1  # one more item in the task's open span
                    else:
                        _open(v, h, m, _getframe(1))
        return item

    return get_nowait


def _open(v: Validator, h: TaskHolder, m: _waits._QueueMap, frame: Any) -> None:
    """The task ``h`` took an item of the queue whose map is ``m``, called from ``frame``, holding
    no span there: open one, its last one on this queue again (the common case: a consumer marks
    each item done before it takes the next), else a new one, closing its span on another queue."""
    span = h.queue_span
    if span is not None and span.map is m:
        span.count = 1
    else:
        if span is not None:
            close_queue_span(v, span)
        span = h.queue_span = _waits._Span(m, m.spans, h)
    m.spans[h] = span  # type: ignore[index]
    if frame.f_code is _QUEUE_GET_CODE and frame.f_back is not None:
        frame = frame.f_back  # get(): the line that awaited it, most often the program's
    site = frame if frame.f_code.co_filename in _site_files else _site_frame(frame)
    if v.local.task is h:
        _waits.hold(m, site)
    else:  # not the task running: the awaiter of 3.11's wait_for(get()), or an eager task (3.12+)
        _as_holder(v, h, lambda: _waits.hold(m, site))


def _task_done(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def task_done(self: Any) -> None:
        original(self)  # first: one task_done() too many raises, and closes nothing
        m = getattr(self, _MAP, None)
        if m is not None and m.spans:
            v = active.validator
            h = _current_holder(v)
            span = m.spans.get(h)  # type: ignore[call-overload]
            if span is None:
                m.done_by_others = True
                span = next(iter(m.spans.values()), None)
                if span is None:
                    return
            span.count -= 1
            if not span.count:
                close_queue_span(v, span)

    return task_done


def _join(original: Callable[[Any], Coroutine[Any, Any, None]]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def join(self: Any) -> None:
        m = getattr(self, _MAP, None)
        if m is not None:
            _waits._touch_waited(m, _getframe(1))
        await original(self)

    return join


_PATCHES = {"__init__": _init, "get_nowait": _get_nowait, "task_done": _task_done, "join": _join}
_undo: list[tuple[str, Any, Any]] = []  # (attribute, original, wrapper)


def install() -> None:
    """Follow ``asyncio.Queue``'s items and joins from now on (its subclasses' too)."""
    if _undo:
        return
    for attribute, factory in _PATCHES.items():
        original = _Queue.__dict__[attribute]
        wrapper = factory(original)
        wrapper.__doc__ = original.__doc__
        wrapper.__qualname__ = f"Queue.{attribute}"
        setattr(_Queue, attribute, wrapper)
        _undo.append((attribute, original, wrapper))


def uninstall() -> None:
    """Put ``asyncio.Queue``'s methods back (queues made meanwhile keep their maps, unused)."""
    while _undo:
        attribute, original, wrapper = _undo.pop()
        if _Queue.__dict__.get(attribute) is wrapper:
            setattr(_Queue, attribute, original)
