"""Actual deadlocks: a wait that would never end raises DeadlockError instead of hanging."""

from __future__ import annotations

import threading
import time

import pytest

import pylockdep
from pylockdep import Mutex, _waitfor

pytestmark = pytest.mark.timeout(30)


def mutexes(*names: str) -> list[Mutex]:
    """One Mutex per name, all made at this line: same name, same class."""
    return [Mutex(name) for name in names]


def run_abba_threads(a: Mutex, b: Mutex) -> dict[str, str]:
    """Two threads take A then B and B then A, each holding its first lock before asking for the second."""
    first_taken = {name: threading.Event() for name in ("ab", "ba")}
    outcome: dict[str, str] = {}

    def worker(name: str, other: str, x: Mutex, y: Mutex) -> None:
        try:
            with x:
                first_taken[name].set()
                assert first_taken[other].wait(10)
                with y:
                    pass
            outcome[name] = "done"
        except pylockdep.DeadlockError as exc:
            outcome[name] = f"deadlock: {exc}"

    threads = [
        threading.Thread(target=worker, args=("ab", "ba", a, b), name="ab"),
        threading.Thread(target=worker, args=("ba", "ab", b, a), name="ba"),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
        assert not t.is_alive(), "a thread hung"
    return outcome


def test_two_thread_abba_raises_in_one_thread_and_the_other_proceeds():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        outcome = run_abba_threads(a, b)
        assert not a.locked() and not b.locked()
    assert sorted(outcome) == ["ab", "ba"]
    deadlocked = [name for name, result in outcome.items() if result.startswith("deadlock: ")]
    assert len(deadlocked) == 1 and list(outcome.values()).count("done") == 1, outcome
    assert "waits for 'A'" in outcome[deadlocked[0]] and "waits for 'B'" in outcome[deadlocked[0]]
    # The potential deadlock was reported as well, before the wait.
    assert [r.kind for r in v.reports] == ["circular"]
    assert sorted(v.reports[0].classes) == ["A", "B"]


def test_reacquiring_a_held_mutex_reports_then_raises():
    (a,) = mutexes("A")
    with pylockdep.validate(raise_on_report=False) as v:
        with a:
            with pytest.raises(pylockdep.DeadlockError, match="'A'"):
                a.acquire()
            assert [r.kind for r in v.reports] == ["recursive"]
            pylockdep.lockdep_assert_held(a)  # still held once
        assert not a.locked()
    assert [r.kind for r in v.reports] == ["recursive"]


def test_waiting_for_a_lock_another_thread_will_release_is_not_a_deadlock():
    (a,) = mutexes("A")
    taken, waiting = threading.Event(), threading.Event()

    def holder() -> None:
        with a:
            taken.set()
            waiting.wait(10)

    with pylockdep.validate(raise_on_report=False) as v:
        worker = threading.Thread(target=holder)
        worker.start()
        taken.wait(10)
        threading.Timer(0.1, waiting.set).start()
        with a:
            pass
        worker.join()
    assert v.reports == []


def test_a_wait_over_within_its_first_slice_runs_no_deadlock_check(monkeypatch):
    # A lock held for a few lines by another thread: the waiter gets it within the first slice of
    # its wait (in C on the fast path), without the cost of marking itself waiting and searching
    # for a cycle.  Each round, the holder lets go 2 ms after the waiter asked, well within the
    # 10 ms slice; a busy machine may delay either thread, so a few rounds must show it, not all.
    checked: list[object] = []
    check = _waitfor._check
    monkeypatch.setattr(
        _waitfor, "_check", lambda v, t, lock, mode, alone: (checked.append(lock), check(v, t, lock, mode, alone))[1]
    )
    (a,) = mutexes("A")
    quick = 0
    with pylockdep.validate(raise_on_report=False) as v:
        for _ in range(30):
            checked.clear()
            asking = threading.Event()

            def waiter(asking: threading.Event = asking) -> None:
                asking.set()
                with a:
                    pass

            with a:
                worker = threading.Thread(target=waiter)
                worker.start()
                assert asking.wait(10)
                time.sleep(0.002)
            worker.join(10)
            assert not worker.is_alive()
            quick += not checked
            if quick == 3:
                break
        assert quick == 3, "every wait ran the deadlock check"
        # Waits that outlast the slice still run it (and the threads still found their deadlock
        # in the tests above); none of this is a report.
        (b,) = mutexes("B")
        with b:
            worker = threading.Thread(target=lambda: b.acquire() and b.release())
            worker.start()
            time.sleep(0.1)
        worker.join(10)
        assert b in checked
    assert v.reports == []
