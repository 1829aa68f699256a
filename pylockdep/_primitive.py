"""The lock-primitive contract: what pylockdep needs of anything it tracks as a lock.

Two levels, as the kernel separates a ``struct lockdep_map`` from the lock it is embedded in:

- :class:`LockMap` is what the held stack, the rules and the reports read: the lock's class key,
  the holder that took it, whether it has an owner, and its name.  A *pseudo-lock* (RCU's read-side
  maps today; thread and work completions later) is a LockMap with no real lock underneath.
- :class:`Primitive` adds the real lock, as the acquire and release paths
  (:func:`pylockdep._locks._acquire`/``_release``), the wait for a contended lock
  (:mod:`pylockdep._waitfor`) and the hang dump (:mod:`pylockdep._hang`) drive it.  Every
  operation takes the mode the lock is taken or released in (``read``: 0 write, 1 reader,
  2 recursive reader) so that reader-writer locks and SRCU fit the same calls; exclusive locks
  ignore it.  A pseudo-lock's primitive always succeeds and releases nothing
  (:class:`pylockdep._locks._PseudoLock`).

The kernel lock types (:mod:`pylockdep._locks`), SRCU and RCU (:mod:`pylockdep._rcu`) and the
threading stand-ins (:mod:`pylockdep._threading`) all derive from :class:`pylockdep._locks._Validated`,
which keeps ``_key`` and ``_owner`` in ``__slots__``; lock types over one ``_thread`` lock derive
from :class:`pylockdep._locks._RealLock`, which keeps ``_try`` and ``_unlock`` there too, bound to
the real lock's methods.  The C fast path reads those four slots in place
(:func:`pylockdep._fastpath.accelerate`): an accelerated type must not turn them into methods or
properties.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._classes import LockKey
    from ._task import Task


@runtime_checkable
class LockMap(Protocol):
    """What a held lock is to the validator (the kernel's ``lockdep_map``)."""

    #: The lock's class key: which lock class it belongs to.
    _key: LockKey
    #: The holder that took it last and has not released it (None: free, or taken while
    #: validation was off).
    _owner: Task | None

    @property
    def _owned(self) -> bool:
        """Whether the lock has an owner: only its holder releases it, and a wait for it can be a
        deadlock.  False for ``threading.Lock``, which any thread may release."""
        ...

    @property
    def name(self) -> str:
        """The name the lock's class was registered under."""
        ...


@runtime_checkable
class Primitive(LockMap, Protocol):
    """A :class:`LockMap` with a real lock: the operations the acquire, release and wait paths call.

    None of them validates anything or touches a held stack; they are the bare lock.
    """

    def _try(self, read: int) -> bool:
        """Take the lock in mode ``read`` if that is possible without waiting; True if taken."""
        ...

    @property
    def _try_write(self) -> bool:
        """``_try(0)``, made by reading the attribute, with no Python code of its own."""
        ...

    def _timed(self, read: int, seconds: float) -> bool:
        """Take the lock in mode ``read``, waiting at most ``seconds``; True if taken."""
        ...

    def _is_held(self, read: int) -> bool:
        """Whether the lock is held in mode ``read`` (by anyone)."""
        ...

    def _unlock(self, read: int) -> None:
        """Release the lock held in mode ``read``."""
        ...

    def _blockers(self, mode: int, ident: int) -> list[int]:
        """The thread idents that the thread ``ident``, waiting for the lock in ``mode``, waits
        for: its holders, and for readers and writers whoever it queues behind.  Empty when no
        particular thread can be named (a lock without an owner)."""
        ...
