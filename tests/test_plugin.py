"""The pytest plugin (``pytest --lockdep``), run on small test suites with pytester, in process.

Each inner run happens inside a throwaway ``pylockdep.validate()`` block, so whatever the inner
tests do (with the plugin off, under the process-wide validator) never reaches the validator of
the session running these tests, were it started with ``--lockdep`` too.
"""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

import pylockdep

CIRCULAR = "WARNING: possible circular locking dependency detected"

LOCKS = """\
import pylockdep
A = pylockdep.Mutex("A")
B = pylockdep.Mutex("B")
"""

ABBA = LOCKS + dedent("""
    def test_ab():
        with A, B:
            pass

    def test_ba():
        with B, A:
            pass

    def test_clean():
        with A:
            pass
""")


# hypothesis's plugin costs most of an inner run's time and plays no part here.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run pytest in process on the pytester directory, isolated from the outer validator."""
    with pylockdep.validate(raise_on_report=False):
        return pytester.runpytest(*QUIET, *args)


def failure_text(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines)


# -- on and off ---------------------------------------------------------------------------------


def test_a_suite_that_makes_warnings_errors_runs_with_pylockdep_imported_first(pytester: pytest.Pytester) -> None:
    """``pylockdep run -m pytest`` imports pylockdep before pytest marks the packages of its
    plugins' distributions (pylockdep's, installed as a wheel) for assertion rewriting.  pytest
    warns of a module imported too early unless its docstring says not to rewrite it; a suite
    whose configuration makes warnings errors (loguru's, anyio's) stopped there."""
    pytester.makeconftest(
        """
        import pylockdep

        def pytest_configure(config):  # what pytest does for a plugin's distribution
            config.pluginmanager.rewrite_hook.mark_rewrite("pylockdep")
        """
    )
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess(*QUIET, "-W", "error::pytest.PytestAssertRewriteWarning")
    result.assert_outcomes(passed=1)


def test_off_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA)
    result = run(pytester)
    result.assert_outcomes(passed=3)
    assert "= lockdep =" not in failure_text(result)


def test_the_option_fails_the_test_that_closes_the_cycle(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA)
    result = run(pytester, "--lockdep")
    result.assert_outcomes(passed=2, failed=1)
    out = failure_text(result)
    assert "FAILED test_abba.py::test_ba" in out
    assert "pylockdep: 1 report(s) during the call of test_abba.py::test_ba: circular" in out
    assert CIRCULAR in out
    # Each dependency on the cycle is shown with the test that made it.
    assert "[in test_abba.py::test_ab, thread MainThread/" in out
    assert "[in test_abba.py::test_ba, thread MainThread/" in out
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_the_ini_option_turns_it_on(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlockdep = true\n")
    pytester.makepyfile(test_abba=ABBA)
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    assert CIRCULAR in failure_text(result)


def test_suboptions_without_lockdep_are_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA)
    result = run(pytester, "--lockdep-rt", "--lockdep-json=r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lockdep-rt, --lockdep-json: needs --lockdep*"])


def test_cycle_across_test_files_names_both_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(locks=LOCKS)
    pytester.makepyfile(test_first="from locks import A, B\ndef test_ab():\n    with A, B:\n        pass\n")
    pytester.makepyfile(test_second="from locks import A, B\ndef test_ba():\n    with B, A:\n        pass\n")
    result = run(pytester, "--lockdep", "test_first.py", "test_second.py")
    result.assert_outcomes(passed=1, failed=1)
    out = failure_text(result)
    assert "during the call of test_second.py::test_ba: circular" in out
    assert "[in test_first.py::test_ab, thread " in out


# -- phases -------------------------------------------------------------------------------------


def test_a_report_in_a_fixture_teardown_fails_that_phase(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_teardown=LOCKS
        + dedent("""
        import pytest

        @pytest.fixture
        def takes_ba():
            yield
            with B, A:
                pass

        def test_ab():
            with A, B:
                pass

        def test_uses_fixture(takes_ba):
            pass
    """)
    )
    result = run(pytester, "--lockdep", "-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    out = failure_text(result)
    assert "ERROR at teardown of test_uses_fixture" in out
    assert "during the teardown of test_teardown.py::test_uses_fixture: circular" in out


def test_a_failing_test_keeps_its_own_failure_and_gains_the_splat(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_both=LOCKS
        + dedent("""
        def test_ab():
            with A, B:
                pass

        def test_ba_then_assert():
            with B, A:
                pass
            assert 1 == 2, "its own failure"
    """)
    )
    result = run(pytester, "--lockdep")
    result.assert_outcomes(passed=1, failed=1)
    out = failure_text(result)
    assert "its own failure" in out
    assert CIRCULAR in out


# -- lockdep_expect, the lockdep fixture, nested validators, lockdep_off -------------------------


def test_lockdep_expect_accepts_the_named_kind_and_fails_without_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_expect=LOCKS
        + dedent("""
        import pytest

        def test_ab():
            with A, B:
                pass

        @pytest.mark.lockdep_expect("circular")
        def test_ba_expected(lockdep):
            with B, A:
                pass
            assert [r.kind for r in lockdep] == ["circular"]
            assert lockdep[0].classes == ("A", "B")
            assert lockdep[0].origin == "test_expect.py::test_ba_expected"

        @pytest.mark.lockdep_expect("circular")
        def test_nothing_made():
            with A, B:
                pass
    """)
    )
    result = run(pytester, "--lockdep", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    out = failure_text(result)
    assert "FAILED test_expect.py::test_nothing_made" in out
    assert "test_expect.py::test_nothing_made expected report(s) of kind circular; made: none" in out


def test_lockdep_expect_still_fails_on_other_kinds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_other=LOCKS
        + dedent("""
        import pytest

        def make(name):
            return pylockdep.Mutex(name)

        @pytest.mark.lockdep_expect("circular")
        def test_recursive_instead():
            x, y = make("X"), make("X")
            with x, y:
                pass
    """)
    )
    result = run(pytester, "--lockdep")
    result.assert_outcomes(failed=1)
    out = failure_text(result)
    assert "pylockdep: 1 report(s) during the call of test_other.py::test_recursive_instead: recursive" in out
    assert "expected report(s) of kind circular; made: recursive" in out


def test_the_fixture_without_the_plugin_lists_the_reports_of_the_validator_in_force(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixture=LOCKS
        + dedent("""
        def test_abba(lockdep):
            with A, B:
                pass
            with B, A:
                pass
            assert [(r.kind, r.classes) for r in lockdep] == [("circular", ("A", "B"))]
    """)
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)


def test_own_validate_blocks_are_judged_by_the_test_not_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_nested=LOCKS
        + dedent("""
        def test_checks_pylockdep_itself():
            with pylockdep.validate(raise_on_report=False) as v:
                with A, B:
                    pass
                with B, A:
                    pass
            assert [r.kind for r in v.reports] == ["circular"]

        def test_ba_later():
            with B, A:
                pass
    """)
    )
    result = run(pytester, "--lockdep")
    # The nested validator's A -> B never reached the session graph: B -> A later is no cycle.
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*no reports*"])


def test_lockdep_off_runs_a_test_under_the_validator_from_before_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_off=LOCKS
        + dedent("""
        import pytest

        @pytest.mark.lockdep_off
        def test_outside(lockdep):
            with A, B:
                pass
            with B, A:
                pass
            assert [r.kind for r in lockdep] == ["circular"]

        def test_ab_in_session():
            with A, B:
                pass
    """)
    )
    with pylockdep.validate(raise_on_report=False) as before:
        result = pytester.runpytest(*QUIET, "--lockdep")
    result.assert_outcomes(passed=2)
    assert [(r.kind, r.origin) for r in before.reports] == [("circular", None)]


# -- options, summary and files -----------------------------------------------------------------


def test_lockdep_rt_checks_with_preempt_rt_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_rt="""
        import pylockdep
        RAW = pylockdep.RawSpinLock("raw")
        SPIN = pylockdep.SpinLock("spin")

        def test_spinlock_inside_raw():
            with RAW, SPIN:
                pass
    """
    )
    plain = run(pytester, "--lockdep")
    plain.assert_outcomes(failed=1)
    assert "during the call of test_rt.py::test_spinlock_inside_raw: invalid_wait_context" in failure_text(plain)
    rt = run(pytester, "--lockdep", "--lockdep-rt")
    rt.assert_outcomes(failed=1)
    out = failure_text(rt)
    assert "BUG: sleeping function called from invalid context" in out
    assert "invalid_wait_context" in out


def test_summary_and_output_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA)
    result = run(pytester, "--lockdep", "--lockdep-graph=graph.dot", "--lockdep-json=reports.json")
    result.stdout.fnmatch_lines(
        [
            "*= lockdep =*",
            "1 report(s): circular 1",
            "2 lock classes, 2 dependencies learned",
            "graph written to graph.dot",
            "reports written to reports.json",
        ]
    )
    dot = (pytester.path / "graph.dot").read_text()
    assert dot.startswith("digraph lockdep {")
    assert dot.count(" color=red") == 2  # A -> B and B -> A
    assert 'tooltip="test_abba.py::test_ab, thread MainThread/' in dot
    lines = (pytester.path / "reports.json").read_text().splitlines()
    reports = [json.loads(line) for line in lines]
    assert [(r["kind"], r["classes"], r["origin"]) for r in reports] == [
        ("circular", ["A", "B"], "test_abba.py::test_ba")
    ]
    assert CIRCULAR in reports[0]["text"]


def test_a_report_outside_every_test_fails_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_at_import=LOCKS
        + dedent("""
        def _collection_time_abba():
            with A, B:
                pass
            with B, A:
                pass

        _collection_time_abba()

        def test_fine():
            pass
    """)
    )
    result = run(pytester, "--lockdep")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*1 report(s) made outside any test:*", f"*{CIRCULAR}*"])


def test_a_lock_a_test_leaves_held_by_the_main_thread_is_reported_at_the_sessions_end(
    pytester: pytest.Pytester,
) -> None:
    """Once every fixture is torn down, what the main thread still holds was left held by a test:
    reported as held at exit (as ``pylockdep run`` does at the program's end), naming where it was
    taken, with the rest the thread holds.  A lock a fixture holds across its tests and releases in
    its teardown is not reported; a threading.Lock (any thread may release it) or an RLock that
    nothing refers to any more alone would not be."""
    pytester.makepyfile(
        test_leak=dedent("""
        import threading

        import pytest

        LEAKED = threading.RLock()
        SESSION = threading.RLock()
        PLAIN = threading.Lock()

        @pytest.fixture(scope="module")
        def held():
            with SESSION:
                yield

        def test_leaks(held):
            LEAKED.acquire()
            PLAIN.acquire()
            threading.RLock().acquire()  # dropped: nobody can wait for it

        def test_other(held):
            pass
    """)
    )
    result = run(pytester, "--lockdep", "--lockdep-threading")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*1 report(s) made outside any test:*", "*still has locks held!*", "*(LEAKED@test_leak.py:*at: test_leaks+*"]
    )
    assert "SESSION@" not in result.stdout.str()  # released by the fixture's teardown


def test_a_threading_lock_or_a_dropped_rlock_left_held_by_a_test_is_no_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_left=dedent("""
        import threading

        PLAIN = threading.Lock()

        def test_leaves():
            PLAIN.acquire()  # any thread may release it
            threading.RLock().acquire()  # dropped: nobody can wait for it
    """)
    )
    result = run(pytester, "--lockdep", "--lockdep-threading")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK


def test_the_locks_of_a_library_a_conftest_imports_are_validated(pytester: pytest.Pytester) -> None:
    """A conftest.py that imports the library under test (joblib's does) makes its module-level
    locks as pytest loads it, before the session starts: --lockdep-threading instruments from
    before that, so the library's lock-order cycle is found (it was under pylockdep run only)."""
    pytester.makepyfile(
        mylib=dedent("""
        import threading

        a_lock = threading.Lock()
        b_lock = threading.Lock()

        def one():
            with a_lock, b_lock:
                pass

        def two():
            with b_lock, a_lock:
                pass
    """),
        test_abba=dedent("""
        import mylib

        def test_one():
            mylib.one()

        def test_two():
            mylib.two()
    """),
    )
    pytester.makeconftest("import mylib\n")
    result = run(pytester, "--lockdep", "--lockdep-threading")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*circular*"])
    assert "a_lock@mylib.py" in result.stdout.str()


def test_a_report_held_back_until_validation_ends_is_listed_under_the_test_that_made_it(
    pytester: pytest.Pytester,
) -> None:
    """A cycle through a threading.Lock that a helper returned holding (it may yet prove a
    hand-off signal) is held back until the session ends: the test that made it has passed by
    then, the session fails, and the summary names that test rather than "outside any test"."""
    pytester.makepyfile(
        test_handoff_later="""
        import threading
        a = b = None
        def take():
            a.acquire(); b.acquire(); a.release()  # a -> b, and returns holding b
        def give():
            a.acquire(); a.release(); b.release()  # b -> a
        def test_helpers():
            global a, b
            a, b = threading.Lock(), threading.Lock()
            take(); give()
        def test_other():
            pass
        """
    )
    result = run(pytester, "--lockdep", "--lockdep-threading")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*1 report(s) made by tests but confirmed after them, when validation ended*",
            "made in test_handoff_later.py::test_helpers:",
            f"*{CIRCULAR}*",
        ]
    )
    assert "outside any test" not in result.stdout.str()


# -- conventions (issue 19) ----------------------------------------------------------------------


def test_lockdep_expect_with_an_unknown_kind_is_a_usage_error_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_typo=dedent("""
        import pytest

        @pytest.mark.lockdep_expect("circullar")
        def test_abba():
            pass
    """)
    )
    for args in (("--lockdep",), ()):
        result = run(pytester, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*test_typo.py::test_abba: lockdep_expect('circullar'): unknown report kind*"])
        assert "circular" in result.stderr.str()  # the known kinds are listed
        assert "passed" not in result.stdout.str()


def test_expectation_markers_without_lockdep_are_a_warning(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked=dedent("""
        import pytest

        @pytest.mark.lockdep_expect("circular")
        def test_abba():
            pass
    """)
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*1 test(s) marked lockdep_expect, but lock validation is off*--lockdep*"])
    assert "lock validation is off" not in "\n".join(run(pytester, "--lockdep").outlines)


def test_lockdep_without_threading_says_python_locks_are_not_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA)
    note = "Python's threading locks were not validated*--lockdep-threading*"
    run(pytester, "--lockdep").stdout.fnmatch_lines(["*= lockdep =*", note])
    assert "were not validated" not in "\n".join(run(pytester, "--lockdep", "--lockdep-threading").outlines)


@pytest.mark.parametrize("option", ["--lockdep-dot", "--lockdep-graph", "--lockdep-json"])
def test_an_output_path_that_cannot_be_written_is_a_usage_error_at_startup(pytester: pytest.Pytester, option) -> None:
    pytester.makepyfile(test_abba=ABBA)
    result = run(pytester, "--lockdep", f"{option}=missing-dir/out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option.replace('graph', 'dot')}: cannot write 'missing-dir/out'*"])
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert "passed" not in result.stdout.str()  # no test ran


def test_lockdep_dot_names_the_same_output_as_the_clis_dot(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA)
    run(pytester, "--lockdep", "--lockdep-dot=graph.dot").stdout.fnmatch_lines(["graph written to graph.dot"])
    assert (pytester.path / "graph.dot").read_text().startswith("digraph lockdep {")


def test_a_report_made_by_a_thread_after_the_last_test_fails_the_session(pytester: pytest.Pytester) -> None:
    # The thread closes the cycle once the summary said "no reports" (a conftest hook running
    # after the plugin's tells it when); it is still running when the session ends.
    pytester.makeconftest(
        dedent("""
        import threading, pytest
        go = threading.Event()

        @pytest.hookimpl(trylast=True)
        def pytest_terminal_summary(terminalreporter):
            go.set()
    """)
    )
    pytester.makepyfile(
        test_late=dedent("""
        import threading
        from conftest import go

        a = threading.Lock()
        b = threading.Lock()

        def test_ab():
            with a, b:
                pass

        def test_leaves_a_thread_running():
            def ba():
                go.wait()
                with b, a:
                    pass
            threading.Thread(target=ba, name="late").start()
    """)
    )
    result = pytester.runpytest_subprocess(*QUIET, "--lockdep", "--lockdep-threading")
    result.stdout.fnmatch_lines(["*= lockdep =*", "no reports"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stderr.fnmatch_lines(["pylockdep: 1 report(s) during threads left running by the tests*: circular"])
    assert CIRCULAR in result.stderr.str()


def test_lockdep_html_writes_the_graph_next_to_the_splats(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA)
    result = run(pytester, "--lockdep", "--lockdep-html=page.html")
    result.stdout.fnmatch_lines(["graph and splats (HTML) written to page.html"])
    page = (pytester.path / "page.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "1 report(s)" in page
    assert CIRCULAR in page and "test_abba.py::test_ba" in page
