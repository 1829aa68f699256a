"""The rules, one ``check_*`` function each, its docstring stating the rule.

The acquisition rules come first, in the order an acquisition meets them; then the rules of
releases, context changes, RCU, guarded data, thread exit and capacity limits.  Every check runs
through :meth:`Validator.run_check <pylockdep._validator.Validator.run_check>` (under the graph
lock, never while the thread is printing a report), decides whether its rule is broken and, if
so, calls :meth:`Validator.report <pylockdep._validator.Validator.report>` with the report kind
and a function that builds the splat (:mod:`pylockdep._splat`): the validator deduplicates
first and builds the splat only for a new problem.  Checks never call user code.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Hashable, Iterable, Sequence
from operator import attrgetter
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from . import _collector, _guards, _splat
from ._classes import (
    ENABLED_GC,
    ENABLED_GC_READ,
    ENABLED_HARDIRQ,
    ENABLED_HARDIRQ_READ,
    ENABLED_SIGNAL,
    ENABLED_SIGNAL_READ,
    ENABLED_SOFTIRQ,
    ENABLED_SOFTIRQ_READ,
    USAGE_NAMES,
    USED,
    USED_IN_GC,
    USED_IN_GC_READ,
    USED_IN_HARDIRQ,
    USED_IN_HARDIRQ_READ,
    USED_IN_SIGNAL,
    USED_IN_SIGNAL_READ,
    USED_IN_SOFTIRQ,
    USED_IN_SOFTIRQ_READ,
    USED_READ,
    LockClass,
    clashing_bits,
    is_read_bit,
    is_used_in,
    usage_state,
)
from ._frames import (
    Site,
    Stack,
    calls_method,
    capture_stack,
    current_frames,
    enters_with,
    format_file_line,
    in_loop,
    is_internal,
    stack_standing_in,
    stack_stood_in,
    uninterruptible,
)
from ._graph import Edge, LoopMark, PathStep, dep_kind
from ._guards import Guard
from ._held import H_CLASS, H_CODE, H_IRQ, H_LASTI, H_LOCK, H_READ, H_TRYLOCK, HeldLock, find, held_site, is_held_entry
from ._instances import nodes, same_instances
from ._locktypes import (
    ASYNC_LOCK,
    PY_LOCK,
    PY_RLOCK,
    RCU,
    RCU_SCHED,
    SRCU,
    WAIT_INV,
    LockType,
    effective_wait,
    is_plain_lock,
    may_hand_off,
)
from ._task import Task

if TYPE_CHECKING:
    from ._validator import Validator

# The usage bits of every state (the kernel's, SIGNAL and GC), by kind and by flavour.
USED_IN_ALL = USED_IN_HARDIRQ | USED_IN_HARDIRQ_READ | USED_IN_SOFTIRQ | USED_IN_SOFTIRQ_READ
USED_IN_ALL |= USED_IN_SIGNAL | USED_IN_SIGNAL_READ | USED_IN_GC | USED_IN_GC_READ
ENABLED_ALL = USED_IN_ALL << 2  # each state's ENABLED bits are two above its USED_IN bits
#: The bits of Python's own states, SIGNAL and GC, which the kernel's order rules
#: (:func:`check_irq_usage`, the kernel's side of :func:`check_usage_inversion`) leave alone.  For
#: SIGNAL an order deadlocks only through dependencies that threads other than the main one made:
#: :func:`check_signal_order` and the SIGNAL side of :func:`check_usage_inversion` follow those
#: alone.  For GC, no code runs with the collector held off: a dependency ``A -> B`` taken outside a
#: finalizer makes ``A`` GC-ON, one taken inside makes ``B`` IN-GC, so an order from an IN-GC lock to
#: a GC-ON one is also one lock taken both ways, and reported so, unless ``A`` is an ``RLock`` (a
#: reader here, which may be both): that order is not checked.
SIGNAL_BITS = USED_IN_SIGNAL | USED_IN_SIGNAL_READ | ENABLED_SIGNAL | ENABLED_SIGNAL_READ
PYTHON_STATE_BITS = SIGNAL_BITS | USED_IN_GC | USED_IN_GC_READ | ENABLED_GC | ENABLED_GC_READ
_USED_IN_READ = USED_IN_HARDIRQ_READ | USED_IN_SOFTIRQ_READ | USED_IN_SIGNAL_READ | USED_IN_GC_READ
READ_BITS = _USED_IN_READ | _USED_IN_READ << 2  # and the ENABLED_*_READ bits
WRITE_BITS = (USED_IN_ALL | ENABLED_ALL) & ~READ_BITS

# Lock types with only read sides: a thread holds one when it is inside a read side.
READ_SIDE_ONLY = (SRCU, RCU, RCU_SCHED)
DEREFERENCE_CHECK = "suspicious rcu_dereference_check() usage"
DEREFERENCE_PROTECTED = "suspicious rcu_dereference_protected() usage"


def check_might_sleep(
    v: Validator, t: Task, site: Site, functions: list[str], rcu_allowed: int, lock_cls: LockClass | None = None
) -> None:
    """A function that may sleep must be called preemptible, with interrupts on and no RCU reader.

    This is the scheduler's ``__might_sleep()``: it runs for every sleeping lock, for
    ``spinlock_t`` on PREEMPT_RT (allowing the RCU nesting such locks bring: ``rcu_allowed``), for
    SRCU's synchronize, and for explicit ``might_sleep()`` calls.
    """
    count = t.preempt_count(v.preempt_rt)
    depth = t.rcu_depth(v.preempt_rt)
    if count == 0 and not t.irqs_off and depth == rcu_allowed:
        return
    held = tuple(entry[H_CLASS] for entry in t.held)
    classes = held + ((lock_cls,) if lock_cls is not None else ())
    atomic_site = t.atomic_section_site(v.preempt_rt) if count else None
    # One report per set of classes; a bare might_sleep() (no lock) is told apart by its call site.
    v.report(
        "sleep_in_atomic",
        classes,
        lambda title: _splat.sleep_in_atomic(
            v, t, title, site, count, depth, rcu_allowed, atomic_site, functions, lock_cls
        ),
        site=site,
        dedupe=() if classes else (site,),
        title={"site": format_file_line(site)},
    )
    v.taint = "Tainted: G        W"


def check_wait_context(v: Validator, t: Task, cls: LockClass, lock: object, site: Site) -> None:
    """A lock may not wait longer than its context and every lock held in it allow.

    The lock's outer wait type must not exceed the smallest inner wait type of the locks held in
    the current irq context (or of the context itself): no mutex inside a spinlock, and with
    raw-lock nesting checks no ``spinlock_t`` inside a ``raw_spinlock_t``.  Lockdep learnt wait
    types around 5.7: a validator of an older era does not check them.
    """
    if cls.ltype.inner == WAIT_INV or v.era != "modern":
        return
    nesting = v.nesting
    context = t.wait_context()
    allowed = effective_wait(context, nesting)
    # The wait types held, each once: a thread may hold thousands of locks of a few classes.
    for inner in t.segment_waits() - {WAIT_INV}:
        allowed = min(allowed, effective_wait(inner, nesting))
    if effective_wait(cls.ltype.outer, nesting) <= allowed:
        return
    held = tuple(e[H_CLASS] for e in t.irq_segment())
    v.report(
        "invalid_wait_context",
        held + (cls,),
        lambda title: _splat.invalid_wait_context(v, t, title, cls, lock, site, effective_wait(context, nesting)),
        site=site,
    )


def acquire_usage(v: Validator, t: Task, cls: LockClass, read: int, trylock: bool, sync: bool) -> list[int]:
    """The usage bits an acquisition sets, in the kernel's order (irq-safe first, then unsafe).

    Python's lock types also have Python's own interrupt, the SIGNAL state: a Python signal
    handler runs in the main thread between two of its instructions, whatever it holds.  A lock
    taken inside a handler is signal-safe (``IN-SIGNAL``); one taken in the main thread outside
    any handler is signal-unsafe (``SIGNAL-ON``): a handler that takes it there waits for its own
    thread.  Other threads never run handlers: their acquisitions are neither.  An ``RLock``
    counts as a reader here (``-R``), as its owner only enters it again: it deadlocks with its
    handler only through another lock and another thread (:func:`check_signal_order`).  Nor do
    asyncio's locks count: a handler cannot wait for one.

    The GC state is the same with a finalizer for the handler: the garbage collector runs the
    finalizers (``__del__``, weakref callbacks) of the garbage it finds in whichever thread started
    the collection, between two of its instructions, whatever that thread holds (CPython's
    documentation of ``__del__`` warns of exactly this deadlock).  A lock taken in a finalizer the
    collector runs is ``IN-GC``; one taken outside, in any thread, is ``GC-ON`` (see
    :mod:`pylockdep._collector`).
    """
    bits = []
    checked = cls.validated
    python_states = checked and cls.ltype.python and not cls.ltype.suspends  # SIGNAL and GC
    shared = read or cls.ltype is PY_RLOCK
    if checked and not trylock:
        if t.hardirq:
            bits.append(USED_IN_HARDIRQ_READ if read else USED_IN_HARDIRQ)
        if t.softirq and not v.preempt_rt:
            bits.append(USED_IN_SOFTIRQ_READ if read else USED_IN_SOFTIRQ)
        if python_states and t.in_signal:
            bits.append(USED_IN_SIGNAL_READ if shared else USED_IN_SIGNAL)
        if python_states and t.in_gc:
            bits.append(USED_IN_GC_READ if shared else USED_IN_GC)
    if checked and not t.irqs_off and not sync:
        bits.append(ENABLED_HARDIRQ_READ if read else ENABLED_HARDIRQ)
        if not (t.bh or t.softirq):
            bits.append(ENABLED_SOFTIRQ_READ if read else ENABLED_SOFTIRQ)
    if python_states and t.signals_on and not t.in_signal and not sync:
        bits.append(ENABLED_SIGNAL_READ if shared else ENABLED_SIGNAL)
    if python_states and not t.in_gc and not sync:
        bits.append(ENABLED_GC_READ if shared else ENABLED_GC)
    bits.append(USED_READ if read else USED)
    return bits


def mark_lock(
    v: Validator,
    t: Task,
    cls: LockClass,
    lock: object,
    read: int,
    bit: int,
    site: Site,
    guards: frozenset[Guard] | None = None,
) -> None:
    """Set a usage bit on a class, then check the rules a new irq usage must keep
    (:func:`check_inconsistent_state`, then :func:`check_usage_inversion`).  A GC bit keeps only
    the first: see :data:`PYTHON_STATE_BITS`.

    A bit of Python's states also keeps the re-entrancy guards of the acquisitions that set it
    (``guards``, else those of this thread's stack: :func:`usage_guards`); a bit set before, and
    guarded, keeps only the guards it still has, and is checked again if it lost some."""
    if cls.usage & bit:
        if bit in cls.usage_guards:  # the guards it keeps are those of every acquisition
            had = cls.usage_guards.pop(bit)
            kept = had & (usage_guards(t, bit, site) if guards is None else guards)
            if kept:
                cls.usage_guards[bit] = kept
            if kept != had:
                consistent = check_inconsistent_state(v, t, cls, lock, bit, clashing_bits(bit), site)
                if consistent and _guards.NO_SIGNAL in had - kept and v.any_signal_safe:
                    check_usage_inversion(v, t, cls, lock, read, bit, site)  # now SIGNAL-ON as the rules see it
        return
    if bit & PYTHON_STATE_BITS:
        guards = usage_guards(t, bit, site) if guards is None else guards
        if guards:
            cls.usage_guards[bit] = guards
        if bit & (USED_IN_GC | USED_IN_GC_READ) and _seen_uninterrupted(cls, _GC_ON, _guards.NO_COLLECTION):
            # The chains cached so far were not seen line by line (see guards_per_site): a line that
            # may start a collection may have taken it among them.  See them again.
            v.forget_chains()
    clash = clashing_bits(bit) if bit < USED else 0
    cls.usage |= bit
    cls.usage_stacks[bit] = capture_stack()
    if not clash:
        return
    if bit & PYTHON_STATE_BITS:
        if bit & (USED_IN_SIGNAL | USED_IN_SIGNAL_READ) and not v.any_signal_safe:
            v.any_signal_safe = True
            v.forget_chains()  # and from now on a class seen SIGNAL-ON only where no handler runs: line by line
        consistent = check_inconsistent_state(v, t, cls, lock, bit, clash, site)
        if consistent and bit & SIGNAL_BITS and v.any_signal_safe and _exposed_usage(cls) & bit:
            check_usage_inversion(v, t, cls, lock, read, bit, site)
        return
    if is_used_in(bit):
        # Only once some class is irq-safe can an edge or a new irq-unsafe class be wrong.
        v.any_irq_usage = True
        v.graph.mark_irq_safe(cls, bit)
    if check_inconsistent_state(v, t, cls, lock, bit, clash, site) and v.any_irq_usage:
        check_usage_inversion(v, t, cls, lock, read, bit, site)


def usage_guards(t: Task, bit: int, site: Site | None = None) -> frozenset[Guard]:
    """The thread-local flags guarding the acquisition being validated in this thread, as the usage
    ``bit`` of Python's states sees them (:mod:`pylockdep._guards`): for a signal handler's or a
    finalizer's, those its own code checked and set; for any other, those set on the stack.  And
    the interpreter's own guard of the state (:data:`~pylockdep._guards.NO_COLLECTION`,
    :data:`~pylockdep._guards.NO_SIGNAL`): a finalizer's or a handler's always; a ``GC-ON`` or
    ``SIGNAL-ON`` acquisition's when it is a ``with`` block whose body nothing can interrupt (taken
    at ``site``, at the offset ``t.lasti``)."""
    frame = sys._getframe(1)
    if bit & (USED_IN_GC | USED_IN_GC_READ):
        return _guards.checked_on_path(frame, t.interrupted) | _guards.ONLY_NO_COLLECTION
    if bit & (USED_IN_SIGNAL | USED_IN_SIGNAL_READ):
        return _guards.checked_on_path(frame, t.interrupted) | _guards.ONLY_NO_SIGNAL
    guards = _guards.set_on_stack(frame)
    if bit & (ENABLED_GC | ENABLED_GC_READ):
        own = _guards.ONLY_NO_COLLECTION
    elif bit & (ENABLED_SIGNAL | ENABLED_SIGNAL_READ):
        own = _guards.ONLY_NO_SIGNAL
    else:
        return guards
    if site is not None and uninterruptible(site[0], t.lasti):
        return guards | own
    return guards


# The usages of Python's states where their interrupt may come: GC-ON and SIGNAL-ON, write and read.
_GC_ON = (ENABLED_GC, ENABLED_GC_READ)
_SIGNAL_ON = (ENABLED_SIGNAL, ENABLED_SIGNAL_READ)


def guards_per_site(v: Validator, cls: LockClass) -> bool:
    """Whether the verdicts of the chains of ``cls`` hold only for the line that takes it: a usage
    of it is guarded by a thread-local flag; or it is taken in a finalizer and its ``GC-ON`` usage
    was seen only where nothing can interrupt (another line may start a collection); or a signal
    handler took some lock and the ``SIGNAL-ON`` usage of ``cls`` was seen only so (another line
    may run a handler, which the rules of the SIGNAL state, orders included, then see).  A
    counter's lock, whose ``with`` blocks nothing can interrupt, is cached as any chain while no
    finalizer takes it and no handler takes any lock."""
    guards = cls.usage_guards
    if any(g - _guards.UNINTERRUPTIBLE for g in guards.values()):
        return True
    if cls.usage & (USED_IN_GC | USED_IN_GC_READ) and _seen_uninterrupted(cls, _GC_ON, _guards.NO_COLLECTION):
        return True
    return v.any_signal_safe and _seen_uninterrupted(cls, _SIGNAL_ON, _guards.NO_SIGNAL)


def _seen_uninterrupted(cls: LockClass, on_bits: tuple[int, int], guard: Guard) -> bool:
    """Whether every acquisition of ``cls`` with a usage of ``on_bits`` (``GC-ON`` or ``SIGNAL-ON``,
    write or read) seen so far was in a section nothing can interrupt (had the interpreter's
    ``guard``)."""
    return any(guard in cls.usage_guards.get(bit, ()) for bit in on_bits)


def _exposed_usage(cls: LockClass) -> int:
    """The usage bits of ``cls``, less ``SIGNAL-ON`` (write or read) where every such acquisition
    seen so far was in a section no signal handler can interrupt: what the order rules of the
    SIGNAL state see (:func:`check_signal_order`, :func:`check_usage_inversion`)."""
    usage = cls.usage
    if cls.usage_guards:
        for bit in _SIGNAL_ON:
            if _guards.NO_SIGNAL in cls.usage_guards.get(bit, ()):
                usage &= ~bit
    return usage


def check_finalizer_usage(v: Validator, t: Task, cls: LockClass, lock: object, read: int, bit: int, site: Site) -> bool:
    """A lock taken in a finalizer is collector-safe (``bit``: ``IN-GC``) only if it outlives the
    collection that ran the finalizer.  A lock the collection frees was garbage: no live thread
    could reach it, so none could hold it when the collector interrupted that thread (a finalizer
    closing its own object under the object's lock, as ``IOBase.__del__`` does).

    So the usage is marked, and checked by :func:`mark_lock`, as the collection ends, if the lock
    survived it (:func:`pylockdep._collector.decide_at_end`), with the stack of this acquisition.
    Returns whether it was left for then; False (mark it now) for a class that has the bit already
    or a lock that cannot be referenced weakly."""
    if cls.usage & bit:
        return False

    def marker() -> Callable[[object], None]:
        # Nothing kept here may refer to ``lock``: a strong reference would bring the garbage back.
        stack = capture_stack()
        guards = usage_guards(t, bit)
        return lambda survivor: v.run_check(t, _mark_at_end, cls, survivor, read, bit, site, stack, guards)

    return _collector.decide_at_end((cls.id, bit, site), lock, marker)


def _mark_at_end(
    v: Validator,
    t: Task,
    cls: LockClass,
    lock: object,
    read: int,
    bit: int,
    site: Site,
    stack: Stack,
    guards: frozenset[Guard],
) -> None:
    with stack_standing_in(stack):
        mark_lock(v, t, cls, lock, read, bit, site, guards)


def check_inconsistent_state(
    v: Validator, t: Task, cls: LockClass, lock: object, bit: int, clash: int, site: Site
) -> bool:
    """One class may not be both irq-safe and irq-unsafe: an interrupt taking it could wait for the
    code it interrupted.  ``bit`` was just set; ``clash`` holds the bits it clashes with.  Returns
    False when it reported.

    Python's states have one exception, a re-entrancy guard (:mod:`pylockdep._guards`): a
    thread-local flag that every acquisition of both usages was seen under, the interrupt's own
    code checking it and leaving when it was set.  The interrupt then cannot wait for its thread."""
    guards = cls.usage_guards.get(bit, _guards.NO_GUARDS)
    clashing = [old for old in _bits_of(cls.usage & clash) if not guards & cls.usage_guards.get(old, _guards.NO_GUARDS)]
    if not clashing:
        return True
    old = clashing[0]
    flags = t.irq_flags()
    old_stack = cls.usage_stacks.get(old, ())
    v.report(
        "inconsistent_lock_state",
        (cls,),
        lambda title: _splat.inconsistent(
            v, t, title, cls, lock, site, USAGE_NAMES[old], USAGE_NAMES[bit], old_stack, flags
        ),
        dedupe=(old, bit),
    )
    return False


def check_usage_inversion(v: Validator, t: Task, cls: LockClass, lock: object, read: int, bit: int, site: Site) -> None:
    """A class becoming irq-safe must not reach an irq-unsafe class through the graph, and one
    becoming irq-unsafe must not be reached from an irq-safe one: an interrupt could invert the
    order.  For Python's SIGNAL state only the dependencies that other threads than the main one
    made count (see :func:`check_signal_order`), and an ``RLock`` is as unsafe as a lock."""
    base = 1 << ((bit.bit_length() - 1) // 4 * 4)  # USED_IN_<state>
    forwards = is_used_in(bit)
    want = (base << 2 | base << 3) if forwards else (base | base << 1)
    match = _usage_match(want)
    passable = None
    if bit & SIGNAL_BITS:
        passable = _made_off_main
        match = _past(cls, match)  # an RLock may be both IN-SIGNAL and SIGNAL-ON: look beyond it
    if forwards:
        path = v.graph.find_path(cls, read == 2, match, passable=passable)
    else:
        path = v.graph.find_path(cls, read != 0, match, backwards=True, passable=passable)
    if path is None or path.cls is cls:
        return
    write_form = base << 2 if forwards else base
    state = usage_state(bit) + ("" if path.cls.usage & write_form else "-READ")
    v.report(
        "irq_inversion",
        (step.cls for step in path.walk()),
        lambda title: _splat.irq_inversion(v, t, title, cls, lock, site, state, forwards, path),
        dedupe=(forwards,),
    )


def _usage_match(mask: int):
    usage_of = _exposed_usage if mask & (ENABLED_SIGNAL | ENABLED_SIGNAL_READ) else attrgetter("usage")

    def match(step: PathStep) -> bool:
        usage = usage_of(step.cls) & (WRITE_BITS if step.only_recursive else ~0)
        return bool(usage & mask)

    return match


def _past(start: LockClass, match: Callable[[PathStep], bool]) -> Callable[[PathStep], bool]:
    def match_past(step: PathStep) -> bool:
        return step.cls is not start and match(step)

    return match_past


def _made_off_main(edge: Edge) -> bool:
    return edge.off_main


def _bits_of(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask >> i & 1]


def check_deadlock(v: Validator, t: Task, cls: LockClass, lock: object, read: int, site: Site) -> bool:
    """Taking a class that this thread already holds is recursive locking, unless both are readers
    and the new one is recursive.  Returns False when it reported.

    Python's lock types are judged per instance instead: another instance of a held class is for
    :func:`check_instance_order`; taking the very instance held is recursive for an owned lock (an
    ``RLock``'s owner only enters it again), and a ``threading.Lock`` the thread (an
    ``asyncio.Lock`` the task) holds itself is judged only if it ends up waiting for it for ever
    (:mod:`pylockdep._waitfor`, :func:`pylockdep._asyncio._validate`), since another thread or task
    may release it.  Only another can let such a wait end: the lock is a hand-off signal, and its
    class is one from then on (:func:`check_handoff`), before it closes a cycle through the locks
    held meanwhile.  Unless it is held by a ``with`` (``async with``) block, whose end releases it
    here: a mutex, which no other is meant to release, and the wait is recursive locking (a
    callback re-taking the Lock its caller holds, as watchdog's observer did: #229); or by a
    mutex's bare ``acquire()`` that another function re-takes (:func:`check_retaken_by_callee`).
    """
    until_handoff: tuple[LockClass, ...] = ()
    if cls.ltype.python:
        held = None
        if v.instances.held_by(t, cls, lock)[1]:  # else it is not held
            held = next((e for e in t.held if e[H_LOCK] is lock), None)
            if held is not None and may_hand_off(cls.ltype) and not enters_with(held[H_CODE], held[H_LASTI]):
                if not check_retaken_by_callee(held, site):
                    cls.key.handoff = True
                    return True
                until_handoff = (cls,)
    else:
        held = next((e for e in t.held if e[H_CLASS] is cls and not (read == 2 and e[H_READ])), None)
    if held is None:
        return True
    v.report(
        "recursive",
        (cls,),
        lambda title: _splat.recursive(v, t, title, held, cls, lock, site),
        site=site,
        until_handoff=until_handoff,
    )
    return False


def check_retaken_by_callee(entry: HeldLock, site: Site) -> bool:
    """A ``threading.Lock`` held by a bare ``acquire()`` in a function that also calls
    ``release()`` (the ``acquire()`` ... ``release()`` of a mutex), and taken again at ``site`` by
    another function while that one still runs (a callback re-taking the Lock its caller holds, as
    paho-mqtt's client did: #12), is recursive locking, as a ``with`` block's is; unless another
    thread releases a lock of its class before validation ends (a helper that waits for a worker's
    completion signal): the report waits until then.  Taken again by the very function that took
    it, or after that one returned, it waits for another thread's release (a hand-off: CPython's
    own tests wait so)."""
    code = entry[H_CODE]
    return site[0] is not code and calls_method(code, "release") and not _not_running([code])


def check_instance_order(v: Validator, t: Task, cls: LockClass, lock: object, site: Site) -> bool:
    """Instances of one class of Python's locks must always nest in one order: taking ``lock``
    while holding another instance of its class must not close a cycle of instances (``x`` then
    ``y`` here, ``y`` then ``x`` anywhere, any time).  Returns whether another instance of the
    class is held: such a chain is judged anew each time, never cached.

    The pairs this acquisition adds to the order (each held instance, then ``lock``) are kept as
    one edge from the nearest held instance (:mod:`pylockdep._instances`), unless an edge from it
    kept before names other instances held; then every held instance it does not name gets its
    own edge, as before there were kept edges.

    A class of ``threading.Lock``s or ``asyncio.Lock``s is judged as :func:`check_prev_add` judges one: known as a
    hand-off (:func:`check_handoff`), it orders nothing; holding an instance taken by code no
    longer running (:func:`check_token_held`) marks it, and a cycle of its instances waits for the
    end of validation, dropped if the class has shown itself a hand-off by then."""
    if check_handoff(cls):
        return False
    order = v.instances
    held = order.held_by(t, cls, lock)[0]
    if held is None:
        return False
    check_token_class(v, t, cls, t.held, lock)  # as check_prev_add marks one: a cycle waits for finish()
    nxt = order.node(lock)
    nearest = held[0]
    known = nearest.after.get(nxt)
    if known is None:
        prevs = [nearest]
    elif same_instances(known[3], held):
        return True
    else:
        named = set(nodes(known[3]))  # a set: the held instances are as many as those named
        prevs = [p for p in nodes(held) if nxt not in p.after and p not in named]
    if not prevs:
        return True
    witness = (capture_stack(), t.comm, v.origin, held)
    reachable = order.reaching(nxt, prevs)  # one search: edges into nxt do not change it
    if any(prev in reachable for prev in prevs):
        # Name the oldest held instance the one taken leads back to, as a search of every pair would.
        entry = next(e for e in _same(t, cls, lock) if order.node(e[H_LOCK]) in reachable)
        path = order.find_path(nxt, order.node(entry[H_LOCK]))
        v.report(
            "circular",
            (cls, cls),
            lambda title: _splat.instance_cycle(v, t, title, entry, cls, lock, site, path, witness[0]),
            site=site,
            dedupe=("instances",),
            until_handoff=(cls,) if cls.key.token else (),
        )
    for prev in prevs:
        order.add(prev, nxt, witness)
    return True


def _same(t: Task, cls: LockClass, lock: object) -> list[HeldLock]:
    """The held entries of ``cls`` other than ``lock``, oldest first."""
    return [entry for entry in t.held if entry[H_CLASS] is cls and entry[H_LOCK] is not lock]


def check_made_locked(lock: Any, read: int, frame: FrameType) -> bool:
    """A ``threading.Lock`` taken by a bare ``acquire()`` in the constructor that made it (an
    ``__init__`` at its class's creation site) is made locked: the idiom of an object whose Lock
    starts closed and that another thread opens to signal (trio's worker threads, whose Lock is
    "locked" while there is no job; sqlitedict's worker, which opens it once ready).  Made just
    now by this thread, in an object no other thread has yet, it is free: the take waits for
    nothing.  So it is judged as a trylock, which adds no dependency into its class; what is taken
    while it is held still depends on it.  Returns whether the acquisition is one (the caller then
    tries it, and judges it a trylock if that took it).

    Only a constructor's: locks made and taken bare in any other function (a test's, a module's
    body) are as often mutexes, taken in an order that matters.  Nor a ``with`` block's take, whose
    end releases the lock in the same function: a mutex's use."""
    site = lock._key.site
    code = frame.f_code
    return (
        read == 0
        and lock._key.ltype is PY_LOCK
        and site is not None
        and site[0] is code
        and code.co_name == "__init__"
        and not enters_with(code, frame.f_lasti)
    )


def check_handoff(cls: LockClass) -> bool:
    """A ``threading.Lock`` that some thread other than its acquirer released is a hand-off signal,
    not a mutex, and orders nothing (the kernel does not track semaphores either): no dependency
    leads into or out of its class.  Returns True for such a class."""
    return cls.key.handoff


def check_self_deadlock(v: Validator, t: Task, lock: Any, site: Site) -> None:
    """A thread that waits for a ``threading.Lock`` it holds itself, with no other thread left
    that could release it, deadlocks: recursive locking (then :class:`DeadlockError`)."""
    index = find(t, lock)
    if index < 0:
        return
    entry = t.held[index]
    cls = entry[H_CLASS]
    v.report("recursive", (cls,), lambda title: _splat.recursive(v, t, title, entry, cls, lock, site), site=site)


def check_prevs_add(v: Validator, t: Task, cls: LockClass, lock: object, read: int, site: Site, sync: bool) -> bool:
    """Add an edge from each held lock that the new one now depends on.

    Walking down the held stack within the current irq context, every validated lock gets an
    edge to the new one; the walk stops after the first lock that was not taken by a trylock,
    since the locks below it already lead to it.  Returns whether the verdict holds for the
    chain: not when a loop made an edge (:func:`check_loop_order`), which depends on where the
    locks were taken, not on their classes alone.
    """
    cacheable = True
    for entry in reversed(t.held):
        if entry[H_IRQ] != t.irq:
            break
        if not entry[H_CLASS].validated:
            continue
        if entry[H_CLASS] is not cls and not entry[H_CLASS].key.handoff:  # see check_handoff
            loop = (site, t.comm) if check_loop_taken(t, entry, cls, site) else None
            cacheable = cacheable and loop is None
            check_prev_add(v, t, entry, cls, lock, read, site, sync, loop)
        if not entry[H_TRYLOCK]:
            break
    return cacheable


def check_prev_add(
    v: Validator,
    t: Task,
    prev_entry: tuple,
    cls: LockClass,
    lock: object,
    read: int,
    site: Site,
    sync: bool,
    loop: LoopMark | None = None,
) -> None:
    """Record ``prev -> next`` after checking the rules a new dependency must keep
    (:func:`check_noncircular`, :func:`check_irq_usage`); ``loop`` is the site of the loop that
    took both and the thread that ran it, if a loop did.  Each time it is made, the edge keeps the
    locks that guarded it (:attr:`Edge.guards`) and the loop that made it only if both were those
    of every time (one loop, in one thread)."""
    prev = prev_entry[H_CLASS]
    kind = dep_kind(prev_entry[H_READ], read)
    guards = _guards_held(t)
    off_main = not t.signals_on
    edge = prev.after.get(cls)
    if edge is not None:
        # A lock pushed again after a release from under it (pylockdep._held.remove) is held,
        # not being taken: what was released no longer guards it, but its taking was guarded.
        if not t.replaying:
            edge.guards &= guards
            if edge.loop != loop:
                edge.loop = None
            if edge.held_ever is not None and not guards <= edge.held_ever:
                # Held with locks it never was: a cycle through it that needed one thread to hold
                # them (check_one_thread_made) may stand now.
                edge.held_ever |= guards
                if edge.types & kind:
                    check_noncircular(v, t, prev_entry, cls, lock, read, site, sync, guards, loop)
        if off_main and not edge.off_main:
            edge.off_main = True
            check_signal_order(v, t, prev_entry, cls, lock, site)
        if edge.types & kind:
            if v.graph.recursive_reads and not t.replaying:
                # As the kernel, which searches before it looks for the edge: a cycle that the
                # search made when its last edge came missed, reaching a class first by a weak
                # path through a recursive reader, is found from a later chain through the edge.
                check_noncircular(v, t, prev_entry, cls, lock, read, site, sync, guards, loop)
            return
    graph = v.graph
    if not prev.key.token and check_token_held(prev_entry):
        prev.key.token = True
    closes_cycle = not check_noncircular(v, t, prev_entry, cls, lock, read, site, sync, guards, loop)
    if graph.irq_safe_reaching(prev):  # else no irq-safe class stands behind prev
        check_irq_usage(v, t, prev_entry, cls, lock, read, site)
    if edge is not None:
        graph.add_types(edge, kind)
    else:
        graph.add_edge(
            prev,
            cls,
            kind,
            capture_stack(),
            t.comm,
            v.origin,
            closes_cycle=closes_cycle,
            guards=guards,
            loop=loop,
            off_main=off_main,
            held_ever=guards,
        )
        if off_main:
            check_signal_order(v, t, prev_entry, cls, lock, site)


def check_loop_taken(t: Task, entry: HeldLock, cls: LockClass, site: Site) -> bool:
    """Whether the held ``entry`` and the lock of class ``cls`` that ``t`` takes at ``site`` are
    Python's locks that one loop takes one after another (``for lock in locks:
    lock.acquire()``): the held one was taken by the very instruction (``t.lasti``), inside a
    loop (locks taken on one line, ``with a, b:``, are taken by different instructions)."""
    return (
        cls.ltype.python
        and entry[H_CLASS].ltype.python
        and entry[H_CODE] is site[0]
        and entry[H_LASTI] == t.lasti
        and in_loop(site)
    )


def check_loop_order(loops: Sequence[Hashable | None]) -> bool:
    """A loop that takes Python's locks one after another takes them in the order of what it walks
    (every lock of a registry, in a fork hook): a cycle that such a loop made alone, in one
    thread, every dependency of it made by that one loop in that thread every time, is that order
    seen from different starting points, not a deadlock.  ``loops`` is the loop that made each
    dependency of the cycle (its site and thread, as :data:`LoopMark`; in a merged graph its
    :func:`~pylockdep._export.loop_id`; None where none did).  Returns True for such a cycle.  (A
    cycle with any other dependency is judged as any other: a loop's order against a nesting
    elsewhere may deadlock, and so may two threads walking it from different starts at once.)"""
    return loops[0] is not None and all(loop == loops[0] for loop in loops)


def check_noncircular(
    v: Validator,
    t: Task,
    prev_entry: tuple,
    cls: LockClass,
    lock: object,
    read: int,
    site: Site,
    sync: bool,
    guards: frozenset[LockClass] = frozenset(),
    loop: LoopMark | None = None,
) -> bool:
    """A new dependency ``prev -> next`` must not close a strong cycle: no path may lead from
    ``next`` back to ``prev`` on which every step could block (a path through recursive readers
    only counts where the held lock is a writer).  Returns False when it closes one.

    ``guards`` are the threading locks held now, ``loop`` the loop taking both locks if one is
    (see :func:`check_prev_add`).  A cycle that only that loop made (:func:`check_loop_order`)
    is not reported; one that a gate closes (:func:`check_gated`) is held back, and reported at
    the end only if its gate turned out not to be the only lock of its class; a path back that
    no gate closes is looked for first."""
    prev = prev_entry[H_CLASS]
    graph = v.graph
    if prev is cls or not graph.may_reach(cls, prev):
        return True
    prev_read = prev_entry[H_READ]

    def conflict(step: PathStep) -> bool:
        return step.cls is prev and (prev_read == 0 or not step.only_recursive)

    def held_each(path: PathStep) -> list[frozenset[LockClass]]:
        return [guards, *(edge.guards for edge in path.edges())]

    def made(path: PathStep) -> list[tuple[LockClass, frozenset[LockClass] | None]]:
        return [(prev, guards), *((edge.prev, edge.held_ever) for edge in path.edges())]

    path = graph.find_path(cls, read == 2, conflict)
    if path is None:
        return True
    if check_loop_order([loop, *(edge.loop for edge in path.edges())]):
        return False
    gates = check_gated(held_each(path), made(path))
    mine = {c for c in guards if check_gate(c)}
    if gates and mine:
        # The shortest path back may be closed by gates where a longer one is not: look for one
        # whose dependencies were made without the gates held here.
        other = graph.find_path(cls, read == 2, conflict, passable=lambda edge: not edge.guards & mine)
        if other is not None and not (found := check_gated(held_each(other), made(other))):
            path, gates = other, found
    classes = [step.cls for step in path.walk()]
    v.report(
        "circular",
        classes,
        lambda title: _splat.circular(v, t, title, prev_entry, cls, lock, read, site, path, sync),
        site=site,
        until_handoff=tuple(c for c in classes if c.key.token),  # only locks that may_hand_off() are marked
        unless_gated=tuple(gates),
    )
    return False


def check_gate(cls: LockClass) -> bool:
    """A gate is the only lock of its class: a ``threading.Lock`` or ``RLock`` whose class never had
    two locks alive at once (:func:`pylockdep._classes.count_made`) and never proved a hand-off
    signal or a token.  Holding its class means holding the one lock of the class alive, which
    two threads cannot do at the same time."""
    key = cls.key
    return key.at_once == 1 and threading_lock(cls) and not key.handoff and not key.token


def check_gated(
    held_each: Sequence[frozenset[LockClass]],
    made: Sequence[tuple[LockClass, frozenset[LockClass] | None]] | None = None,
) -> frozenset[LockClass]:
    """A cycle of dependencies is a deadlock only if threads can stand on it at once: each waits
    for a lock of the cycle (the new dependency's thread for the lock it takes), holding the locks
    of the cycle from the one the thread before waits for up to it; each thread took them as the
    dependencies between them were made.  Two threads cannot both hold a gate (:func:`check_gate`):
    if on every way of sharing the cycle out among two threads or more, two of them would each
    hold a gate that guarded one of their dependencies every time it was made, the cycle is
    closed by gates, not a deadlock.  ``held_each`` is what each dependency of the cycle was made
    holding (:attr:`Edge.guards`), in the cycle's order: the new dependency first, then the path
    back from the lock it takes to the held one.  Returns the gates that close the cycle, empty
    when it may deadlock (or is too long to share out: more than :data:`GATED_LENGTH`
    dependencies).

    ``made``, in the same order, is each dependency's held class and the threading locks held
    once at least when it was made (:attr:`Edge.held_ever`, None where not known).  A thread's
    share of several dependencies is one it could take only if each was made, once at least,
    holding the threading locks of the share held before it (:func:`check_one_thread_made`):
    lockdep records a dependency from the last lock held only, so a path through two of them
    stands for one thread holding both locks only where one did."""
    gated = [frozenset(c for c in held if check_gate(c)) for held in held_each]
    count = len(gated)
    shared = frozenset(c for i, held in enumerate(gated) for c in held if any(c in other for other in gated[i + 1 :]))
    if not shared or count > GATED_LENGTH:
        return frozenset()
    # Each bit of ``waits`` starts a thread's share at that dependency, whose tail it holds: bit 1
    # always (the lock being taken, dependency 1's tail, is held by another thread than the new
    # dependency's); the share runs up to the next bit's, the head it waits for.
    for waits in range(2, 1 << count):
        points = [i for i in range(count) if waits >> i & 1]
        if not waits & 2 or len(points) < 2:
            continue
        held: set[LockClass] = set()
        for start, end in zip(points, [*points[1:], points[0] + count], strict=True):
            share = [made[i % count] for i in range(start, end)] if made is not None else []
            gates = frozenset().union(*(gated[i % count] for i in range(start, end)))
            if gates & held or not check_one_thread_made(share):
                break
            held |= gates
        else:
            return frozenset()
    return shared


def check_one_thread_made(share: Sequence[tuple[LockClass, frozenset[LockClass] | None]]) -> bool:
    """Whether one thread could stand on ``share``, consecutive dependencies of a cycle, each given
    as its held class and the threading locks ever held when it was made (None: not known): holding
    the held class of each while it took the next.  Each dependency after the first must have been
    made, once at least, holding every earlier held class that is a threading lock (the locks
    :attr:`Edge.held_ever` knows of)."""
    for later in range(1, len(share)):
        ever = share[later][1]
        if ever is not None and any(threading_lock(held) and held not in ever for held, _ in share[:later]):
            return False
    return True


#: The longest cycle :func:`check_gated` shares out among threads (2 ** length ways).
GATED_LENGTH = 10


def _guards_held(t: Task) -> frozenset[LockClass]:
    """The classes of the threading locks ``t`` holds: what a dependency it makes now is made under."""
    return frozenset(e[H_CLASS] for e in t.held if threading_lock(e[H_CLASS]))


def threading_lock(cls: LockClass) -> bool:
    """Whether ``cls`` is a class of ``threading.Lock``s or ``RLock``s, the locks that may be gates."""
    return cls.ltype is PY_LOCK or cls.ltype is PY_RLOCK


def check_token_held(entry: tuple) -> bool:
    """A ``threading.Lock`` (or ``asyncio.Lock``) still held after the function that took it
    returned may be a token that another thread (task) hands back (a readers-writers counter's
    resource lock: the first reader takes it, the last one, perhaps another thread, releases it),
    not a mutex.  Its class is marked
    so when a new dependency leaves such a held lock; a cycle through a marked class is held back
    until validation ends, and dropped if the class has by then been released by a thread other
    than its acquirer (:func:`check_handoff`).  Returns True for an entry of such a lock, not
    known as a hand-off, taken by code no longer running (for a suspended asyncio task, whose
    waits are checked on its behalf, code not in its chain of coroutines).
    """
    cls = entry[H_CLASS]
    return may_hand_off(cls.ltype) and not cls.key.handoff and _not_running([entry[H_CODE]])


def check_token_class(v: Validator, t: Task, cls: LockClass, held: list[HeldLock], lock: object = None) -> bool:
    """A class of ``threading.Lock``s (``asyncio.Lock``s) is marked a token when one of its
    instances in ``held`` (entries of the holder's stack), ``lock`` excepted, was taken by code no
    longer running (:func:`check_token_held`), as validating an acquisition of the class under
    it would mark it (:func:`check_instance_order`).  Returns True: decided."""
    if not (cls.key.token or cls.key.handoff) and may_hand_off(cls.ltype):
        # check_token_held() for each entry, with one look at the stack for all of them: a holder
        # of a thousand Locks of one class taken by one function does not look a thousand times.
        codes = []
        last = None
        for entry in held:
            if entry[H_CLASS] is cls and entry[H_LOCK] is not lock and (code := entry[H_CODE]) is not last:
                codes.append(code)
                last = code
        if codes and _not_running(codes):
            cls.key.token = True
    return True


def _not_running(codes: Iterable[CodeType]) -> bool:
    """Whether one of ``codes`` is not running in this thread (not in the stack standing in for
    it, for a suspended asyncio task).  The stack is walked from the innermost frame until all
    are found: the code that took a lock is most often the caller's.  By ids, since hashing a
    code object hashes its contents."""
    wanted = {id(code) for code in codes}
    standing = stack_stood_in()
    if standing is not None:
        return not wanted.issubset({id(site[0]) for site in standing})
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        wanted.discard(id(frame.f_code))
        if not wanted:
            return False
        frame = frame.f_back
    return True


def _invert_dir(mask: int) -> int:
    used_in = mask & USED_IN_ALL
    enabled = mask & ENABLED_ALL
    return (used_in << 2) | (enabled >> 2)


def _with_both_flavours(mask: int) -> int:
    return mask | (mask & READ_BITS) >> 1 | (mask & WRITE_BITS) << 1


def check_irq_usage(
    v: Validator, t: Task, prev_entry: tuple, cls: LockClass, lock: object, read: int, site: Site
) -> None:
    """A new edge must not lead from an irq-safe class (``prev`` or behind it) to an irq-unsafe one
    (``next`` or beyond): the irq could then interrupt the unsafe holder and wait for it."""
    prev = prev_entry[H_CLASS]
    graph = v.graph
    accumulated = 0

    def accumulate(step: PathStep) -> bool:
        nonlocal accumulated
        accumulated |= step.cls.usage & (WRITE_BITS if step.only_recursive else ~0)
        return False

    graph.find_path(prev, prev_entry[H_READ] != 0, accumulate, backwards=True)
    used_in = accumulated & USED_IN_ALL & ~PYTHON_STATE_BITS
    if not used_in:
        return
    forward = graph.find_path(cls, read == 2, _usage_match(_with_both_flavours(_invert_dir(used_in))))
    if forward is None:
        return
    backward_mask = _with_both_flavours(_invert_dir(forward.cls.usage & ENABLED_ALL))
    backward = graph.find_path(prev, prev_entry[H_READ] != 0, _usage_match(backward_mask), backwards=True)
    if backward is None:
        return
    pair = _exclusive_match(backward.cls.usage, forward.cls.usage)
    if pair is None:
        return
    safe_bit, unsafe_bit = pair
    state = usage_state(safe_bit) + ("-READ" if is_read_bit(safe_bit) else "")
    flags = t.irq_flags()
    # Every class involved: the safe one down to the held lock, then the new lock out to the unsafe one.
    involved = [step.cls for step in reversed(backward.walk())] + [step.cls for step in forward.walk()]
    v.report(
        "irq_unsafe_order",
        dict.fromkeys(involved),
        lambda title: _splat.irq_unsafe_order(
            v, t, title, prev_entry, cls, lock, site, state, backward, forward, safe_bit, unsafe_bit, flags
        ),
        site=site,
        dedupe=(state,),
        title={"state": state},
    )


def check_signal_order(v: Validator, t: Task, prev_entry: tuple, cls: LockClass, lock: object, site: Site) -> None:
    """A thread that signal handlers do not interrupt must not make a dependency that leads from a
    signal-safe lock (``IN-SIGNAL``, taken in a handler; an ``RLock`` too) to a signal-unsafe one
    (``SIGNAL-ON``, taken by the main thread outside any handler), directly or through other such
    threads' dependencies: the main thread, holding the unsafe lock, could run a handler that
    waits for the safe one, whose holder waits for the main thread.  This is
    :func:`check_irq_usage` for Python's SIGNAL state.  A dependency the main thread made is no
    link of such a wait: while its handler waits, the main thread waits for nothing else, and a
    lock it takes in the handler is signal-safe itself."""
    if not v.any_signal_safe:
        return
    graph = v.graph
    prev = prev_entry[H_CLASS]
    safe = graph.find_path(
        prev, False, _usage_match(USED_IN_SIGNAL | USED_IN_SIGNAL_READ), backwards=True, passable=_made_off_main
    )
    if safe is None:
        return
    unsafe = graph.find_path(cls, False, _usage_match(ENABLED_SIGNAL | ENABLED_SIGNAL_READ), passable=_made_off_main)
    if unsafe is None or unsafe.cls is safe.cls:  # one class both ways: inconsistent_lock_state
        return
    safe_bit = _bits_of(safe.cls.usage & (USED_IN_SIGNAL | USED_IN_SIGNAL_READ))[0]
    unsafe_bit = _bits_of(unsafe.cls.usage & (ENABLED_SIGNAL | ENABLED_SIGNAL_READ))[0]
    involved = [step.cls for step in reversed(safe.walk())] + [step.cls for step in unsafe.walk()]
    v.report(
        "irq_unsafe_order",
        dict.fromkeys(involved),
        lambda title: _splat.irq_unsafe_order(
            v, t, title, prev_entry, cls, lock, site, "SIGNAL", safe, unsafe, safe_bit, unsafe_bit, t.irq_flags()
        ),
        site=site,
        dedupe=("SIGNAL",),
        title={"state": "SIGNAL"},
    )


def _exclusive_match(safe_usage: int, unsafe_usage: int) -> tuple[int, int] | None:
    """The first (safe bit, unsafe bit) pair that clashes, trying the write form before the read."""
    for bit in _bits_of(safe_usage & USED_IN_ALL):
        base = bit & (USED_IN_HARDIRQ | USED_IN_SOFTIRQ | USED_IN_SIGNAL | USED_IN_GC) or bit >> 1
        enabled = base << 2
        if unsafe_usage & enabled:
            return bit, enabled
        if unsafe_usage & (enabled << 1):
            return bit, enabled << 1
    return None


def check_new_chain(
    v: Validator,
    t: Task,
    lock: object,
    cls: LockClass,
    read: int,
    trylock: bool,
    sync: bool,
    chain_key: int,
    site: Site,
) -> None:
    """Each chain of held locks is validated once: every rule of :func:`check_acquire` for an
    acquisition whose chain is new, which is then remembered; or, when the verdict depends on
    which instances of the lock's class are held (:func:`check_instance_order`), remembered with
    those instances and the lock's (:meth:`Validator.remember_instances`); or, for a class whose
    usages re-entrancy guards keep apart (:mod:`pylockdep._guards`), remembered with the line
    that takes the lock: another line may take it unguarded (:meth:`Validator.remember_site`)."""
    if chain_key in v.chains or v.site_known(chain_key, site):
        return
    verdict = check_acquire(v, t, lock, cls, read, trylock, sync, site)
    if verdict == CACHE_CHAIN:
        v.remember_chain(chain_key)
    elif verdict == CACHE_INSTANCES:
        v.remember_instances(t, chain_key, cls, lock)
    elif verdict == CACHE_SITE:
        v.remember_site(chain_key, site)


#: What the verdict of :func:`check_acquire` holds for: the chain of held classes, the chain with
#: these instances of the lock's class, the chain taken at this line, or this acquisition alone.
CACHE_CHAIN, CACHE_INSTANCES, CACHE_SITE, CACHE_NONE = 1, 2, 3, 0


def check_acquire(
    v: Validator, t: Task, lock: object, cls: LockClass, read: int, trylock: bool, sync: bool, site: Site
) -> int:
    """Every rule for an acquisition on a chain not validated before, in lockdep's order.

    Returns what the verdict holds for, so what may be cached of it: :data:`CACHE_CHAIN`, or
    :data:`CACHE_INSTANCES` when it depends on which instances are held, :data:`CACHE_SITE` when
    on the guards of the line that takes the lock, or :data:`CACHE_NONE` when it depends on more
    (where the locks were taken, what the collector frees).
    """
    cacheable = True
    per_instance = False
    ltype = cls.ltype
    rt = v.preempt_rt
    sleeping = not trylock and ltype.sleeps_under(rt)
    functions = ["__might_sleep", ltype.function(rt)]
    if sleeping and ltype.sleeps:
        check_might_sleep(v, t, site, functions, 0, cls)
    if not trylock:
        check_wait_context(v, t, cls, lock, site)
    for bit in acquire_usage(v, t, cls, read, trylock, sync):
        if bit in (USED_IN_GC, USED_IN_GC_READ) and check_finalizer_usage(v, t, cls, lock, read, bit, site):
            cacheable = False  # another lock of the class, on the same chain, may be no garbage
        else:
            mark_lock(v, t, cls, lock, read, bit, site)
    if not trylock and cls.validated and ltype.python and check_instance_order(v, t, cls, lock, site):
        per_instance = True
    if not trylock and cls.validated and check_deadlock(v, t, cls, lock, read, site) and not check_handoff(cls):
        # a chain head (no lock in this irq context) adds none
        cacheable = check_prevs_add(v, t, cls, lock, read, site, sync) and cacheable
    if sleeping and not ltype.sleeps:
        # PREEMPT_RT's spinlock_t: lockdep first, then a might_sleep that tolerates the RCU
        # nesting the held spinlock_t sections bring.
        check_might_sleep(v, t, site, functions, t.rcu_depth(rt), cls)
    if not cacheable:
        return CACHE_NONE
    return CACHE_INSTANCES if per_instance else CACHE_SITE if guards_per_site(v, cls) else CACHE_CHAIN


def check_unlock(v: Validator, t: Task, lock: object, name: str, site: Site) -> None:
    """Releasing a lock this thread does not hold is a bad unlock balance (the caller found it
    is not on the thread's held stack)."""
    key = getattr(lock, "_key", None)
    classes = (v.class_for(key),) if key is not None else ()
    v.report(
        "bad_unlock_balance",
        classes,
        lambda title: _splat.bad_unlock_balance(v, t, title, name, site),
        site=site,
        dedupe=(name, site),
    )


def check_srcu_unlock_index(v: Validator, t: Task, srcu: Any, idx: object, site: Site) -> None:
    """``srcu_read_unlock()`` must be given the index of a read side this thread holds (the caller
    found it is not): a bad unlock balance that changes nothing."""
    v.report(
        "bad_unlock_balance",
        (v.class_for(srcu._key),),
        lambda title: _splat.srcu_bad_index(v, t, title, srcu.name, idx, site),
        site=site,
        dedupe=(site,),
    )


def mark_held_locks(v: Validator, t: Task, write_bit: int, read_bit: int) -> None:
    """Interrupts are being enabled: every held validated lock is now held with them on
    (``write_bit`` for a writer, ``read_bit`` for a reader), each checked as :func:`mark_lock` does."""
    for entry in list(t.held):
        cls = entry[H_CLASS]
        if cls.validated:
            bit = read_bit if entry[H_READ] else write_bit
            mark_lock(v, t, cls, entry[H_LOCK], entry[H_READ], bit, held_site(entry))


def held_unmarked(t: Task, write_bit: int, read_bit: int) -> bool:
    """Whether :func:`mark_held_locks` has work to do: a held validated lock lacks its bit.  Usage
    bits are only ever set, so a class seen with its bit, without the graph lock, keeps it."""
    return any(
        entry[H_CLASS].validated and not entry[H_CLASS].usage & (read_bit if entry[H_READ] else write_bit)
        for entry in t.held
    )


def check_context_call(v: Validator, t: Task, call: str, detail: str, site: Site) -> None:
    """A context call must undo something done before (``preempt_enable()`` after
    ``preempt_disable()``, ...) and be allowed where it is made (no ``local_irq_enable()`` in a hard
    interrupt handler).  :mod:`pylockdep._context` found ``call`` was not; ``detail`` says why.
    Such a call is reported as a context imbalance and changes nothing."""
    v.report(
        "context_imbalance",
        (),
        lambda title: _splat.context_imbalance(v, t, title, detail, site),
        site=site,
        dedupe=(call, site),
        title={"call": call},
    )


def check_assert_held(v: Validator, t: Task, lock: Any, site: Site) -> None:
    """``lockdep_assert_held(lock)``: the calling thread must hold ``lock``."""
    if any(entry[H_LOCK] is lock for entry in t.held):
        return
    cls = v.class_for(lock._key)
    v.report(
        "assert_held",
        (cls,),
        lambda title: _splat.assert_held(v, t, title, cls, lock._key.name, site, "is running"),
        site=site,
        dedupe=(site,),
    )


def check_guarded_access(
    v: Validator, t: Task, qualname: str, write: bool, lock: Any, writer: Any, has_writer: bool, site: Site
) -> None:
    """Guarded data may be read only under its protection (or its writer lock, when it has one)
    and written only under its writer lock (or its protection, when it has none).

    Reads are allowed under the read side of an ``RWLock``/``RWSemaphore``, writes need the write
    side; SRCU and RCU count their read sides.  ``lock`` and ``writer`` are the protection and
    writer lock of this instance (None: one of CPython's own locks, which cannot be checked).
    """
    if write:
        needed = writer if has_writer else lock
        if needed is not None and not t.holds(needed, exclusive=True):
            _guarded_report(v, t, qualname, write, has_writer, lock if lock is not None else needed, [needed], site)
    elif lock is not None and not t.holds(lock, exclusive=False):
        if not has_writer:
            _guarded_report(v, t, qualname, write, has_writer, lock, [lock], site)
        elif writer is not None and not t.holds(writer, exclusive=False):
            _guarded_report(v, t, qualname, write, has_writer, lock, [lock, writer], site)


def _guarded_report(
    v: Validator, t: Task, qualname: str, write: bool, has_writer: bool, lock: Any, needed: list[Any], site: Site
) -> None:
    """Report an access to guarded data without ``needed``: suspicious RCU usage when ``lock`` is an
    SRCU or RCU, a failed assert-held otherwise."""
    classes = tuple(v.class_for(candidate._key) for candidate in needed)
    verb = "writing" if write else "reading"
    if getattr(lock, "_ltype", None) in READ_SIDE_ONLY:
        info = [f"{verb} {qualname} needs " + " or ".join(_describe_protection(c) for c in needed)]
        if write and not has_writer:
            info[0] += " (declare writer= for the lock its updaters hold)"
        report_suspicious_rcu(v, t, site, DEREFERENCE_PROTECTED if write else DEREFERENCE_CHECK, classes, info)
        return
    what = f"{'writes' if write else 'reads'} {qualname}"
    if write and t.holds(needed[0], exclusive=False):
        what += " (write side needed)"
    cls, name = classes[0], needed[0].name
    v.report(
        "assert_held",
        classes,
        lambda title: _splat.assert_held(v, t, title, cls, name, site, what),
        site=site,
        dedupe=(site, qualname, write),
    )


def _describe_protection(lock: Any) -> str:
    """What holding ``lock`` means, as a guarded-data report says it."""
    ltype = getattr(lock, "_ltype", None)
    if ltype is RCU:
        return "an RCU read side"
    if ltype is RCU_SCHED:
        return "an RCU-sched read side"
    if ltype is SRCU:
        return f"a read side of {lock.name}"
    return f"{lock.name} held"


def check_rcu_dereference(v: Validator, t: Task, reader: Any, site: Site) -> None:
    """A dereference of RCU-protected data (``rcu_dereference()``, ``srcu_dereference()``, ...)
    must be inside a read side of ``reader`` (``*_dereference_check()``)."""
    if not reader.read_lock_held():
        report_suspicious_rcu(v, t, site, DEREFERENCE_CHECK, (v.class_for(reader._key),))


def check_synchronize_srcu(v: Validator, t: Task, cls: LockClass, rcu_cls: LockClass, site: Site) -> None:
    """``synchronize_srcu()`` (of SRCU class ``cls``) may not be called inside an RCU read side
    (class ``rcu_cls``; on PREEMPT_RT also under a ``spinlock_t``), and it may sleep
    (:func:`check_might_sleep`)."""
    if t.rcu_depth(v.preempt_rt):
        message = "Illegal synchronize_srcu() in same-type SRCU (or in RCU) read-side critical section"
        report_suspicious_rcu(v, t, site, message, (cls, rcu_cls))
    check_might_sleep(v, t, site, ["__might_sleep", "synchronize_srcu"], 0, cls)


def report_suspicious_rcu(
    v: Validator, t: Task, site: Site, message: str, classes: Iterable[LockClass], info: Iterable[str] = ()
) -> None:
    """Report suspicious RCU usage at ``site``, once per call site and message, as the kernel warns."""
    info = list(info)
    v.report(
        "suspicious_rcu_usage",
        classes,
        lambda title: _splat.suspicious_rcu(v, t, title, site, message, info),
        site=site,
        dedupe=(site, message),
    )


def check_held_at_exit(v: Validator, t: Task, each_holder: bool = True) -> None:
    """A thread or an asyncio task must not end holding a lock with an owner (a ``threading.Lock``,
    which any thread may release, is not one): what it still holds is reported, as lockdep does at
    task exit.  Each thread is reported; asyncio tasks, which come and go by the thousand, once per
    set of classes (``each_holder`` false).  A ``threading.RLock`` that nothing outside pylockdep
    refers to any more is not judged: dropping a held lock is legal Python, and nobody can wait
    for it.  Neither is an ``asyncio.Lock`` that may be passed on (:func:`check_passed_on`): it
    is judged when validation ends."""
    entries = [entry for entry in t.held if entry[H_CLASS].ltype.owned and not check_passed_on(entry[H_CLASS])]
    rlocks = [entry[H_LOCK] for entry in entries if entry[H_CLASS].ltype is PY_RLOCK]
    if rlocks:
        referenced = _referenced_outside(rlocks)
        entries = [e for e in entries if e[H_CLASS].ltype is not PY_RLOCK or id(e[H_LOCK]) in referenced]
    owned = tuple(entry[H_CLASS] for entry in entries)
    if owned:
        v.report(
            "lock_held_at_exit",
            owned,
            lambda title: _splat.locks_held_at_exit(v, t, title),
            dedupe=(id(t),) if each_holder else (),
            title={"comm": t.comm},
        )


def check_passed_on(cls: LockClass) -> bool:
    """A lock that another thread or task may release after its taker ended is judged when
    validation ends (:func:`check_leaked_locks`), not at its taker's exit: a ``threading.Lock`` or
    an ``asyncio.Lock`` (CPython gives neither an owner: CPython's own asyncio tests end a task
    holding a lock that the test then releases), or a lock of a class known as a hand-off or a
    token.  Returns True for such a class."""
    return is_plain_lock(cls.ltype) or cls.ltype is ASYNC_LOCK or cls.key.handoff or cls.key.token


def check_leaked_locks(v: Validator, t: Task) -> None:
    """A lock passed on (:func:`check_passed_on`) still held when validation ends, whose acquirer
    has ended and that no thread or task released since, is leaked: reported as held at its
    acquirer's exit.  A thread still
    running has not exited, so what it holds is not judged, and neither is a Lock that nothing
    but pylockdep refers to any more: dropping a locked Lock is legal Python, and nobody can wait
    for it."""
    for ended in v.ended_holding:
        leaked = [
            e for e in ended.held if check_passed_on(e[H_CLASS]) and e[H_LOCK]._owner is ended and e[H_LOCK]._is_held(0)
        ]
        if leaked:
            referenced = _referenced_outside([e[H_LOCK] for e in leaked])
            leaked = [e for e in leaked if id(e[H_LOCK]) in referenced]
        if leaked:
            ended.held = leaked
            v.report(
                "lock_held_at_exit",
                tuple(e[H_CLASS] for e in leaked),
                lambda title, ended=ended: _splat.locks_held_at_exit(v, ended, title),
                dedupe=("leaked",) if ended.by_the_thousand else (id(ended), "leaked"),
                title={"comm": ended.comm},
            )
    v.ended_holding.clear()


def _referenced_outside(locks: list[Any]) -> set[int]:
    """The ids of those of ``locks`` that something other than pylockdep refers to: an object the
    garbage collector tracks other than a held-lock entry (one scan of the heap for all of them),
    or a local variable of a function running outside pylockdep, in any thread."""
    ids = {id(lock) for lock in locks}
    found: set[int] = set()
    args = tuple(locks)  # passed as it is: the call's own argument tuple is found as a referrer
    for referrer in gc.get_referrers(*args):
        if is_held_entry(referrer) or referrer is locks or referrer is args:
            continue
        found.update(id(obj) for obj in gc.get_referents(referrer) if id(obj) in ids)
    frame: FrameType | None
    for frame in current_frames().values():
        while frame is not None:
            if not is_internal(frame.f_code.co_filename):
                found.update(id(value) for value in frame.f_locals.values() if id(value) in ids)
            frame = frame.f_back
    return found


def blocks_thread(ltype: LockType) -> bool:
    """Whether waiting for a lock of this type blocks the thread (every lock but asyncio's own, and
    the read sides of RCU and SRCU, which never wait)."""
    return not ltype.suspends and ltype.check and ltype.inner != WAIT_INV


def check_scheduling_while_atomic(v: Validator, t: Task, suspended: Stack) -> None:
    """An asyncio task must not suspend at an ``await`` while holding a lock that blocks the thread.

    The suspension is the kernel's ``schedule()``: another task of the same loop that takes the
    lock blocks the loop's only thread, and the holder can never run again to release it.
    ``suspended`` is where the task waits, innermost first.  The count in the title stands for the
    kernel's preempt_count: one per such lock.
    """
    blocking = [entry for entry in t.held if blocks_thread(entry[H_CLASS].ltype)]
    if not blocking:
        return
    v.report(
        "scheduling_while_atomic",
        (entry[H_CLASS] for entry in blocking),
        lambda title: _splat.scheduling_while_atomic(v, t, title, blocking, suspended),
        site=held_site(blocking[0]),
        title={"comm": t.comm, "count": t.preempt + len(blocking)},
    )


def check_wait_in_own_loop(v: Validator, t: Task, what: str, site: Site, timeout: float | None = None) -> None:
    """The thread that runs an event loop must not block waiting for ``what``, which only that
    loop can complete (the caller found it cannot be done yet): the wait would never end, or, with
    a ``timeout``, end only by timing out, the loop stalled all along."""
    v.report(
        "loop_blocked",
        (),
        lambda title: _splat.loop_blocked(v, t, title, what, site, timeout),
        site=site,
        dedupe=(site,),
        title={"comm": t.comm, "how": "for ever" if timeout is None else "until its wait times out"},
    )


def check_hung_task(v: Validator, t: Task, stuck: list[tuple[str, Any]], site: Site) -> None:
    """A wait for threads (a join, a future, a queue's join) that can never end is a hung task:
    each thread it stands behind waits, as it does, for another of them or for a wake-up that no
    thread is left to give (a worker idle in ``Queue.get()`` that nobody feeds), and no other
    thread may still act.  It is reported, then refused with DeadlockError, as the kernel's
    hung-task detector reports a task blocked too long.  (A wait for a lock that can never end is
    the lock's: ``circular`` or ``recursive``.)  ``stuck`` names each thread and what it waits
    for, ``t``'s wait at ``site`` first."""
    classes = [v.class_for(what._key) for _, what in stuck if getattr(what, "_key", None) is not None]
    v.report(
        "hung_task",
        classes,
        lambda title: _splat.hung_task(v, t, title, stuck, site),
        site=site,
        dedupe=() if classes else (site,),
        title={"comm": t.comm},
    )


def check_lock_depth(v: Validator, t: Task) -> None:
    """A thread must hold fewer than ``max_lock_depth`` locks at once (the kernel's MAX_LOCK_DEPTH):
    at that depth validation stops, with a report.

    Only a limit the user set applies, to every lock type alike: by default there is none
    (``API.md``: no fixed limit, held-lock depth included).  The kernel's 48 bounds what
    replaying the locks above a released one costs; here holding a thousand locks is a legal
    Python program (``concurrent.futures.wait()`` on a thousand futures), not a bug to report, so
    the cost is bounded instead: :func:`pylockdep._held.remove` validates only the chains a
    release could make new, and moves runs of one class without touching their entries."""
    limit = v.max_lock_depth
    if len(t.held) >= limit:
        check_limit(v, t, "BUG: MAX_LOCK_DEPTH too low!", [f"depth: {len(t.held)}  max: {limit}!"])


def check_limit(v: Validator, t: Task, message: str, extra: list[str]) -> None:
    """A capacity limit (``message`` says which) stops validation for good rather than let it give a
    wrong verdict; the first limit met is reported."""
    if v.off:
        return
    v.report(
        "limit_exceeded",
        (),
        lambda title: _splat.limit_reached(v, t, title, extra),
        dedupe=(message,),
        title={"message": message},
    )
    v.off = True
