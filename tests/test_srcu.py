"""SRCU: read-side indexes, real grace periods, and the deadlocks lockdep finds with SRCU
(reference/lockdep.md section 6)."""

from __future__ import annotations

import threading
import time

import pytest

import pylockdep
from pylockdep import SRCU, Mutex, RawSpinLock, RWSemaphore

pytestmark = pytest.mark.timeout(30)


def srcu(name: str = "srcu_S") -> SRCU:
    """An SRCU whose class is its name (made at one line, so the key tells them apart)."""
    return SRCU(name, key=("test_srcu", name))


def kinds(v: pylockdep.Validator) -> list[str]:
    return [r.kind for r in v.reports]


def run_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)
    thread.start()
    return thread


def join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(20)
        assert not thread.is_alive(), "a thread hung"


def enter_after_flip(s: SRCU, old_idx: int) -> int:
    """Enter a read side that started after a synchronize flipped away from ``old_idx``.

    A read side entered before the flip would be waited for, so it is left at once and tried
    again; the index the SRCU hands out tells when the flip has happened.
    """
    while True:
        idx = s.read_lock()
        if idx != old_idx:
            return idx
        s.read_unlock(idx)
        time.sleep(0.001)


# -- read-side indexes ------------------------------------------------------------------------


def test_read_lock_returns_the_index_read_unlock_takes_back():
    s = srcu()
    with pylockdep.validate() as v:
        outer = s.read_lock()
        inner = s.read_lock()
        assert outer in (0, 1) and inner == outer
        assert s.read_lock_held()
        s.read_unlock(inner)
        s.read_unlock(outer)
        assert not s.read_lock_held()
        with s.read() as idx:
            assert idx in (0, 1)
            assert s.dereference("value") == "value"
        s.synchronize()  # no reader left
    assert v.reports == []


def test_read_sides_may_end_in_any_order():
    s, m = srcu(), Mutex("M")
    with pylockdep.validate() as v:
        idx = s.read_lock()
        m.lock()
        s.read_unlock(idx)
        m.unlock()
        s.synchronize()
    assert v.reports == []


def test_wrong_index_is_a_bad_unlock_balance_and_leaves_the_read_side_open():
    s = srcu()
    with pylockdep.validate(raise_on_report=False) as v:
        idx = s.read_lock()
        s.read_unlock(idx ^ 1)
        assert s.read_lock_held()
        s.read_unlock(idx)
        assert not s.read_lock_held()
        s.synchronize()  # the counters balance: no reader is left to wait for
    (report,) = v.reports
    assert report.kind == "bad_unlock_balance" and report.classes == ("srcu_S",)
    assert report.title == "WARNING: bad unlock balance detected!"
    assert f"srcu_read_unlock() was given index {idx ^ 1}, which no read side of this task holds!" in report.text


def test_unlock_with_no_read_side_and_a_made_up_index_are_reported():
    s = srcu()
    with pylockdep.validate(raise_on_report=False) as v:
        s.read_unlock(0)
        with s.read():
            s.read_unlock("nonsense")  # type: ignore[arg-type]
    assert kinds(v) == ["bad_unlock_balance", "bad_unlock_balance"]
    assert "given index 'nonsense'" in v.reports[1].text


def test_another_threads_index_is_reported():
    s = srcu()
    with pylockdep.validate(raise_on_report=False) as v:
        with s.read() as idx:
            join(run_thread(s.read_unlock, idx))
            assert s.read_lock_held()
        s.synchronize()
    assert kinds(v) == ["bad_unlock_balance"]


def test_read_side_taken_before_validate_ends_inside_without_report():
    s = srcu()
    with pylockdep.validate():
        idx = s.read_lock()
        with pylockdep.validate() as v:
            s.read_unlock(idx)
            s.synchronize()
    assert v.reports == []


# -- grace periods with real threads ----------------------------------------------------------


def test_synchronize_waits_for_earlier_readers_and_not_for_later_ones():
    s = srcu()
    leave = threading.Event()
    inside = threading.Event()
    synchronized = threading.Event()

    early: list[int] = []

    def early_reader() -> None:
        with s.read() as idx:
            early.append(idx)
            inside.set()
            assert leave.wait(10)

    def updater() -> None:
        s.synchronize()
        synchronized.set()

    with pylockdep.validate() as v:
        reader = run_thread(early_reader)
        assert inside.wait(10)
        sync = run_thread(updater)
        late_idx = enter_after_flip(s, early[0])  # the synchronize has begun: it flipped the counters
        assert not synchronized.is_set()  # the early reader is still inside
        leave.set()
        join(reader, sync)  # returns although the late reader is still inside
        assert synchronized.is_set()
        s.read_unlock(late_idx)
    assert v.reports == []


def test_concurrent_synchronizers_all_wait_for_the_earlier_reader():
    s = srcu()
    leave, inside = threading.Event(), threading.Event()
    done: list[int] = []

    def reader() -> None:
        with s.read():
            inside.set()
            assert leave.wait(10)

    def updater(n: int) -> None:
        s.synchronize()
        done.append(n)

    with pylockdep.validate() as v:
        r = run_thread(reader)
        assert inside.wait(10)
        updaters = [run_thread(updater, n) for n in range(3)]
        assert done == []
        leave.set()
        join(r, *updaters)
    assert sorted(done) == [0, 1, 2]
    assert v.reports == []


def deadlock_against_this_reader(s: SRCU, m: Mutex) -> tuple[list[str], threading.Thread]:
    """Thread "updater" holds M and synchronizes S; the caller, inside a read side of S, then takes M.

    If synchronize() waits for the caller's read side this is a real deadlock, and one side raises
    DeadlockError; had it wrongly returned, M would be released and nobody would raise.  Returns
    who raised and the updater thread, to be joined once the caller has left its read side.
    """
    outcome: list[str] = []
    m_held = threading.Event()

    def updater() -> None:
        try:
            with m:
                m_held.set()
                s.synchronize()
        except pylockdep.DeadlockError:
            outcome.append("updater")

    thread = run_thread(updater)
    assert m_held.wait(10)
    try:
        with m:
            pass
    except pylockdep.DeadlockError:
        outcome.append("reader")
    return outcome, thread


def test_two_thread_srcu_mutex_deadlock_raises_instead_of_hanging():
    s, m = srcu(), Mutex("mutex_M")
    with pylockdep.validate(raise_on_report=False) as v:
        with s.read():
            outcome, updater = deadlock_against_this_reader(s, m)
        join(updater)
        assert not m.locked()
        s.synchronize()
    assert outcome, "synchronize() returned while a reader it must wait for was inside"
    assert kinds(v) == ["circular"] and sorted(v.reports[0].classes) == ["mutex_M", "srcu_S"]


def test_grace_period_still_waits_for_readers_after_an_aborted_synchronize():
    s, m = srcu(), Mutex("mutex_M")
    with pylockdep.validate(raise_on_report=False) as v:
        with s.read():
            with pytest.raises(pylockdep.DeadlockError):
                s.synchronize()  # flips the counters, then gives up
            # A later synchronize must still wait for this read side, which began before it.
            outcome, updater = deadlock_against_this_reader(s, m)
        join(updater)
    assert outcome, "synchronize() did not wait for a reader left behind by an aborted grace period"
    assert kinds(v)[0] == "recursive"


# -- lockdep: what SRCU deadlocks look like ---------------------------------------------------


def test_synchronize_inside_its_own_read_side_reports_recursive_and_raises():
    s = srcu()
    with pylockdep.validate(raise_on_report=False) as v:
        idx = s.read_lock()
        with pytest.raises(pylockdep.DeadlockError, match="'srcu_S'"):
            s.synchronize()
        s.read_unlock(idx)
        s.synchronize()
    (report,) = v.reports
    assert report.kind == "recursive" and report.classes == ("srcu_S",)
    assert "  lock(srcu_S);\n  lock(srcu_S);" in report.text


def test_synchronize_of_another_srcu_inside_a_read_side_is_fine():
    s1, s2 = srcu("srcu_1"), srcu("srcu_2")
    with pylockdep.validate() as v:
        with s1.read():
            s2.synchronize()
    assert v.reports == []


def scenario(report: pylockdep.Report) -> list[str]:
    lines = report.text.splitlines()
    start = lines.index("       ----                    ----") + 1
    return lines[start : lines.index(" *** DEADLOCK ***") - 1]


def test_mutex_around_synchronize_and_inside_a_reader_sync_last():
    s, m = srcu(), Mutex("mutex_M")
    with pylockdep.validate(raise_on_report=False) as v:
        with s.read():
            with m:
                pass
        with m:
            s.synchronize()
    (report,) = v.reports
    assert report.kind == "circular" and sorted(report.classes) == ["mutex_M", "srcu_S"]
    assert scenario(report) == [
        "  lock(mutex_M);",
        " " * 31 + "lock(srcu_S);",
        " " * 31 + "lock(mutex_M);",
        "  sync(srcu_S);",
    ]


def test_mutex_around_synchronize_and_inside_a_reader_reader_last():
    s, m = srcu(), Mutex("mutex_M")
    with pylockdep.validate(raise_on_report=False) as v:
        with m:
            s.synchronize()
        with s.read():
            with m:
                pass
    (report,) = v.reports
    assert report.kind == "circular" and sorted(report.classes) == ["mutex_M", "srcu_S"]
    assert scenario(report) == [
        "  rlock(srcu_S);",
        " " * 31 + "lock(mutex_M);",
        " " * 31 + "lock(srcu_S);",
        "  lock(mutex_M);",
    ]


@pytest.mark.parametrize("reader_takes", ["read", "write"])
def test_rwsem_write_held_around_synchronize_is_circular(reader_takes: str):
    s, sem = srcu(), RWSemaphore("rwsem_R")
    with pylockdep.validate(raise_on_report=False) as v:
        with s.read():
            with getattr(sem, reader_takes)():
                pass
        with sem.write():
            s.synchronize()
    assert kinds(v) == ["circular"] and sorted(v.reports[0].classes) == ["rwsem_R", "srcu_S"]
    assert scenario(v.reports[0])[-1] == "  sync(srcu_S);"


@pytest.mark.parametrize("n", [2, 3, 4])
def test_n_way_cycle_of_readers_synchronizing_the_next_srcu(n: int):
    ss = [srcu(f"srcu_{i}") for i in range(n)]
    with pylockdep.validate(raise_on_report=False) as v:
        for i in range(n):
            with ss[i].read():
                ss[(i + 1) % n].synchronize()
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(report.classes) == [f"srcu_{i}" for i in range(n)]


def test_an_open_chain_of_srcu_synchronizes_is_not_reported():
    ss = [srcu(f"srcu_{i}") for i in range(3)]
    with pylockdep.validate() as v:
        for i in range(2):
            with ss[i].read():
                ss[i + 1].synchronize()
    assert v.reports == []


def test_nested_readers_and_readers_taking_a_mutex_without_updater_are_not_reported():
    s, m = srcu(), Mutex("mutex_M")
    with pylockdep.validate() as v:
        with s.read():
            with s.read():
                with m:
                    pass
        with m:
            with s.read():  # M -> S as a reader only: no synchronize, no cycle
                pass
    assert v.reports == []


@pytest.mark.parametrize("flavour", [{}, {"prove_raw_lock_nesting": False}, {"preempt_rt": True}])
def test_read_side_is_valid_in_any_context_and_may_sleep(flavour: dict):
    s, raw, m = srcu(), RawSpinLock("raw_R"), Mutex("mutex_M")
    with pylockdep.validate(**flavour) as v:
        with raw:
            with s.read():
                pass
        with pylockdep.hardirq():
            with s.read():
                pass
        with pylockdep.softirq(), s.read():
            pass
        with pylockdep.irqs_disabled(), s.read():
            pass
        with s.read():  # sleeping inside is allowed
            with m:
                pass
            pylockdep.might_sleep()
    assert v.reports == []


def test_synchronize_sleeps_so_it_is_checked_like_any_sleeping_call():
    s, raw = srcu(), RawSpinLock("raw_R")
    with pylockdep.validate(raise_on_report=False) as v:
        with raw:
            s.synchronize()
    (report,) = v.reports
    assert report.kind == "sleep_in_atomic" and report.classes == ("raw_R", "srcu_S")
    assert " synchronize_srcu" in report.text.splitlines()


def test_thread_ending_inside_a_read_side_reports_locks_held_at_exit():
    s = srcu()
    with pylockdep.validate(raise_on_report=False) as v:
        join(run_thread(s.read_lock))
    assert kinds(v) == ["lock_held_at_exit"] and v.reports[0].classes == ("srcu_S",)


def test_no_reader_that_was_inside_when_synchronize_began_is_still_inside_when_it_returns():
    s = srcu()
    inside: set[int] = set()
    guard = threading.Lock()
    violations: list[set[int]] = []
    tokens = iter(range(10**9))
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with s.read():
                with guard:
                    token = next(tokens)
                    inside.add(token)
                time.sleep(0)
                with guard:
                    inside.discard(token)

    def updater() -> None:
        for _ in range(50):
            with guard:
                before = set(inside)
            s.synchronize()
            with guard:
                if before & inside:
                    violations.append(before & inside)

    with pylockdep.validate() as v:
        readers = [run_thread(reader) for _ in range(3)]
        updaters = [run_thread(updater) for _ in range(2)]
        join(*updaters)
        stop.set()
        join(*readers)
    assert violations == []
    assert v.reports == []


def test_two_srcus_of_one_class_report_recursive_without_a_real_deadlock():
    first, second = [SRCU("srcu_same") for _ in range(2)]  # one init site: one class
    with pylockdep.validate(raise_on_report=False) as v:
        with first.read():
            second.synchronize()  # no reader of this instance: returns
    assert kinds(v) == ["recursive"] and v.reports[0].classes == ("srcu_same",)


def test_synchronize_waiting_for_a_thread_that_ended_inside_a_read_side_raises():
    s = srcu()
    with pylockdep.validate(raise_on_report=False) as v:
        join(run_thread(s.read_lock))
        with pytest.raises(pylockdep.DeadlockError, match="threads left open when they ended"):
            s.synchronize()
        assert not s.read_lock_held()
    assert kinds(v) == ["lock_held_at_exit"]
