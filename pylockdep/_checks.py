"""The rules, one function each, in the order an acquisition meets them.

Each check decides whether a rule is broken and, if so, hands the validator a splat built by
:mod:`pylockdep._splat`.  They run on the rare path only (a chain of held locks not seen before),
under the validator's graph lock, and never call user code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _splat
from ._classes import (
    ENABLED_HARDIRQ,
    ENABLED_HARDIRQ_READ,
    ENABLED_SOFTIRQ,
    ENABLED_SOFTIRQ_READ,
    USAGE_NAMES,
    USED,
    USED_IN_HARDIRQ,
    USED_IN_HARDIRQ_READ,
    USED_IN_SOFTIRQ,
    USED_IN_SOFTIRQ_READ,
    USED_READ,
    LockClass,
    clashing_bits,
    is_read_bit,
    is_used_in,
    usage_state,
)
from ._frames import Site, capture_stack
from ._graph import PathStep, dep_kind
from ._held import H_CLASS, H_IRQ, H_READ, H_SPIN, H_TRYLOCK, held_site
from ._locktypes import WAIT_CONFIG, WAIT_INV, WAIT_MAX, WAIT_SPIN, effective_wait
from ._task import Task

if TYPE_CHECKING:
    from ._validator import Validator

READ_BITS = USED_IN_HARDIRQ_READ | ENABLED_HARDIRQ_READ | USED_IN_SOFTIRQ_READ | ENABLED_SOFTIRQ_READ
WRITE_BITS = USED_IN_HARDIRQ | ENABLED_HARDIRQ | USED_IN_SOFTIRQ | ENABLED_SOFTIRQ
USED_IN_ALL = USED_IN_HARDIRQ | USED_IN_HARDIRQ_READ | USED_IN_SOFTIRQ | USED_IN_SOFTIRQ_READ
ENABLED_ALL = ENABLED_HARDIRQ | ENABLED_HARDIRQ_READ | ENABLED_SOFTIRQ | ENABLED_SOFTIRQ_READ


# Units of the kernel's preempt_count(), as might_sleep() prints it.
PREEMPT_OFFSET = 0x1
SOFTIRQ_OFFSET = 0x100  # serving a softirq
SOFTIRQ_DISABLE_OFFSET = 0x200  # per local_bh_disable()
HARDIRQ_OFFSET = 0x10000  # per hard interrupt level


def preempt_count(v: Validator, t: Task) -> int:
    """The kernel's ``preempt_count()``: preemption, spinning locks, softirq and hardirq levels.

    On PREEMPT_RT softirqs and bottom-half sections run in preemptible threads and do not count,
    and neither does a ``spinlock_t`` (``t.spins`` only counts locks that disable preemption).
    """
    count = (t.preempt + t.spins) * PREEMPT_OFFSET + t.hardirq * HARDIRQ_OFFSET
    if not v.preempt_rt:
        count += t.softirq * SOFTIRQ_OFFSET + t.bh * SOFTIRQ_DISABLE_OFFSET
    return count


def rcu_depth(v: Validator, t: Task) -> int:
    """RCU read-side nesting (``rcu_preempt_depth()``).

    On PREEMPT_RT taking a ``spinlock_t``/``rwlock_t`` enters an RCU read side, and so does the
    first ``local_bh_disable()`` (which softirq processing also goes through).
    """
    depth = t.rcu
    if v.preempt_rt:
        depth += sum(1 for entry in t.held if entry[H_CLASS].ltype.sleeps_on_rt)
        depth += bool(t.bh or t.softirq)
    return depth


def check_might_sleep(
    v: Validator, t: Task, site: Site, functions: list[str], rcu_allowed: int, lock_cls: LockClass | None = None
) -> None:
    """A function that may sleep must be called preemptible, with interrupts on and no RCU reader.

    This is the scheduler's ``__might_sleep()``: it runs for every sleeping lock, for
    ``spinlock_t`` on PREEMPT_RT (allowing the RCU nesting such locks bring: ``rcu_allowed``), for
    SRCU's synchronize, and for explicit ``might_sleep()`` calls.
    """
    count = preempt_count(v, t)
    depth = rcu_depth(v, t)
    if count == 0 and not t.irqs_off and depth == rcu_allowed:
        return
    held = tuple(entry[H_CLASS] for entry in t.held)
    classes = held + ((lock_cls,) if lock_cls is not None else ())
    atomic_site = atomic_section_site(v, t) if count else None
    lines = _splat.sleep_in_atomic(v, t, site, count, depth, rcu_allowed, atomic_site, functions)
    # One report per set of classes; a bare might_sleep() (no lock) is told apart by its call site.
    v.report("sleep_in_atomic", lines, classes, site=site, dedupe=() if classes else (site,))
    v.taint = "Tainted: G        W"


def nonlock_atomic(v: Validator, t: Task) -> bool:
    """Whether something other than a held spinning lock makes the thread atomic right now."""
    return bool(t.preempt or t.hardirq or (not v.preempt_rt and (t.softirq or t.bh)))


def atomic_section_site(v: Validator, t: Task) -> Site | None:
    """Where the current atomic section began (``Preemption disabled at:``).

    That is the earlier of the first held lock that disabled preemption and the call
    (``preempt_disable()``, ``local_bh_disable()``, an interrupt handler) that made the count
    non-zero while no such lock was counted.
    """
    first_spin = next((i for i, e in enumerate(t.held) if e[H_SPIN]), None)
    nonlock = nonlock_atomic(v, t)
    if nonlock and t.atomic_site is not None and (first_spin is None or t.atomic_depth <= first_spin):
        return t.atomic_site
    if first_spin is not None:
        return held_site(t.held[first_spin])
    return t.atomic_site if nonlock else None


def task_wait_context(t: Task) -> int:
    """The wait type the task's context allows: SPIN in a hard interrupt, CONFIG in a threaded
    handler or a softirq, anything (MAX) in process context."""
    if t.hardirq:
        return WAIT_CONFIG if t.hardirq_threaded else WAIT_SPIN
    if t.hardirq_threaded or t.softirq:
        return WAIT_CONFIG
    return WAIT_MAX


def check_wait_context(v: Validator, t: Task, cls: LockClass, lock: object, site: Site) -> None:
    """A lock may not wait longer than its context and every lock held in it allow.

    The lock's outer wait type must not exceed the smallest inner wait type of the locks held in
    the current irq context (or of the context itself): no mutex inside a spinlock, and with
    raw-lock nesting checks no ``spinlock_t`` inside a ``raw_spinlock_t``.
    """
    if cls.ltype.inner == WAIT_INV:
        return
    nesting = v.nesting
    context = task_wait_context(t)
    allowed = effective_wait(context, nesting)
    for entry in _irq_segment(t):
        inner = entry[H_CLASS].ltype.inner
        if inner != WAIT_INV:
            allowed = min(allowed, effective_wait(inner, nesting))
    if effective_wait(cls.ltype.outer, nesting) <= allowed:
        return
    lines = _splat.invalid_wait_context(v, t, cls, lock, site, effective_wait(context, nesting))
    held = tuple(e[H_CLASS] for e in _irq_segment(t))
    v.report("invalid_wait_context", lines, held + (cls,), site=site)


def _irq_segment(t: Task) -> list[tuple]:
    """The held locks taken in the task's current irq context (lockdep's irq segment)."""
    held = t.held
    i = len(held)
    while i and held[i - 1][H_IRQ] == t.irq:
        i -= 1
    return held[i:]


def irq_flags(t: Task) -> str:
    """``[HC0[0]:SC0[0]:HE1:SE1]``: in a hardirq / softirq (with the kernel's counts), hard / soft irqs enabled.

    The softirq count is that of ``softirq_count()``: one per softirq being served, two per
    ``local_bh_disable()``.  Softirqs being enabled does not depend on hard irqs.
    """
    he = int(not t.irqs_off)
    se = int(not (t.bh or t.softirq))
    return f"[HC{int(t.hardirq > 0)}[{t.hardirq}]:SC{int(t.softirq > 0)}[{t.softirq + 2 * t.bh}]:HE{he}:SE{se}]"


def acquire_usage(v: Validator, t: Task, read: int, trylock: bool, sync: bool, checked: bool) -> list[int]:
    """The usage bits an acquisition sets, in the kernel's order (irq-safe first, then unsafe)."""
    bits = []
    if checked and not trylock:
        if t.hardirq:
            bits.append(USED_IN_HARDIRQ_READ if read else USED_IN_HARDIRQ)
        if t.softirq and not v.preempt_rt:
            bits.append(USED_IN_SOFTIRQ_READ if read else USED_IN_SOFTIRQ)
    if checked and not t.irqs_off and not sync:
        bits.append(ENABLED_HARDIRQ_READ if read else ENABLED_HARDIRQ)
        if not (t.bh or t.softirq):
            bits.append(ENABLED_SOFTIRQ_READ if read else ENABLED_SOFTIRQ)
    bits.append(USED_READ if read else USED)
    return bits


def mark_lock(v: Validator, t: Task, cls: LockClass, lock: object, read: int, bit: int, site: Site) -> None:
    """Set a usage bit on a class and check that it agrees with the class and its dependencies.

    Irq-safe and irq-unsafe use of one class is an inconsistent lock state.  A class becoming
    irq-safe must not reach an irq-unsafe class through the graph, and one becoming irq-unsafe
    must not be reached from an irq-safe one: an interrupt could invert the order.
    """
    if cls.usage & bit:
        return
    clash = clashing_bits(bit) if bit < USED else 0
    cls.usage |= bit
    cls.usage_stacks[bit] = capture_stack()
    if not clash:
        return
    if is_used_in(bit):
        # Only once some class is irq-safe can an edge or a new irq-unsafe class be wrong.
        v.any_irq_usage = True
        v.graph.mark_irq_safe(cls, bit)
    for old in _bits_of(cls.usage & clash):
        lines = _splat.inconsistent(
            v, t, cls, lock, site, USAGE_NAMES[old], USAGE_NAMES[bit], cls.usage_stacks.get(old, ()), irq_flags(t)
        )
        v.report("inconsistent_lock_state", lines, (cls,), dedupe=(old, bit))
        return
    if v.any_irq_usage:
        check_usage_inversion(v, t, cls, lock, read, bit, site)


def check_usage_inversion(v: Validator, t: Task, cls: LockClass, lock: object, read: int, bit: int, site: Site) -> None:
    """A new irq-safe bit must not reach irq-unsafe classes, nor a new unsafe bit be reached by safe ones."""
    base = 1 << ((bit.bit_length() - 1) // 4 * 4)  # USED_IN_<state>
    forwards = is_used_in(bit)
    want = (base << 2 | base << 3) if forwards else (base | base << 1)
    if forwards:
        path = v.graph.find_path(cls, read == 2, _usage_match(want))
    else:
        path = v.graph.find_path(cls, read != 0, _usage_match(want), backwards=True)
    if path is None or path.cls is cls:
        return
    write_form = base << 2 if forwards else base
    state = usage_state(bit) + ("" if path.cls.usage & write_form else "-READ")
    lines = _splat.irq_inversion(v, t, cls, lock, site, state, forwards, path)
    v.report("irq_inversion", lines, (step.cls for step in path.walk()), dedupe=(forwards,))


def _usage_match(mask: int):
    def match(step: PathStep) -> bool:
        usage = step.cls.usage & (WRITE_BITS if step.only_recursive else ~0)
        return bool(usage & mask)

    return match


def _bits_of(mask: int) -> list[int]:
    return [1 << i for i in range(mask.bit_length()) if mask >> i & 1]


def check_deadlock(v: Validator, t: Task, cls: LockClass, lock: object, read: int, site: Site) -> bool:
    """Taking a class that this thread already holds is recursive locking, unless both are readers
    and the new one is recursive.  Returns False when it reported."""
    for entry in t.held:
        if entry[H_CLASS] is not cls:
            continue
        if read == 2 and entry[H_READ]:
            continue
        lines = _splat.recursive(v, t, entry, cls, lock, site)
        v.report("recursive", lines, (cls,), site=site)
        return False
    return True


def check_prevs_add(v: Validator, t: Task, cls: LockClass, lock: object, read: int, site: Site, sync: bool) -> None:
    """Add an edge from each held lock that the new one now depends on.

    Walking down the held stack within the current irq context, every validated lock gets an
    edge to the new one; the walk stops after the first lock that was not taken by a trylock,
    since the locks below it already lead to it.
    """
    for entry in reversed(t.held):
        if entry[H_IRQ] != t.irq:
            break
        if not entry[H_CLASS].validated:
            continue
        check_prev_add(v, t, entry, cls, lock, read, site, sync)
        if not entry[H_TRYLOCK]:
            break


def check_prev_add(
    v: Validator, t: Task, prev_entry: tuple, cls: LockClass, lock: object, read: int, site: Site, sync: bool
) -> None:
    """Record ``prev -> next`` after proving it closes no strong cycle and joins no irq-safe lock
    to an irq-unsafe one."""
    prev = prev_entry[H_CLASS]
    kind = dep_kind(prev_entry[H_READ], read)
    edge = prev.after.get(cls)
    if edge is not None and edge.types & kind:
        return
    graph = v.graph
    path = None
    if prev is not cls and graph.may_reach(cls, prev):
        prev_read = prev_entry[H_READ]

        def conflict(step: PathStep) -> bool:
            return step.cls is prev and (prev_read == 0 or not step.only_recursive)

        path = graph.find_path(cls, read == 2, conflict)
        if path is not None:
            lines = _splat.circular(v, t, prev_entry, cls, lock, read, site, path, sync)
            classes = tuple(step.cls for step in path.walk())
            v.report("circular", lines, classes, site=site)
    if graph.irq_safe_reaching(prev):  # else no irq-safe class stands behind prev
        check_irq_usage(v, t, prev_entry, cls, lock, read, site)
    if edge is not None:
        edge.types |= kind
    else:
        graph.add_edge(prev, cls, kind, capture_stack(), t.comm, v.origin, closes_cycle=path is not None)


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
    used_in = accumulated & USED_IN_ALL
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
    lines = _splat.irq_unsafe_order(
        v, t, prev_entry, cls, lock, site, state, backward, forward, safe_bit, unsafe_bit, irq_flags(t)
    )
    # Every class involved: the safe one down to the held lock, then the new lock out to the unsafe one.
    involved = [step.cls for step in reversed(backward.walk())] + [step.cls for step in forward.walk()]
    v.report("irq_unsafe_order", lines, dict.fromkeys(involved), site=site, dedupe=(state,))


def _exclusive_match(safe_usage: int, unsafe_usage: int) -> tuple[int, int] | None:
    """The first (safe bit, unsafe bit) pair that clashes, trying the write form before the read."""
    for bit in _bits_of(safe_usage & USED_IN_ALL):
        base = bit & (USED_IN_HARDIRQ | USED_IN_SOFTIRQ) or bit >> 1
        enabled = base << 2
        if unsafe_usage & enabled:
            return bit, enabled
        if unsafe_usage & (enabled << 1):
            return bit, enabled << 1
    return None


def check_acquire(
    v: Validator, t: Task, lock: object, cls: LockClass, read: int, trylock: bool, sync: bool, site: Site
) -> None:
    """Every rule for an acquisition on a chain not validated before, in lockdep's order."""
    ltype = cls.ltype
    rt = v.preempt_rt
    sleeping = not trylock and ltype.sleeps_under(rt)
    functions = ["__might_sleep", ltype.function(rt)]
    if sleeping and ltype.sleeps:
        check_might_sleep(v, t, site, functions, 0, cls)
    if not trylock:
        check_wait_context(v, t, cls, lock, site)
    for bit in acquire_usage(v, t, read, trylock, sync, cls.validated):
        mark_lock(v, t, cls, lock, read, bit, site)
    if not trylock and cls.validated and check_deadlock(v, t, cls, lock, read, site):
        check_prevs_add(v, t, cls, lock, read, site, sync)  # a chain head (no lock in this irq context) adds none
    if sleeping and not ltype.sleeps:
        # PREEMPT_RT's spinlock_t: lockdep first, then a might_sleep that tolerates the RCU
        # nesting the held spinlock_t sections bring.
        check_might_sleep(v, t, site, functions, rcu_depth(v, t), cls)


def check_unlock(v: Validator, t: Task, lock: object, name: str, site: Site) -> None:
    """Releasing a lock this thread does not hold is a bad unlock balance."""
    lines = _splat.bad_unlock_balance(v, t, name, site)
    key = getattr(lock, "_key", None)
    classes = (v.class_for(key),) if key is not None else ()
    v.report("bad_unlock_balance", lines, classes, site=site, dedupe=(name, site))
