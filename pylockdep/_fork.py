"""After ``fork()``: only the thread that forked lives on in the child.

Every other thread's state is forgotten with the locks it held, and every internal lock of
pylockdep that one of them may have held at the moment of the fork is renewed, so that the child
never waits for a thread it does not have.  A module that adds an internal lock renews it here.
(Locks of the program itself follow Python's rules: ``threading`` reinitialises its own, and an
instrumented lock's ``_at_fork_reinit()`` forgets it on the holder's stack.)
"""

from __future__ import annotations

import _thread
import os
import sys
from types import FrameType

from . import _classes, _locks, _rcu, _signals, _validator, _waitfor, _waits
from ._checks import threading_lock
from ._held import H_CLASS, H_LOCK, do_pending, remove
from ._task import Task


def after_fork_in_child() -> None:
    """Forget the threads that did not follow the fork and renew pylockdep's internal locks: the
    key registry's, the wait bookkeeping's, the queues' spans', ``validate()``'s, every
    validator's graph lock, every reader-writer lock's internal mutex and every SRCU's.  In a
    child that never returns to the code that forked (:func:`_never_returns`), the ``threading``
    locks the forking thread holds are forgotten too."""
    try:
        forker: FrameType | None = sys._getframe(1)  # the caller of os.fork(), which is C
    except ValueError:
        forker = None
    _classes._keys_lock._at_fork_reinit()
    # The parent's signals, held back by its main thread: CPython clears a child's pending signals.
    _signals.deferred.clear()
    _signals._nested.clear()
    _signals.landed.clear()
    for mutex in _locks.internal_mutexes:
        mutex._at_fork_reinit()
    for core in list(_locks.every_rw_core):
        core._at_fork_reinit()
    _rcu.renew_after_fork()
    _waitfor._waits._at_fork_reinit()
    _waits._spans_lock._at_fork_reinit()
    _validator._validate_lock._at_fork_reinit()
    _validator._headroom.after_fork_in_child()
    for v in list(_validator.every_validator):
        v.graph_lock._at_fork_reinit()
        me = getattr(v.local, "task", None)
        v.tasks.clear()
        v.exiting.clear()  # threads of the parent that were ending
        if me is not None:
            me.ident = _thread.get_ident()
            me.waiting = None
            me.signals_on = True  # the thread that forked is the child's main thread
            me.update_ctx()
            v.tasks[id(me)] = me
            if me.held and _never_returns(forker):
                _forget_locks(v, me)


def _forget_locks(v: _validator.Validator, t: Task) -> None:
    """Forget the ``threading.Lock`` and ``RLock`` objects ``t`` holds (see :func:`_never_returns`),
    as if each were released from under the locks taken after it; they stay taken, ``t`` their
    owner.  A release of one by ``t`` later is no bad unlock: a library that takes its locks in a
    fork hook releases them in the child's (loguru), as logging's reinitialises its own."""
    if t.pending:
        do_pending(v, t)
    for index in reversed(range(len(t.held))):
        entry = t.held[index]
        if threading_lock(entry[H_CLASS]):
            remove(v, t, index)
            v.forgotten_at_fork[entry[H_LOCK]] = t


def _never_returns(forker: FrameType | None) -> bool:
    """Whether ``forker``, the frame that called ``os.fork()``, is multiprocessing's fork start
    method (``Popen._launch``): its child runs the process's target and ends with ``os._exit()``,
    never returning to the frames that took the locks held at the fork.  Those locks stay taken in
    the child, but no code of the child releases them or orders anything after them (a
    ``ProcessPoolExecutor`` forks its workers inside ``with self._shutdown_lock``, from
    ``submit()``, and pebble inside ``with`` its pool's ``RLock``; a worker joining a thread of its
    own at its end is no wait under that lock).  An ``RLock``'s owner may take it again in the
    child, as a re-entry, which is no new acquisition either."""
    popen = sys.modules.get("multiprocessing.popen_fork")
    launch = getattr(getattr(popen, "Popen", None), "_launch", None)
    return forker is not None and launch is not None and forker.f_code is getattr(launch, "__code__", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
