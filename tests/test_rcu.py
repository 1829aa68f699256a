"""RCU read sides: tracked, never ordered, no sleeping inside; rcu_dereference() outside one is
suspicious RCU usage in the kernel's format (reference/lockdep.md sections 2.4, 2.8, 5)."""

from __future__ import annotations

import re
import sys
import threading

import pytest

import pylockdep
from pylockdep import SRCU, Mutex, RawSpinLock, SpinLock

pytestmark = pytest.mark.timeout(30)

FLAVOURS = [{}, {"prove_raw_lock_nesting": False}, {"preempt_rt": True}]


def kinds(v: pylockdep.Validator) -> list[str]:
    return [r.kind for r in v.reports]


def here() -> int:
    """The caller's line number."""
    return sys._getframe(1).f_lineno


def test_read_sides_nest_and_show_among_held_locks_at_the_users_line():
    m = Mutex("M")
    with pylockdep.validate(raise_on_report=False) as v:
        pylockdep.rcu_read_lock()
        with pylockdep.rcu_read():
            line = here() - 1
            assert pylockdep.RCU.read_lock_held()
            pylockdep.lockdep_assert_held(pylockdep.RCU)
            m.unlock()  # a bad unlock, only to print the held locks
        pylockdep.rcu_read_unlock()
        assert not pylockdep.RCU.read_lock_held()
    (report,) = v.reports
    held = [line for line in report.text.splitlines() if line.startswith(" #")]
    assert len(held) == 2
    assert re.fullmatch(
        r" #1: [0-9a-f]{16} \(rcu_read_lock\)\{\.\.\.\.\}-\{1:3\}, at: "
        rf"test_read_sides_nest\S*\+\S*test_rcu\.py:{line}",
        held[1],
    )


def test_read_side_adds_no_dependencies():
    a = Mutex("A")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.rcu_read():
            pass
        with a, pylockdep.rcu_read():
            pass
        with pylockdep.rcu_read(), SpinLock("S"):
            pass
    assert v.reports == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_spinning_locks_inside_a_read_side_are_fine(flavour: dict):
    with pylockdep.validate(**flavour) as v:
        with pylockdep.rcu_read():
            with SpinLock("spin_S"), RawSpinLock("raw_R"):
                pass
        with pylockdep.hardirq(), pylockdep.rcu_read(), RawSpinLock("raw_R"):
            pass
        with SRCU("srcu_S").read(), pylockdep.rcu_read():
            pass
    assert v.reports == []


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mutex_inside_a_read_side_sleeps_in_atomic_and_has_an_invalid_wait_context(flavour: dict):
    m = Mutex("mutex_M")
    with pylockdep.validate(raise_on_report=False, **flavour) as v:
        with pylockdep.rcu_read():
            with m:
                pass
    # mutex_lock() calls might_sleep() before lockdep sees the acquisition.
    assert kinds(v) == ["sleep_in_atomic", "invalid_wait_context"]
    assert all(r.classes == ("rcu_read_lock", "mutex_M") for r in v.reports)
    lines = v.reports[0].text.splitlines()
    assert "RCU nest depth: 1, expected: 0" in lines  # a PREEMPT_RCU kernel
    assert lines[1].startswith("in_atomic(): 0, irqs_disabled(): 0,")


def test_might_sleep_inside_a_read_side_is_reported():
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.rcu_read():
            line = here() + 1
            pylockdep.might_sleep()
    (report,) = v.reports
    assert report.kind == "sleep_in_atomic" and report.classes == ("rcu_read_lock",)
    assert re.fullmatch(rf"BUG: sleeping function called from invalid context at \S*test_rcu\.py:{line}", report.title)


def test_srcu_synchronize_inside_a_read_side_is_illegal_and_sleeps():
    s = SRCU("srcu_S")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.rcu_read():
            s.synchronize()
    # The kernel's order: lock_sync() (silent here), the RCU warning, then might_sleep().
    assert kinds(v) == ["suspicious_rcu_usage", "sleep_in_atomic"]
    assert v.reports[0].classes == ("srcu_S", "rcu_read_lock")
    assert "Illegal synchronize_srcu() in same-type SRCU (or in RCU) read-side critical section!" in v.reports[0].text


def test_rcu_dereference_outside_a_read_side_is_a_kernel_format_splat():
    m = Mutex("mutex_M")
    with pylockdep.validate(raise_on_report=False) as v:
        with m:
            line = here() + 1
            assert pylockdep.rcu_dereference(42) == 42
    (report,) = v.reports
    assert report.kind == "suspicious_rcu_usage" and report.classes == ("rcu_read_lock",)
    assert report.title == "WARNING: suspicious RCU usage"
    lines = report.text.splitlines()
    assert lines[:2] == ["=" * 29, "WARNING: suspicious RCU usage"] and lines[3] == "-" * 29
    assert re.fullmatch(rf"\S*test_rcu\.py:{line} suspicious rcu_dereference_check\(\) usage!", lines[4])
    assert lines[5:11] == [
        "",
        "other info that might help us debug this:",
        "",
        "",
        "rcu_scheduler_active = 2, debug_locks = 1",
        f"1 lock held by {threading.current_thread().name}/{threading.get_ident()}:",
    ]
    assert re.fullmatch(r" #0: [0-9a-f]{16} \(mutex_M\)\{\+\.\+\.\}-\{4:4\}, at: \S+", lines[11])
    assert lines[12:14] == ["", "stack backtrace:"]
    assert " <TASK>" in lines and any(re.search(rf"test_rcu\.py:{line}$", x) for x in lines[14:])


@pytest.mark.parametrize("flavour", [{}, {"preempt_rt": True}])
def test_rcu_dereference_needs_rcu_read_lock_not_just_preemption_off(flavour: dict):
    with pylockdep.validate(raise_on_report=False, **flavour) as v:
        with pylockdep.rcu_read():
            pylockdep.rcu_dereference(1)
        with pylockdep.preempt_disabled():
            pylockdep.rcu_dereference(1)
        with RawSpinLock("raw_R"):
            pylockdep.rcu_dereference(1)
    assert kinds(v) == ["suspicious_rcu_usage", "suspicious_rcu_usage"]


@pytest.mark.parametrize("flavour, reported", [({}, True), ({"preempt_rt": True}, False)])
def test_a_spinlock_is_an_rcu_read_side_only_on_preempt_rt(flavour: dict, reported: bool):
    with pylockdep.validate(raise_on_report=False, **flavour) as v:
        with SpinLock("spin_S"):
            pylockdep.rcu_dereference(1)
    assert kinds(v) == (["suspicious_rcu_usage"] if reported else [])


def test_suspicious_usage_is_reported_once_per_call_site():
    def deref() -> None:
        pylockdep.rcu_dereference(None)

    with pylockdep.validate(raise_on_report=False) as v:
        for _ in range(3):
            deref()
        pylockdep.rcu_dereference(None)
    assert kinds(v) == ["suspicious_rcu_usage"] * 2


@pytest.mark.usefixtures("plain_threading")
def test_read_side_belongs_to_the_thread_that_entered_it():
    entered, checked = threading.Event(), threading.Event()

    def other() -> None:
        assert entered.wait(10)
        pylockdep.rcu_dereference(1)  # this thread is outside any read side
        checked.set()

    with pylockdep.validate(raise_on_report=False) as v:
        thread = threading.Thread(target=other, name="other")
        thread.start()
        with pylockdep.rcu_read():
            entered.set()
            assert checked.wait(10)
            pylockdep.rcu_dereference(1)
        thread.join(10)
    (report,) = v.reports
    assert report.threads[0].startswith("other/")


def test_unbalanced_rcu_read_unlock_is_a_bad_unlock_balance():
    with pylockdep.validate(raise_on_report=False) as v:
        pylockdep.rcu_read_unlock()
    (report,) = v.reports
    assert report.kind == "bad_unlock_balance"
    assert "is trying to release lock (rcu_read_lock) at:" in report.text


def test_read_side_entered_before_validate_may_end_inside():
    with pylockdep.validate(raise_on_report=False):
        pylockdep.rcu_read_lock()
        with pylockdep.validate() as v:
            pylockdep.rcu_read_unlock()
    assert v.reports == []


def test_assert_held_of_rcu_outside_a_read_side():
    with pylockdep.validate(raise_on_report=False) as v:
        pylockdep.lockdep_assert_held(pylockdep.RCU)
    assert kinds(v) == ["assert_held"] and v.reports[0].classes == ("rcu_read_lock",)


# -- RCU-sched ---------------------------------------------------------------------------------


def test_rcu_sched_read_side_allows_only_spinning_locks_and_adds_no_dependencies():
    raw, spin = pylockdep.RawSpinLock("sched_raw"), pylockdep.SpinLock("sched_spin")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.rcu_read_sched(), raw:
            t = pylockdep.current().task()
            assert (t.preempt, t.spins) == (1, 1)  # rcu_read_lock_sched(), then the raw spinlock
        with raw, pylockdep.rcu_read_sched():  # the other order: a check=0 map makes no cycle
            pass
        assert v.reports == []
        with pylockdep.rcu_read_sched():
            with spin:
                pass
    (report,) = v.reports
    assert report.kind == "invalid_wait_context"
    assert report.classes == ("rcu_read_lock_sched", "sched_spin")
    assert "(rcu_read_lock_sched){....}-{1:2}" in report.text


def test_sleeping_in_an_rcu_sched_read_side_names_where_preemption_was_disabled():
    mutex = pylockdep.Mutex("sched_mutex")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.rcu_read_sched():
            line = sys._getframe().f_lineno - 1
            with mutex:
                pass
    assert [r.kind for r in v.reports] == ["sleep_in_atomic", "invalid_wait_context"]
    text = v.reports[0].text
    assert "in_atomic(): 1, irqs_disabled(): 0" in text
    assert "RCU nest depth: 0, expected: 0" in text  # RCU-sched is not a preemptible-RCU reader
    after = text.split("Preemption disabled at:\n", 1)[1].splitlines()[0]
    assert after.endswith(f"test_rcu.py:{line}")


def test_rcu_dereference_sched_needs_a_sched_read_side_or_preemption_off():
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.rcu_read_sched():
            pylockdep.rcu_dereference_sched(1)
        with pylockdep.preempt_disabled():
            pylockdep.rcu_dereference_sched(2)
        with pylockdep.irqs_disabled():
            pylockdep.rcu_dereference_sched(3)
        assert v.reports == []
        with pylockdep.rcu_read():  # a plain RCU reader is not an RCU-sched one
            assert pylockdep.rcu_dereference_sched(4) == 4
            line = sys._getframe().f_lineno - 1
        with pylockdep.rcu_read_sched():
            pylockdep.rcu_dereference(5)  # nor the other way round
    assert [r.kind for r in v.reports] == ["suspicious_rcu_usage", "suspicious_rcu_usage"]
    assert f"test_rcu.py:{line} suspicious rcu_dereference_check() usage!" in v.reports[0].text
    assert v.reports[1].classes == ("rcu_read_lock",)


def test_unbalanced_rcu_read_unlock_sched_leaves_preemption_alone():
    with pylockdep.validate(raise_on_report=False) as v:
        pylockdep.preempt_disable()
        pylockdep.rcu_read_unlock_sched()
        assert pylockdep.current().task().preempt == 1
        pylockdep.preempt_enable()
    (report,) = v.reports
    assert report.kind == "bad_unlock_balance"
    assert "is trying to release lock (rcu_read_lock_sched) at:" in report.text


def test_data_guarded_by_rcu_sched_is_read_in_its_read_side():
    class Table:
        entries = pylockdep.guarded_by(pylockdep.RCU_SCHED, writer="lock")

        def __init__(self) -> None:
            self.lock = Mutex("sched_table_lock")
            self.entries = []

    table = Table()
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.rcu_read_sched():
            assert table.entries == []
        with table.lock:
            table.entries = [1]
        assert v.reports == []
        assert table.entries == [1]
    (report,) = v.reports
    assert report.kind == "suspicious_rcu_usage"
    assert (
        "reading test_data_guarded_by_rcu_sched_is_read_in_its_read_side.<locals>.Table.entries needs an "
        "RCU-sched read side or sched_table_lock held" in report.text
    )
    with pytest.raises(TypeError, match="no update-side lock"):
        pylockdep.guarded_by("lock", writer=pylockdep.RCU_SCHED)
