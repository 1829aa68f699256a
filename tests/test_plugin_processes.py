"""The pytest plugin across processes: pytest-xdist workers merged by the controller, and the
lock dump printed before pytest-timeout ends a hung test.  Each case runs pytest in a subprocess.
"""

from __future__ import annotations

import json

import pytest

CIRCULAR = "WARNING: possible circular locking dependency detected"
MERGED_ONLY = "cycle(s) that only the merged graph shows:"
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

LOCKS = """
import pylockdep
A = pylockdep.Mutex("A")
B = pylockdep.Mutex("B")
"""

AB = "from locks import A, B\n\ndef test_ab():\n    with A, B:\n        pass\n"
BA = "from locks import A, B\n\ndef test_ba():\n    with B, A:\n        pass\n"


def run_xdist(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Two workers, one test file each (``--dist loadfile``)."""
    return pytester.runpytest_subprocess(
        *QUIET, "-p", "xdist", "-n", "2", "--dist", "loadfile", "--lockdep", *args, timeout=120
    )


@pytest.mark.timeout(150)
def test_xdist_controller_reports_a_cycle_only_the_union_shows(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(locks=LOCKS, test_one=AB, test_two=BA)
    result = run_xdist(pytester, "--lockdep-json=reports.json", "--lockdep-graph=graph.dot")
    out = "\n".join(result.outlines)
    result.assert_outcomes(passed=2)  # neither worker saw the cycle
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert f"1 {MERGED_ONLY}" in out
    assert "(graphs of 2 xdist workers merged)" in out
    assert CIRCULAR in out
    assert "no single process saw this cycle; the union of their graphs closes it." in out
    # Each dependency is named with the test and the worker that made it.
    workers = {}
    for test in ("test_one.py::test_ab", "test_two.py::test_ba"):
        line = next(line for line in result.outlines if f"[in {test}, gw" in line)
        workers[test] = line.split(", ")[1]
    assert sorted(workers.values()) == ["gw0", "gw1"]
    reports = [json.loads(line) for line in (pytester.path / "reports.json").read_text().splitlines()]
    assert [(r["kind"], sorted(r["classes"])) for r in reports] == [("circular", ["A", "B"])]
    dot = (pytester.path / "graph.dot").read_text()
    assert dot.count(" color=red") == 2


@pytest.mark.timeout(150)
def test_xdist_controller_leaves_a_cycle_one_worker_saw_to_that_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        locks=LOCKS, test_one=AB + "\n\n" + BA.split("\n\n", 1)[1], test_two="def test_clean():\n    pass\n"
    )
    result = run_xdist(pytester, "--lockdep-json=reports.json")
    out = "\n".join(result.outlines)
    result.assert_outcomes(passed=2, failed=1)
    assert "FAILED test_one.py::test_ba" in out
    assert MERGED_ONLY not in out
    reports = [json.loads(line) for line in (pytester.path / "reports.json").read_text().splitlines()]
    assert [(r["kind"], r["origin"], r["worker"][:2]) for r in reports] == [("circular", "test_one.py::test_ba", "gw")]


HANG_ON_MUTEX = """
import threading
import pylockdep

def test_hangs():
    mutex = pylockdep.Mutex("held_mutex")
    never, holding = threading.Event(), threading.Event()

    def holder():
        with mutex:
            holding.set()
            never.wait()

    threading.Thread(target=holder, name="holder", daemon=True).start()
    holding.wait()
    mutex.acquire()  # the holder waits on an Event, which is no lock: a real hang
"""

HANG_ON_THREADING = """
import threading, pylockdep

def test_abba_hangs():
    a = threading.Lock()
    b = threading.Lock()
    a.acquire(); handoff = threading.Thread(target=a.release); handoff.start(); handoff.join()
    m, n = pylockdep.Mutex("m"), pylockdep.Mutex("n")
    with m, n:
        pass
    with n, m:  # a report made before the hang
        pass
    got_a = threading.Event()

    def ab():
        with a:
            got_a.set()
            with b:
                pass

    with b:
        threading.Thread(target=ab, name="ab", daemon=True).start()
        got_a.wait()
        with a:  # a hand-off signal (released by another thread): nobody in particular must release it
            pass
"""


# The dump comes a second before the timeout (1.5 s with --timeout=2): room for a slow machine.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["thread", "signal"])
def test_hung_test_prints_held_locks_before_pytest_timeout_ends_it(pytester: pytest.Pytester, method: str) -> None:
    pytester.makepyfile(test_hang=HANG_ON_MUTEX)
    result = pytester.runpytest_subprocess(*QUIET, "--lockdep", "--timeout=4", f"--timeout-method={method}", timeout=50)
    out = "\n".join(result.outlines + result.errlines)
    assert result.ret != 0
    if method == "signal":  # the test fails and the session goes on
        result.assert_outcomes(failed=1)
        assert "Failed: Timeout (>4.0s) from pytest-timeout." in out
    assert "test_hang.py::test_hangs still running after" in out
    assert "pytest-timeout stops it at 4 s." in out
    lines = out.splitlines()
    blocked = lines.index(next(line for line in lines if line.startswith("INFO: task MainThread/")))
    assert lines[blocked].endswith("blocked on lock:")
    assert "(held_mutex){+.+.}" in lines[blocked + 1]
    assert lines[blocked + 2].startswith(" held by: holder/")
    shown = lines.index("Showing all locks held in the system:")
    assert lines[shown + 1].startswith("1 lock held by holder/")
    assert "(held_mutex){+.+.}" in lines[shown + 2] and "holder+test_hang.py:" in lines[shown + 2]
    assert out.index("Showing all locks held in the system:") < out.rindex("Timeout")


@pytest.mark.timeout(60)
def test_hang_dump_with_instrumented_threading_shows_the_abba(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_thr=HANG_ON_THREADING)
    result = pytester.runpytest_subprocess(
        *QUIET, "--lockdep", "--lockdep-threading", "--timeout=4", "--timeout-method=thread", timeout=50
    )
    out = "\n".join(result.outlines + result.errlines)
    assert result.ret != 0
    assert "Showing all locks held in the system:" in out
    # Each thread holds one lock and waits for the other's; the thread "ab" also runs under its
    # completion map, listed first as the kernel lists a work item's maps.
    assert "1 lock held by MainThread/" in out
    assert "2 locks held by ab/" in out
    assert " #0: " in out and "((thread)test_thr.py:" in out
    assert out.count("blocked on lock:") == 2
    assert "(Lock@test_thr.py:4)" in out and "(Lock@test_thr.py:5)" in out
    # The circular report made before the hang (of the mutexes) is printed with it.
    assert "pylockdep: 1 report(s) during test_thr.py::test_abba_hangs so far: circular" in out


FORKS = (
    LOCKS
    + """
import multiprocessing, os

def abba():
    with A, B:
        pass
    with B, A:
        pass

def test_forks_a_child_that_closes_a_cycle():
    for _ in range(2):
        child = multiprocessing.get_context("fork").Process(target=abba)
        child.start()
        child.join()
        assert child.exitcode == 0

def test_clean():
    with A:
        pass
"""
)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
@pytest.mark.timeout(60)
def test_a_report_a_forked_child_makes_fails_the_test_that_forked_it(pytester: pytest.Pytester) -> None:
    """multiprocessing's fork child ends in os._exit(): its report reaches the session's process,
    which fails the test that was running (once, though two children made it) and counts it."""
    pytester.makepyfile(test_forks=FORKS)
    result = pytester.runpytest_subprocess(*QUIET, "--lockdep", "--lockdep-json=reports.json", timeout=50)
    result.assert_outcomes(passed=1, failed=1)
    out = "\n".join(result.outlines)
    assert "FAILED test_forks.py::test_forks_a_child_that_closes_a_cycle" in out
    during = "pylockdep: 1 report(s) during the call of test_forks.py::test_forks_a_child_that_closes_a_cycle"
    assert f"{during}: circular" in out
    reports = [json.loads(line) for line in (pytester.path / "reports.json").read_text().splitlines()]
    assert [(r["kind"], sorted(r["classes"]), r["origin"]) for r in reports] == [
        ("circular", ["A", "B"], "test_forks.py::test_forks_a_child_that_closes_a_cycle")
    ]
