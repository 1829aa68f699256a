"""SRCU and RCU: read sides that never wait, and grace periods that wait for them.

An SRCU read side is, to lockdep, a recursive read acquisition of the SRCU's class with no wait
type: valid in any context, and sleeping inside is allowed.  ``synchronize()`` is an empty write
section of the same class (the kernel's ``lock_sync()``), so a lock held around it and taken inside
a read side closes a cycle.  The grace period is real: readers count themselves in one of two
counters, and a synchronizer flips which one new readers use, then waits for the old one to drain.

RCU's read side is tracked (it shows among held locks, and sleeping inside it is reported) but
adds no dependencies, as in the kernel, where ``rcu_read_lock()``'s map is taken with check=0.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
import weakref
from collections.abc import Hashable
from contextlib import AbstractContextManager
from types import FrameType
from typing import TypeVar

from . import _checks, _held, _locktypes, _waitfor
from ._classes import LockClass
from ._context import _Between, preempt_disable, preempt_enable
from ._fastpath import Fields, accelerate_new, accelerate_rcu, accelerate_srcu
from ._frames import caller_site, outside_frame
from ._locks import _acquire, _Condition, _creation_key, _made_at, _PseudoLock, _release, _Validated, internal_mutex
from ._report import DeadlockError
from ._signals import critical, deferred, run_deferred, run_deferred_undoing
from ._task import Task
from ._validator import Validator, active

T = TypeVar("T")
_Reader = int | tuple[str, int]

# Every SRCU used (read or synchronized) in this process, for renewing their state in a forked
# child (pylockdep._fork); the process they were renewed for (see _thread_ended).
every_srcu: weakref.WeakSet[SRCU] = weakref.WeakSet()
_pid = os.getpid()


class SRCU(_Validated):
    """``struct srcu_struct``: sleepable RCU with a real grace period.

    ``idx = s.read_lock()`` / ``s.read_unlock(idx)`` (or ``with s.read():``) mark a read side;
    ``s.synchronize()`` waits for every reader that started before it and for no later one;
    ``s.dereference(value)`` returns ``value`` and reports suspicious RCU usage outside a read side.

    Grace periods: readers register in counter ``_idx`` (per thread, so a wait can name them).
    One synchronizer at a time first waits out any readers left in the other counter (by a grace
    period that was abandoned), then flips ``_idx`` and waits until the previous counter drains.
    """

    _ltype = _locktypes.SRCU
    __slots__ = ("_mutex", "_cond", "_idx", "_readers", "_sync_owner", "_draining", "_flipped", "_tls")

    def __init__(self, name: str, *, key: Hashable | None = None) -> None:
        self._key = _creation_key(type(self), name, key, sys._getframe(1))  # _Validated's, from here
        self._owner = None  # (_MADE_FIELDS repeats what follows, for the C constructor)
        # Grace periods take the mutex, and a synchronizer waits on the condition over it, made by
        # the first grace period (see _condition): most SRCUs see few, and a Condition costs more
        # than the rest of the SRCU.  Read sides do not take it (see _enter), except to wake a
        # synchronizer.  It is one of pylockdep._locks.internal_mutexes, re-entrant, as a
        # reader-writer lock's is (see pylockdep._locks._RWCore): a handler or finalizer may enter
        # a read side or synchronize while its thread is inside this bookkeeping, whose changes of
        # state call nothing.
        self._mutex = internal_mutex()
        self._cond: threading.Condition | None = None
        self._idx = 0
        # Per counter: reader thread ident (or ("ended", ident), see _thread_ended) -> open read
        # sides; made by the first read side (see _readers_in).
        self._readers: tuple[dict[_Reader, int], dict[_Reader, int]] | None = None
        self._sync_owner: int | None = None
        self._draining = 1
        self._flipped = False
        self._tls: threading.local | None = None  # the read sides' per-thread stacks, made by the first

    def _at_fork_reinit(self) -> None:
        """In a forked child (its internal mutex renewed with the others): the condition is made
        again by the next grace period; read sides of threads that did not follow count as left
        open by ended threads (a synchronize() waiting for them raises instead of hanging), and a
        grace period one of them was running is abandoned."""
        self._cond = None
        me = _thread.get_ident()
        if self._sync_owner != me:
            self._sync_owner = None
        for readers in self._readers or ():
            for reader in [r for r in list(readers) if isinstance(r, int) and r != me]:
                gone = ("ended", reader)
                readers[gone] = readers.get(gone, 0) + readers.pop(reader)

    def _stack(self) -> list[int]:
        """The indexes of this thread's open read sides, innermost last."""
        try:
            return self._tls.stack  # type: ignore[union-attr]
        except AttributeError:
            tls = self._tls
            if tls is None:
                every_srcu.add(self)  # its first read side: before it takes the mutex (see _try)
                with self._mutex:  # one threading.local for every thread: the first stored
                    tls = self._tls
                    if tls is None:
                        tls = self._tls = threading.local()
            tls.stack = stack = []
            # Dropped with the thread's locals when the thread ends: see _thread_ended.
            tls.sentinel = sentinel = _Sentinel()
            weakref.finalize(sentinel, _thread_ended, weakref.ref(self), _thread.get_ident())
            return stack

    def read_lock_held(self) -> bool:
        """Whether the calling thread is inside a read side of this SRCU (``srcu_read_lock_held``)."""
        return bool(self._stack())

    # The primitive, as _locks._acquire sees it: the map of a read side always gets in; the read
    # side itself is counted by _enter once the map is taken.
    def _try(self, read: int) -> bool:
        return True

    def _timed(self, read: int, seconds: float) -> bool:
        return self._try(read)  # a read side never waits

    def _is_held(self, read: int) -> bool:
        return self.read_lock_held() if read else self._sync_owner is not None

    def _unlock(self, read: int) -> None:
        """The counters are dropped by :meth:`read_unlock`, which knows the index."""

    def _blockers(self, mode: int, ident: int) -> list[int]:
        with self._mutex:
            owner = self._sync_owner
            if owner is not None and owner != ident:
                return [owner]
            readers = self._readers_in(self._draining if owner == ident else self._idx ^ 1)
            return [reader for reader in list(readers) if isinstance(reader, int)]  # read sides do not wait

    def _readers_in(self, idx: int) -> dict[_Reader, int]:
        """Counter ``idx``'s readers: none before the first read side made the counters."""
        counters = self._readers
        return counters[idx] if counters is not None else {}

    def read_lock(self) -> int:
        """Enter a read side (``srcu_read_lock``); returns the index to hand to :meth:`read_unlock`."""
        return self._enter(sys._getframe(1))

    def _enter(self, frame: FrameType) -> int:
        """Enter a read side for the code in ``frame``: take the map (validated, pushed), then count
        the reader; returns its index.

        Counting is the last thing done, by statements that call nothing, from reading the index
        to returning it: no signal handler, finalizer or trace hook runs there, nor another thread.
        So a KeyboardInterrupt raised by a handler anywhere in here leaves the read side not
        entered (an interrupted acquisition undoes the map), as the exception says, and a
        synchronizer never sees a reader half counted.  Neither read sides nor their ends take the
        mutex: each changes only its own thread's entries, and a grace period reads the counters
        and flips the index with no call in between (see _grace_period).  (The C fast path, when
        in use, does all of this in one step.)
        """
        stack = self._stack()  # first: it registers the SRCU for fork and for the thread's end
        ident = _thread.get_ident()
        _acquire(self, 2, 0, frame)
        counters = self._readers
        if counters is None:
            counters = self._readers = ({}, {})
        idx = self._idx
        readers = counters[idx]
        readers[ident] = readers[ident] + 1 if ident in readers else 1
        stack += (idx,)
        return idx

    @critical  # pure path: a signal handler that would run in here runs after it (see _signals)
    def read_unlock(self, idx: int) -> None:
        """Leave the read side entered by the :meth:`read_lock` that returned ``idx``.

        An index that no read side of this thread holds (another thread's, one already handed
        back, a made-up one) is reported as a bad unlock balance and changes nothing.

        The reader stops counting and, when it is the most recent lock, the map is popped, by
        statements that call nothing (see :meth:`_enter`), so that nothing finds one done without
        the other; and as with every release, a signal handler that would run in here in pure
        Python runs when it ends (pylockdep._signals): the read side is left.
        """
        try:
            stack = self._stack()
            if idx not in stack:
                self._bad_index(idx)
                return
            ident = _thread.get_ident()
            v = active.validator
            top = recorded = False  # not recorded: a read side from before this validator
            if not v.off:
                t = v.task()
                held = t.held
                top = bool(held) and held[-1][_held.H_LOCK] is self and not t.pending
                recorded = top or _held.find(t, self) >= 0
            at = len(stack) - 1 - stack[::-1].index(idx) if stack[-1] != idx else -1
            readers = self._readers[idx]  # type: ignore[index]  # made by the read side ending here
            count = readers[ident] - 1 if ident in readers else 0
            if count:
                readers[ident] = count
            elif ident in readers:
                del readers[ident]
            del stack[at]
            if top:  # _held.pop(t) and _locks._release's ending, with no call
                t.key = held[-1][_held.H_PREV_KEY]
                del held[-1]
                self._owner = None if self._owner is t else self._owner
            elif recorded:  # deeper in the stack: the locks above are replayed
                _release(self, 2)
            if self._sync_owner is not None:  # only a grace period in progress waits on the counters
                with self._mutex:
                    self._cond.notify_all()  # type: ignore[union-attr]  # made before it began
        finally:
            if deferred:
                run_deferred()

    def _bad_index(self, idx: object) -> None:
        v = active.validator
        v.run_check(v.task(), _checks.check_srcu_unlock_index, self, idx, caller_site())

    def read(self) -> AbstractContextManager[int]:
        """A read side for the block; ``with s.read() as idx`` gives its index."""
        return _SRCUReadSide(self)

    def synchronize(self) -> None:
        """Wait for the end of every read side that started before this call (``synchronize_srcu``).

        Checked as the kernel does, in its order: an empty write section of this SRCU's class
        (``lock_sync``: recursive inside its own read side, circular with a lock taken inside
        one); a suspicious-RCU warning inside an RCU read side; then ``might_sleep()``.  A wait
        that can never end (inside its own read side, or in a cycle of waiting threads) raises
        :class:`DeadlockError` instead of hanging.
        """
        every_srcu.add(self)  # before its grace period takes the mutex
        v = active.validator
        t = v.task()
        if not v.off and not t.busy:
            frame = sys._getframe(1)
            site = (frame.f_code, frame.f_lineno)
            cls = v.class_for(self._key)
            chain_key = _held.chain_key(t.key, t.ctx, cls.variants[_held.VARIANT_SYNC])
            if chain_key not in v.chains:
                v.validate_chain(t, self, cls, 0, False, chain_key, frame.f_code, frame.f_lineno, sync=True)
            v.run_check(t, _checks.check_synchronize_srcu, cls, _rcu_class(v), site)
        ident = _thread.get_ident()
        try:
            if not self._grace_period(ident, 0):
                _waitfor.wait(v, t, self, 0, lambda s: self._grace_period(ident, s))
        except BaseException:
            with self._mutex:
                if self._sync_owner == ident:
                    self._sync_owner = None
                    self._cond.notify_all()  # type: ignore[union-attr]  # made before it began
            raise

    def _grace_period(self, ident: int, seconds: float) -> bool:
        """Advance this thread's grace period, waiting at most ``seconds`` per step; True when done."""
        with self._mutex:
            cond = self._condition()
            if self._sync_owner != ident:
                if not cond.wait_for(lambda: self._sync_owner is None, seconds):
                    return False
                self._sync_owner = ident
                self._draining = self._idx ^ 1
                self._flipped = False
            while True:
                if not cond.wait_for(lambda: not self._readers_in(self._draining), seconds):
                    if all(isinstance(reader, tuple) for reader in list(self._readers_in(self._draining))):
                        raise DeadlockError(
                            f"deadlock: synchronize() of {self.name!r} waits for read sides "
                            "that threads left open when they ended"
                        )
                    return False
                if self._flipped:
                    break
                self._flipped = True
                self._draining = self._idx
                self._idx ^= 1
            self._sync_owner = None
            cond.notify_all()
            return True

    def _condition(self) -> threading.Condition:
        """The condition over the mutex that synchronizers wait on, made by the first; called with
        the mutex held, which makes it once."""
        cond = self._cond
        if cond is None:
            cond = self._cond = _Condition(self._mutex)
        return cond

    def dereference(self, value: T) -> T:
        """Return ``value`` (``srcu_dereference``); outside a read side of this SRCU, report
        suspicious RCU usage."""
        _check_dereference(self)
        return value


# What SRCU.__init__ sets besides _key (see _fastpath.Fields): an SRCU made again at a known site
# is built in C, when in use.
_MADE_FIELDS: Fields = (
    ("_owner", None),
    ("_mutex", internal_mutex),
    ("_cond", None),
    ("_idx", 0),
    ("_readers", None),
    ("_sync_owner", None),
    ("_draining", 1),
    ("_flipped", False),
    ("_tls", None),
)
accelerate_new(SRCU, _made_at, _MADE_FIELDS)


class _SRCUReadSide:
    """``with s.read():`` a read side of ``s`` for the block (a class, not a generator: hot path)."""

    __slots__ = ("_srcu", "_idx")

    def __init__(self, srcu: SRCU) -> None:
        self._srcu = srcu

    def __enter__(self) -> int:
        self._idx = idx = self._srcu._enter(sys._getframe(1))  # no call after it: see SRCU._enter
        return idx

    @critical
    def __exit__(self, *exc: object) -> None:
        try:
            idx = self._idx
        except AttributeError:  # not entered: an index no read side has, a bad unlock balance
            idx = None
        self._srcu.read_unlock(idx)  # the only call: a critical function's


accelerate_srcu(SRCU, _SRCUReadSide)


class _Sentinel:
    """Lives in a thread's locals for one SRCU; its finalizer runs when the thread ends."""


def renew_after_fork() -> None:
    """In a forked child: renew every SRCU used in the parent (see SRCU._at_fork_reinit)."""
    global _pid
    _pid = os.getpid()
    for srcu in list(every_srcu):
        srcu._at_fork_reinit()


def _thread_ended(ref: weakref.ref[SRCU], ident: int) -> None:
    """A thread ended: read sides it left open can never end, so they stop counting as its.

    They stay in the counters under ``("ended", ident)``, where a later thread reusing the ident
    cannot close them, and a synchronize waiting only for such readers raises DeadlockError.
    """
    s = ref()
    # In a forked child the threads that did not follow end before the SRCUs are renewed, and a
    # gone thread may hold the mutex until it is renewed: SRCU._at_fork_reinit() does this work for them.
    if s is None or _pid != os.getpid():
        return
    with s._mutex:
        for readers in s._readers or ():
            count = readers.pop(ident, 0)
            if count:
                readers[("ended", ident)] = readers.get(("ended", ident), 0) + count
        if s._cond is not None:  # else no synchronizer ever waited
            s._cond.notify_all()


def _check_dereference(reader: SRCU | _RCUMap) -> None:
    """A dereference must be inside a read side of ``reader`` (``*_dereference_check()``): report
    suspicious RCU usage at the caller's site when it is not."""
    v = active.validator
    if not v.off:
        v.run_check(v.task(), _checks.check_rcu_dereference, reader, caller_site())


class _RCUMap(_PseudoLock):
    """The map ``rcu_read_lock()`` acquires, one for the whole process (exported as ``RCU``)."""

    _ltype = _locktypes.RCU
    __slots__ = ()

    def _is_held(self, read: int) -> bool:
        return active.validator.task().rcu > 0

    def read_lock_held(self) -> bool:
        """Whether the calling thread is inside an RCU read side (``rcu_read_lock_held``).

        On PREEMPT_RT a held ``spinlock_t`` is one too, since taking it enters an RCU read side.
        """
        v = active.validator
        return v.task().rcu_depth(v.preempt_rt) > 0

    def __repr__(self) -> str:
        return "<pylockdep.RCU (rcu_read_lock)>"


RCU = _RCUMap("rcu_read_lock", key="rcu_read_lock")
_nesting = threading.local()  # per thread, across validators: read sides opened before one began


def _thread_depth() -> int:
    try:
        return _nesting.depth  # type: ignore[no-any-return]
    except AttributeError:
        return 0


def _rcu_class(v: Validator) -> LockClass:
    return v.class_for(RCU._key)


def rcu_read_lock() -> None:
    """Enter an RCU read-side critical section."""
    _rcu_enter(sys._getframe(1))


@critical  # pure path: a signal handler that comes between the take and the count waits for both
def _rcu_enter(frame: FrameType) -> None:
    """Enter an RCU read side for the code in ``frame`` (or the first frame out of it that is not
    pylockdep's): take the map, then count the read side in the thread and its holder.  A signal
    handler held back meanwhile runs once both are done; if it raises, the read side is left."""
    _acquire(RCU, 2, 0, outside_frame(frame) or frame)
    _nesting.depth = _thread_depth() + 1
    v = active.validator
    try:
        t = v.local.task
    except AttributeError:
        t = v.new_task()
    t.rcu += 1
    t.update_ctx()
    if deferred:
        run_deferred_undoing(rcu_read_unlock)


@critical  # pure path: a signal handler that would run in here runs after it (see _signals)
def rcu_read_unlock() -> None:
    """Leave the innermost RCU read-side critical section; without one, a bad unlock balance."""
    try:
        v = active.validator
        try:
            t: Task = v.local.task
        except AttributeError:
            t = v.new_task()
        depth = _thread_depth()
        if depth:
            _nesting.depth = depth - 1
        if not t.rcu:
            if not depth:
                v.bad_unlock(t, RCU, RCU.name, caller_site())
            return
        t.rcu -= 1
        t.update_ctx()
        _release(RCU, 2)
    finally:
        if deferred:
            run_deferred()


class _RCUReadSide:
    """``with rcu_read():`` an RCU read side for the block.  It has no state: :func:`rcu_read`
    returns the same one each time."""

    __slots__ = ()

    def __enter__(self) -> None:
        _rcu_enter(sys._getframe(1))

    @critical
    def __exit__(self, *exc: object) -> None:
        rcu_read_unlock()  # nothing else: a critical function's call


_RCU_READ_SIDE = _RCUReadSide()
rcu_read_lock, rcu_read_unlock = accelerate_rcu(RCU, _nesting, _RCUReadSide, rcu_read_lock, rcu_read_unlock)


def rcu_read() -> AbstractContextManager[None]:
    """An RCU read-side critical section for the block."""
    return _RCU_READ_SIDE


def rcu_dereference(value: T) -> T:
    """Return ``value``; outside an RCU read side, report suspicious RCU usage."""
    _check_dereference(RCU)
    return value


# -- RCU-sched ---------------------------------------------------------------------------------


class _RCUSchedMap(_RCUMap):
    """The map ``rcu_read_lock_sched()`` acquires (exported as ``RCU_SCHED``).

    Its wait types are {1:2}: it may be entered anywhere, but only truly spinning locks
    (``raw_spinlock_t``) and RCU read sides may be taken inside, as preemption is off.
    """

    _ltype = _locktypes.RCU_SCHED
    __slots__ = ()

    _is_held = _PseudoLock._is_held

    def read_lock_held(self) -> bool:
        """``rcu_read_lock_sched_held()``: inside an RCU-sched read side, or with preemption or
        interrupts off, which the kernel counts as one."""
        v = active.validator
        t = v.task()
        return self._is_held(0) or t.preempt_count(v.preempt_rt) > 0 or t.irqs_off

    def __repr__(self) -> str:
        return "<pylockdep.RCU_SCHED (rcu_read_lock_sched)>"


RCU_SCHED = _RCUSchedMap("rcu_read_lock_sched", key="rcu_read_lock_sched")


def rcu_read_lock_sched() -> None:
    """Enter an RCU-sched read side: preemption off, then the ``rcu_read_lock_sched`` map."""
    preempt_disable()
    _acquire(RCU_SCHED, 2, 0, outside_frame(sys._getframe(1)) or sys._getframe(1))


def rcu_read_unlock_sched() -> None:
    """Leave the innermost RCU-sched read side; without one, a bad unlock balance (and preemption
    stays as it is)."""
    v = active.validator
    t = v.task()
    if not v.off and _held.find(t, RCU_SCHED) < 0:
        v.bad_unlock(t, RCU_SCHED, RCU_SCHED.name, caller_site())
        return
    _release(RCU_SCHED, 2)
    preempt_enable()


def rcu_read_sched() -> AbstractContextManager[None]:
    """An RCU-sched read side for the block."""
    return _Between(rcu_read_lock_sched, rcu_read_unlock_sched)


def rcu_dereference_sched(value: T) -> T:
    """Return ``value``; outside an RCU-sched read side (or a section with preemption or interrupts
    off), report suspicious RCU usage."""
    _check_dereference(RCU_SCHED)
    return value
