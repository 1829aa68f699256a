"""The irq-context cases of the kernel's ``lib/locking-selftest.c``, with the kernel's verdicts.

Each case runs in a fresh validator (the kernel's harness resets lockdep between cases) on a normal
kernel.  As in the selftests, ``IRQ_ENTER`` is a threaded hard interrupt or a softirq entered with
hard interrupts disabled, and ``IRQ_DISABLE`` is ``local_irq_disable()`` or ``local_bh_disable()``.
``E1``..``E3`` are the events of a group, run in the order the case's suffix names (``/132``...).

Lockdep stops at its first report; pylockdep keeps going, so a case checks its first report.

The selftests take every ``read_lock()`` as a recursive reader.  pylockdep follows queued rwlocks,
whose readers are recursive only in interrupt context, so in the hard-irq ``rlock`` cases
``IRQ_DISABLE`` also disables bottom halves: a read taken with interrupts disabled is then the
recursive reader of the selftest.  No usage bit changes, since none is set with hard irqs off, and
``IRQ_ENABLE`` turns hard irqs on before bottom halves, as the kernel requires.  The reads taken
with interrupts enabled stay non-recursive: for them only the usage bits count, which are the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

import pylockdep


@dataclass(frozen=True)
class Irq:
    """One interrupt flavour of the selftests: ``hard`` or ``soft``."""

    name: str

    @property
    def state(self) -> str:
        """The usage state lockdep names it by."""
        return "HARDIRQ" if self.name == "hard" else "SOFTIRQ"


HARD, SOFT = Irq("hard"), Irq("soft")

# The selftests' columns: how LOCK()/UNLOCK() take the column's lock A or B.
COLUMNS = ("spin", "wlock", "rlock")


class Case:
    """The locks and the LOCK/IRQ_* operations of one selftest case (one column, one irq flavour)."""

    def __init__(self, irq: Irq, column: str) -> None:
        self.irq, self.column = irq, column
        # One creation line for all: the names make the classes (lock_A, rwlock_B, ...).
        self.spin = {x: pylockdep.SpinLock(f"lock_{x}") for x in "ABCD"}
        self.rw = {x: pylockdep.RWLock(f"rwlock_{x}") for x in "AB"}

    def name(self, letter: str) -> str:
        """The class name of the column's lock ``letter``."""
        return f"lock_{letter}" if self.column == "spin" else f"rwlock_{letter}"

    def LOCK(self, letter: str) -> None:  # noqa: N802 - the selftests' macro names
        if self.column == "spin":
            self.spin[letter].lock()
        elif self.column == "wlock":
            self.rw[letter].write_lock()
        else:
            self.rw[letter].read_lock()

    def UNLOCK(self, letter: str) -> None:  # noqa: N802
        if self.column == "spin":
            self.spin[letter].unlock()
        elif self.column == "wlock":
            self.rw[letter].write_unlock()
        else:
            self.rw[letter].read_unlock()

    def LU(self, letter: str) -> None:  # noqa: N802
        self.LOCK(letter)
        self.UNLOCK(letter)

    @contextmanager
    def IRQ(self) -> Iterator[None]:  # noqa: N802 - IRQ_ENTER ... IRQ_EXIT
        if self.irq is HARD:
            with pylockdep.hardirq(threaded=True):
                yield
        else:
            with pylockdep.softirq(), pylockdep.irqs_disabled():
                yield

    def IRQ_DISABLE(self) -> None:  # noqa: N802
        if self.irq is SOFT:
            pylockdep.local_bh_disable()
            return
        if self.column == "rlock":
            pylockdep.local_bh_disable()  # recursive reads, see the module docstring
        pylockdep.local_irq_disable()

    def IRQ_ENABLE(self) -> None:  # noqa: N802
        if self.irq is SOFT:
            pylockdep.local_bh_enable()
            return
        pylockdep.local_irq_enable()
        if self.column == "rlock":
            pylockdep.local_bh_enable()


Event = Callable[[Case], None]


def _irq_lock_a(c: Case) -> None:
    with c.IRQ():
        c.LU("A")


def _lock_a(c: Case) -> None:
    c.LU("A")


def _irqs_off_lock_a_enable_held(c: Case) -> None:
    c.IRQ_DISABLE()
    c.LOCK("A")
    c.IRQ_ENABLE()
    c.UNLOCK("A")


def _lock_a_b(c: Case) -> None:
    c.LOCK("A")
    c.LU("B")
    c.UNLOCK("A")


def _irqs_off_lock_a_b(c: Case) -> None:
    c.IRQ_DISABLE()
    _lock_a_b(c)
    c.IRQ_ENABLE()


def _lock_b(c: Case) -> None:
    c.LU("B")


def _irqs_off_write_a_lock_b(c: Case) -> None:
    c.IRQ_DISABLE()
    c.rw["A"].write_lock()
    c.LU("B")
    c.rw["A"].write_unlock()
    c.IRQ_ENABLE()


def _irq_read_a(c: Case) -> None:
    with c.IRQ():
        c.rw["A"].read_lock()
        c.rw["A"].read_unlock()


def _irqs_off_write_a(c: Case) -> None:
    c.IRQ_DISABLE()
    c.rw["A"].write_lock()
    c.rw["A"].write_unlock()
    c.IRQ_ENABLE()


def _read_a(c: Case) -> None:
    c.rw["A"].read_lock()
    c.rw["A"].read_unlock()


def _irq_lock_a_spin_b(c: Case) -> None:
    with c.IRQ():
        c.LOCK("A")
        with c.spin["B"]:
            pass
        c.UNLOCK("A")


def _irqs_off_spin_b_lock_a(c: Case) -> None:
    c.IRQ_DISABLE()
    with c.spin["B"]:
        c.LU("A")
    c.IRQ_ENABLE()


def _irq_spin_b(c: Case) -> None:
    with c.IRQ(), c.spin["B"]:
        pass


def _irqs_off_write_b_lock_a(c: Case) -> None:
    c.IRQ_DISABLE()
    with c.rw["B"].write():
        c.LU("A")
    c.IRQ_ENABLE()


def _irq_read_b(c: Case) -> None:
    with c.IRQ(), c.rw["B"].read():
        pass


@dataclass(frozen=True)
class Expected:
    """A failing case: the kind of the first report, its classes and a line of its text."""

    kind: str
    classes: tuple[str, ...]
    line: str


Verdict = Callable[[str, Case], "Expected | None"]


def _before(order: str, first: str, second: str) -> bool:
    return order.index(first) < order.index(second)


def _inconsistent(safe_event: str, unsafe_event: str, unsafe_bit: str) -> Verdict:
    """Lock A both irq-safe (taken in the handler) and irq-unsafe (``unsafe_bit``, e.g. ``ON-W``)."""

    def verdict(order: str, c: Case) -> Expected:
        safe, unsafe = f"IN-{c.irq.state}-W", f"{c.irq.state}-{unsafe_bit}"
        old, new = (safe, unsafe) if _before(order, safe_event, unsafe_event) else (unsafe, safe)
        return Expected("inconsistent_lock_state", (c.name("A"),), f"inconsistent {{{old}}} -> {{{new}}} usage.")

    return verdict


def _inverted(
    edge: str,
    unsafe: str,
    safe: str,
    safe_cls: Callable[[Case], str],
    unsafe_cls: Callable[[Case], str],
    forward_read: bool,
    backward_read: bool,
    order_read: bool,
) -> Verdict:
    """A class taken in the handler (event ``safe``) leads to one taken with irqs on (``unsafe``)
    through the dependency made by event ``edge``; which report fires depends on which comes last.
    The ``*_read`` flags say which states lockdep names with ``-READ``."""

    def verdict(order: str, c: Case) -> Expected:
        state = c.irq.state
        s, u = safe_cls(c), unsafe_cls(c)
        last = order[-1]
        if last == edge:
            rs = state + ("-READ" if order_read else "")
            return Expected("irq_unsafe_order", (s, u), f"WARNING: {rs}-safe -> {rs}-unsafe lock order detected")
        if last == safe:
            rs = state + ("-READ" if forward_read else "")
            return Expected("irq_inversion", (s, u), f"but this lock took another, {rs}-unsafe lock in the past:")
        rs = state + ("-READ" if backward_read else "")
        return Expected("irq_inversion", (u, s), f"but this lock was taken by another, {rs}-safe lock in the past:")

    return verdict


@dataclass(frozen=True)
class Group:
    """A selftest group: its events, the columns it runs for and the verdict of the failing ones."""

    events: tuple[Event, ...]
    failing: tuple[str, ...]  # columns with verdict F; the others must stay silent
    verdict: Verdict
    columns: tuple[str, ...] = COLUMNS
    flavours: tuple[Irq, ...] = (HARD, SOFT)


GROUPS = {
    "irqs-on + irq-safe-A": Group((_irq_lock_a, _lock_a), ("spin", "wlock"), _inconsistent("1", "2", "ON-W")),
    "safe-A + irqs-on": Group(
        (_irq_lock_a, _irqs_off_lock_a_enable_held), ("spin", "wlock"), _inconsistent("1", "2", "ON-W")
    ),
    "safe-A + unsafe-B #1": Group(
        (_lock_a_b, _lock_b, _irq_lock_a), ("spin", "wlock"), _inconsistent("3", "1", "ON-W")
    ),
    "safe-A + unsafe-B #2": Group(
        (_irqs_off_lock_a_b, _lock_b, _irq_lock_a),
        ("spin", "wlock"),
        _inverted("1", "2", "3", lambda c: c.name("A"), lambda c: c.name("B"), False, False, False),
    ),
    "irq lock-inversion": Group(
        (_irqs_off_write_a_lock_b, _lock_b, _irq_read_a),
        ("spin", "wlock"),
        _inverted("1", "2", "3", lambda c: "rwlock_A", lambda c: c.name("B"), False, True, True),
    ),
    "irq read-recursion": Group(
        (_irqs_off_write_a, _read_a, _irq_lock_a_spin_b),
        ("wlock",),
        _inconsistent("3", "2", "ON-R"),
        columns=("wlock", "rlock"),
    ),
    "irq read-recursion #2": Group(
        (_irqs_off_spin_b_lock_a, _read_a, _irq_spin_b),
        ("wlock",),
        _inverted("1", "2", "3", lambda c: "lock_B", lambda c: "rwlock_A", True, False, False),
        columns=("wlock", "rlock"),
    ),
    "irq read-recursion #3": Group(
        (_irqs_off_write_b_lock_a, _read_a, _irq_read_b),
        ("wlock",),
        _inverted("1", "2", "3", lambda c: "rwlock_B", lambda c: "rwlock_A", True, True, True),
        columns=("wlock", "rlock"),
    ),
}


def _orders(n: int) -> list[str]:
    return ["".join(str(i + 1) for i in perm) for perm in itertools.permutations(range(n))]


CASES = [
    (label, order, irq, col)
    for label, group in GROUPS.items()
    for order in _orders(len(group.events))
    for irq in group.flavours
    for col in group.columns
]


@pytest.mark.parametrize(
    ("label", "order", "irq", "col"),
    CASES,
    ids=[f"{label}/{order}-{irq.name}-{col}" for label, order, irq, col in CASES],
)
def test_irq_groups(label: str, order: str, irq: Irq, col: str) -> None:
    group = GROUPS[label]
    c = Case(irq, col)
    with pylockdep.validate(raise_on_report=False) as v:
        for index in order:
            group.events[int(index) - 1](c)
    if col not in group.failing:
        assert v.reports == []
        return
    expected = group.verdict(order, c)
    assert v.reports, "the kernel reports this case"
    first = v.reports[0]
    assert (first.kind, first.classes) == (expected.kind, expected.classes)
    assert expected.line in first.text.splitlines()


@pytest.mark.parametrize("order", ["12", "21"])
@pytest.mark.parametrize("col", COLUMNS)
def test_softirq_safe_lock_with_hardirqs_enabled(order: str, col: str) -> None:
    """``sirq-safe-A => hirqs-on``: re-enabling hard irqs while holding A, with softirqs enabled,
    makes a softirq-safe A softirq-unsafe as well."""
    c = Case(SOFT, col)

    def in_softirq() -> None:
        with pylockdep.softirq(), pylockdep.irqs_disabled():
            c.LU("A")

    def enable_hardirqs_holding_a() -> None:
        pylockdep.local_irq_disable()
        c.LOCK("A")
        pylockdep.local_irq_enable()
        c.UNLOCK("A")

    with pylockdep.validate(raise_on_report=False) as v:
        for event in (
            (in_softirq, enable_hardirqs_holding_a) if order == "12" else (enable_hardirqs_holding_a, in_softirq)
        ):
            event()
    if col == "rlock":
        assert v.reports == []
        return
    old, new = ("IN-SOFTIRQ-W", "SOFTIRQ-ON-W") if order == "12" else ("SOFTIRQ-ON-W", "IN-SOFTIRQ-W")
    (report,) = v.reports
    assert (report.kind, report.classes) == ("inconsistent_lock_state", (c.name("A"),))
    assert f"inconsistent {{{old}}} -> {{{new}}} usage." in report.text


# -- 7.8: queued read-lock cases (read_lock() recursive only in interrupt context, as pylockdep's) ---


def test_hardirq_read_lock_then_lock_is_circular() -> None:
    """``hardirq read-lock/lock-read``: the handler's recursive reader A -> B and a process-context
    non-recursive reader B -> A close a strong cycle."""
    a, b = pylockdep.RWLock("rwlock_A"), pylockdep.RWLock("rwlock_B")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq(threaded=True), a.read(), b.write():
            pass
        with pylockdep.irqs_disabled(), b.write(), a.read():
            pass
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(report.classes) == ["rwlock_A", "rwlock_B"]


def test_hardirq_lock_then_read_lock_is_no_deadlock() -> None:
    """``hardirq lock-read/read-lock``: B -> recursive-read A in the handler, then A (read) -> B: the
    cycle goes through a recursive read followed by a shared hold, so it is not a strong one."""
    a, b = pylockdep.RWLock("rwlock_A"), pylockdep.RWLock("rwlock_B")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq(threaded=True), b.write(), a.read():
            pass
        with pylockdep.irqs_disabled(), a.read(), b.write():
            pass
    assert v.reports == []


def test_hardirq_inversion_through_non_recursive_readers() -> None:
    """``hardirq inversion``: B is hardirq-safe, B -> A with irqs off, then A read with irqs on: both
    reads of A are non-recursive, so the irq can wait behind a writer queued on A."""
    a, b = pylockdep.RWLock("rwlock_A"), pylockdep.RWLock("rwlock_B")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq(threaded=True), b.write():
            pass
        with pylockdep.irqs_disabled(), b.write(), a.read():
            pass
        with a.read():
            pass
    (report,) = v.reports
    assert (report.kind, report.classes) == ("irq_inversion", ("rwlock_A", "rwlock_B"))
    assert "but this lock was taken by another, HARDIRQ-safe lock in the past:" in report.text


def test_hardirq_unsafe_softirq_safe() -> None:
    """``hardirq_unsafe_softirq_safe``: mutex_A -> C -> D is softirq-unsafe -> softirq-safe (fine),
    lock_A -> B -> C -> D is hardirq-safe -> hardirq-unsafe: reported as HARDIRQ, not SOFTIRQ."""
    mutex_a = pylockdep.Mutex("mutex_A")
    c = Case(HARD, "spin")
    lock_a, lock_b, lock_c, lock_d = (c.spin[x] for x in "ABCD")
    with pylockdep.validate(raise_on_report=False) as v:
        with mutex_a, pylockdep.irqs_disabled(), lock_c:
            pass
        with pylockdep.hardirq(threaded=True), lock_a:
            pass
        with pylockdep.irqs_disabled(), lock_a, lock_b:
            pass
        with pylockdep.irqs_disabled(), lock_b, lock_c:
            pass
        with pylockdep.softirq(), pylockdep.irqs_disabled(), lock_d:
            pass
        pylockdep.local_bh_disable()
        with lock_d:
            pass
        pylockdep.local_bh_enable()
        with pylockdep.irqs_disabled(), lock_c, lock_d:
            pass
    (report,) = v.reports
    assert report.kind == "irq_unsafe_order"
    assert report.title == "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected"
    assert report.classes == ("lock_A", "lock_B", "lock_C", "lock_D")
