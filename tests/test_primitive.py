"""The lock-primitive contract (pylockdep/_primitive.py): every lock type pylockdep tracks offers it,
and behaves as it says, whatever kind of lock it is."""

from __future__ import annotations

import sys
import threading

import pytest

import pylockdep
from pylockdep import _locks, _rcu
from pylockdep._primitive import LockMap, Primitive
from pylockdep._threading import Lock, RLock

KERNEL_TYPES = [pylockdep.RawSpinLock, pylockdep.SpinLock, pylockdep.Mutex, pylockdep.RWLock, pylockdep.RWSemaphore]


def instrumented() -> list[object]:
    with pylockdep.instrument_threading():
        return [threading.Lock(), threading.RLock()]


def test_every_lock_type_is_a_primitive():
    fresh = [kind(f"prim_{kind.__name__}") for kind in KERNEL_TYPES]
    fresh += [pylockdep.SRCU("prim_srcu"), *instrumented()]
    for lock in [*fresh, pylockdep.RCU, _rcu.RCU_SCHED]:
        assert isinstance(lock, Primitive), lock
        assert isinstance(lock.name, str) and lock.name
    assert all(lock._owner is None for lock in fresh)
    assert not isinstance(object(), LockMap)


def test_a_pseudo_lock_is_validated_like_a_lock_with_nothing_beneath():
    class Completion(_locks._PseudoLock):
        __slots__ = ()

    done, lock = Completion("prim_completion"), pylockdep.Mutex("prim_completion_lock")
    with pylockdep.validate(raise_on_report=False) as v:
        assert done._try(0) and done._timed(0, 0) and done._blockers(0, 0) == []
        with lock:
            _locks._acquire(done, 0, 0, sys._getframe())  # a wait for the work, under the lock
            assert done._is_held(0)
            _locks._release(done, 0)
        assert not done._is_held(0)
        _locks._acquire(done, 0, 0, sys._getframe())  # the work takes the lock
        with lock:
            pass
        _locks._release(done, 0)
    assert [(r.kind, r.classes) for r in v.reports] == [("circular", ("prim_completion_lock", "prim_completion"))]


@pytest.mark.parametrize("make", [*KERNEL_TYPES, "Lock", "RLock"])
def test_the_bare_primitive_takes_and_releases_without_validating(make):
    if isinstance(make, str):
        lock = instrumented()[make == "RLock"]
    else:
        lock = make(f"prim_bare_{make.__name__}")
    with pylockdep.validate() as v:
        assert not lock._is_held(0)
        assert lock._try(0) is True
        assert lock._is_held(0)
        assert lock._try(0) is False  # the bare lock does not count re-entry, even an RLock's
        assert lock._timed(0, 0.01) is False
        lock._unlock(0)
        assert not lock._is_held(0)
        assert lock._timed(0, 0.01) is True
        lock._unlock(0)
        assert v.task().held == [] and lock._owner is None  # nothing was pushed or owned
    assert v.reports == []


def test_owned_says_who_may_release():
    lock, rlock = instrumented()
    assert (lock._owned, rlock._owned, pylockdep.Mutex("prim_owned")._owned) == (False, True, True)
    with pylockdep.validate():
        with lock, rlock:
            me = threading.get_ident()
            assert rlock._blockers(0, 0) == [me]
            assert lock._blockers(0, 0) == [me]  # only its acquirer released it so far: a mutex
        lock.acquire()
        handoff = threading.Thread(target=lock.release)
        handoff.start()
        handoff.join()
        lock.acquire()
        assert lock._blockers(0, 0) == []  # released by another thread: a signal, anyone may release it
        lock.release()


def test_threading_stand_ins_add_no_methods_cpython_lacks():
    lock, rlock = instrumented()
    assert isinstance(lock, Lock) and isinstance(rlock, RLock)
    assert hasattr(lock, "locked") is hasattr(threading._allocate_lock(), "locked")
    assert hasattr(rlock, "locked") is hasattr(threading._CRLock(), "locked")
