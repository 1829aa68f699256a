"""The program's Python signal handlers, wrapped: run as Python's interrupt, and held back while
pylockdep releases a lock in Python.

CPython runs a Python signal handler in the main thread at the next point where the interpreter
checks for pending signals, and one such point is the first instruction of every Python function.
A handler that raises (``KeyboardInterrupt``) as a Python ``__exit__`` is entered would leave the
lock held, where CPython's C lock cannot be interrupted at all.  The kernel keeps interrupts off
inside lockdep; this module does the same for the release code:

- Functions that release a lock are marked :func:`critical` and end, on every way out, with
  ``if deferred: run_deferred()``.
- Functions that take the pure reader-writer core are marked :func:`critical_take`: a handler
  held back inside them is run by the acquisition that called them once it has recorded the
  outcome (a handler's exception then undoes the acquisition, as when it lands later).
- Every Python signal handler of the process is installed wrapped in a :class:`Deferring`
  (those in place when pylockdep is first used from the main thread, and those
  ``signal.signal`` installs later).  Called while the interrupted frame is a critical function,
  or pylockdep code that one calls, it records the program's handler in :data:`deferred` and
  returns; the critical function runs it at its end, once the lock is released (the acquisition
  runs it, for :func:`critical_take`).  Otherwise it
  calls the program's handler at once.  Either way the handler runs through :func:`_handle`,
  which makes what it takes signal-safe (the SIGNAL usage state of the rules).
- ``signal.signal`` and ``signal.getsignal`` are replaced by versions that wrap and unwrap, so
  the program sees its own handlers (``signal.default_int_handler`` included).

With the C module in use the lock types' ``with`` and ``release()`` are C, and only pylockdep's
slow paths (Python) hold handlers back.
"""

from __future__ import annotations

import _signal
import _thread
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeVar

from ._task import context_counters

Handler = Callable[[int, FrameType | None], Any]
_F = TypeVar("_F", bound=Callable[..., Any])

#: Handlers held back by critical functions, by signal number, in the order the signals came.  As
#: with CPython's flag per signal number, a signal that comes again before its handler begins is
#: handled once: a storm of signals faster than their handlers (a timer on a busy machine) would
#: otherwise hold back more of them than run, and :func:`_run` would never return to the program.
deferred: dict[int, Handler] = {}
#: Whether :func:`install` is still to be done: until pylockdep's first use from the main thread
#: (the first holder made there, see ``Validator.new_task``).
wanted = True
#: How many frames out from the interrupted one a handler looks for a critical function (from
#: one, pylockdep's release code goes a few calls deep).
WALK = 16

# The code of the critical functions, of both kinds, by qualified name (a str keeps its hash; a
# code object's hash is computed at each lookup).
_critical: dict[str, CodeType] = {}
# pylockdep's source files, as its code objects name them: this file's directory.
_here = os.path.dirname(__file__)
_own_files = frozenset(os.path.join(_here, name) for name in os.listdir(_here))
#: Signals that landed in a hook whose exceptions the interpreter drops (see :func:`dropping`),
#: each once, in order: that hook raises them again as it ends, for the program's code.
landed: list[int] = []
# The code of those hooks, by qualified name (as _critical).
_dropping: dict[str, CodeType] = {}
# Handlers of signals that came while a Deferring was deciding about an earlier one, or running
# handlers, by signal number as in deferred: that code runs them next (see Deferring.__call__).
_nested: dict[int, Handler] = {}
#: How many program handlers may run inside one another (CPython lets a signal interrupt a
#: handler); a signal that comes while this many run waits for the innermost to return.  Under a
#: storm of signals faster than a handler and its wrapping, handlers would otherwise nest until
#: the recursion limit.
MAX_NESTED = 8
# How many program handlers are running, each inside the one before (main thread only).
_running = 0

_signal_signal = signal.signal  # the originals, whatever install() puts in their place
_getsignal = signal.getsignal


#: The object whose ``validator`` is the active validator (``pylockdep._validator.active``, set
#: there: that module imports this one).
active: Any = None


def _handle(handler: Handler, signum: int, frame: FrameType | None) -> Any:
    """Call the program's handler as Python's interrupt: what it takes is signal-safe (the SIGNAL
    usage state of the rules, see :func:`pylockdep._checks.acquire_usage`), for it runs on the
    calling holder (the main thread's) in a context of its own.

    Nothing here but the handler is a Python call (the context signature is made by a C getter):
    a signal that lands in this frame is left to the code that runs this one (see
    :class:`Deferring`).  A thread with no holder yet holds nothing and gets none here.  A
    handler that interrupts a finalizer the garbage collector runs is no finalizer itself: the
    holder's GC flag is off while it runs (see pylockdep._collector).  The holder's flags and the
    count of handlers running go back to their values before, however the handler ends.
    """
    global _running
    running = _running
    v = active.validator
    t = None if v.off else getattr(v.local, "task", None)
    before = (False, False, None) if t is None else (t.in_signal, t.in_gc, t.interrupted)
    try:
        _running = running + 1
        if t is not None:
            t.in_signal = True
            t.in_gc = False
            t.interrupted = None if frame is None else id(frame)
            t.ctx = hash(context_counters(t))
        return handler(signum, frame)
    finally:
        _running = running
        if t is not None:
            t.in_signal, t.in_gc, t.interrupted = before
            t.ctx = hash(context_counters(t))


def critical(func: _F) -> _F:
    """Mark ``func`` as release code: a signal handler that would run inside it (or inside
    pylockdep code it calls) runs when it ends.  ``func`` must end every way out, an exception
    included, with ``if deferred: run_deferred()`` (in a ``finally``), or with nothing but a call
    of a function that does."""
    return _mark(func)


def run_deferred_undoing(undo: Callable[..., object], *args: object) -> None:
    """At the end of a :func:`critical` function that took something for a with-block (a lock, a
    context): run the handlers held back, as if at the block's first instruction; if one raises,
    ``undo(*args)`` first (the block's own end), since the block will not run to undo it."""
    try:
        run_deferred()
    except BaseException:
        undo(*args)
        raise


def critical_take(func: _F) -> _F:
    """Mark ``func`` as code that takes a lock for an acquisition (the pure reader-writer core's
    take): a signal handler that would run inside it (or inside pylockdep code it calls) is held
    back like one in a :func:`critical` function, but ``func`` does not run it: the acquisition
    that called it does, once it has recorded the outcome (taken and pushed, or not taken), so
    that a handler's exception finds the lock either held and recorded, or free.  Every caller
    must lead to such a point soon after: :func:`pylockdep._locks._acquire` runs the handlers
    after the push (and on every other way out), and :func:`pylockdep._waitfor.wait` after each
    failed attempt, so a handler is held back for one poll of a wait at most.  A blocking wait in
    code that is not pylockdep's (``threading.Condition.wait``) stops the search for a critical
    function: a handler that interrupts it runs at once."""
    return _mark(func)


def dropping(func: _F) -> _F:
    """Mark ``func`` as a hook that the interpreter calls and whose exceptions it drops (reports
    as unraisable): a ``gc.callbacks`` entry.  A signal that lands in it, or in pylockdep code it
    calls, is not handled there, where a ``KeyboardInterrupt`` would be lost, but kept in
    :data:`landed`; ``func``, or a hook of the same kind that the interpreter calls after it before
    it returns to the program, must end with a call of :func:`raise_landed`."""
    return _mark(func, _dropping)


def raise_landed() -> None:
    """Raise again the signals that landed in a :func:`dropping` hook, which calls this last: the
    raising is made from C, and nothing after it in this call or the hook's is a point where a
    handler runs, so they are handled once the interpreter is back in the program's code.  One
    that lands as this call begins is kept in :data:`landed` first, and raised with the rest."""
    0 in map(_thread.interrupt_main, landed)  # noqa: B015 - run for its calls, from C
    del landed[:]


def _mark(func: _F, kind: dict[str, CodeType] = _critical) -> _F:
    code = func.__code__
    if kind.setdefault(code.co_qualname, code) is not code:
        raise ValueError(f"two functions named {code.co_qualname}")
    return func


def run_deferred() -> None:
    """Run the handlers held back, in order, given the caller (a critical function at its end,
    or an acquisition that recorded its outcome) as their frame; in the main thread only, which
    held them back (another thread that ends a critical function meanwhile leaves them to it)."""
    if _thread.get_ident() == threading.main_thread().ident:
        _run(deferred, sys._getframe(1))


def _run(pending: dict[int, Handler], frame: FrameType | None) -> None:
    """Run the handlers in ``pending``, then those of signals that landed in this code (see
    :class:`Deferring`), until none is left.  If one raises, the rest run as its exception
    propagates, as CPython runs the handler of a second signal while the first one's exception is
    being handled.  Both may grow meanwhile, and shrink: a handler may be interrupted by a
    signal whose own handling runs the rest."""
    while True:
        held = pending or _nested
        if not held:
            return
        signum = next(iter(held))  # the first that came
        handler = held.pop(signum)
        try:
            _handle(handler, signum, frame)
        except BaseException:
            if pending or _nested:
                _run(pending, frame)
            raise


class Deferring:
    """What is installed in place of the program's signal handler ``handler``."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        """Hold ``handler`` back if ``frame``, or a frame at most :data:`WALK` out from it through
        pylockdep's own, is a critical function's (or leave the signal to be raised again, if it
        is a :func:`dropping` hook's); else call it.

        A signal that comes while this runs, or :func:`_run` or :func:`_handle` outside the
        program's handlers, or while :data:`MAX_NESTED` handlers run, calls another Deferring
        that leaves its handler to the code running there, which runs it next (so such calls
        stay short).  A signal whose handler is held back already, not yet begun, is handled with
        it (see :data:`deferred`)."""
        if (frame is not None and frame.f_code in _DECIDING) or _running >= MAX_NESTED:
            if signum not in deferred:
                _nested.setdefault(signum, self.handler)
            return None
        f = frame
        left = WALK
        while f is not None and left:
            code = f.f_code
            name = code.co_qualname
            if name in _critical and _critical[name] is code:
                deferred.setdefault(signum, self.handler)
                while _nested:
                    held = next(iter(_nested))
                    deferred.setdefault(held, _nested.pop(held))
                return None
            if name in _dropping and _dropping[name] is code:
                if signum not in landed:
                    landed.append(signum)
                return None
            if code.co_filename not in _own_files:
                break
            f = f.f_back
            left -= 1
        try:
            return _handle(self.handler, signum, frame)
        finally:
            if _nested:
                _run(_nested, frame)

    def __repr__(self) -> str:
        return f"<pylockdep signal handler deferring {self.handler!r}>"


# The code in which a signal is left to the code running there (in _nested): deciding, or running
# handlers (outside the program's own code).
_DECIDING = (Deferring.__call__.__code__, _handle.__code__, _run.__code__)


def _program_handler(installed: Any) -> Any:
    return installed.handler if isinstance(installed, Deferring) else installed


#: pylockdep's own handlers (``pylockdep run``'s SIGUSR1 dump), which let no thread of the program go.
OWN_HANDLERS: set[Handler] = set()


def handles_signals() -> bool:
    """Whether the program has a Python handler of its own installed for some signal (not
    SIGINT's default one, which raises ``KeyboardInterrupt``, nor pylockdep's): the main thread may
    then run code that lets other threads go at any point of any wait.  Read from the
    interpreter, whichever way the handler was installed (``_signal.signal`` too)."""
    for signum in _signal.valid_signals():
        handler = _program_handler(_signal.getsignal(signum))
        if callable(handler) and handler is not signal.default_int_handler and handler not in OWN_HANDLERS:
            return True
    return False


@functools.wraps(_signal_signal)
def _signal_deferring(signalnum: Any, handler: Any) -> Any:
    if callable(handler) and not isinstance(handler, Deferring):
        handler = Deferring(handler)
    return _program_handler(_signal_signal(signalnum, handler))


@functools.wraps(_getsignal)
def _getsignal_unwrapped(signalnum: Any) -> Any:
    return _program_handler(_getsignal(signalnum))


@critical
def install() -> None:
    """Wrap the process's Python signal handlers, and those ``signal.signal`` installs later, in
    :class:`Deferring`.  Only the main thread may change handlers: called from another thread, it
    does nothing (and stays :data:`wanted`).  A handler that interrupts it once its own is wrapped
    runs when it ends; one that interrupts it before leaves it to be done again (what it did
    stays done)."""
    global wanted
    # Not threading.current_thread(), which would make a _DummyThread for a thread threading did not start.
    if _thread.get_ident() != threading.main_thread().ident:
        return
    try:
        signal.signal = _signal_deferring
        signal.getsignal = _getsignal_unwrapped
        for signum in _signal.valid_signals():  # _signal's: ints, no enum made per signal
            handler = _signal.getsignal(signum)
            if callable(handler) and not isinstance(handler, Deferring):
                try:
                    _signal.signal(signum, Deferring(handler))
                except ValueError:  # not the main interpreter: it cannot change handlers either
                    break
        wanted = False
    finally:
        if deferred:
            run_deferred()
