"""The ordering cases of the kernel's ``lib/locking-selftest.c``, with the kernel's verdicts.

Each case runs in a fresh validator, as the kernel's harness resets lockdep between cases.  Columns
are the selftest's lock types (plus ``raw`` for ``raw_spinlock_t``).  ``A``..``D`` are distinct
classes; ``X1``/``X2`` (and ``Y``, ``Z``) are two instances made at one source line, so one class.

The selftests take every ``read_lock()`` as a recursive reader.  pylockdep follows queued rwlocks,
whose readers are recursive only in interrupt context, so the ``rlock`` column runs each case with
bottom halves disabled (``in_interrupt()`` is then true, but no irq handler runs, so the cases get
no irq-safe usage bits that the kernel's cases would not have).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import pytest

import pylockdep


@contextmanager
def _bh_disabled() -> Iterator[None]:
    pylockdep.local_bh_disable()
    try:
        yield
    finally:
        pylockdep.local_bh_enable()


@dataclass(frozen=True)
class Column:
    """One selftest column: how its locks are made, taken and released."""

    name: str
    make: Callable[[str], Any]
    lock: Callable[[Any], None]
    unlock: Callable[[Any], None]
    reads: bool = False  # LOCK is a read acquisition
    recursive_reads: bool = False  # ... by a recursive reader (rlock)

    def context(self) -> Any:
        """The context every case of this column runs in."""
        return _bh_disabled() if self.recursive_reads else nullcontext()

    def new(self, letter: str) -> Any:
        """A lock of class ``<column>_<letter>``; every call with one letter gives the same class."""
        return self.make(f"{self.name}_{letter}")


COLUMNS = [
    Column("spin", lambda n: pylockdep.SpinLock(n), lambda lk: lk.lock(), lambda lk: lk.unlock()),
    Column("raw", lambda n: pylockdep.RawSpinLock(n), lambda lk: lk.lock(), lambda lk: lk.unlock()),
    Column("wlock", lambda n: pylockdep.RWLock(n), lambda lk: lk.write_lock(), lambda lk: lk.write_unlock()),
    Column(
        "rlock",
        lambda n: pylockdep.RWLock(n),
        lambda lk: lk.read_lock(),
        lambda lk: lk.read_unlock(),
        reads=True,
        recursive_reads=True,
    ),
    Column("mutex", lambda n: pylockdep.Mutex(n), lambda lk: lk.lock(), lambda lk: lk.unlock()),
    Column("wsem", lambda n: pylockdep.RWSemaphore(n), lambda lk: lk.down_write(), lambda lk: lk.up_write()),
    Column("rsem", lambda n: pylockdep.RWSemaphore(n), lambda lk: lk.down_read(), lambda lk: lk.up_read(), reads=True),
]
COLUMN_IDS = [c.name for c in COLUMNS]


def _lu2(col: Column, x: Any, y: Any) -> None:
    """The selftests' ``LU2(x, y)``: lock x, lock y, unlock y, unlock x."""
    col.lock(x)
    col.lock(y)
    col.unlock(y)
    col.unlock(x)


def _only_report(v: pylockdep.Validator, kind: str) -> pylockdep.Report:
    assert [r.kind for r in v.reports] == [kind], [r.text for r in v.reports]
    return v.reports[0]


# -- 7.2: the basic rows ---------------------------------------------------------------------------

# label: (LU2 pairs in order, the "Chain exists of:" classes NEXT --> PARENT --> PREV or None, classes on the cycle)
CYCLES = {
    "ABBA": ("AB BA", None, "AB"),
    "ABBCCA": ("AB BC CA", "ABC", "ABC"),
    "ABCABC": ("AB CA BC", "CAB", "ABC"),
    "ABBCCDDA": ("AB BC CD DA", "ACD", "ABCD"),
    "ABCDBDDA": ("AB CD BD DA", "ABD", "ABD"),
    "ABCDBCDA": ("AB CD BC DA", "ACD", "ABCD"),
}


@pytest.mark.parametrize("col", COLUMNS, ids=COLUMN_IDS)
@pytest.mark.parametrize("label", list(CYCLES))
def test_cycle_rows(col: Column, label: str) -> None:
    pairs, chain, on_cycle = CYCLES[label]
    locks = {letter: col.new(letter) for letter in "ABCD"}
    with pylockdep.validate(raise_on_report=False) as v, col.context():
        for first, second in pairs.split():
            _lu2(col, locks[first], locks[second])
    if col.recursive_reads:  # every edge is -(SR)->: no strong cycle
        assert v.reports == []
        return
    report = _only_report(v, "circular")
    assert report.title == "WARNING: possible circular locking dependency detected"
    assert sorted(report.classes) == [f"{col.name}_{c}" for c in on_cycle]
    text = report.text
    prev, nxt = (f"{col.name}_{c}" for c in pairs.split()[-1])
    if chain is None:
        assert "Chain exists of:" not in text
        parent = nxt
    else:
        names = [f"{col.name}_{c}" for c in chain]
        assert f"Chain exists of:\n  {' --> '.join(names)}\n" in text
        parent = names[1]
    fn = "rlock" if col.reads else "lock"
    cpu1 = " " * 31
    assert f"  {fn}({prev});\n{cpu1}lock({parent});\n{cpu1}lock({prev});\n  {fn}({nxt});\n\n *** DEADLOCK ***" in text


@pytest.mark.parametrize("col", COLUMNS, ids=COLUMN_IDS)
def test_aa_two_instances_of_one_class(col: Column) -> None:
    x1, x2 = (col.new("X") for _ in range(2))
    with pylockdep.validate(raise_on_report=False) as v, col.context():
        col.lock(x1)
        col.lock(x2)
        col.unlock(x2)
        col.unlock(x1)
    if col.recursive_reads:
        assert v.reports == []
        return
    report = _only_report(v, "recursive")
    assert report.title == "WARNING: possible recursive locking detected"
    assert report.classes == (f"{col.name}_X",)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("col", COLUMNS, ids=COLUMN_IDS)
def test_aa_same_instance(col: Column) -> None:
    """Re-taking a held instance: reported, then refused unless the second take would not block."""
    x1 = col.new("X")
    with pylockdep.validate(raise_on_report=False) as v, col.context():
        col.lock(x1)
        if col.reads:  # no writer waits: a second reader gets in
            col.lock(x1)
            col.unlock(x1)
        else:
            with pytest.raises(pylockdep.DeadlockError):
                col.lock(x1)
        col.unlock(x1)
        assert not x1.locked()
    if col.recursive_reads:
        assert v.reports == []
        return
    report = _only_report(v, "recursive")
    assert report.classes == (f"{col.name}_X",)


@pytest.mark.parametrize("col", COLUMNS, ids=COLUMN_IDS)
def test_double_unlock(col: Column) -> None:
    a = col.new("A")
    with pylockdep.validate(raise_on_report=False) as v, col.context():
        col.lock(a)
        col.unlock(a)
        col.unlock(a)
        assert not a.locked()
    report = _only_report(v, "bad_unlock_balance")
    assert report.title == "WARNING: bad unlock balance detected!"
    assert report.classes == (f"{col.name}_A",)
    assert f"is trying to release lock ({col.name}_A) at:" in report.text


# -- 7.3: read/write rows (rlock: Y is a spinlock; rsem: Y is a mutex) ------------------------------

RLOCK, RSEM = (c for c in COLUMNS if c.name in ("rlock", "rsem"))


def _rw_ops(col: Column) -> dict[str, Callable[[Any], None]]:
    """The selftests' ``RL``/``WL`` (and unlocks) for the rlock or rsem column."""
    if col is RLOCK:
        return {
            "R": lambda lk: lk.read_lock(),
            "W": lambda lk: lk.write_lock(),
            "RU": lambda lk: lk.read_unlock(),
            "WU": lambda lk: lk.write_unlock(),
        }
    return {
        "R": lambda lk: lk.down_read(),
        "W": lambda lk: lk.down_write(),
        "RU": lambda lk: lk.up_read(),
        "WU": lambda lk: lk.up_write(),
    }


def _y_lock(col: Column, name: str) -> Any:
    return pylockdep.SpinLock(name) if col is RLOCK else pylockdep.Mutex(name)


# label: (steps, expected kind per column).  A step is "R1"/"W1" (read/write X1), "R2"/"W2" (X2), "L" (Y1);
# each group of steps is taken in order and released in reverse.
RW_ROWS = {
    "recursive read-lock": (["R1 R1"], {"rlock": None, "rsem": "recursive"}),
    "recursive read-lock #2": (["R1 R2"], {"rlock": None, "rsem": "recursive"}),
    "mixed read-write-lock": (["R1 W2"], {"rlock": "recursive", "rsem": "recursive"}),
    "mixed write-read-lock": (["W1 R2"], {"rlock": "recursive", "rsem": "recursive"}),
    "mixed read-lock/lock-write ABBA": (["R1 L", "L W1"], {"rlock": "circular", "rsem": "circular"}),
    "mixed read-lock/lock-read ABBA": (["R1 L", "L R1"], {"rlock": None, "rsem": "circular"}),
    "mixed write-lock/lock-write ABBA": (["W1 L", "L W1"], {"rlock": "circular", "rsem": "circular"}),
    "chain cached mixed R-L/L-W ABBA": (["R1 L", "L R1", "L W1"], {"rlock": "circular"}),
}
RW_CASES = [(label, col) for label, (_, verdicts) in RW_ROWS.items() for col in (RLOCK, RSEM) if col.name in verdicts]


@pytest.mark.parametrize(("label", "col"), RW_CASES, ids=[f"{label}-{col.name}" for label, col in RW_CASES])
def test_read_write_rows(label: str, col: Column) -> None:
    groups, verdicts = RW_ROWS[label]
    ops = _rw_ops(col)
    x1, x2 = (col.make(f"{col.name}_X") for _ in range(2))
    y1 = _y_lock(col, f"{col.name}_Y")
    with pylockdep.validate(raise_on_report=False) as v, col.context():
        for group in groups:
            taken = []
            for step in group.split():
                if step == "L":
                    y1.lock()
                    taken.append(y1.unlock)
                else:
                    lock = x1 if step[1] == "1" else x2
                    ops[step[0]](lock)
                    taken.append(lambda lk=lock, mode=step[0]: ops[mode + "U"](lk))
            for release in reversed(taken):
                release()
    expected = verdicts[col.name]
    if expected is None:
        assert v.reports == []
        return
    report = _only_report(v, expected)
    names = {f"{col.name}_X"} | ({f"{col.name}_Y"} if expected == "circular" else set())
    assert set(report.classes) == names


# -- 7.4: three-lock rlock groups, all six orders --------------------------------------------------

# label: (E1, E2, E3 as "<mode><lock> <mode><lock>", verdict)
RLOCK_GROUPS = {
    "W1R2/W2R3/W3R1": (("WX RY", "WY RZ", "WZ RX"), "circular"),
    "W1W2/R2R3/W3R1": (("WX WY", "RY RZ", "WZ RX"), "circular"),
    "W1W2/R2R3/R3W1": (("WX WY", "RY RZ", "RZ WX"), None),
    "W1R2/R2R3/W3W1": (("WX RY", "RY RZ", "WZ WX"), None),
}
GROUP_CASES = [(label, order) for label in RLOCK_GROUPS for order in itertools.permutations(range(3))]


@pytest.mark.parametrize(
    ("label", "order"),
    GROUP_CASES,
    ids=[f"{label}/{''.join(str(i + 1) for i in order)}" for label, order in GROUP_CASES],
)
def test_rlock_three_lock_groups(label: str, order: tuple[int, ...]) -> None:
    events, verdict = RLOCK_GROUPS[label]
    locks = {letter: RLOCK.new(letter) for letter in "XYZ"}
    ops = _rw_ops(RLOCK)
    with pylockdep.validate(raise_on_report=False) as v, RLOCK.context():
        for index in order:
            first, second = events[index].split()
            for mode, letter in (first, second):
                ops[mode](locks[letter])
            for mode, letter in (second, first):
                ops[mode + "U"](locks[letter])
    if verdict is None:
        assert v.reports == []
        return
    report = _only_report(v, "circular")
    assert sorted(report.classes) == ["rlock_X", "rlock_Y", "rlock_Z"]
    # The last group closes the cycle: the search runs from its second lock back to its first.
    prev, nxt = (item[1] for item in events[order[-1]].split())
    (middle,) = set("XYZ") - {prev, nxt}
    assert f"Chain exists of:\n  rlock_{nxt} --> rlock_{middle} --> rlock_{prev}\n" in report.text


def test_a_cycle_the_search_missed_through_a_recursive_reader_is_found_on_a_later_chain() -> None:
    """The kernel's search marks a class on first arrival: reaching C first by a weak path
    (N -ER-> M -SN-> C) it skips the strong one through Q, and the last edge of the strong cycle
    N -> Q -> C -> P -> N is taken without a report, by the kernel as by pylockdep.  The kernel
    searches again before it looks for an existing edge, so a later new chain through N -> Q finds
    the cycle; so does pylockdep now."""
    n, m, q, c, p, z = (RLOCK.new(letter) for letter in "NMQCPZ")
    ops = _rw_ops(RLOCK)

    def take(*steps: tuple[str, Any]) -> None:
        for mode, lock in steps:
            ops[mode](lock)
        for mode, lock in reversed(steps):
            ops[mode + "U"](lock)

    with pylockdep.validate(raise_on_report=False) as v, RLOCK.context():
        take(("W", n), ("R", m))
        take(("W", n), ("W", q))
        take(("R", m), ("W", c))
        take(("W", q), ("W", c))
        take(("W", c), ("W", p))
        take(("W", p), ("W", n))
        assert v.reports == []  # missed, as by the kernel
        take(("W", z), ("W", n), ("W", q))
    report = _only_report(v, "circular")
    assert sorted(report.classes) == ["rlock_C", "rlock_N", "rlock_P", "rlock_Q"]
