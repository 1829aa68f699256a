"""``pylockdep run``: programs run as Python would run them, threading validated from their first line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
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


def test_abba_is_reported_and_exits_1_with_json_and_dot(tmp_path):
    write(tmp_path / "abba.py", ABBA)
    result = pylockdep_run("--json", "reports.jsonl", "--dot", "graph.dot", "abba.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "WARNING: possible circular locking dependency detected" in result.stderr
    (report,) = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    assert report["kind"] == "circular"
    assert sorted(report["classes"]) == ["Lock@abba.py:2", "Lock@abba.py:3"]
    dot = (tmp_path / "graph.dot").read_text()
    assert dot.startswith("digraph") and "Lock@abba.py:2" in dot and "Lock@abba.py:3" in dot


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
    assert pylockdep_run("abba_exit.py", cwd=tmp_path).returncode == 1


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
    assert result.returncode == 1
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
    assert module_lock.startswith("RLock@logging/__init__.py:")  # two classes: the module's lock...
    assert handler_lock.startswith("RLock@logging/__init__.py:")  # ...and every handler's
    assert module_lock != handler_lock
    assert asyncio_loaded == "False"  # pylockdep itself imported nothing that makes locks


@pytest.mark.parametrize(("factory", "status"), [("RLock", 1), ("Lock", 0)])
def test_main_thread_ending_with_a_lock_held(tmp_path, factory, status):
    write(tmp_path / "held.py", f"import threading\nthreading.{factory}().acquire()\n")
    result = pylockdep_run("held.py", cwd=tmp_path)
    assert result.returncode == status
    assert ("MainThread" in result.stderr and "still has locks held!" in result.stderr) == bool(status)
    assert result.stderr.count("still has locks held!") == status
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
    assert pylockdep_run("nesting.py", cwd=tmp_path).returncode == 1
    assert pylockdep_run("--no-raw-nesting", "nesting.py", cwd=tmp_path).returncode == 0
    assert pylockdep_run("--no-raw-nesting", "--preempt-rt", "nesting.py", cwd=tmp_path).returncode == 1


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
        subprocess.run([str(script), "run", "abba.py"], cwd=tmp_path, capture_output=True, timeout=100).returncode == 1
    )


def test_cpython_queue_tests_run_clean():
    pytest.importorskip("test.test_queue", reason="CPython's test package is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", "-m", "unittest", "test.test_queue"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stderr
    assert "WARNING" not in result.stderr and "BUG" not in result.stderr
