"""SRCU and RCU: read sides that never block writers' readers, and grace periods.

An SRCU read side is, to lockdep, a recursive read acquisition of the SRCU's class with no wait
type: valid in any context, and sleeping inside is allowed.  ``synchronize()`` is an empty write
section of the same class (the kernel's ``lock_sync()``), so a lock held around it and taken inside
a read side closes a cycle.  The grace period is real: two reader counters, flipped by each
synchronize, which waits until the readers of the old counter are gone.

RCU's read side is tracked (it shows among held locks, and sleeping inside it is reported) but
adds no dependencies, as in the kernel.
"""

from __future__ import annotations

import _thread
import sys
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from . import _checks, _locktypes, _splat, _waitfor
from ._frames import caller_site
from ._locks import _acquire, _Condition, _release, _task, _Validated
from ._task import H_LOCK
from ._validator import active

T = TypeVar("T")


class SRCU(_Validated):
    """``struct srcu_struct``: sleepable RCU with a real grace period.

    ``idx = s.read_lock()`` / ``s.read_unlock(idx)`` (or ``with s.read():``) mark a read side;
    ``s.synchronize()`` waits for every reader that started before it and for no later one;
    ``s.dereference(value)`` returns ``value`` and reports suspicious RCU usage outside a read side.
    """

    _ltype = _locktypes.SRCU
    __slots__ = ("_cond", "_idx", "_readers", "_sync_owner", "_old", "_tls")

    def __init__(self, name: str, *, key: Hashable | None = None) -> None:
        super().__init__(name, key=key)
        self._cond = _Condition(_thread.allocate_lock())
        self._idx = 0
        self._readers: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._sync_owner: int | None = None
        self._old = 0
        self._tls = threading.local()

    def _stack(self) -> list[int]:
        try:
            return self._tls.stack
        except AttributeError:
            self._tls.stack = stack = []
            return stack

    # The primitive, as the fast path sees it: a read side always gets in.
    def _try(self, read: int) -> bool:
        ident = _thread.get_ident()
        with self._cond:
            idx = self._idx
            readers = self._readers[idx]
            readers[ident] = readers.get(ident, 0) + 1
        self._stack().append(idx)
        return True

    def _is_held(self, read: int) -> bool:
        return bool(self._stack()) if read else self._sync_owner is not None

    def _unlock(self, read: int) -> None:
        """The counters are dropped by :meth:`read_unlock`, which knows the index."""

    def _blockers(self, mode: int, ident: int) -> list[int]:
        with self._cond:
            owner = self._sync_owner
            if owner is not None and owner != ident:
                return [owner]
            return list(self._readers[self._old if owner == ident else self._idx ^ 1])

    def read_lock(self) -> int:
        """Enter a read side; returns the index to hand to :meth:`read_unlock`."""
        _acquire(self, 2, 0, sys._getframe(1))
        return self._stack()[-1]

    def read_unlock(self, idx: int) -> None:
        """Leave the read side entered by the :meth:`read_lock` that returned ``idx``."""
        stack = self._stack()
        if idx not in stack:
            v = active.validator
            site = caller_site()
            v.report_now("bad_unlock_balance",
                         lambda t: _splat.srcu_bad_index(v, t, self.name, idx, site), (),
                         site=site, dedupe=(self.name, site))
            return
        del stack[len(stack) - 1 - stack[::-1].index(idx)]
        _release(self, 2)
        ident = _thread.get_ident()
        with self._cond:
            readers = self._readers[idx]
            count = readers.pop(ident, 1) - 1
            if count:
                readers[ident] = count
            self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[int]:
        """A read side for the block; yields its index."""
        _acquire(self, 2, 0, sys._getframe(2))
        idx = self._stack()[-1]
        try:
            yield idx
        finally:
            self.read_unlock(idx)

    def synchronize(self) -> None:
        """Wait for the end of every read side that started before this call (``synchronize_srcu``).

        Sleeps, so it is checked like any sleeping call; validated as an empty write section of
        this SRCU's class.  Called inside its own read side it would wait for ever: that is
        reported and raises :class:`DeadlockError`.
        """
        v = active.validator
        t = _task(v)
        if not v.off and not t.busy:
            frame = sys._getframe(1)
            site = (frame.f_code, frame.f_lineno)
            cls = v.class_for(self._key)
            with v.graph_lock:
                _checks.check_might_sleep(v, t, site, ["__might_sleep", "synchronize_srcu"], 0, cls)
            v.flush()
            chain_key = hash((t.key, t.ctx, cls.variants[6]))
            if chain_key not in v.chains:
                v.validate_chain(t, self, cls, 0, False, chain_key, frame.f_code, frame.f_lineno, sync=True)
        ident = _thread.get_ident()
        try:
            if not self._grace_period(ident, 0):
                _waitfor.wait(v, t, self, 0, lambda s: self._grace_period(ident, s))
        except BaseException:
            with self._cond:
                if self._sync_owner == ident:
                    self._sync_owner = None
                    self._cond.notify_all()
            raise

    def _grace_period(self, ident: int, seconds: float) -> bool:
        """One step of synchronize: become the synchronizer, flip the counters, await the old readers."""
        with self._cond:
            if self._sync_owner != ident:
                if not self._cond.wait_for(lambda: self._sync_owner is None, seconds):
                    return False
                self._sync_owner = ident
                self._old = self._idx
                self._idx ^= 1
            if not self._cond.wait_for(lambda: not self._readers[self._old], seconds):
                return False
            self._sync_owner = None
            self._cond.notify_all()
            return True

    def dereference(self, value: T) -> T:
        """Return ``value``; outside a read side of this SRCU, report suspicious RCU usage."""
        v = active.validator
        t = _task(v)
        if not any(entry[H_LOCK] is self for entry in t.held) and not self._stack():
            _suspicious(v, "suspicious srcu_dereference_check() usage")
        return value


def _suspicious(v: Any, message: str) -> None:
    site = caller_site()
    v.report_now("suspicious_rcu_usage", lambda t: _splat.suspicious_rcu(v, t, site, message), (),
                 site=site, dedupe=(site,))


class _RCUMap(_Validated):
    """The map ``rcu_read_lock()`` acquires, one for the whole process."""

    _ltype = _locktypes.RCU
    __slots__ = ()

    def _try(self, read: int) -> bool:
        return True

    def _is_held(self, read: int) -> bool:
        return active.validator.task().rcu > 0

    def _unlock(self, read: int) -> None:
        """Nothing to release: RCU readers take no lock."""

    def _blockers(self, mode: int, ident: int) -> list[int]:
        return []


_rcu_map = _RCUMap("rcu_read_lock", key="rcu_read_lock")


def rcu_read_lock() -> None:
    """Enter an RCU read-side critical section."""
    _acquire(_rcu_map, 2, 0, sys._getframe(1))
    t = active.validator.task()
    t.rcu += 1
    t.update_ctx()


def rcu_read_unlock() -> None:
    """Leave the innermost RCU read-side critical section."""
    v = active.validator
    t = v.task()
    if not t.rcu:
        site = caller_site()
        v.report_now("context_imbalance",
                     lambda task: _splat.context_imbalance(v, task, "rcu_read_unlock()", site), (),
                     site=site, dedupe=("rcu_read_unlock", site))
        return
    t.rcu -= 1
    t.update_ctx()
    _release(_rcu_map, 2)


@contextmanager
def rcu_read() -> Iterator[None]:
    """An RCU read-side critical section for the block."""
    rcu_read_lock()
    try:
        yield
    finally:
        rcu_read_unlock()


def rcu_dereference(value: T) -> T:
    """Return ``value``; outside an RCU read side, report suspicious RCU usage."""
    v = active.validator
    if not v.task().rcu:
        _suspicious(v, "suspicious rcu_dereference_check() usage")
    return value
