"""Holders and what they hold: the held-lock entry, the chain key, and the held stack's operations.

**Holders.**  A *holder* is whatever takes locks, and so has a stack of held locks and a chain key:
the kernel's task.  In pylockdep a holder is a :class:`pylockdep._task.Task`.  Each thread has a
*current* holder, the kernel's ``current``: the Task in the validator's thread-local storage
(``v.local.task``, read by both fast paths; :meth:`Validator.task` creates it on first use).
Today that is always the thread's own Task.  Nothing below, and nothing in the rules
(:mod:`pylockdep._checks`), depends on how the holder was found or on its being a thread: they
read only its held stack (``held``), chain key (``key``), context (``ctx``, ``irq`` and the
counters) and name.  So:

- an asyncio task can be a holder of its own: a ``Task`` made for it (:class:`Task` takes a name
  and an ident, not a thread) that becomes the loop thread's current holder while the task runs,
  as the kernel switches ``current`` on a context switch; every lock taken meanwhile, asyncio's
  or threading's, is then pushed on the task's stack by the same code;
- a *pseudo-lock* (the kernel's bare ``lockdep_map``: RCU's read-side maps today, the completion
  maps of a thread or a work item for a wait) is a :class:`pylockdep._locks._PseudoLock`, taken
  and released through the same acquire and release paths, with nothing beneath: the rules see an
  ordinary lock class.

**The held entry.**  Each held lock is one :data:`HeldLock`, a plain tuple of the fields
:data:`HELD_FIELDS` names, built on every acquisition (a tuple subclass such as a named tuple
costs three times as much to make and to free) and read by the ``H_*`` positions below, which
are those names' positions.  The C fast path (``pylockdep/_csrc/``) builds and reads the same
entries; it knows the positions through the header ``_csrc/_held_layout.h`` that
``tools/layout_header.py`` generates from :data:`HELD_FIELDS` (a test checks it is current, and
the C module refuses field names other than those it was built with).

**The chain key** of a holder names its stack of held locks as lockdep's ``chain_key`` does: each
push folds the new lock's class and way of taking it (a *variant*, from ``LockClass.variants``) and
the holder's context into the key before it (:func:`chain_key`).  A chain key seen before needs no
validation.
"""

from __future__ import annotations

from operator import itemgetter
from types import CodeType
from typing import TYPE_CHECKING

from ._classes import LockClass
from ._frames import Site, line_at
from ._locktypes import is_plain_lock

if TYPE_CHECKING:
    from ._primitive import LockMap
    from ._task import Task
    from ._validator import Validator


#: The fields of a held entry, in order: the lock instance; its class, subclass included; ``read``
#: (0 exclusive, 1 non-recursive reader, 2 recursive reader); whether a trylock took it; the code
#: that took it and the instruction offset in it (see :func:`held_site`); the holder's chain key
#: before it was pushed; the irq context it was taken in (2 * in hardirq + in softirq); whether
#: taking it disabled preemption; the holder's context signature when it was taken.
HELD_FIELDS = ("lock", "cls", "read", "trylock", "code", "lasti", "prev_key", "irq", "spins", "ctx")

#: One lock on a holder's stack: a tuple of the :data:`HELD_FIELDS`.
HeldLock = tuple["LockMap", "LockClass", int, bool, CodeType, int, int, int, bool, int]

# The fields' positions (the C module's come from the same names).
H_LOCK = HELD_FIELDS.index("lock")
H_CLASS = HELD_FIELDS.index("cls")
H_READ = HELD_FIELDS.index("read")
H_TRYLOCK = HELD_FIELDS.index("trylock")
H_CODE = HELD_FIELDS.index("code")
H_LASTI = HELD_FIELDS.index("lasti")
H_PREV_KEY = HELD_FIELDS.index("prev_key")
H_IRQ = HELD_FIELDS.index("irq")
H_SPIN = HELD_FIELDS.index("spins")
H_CTX = HELD_FIELDS.index("ctx")

# Offsets into ``LockClass.variants``: the way of taking a lock that is mixed into the chain key.
VARIANT_TRY = 3  # a trylock: VARIANT_TRY + read mode
VARIANT_SYNC = 6  # an empty write section (lock_sync: synchronize_srcu)

#: The chain key of an empty stack.
CHAIN_ROOT = 0x5EED


def chain_key(prev: int, ctx: int, variant: int) -> int:
    """The chain key after a lock taken in ``variant`` (from its class's ``variants``) and context
    ``ctx`` is pushed on a stack whose key is ``prev``.

    The C fast path (``pylockdep/_csrc/``) computes the same (``hash((prev, ctx, variant))``); a test holds the
    two in step.  So does :func:`pylockdep._locks._acquire`, which spells it out (a call fewer on
    every acquisition; a test holds it in step too).
    """
    return hash((prev, ctx, variant))


def variant(cls: LockClass, read: int, trylock: bool) -> int:
    """The chain-key ingredient of taking ``cls`` in mode ``read``, by trylock or not."""
    return cls.variants[read + VARIANT_TRY if trylock else read]


def push(
    t: Task, lock: LockMap, cls: LockClass, read: int, trylock: bool, code: CodeType, lasti: int, key: int
) -> None:
    """Push ``lock`` on the holder's stack; ``key`` is the new chain key (from :func:`chain_key`).

    A signal handler, finalizer or trace hook that runs in between sees the entry before its chain
    key and spin count: what it validates then depends on the lock too, which is true.
    :func:`pylockdep._locks._acquire` spells this out, in this order, on its hot path (a test holds
    the two in step).
    """
    spins = cls.spins
    t.held.append((lock, cls, read, trylock, code, lasti, t.key, t.irq, spins, t.ctx))
    t.key = key
    if spins:
        t.spins += 1


def pop(t: Task) -> HeldLock:
    """Pop the most recent lock off the holder's stack and restore the chain key from before it.

    The key and spin count go back before the entry leaves: a handler, finalizer or trace hook that
    runs in between sees the lock still held under the older key, so what it validates there
    depends on the lock too (true: it is not released yet), and no chain is cached as validated
    under a key that claims a lock the stack does not hold.  :func:`pylockdep._locks._release`
    spells this out, in this order, on its hot path (a test holds the two in step).
    """
    held = t.held
    entry = held[-1]
    if entry[H_SPIN]:
        t.spins -= 1
    t.key = entry[H_PREV_KEY]
    held.pop()
    return entry


def find(t: Task, lock: object) -> int:
    """Index of ``lock`` in the holder's stack, searching from the most recent; -1 if absent."""
    held = t.held
    for i in range(len(held) - 1, -1, -1):
        if held[i][H_LOCK] is lock:
            return i
    return -1


def remove(v: Validator, t: Task, index: int) -> HeldLock:
    """Take the entry at ``index`` out of the holder's stack (lockdep's ``__lock_release`` of a
    lock that is not the most recent), replaying the ones above it.

    Only the order of acquisition matters, so the locks above are pushed again, in order, on top
    of the ones below: their chain keys change, and a new chain is validated as an acquisition
    would be (new dependencies may be learned).

    Except within a *run*: when the entries just above were taken the same way as the removed one
    (one class, mode, trylock and context, as ``concurrent.futures.wait()`` takes every
    future's condition and releases them oldest first), the stack left names the chain that
    releasing the run's top would leave.  The run's entries keep their places' chain keys, each
    moving down one place onto the key below it, and are not validated again: every chain they
    name was validated when its place was filled, and each of them was taken with all the
    instances below it held.  The one thing validating the run's new bottom-most entry again
    would add, an instance order edge to it from the nearest instance of its class below
    (:mod:`pylockdep._instances` links held instances so), is added directly.  Only the entries
    above the run are replayed.  A release from the bottom of a run of N locks so costs O(N)
    instead of N validations of O(N) each.
    """
    held = t.held
    entry = held[index]
    above = held[index + 1 :]
    del held[index:]
    if entry[H_SPIN]:
        t.spins -= 1
    t.key = entry[H_PREV_KEY]
    way = _WAY(entry) if runs_from(entry) else None
    cls = entry[H_CLASS]
    if way is not None and cls.ltype.python and above and _WAY(above[0]) == way:
        # What validating the entry above again would add: an instance order edge to it from
        # the nearest instance of the class below (pylockdep._instances keeps only those).
        below = next((e[H_LOCK] for e in reversed(held) if e[H_CLASS] is cls), None)
        if below is not None:
            v.run_check(t, _bridge, below, entry[H_LOCK], above[0][H_LOCK])
    for again in above:
        if way is not None and _WAY(again) == way:
            # In the run: onto the key below, and the key after it is the one its old place had.
            held.append(again[:H_PREV_KEY] + (t.key,) + again[H_PREV_KEY + 1 :])
            t.key = again[H_PREV_KEY]
            continue
        way = None
        lock, cls, read, trylock = again[H_LOCK], again[H_CLASS], again[H_READ], again[H_TRYLOCK]
        key = chain_key(t.key, again[H_CTX], variant(cls, read, trylock))
        if key not in v.chains:
            v.validate_chain(t, lock, cls, read, trylock, key, *held_site(again))
        held.append(again[:H_PREV_KEY] + (t.key,) + again[H_PREV_KEY + 1 :])
        t.key = key
    return entry


#: What makes a run (see :func:`remove`): class, mode, trylock and context.
_WAY = itemgetter(H_CLASS, H_READ, H_TRYLOCK, H_CTX)


def _bridge(v: Validator, t: Task, below: object, removed: object, above: object) -> None:
    v.instances.bridge(below, removed, above)


def runs_from(entry: HeldLock) -> bool:
    """Whether a run (see :func:`remove`) may start from ``entry``: not from a plain
    ``threading.Lock`` not yet known as a token or a hand-off, whose validation may still mark its
    class (:func:`pylockdep._checks.check_instance_order`), so it is always replayed."""
    cls = entry[H_CLASS]
    return not is_plain_lock(cls.ltype) or cls.key.token or cls.key.handoff


def drop_foreign(v: Validator, t: Task) -> None:
    """Take off the holder's stack the locks other threads released on its behalf."""
    while t.foreign_releases:
        index = find(t, t.foreign_releases.pop())
        if index >= 0:
            remove(v, t, index)


def is_held_entry(obj: object) -> bool:
    """Whether ``obj`` is a held entry (as opposed to another tuple that refers to a lock)."""
    return type(obj) is tuple and len(obj) == len(HELD_FIELDS) and type(obj[H_CLASS]) is LockClass


def held_site(entry: HeldLock) -> Site:
    """Where a held lock was taken, as (code, line)."""
    code = entry[H_CODE]
    return (code, line_at(code, entry[H_LASTI]))
