"""Property: for random lock/unlock/trylock sequences in several threads, pylockdep's verdict equals a
brute-force oracle that builds the class graph from the same sequences by lockdep's rules.

Threads run one after the other (each joined before the next starts), so nothing really blocks and
every verdict is about potential deadlocks.  Each thread releases what it still holds at its end.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylockdep
from pylockdep import _held

# Instances and their classes: two instances of class A, one of each other class.
INSTANCES = ("A", "A", "B", "C", "D")

# An abstract step: ("lock" | "trylock", instance index) or ("unlock", position among the held locks).
# Locks twice as likely as trylocks or unlocks, so that threads nest deep enough to close cycles.
step = st.tuples(st.sampled_from(["lock", "lock", "trylock", "unlock"]), st.integers(0, len(INSTANCES) - 1))
programs = st.lists(st.lists(step, max_size=16), min_size=1, max_size=3)


@dataclass
class Op:
    """A concrete step: take instance ``index`` (``trylock`` says how, ``succeeds`` whether a trylock
    gets it), or release instance ``index``."""

    action: str
    index: int
    succeeds: bool = True


def concretise(program: list[tuple[str, int]]) -> list[Op]:
    """Turn abstract steps into valid ones for one thread, then release whatever is left.

    A blocking lock of an instance the thread already holds is dropped (it would never return);
    a trylock of one fails, and changes nothing.
    """
    held: list[int] = []
    ops = []
    for action, n in program:
        if action == "unlock":
            if held:
                ops.append(Op("unlock", held.pop(n % len(held))))
        elif n not in held:
            held.append(n)
            ops.append(Op(action, n))
        elif action == "trylock":
            ops.append(Op("trylock", n, succeeds=False))
    ops.extend(Op("unlock", n) for n in reversed(held))
    return ops


@dataclass
class Oracle:
    """Lockdep's rules, brute force: which acquisitions are recursive, which edges exist."""

    edges: set[tuple[str, str]] = field(default_factory=set)
    recursive: bool = False

    def take(self, held: list[tuple[str, bool]], cls: str, trylock: bool) -> None:
        """An acquisition: a blocking one of a held class is recursive (and adds no edge); else every held
        lock down to and including the first blocking one gains an edge to it.  Trylocks get none."""
        if not trylock:
            if any(h == cls for h, _ in held):
                self.recursive = True
            else:
                for prev, prev_try in reversed(held):
                    self.edges.add((prev, cls))
                    if not prev_try:
                        break
        held.append((cls, trylock))

    def run(self, threads: list[list[Op]]) -> None:
        for ops in threads:
            held: list[tuple[str, bool]] = []
            instances: list[int] = []
            for op in ops:
                if op.action == "unlock":
                    # Releasing from the middle takes the locks above again, in order.
                    i = instances.index(op.index)
                    above = held[i + 1 :]
                    del held[i:]
                    del instances[i]
                    for cls, trylock in above:
                        self.take(held, cls, trylock)
                elif op.succeeds:
                    self.take(held, INSTANCES[op.index], op.action == "trylock")
                    instances.append(op.index)

    def cyclic(self) -> bool:
        """Whether the class graph has a cycle (depth-first search with colours)."""
        after: dict[str, list[str]] = {}
        for prev, nxt in self.edges:
            after.setdefault(prev, []).append(nxt)
        state: dict[str, int] = {}

        def visit(cls: str) -> bool:
            state[cls] = 1
            for nxt in after.get(cls, []):
                if state.get(nxt) == 1 or (nxt not in state and visit(nxt)):
                    return True
            state[cls] = 2
            return False

        return any(cls not in state and visit(cls) for cls in list(after))


def new_locks() -> list[pylockdep.Mutex]:
    """Fresh instances; made at one line, so instances of one name share a class."""
    return [pylockdep.Mutex(name) for name in INSTANCES]


def run_threads(threads: list[list[Op]]) -> list[pylockdep.Report]:
    locks = new_locks()
    errors: list[BaseException] = []

    def body(ops: list[Op]) -> None:
        try:
            for op in ops:
                lock = locks[op.index]
                if op.action == "lock":
                    lock.acquire()
                elif op.action == "trylock":
                    assert lock.trylock() is op.succeeds
                else:
                    lock.release()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    with pylockdep.validate(raise_on_report=False) as v:
        for ops in threads:
            worker = threading.Thread(target=body, args=(ops,))
            worker.start()
            worker.join(30)
            assert not worker.is_alive()
    if errors:
        raise errors[0]
    assert not any(lock.locked() for lock in locks)
    return v.reports


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_verdict_equals_brute_force_oracle(program):
    threads = [concretise(p) for p in program]
    oracle = Oracle()
    oracle.run(threads)
    kinds = {r.kind for r in run_threads(threads)}
    assert kinds <= {"circular", "recursive"}
    assert ("recursive" in kinds, "circular" in kinds) == (oracle.recursive, oracle.cyclic())


# -- the instance order of one Python lock class --------------------------------------------------

# An abstract step on N instances of one class: take instance n (if not held), release the held one
# at position n (any position: out of order too), or let instance n's lock die (if not held).
instance_steps = st.lists(
    st.tuples(st.sampled_from(["take", "take", "take", "release", "release", "drop"]), st.integers(0, 3)),
    min_size=6,
    max_size=40,
)


def reaches(pairs: set[tuple[int, int]], start: int, target: int) -> bool:
    """Whether ``pairs`` lead from ``start`` to ``target``."""
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        for prev, nxt in pairs:
            if prev == node and nxt not in seen:
                if nxt == target:
                    return True
                seen.add(nxt)
                todo.append(nxt)
    return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lazy_run", [_held.LAZY_RUN, 2], ids=["runs-rewritten", "runs-relabelled-lazily"])
@pytest.mark.parametrize("factory", ["RLock", "Lock"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instance_steps)
def test_instance_order_finds_the_first_cycle_an_oracle_of_every_pair_finds(factory, lazy_run, steps):
    """The kept edges (nearest instance, runs, bypassed dead instances) report the first cycle of
    instances exactly where the order of every pair of live instances, held one while the other
    was taken, first closes one; whether a run released from its bottom is rewritten at once or
    relabelled lazily (pylockdep._held.LAZY_RUN)."""
    with (
        pytest.MonkeyPatch.context() as patch,
        pylockdep.validate(raise_on_report=False) as v,
        pylockdep.instrument_threading(),
    ):
        patch.setattr(_held, "LAZY_RUN", lazy_run)
        make = getattr(threading, factory)
        locks = {n: make() for n in range(4)}  # one line: one class
        pairs: set[tuple[int, int]] = set()
        held: list[int] = []
        expected = None
        for i, (action, n) in enumerate(steps):
            if action == "take" and n in locks and n not in held:
                if any(reaches(pairs, n, h) for h in held):
                    expected = i
                pairs |= {(h, n) for h in held}
                locks[n].acquire()  # taken here: this function still runs, so no Lock is a token
                held.append(n)
            elif action == "release" and held:
                locks[held.pop(n % len(held))].release()
            elif action == "drop" and n in locks and n not in held:
                del locks[n]
                gc.collect()
                pairs = {(p, q) for p, q in pairs if n not in (p, q)}
            assert [r.kind for r in v.reports] == ([] if expected is None else ["circular"])
            if expected is not None:
                break
        for n in reversed(held):
            locks[n].release()
