"""Lock keys and lock classes.

A *key* stands for every lock initialised the same way: by one source line under one name, or by
an explicit ``key=``, as a ``spin_lock_init()`` call site is in the kernel.  Keys outlive
validators.  A *class* is a key (plus a subclass from ``.nested(n)``) as seen by one validator: it
is the graph node, carries the irq usage bits, and is what reports name.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from ._frames import Site, Stack, format_file_line
from ._locktypes import LockType, locktype_named
from ._plain import plain_rlock

if TYPE_CHECKING:
    from ._graph import Edge

MAX_SUBCLASSES = 8

# Irq usage bits, in the kernel's order: for each irq state, "used in" (the lock is irq-safe) and
# "enabled" (taken with that irq enabled: irq-unsafe), each in a write and a read flavour.  After the
# kernel's two states, Python's own two: SIGNAL, where a Python signal handler is the interrupt, and
# GC, where a finalizer run by the garbage collector is (see pylockdep._checks.acquire_usage); only
# Python's lock types have their bits.
USED_IN_HARDIRQ = 1 << 0
USED_IN_HARDIRQ_READ = 1 << 1
ENABLED_HARDIRQ = 1 << 2
ENABLED_HARDIRQ_READ = 1 << 3
USED_IN_SOFTIRQ = 1 << 4
USED_IN_SOFTIRQ_READ = 1 << 5
ENABLED_SOFTIRQ = 1 << 6
ENABLED_SOFTIRQ_READ = 1 << 7
USED_IN_SIGNAL = 1 << 8
USED_IN_SIGNAL_READ = 1 << 9
ENABLED_SIGNAL = 1 << 10
ENABLED_SIGNAL_READ = 1 << 11
USED_IN_GC = 1 << 12
USED_IN_GC_READ = 1 << 13
ENABLED_GC = 1 << 14
ENABLED_GC_READ = 1 << 15
USED = 1 << 16
USED_READ = 1 << 17

IRQ_STATES = ("HARDIRQ", "SOFTIRQ", "SIGNAL", "GC")
USAGE_NAMES = {
    USED_IN_HARDIRQ: "IN-HARDIRQ-W",
    USED_IN_HARDIRQ_READ: "IN-HARDIRQ-R",
    ENABLED_HARDIRQ: "HARDIRQ-ON-W",
    ENABLED_HARDIRQ_READ: "HARDIRQ-ON-R",
    USED_IN_SOFTIRQ: "IN-SOFTIRQ-W",
    USED_IN_SOFTIRQ_READ: "IN-SOFTIRQ-R",
    ENABLED_SOFTIRQ: "SOFTIRQ-ON-W",
    ENABLED_SOFTIRQ_READ: "SOFTIRQ-ON-R",
    USED_IN_SIGNAL: "IN-SIGNAL-W",
    USED_IN_SIGNAL_READ: "IN-SIGNAL-R",
    ENABLED_SIGNAL: "SIGNAL-ON-W",
    ENABLED_SIGNAL_READ: "SIGNAL-ON-R",
    USED_IN_GC: "IN-GC-W",
    USED_IN_GC_READ: "IN-GC-R",
    ENABLED_GC: "GC-ON-W",
    ENABLED_GC_READ: "GC-ON-R",
    USED: "INITIAL USE",
    USED_READ: "INITIAL READ USE",
}


def usage_state(bit: int) -> str:
    """``HARDIRQ``, ``SOFTIRQ``, ``SIGNAL`` or ``GC`` for an irq usage bit."""
    return IRQ_STATES[(bit.bit_length() - 1) // 4]


def is_used_in(bit: int) -> bool:
    """True for a USED_IN (irq-safe) bit, false for an ENABLED (irq-unsafe) one."""
    return (bit.bit_length() - 1) % 4 < 2


def is_read_bit(bit: int) -> bool:
    """True for the read flavour of a usage bit."""
    return (bit.bit_length() - 1) % 2 == 1


def clashing_bits(bit: int) -> int:
    """The usage bits that may not coexist with ``bit`` on one class.

    Taking a lock inside an irq handler and also with that irq enabled can deadlock: the irq may
    arrive while the lock is held.  The one exception is a reader in the handler and a reader with
    the irq enabled, which both hold the lock shared.
    """
    index = bit.bit_length() - 1
    base = 1 << (index - index % 4)  # USED_IN_<state>
    used_in, used_in_read, enabled, enabled_read = base, base << 1, base << 2, base << 3
    return {
        used_in: enabled | enabled_read,
        used_in_read: enabled,
        enabled: used_in | used_in_read,
        enabled_read: used_in,
    }[bit]


def usage_string(usage: int) -> str:
    """The kernel's 4-character usage string, ``{+.+.}`` for a mutex taken in process context (of
    the kernel's states only: the kernel's format)."""
    chars = []
    for base in (USED_IN_HARDIRQ, USED_IN_SOFTIRQ):
        for used_in in (base, base << 1):
            enabled = used_in << 2
            if usage & used_in:
                chars.append("?" if usage & enabled else "-")
            else:
                chars.append("+" if usage & enabled else ".")
    return "".join(chars)


class LockKey:
    """Identity of a family of locks (a kernel ``lock_class_key``).

    ``cache`` is ``(validator, classes)``: the classes the last validator that saw this key made
    from it, one per subclass, so the acquire path finds its class without a dictionary lookup.
    It is one tuple, replaced whole, so a thread never pairs one validator with another's classes.
    """

    __slots__ = ("name", "ltype", "site", "explicit", "cache", "handoff", "token", "at_once", "last", "made")

    def __init__(self, name: str, ltype: LockType, site: Site | None, explicit: Hashable | None) -> None:
        self.name = name
        self.ltype = ltype
        self.site = site
        self.explicit = explicit
        self.cache: tuple[Any, list[LockClass | None]] = (None, [None] * MAX_SUBCLASSES)
        # A threading.Lock of this key was released by a thread other than its acquirer: locks
        # made here are hand-off signals, not mutexes (no dependencies, no owner to wait for).
        self.handoff = False
        # A threading.Lock of this key was held on after the function that took it returned, when
        # a dependency left it: it may be a token that another thread hands back (see
        # pylockdep._checks.check_token_held).
        self.token = False
        # How many of threading's locks of this key were alive at once, counted up to 2, and (while
        # it is 1) a weak reference to the last one made: see count_made().
        self.at_once = 0
        self.last: weakref.ref | None = None
        self.made = 0

    @property
    def validator(self) -> Any:
        """The validator whose classes :attr:`classes` holds."""
        return self.cache[0]

    @property
    def classes(self) -> list[LockClass | None]:
        """The cached classes, indexed by subclass."""
        return self.cache[1]

    def __repr__(self) -> str:
        where = f" at {format_file_line(self.site)}" if self.site else ""
        return f"<LockKey {self.name} ({self.ltype.name}){where}>"

    def __copy__(self) -> LockKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> LockKey:
        """A copy of what holds the key (an ``asyncio.Lock``, a queue's map) is of its class."""
        return self

    def __reduce__(self) -> tuple[Callable[[str, str], LockKey], tuple[str, str]]:
        """Pickled by its name and lock type (its site holds code): unpickled in this process, the
        same key; in another, the key of that name and type (:func:`key_named`)."""
        _pickled[self.name, self.ltype.name] = self
        return key_named, (self.name, self.ltype.name)


# (name, lock type's name) -> the key pickled under them in this process (see LockKey.__reduce__).
_pickled: dict[tuple[str, str], LockKey] = {}


def key_named(name: str, ltype_name: str) -> LockKey:
    """The key a pickled :class:`LockKey` stands for: the same key in the process that pickled it,
    else the key of locks of that type named ``name`` with no site."""
    found = _pickled.get((name, ltype_name))
    return found if found is not None else key_for(name, locktype_named(ltype_name), None)


def lock_key(lock: object) -> LockKey | None | bool:
    """What ``lock`` is to pylockdep: its :class:`LockKey` when pylockdep validates it; False for a
    lock it does not validate, one with ``acquire()`` and ``release()`` (CPython's, made before or
    without instrumentation; asyncio's); None for anything that is not a lock."""
    key = getattr(lock, "_key", None)
    if isinstance(key, LockKey):
        return key
    if callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None)):
        return False
    return None


def count_made(key: LockKey, lock: object) -> None:
    """Count ``lock``, one of threading's locks just made with (or given) ``key``: ``key.at_once``
    becomes 2 if the last lock counted is still alive, or once :data:`MADE_ONE_AT_A_TIME` were made
    (a lock per request, made and dropped), else 1.  A key whose locks were never two alive at
    once names one lock whenever one is held, which two threads cannot hold at the same time (see
    :func:`pylockdep._checks.check_gate`).  The C stand-ins count alike."""
    if key.at_once < 2:
        last = key.last
        if key.made >= MADE_ONE_AT_A_TIME or (last is not None and last() is not None):
            key.at_once = 2
            key.last = None
        else:
            key.at_once = 1
            key.made += 1
            key.last = weakref.ref(lock)


#: How many locks of a class, made one at a time, :func:`count_made` follows: a gate is made once
#: (a module's lock) or a few times (a test suite's fresh logger), and following them costs a weak
#: reference each.
MADE_ONE_AT_A_TIME = 16


_keys: dict[Hashable, LockKey] = {}
# Re-entrant: a signal handler, a finalizer or a trace hook may make a lock while its own thread
# is registering one (the inner call then finds or adds its key; the outer keeps the first made).
_keys_lock = plain_rlock()


def key_for(name: str, ltype: LockType, site: Site | None, explicit: Hashable | None = None) -> LockKey:
    """The key shared by every lock of ``ltype`` named ``name`` created at ``site``, or by ``explicit``."""
    # A site's code by its id (hashing a code object hashes its contents): the key holds the code.
    ident = ("key", explicit) if explicit is not None else (ltype, name, site and (id(site[0]), site[1]))
    key = _keys.get(ident)
    if key is None:
        with _keys_lock:
            key = _keys.setdefault(ident, LockKey(name, ltype, site, explicit))
    return key


#: Owner types a creation site keeps a key for (see :func:`key_for_owner`): beyond this many alive
#: (types made at run time), a new type's locks share the key of the site's defining class.
OWNER_TYPES = 64

#: One creation site's keys by owner type (see :func:`key_for_owner`).
OwnerKeys = dict["weakref.ref[type] | None", LockKey]


def key_for_owner(keys: OwnerKeys, owner: type | None, make: Callable[..., LockKey], *args: Any) -> LockKey:
    """The key of the locks that one creation site makes for instances of ``owner`` (None: for a
    class, or none), from ``keys``, the site's; ``make(owner, *args)`` makes it the first time.

    ``keys`` holds each type by the weak reference with no callback that ``weakref.ref(type)``
    returns while it lives (the C stand-in looks a type up by the same one), so nothing here keeps
    a type alive (a class made at run time and dropped must go): dead ones are dropped when a type
    is added.  While :data:`OWNER_TYPES` types are alive, a further one gets None's key.  Two
    threads that make a type's first lock at once get one key."""
    handle = None if owner is None else weakref.ref(owner)
    key = keys.get(handle)
    if key is None:
        for seen in list(keys):  # a copy: another thread may add a type meanwhile, or drop this one
            if seen is not None and seen() is None:
                keys.pop(seen, None)
        if len(keys) >= OWNER_TYPES:
            owner = handle = None
            key = keys.get(None)
        if key is None:
            key = keys.setdefault(handle, make(owner, *args))
    return key


# Where each lock that set_class() moved to a named class was made (the site of its key before),
# by id, for as long as the lock lives: one such class may hold locks made at many sites.
_made_at: dict[int, Site] = {}


def keep_made_at(lock: object, site: Site | None) -> None:
    """Remember ``site`` as where ``lock`` was made (the first site kept for it stays)."""
    if site is None or id(lock) in _made_at:
        return
    _made_at[id(lock)] = site
    weakref.finalize(lock, _made_at.pop, id(lock), None)


def made_at(lock: object) -> Site | None:
    """Where ``lock`` was made, if :func:`pylockdep.set_class` gave it a class named elsewhere."""
    return _made_at.get(id(lock))


class LockClass:
    """A graph node: one key and subclass as seen by one validator.

    ``after``/``before`` map neighbour classes to the :class:`~pylockdep._graph.Edge` between them,
    in insertion order.  ``usage`` holds the irq usage bits and ``usage_stacks`` where each bit was
    first set; ``usage_guards`` the thread-local flags that guarded every acquisition seen to set a
    bit of Python's states (:mod:`pylockdep._guards`), for the bits some flag guards.  ``ord`` is
    the class's place in the graph's topological order.  ``steps`` is the pure fast path's memo of chain keys
    (see :func:`pylockdep._locks.pure_fast_with`).
    """

    __slots__ = (
        "id",
        "key",
        "subclass",
        "name",
        "ltype",
        "usage",
        "usage_stacks",
        "usage_guards",
        "after",
        "before",
        "ord",
        "variants",
        "validated",
        "spins",
        "steps",
    )

    def __init__(self, ident: int, key: LockKey, subclass: int, name: str) -> None:
        self.id = ident
        self.key = key
        self.subclass = subclass
        self.name = name
        self.ltype = key.ltype
        self.usage = 0
        self.usage_stacks: dict[int, Stack] = {}
        self.usage_guards: dict[int, frozenset[tuple[object, tuple[str, ...], str]]] = {}  # _guards.Guard
        self.after: dict[LockClass, Edge] = {}
        self.before: dict[LockClass, Edge] = {}
        self.ord = ident
        # Chain-key ingredients, one per way of taking the lock (see _held.variant).
        self.variants = tuple(ident * 8 + v for v in range(8))
        # RCU's read-side maps are tracked but add no dependencies (lockdep's check=0).
        self.validated = key.ltype.check
        # Whether taking it disables preemption; set by the validator for its kernel flavour.
        self.spins = False
        # The chains known to end in this class taken plainly (variant 0), for the pure fast path:
        # the chain key before it -> (context signature, the chain key).
        self.steps: dict[int, tuple[int, int]] = {}

    @property
    def bare_name(self) -> str:
        """The name the lock was given, without lockdep's ``#N`` and ``/subclass`` suffixes."""
        return self.key.name

    def __repr__(self) -> str:
        return f"<LockClass {self.name} ({self.ltype.name})>"
