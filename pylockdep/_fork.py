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

from . import _classes, _locks, _rcu, _signals, _validator, _waitfor, _waits


def after_fork_in_child() -> None:
    """Forget the threads that did not follow the fork and renew pylockdep's internal locks: the
    key registry's, the wait bookkeeping's, the queues' spans', ``validate()``'s, every
    validator's graph lock, every reader-writer lock's internal mutex and every SRCU's."""
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


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
