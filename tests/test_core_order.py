"""Order rules of the core: trylocks, out-of-order unlocks, nesting subclasses, one report per problem."""

from __future__ import annotations

import threading

import pytest

import pylockdep
from pylockdep import Mutex


def mutexes(*names: str) -> list[Mutex]:
    """One Mutex per name, all made at this line: same name, same class."""
    return [Mutex(name) for name in names]


def kinds(v: pylockdep.Validator) -> list[str]:
    return [r.kind for r in v.reports]


# -- trylock --------------------------------------------------------------------------------------


def test_trylock_adds_no_edge_into_the_lock():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        with a:
            assert b.trylock()
            b.release()
        with b, a:
            pass
    assert v.reports == []


def test_trylock_is_a_source_of_later_edges():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        assert a.trylock()
        with b:
            pass
        a.release()
        with b, a:
            pass
    assert kinds(v) == ["circular"]
    assert sorted(v.reports[0].classes) == ["A", "B"]


def test_edges_reach_past_trylocks_to_the_first_blocking_lock():
    """A new lock depends on every held lock down to and including the first one not trylocked."""
    a, t, c = mutexes("A", "T", "C")
    with pylockdep.validate(raise_on_report=False) as v:
        with a:
            assert t.trylock()
            with c:
                pass
            t.release()
        with c, a:  # A -> C was recorded although T was on top
            pass
    assert kinds(v) == ["circular"]
    assert sorted(v.reports[0].classes) == ["A", "C"]


def test_edges_stop_at_the_first_blocking_lock():
    a, b, c = mutexes("A", "B", "C")
    with pylockdep.validate(raise_on_report=False) as v:
        with a, b, c:  # A -> B, B -> C; A -> C only through B
            pass
        with c, a:
            pass
    assert kinds(v) == ["circular"]
    assert sorted(v.reports[0].classes) == ["A", "B", "C"]


@pytest.mark.timeout(20)
def test_failed_trylock_changes_nothing():
    b, c = mutexes("B", "C")
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with b:
            held.set()
            done.wait()

    with pylockdep.validate(raise_on_report=False) as v:
        worker = threading.Thread(target=holder)
        worker.start()
        held.wait()
        try:
            assert not b.trylock()
            with c:  # B is not held: no B -> C
                pass
        finally:
            done.set()
            worker.join()
        with c, b:
            pass
    assert v.reports == []


# -- unlock order ---------------------------------------------------------------------------------


def test_out_of_order_unlock_replays_the_locks_above():
    """Releasing B from under C retakes C on top of A, which records A -> C directly."""
    a, b, c = mutexes("A", "B", "C")
    with pylockdep.validate(raise_on_report=False) as v:
        a.acquire()
        b.acquire()
        c.acquire()
        b.release()
        c.release()
        a.release()
        with c, a:
            pass
    assert kinds(v) == ["circular"]
    # The shortest path is the replayed edge, not A -> B -> C.
    assert sorted(v.reports[0].classes) == ["A", "C"]
    assert "Chain exists of:" not in v.reports[0].text


def test_unlock_in_any_order_is_not_a_bad_unlock():
    a, b, c = mutexes("A", "B", "C")
    with pylockdep.validate(raise_on_report=False) as v:
        a.acquire()
        b.acquire()
        c.acquire()
        a.release()
        c.release()
        b.release()
        assert not (a.locked() or b.locked() or c.locked())
    assert v.reports == []


# -- nesting subclasses ---------------------------------------------------------------------------


def test_nested_subclass_avoids_recursive_report():
    x1, x2 = mutexes("X", "X")
    with pylockdep.validate(raise_on_report=False) as v:
        with x1, x2.nested(1):
            pass
    assert v.reports == []


def test_nested_subclass_is_a_class_of_its_own():
    x1, x2 = mutexes("X", "X")
    with pylockdep.validate(raise_on_report=False) as v:
        with x1, x2.nested(1):
            pass
        with x1.nested(1), x2:
            pass
    assert kinds(v) == ["circular"]
    assert v.reports[0].classes == ("X", "X")
    assert "(X/1){" in v.reports[0].text


@pytest.mark.parametrize("subclass", [8, 9, -1])
def test_nested_subclass_out_of_range_is_a_value_error(subclass):
    (x,) = mutexes("X")
    with pylockdep.validate(raise_on_report=False) as v:
        with pytest.raises(ValueError, match="subclass"):
            with x.nested(subclass):
                pass
        assert not x.locked()
    assert v.reports == []


@pytest.mark.parametrize("subclass", ["1", 1.0, None])
def test_nested_subclass_of_another_type_is_a_type_error(subclass):
    (x,) = mutexes("X")
    with pylockdep.validate(raise_on_report=False) as v:
        with pytest.raises(TypeError, match=rf"^subclass must be an int from 0 to 7, not {type(subclass).__name__}$"):
            x.nested(subclass)
        with pylockdep.instrument_threading():
            lock = threading.Lock()
        with pytest.raises(TypeError, match="subclass must be an int"):
            pylockdep.nested(lock, subclass)
        assert not x.locked() and not lock.locked()
    assert v.reports == []


# -- one report per problem, then keep going ------------------------------------------------------


def test_same_problem_is_reported_once_and_later_problems_too():
    a, b, c, d = mutexes("A", "B", "C", "D")
    with pylockdep.validate(raise_on_report=False) as v:
        for _ in range(3):
            with a, b:
                pass
            with b, a:
                pass
        with c, d:
            pass
        with d, c:
            pass
    assert kinds(v) == ["circular", "circular"]
    assert [sorted(r.classes) for r in v.reports] == [["A", "B"], ["C", "D"]]


def test_acquisition_after_a_report_still_happens_and_is_tracked():
    a, b = mutexes("A", "B")
    a1, a2 = mutexes("A2", "A2")
    with pylockdep.validate(raise_on_report=False) as v:
        with a, b:
            pass
        with b, a:  # circular; A is still taken and held
            assert a.locked()
            pylockdep.lockdep_assert_held(a)
        with a1, a2:  # a different problem
            pass
    assert kinds(v) == ["circular", "recursive"]
    assert v.reports[1].classes == ("A2",)
