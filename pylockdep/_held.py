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
from ._locktypes import may_hand_off

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
    key: what it validates then depends on the lock too, which is true.
    :func:`pylockdep._locks._acquire` spells this out, in this order, on its hot path (a test holds
    the two in step).
    """
    t.held.append((lock, cls, read, trylock, code, lasti, t.key, t.irq, cls.spins, t.ctx))
    t.key = key


def pop(t: Task) -> HeldLock:
    """Pop the most recent lock off the holder's stack and restore the chain key from before it.

    The key goes back before the entry leaves: a handler, finalizer or trace hook that
    runs in between sees the lock still held under the older key, so what it validates there
    depends on the lock too (true: it is not released yet), and no chain is cached as validated
    under a key that claims a lock the stack does not hold.  :func:`pylockdep._locks._release`
    spells this out, in this order, on its hot path (a test holds the two in step).
    """
    held = t.held
    entry = held[-1]
    t.key = entry[H_PREV_KEY]
    held.pop()
    return entry


def find(t: Task, lock: object) -> int:
    """Index of ``lock`` in the holder's stack, searching from the most recent; -1 if absent.

    The bottom of a run being relabelled (:class:`_Run`), whose locks are distinct, is found
    without a search of the run: releasing futures' conditions oldest first asks for it each time.
    """
    held = t.held
    run = _run_of(t)
    stop = -1
    if run is not None and run.distinct and held[run.start][H_LOCK] is lock:
        stop = run.start + len(run.keys) - 1  # only the entries above the run are searched
    for i in range(len(held) - 1, stop, -1):
        if held[i][H_LOCK] is lock:
            return i
    return -1 if stop < 0 else run.start  # type: ignore[union-attr]


#: A run (see :func:`remove`) of at least this many entries left above a released one is
#: relabelled lazily (:class:`_Run`); a shorter one is rewritten at once, which costs less than
#: sending the holder's next lock operations down the slow path.
LAZY_RUN = 32


class _Run:
    """A run of the held stack, ``held[start:start + len(keys)]``, whose entries' ``prev_key``
    fields are not written yet: the entry at ``start + i`` sits on the chain key ``keys[i]``,
    whatever its field says.  Everything else in those entries, every entry above them and the
    holder's chain key are exact.

    A run is pending work of its holder (the first item of ``Task.pending``): so every fast path,
    C or Python, all of which pop with the ``prev_key`` field, defers to the slow path, and the
    slow path writes the keys back first (:func:`do_pending`) unless it continues the run.
    """

    __slots__ = ("start", "keys", "distinct")

    def __init__(self, start: int, keys: list[int], distinct: bool) -> None:
        self.start = start
        self.keys = keys
        self.distinct = distinct  # no lock is twice in the run (see find)


def _run_of(t: Task) -> _Run | None:
    """The holder's pending run, if it has one."""
    pending = t.pending
    return pending[0] if pending and type(pending[0]) is _Run else None


def _with_key(entry: HeldLock, key: int) -> HeldLock:
    """``entry`` pushed on the chain key ``key``."""
    return entry if entry[H_PREV_KEY] == key else entry[:H_PREV_KEY] + (key,) + entry[H_PREV_KEY + 1 :]


def settle(t: Task) -> None:
    """Write a pending run's chain keys into its entries (see :class:`_Run`): after this, every
    entry of the holder's stack is exact.  Code that reads ``prev_key`` other than through the
    slow path of a lock operation calls this first."""
    run = _run_of(t)
    if run is not None:
        held = t.held
        for i, key in enumerate(run.keys, run.start):
            held[i] = _with_key(held[i], key)
        t.pending.remove(run)


def remove(v: Validator, t: Task, index: int) -> HeldLock:
    """Take the entry at ``index`` out of the holder's stack (lockdep's ``__lock_release`` of a
    lock that is not the most recent), replaying the ones above it.

    Only the order of acquisition matters, so the locks above are pushed again, in order, on top
    of the ones below: their chain keys change, and a new chain is
    validated as an acquisition would be (new dependencies may be learned), unless its validation
    cannot find anything new: the entry's old chain was validated (it is cached), in the context
    the holder is in now; the released lock is of another class (so it did not make the old
    acquisition recursive, which adds no dependency); and a lock between the two stops the walk
    of :func:`pylockdep._checks.check_prevs_add` from the entry before the released one (its
    previous locks are the ones it had).  Its new chain is then the validated one less a lock
    that took no part in the verdict, and no rule finds more with fewer locks held: it is pushed
    again and its chain cached, not validated.  (A wait context that was invalid already is not
    reported a second time, naming one held class fewer.)  The kernel validates each entry
    again, with 48 at most; a Python program may hold a thousand locks and release them oldest
    first, which validating every entry again made cubic.

    Except within a *run*: when the entries just above were taken the same way as the removed one
    (one class, mode, trylock and context, as ``concurrent.futures.wait()`` takes every
    future's condition and releases them oldest first), the stack left names the chain that
    releasing the run's top would leave.  The run's entries keep their places' chain keys, each
    moving down one place onto the key below it, and are not validated again: every chain they
    name was validated when its place was filled, and each of them was taken with all the
    instances below it held.  The one thing validating the run's new bottom-most entry again
    would add, an instance order edge to it from the nearest instance of its class below
    (:mod:`pylockdep._instances` links held instances so), is added directly.  Only the entries
    above the run are replayed.  A run of :data:`LAZY_RUN` entries or more moves down with one
    ``del`` and keeps its places' keys aside (:class:`_Run`) until the holder does anything but
    release its bottom again, which only drops the top place's key: a ``wait()`` on N futures
    costs O(N), not O(N^2).
    """
    held = t.held
    t.nearest = None  # entries move down (see pylockdep._instances.InstanceOrder.held_by)
    run = _run_of(t)
    if run is not None and index != run.start:  # only a release of its bottom continues a run
        settle(t)
        run = None
    old_key = t.key
    entry = held[index]
    if run is not None:  # the bottom of the pending run: its places' keys are run.keys
        t.pending.remove(run)
        keys: list[int] | None = run.keys
        entry = _with_key(entry, keys[0])  # type: ignore[index]
        length = len(keys)  # type: ignore[arg-type]
    else:
        keys = None
        length = 1
    # The entries above stay in place until it is known which of them move down as a run (one
    # ``del``, no copy: a wait() on N futures releases N entries from the bottom).
    top = len(held)
    t.key = entry[H_PREV_KEY]
    cls = entry[H_CLASS]
    way = None
    if runs_from(entry) or v.decide_token(t, cls, held, entry[H_LOCK]):
        way = _WAY(entry)
    if way is not None and cls.ltype.python and index + 1 < top and _WAY(held[index + 1]) == way:
        # What validating the entry above again would add: an instance order edge to it from
        # the nearest instance of the class below (pylockdep._instances keeps only those).
        below = next((held[i][H_LOCK] for i in range(index - 1, -1, -1) if held[i][H_CLASS] is cls), None)
        if below is not None:
            v.run_check(t, _bridge, below, entry[H_LOCK], held[index + 1][H_LOCK])
        if keys is None:
            while index + 1 + length < top and _WAY(held[index + 1 + length]) == way:
                length += 1
            length += 1  # the places of the run, the removed entry's included
            if length > LAZY_RUN and not cls.ltype.suspends:  # asyncio's own pops do not defer
                keys = [t.key] + [held[i][H_PREV_KEY] for i in range(index + 1, index + length)]
    above = held[index + length :]
    del held[index + length :]
    if keys is None:  # each one place down, onto the key below; the one after is its old place's
        moved = held[index + 1 :]
        del held[index:]
        for again in moved:
            held.append(again[:H_PREV_KEY] + (t.key,) + again[H_PREV_KEY + 1 :])
            t.key = again[H_PREV_KEY]
    else:
        del held[index]
        t.key = keys.pop()  # the places keep their keys: the top one goes
        if len(keys) >= 2:
            distinct = run.distinct if run is not None else len({id(e[H_LOCK]) for e in held[index:]}) == length - 1
            t.pending.insert(0, _Run(index, keys, distinct))
        else:
            held[index] = _with_key(held[index], keys[0])
    # The walk of check_prevs_add from an entry pushed again reaches below the released place
    # until an entry above that place stops it (a run's entries all stop it or none does).
    irq = t.irq
    reaches = len(held) == index or not _stops_walk(held[index], irq)
    released = entry[H_CLASS]
    for i, again in enumerate(above):
        lock, cls, read, trylock = again[H_LOCK], again[H_CLASS], again[H_READ], again[H_TRYLOCK]
        key = chain_key(t.key, again[H_CTX], variant(cls, read, trylock))
        if key not in v.chains and (
            reaches
            or cls is released
            or again[H_CTX] != t.ctx
            or (above[i + 1][H_PREV_KEY] if i + 1 < len(above) else old_key) not in v.chains  # its old chain
        ):
            v.validate_chain(t, lock, cls, read, trylock, key, *held_site(again), lasti=again[H_LASTI], replaying=True)
        elif key not in v.chains:
            v.remember_chain(key)  # as a validation would: the next release from below replays it
        held.append(again[:H_PREV_KEY] + (t.key,) + again[H_PREV_KEY + 1 :])
        t.key = key
        reaches = reaches and not _stops_walk(again, irq)
    return entry


def _stops_walk(entry: HeldLock, irq: int) -> bool:
    """Whether the walk of :func:`pylockdep._checks.check_prevs_add` from a lock above ``entry``
    (in irq context ``irq``) ends at ``entry``: another irq context, or a validated lock that no
    trylock took."""
    return entry[H_IRQ] != irq or (entry[H_CLASS].validated and not entry[H_TRYLOCK])


#: What makes a run (see :func:`remove`): class, mode, trylock and context.
_WAY = itemgetter(H_CLASS, H_READ, H_TRYLOCK, H_CTX)


def _bridge(v: Validator, t: Task, below: object, removed: object, above: object) -> None:
    v.instances.bridge(below, removed, above)


def runs_from(entry: HeldLock) -> bool:
    """Whether a run (see :func:`remove`) may start from ``entry`` as it is: not from a
    ``threading.Lock`` or ``asyncio.Lock`` not yet known as a token or a hand-off, whose validation
    may still mark its class a token (:func:`pylockdep._checks.check_instance_order`), unless that
    is decided first (:meth:`Validator.decide_token <pylockdep._validator.Validator.decide_token>`):
    the entries a run moves down would otherwise each be validated again, which made releasing a
    thousand Locks of one class oldest first take minutes."""
    cls = entry[H_CLASS]
    return not may_hand_off(cls.ltype) or cls.key.token or cls.key.handoff


def do_pending(v: Validator, t: Task, releasing: object = None) -> None:
    """Do the holder's pending work (``Task.pending``): take off its stack the locks other threads
    released on its behalf; then write a pending run's keys back (see :class:`_Run`) unless the
    lock operation under way is the release of its bottom, ``releasing``.  Nothing while the
    holder is inside a check (``busy``: a collection's callback taking a lock), which reads the
    stack: its next lock operation after does it."""
    if t.busy:
        return
    pending = t.pending
    while pending and (len(pending) > 1 or type(pending[0]) is not _Run):
        index = find(t, pending.pop())
        if index >= 0:
            remove(v, t, index)
    run = _run_of(t)
    if run is not None and (releasing is None or t.held[run.start][H_LOCK] is not releasing):
        settle(t)


def is_held_entry(obj: object) -> bool:
    """Whether ``obj`` is a held entry (as opposed to another tuple that refers to a lock)."""
    return type(obj) is tuple and len(obj) == len(HELD_FIELDS) and type(obj[H_CLASS]) is LockClass


def held_site(entry: HeldLock) -> Site:
    """Where a held lock was taken, as (code, line)."""
    code = entry[H_CODE]
    return (code, line_at(code, entry[H_LASTI]))
