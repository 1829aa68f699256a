"""Splats as the 3.x kernels printed them (the ``era`` option), report once (``report_once``), and
threads that stand for kernel tasks (``identify_thread``)."""

from __future__ import annotations

import re
import threading

import pytest

import pylockdep


def abba(v: pylockdep.Validator) -> None:
    a, b = pylockdep.Mutex("A"), pylockdep.Mutex("B")
    with a, b:
        pass
    with b, a:
        pass


def test_a_3_x_circular_splat_has_a_bracketed_title_six_usage_characters_and_no_wait_types():
    with pylockdep.validate(era="3.4", raise_on_report=False) as v:
        abba(v)
    (report,) = v.reports
    lines = report.text.splitlines()
    assert report.title == "[ INFO: possible circular locking dependency detected ]"
    assert lines[:2] == ["=" * len(report.title), report.title]
    trying = lines[lines.index(next(x for x in lines if x.endswith("is trying to acquire lock:"))) + 1]
    assert re.fullmatch(r" \(A\)\{\+\.\+\.\.\.\}, at: \[<test_era\.py:\d+>\] abba", trying)
    assert "-{" not in report.text and "<TASK>" not in report.text
    assert re.search(r"^Pid: \d+, comm: MainThread Not tainted ", report.text, re.M)
    assert re.search(r"^ \[<test_era\.py:\d+>\] abba$", report.text, re.M)


def test_the_3_10_dump_line_names_the_cpu():
    with pylockdep.validate(era="3.10", raise_on_report=False) as v:
        abba(v)
    assert re.search(r"^CPU: 0 PID: \d+ Comm: MainThread Not tainted ", v.reports[0].text, re.M)


@pytest.mark.parametrize("era", ["3.4", "3.10"])
def test_lockdep_before_5_7_had_no_wait_context_check(era):
    raw, spin = pylockdep.RawSpinLock("raw"), pylockdep.SpinLock("spin")
    with pylockdep.validate(era=era, raise_on_report=False) as v:
        with raw, spin:
            pass
    assert v.reports == []
    with pylockdep.validate(raise_on_report=False) as modern:
        with raw, spin:
            pass
    assert [r.kind for r in modern.reports] == ["invalid_wait_context"]


def test_an_unknown_era_is_refused_at_the_call():
    with pytest.raises(ValueError, match="era must be one of modern, 3.4, 3.10"):
        pylockdep.validate(era="2.6")
    with pytest.raises(TypeError, match="report_once must be True or False"):
        pylockdep.validate(report_once=1)


def test_report_once_stops_lockdep_after_the_first_report_but_not_might_sleep():
    a, b, c = pylockdep.Mutex("A"), pylockdep.Mutex("B"), pylockdep.Mutex("C")
    raw = pylockdep.RawSpinLock("raw")
    with pylockdep.validate(report_once=True, raise_on_report=False) as v:
        for first, second in ((a, b), (b, a), (b, c), (c, b)):
            with first, second:
                pass
        with raw, a:  # a mutex under a raw spinlock: might_sleep still fires
            pass
    assert [r.kind for r in v.reports] == ["circular", "sleep_in_atomic"]
    assert set(v.reports[0].classes) == {"A", "B"}
    sleep = v.reports[1].text.splitlines()
    assert "INFO: lockdep is turned off." in sleep and not any("held by" in line for line in sleep)


def test_by_default_pylockdep_carries_on_after_a_report():
    a, b, c = pylockdep.Mutex("A"), pylockdep.Mutex("B"), pylockdep.Mutex("C")
    with pylockdep.validate(raise_on_report=False) as v:
        for first, second in ((a, b), (b, a), (b, c), (c, b)):
            with first, second:
                pass
    assert [r.kind for r in v.reports] == ["circular", "circular"]


def kernel_thread_body(lock: pylockdep.Mutex) -> None:
    with lock:
        pylockdep.might_sleep()


def test_an_identified_thread_prints_its_pid_and_cpu_and_ends_its_trace_in_kthread():
    lock = pylockdep.Mutex("L")
    with pylockdep.validate(raise_on_report=False) as v:

        def run() -> None:
            with pylockdep.preempt_disabled():
                kernel_thread_body(lock)

        thread = threading.Thread(target=run, name="kswapd0")
        pylockdep.identify_thread(thread, pid=55, cpu=2, kthread=True, entry=run)
        thread.start()
        thread.join()
    (report,) = v.reports
    lines = report.text.splitlines()
    assert "pid: 55, name: kswapd0" in lines[1]
    assert "CPU: 2 UID: 0 PID: 55 Comm: kswapd0 Not tainted pylockdep 0.1.0" in lines
    at = lines.index("pylockdep: Python frames below the task's entry:")
    assert lines[at - 5 : at] == [lines[at - 5], " kthread", " ret_from_fork", " ret_from_fork_asm", " </TASK>"]
    assert lines[at - 5].startswith(" test_an_identified_thread_prints_its_pid_and_cpu_and_ends_its_trace_in_kthread.")
    assert lines[-1].startswith(" Thread._bootstrap+")
