"""What the slow path keeps about a holder's stack so as not to scan it on every new chain (the wait
types of its irq segment, the instances of a class it holds, its spin count) is what a scan of the
stack finds, whatever the fast paths, releases from the middle, trylocks and unchecked regions did
to the stack since it was kept; and the order it keeps of the instances of a class, so as not to
search for a cycle on every new edge, finds every cycle a search does."""

from __future__ import annotations

import contextlib
import gc
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pylockdep
from pylockdep import _held, _instances
from pylockdep._held import H_CLASS, H_LOCK, H_SPIN
from pylockdep._instances import InstanceOrder

pytestmark = pytest.mark.timeout(120)


def scanned_instances(t, cls, lock):
    """The instances of ``cls`` that ``t`` holds, ``lock`` excepted, the most recent first."""
    return [e[H_LOCK] for e in reversed(t.held) if e[H_CLASS] is cls and e[H_LOCK] is not lock]


def cell_locks(cell):
    found = []
    while cell is not None:
        found.append(cell[0].ref())
        cell = cell[1]
    return found


# A step: (action, lock index, probe); "take" and "try" take a lock not held (as subclass 0, or 1
# for "nested"), "release" releases the held one at that position, "off" enters or leaves
# lockdep_off; then the probe (a lock and a subclass) is asked about.
steps = st.lists(
    st.tuples(
        st.sampled_from(["take", "take", "take", "try", "nested", "release", "release", "off"]),
        st.integers(0, 5),
        st.integers(0, 11),
    ),
    max_size=40,
)


@pytest.mark.parametrize("lazy_run", [_held.LAZY_RUN, 2], ids=["runs-rewritten", "runs-relabelled-lazily"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
@example([("nested", 0, 1), ("take", 1, 1), ("take", 2, 0)])  # the lock asked about held below, as another class
# A lock released and taken again in its place, on the same chain key, as another subclass: the
# cell found for it before names instances of the other class.
@example([("take", 1, 0), ("take", 2, 0), ("release", 0, 0), ("take", 1, 0), ("release", 1, 1), ("nested", 1, 1)])
def test_the_instances_held_by_a_holder_are_those_a_scan_of_its_stack_finds(lazy_run, steps):
    """After any sequence of takes, trylocks, nested takes, releases from anywhere and unchecked
    regions, the cell of held instances names what a scan of the stack finds (the lock asked about
    excepted), and a lock said not to be held is not held."""
    with (
        pytest.MonkeyPatch.context() as patch,
        pylockdep.validate(raise_on_report=False) as v,
        pylockdep.instrument_threading(),
        contextlib.ExitStack() as unchecked,
    ):
        patch.setattr(_held, "LAZY_RUN", lazy_run)
        locks = [threading.RLock() for _ in range(4)] + [threading.RLock()]  # two classes: one line each
        locks.append(threading.RLock())
        held: list[tuple[threading.RLock, object]] = []  # each lock taken, and what releases it
        off = 0
        for action, n, probe in steps:
            lock = locks[n]
            taken = [h for h, _ in held]
            if action in ("take", "try") and lock not in taken:
                if lock.acquire(blocking=action == "take"):
                    held.append((lock, lock.release))
            elif action == "nested" and lock not in taken:
                section = pylockdep.nested(lock, 1)
                section.__enter__()
                held.append((lock, lambda section=section: section.__exit__(None, None, None)))
            elif action == "release" and held:
                held.pop(n % len(held))[1]()
            elif action == "off":
                if off and n % 2:
                    unchecked.close()
                    off = 0
                else:
                    unchecked.enter_context(pylockdep.lockdep_off())
                    off += 1
            # One question a step, as a check asks it: what is kept serves the next one.
            t = v.task()
            asked = locks[probe // 2]
            cls = v.class_for(asked._key, probe % 2)
            cell, may_hold = v.instances.held_by(t, cls, asked)
            assert cell_locks(cell) == scanned_instances(t, cls, asked)
            assert may_hold or all(e[H_LOCK] is not asked for e in t.held)
        unchecked.close()
        for _, release in reversed(held):
            release()


def scanned_waits(t):
    return frozenset(e[H_CLASS].ltype.inner for e in t.irq_segment())


# A step: take a lock of one of three kernel types (by index, its class that of its place in a
# list of each type: new chains as the stack grows), release the top one, or enter or leave an
# interrupt handler.
kernel_steps = st.lists(
    st.tuples(st.sampled_from(["raw", "spin", "mutex", "release", "hardirq", "softirq", "leave"]), st.integers(0, 3)),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_steps)
def test_the_wait_types_of_the_irq_segment_are_those_a_scan_finds(steps):
    """After any sequence of takes and releases in and out of interrupt handlers, the wait types
    kept for the irq segment are those of the locks a scan finds taken in the current context."""
    with pylockdep.validate(raise_on_report=False) as v:
        made = {
            "raw": [pylockdep.RawSpinLock(f"raw{i}", key=("facts", "raw", i)) for i in range(4)],
            "spin": [pylockdep.SpinLock(f"spin{i}", key=("facts", "spin", i)) for i in range(4)],
            "mutex": [pylockdep.Mutex(f"mutex{i}", key=("facts", "mutex", i)) for i in range(4)],
        }
        levels: list[tuple[object, list[object]]] = [(None, [])]  # each handler and the locks it took
        for action, n in steps:
            if action in made:
                lock = made[action][n]
                if not any(lock in taken for _, taken in levels):
                    lock.acquire()
                    levels[-1][1].append(lock)
            elif action == "release" and levels[-1][1]:
                levels[-1][1].pop().release()
            elif action in ("hardirq", "softirq") and len(levels) < 3:
                handler = getattr(pylockdep, action)()
                handler.__enter__()
                levels.append((handler, []))
            elif action == "leave" and len(levels) > 1:
                handler, taken = levels.pop()
                for lock in reversed(taken):
                    lock.release()
                handler.__exit__(None, None, None)
            t = v.task()
            assert t.segment_waits() == scanned_waits(t)
        for handler, taken in reversed(levels):
            for lock in reversed(taken):
                lock.release()
            if handler is not None:
                handler.__exit__(None, None, None)


def counted_spins(t):
    return sum(1 for e in t.held if e[H_SPIN])


# A step: take a lock (kernel types by index, or a Python lock of one class: runs of them released
# from the bottom move down lazily), release the held lock at a position, or ask for the count.
spin_steps = st.lists(
    st.tuples(st.sampled_from(["raw", "spin", "mutex", "python", "release", "release", "ask"]), st.integers(0, 7)),
    max_size=40,
)


@pytest.mark.parametrize("lazy_run", [_held.LAZY_RUN, 2], ids=["runs-rewritten", "runs-relabelled-lazily"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spin_steps)
@example([("raw", 0), ("spin", 0), ("ask", 0), ("mutex", 0), ("ask", 0), ("release", 0), ("ask", 0)])
def test_the_spin_count_is_what_a_count_of_the_stack_finds(lazy_run, steps):
    """After any sequence of takes and releases from anywhere, asked at any point, a holder's spin
    count (kept under the chain key of the stack below its top) is the number of held entries that
    disable preemption."""
    with (
        pytest.MonkeyPatch.context() as patch,
        pylockdep.validate(raise_on_report=False) as v,
        pylockdep.instrument_threading(),
    ):
        patch.setattr(_held, "LAZY_RUN", lazy_run)
        made = {
            "raw": [pylockdep.RawSpinLock(f"raw{i}", key=("spins", "raw", i)) for i in range(8)],
            "spin": [pylockdep.SpinLock(f"spin{i}", key=("spins", "spin", i)) for i in range(8)],
            "mutex": [pylockdep.Mutex(f"mutex{i}", key=("spins", "mutex", i)) for i in range(8)],
            "python": [threading.RLock() for _ in range(8)],  # one class: made on one line
        }
        held: list[object] = []
        t = v.task()
        for action, n in steps:
            if action in made:
                lock = made[action][n]
                if lock not in held:
                    lock.acquire()
                    held.append(lock)
            elif action == "release" and held:
                held.pop(n % len(held)).release()
            else:
                assert t.spins == counted_spins(t)
        assert t.spins == counted_spins(t)
        for lock in reversed(held):
            lock.release()
        assert t.spins == 0


def test_the_spin_count_follows_the_kernel_flavour_when_it_changes():
    """A count kept for a chain before the kernel flavour changed is not used after: on
    PREEMPT_RT a ``spinlock_t`` sleeps, so a mutex taken inside one is no longer in atomic context,
    and a ``raw_spinlock_t`` still counts."""
    default = pylockdep.configure()
    spin = pylockdep.SpinLock("flavour_spin", key=("spins", "flavour", "spin"))
    raw = pylockdep.RawSpinLock("flavour_raw", key=("spins", "flavour", "raw"))
    before = default.options.preempt_rt
    try:
        pylockdep.configure(preempt_rt=False)
        t = default.task()
        with spin, raw:
            assert t.spins == 2
        pylockdep.configure(preempt_rt=True)
        with spin, raw:
            assert t.spins == 1
    finally:
        pylockdep.configure(preempt_rt=before)


class Vault:
    def __init__(self) -> None:
        self.lock = threading.RLock()  # one class: one line


# A step: take some of six vaults' locks nested, in the order given, and release them newest or
# oldest first; or let one vault die (a new one takes its place).
order_steps = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.lists(st.integers(0, 5), min_size=2, max_size=5, unique=True), st.booleans()),
        st.tuples(st.just("die"), st.integers(0, 5), st.booleans()),
    ),
    max_size=25,
)


def run_instance_steps(steps, ordered: bool | None) -> tuple[list[str], list[bool]]:
    """The kinds reported, and for each search for a cycle whether it found one; the instances
    ordered from the start (True), never (False), or from the first search that finds more than
    one (None)."""
    found: list[bool] = []
    reaching = InstanceOrder.reaching

    def recorded(order, start, targets):
        result = reaching(order, start, targets)
        found.append(any(target in result for target in targets))
        return result

    with (
        pytest.MonkeyPatch.context() as patch,
        pylockdep.validate(raise_on_report=False) as v,
        pylockdep.instrument_threading(),
    ):
        patch.setattr(InstanceOrder, "reaching", recorded)
        patch.setattr(_instances, "ORDER_AFTER", 1)
        v.instances.ordered = ordered
        vaults = [Vault() for _ in range(6)]
        for action, which, flag in steps:
            if action == "take":
                taken = [vaults[i] for i in which]
                for vault in taken:
                    vault.lock.acquire()
                for vault in taken if flag else reversed(taken):
                    vault.lock.release()
            else:
                vaults[which] = Vault()
                gc.collect()
            if v.instances.ordered:  # every edge climbs the order
                for node in list(v.instances._nodes.values()):
                    assert all(node.ord < succ.ord for succ in node.after)
        return [r.kind for r in v.reports], found


@pytest.mark.parametrize("ordered", [True, None], ids=["from-the-start", "from-a-search"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order_steps)
@example([("take", [0, 1, 2], False), ("die", 1, False), ("take", [2, 0], False)])  # a -> b -> c, b dies
@example([("take", [0, 1], False), ("take", [2, 0], False), ("take", [1, 2], False)])  # a ring of three
@example([("take", [3, 4], False), ("take", [0, 1], False), ("take", [4, 0], False), ("take", [1, 3], False)])
# Ordered from the third take, whose search from 1 finds 2: 1 -> 2 was made before 0 -> 1.
@example([("take", [1, 2], False), ("take", [0, 1], False), ("take", [3, 1], False)])
def test_the_order_of_instances_finds_every_cycle_a_search_finds(ordered, steps):
    """After any sequence of nested takes (released newest or oldest first) and deaths of
    instances of one class, each new edge closes a cycle exactly when it does for a validator
    that searches all that the edge's head leads to, and so the same reports are made; while no
    edge has closed a cycle every edge climbs the order."""
    assert run_instance_steps(steps, ordered) == run_instance_steps(steps, False)
