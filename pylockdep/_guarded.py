"""Guarded data: the "Protects" column of a locking table, checked on every access.

A class declares which lock, SRCU or RCU protects an attribute::

    class KVM:
        memslots = pylockdep.guarded_by("srcu", writer="slots_lock")  # kvm->srcu; slots_lock for updates
        online_vcpus = pylockdep.guarded_by("lock")                    # kvm->lock
        devices = pylockdep.guarded_by(lambda kvm: kvm.lock)
        vm_list = pylockdep.guarded_by(kvm_lock)                       # a lock shared by every instance

Reading or writing the attribute then checks that the calling thread holds the protection, and
reports like the kernel's own checks would: ``suspicious_rcu_usage`` when an SRCU or RCU protects
it (as ``srcu_dereference_check()``/``rcu_dereference_protected()`` do), ``assert_held`` when a lock
does (as ``lockdep_assert_held()``).  The first assignment (normally in ``__init__``, before the
object is shared) is never checked.  With validation off an access costs one extra test.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import Any, Protocol

from . import _checks
from ._classes import lock_key
from ._frames import caller_site
from ._locks import _Validated
from ._rcu import _RCUMap
from ._validator import active


class _PythonLock(Protocol):
    """``threading.Lock``, ``RLock`` or ``Condition``: validated when threading is instrumented."""

    def acquire(self, *args: Any, **kwargs: Any) -> Any: ...

    def release(self) -> None: ...


Protector = str | Callable[[Any], Any] | _Validated | _PythonLock
"""What :func:`guarded_by` accepts: the name of an attribute of the same instance holding the lock
(dotted names follow attributes: ``"kvm.srcu"``), a callable taking the instance and returning the
lock, a lock itself, or :data:`pylockdep.RCU`.  Python's ``threading`` locks and conditions count
when :func:`pylockdep.instrument_threading` made them, and are not checked when it did not."""


class Guarded:
    """A data descriptor for an attribute protected by a lock, an SRCU or RCU.

    Made by :func:`guarded_by`; ``protector`` and ``writer`` are as given there, ``name`` is the
    attribute's name and ``qualname`` the owner class's name with it.  The value lives in the
    instance's ``__dict__`` under the same name, so instances need a ``__dict__``.

    A read needs ``protector`` held in any mode (an SRCU's or RCU's read side, an rwlock's read or
    write side) or ``writer`` held; without a ``protector`` reads are not checked.  A write needs
    ``writer`` held for writing when one was given, else ``protector`` held for writing (for SRCU
    and RCU, their read side).  The report names the classes that would have made the access valid.
    """

    __slots__ = ("protector", "writer", "name", "qualname", "_lock_of", "_writer_of")

    def __init__(self, protector: Protector | None, writer: Protector | None = None) -> None:
        if protector is None and writer is None:
            raise TypeError("guarded_by() needs a protector, a writer= or both")
        if isinstance(writer, _RCUMap):
            raise TypeError("RCU has no update-side lock; name the lock its updaters hold as writer=")
        self.protector = protector
        self.writer = writer
        self._lock_of = _resolver(protector) if protector is not None else None
        self._writer_of = _resolver(writer) if writer is not None else None
        self.name = ""
        self.qualname = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.qualname = f"{owner.__qualname__}.{name}"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        try:
            value = instance.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(instance).__name__!r} object has no attribute {self.name!r}") from None
        if not active.validator.off:
            self._check(instance, False)
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        try:
            values = instance.__dict__
        except AttributeError:
            raise TypeError(f"{self.qualname} is guarded, so its instances need a __dict__") from None
        if self.name in values and not active.validator.off:
            self._check(instance, True)
        values[self.name] = value

    def __delete__(self, instance: Any) -> None:
        if self.name not in instance.__dict__:
            raise AttributeError(f"{type(instance).__name__!r} object has no attribute {self.name!r}")
        if not active.validator.off:
            self._check(instance, True)
        del instance.__dict__[self.name]

    def _lock(self, resolve: Callable[[Any], Any], instance: Any, spec: object) -> Any:
        """The lock ``spec`` names for ``instance``; None for a lock pylockdep does not validate."""
        try:
            lock = resolve(instance)
        except AttributeError as exc:
            raise TypeError(f"cannot find the lock {spec!r} that guards {self.qualname}: {exc}") from None
        if isinstance(lock, threading.Condition):
            lock = lock._lock  # what a with-statement on the condition takes
        key = lock_key(lock)
        if key:
            return lock
        if key is False:
            return None  # CPython's own (threading not instrumented): nothing to check against
        raise TypeError(f"{self.qualname} is guarded by {spec!r}, which is {lock!r}, not a lock")

    def _check(self, instance: Any, write: bool) -> None:
        """Check the access against its protection (:func:`pylockdep._checks.check_guarded_access`).

        A lock that resolves to None (CPython's own) cannot be checked: the access passes.
        """
        v = active.validator
        t = v.task()
        if t.busy:
            return
        lock = self._lock(self._lock_of, instance, self.protector) if self._lock_of is not None else None
        writer = self._lock(self._writer_of, instance, self.writer) if self._writer_of is not None else None
        has_writer = self._writer_of is not None
        v.run_check(t, _checks.check_guarded_access, self.qualname, write, lock, writer, has_writer, caller_site())


def _resolver(spec: Protector) -> Callable[[Any], Any]:
    """A function from an instance to the lock ``spec`` names."""
    if isinstance(spec, _Validated) or callable(getattr(spec, "acquire", None)):
        return lambda instance: spec
    if isinstance(spec, str):
        if not spec or not all(part.isidentifier() for part in spec.split(".")):
            raise ValueError(f"not an attribute name: {spec!r}")
        return operator.attrgetter(spec)
    if callable(spec):
        return spec
    raise TypeError(f"guarded_by() takes an attribute name, a callable or a pylockdep lock, not {spec!r}")


def guarded_by(protector: Protector | None = None, *, writer: Protector | None = None) -> Any:
    """Declare, in a class body, the lock, SRCU or RCU that protects an attribute.

    ``protector`` and ``writer`` are each an attribute name of the instance (``"srcu"``,
    ``"kvm.mmu_lock"``), a callable from the instance to the lock, a lock, or :data:`RCU`.
    ``writer`` names the update-side lock of data read under SRCU or RCU (``kvm->slots_lock`` for
    ``kvm->memslots``): holding it allows reads too, and writes require it.  With ``writer`` alone
    (``guarded_by(writer="lock")``) reads are lockless and not checked; writes need the lock.

    Returns a :class:`Guarded` descriptor, typed ``Any`` so that ``memslots: Memslots =
    guarded_by("srcu")`` keeps the attribute's own type for type checkers.
    """
    return Guarded(protector, writer)
