"""The validator never hangs, crashes or breaks the program around it (issue 13).

Repros that hung before their fix run in a subprocess with a timeout, so a regression fails
instead of hanging the suite; the subprocess inherits ``PYLOCKDEP_PURE_PYTHON``, so each runs on
the path the suite is testing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest

import pylockdep
from pylockdep import _waitfor


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; a hang is a failure, not a stuck suite."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: {exc.stdout!r} {exc.stderr!r}")


# -- re-entry: handlers, finalizers and hooks that run while the thread is inside pylockdep ------


def test_lock_made_while_its_thread_registers_a_key() -> None:
    # What a signal handler or __del__ does when it lands inside key registration.
    result = run_python("""
        import pylockdep
        from pylockdep import _classes
        with _classes._keys_lock:
            m = pylockdep.Mutex("made-inside-registration")
        with m:
            pass
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


def test_signal_handlers_making_locks_during_registration() -> None:
    result = run_python("""
        import signal, pylockdep
        from pylockdep import _classes
        hits = 0
        def handler(signum, frame):
            global hits
            if _classes._keys_lock._is_owned():
                hits += 1
            with pylockdep.Mutex(f"made-in-handler"):
                pass
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
        for i in range(30000):
            pylockdep.Mutex(f"conn-{i}")
        signal.setitimer(signal.ITIMER_REAL, 0)
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


def test_wait_inside_the_wait_bookkeeping_of_its_own_thread() -> None:
    # A handler that waits for a contended lock while its thread holds the bookkeeping lock.
    result = run_python("""
        import threading, time, pylockdep
        from pylockdep import _waitfor
        m = pylockdep.Mutex("m")
        taken = threading.Event()
        def holder():
            with m:
                taken.set()
                time.sleep(0.2)
        threading.Thread(target=holder).start()
        taken.wait()
        with _waitfor._waits:
            with m:
                pass
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


def test_a_nested_wait_gives_back_the_outer_wait() -> None:
    with pylockdep.validate() as v:
        t = v.task()
        outer = (pylockdep.Mutex("outer"), 0)
        t.waiting = outer
        _waitfor.wait(v, t, pylockdep.Mutex("inner"), 0, lambda seconds: True)
        assert t.waiting is outer
        t.waiting = None


def test_locks_taken_inside_a_check_are_tracked_not_validated() -> None:
    # A finalizer or hook that runs while its thread searches the graph: it takes its locks for
    # real, but no rule runs for them, so the graph never changes under the search.
    with pylockdep.validate(raise_on_report=False) as v:
        a, b, c = pylockdep.Mutex("a"), pylockdep.Mutex("b"), pylockdep.Mutex("c")
        with a, b:
            pass
        cls_a = v.class_for(a._key)
        seen = []

        def check(v: pylockdep.Validator, t: object) -> None:
            for nxt in cls_a.after:  # iterating, as find_path does
                with a, c:  # would add a -> c under the iteration
                    seen.append(nxt.name)
                assert not c.locked() and not a.locked()

        v.run_check(v.task(), check)
        assert seen == ["b"]
        assert [cls.name for cls in cls_a.after] == ["b"]
        assert not v.task().held
        with a, c:  # outside a check the same nesting is validated
            pass
        assert [cls.name for cls in cls_a.after] == ["b", "c"]
        assert v.reports == []


def test_finalizers_taking_locks_during_searches() -> None:
    result = run_python("""
        import gc, pylockdep
        mains = [pylockdep.Mutex(f"main{i}") for i in range(20)]
        finals = [pylockdep.Mutex(f"final{i}") for i in range(20)]
        class Finalized:
            def __init__(self, i):
                self.i = i
                self.me = self  # a cycle: freed by the collector, at any bytecode
            def __del__(self):  # always after whatever main lock is held: a consistent order
                with finals[self.i % 10], finals[10 + (self.i // 10) % 10]:
                    pass
        gc.set_threshold(50)
        for i in range(20000):
            Finalized(i)
            with mains[i % 10], mains[10 + (i // 10) % 10]:
                pass
        gc.collect()
        reports = pylockdep.current().reports
        assert not reports, [r.title for r in reports]
        print("ok")
    """)
    assert result.stdout == "ok\n", result.stderr


# -- reports never break the program ------------------------------------------------------------


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stream_does_not_break_the_program(capfd: pytest.CaptureFixture[str]) -> None:
    with pylockdep.validate(stream=_BrokenStream(), raise_on_report=False) as v:
        a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")
        with a, b:
            pass
        with b, a:  # reported: the stream fails, the program goes on
            pass
        c, d = pylockdep.Mutex("c"), pylockdep.Mutex("d")
        with c, d:
            pass
        with d, c:
            pass
    assert [r.kind for r in v.reports] == ["circular", "circular"]
    assert list(v.delivery_failures) == ["stream"]
    err = capfd.readouterr().err
    assert err.count("could not deliver a report to the stream: BrokenPipeError") == 1


def test_a_raising_listener_or_log_processor_does_not_break_the_program(capfd: pytest.CaptureFixture[str]) -> None:
    structlog = pytest.importorskip("structlog")

    def processor(logger: object, name: str, event: dict) -> dict:
        raise ValueError("processor failed")

    def listener(report: pylockdep.Report) -> None:
        raise RuntimeError("listener failed")

    delivered: list[str] = []
    structlog.configure(processors=[processor])
    try:
        with pylockdep.validate(raise_on_report=False) as v:
            v.listeners += [listener, lambda report: delivered.append(report.kind)]
            a, b = pylockdep.Mutex("a"), pylockdep.Mutex("b")
            with a, b:
                pass
            with b, a:
                pass
    finally:
        structlog.reset_defaults()
    assert [r.kind for r in v.reports] == ["circular"]
    assert delivered == ["circular"]  # the sinks that work still get it
    assert sorted(sink.split(" ")[0] for sink in v.delivery_failures) == ["listener", "structlog"]
    err = capfd.readouterr().err
    assert "to the structlog: ValueError: processor failed" in err
    assert "RuntimeError: listener failed" in err


# -- fork ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_another_thread_is_inside_pylockdep() -> None:
    result = run_python("""
        import os, threading, time, pylockdep
        from pylockdep import _classes, _validator, _waitfor
        inside, done = threading.Event(), threading.Event()
        scoped = pylockdep.validate()
        v = scoped.__enter__()
        def busy():  # another thread holds every internal lock when the process forks
            with _classes._keys_lock, _waitfor._waits, _validator._validate_lock, v.graph_lock:
                inside.set()
                done.wait()
        threading.Thread(target=busy).start()
        inside.wait()
        pid = os.fork()
        if pid == 0:
            m = pylockdep.Mutex("made-in-child")
            def hold():
                with m:
                    time.sleep(0.1)
            t = threading.Thread(target=hold)
            t.start()
            time.sleep(0.02)
            with m:  # contended: waits through the bookkeeping
                pass
            t.join()
            with pylockdep.validate():
                pass
            os._exit(0 if not v.reports else 3)
        done.set()
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """)
    assert result.stdout == "child 0\n", result.stderr
