"""``pylockdep run``: programs run as Python would run them, threading validated from their first line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from _abba import ABBA_PROGRAM as ABBA

pytestmark = pytest.mark.timeout(120)

CLEAN_PROGRAM = """\
import concurrent.futures, logging, queue, threading
logging.basicConfig(level=logging.INFO, format="%(threadName)s %(message)s")
log = logging.getLogger("demo")
work = queue.Queue()
done = threading.Condition()
results = []
def consumer():
    while (item := work.get()) is not None:
        with done:
            results.append(item)
            done.notify_all()
        log.info("got %d", item)
threads = [threading.Thread(target=consumer) for _ in range(2)]
for t in threads:
    t.start()
with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    for item in pool.map(lambda i: i * i, range(10)):
        work.put(item)
with done:
    done.wait_for(lambda: len(results) == 10)
for _ in threads:
    work.put(None)
for t in threads:
    t.join()
log.info("sum %d", sum(results))
"""


def pylockdep_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pylockdep run ARGS`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=100
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_refusing_no_wait(tmp_path: Path, name: str, program: str) -> subprocess.CompletedProcess[str]:
    """Write ``program`` (dedented) to ``name``, run it under ``pylockdep run``, and check that no
    wait of it was refused (no ``DeadlockError``)."""
    write(tmp_path / name, program)
    result = pylockdep_run(name, cwd=tmp_path)
    assert "DeadlockError" not in result.stderr, result.stderr
    return result


def test_abba_is_reported_and_exits_66_with_json_and_dot(tmp_path):
    write(tmp_path / "abba.py", ABBA)
    result = pylockdep_run("--json", "reports.jsonl", "--dot", "graph.dot", "abba.py", cwd=tmp_path)
    assert result.returncode == 66
    assert "WARNING: possible circular locking dependency detected" in result.stderr
    (report,) = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert report["kind"] == "circular"
    assert sorted(report["classes"]) == ["a@abba.py:2", "b@abba.py:3"]
    dot = (tmp_path / "graph.dot").read_text()
    assert dot.startswith("digraph") and "a@abba.py:2" in dot and "b@abba.py:3" in dot


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_report_a_forked_child_makes_counts_in_the_runs_verdict(tmp_path):
    """multiprocessing's fork children end in os._exit(), with no verdict of their own: their
    reports (the same ABBA in two children) reach the run's verdict, counted once, and its exit
    status.  The parent took no lock: it made none."""
    write(
        tmp_path / "forks.py",
        """\
        import multiprocessing, threading
        a, b = threading.Lock(), threading.Lock()

        def child():
            with a:
                with b:
                    pass
            with b:
                with a:
                    pass

        if __name__ == "__main__":
            for _ in range(2):
                process = multiprocessing.get_context("fork").Process(target=child)
                process.start()
                process.join()
            print("exit codes", process.exitcode)
        """,
    )
    result = pylockdep_run("forks.py", cwd=tmp_path)
    assert result.stdout == "exit codes 0\n", result.stderr
    assert result.returncode == 66, result.stderr
    assert result.stderr.count("WARNING: possible circular locking dependency detected") == 2
    assert result.stderr.endswith("pylockdep: 1 report(s): circular (1 in forked processes)\n"), result.stderr


def test_a_program_using_logging_queue_futures_and_condition_runs_clean(tmp_path):
    write(tmp_path / "program.py", CLEAN_PROGRAM)
    result = pylockdep_run("program.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sum 285" in result.stderr
    assert "WARNING" not in result.stderr and "BUG" not in result.stderr


def test_script_gets_argv_path_and_main_as_python_gives_them(tmp_path):
    (tmp_path / "sub").mkdir()
    write(
        tmp_path / "sub" / "show.py",
        """\
        import json, sys
        print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__}))
    """,
    )
    result = pylockdep_run(os.path.join("sub", "show.py"), "a", "-v", "--json", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "argv": [os.path.join("sub", "show.py"), "a", "-v", "--json", "x"],
        "path0": str((tmp_path / "sub").resolve()),
        "name": "__main__",
    }


def test_module_gets_argv_path_and_main_as_python_gives_them(tmp_path):
    write(
        tmp_path / "showmod.py",
        """\
        import json, sys
        print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__}))
    """,
    )
    result = pylockdep_run("-m", "showmod", "-x", "y", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "argv": [str(tmp_path / "showmod.py"), "-x", "y"],
        "path0": str(tmp_path),
        "name": "__main__",
    }


@pytest.mark.parametrize(
    ("body", "status", "stderr"),
    [
        ("pass", 0, ""),
        ("raise SystemExit(7)", 7, ""),
        ("import sys; sys.exit('bye')", 1, "bye"),
        ("raise ValueError('boom')", 1, 'File "fails.py", line 1'),
    ],
)
def test_without_reports_the_programs_own_status(tmp_path, body, status, stderr):
    write(tmp_path / "fails.py", body + "\n")
    result = pylockdep_run("fails.py", cwd=tmp_path)
    assert result.returncode == status
    assert stderr in result.stderr
    assert "cli.py" not in result.stderr  # the traceback starts in the program


def test_a_report_wins_over_the_programs_status(tmp_path):
    write(tmp_path / "abba_exit.py", ABBA + "raise SystemExit(0)\n")
    assert pylockdep_run("abba_exit.py", cwd=tmp_path).returncode == 66


def test_threads_still_running_when_main_ends_are_waited_for_and_validated(tmp_path):
    write(
        tmp_path / "late.py",
        """\
        import concurrent.futures, threading
        a = threading.Lock()
        b = threading.Lock()
        go = threading.Event()
        def ab():
            with a, b:
                pass
        def ba():
            go.wait()
            with b, a:
                pass
        ab()
        threading.Thread(target=ba).start()
        pool = concurrent.futures.ThreadPoolExecutor()  # never shut down: the exit hooks do it
        pool.submit(go.set)
    """,
    )
    result = pylockdep_run("late.py", cwd=tmp_path)
    assert result.returncode == 66
    assert "circular" in result.stderr


def test_locks_are_instrumented_from_the_programs_first_line(tmp_path):
    write(
        tmp_path / "first.py",
        """\
        import logging, sys
        print(logging._lock._key.name, logging.StreamHandler().lock._key.name)
        print("asyncio" in sys.modules)
    """,
    )
    result = pylockdep_run("first.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module_lock, handler_lock, asyncio_loaded = result.stdout.split()
    assert module_lock.startswith("_lock@logging/__init__.py:")  # two classes: the module's lock...
    assert handler_lock.startswith("StreamHandler.lock@logging/__init__.py:")  # ...and each handler type's
    assert module_lock != handler_lock
    assert asyncio_loaded == "False"  # pylockdep itself imported nothing that makes locks


def test_importing_pylockdep_leaves_heavy_modules_alone():
    """``import pylockdep`` stays cheap: none of pathlib (which brings urllib.parse and ipaddress),
    asyncio, subprocess, argparse or tomllib.  Run with ``-S``, the package found through
    PYTHONPATH, so that what site imports (an editable install's finder imports pathlib) hides
    nothing."""
    import pylockdep

    heavy = ["pathlib", "asyncio", "subprocess", "argparse", "tomllib"]
    code = f"import sys; import pylockdep; print(sorted(set({heavy!r}) & set(sys.modules)))"
    home = os.path.dirname(os.path.dirname(pylockdep.__file__))
    env = {**os.environ, "PYTHONPATH": home}
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]"]


def test_the_installed_package_has_its_bytecode_caches():
    """Every module of pylockdep has a bytecode cache for this interpreter, so that a ``pylockdep
    run`` does not compile the package again (where ``PYTHONDONTWRITEBYTECODE`` is set, Python
    never writes one): pip writes them for a regular install, setup.py's build for an editable one
    (reinstall after adding a module)."""
    import importlib.util

    import pylockdep

    package = os.path.dirname(pylockdep.__file__)
    modules = [os.path.join(package, name) for name in os.listdir(package) if name.endswith(".py")]
    missing = [path for path in modules if not os.path.exists(importlib.util.cache_from_source(path))]
    assert len(modules) > 30
    assert missing == []


# A Lock left held by the main thread at the end, which nobody released, is leaked: reported too;
# unless nothing refers to it any more (dropping a locked Lock is legal: nobody can wait for it).
@pytest.mark.parametrize(
    ("program", "status"),
    [
        ("lock = threading.RLock()\nlock.acquire()", 66),
        ("lock = threading.Lock()\nlock.acquire()", 66),
        ("threading.Lock().acquire()", 0),
        ("threading.RLock().acquire()", 0),
    ],
)
def test_main_thread_ending_with_a_lock_held(tmp_path, program, status):
    write(tmp_path / "held.py", f"import threading\n{program}\n")
    result = pylockdep_run("held.py", cwd=tmp_path)
    assert result.returncode == status
    assert ("MainThread" in result.stderr and "still has locks held!" in result.stderr) == bool(status)
    assert result.stderr.count("still has locks held!") == bool(status)
    if status:  # once, before the verdict
        assert result.stderr.index("still has locks held!") < result.stderr.index("pylockdep: 1 report(s)")


def test_kernel_flavour_options(tmp_path):
    write(
        tmp_path / "nesting.py",
        """\
        import pylockdep
        raw = pylockdep.RawSpinLock("raw")
        spin = pylockdep.SpinLock("spin")
        with raw, spin:
            pass
    """,
    )
    assert pylockdep_run("nesting.py", cwd=tmp_path).returncode == 66
    assert pylockdep_run("--no-raw-nesting", "nesting.py", cwd=tmp_path).returncode == 0
    assert pylockdep_run("--no-raw-nesting", "--preempt-rt", "nesting.py", cwd=tmp_path).returncode == 66


@pytest.mark.parametrize("args", [[], ["-m"], ["--json"]])
def test_usage_errors_exit_2(tmp_path, args):
    result = pylockdep_run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: pylockdep run" in result.stderr


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("pylockdep")
    if not script.exists():
        pytest.skip("the pylockdep console script is not installed next to this interpreter")
    write(tmp_path / "abba.py", ABBA)
    assert (
        subprocess.run([str(script), "run", "abba.py"], cwd=tmp_path, capture_output=True, timeout=100).returncode == 66
    )


def assert_runs_clean(*unittest_args: str, timeout: float) -> None:
    """``pylockdep run -m unittest ARGS`` passes, with no report."""
    result = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", "-m", "unittest", *unittest_args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stderr
    assert "WARNING" not in result.stderr and "BUG" not in result.stderr


def test_cpython_queue_tests_run_clean():
    pytest.importorskip("test.test_queue", reason="CPython's test package is not installed")
    assert_runs_clean("test.test_queue", timeout=110)


def test_cpython_thread_tests_run_clean():
    """CPython's test_thread: _thread's locks (made after instrumentation, so validated), a lock
    factory kept as a class attribute, hand-offs to threads started with _thread, and locks
    dropped while held."""
    pytest.importorskip("test.test_thread", reason="CPython's test package is not installed")
    assert_runs_clean("test.test_thread", timeout=110)


@pytest.mark.timeout(300)
def test_cpython_thread_pool_tests_run_clean():
    """CPython's test_concurrent_futures, its thread-pool half: waits on futures, map, shutdown,
    pools dropped without shutdown (shipped here with 3.13 only)."""
    pytest.importorskip("test.test_concurrent_futures", reason="CPython's test package has no test_concurrent_futures")
    assert_runs_clean("test.test_concurrent_futures", "-k", "ThreadPool", timeout=280)


# -- conventions: exit statuses, usage, where splats go (issue 19's first paragraph) ----------


def test_exit_code_sets_the_report_status(tmp_path):
    write(tmp_path / "abba.py", ABBA)
    assert pylockdep_run("--exit-code", "3", "abba.py", cwd=tmp_path).returncode == 3


@pytest.mark.parametrize(
    ("option", "value", "wrong"),
    [
        ("--exit-code", "0", "must be an exit status from 1 to 255"),  # a run with reports would pass
        ("--exit-code", "256", "must be an exit status from 1 to 255"),  # the system makes it 0
        ("--exit-code", "-1", "must be an exit status from 1 to 255"),
        ("--hang-timeout", "0", "must be a positive number of seconds"),
        ("--hang-timeout", "nan", "must be a positive number of seconds"),
        ("--hang-timeout", "inf", "must be a positive number of seconds"),
    ],
)
def test_an_option_value_out_of_range_is_a_usage_error(tmp_path, option, value, wrong):
    write(tmp_path / "prog.py", "print('the program ran')\n")
    result = pylockdep_run(option, value, "prog.py", cwd=tmp_path)
    assert result.returncode == 2
    assert f"argument {option}: {wrong}, not {value!r}" in result.stderr
    assert "the program ran" not in result.stdout


def test_a_missing_script_is_a_usage_error_not_a_report(tmp_path):
    result = pylockdep_run("nonexistent.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: pylockdep run" in result.stderr and "nonexistent.py" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["--json", "--dot", "--report-file"])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_program_runs(tmp_path, option):
    write(tmp_path / "prog.py", "print('the program ran')\n")
    result = pylockdep_run(option, str(tmp_path / "missing-dir" / "out"), "prog.py", cwd=tmp_path)
    assert result.returncode == 2
    assert f"argument {option}: cannot write" in result.stderr and "missing-dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert "the program ran" not in result.stdout


def test_an_unknown_option_shows_runs_usage(tmp_path):
    write(tmp_path / "prog.py", "pass\n")
    result = pylockdep_run("--bogus", "prog.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: pylockdep run" in result.stderr and "--bogus" in result.stderr


def test_splats_reach_the_real_stderr_when_pytest_captures_it(tmp_path):
    write(
        tmp_path / "test_abba.py",
        """\
        import threading
        a = threading.Lock()
        b = threading.Lock()
        def test_ab():
            with a, b:
                pass
        def test_ba():
            with b, a:
                pass
    """,
    )
    result = pylockdep_run("-m", "pytest", "-q", "-p", "no:cacheprovider", "test_abba.py", cwd=tmp_path)
    assert result.returncode == 66
    assert "2 passed" in result.stdout  # pytest saw nothing wrong: the splat went around its capture
    assert "WARNING: possible circular locking dependency detected" in result.stderr
    assert "a@test_abba.py:2" in result.stderr and "b@test_abba.py:3" in result.stderr


def test_report_file_gets_every_splat(tmp_path):
    write(tmp_path / "abba.py", ABBA)
    result = pylockdep_run("--report-file", "splats.txt", "abba.py", cwd=tmp_path)
    assert result.returncode == 66
    text = (tmp_path / "splats.txt").read_text()
    assert text.count("WARNING: possible circular locking dependency detected") == 1
    assert text.strip() in result.stderr


def test_reports_made_by_exit_hooks_count(tmp_path):
    write(
        tmp_path / "atexit_ba.py",
        """\
        import atexit, threading
        a = threading.Lock()
        b = threading.Lock()
        with a, b:
            pass
        @atexit.register
        def close():
            with b, a:
                pass
    """,
    )
    result = pylockdep_run("atexit_ba.py", cwd=tmp_path)
    assert result.returncode == 66
    splat = result.stderr.index("possible circular locking dependency")
    assert splat < result.stderr.index("pylockdep: 1 report(s): circular")


def test_a_report_made_after_the_verdict_still_sets_the_exit_status(tmp_path):
    # A daemon thread closes a cycle only once the verdict was given (the program wraps it to
    # say when), while the interpreter shuts down.
    write(
        tmp_path / "daemon.py",
        """\
        import sys, threading, time
        a = threading.Lock()
        b = threading.Lock()
        with a, b:
            pass
        go = threading.Event()
        def ba():
            go.wait()
            with b, a:
                pass
        threading.Thread(target=ba, daemon=True, name="late").start()
        Verdict = sys.modules["pylockdep.cli"]._Verdict
        summary = Verdict.summary
        def summary_then_a_late_report(self, status):
            status = summary(self, status)
            go.set()
            while len(self.v.reports) == self.given:
                time.sleep(0.01)
            return status
        Verdict.summary = summary_then_a_late_report
    """,
    )
    result = pylockdep_run("daemon.py", cwd=tmp_path)
    assert "possible circular locking dependency" in result.stderr and "Comm: late" in result.stderr
    assert "pylockdep: 1 more report(s) made while the interpreter shut down" in result.stderr
    assert result.returncode == 66


def test_a_daemon_thread_still_running_at_exit_has_not_ended_holding_anything(tmp_path):
    write(
        tmp_path / "daemon_holds.py",
        """\
        import threading
        r = threading.RLock()
        started = threading.Event()
        def hold():
            with r:
                started.set()
                threading.Event().wait()
        threading.Thread(target=hold, daemon=True, name="bg").start()
        started.wait()
    """,
    )
    result = pylockdep_run("daemon_holds.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "still has locks held" not in result.stderr


@pytest.mark.parametrize("packed", ["directory", "zip"])
def test_a_directory_or_zip_with_a_main_module_runs_as_python_runs_it(tmp_path, packed):
    main = "import sys\n" + ABBA + "print(sys.path[0] == sys.argv[0])\n"
    if packed == "directory":
        (tmp_path / "app").mkdir()
        write(tmp_path / "app" / "__main__.py", main)
    else:
        with zipfile.ZipFile(tmp_path / "app", "w") as archive:
            archive.writestr("__main__.py", main)
    result = pylockdep_run("app", cwd=tmp_path)
    assert result.returncode == 66, result.stderr
    assert result.stdout.endswith("True\n") and "pylockdep: 1 report(s): circular" in result.stderr


def test_a_directory_without_a_main_module_is_refused_as_python_refuses_it(tmp_path):
    (tmp_path / "app").mkdir()
    result = pylockdep_run("app", cwd=tmp_path)
    assert result.returncode == 2 and "can't find '__main__' module in 'app'" in result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("flag", ["--json", "--report-file", "--record"])
def test_an_output_file_that_cannot_be_written_is_named_once_and_the_run_goes_on(tmp_path, flag):
    write(tmp_path / "abba.py", ABBA)
    result = pylockdep_run(flag, "/dev/full", "abba.py", cwd=tmp_path)
    assert result.returncode == 66
    assert result.stderr.count("pylockdep: could not write /dev/full: OSError:") == 1, result.stderr
    assert "Traceback" not in result.stderr and "pylockdep: 1 report(s): circular" in result.stderr


# -- hangs -----------------------------------------------------------------------------------

HANGS = """\
import threading
a = threading.Lock()
with a:
    threading.Thread(target=a.acquire, name="waiter", daemon=True).start()
    threading.Event().wait()  # nobody sets it
"""


def test_hang_timeout_dumps_held_locks_and_waits_then_exits_with_the_report_status(tmp_path):
    write(tmp_path / "hangs.py", HANGS)
    result = pylockdep_run("--hang-timeout", "1", "hangs.py", cwd=tmp_path)
    assert result.returncode == 66
    err = result.stderr
    assert "still running after 1 s (--hang-timeout)" in err
    assert "INFO: task waiter/" in err and "blocked on lock:" in err and "(a@hangs.py:2)" in err
    assert "held by: MainThread/" in err
    assert "Showing all locks held in the system:" in err
    assert 'File "hangs.py", line 5' in err  # every thread's Python stack


def test_hang_timeout_makes_the_reports_held_for_the_end_first(tmp_path):
    """A thread that ended holding a Lock nobody released is reported as validation ends: a hang
    is such an end."""
    write(
        tmp_path / "leaks_then_hangs.py",
        """\
        import threading
        leaked = threading.Lock()
        t = threading.Thread(target=leaked.acquire, name="leaker")
        t.start()
        t.join()
        threading.Event().wait()  # nobody sets it
    """,
    )
    result = pylockdep_run("--hang-timeout", "1", "leaks_then_hangs.py", cwd=tmp_path)
    assert result.returncode == 66
    err = result.stderr
    assert "WARNING: leaker/" in err and "still has locks held!" in err, err
    assert "(leaked@leaks_then_hangs.py:2)" in err
    assert err.index("(leaked@leaks_then_hangs.py:2)") < err.index("still running after 1 s")
    assert "ended after 1 s; 1 report(s) before" in err


def test_a_self_deadlock_under_hang_timeout_raises_at_once_the_watchdog_releasing_nothing(tmp_path):
    """The watchdog's thread is pylockdep's own: it never releases the program's Lock, so the
    self-deadlock is refused as without the option, long before the timeout."""
    write(
        tmp_path / "self_deadlock.py",
        """\
        import threading
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()  # nobody else is left to release it
    """,
    )
    result = pylockdep_run("--hang-timeout", "60", "self_deadlock.py", cwd=tmp_path)
    err = result.stderr
    assert "WARNING: possible recursive locking detected" in err, err
    assert "DeadlockError: deadlock: MainThread/" in err and "which it holds itself" in err
    assert "--hang-timeout" not in err  # refused, not dumped as a hang


def test_a_thread_waiting_on_its_own_lock_while_the_main_thread_ends_is_refused_not_hung(tmp_path):
    """The main thread at its end joins every non-daemon thread and releases nothing meanwhile: a
    worker waiting for a Lock it holds itself then has nobody left to release it.  A third thread
    that does release it keeps the wait a hand-off, as before."""
    write(
        tmp_path / "stuck.py",
        """\
        import threading
        lock = threading.Lock()

        def worker():
            lock.acquire()
            try:
                lock.acquire()
            except Exception as e:
                print(type(e).__name__, e)
            lock.release()

        threading.Thread(target=worker, name="worker").start()
    """,
    )
    result = pylockdep_run("stuck.py", cwd=tmp_path)
    assert result.returncode == 66, result.stderr
    assert "WARNING: possible recursive locking detected" in result.stderr
    assert result.stdout.startswith("DeadlockError deadlock: worker/") and "which it holds itself" in result.stdout
    write(
        tmp_path / "handed.py",
        """\
        import threading, time
        lock = threading.Lock()

        def releaser():
            time.sleep(0.5)  # past the self-wait's grace: the main thread has long been at its end
            lock.release()

        def worker():
            lock.acquire()
            threading.Thread(target=releaser).start()
            lock.acquire()
            print("handed over")
            lock.release()

        threading.Thread(target=worker).start()
    """,
    )
    result = pylockdep_run("handed.py", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "handed over\n"), result.stderr


# Two threads, each taking one token Lock (in a function of its own) and then waiting for the
# other's, joined by the main thread; IDLE is replaced by code that leaves other threads idle.
TOKENS = """\
        import threading
        a = threading.Lock()
        b = threading.Lock()
        both = threading.Barrier(2)
        IDLE

        def take_a():
            a.acquire()

        def take_b():
            b.acquire()

        def worker(first, second):
            first()
            both.wait()
            try:
                second()
            except Exception as e:
                print(type(e).__name__, e)

        threads = [threading.Thread(target=worker, args=pair) for pair in ((take_a, take_b), (take_b, take_a))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("joined")
    """


def test_two_threads_each_waiting_for_the_others_token_lock_are_refused_not_hung(tmp_path):
    """Locks taken in one function and released in another are tokens: a wait for one is a wait
    for a hand-off, which names no thread to follow.  Two threads each holding one and waiting for
    the other's, with the main thread joining them, are stuck with nobody left to release either:
    one of them raises, then the other (its token's taker ended), and the cycle is reported."""
    write(tmp_path / "tokens.py", TOKENS.replace("IDLE", ""))
    result = pylockdep_run("tokens.py", cwd=tmp_path)
    assert result.returncode == 66, result.stderr
    first, second, joined = result.stdout.splitlines()
    assert first.startswith("DeadlockError deadlock: Thread-"), result.stdout
    assert first.endswith("; no other thread is left that could let these waits end"), result.stdout
    assert second.startswith("DeadlockError deadlock: Thread-") and "which took it, ended without" in second
    assert joined == "joined"
    err = result.stderr
    assert "WARNING: possible circular locking dependency detected" in err
    assert "(a@tokens.py:2)" in err and "(b@tokens.py:3)" in err


FORGOTTEN_SENTINEL = """\
import queue, threading, time
q = queue.Queue()

def worker():
    while q.get() is not None:
        pass

t = threading.Thread(target=worker, name="worker")
t.start()
q.put(1)
FEED
JOIN
"""


@pytest.mark.parametrize("join", [False, True], ids=["at_exit", "joined"])
def test_a_worker_nobody_is_left_to_feed_ends_the_program_instead_of_hanging(tmp_path, join):
    """A worker idle in ``Queue.get()`` whose producer forgot the sentinel: the main thread's join
    of it, or its end (which joins the non-daemon threads), would wait for ever.  The join raises
    DeadlockError after a ``hung_task`` report; the end is given up with the dump, and the process
    ends with the report status."""
    program = FORGOTTEN_SENTINEL.replace("FEED", "").replace("JOIN", "t.join()" if join else "")
    write(tmp_path / "sentinel.py", program)
    result = pylockdep_run("sentinel.py", cwd=tmp_path)
    assert result.returncode == 66, result.stderr
    err = result.stderr
    idle = "worker waits for '(a notify, in Condition.wait())'; no other thread is left that could let these waits end"
    if join:
        assert "DeadlockError: deadlock: MainThread/" in err
        assert f"waits for '(thread)sentinel.py:8', {idle}" in err
        assert "\nINFO: task MainThread/" in err and " blocked for ever\n" in err
    at_exit = "MainThread waits for '(non-daemon threads, joined at exit)'"
    assert f"the program's end would wait for ever (deadlock: {at_exit}, {idle})" in err
    assert "Showing all locks held in the system:" in err and "((queue)sentinel.py:2)" in err
    reports = 1 if join else 0
    assert err.rstrip().endswith(f"pylockdep: ended at exit instead of waiting for ever; {reports} report(s) before")


BLOCKED_AND_IDLE_WORKERS = """\
import concurrent.futures, threading

gate = threading.Lock()
pool = concurrent.futures.ThreadPoolExecutor(2)
started = threading.Event()

def task():
    started.set()
    gate.acquire()
    gate.release()

gate.acquire()
pool.submit(task)
started.wait()
pool.submit(int).result()  # a second worker, idle from then on
try:
    gate.acquire()  # the one worker that could release it waits for it too
except Exception as error:
    print(type(error).__name__)
gate.release()
pool.shutdown()
"""


def test_a_wait_behind_a_blocked_worker_and_an_idle_one_is_refused(tmp_path):
    """A pool's worker idle with no work queued moves only once another thread does, however many
    of its pool's workers are busy: here the other one waits for the Lock the main thread takes
    again, and nobody is left to release it (the probe's r5: a rule that counted an idle worker
    only while all its pool's workers were idle let this hang)."""
    write(tmp_path / "blocked.py", BLOCKED_AND_IDLE_WORKERS)
    result = pylockdep_run("blocked.py", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (66, "DeadlockError\n"), result.stderr
    assert result.stderr.rstrip().endswith("pylockdep: 1 report(s): recursive")


@pytest.mark.parametrize("join", [False, True], ids=["at_exit", "joined"])
@pytest.mark.parametrize(
    "feed",
    [
        "threading.Timer(0.8, q.put, (None,)).start()",
        "threading.Thread(target=lambda: (time.sleep(0.8), q.put(None))).start()",
    ],
    ids=["timer", "sleeper"],
)
def test_a_worker_fed_late_is_waited_for(tmp_path, feed, join):
    """The same worker, with a thread that feeds it the sentinel late (a timer's timed wait, a
    sleep): that thread may still move, so the joins wait, and the program ends cleanly."""
    program = FORGOTTEN_SENTINEL.replace("FEED", feed).replace("JOIN", "t.join()" if join else "")
    write(tmp_path / "late.py", program)
    result = pylockdep_run("late.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


IDLE_THREADS = {
    "pool": "import concurrent.futures\npool = concurrent.futures.ThreadPoolExecutor(1)\npool.submit(int).result()",
    "queue": "import queue\nq = queue.Queue()\nthreading.Thread(target=q.get, daemon=True).start()",
    "event": "ev = threading.Event()\nthreading.Thread(target=ev.wait, daemon=True).start()",
}


@pytest.mark.parametrize("idle", list(IDLE_THREADS))
def test_a_token_cycle_is_refused_while_other_threads_wait_idle_for_any_thread(tmp_path, idle):
    """A thread idle in Python's own wait for any other thread to act (a pool's worker waiting for
    work, a ``Queue.get()``, an ``Event.wait()``, with no timeout) moves only once another thread
    does: with the two token holders stuck and the main thread joining them, nobody is left, and
    the cycle is refused as with no idle thread (it hung, its report held back)."""
    write(tmp_path / "tokens.py", TOKENS.replace("IDLE", IDLE_THREADS[idle].replace("\n", "\n        ")))
    result = pylockdep_run("tokens.py", cwd=tmp_path)
    assert result.returncode == 66, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["DeadlockError", "DeadlockError", "joined"], result.stderr
    assert "WARNING: possible circular locking dependency detected" in result.stderr


def test_a_thread_in_a_timed_wait_may_still_open_a_gate_while_others_wait_idle(tmp_path):
    """A wait with a timeout ends by itself: the thread that opens the gate after ``Event.wait(0.5)``
    still counts, while a getter idles in ``Queue.get()`` and the main thread joins the worker."""
    result = run_refusing_no_wait(
        tmp_path,
        "timed.py",
        """\
        import queue, threading
        gate = threading.Lock()
        gate.acquire()
        q = queue.Queue()
        threading.Thread(target=q.get, daemon=True).start()

        def opener():
            threading.Event().wait(0.5)
            gate.release()

        def through():
            with gate:
                print("worker through")

        threading.Thread(target=opener).start()
        worker = threading.Thread(target=through)
        worker.start()
        worker.join()
    """,
    )
    assert result.stdout == "worker through\n", result.stderr


# A gate closed by a function that never releases it, held while its taker waits for a mutex
# that the gate's waiter holds: GATE_OPENER, if given, opens it.
GATE_THEN_MUTEX = """\
    import threading, time
    gate = threading.Lock()
    m = threading.Lock()
    has_m = threading.Event()

    def close_then_wait():
        gate.acquire()
        CLOSE_ALSO
        has_m.wait()
        with m:
            print("taker through")

    def wait_at_gate():
        with m:
            has_m.set()
            time.sleep(0.1)
            try:
                gate.acquire()
                print("waiter through")
            except Exception as e:
                print(type(e).__name__)

    taker = threading.Thread(target=close_then_wait)
    taker.start()
    time.sleep(0.05)
    waiter = threading.Thread(target=wait_at_gate)
    waiter.start()
    GATE_OPENER
    taker.join()
    waiter.join()
"""


def test_a_gate_its_taker_holds_while_waiting_for_a_mutex_is_opened_by_a_third_thread(tmp_path):
    """The taker closes the gate in a function that never calls ``release()`` and then waits for
    a mutex that the gate's waiter holds: a third thread opens the gate, and both go through.
    Only a ``release()`` in the code that took a Lock makes it a mutex whose holder must release
    it; this one was a wait cycle, refused with ``DeadlockError``."""
    program = GATE_THEN_MUTEX.replace("CLOSE_ALSO", "pass")
    program = program.replace("GATE_OPENER", "threading.Timer(0.5, gate.release).start()")
    result = run_refusing_no_wait(tmp_path, "gate.py", program)
    assert sorted(result.stdout.splitlines()) == ["taker through", "waiter through"], result.stderr


@pytest.mark.parametrize("close_also", ["pass", "gate.release(); gate.acquire()"])
def test_a_gate_nobody_opens_or_a_bare_mutex_in_a_wait_cycle_is_still_refused(tmp_path, close_also):
    """With nobody to open the gate the two threads wait for one another for ever: refused once
    nobody else may move.  A Lock whose taking code releases it too is a mutex: the cycle through
    it is refused at once, as before."""
    program = GATE_THEN_MUTEX.replace("CLOSE_ALSO", close_also).replace("GATE_OPENER", "pass")
    write(tmp_path / "gate.py", program)
    result = pylockdep_run("gate.py", cwd=tmp_path)
    assert result.stdout.splitlines() == ["DeadlockError", "taker through"], result.stderr
    assert "WARNING: possible circular locking dependency detected" in result.stderr


def test_a_gate_lock_that_another_thread_opens_is_waited_for_while_its_taker_joins(tmp_path):
    """A Lock the main thread took by a bare acquire() and holds while it waits for other threads
    (at its end, or in a join) may be a gate that another thread opens: a worker waiting for it
    goes through when a Timer releases it.  Held by a with-block across the join, it would be a
    mutex, and the cycle a deadlock."""
    for name, end in (("at_exit.py", ""), ("joined.py", "worker.join()")):
        write(
            tmp_path / name,
            f"""\
            import threading
            gate = threading.Lock()
            gate.acquire()
            threading.Timer(0.5, gate.release).start()

            def through():
                with gate:
                    print("worker through")

            worker = threading.Thread(target=through)
            worker.start()
            {end}
        """,
        )
        result = pylockdep_run(name, cwd=tmp_path)
        assert result.stdout == "worker through\n", result.stderr
        assert "DeadlockError" not in result.stderr


def test_a_worker_waiting_for_a_handed_off_lock_its_joiner_holds_is_refused(tmp_path):
    """The Lock is a known hand-off, so the worker's wait for it names nobody; its taker, the main
    thread, joins the worker: nobody else is left to release it, and the worker (not the join)
    raises."""
    write(
        tmp_path / "joined.py",
        """\
        import threading
        gate = threading.Lock()
        gate.acquire()
        opener = threading.Thread(target=gate.release)
        opener.start()
        opener.join()
        gate.acquire()

        def worker():
            try:
                gate.acquire()
            except Exception as e:
                print(type(e).__name__, e)

        t = threading.Thread(target=worker, name="worker")
        t.start()
        t.join()
        print("joined")
    """,
    )
    result = pylockdep_run("joined.py", cwd=tmp_path)
    first, joined = result.stdout.splitlines()
    assert first.startswith("DeadlockError deadlock: worker/") and "MainThread/" in first, result.stdout
    assert first.endswith("no other thread is left that could let these waits end")
    assert joined == "joined"


def test_a_queue_whose_items_other_threads_mark_done_is_joined_without_a_deadlock_error(tmp_path):
    """Any thread may mark a queue's item done.  A dispatcher that joins the queue it took items
    from, which its workers mark done, waits for them (the model's report of a consumer joining
    its own queue stays).  Once a queue's items were seen marked done by a later stage, a thread
    holding an RLock that a consumer of the joined queue waits for waits too.  Until then that
    join raises, whatever other threads run."""
    result = run_refusing_no_wait(
        tmp_path,
        "dispatch.py",
        """\
        import queue, threading, time
        q, work = queue.Queue(), queue.Queue()
        for i in range(3):
            q.put(i)

        def worker():
            while True:
                work.get()
                time.sleep(0.1)
                q.task_done()

        def dispatcher():
            for _ in range(3):
                work.put(q.get())
            q.join()
            print("all done")

        threading.Thread(target=worker, daemon=True).start()
        d = threading.Thread(target=dispatcher)
        d.start()
        d.join()
    """,
    )
    assert result.stdout == "all done\n", result.stderr
    write(
        tmp_path / "pipeline.py",
        """\
        import queue, threading, time
        q, q2 = queue.Queue(), queue.Queue()
        r = threading.RLock()

        def forward():
            for _ in range(2):
                q2.put(q.get())
                with r:
                    pass

        def finish():
            for _ in range(2):
                q2.get()
                time.sleep(0.3)
                q.task_done()

        stages = [threading.Thread(target=forward), threading.Thread(target=finish)]
        for stage in stages:
            stage.start()
        q.put(1)
        q.join()  # the later stage marks the item done
        with r:
            q.put(2)
            q.join()
        for stage in stages:
            stage.join()
        print("joined")
    """,
    )
    result = pylockdep_run("pipeline.py", cwd=tmp_path)
    assert result.stdout == "joined\n", result.stderr
    assert "DeadlockError" not in result.stderr and "WARNING: possible circular locking" in result.stderr
    write(
        tmp_path / "stuck.py",
        """\
        import queue, threading, time
        q = queue.Queue()
        r = threading.RLock()
        threading.Thread(target=time.sleep, args=(300,), daemon=True).start()  # idle, but alive

        def consume():
            q.get()
            try:
                with r:
                    pass
            except Exception as e:
                print(type(e).__name__)
            finally:
                q.task_done()

        with r:
            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            q.put(1)
            try:
                q.join()
            except Exception as e:
                print(type(e).__name__)
        consumer.join()
    """,
    )
    result = pylockdep_run("stuck.py", cwd=tmp_path)
    # The consumer or the joiner raises, and the other goes through.
    assert result.stdout == "DeadlockError\n", result.stderr
    assert "WARNING: possible circular locking dependency detected" in result.stderr


def test_queue_consumers_in_a_thread_and_an_asyncio_task_of_it_that_never_mark_items_done(tmp_path):
    """A consumer that never calls task_done() is ordinary.  A thread's open span on a queue
    closed by the asyncio task it runs next (a thread has one span open at a time) is handed to
    the thread's own holder, not released by the task: the queue's class is no hand-off, and the
    spans that ended consumers leave open are no leaked locks (fakeredis's suite failed on them)."""
    write(
        tmp_path / "spans.py",
        """\
        import asyncio, queue, threading

        def new_queue():
            q = queue.Queue()
            q.put(b"+OK")
            return q

        new_queue().get()

        async def consume():
            new_queue().get()

        asyncio.run(consume())
        kept = []
        for i in range(2):
            q = new_queue()
            kept.append(q)
            t = threading.Thread(target=q.get, name=f"reader-{i}")
            t.start()
            t.join()
        print("done")
    """,
    )
    result = pylockdep_run("spans.py", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "done\n"), result.stderr


def test_a_chain_of_joins_longer_than_the_stack_allows_to_follow_is_waited_for(tmp_path):
    """Each thread joins the one started before it, the first sleeping a while: the deadlock check
    follows the chain of joins, and one longer than the stack allows is not followed to its end,
    rather than raise RecursionError into a join (the stack is kept short here)."""
    write(
        tmp_path / "chain.py",
        """\
        import sys, threading, time
        sys.setrecursionlimit(300)
        errors = []

        def stage(previous):
            try:
                previous.join()
            except BaseException as e:
                errors.append(type(e).__name__)

        threads = [threading.Thread(target=time.sleep, args=(0.5,))]
        threads[0].start()
        for _ in range(150):
            threads.append(threading.Thread(target=stage, args=(threads[-1],)))
            threads[-1].start()
        threads[-1].join()
        print("joined", sorted(set(errors)))
    """,
    )
    result = pylockdep_run("chain.py", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "joined []\n"), result.stderr


def test_a_coroutine_waiting_for_a_gate_lock_a_parked_task_took_which_a_thread_opens(tmp_path):
    """A task of the loop took a Lock by a bare acquire() and is parked; another coroutine blocks
    the loop's thread on it until a plain thread releases it: a gate, not a deadlock (taken by a
    with-block, only the parked task could release it, and the wait raises at once)."""
    result = run_refusing_no_wait(
        tmp_path,
        "gate.py",
        """\
        import asyncio, threading, time
        gate = threading.Lock()

        def opener():
            time.sleep(0.3)
            gate.release()

        async def holder():
            gate.acquire()
            await asyncio.sleep(5)

        async def main():
            parked = asyncio.create_task(holder())
            await asyncio.sleep(0.05)
            threading.Thread(target=opener).start()
            gate.acquire()
            print("through")
            parked.cancel()

        asyncio.run(main())
    """,
    )
    assert result.stdout == "through\n", result.stderr


@pytest.mark.parametrize("install", ["signal.signal", "_signal.signal"])
def test_a_hand_off_that_only_a_signal_handler_makes_is_waited_for(tmp_path, install):
    """The main thread runs the program's signal handlers inside its waits: while it has one of its
    own, a worker waiting for a Lock it holds itself, with the main thread joining it, is not
    stuck, since the handler may release the Lock (here, a timer's does).  A handler installed
    through ``_signal`` directly, which pylockdep's wrapping never sees, counts too."""
    write(
        tmp_path / "gate.py",
        f"""\
        import _signal, signal, threading
        gate = threading.Lock()

        def worker():
            gate.acquire()
            gate.acquire()
            print("handed over")

        {install}(signal.SIGALRM, lambda signum, frame: gate.release())
        w = threading.Thread(target=worker)
        w.start()
        signal.setitimer(signal.ITIMER_REAL, 0.6)
        w.join()
    """,
    )
    result = pylockdep_run("gate.py", cwd=tmp_path)
    assert result.stdout == "handed over\n", result.stderr
    assert "recursive" not in result.stderr and "DeadlockError" not in result.stderr


@pytest.mark.parametrize("lock", ["threading.Lock()", "pylockdep.Mutex('m')"])
def test_a_thread_waiting_for_a_lock_the_main_thread_ended_holding_is_refused_not_hung(tmp_path, lock):
    """The main thread at its end waits for every non-daemon thread: a worker waiting for a lock
    it holds closes a cycle, refused as any wait cycle is; the lock is reported held at its end."""
    write(
        tmp_path / "held.py",
        f"""\
        import threading, time
        import pylockdep
        m = {lock}
        m.acquire()

        def worker():
            try:
                m.acquire()
            except pylockdep.DeadlockError as e:
                print(e)

        threading.Thread(target=worker, name="worker").start()
        time.sleep(0.05)
    """,
    )
    result = pylockdep_run("held.py", cwd=tmp_path)
    assert result.returncode == 66, result.stderr
    assert result.stdout.startswith("deadlock: worker/") and "(non-daemon threads, joined at exit)" in result.stdout
    assert "WARNING: MainThread/" in result.stderr and "still has locks held!" in result.stderr


def test_ctrl_c_on_a_program_hung_at_its_end_still_prints_the_held_back_report(tmp_path):
    """Two threads deadlocked through Locks taken in one method and released in another (whose
    cycle is held back until validation ends) hang the interpreter's join at exit; Ctrl-C there is
    printed and ignored, as Python does, and validation still ends with the report."""
    write(
        tmp_path / "hung.py",
        """\
        import os, signal, sys, threading, time

        class Resource:
            def __init__(self):
                self._lock = threading.Lock()
            def __enter__(self):
                self._lock.acquire()
            def __exit__(self, *exc):
                self._lock.release()

        a, b = Resource(), Resource()
        both = threading.Barrier(2)

        def worker(first, second):
            with first:
                both.wait()
                with second:
                    pass

        def ctrl_c_once_the_main_thread_joins():
            main = threading.main_thread().ident
            while sys._current_frames()[main].f_code.co_name != "_shutdown":
                time.sleep(0.01)
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)

        for first, second in ((a, b), (b, a)):
            threading.Thread(target=worker, args=(first, second)).start()
        threading.Thread(target=ctrl_c_once_the_main_thread_joins, daemon=True).start()
    """,
    )
    result = pylockdep_run("hung.py", cwd=tmp_path)
    err = result.stderr
    assert result.returncode == 66, err
    assert "KeyboardInterrupt" in err  # printed as Python prints it (3.13's join prints it itself)
    assert "WARNING: possible circular locking dependency detected" in err
    assert err.rstrip().endswith("pylockdep: 1 report(s): circular")


def test_sigusr1_dumps_held_locks_and_the_program_goes_on(tmp_path):
    write(
        tmp_path / "usr1.py",
        """\
        import os, signal, threading
        r = threading.RLock()
        with r:
            os.kill(os.getpid(), signal.SIGUSR1)
        print("went on")
    """,
    )
    result = pylockdep_run("usr1.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "went on\n"
    assert "INFO: pylockdep: SIGUSR1" in result.stderr
    assert "1 lock held by MainThread/" in result.stderr and "(r@usr1.py:2)" in result.stderr


@pytest.mark.timeout(300)
def test_waiting_on_two_thousand_futures_finishes_clean(tmp_path):
    """``wait()`` and ``as_completed()`` take every future's condition and release them oldest
    first: cubic work under pylockdep once (2000 futures never finished), a few seconds now.  The
    timeout only tells a hang from a slow machine."""
    write(
        tmp_path / "many.py",
        """\
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(pow, 2, i) for i in range(2000)]
            done, _ = concurrent.futures.wait(futures)
            assert len(done) == 2000
            assert sum(1 for _ in concurrent.futures.as_completed(futures)) == 2000
        print("waited")
        """,
    )
    result = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", "many.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "waited\n" and "WARNING" not in result.stderr
