"""Actual deadlocks: a wait that would never end raises DeadlockError instead of hanging."""

from __future__ import annotations

import threading

import pytest

import pylockdep
from pylockdep import Mutex

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
