"""Waits are dependencies: joins, futures, pool shutdowns and queue joins against held locks.

Each real bug is a small program of our own with the library's shape, run buggy then fixed, one
after the other in one process; none of them hangs (a wait that would is refused with
DeadlockError).  Then ordinary uses of threads, pools and queues, which must stay clean.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import logging.handlers
import queue
import sys
import threading
import time

import pytest
from _waiting import freed_without_the_collector, wait_until_waiting

import pylockdep
from pylockdep._frames import short_filename
from pylockdep.cli import REPORT_STATUS

pytestmark = pytest.mark.timeout(60)
FILE = short_filename(__file__)


def line() -> int:
    """The caller's line number."""
    return sys._getframe(1).f_lineno


@pytest.fixture
def v():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        yield v


def kinds_and_classes(v: pylockdep.Validator) -> list[tuple[str, set[str]]]:
    return [(r.kind, set(r.classes)) for r in v.reports]


def about_future_conditions(report: pylockdep.Report) -> bool:
    """A report of futures' conditions nested by wait()/as_completed(), one instance each: for the
    precision issue's per-instance rule, not for waits."""
    return report.kind == "recursive" and all(
        c.startswith("Condition@concurrent/futures/_base.py:") for c in report.classes
    )


# -- rich 9.8.1: Live.stop() joins the refresh thread under Live._lock ---------------------------


class RefreshThread(threading.Thread):
    """rich's _RefreshThread: refresh the display under the Live's lock until told to stop."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.done = threading.Event()
        self.interval = 0.001
        super().__init__(daemon=True)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            with self.live._lock:
                if not self.done.is_set():
                    self.live.refresh()


class Live:
    def __init__(self, join_under_lock: bool) -> None:
        self._lock = threading.RLock()
        self.lock_line = line() - 1
        self.join_under_lock = join_under_lock
        self.refreshed = threading.Event()
        self.thread = RefreshThread(self)
        self.thread_line = line() - 1  # the map is named after the line that made the thread

    def refresh(self) -> None:
        self.thread.interval = 60  # one refresh is enough: the next wait outlasts the test
        self.refreshed.set()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self._lock:
            self.thread.done.set()
            if self.join_under_lock:  # rich 9.8.1
                self.thread.join()
        if not self.join_under_lock:  # fixed: the lock is released before joining
            self.thread.join()


def test_rich_live_stop_joining_the_refresh_thread_under_its_lock_is_circular(v):
    live = Live(join_under_lock=True)
    live.start()
    assert live.refreshed.wait(20)
    live.stop()  # the thread has finished refreshing: nothing hangs
    assert kinds_and_classes(v) == [
        ("circular", {f"(thread){FILE}:{live.thread_line}", f"Live._lock@{FILE}:{live.lock_line}"})
    ]
    (report,) = v.reports
    # Both stacks: where the thread took the lock, and where stop() waited for the thread.
    assert "RefreshThread.run+" in report.text and "Live.stop+" in report.text
    assert f"is trying to acquire lock:\n{id(live.thread.__dict__['_lockdep_map']):016x} ((thread){FILE}" in report.text
    # The scenario waits as the kernel's flush_work() splats show it: an ordinary lock() of the
    # map, not the sync() of an SRCU synchronize.
    thread_map = f"(thread){FILE}:{live.thread_line}"
    assert report.text.split(" *** DEADLOCK ***")[0].rstrip().splitlines()[-4:] == [
        f"  lock(Live._lock@{FILE}:{live.lock_line});",
        f"                               lock({thread_map});",
        f"                               lock(Live._lock@{FILE}:{live.lock_line});",
        f"  lock({thread_map});",
    ]


def test_rich_live_stop_joining_after_releasing_the_lock_is_clean(v):
    live = Live(join_under_lock=False)
    live.start()
    assert live.refreshed.wait(20)
    live.stop()
    assert v.reports == []


# -- watchdog 6.0: every thread class chains its __init__ up to one base's super().__init__() -----


class BaseThread(threading.Thread):
    """watchdog's BaseThread: the one place that calls threading.Thread.__init__."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()


class Emitter(BaseThread):
    """Queues events; takes none of the observer's locks."""

    def __init__(self, events: queue.Queue) -> None:
        super().__init__()
        self.events = events

    def run(self) -> None:
        self.events.put("created")
        self.stopped.wait(20)


class Observer(BaseThread):
    """Dispatches events under its lock; unschedule_all() joins the emitters under the same lock."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()
        self.events: queue.Queue = queue.Queue()
        self.emitters: list[Emitter] = []
        self.dispatched = threading.Event()

    def schedule(self) -> None:
        with self.lock:
            emitter = Emitter(self.events)
            self.emitters.append(emitter)
            emitter.start()

    def run(self) -> None:
        self.events.get()
        with self.lock:
            self.dispatched.set()
        self.stopped.wait(20)

    def unschedule_all(self) -> None:
        with self.lock:
            for emitter in self.emitters:
                emitter.stopped.set()
                emitter.join()


def test_joining_threads_of_one_base_class_under_a_lock_only_the_others_take_is_clean(v):
    # Emitters and the observer are all made through BaseThread.__init__'s super().__init__():
    # named after that line, they were one map class, and joining an emitter under the lock the
    # observer takes was reported as circular.  Each is named after the line that made it.
    observer = Observer()
    made_at = line() - 1
    observer.start()
    observer.schedule()
    assert observer.dispatched.wait(20)
    observer.unschedule_all()
    observer.stopped.set()
    assert v.reports == []
    with observer.lock:  # joining the observer itself under its lock is still found
        observer.join()
    assert kinds_and_classes(v) == [
        (
            "circular",
            {f"(thread){FILE}:{made_at}", f"Observer.lock@{FILE}:{Observer.__init__.__code__.co_firstlineno + 2}"},
        )
    ]


def test_joining_a_thread_blocked_on_a_lock_the_joiner_holds_raises_after_the_report(v):
    lock = threading.RLock()

    def take():
        with lock:
            pass

    t = threading.Thread(target=take)
    with lock:
        t.start()
        wait_until_waiting(v, t)
        with pytest.raises(pylockdep.DeadlockError, match=r"waits for '\(thread\)"):
            t.join()
        assert [r.kind for r in v.reports] == ["circular"]
    t.join()  # the lock is free now: the thread ends


def test_join_with_a_timeout_is_a_wait_too(v):
    lock = threading.Lock()

    def take():
        with lock:
            pass

    t = threading.Thread(target=take)
    t_line = line() - 1
    t.start()
    t.join()
    with lock:
        t.join(timeout=0.01)
    assert kinds_and_classes(v) == [("circular", {f"(thread){FILE}:{t_line}", f"Lock@{FILE}:{lock_line(take)}"})]


def test_a_wait_with_a_zero_timeout_is_a_poll_and_no_wait(v):
    """``join(0)``, ``result(timeout=0)``, ``wait(fs, timeout=0)`` and ``as_completed(fs, 0)`` never
    block (a reap-if-finished poll): held across them, a lock the work takes makes no cycle, as an
    acquisition with a zero timeout is a trylock.  A positive timeout is a wait (above)."""
    lock = threading.Lock()
    go = threading.Event()

    def take():
        with lock:
            pass
        go.wait(5)

    t = threading.Thread(target=take)
    t.start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(take)
        with lock:
            t.join(0)
            t.join(timeout=-1)
            with pytest.raises(concurrent.futures.TimeoutError):
                future.result(timeout=0)
            with pytest.raises(concurrent.futures.TimeoutError):
                future.exception(timeout=0)
            concurrent.futures.wait([future], timeout=0)
            with pytest.raises(concurrent.futures.TimeoutError):
                list(concurrent.futures.as_completed([future], timeout=0))
        go.set()
    t.join()
    assert v.reports == []


def _spawn(fn) -> threading.Thread:
    """A helper that makes, starts and returns a thread."""
    t = threading.Thread(target=fn)
    t.start()
    return t


def _run_in(pool: concurrent.futures.Executor, fn) -> concurrent.futures.Future:
    return pool.submit(fn)


def test_threads_and_work_made_through_a_helper_are_named_after_its_callers(v):
    """A thread or pool work made by a helper that only returns it is named after the helper's
    caller, as a lock made so is: waiting under a lock for work that does not take it makes no
    cycle with other work from the same helper that does."""
    lock = threading.Lock()

    def take():
        with lock:
            pass

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        _spawn(take).join()
        _run_in(pool, take).result()
        with lock:
            _spawn(lambda: None).join()
            _run_in(pool, lambda: None).result()
    assert v.reports == []


def test_waiting_under_a_lock_for_helper_made_work_that_takes_it_is_circular(v):
    lock = threading.Lock()

    def take(under: bool = False):
        if not under:
            with lock:
                pass

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for under in (False, True):
            with lock if under else contextlib.nullcontext():
                _spawn(lambda under=under: take(under)).join()
                spawned = line() - 1
                _run_in(pool, lambda under=under: take(under)).result()
                submitted = line() - 1
    taken = f"Lock@{FILE}:{lock_line(take)}"
    assert kinds_and_classes(v) == [
        ("circular", {f"(thread){FILE}:{spawned}", taken}),
        ("circular", {f"(work_completion){FILE}:{submitted}", taken}),
    ]


def lock_line(fn) -> int:
    """The line, in this file, of the first ``threading.Lock()`` before ``fn``'s definition."""
    lines = open(__file__).read().splitlines()
    n = fn.__code__.co_firstlineno - 1
    while "threading.Lock()" not in lines[n - 1] and "threading.RLock()" not in lines[n - 1]:
        n -= 1
    return n


# -- OpenTelemetry SDK 1.35.0: LoggingHandler.flush() waits for work that logs -------------------


class LogExporter:
    """A batch exporter whose export runs on a pool and logs (so takes the logging lock)."""

    def __init__(self, logging_lock: threading.RLock) -> None:
        self.logging_lock = logging_lock
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.pool_line = line() - 1

    def export(self) -> None:
        with self.logging_lock:  # logger.debug() in the export path
            pass

    flush_timeout = 30.0  # OpenTelemetry's default: 30 s

    def force_flush(self) -> None:
        self.pool.submit(self.export).result(timeout=self.flush_timeout)


class LoggingHandler:
    def __init__(self, exporter: LogExporter, hand_off: bool) -> None:
        self.exporter = exporter
        self.hand_off = hand_off
        self.flushers: list[threading.Thread] = []

    def flush(self) -> None:
        if self.hand_off:  # the fix: flush on a new thread, without waiting for it
            self.flushers.append(threading.Thread(target=self.exporter.force_flush, daemon=True))
            self.flushers[-1].start()
        else:  # 1.35.0
            self.exporter.force_flush()


def dict_config(logging_lock: threading.RLock, handler: LoggingHandler) -> None:
    """logging.config.dictConfig(): clears the old handlers, flushing them, under the logging lock."""
    with logging_lock:
        handler.flush()


def test_otel_flush_waiting_for_export_work_under_the_logging_lock_is_circular(v):
    logging_lock = threading.RLock()
    lock_line = line() - 1
    exporter = LogExporter(logging_lock)
    handler = LoggingHandler(exporter, hand_off=False)
    submit_line = LogExporter.force_flush.__code__.co_firstlineno + 1
    handler.flush()  # an ordinary flush first: the export took the logging lock
    exporter.flush_timeout = 0.2
    # The export now waits for the lock the flusher holds.  A wait with a timeout ends by itself:
    # the flusher gets the library's own timeout (after 30 s in real life), not a DeadlockError.
    with pytest.raises(concurrent.futures.TimeoutError):
        dict_config(logging_lock, handler)
    # The work waited for takes the lock; and so may any work of this one-worker pool queued ahead.
    assert kinds_and_classes(v) == [
        ("circular", {f"(work_completion){FILE}:{submit_line}", f"RLock@{FILE}:{lock_line}"}),
        ("circular", {f"(wq_completion){FILE}:{exporter.pool_line}", f"RLock@{FILE}:{lock_line}"}),
    ]
    exporter.pool.shutdown()


def test_otel_flush_handed_to_a_new_thread_is_clean(v):
    logging_lock = threading.RLock()
    exporter = LogExporter(logging_lock)
    handler = LoggingHandler(exporter, hand_off=True)
    handler.flush()
    dict_config(logging_lock, handler)
    for flusher in handler.flushers:
        flusher.join()
    exporter.pool.shutdown()
    assert v.reports == []


def test_otel_real_logging_dictconfig_under_pylockdep_run(tmp_path):
    """The same with logging's own lock, logging.config.dictConfig() and a real Handler, as
    ``pylockdep run`` sees a program: buggy handler reported (and refused), fixed one clean."""
    import subprocess

    program = tmp_path / "otel.py"
    program.write_text(OTEL_PROGRAM)
    results = {}
    for variant in ("buggy", "fixed"):
        results[variant] = subprocess.run(
            [sys.executable, "-m", "pylockdep", "run", str(program), variant],
            capture_output=True,
            text=True,
            timeout=50,
        )
    buggy, fixed = results["buggy"], results["fixed"]
    assert buggy.returncode == REPORT_STATUS, buggy.stderr
    assert "WARNING: possible circular locking dependency detected" in buggy.stderr
    assert "(work_completion)otel.py:" in buggy.stderr and "_lock@logging/__init__.py:" in buggy.stderr
    assert "refused: deadlock" in buggy.stdout
    assert fixed.returncode == 0, fixed.stderr
    assert "flushed" in fixed.stdout


OTEL_PROGRAM = """
import concurrent.futures, logging, logging.config, sys, threading

pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

def export():
    logging.getLogger("exporter.auth").debug("refreshing credentials")  # takes logging's lock

class OtelHandler(logging.Handler):
    def flush(self):
        if sys.argv[1] == "fixed":
            threading.Thread(target=lambda: pool.submit(export).result(), daemon=True).start()
        else:
            pool.submit(export).result()

logging.getLogger().addHandler(OtelHandler())
logging.getLogger().handlers[0].flush()
try:
    logging.config.dictConfig({"version": 1})
    print("flushed")
except Exception as exc:
    print("refused:", exc)
pool.shutdown()
"""


# -- APScheduler 3.5.0: shutdown(wait=True) waits for jobs under _jobstores_lock -----------------


class Scheduler:
    def __init__(self, shutdown_under_lock: bool) -> None:
        self._jobstores_lock = threading.RLock()
        self.lock_line = line() - 1
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self.pool_line = line() - 1
        self.shutdown_under_lock = shutdown_under_lock

    def get_jobs(self) -> list:
        with self._jobstores_lock:
            return []

    def add_job(self, fn) -> concurrent.futures.Future:
        return self._executor.submit(fn)

    def shutdown(self) -> None:
        if self.shutdown_under_lock:  # 3.5.0
            with self._jobstores_lock:
                self._executor.shutdown(wait=True)
        else:
            self._executor.shutdown(wait=True)


def test_apscheduler_shutdown_waiting_for_jobs_under_the_jobstores_lock_is_circular(v):
    scheduler = Scheduler(shutdown_under_lock=True)
    scheduler.add_job(scheduler.get_jobs).result()
    scheduler.shutdown()  # the job is done: nothing hangs
    assert kinds_and_classes(v) == [
        (
            "circular",
            {f"(wq_completion){FILE}:{scheduler.pool_line}", f"Scheduler._jobstores_lock@{FILE}:{scheduler.lock_line}"},
        )
    ]
    assert "Scheduler.shutdown+" in v.reports[0].text and "Scheduler.get_jobs+" in v.reports[0].text


def test_apscheduler_shutdown_outside_the_lock_is_clean(v):
    scheduler = Scheduler(shutdown_under_lock=False)
    scheduler.add_job(scheduler.get_jobs).result()
    scheduler.shutdown()
    assert v.reports == []


def test_pool_shutdown_while_a_job_waits_for_the_callers_lock_raises(v):
    scheduler = Scheduler(shutdown_under_lock=True)
    with scheduler._jobstores_lock:
        future = scheduler.add_job(scheduler.get_jobs)
        worker = next(iter(scheduler._executor._threads))
        wait_until_waiting(v, worker)
        with pytest.raises(pylockdep.DeadlockError) as raised:
            scheduler._executor.shutdown(wait=True)
    future.result()
    assert f"waits for '(thread){worker.name}' -> {worker.name}/" in str(raised.value)
    scheduler._executor.shutdown()
    assert [r.kind for r in v.reports] == ["circular"]


# -- CPython 3.12.0-3.12.7, 3.13.0 (gh-125451): the manager thread joins the feeder under a lock -


class CallQueue:
    """multiprocessing.Queue's shape: a feeder thread that, on an error, wakes the manager."""

    def __init__(self, shutdown_lock: threading.Lock, fixed: bool) -> None:
        self.shutdown_lock = shutdown_lock
        self.wakeup_lock = threading.Lock()  # the fix: _ThreadWakeup's own lock
        self.fixed = fixed
        self.feeder = threading.Thread(target=self.feed)
        self.feeder_line = line() - 1

    def feed(self) -> None:
        # _on_queue_feeder_error(): wake the manager up.
        with self.wakeup_lock if self.fixed else self.shutdown_lock:
            pass


def manager_thread(shutdown_lock: threading.Lock, call_queue: CallQueue) -> None:
    """join_executor_internals(): close the wakeup pipe and join the feeder, under the lock."""
    with shutdown_lock:
        call_queue.feeder.join()


@pytest.mark.parametrize("fixed", [False, True], ids=["3.13.0", "fixed"])
def test_process_pool_manager_joining_the_feeder_under_shutdown_lock(v, fixed):
    shutdown_lock = threading.Lock()
    lock_line = line() - 1
    call_queue = CallQueue(shutdown_lock, fixed)
    call_queue.feeder.start()
    call_queue.feeder.join()  # the feeder's error path ran first: nothing hangs
    manager = threading.Thread(target=manager_thread, args=(shutdown_lock, call_queue))
    manager.start()
    manager.join()
    if fixed:
        assert v.reports == []
    else:
        assert kinds_and_classes(v) == [
            ("circular", {f"(thread){FILE}:{call_queue.feeder_line}", f"Lock@{FILE}:{lock_line}"})
        ]


STDLIB_PROCESS_POOL = """
import concurrent.futures, pickle

class ErrorAtPickle:
    def __reduce__(self):
        raise pickle.PicklingError("no")

with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
    pool.submit(id, 1).result()
    try:
        pool.submit(id, ErrorAtPickle()).result()
    except pickle.PicklingError:
        print("pickling error")
"""


def test_the_standard_librarys_process_pool_as_pylockdep_run_sees_it(tmp_path):
    """On 3.12.0-3.12.7 and 3.13.0 the feeder's error path and the manager's join close the
    cycle (gh-125451); 3.11 joins the feeder after releasing the lock, and runs clean."""
    import subprocess

    program = tmp_path / "ppe.py"
    program.write_text(STDLIB_PROCESS_POOL)
    result = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", str(program)], capture_output=True, text=True, timeout=50
    )
    assert "pickling error" in result.stdout, result.stderr
    affected = (3, 12, 0) <= sys.version_info[:3] <= (3, 12, 7) or sys.version_info[:3] == (3, 13, 0)
    if affected:
        assert result.returncode == REPORT_STATUS, result.stderr
        assert "(thread)multiprocessing/queues.py:" in result.stderr
        assert "@concurrent/futures/process.py:" in result.stderr  # the executor's _shutdown_lock
    else:
        assert result.returncode == 0, result.stderr


# Waits the interpreter calls at its exit from C, with no Python frame below them: dask registers
# its pool's shutdown with atexit so, and a lock's acquire() or a join may be too (they run last
# registered first: the mutex is taken, then released).
AT_EXIT = """\
import atexit, queue, threading, pylockdep
from concurrent.futures import ThreadPoolExecutor
pylockdep.instrument_threading().install()
pool = ThreadPoolExecutor(2)
future = pool.submit(print, "work ran")
worker = threading.Thread(target=int)
worker.start()
mutex = pylockdep.Mutex("atexit mutex")
for wait in (pool.shutdown, future.result, worker.join, queue.Queue().join, threading.Lock().acquire,
             threading.RLock().acquire, threading.Condition().acquire, mutex.release, mutex.acquire):
    atexit.register(wait)
atexit.register(print, "exit began")
"""


@pytest.mark.parametrize("pure", [False, True], ids=["c", "pure"])
def test_waits_the_interpreter_calls_at_exit_with_no_python_frame_below_run(tmp_path, pure):
    """Each wrapper reads its caller's frame: one called from C with none below it is its own
    caller, and the real wait runs (each raised ValueError, and the pool was never shut down)."""
    import os
    import subprocess

    program = tmp_path / "at_exit.py"
    program.write_text(AT_EXIT)
    env = {**os.environ, "PYLOCKDEP_PURE_PYTHON": "1" if pure else "0"}
    result = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=50, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["work ran", "exit began"]
    assert result.stderr == ""


# -- thread pools: a work item waiting for its own pool ------------------------------------------


def test_waiting_inside_a_pool_for_work_of_the_same_pool_is_recursive_and_refused_with_one_worker(v):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    pool_line = line() - 1

    def inner():
        return 1

    def outer():
        return pool.submit(inner).result()

    with pytest.raises(pylockdep.DeadlockError):
        pool.submit(outer).result()
    pool.shutdown()
    assert kinds_and_classes(v) == [("recursive", {f"(wq_completion){FILE}:{pool_line}"})]


@pytest.mark.parametrize("workers", [1, 4])
def test_an_item_reading_a_future_submitted_before_it_is_clean(v, workers):
    """The pool takes its items in order: work submitted (by a thread outside the pool) before the
    item that reads its future was taken before that item, in every run, and is running or done:
    reading it waits for nothing of the pool (s3transfer's tasks read their predecessors' futures
    and were reported recursive)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        first = pool.submit(int, "1")
        later = pool.submit(lambda: first.result() + 1)
        assert later.result() == 2
    assert v.reports == []


def test_an_item_waiting_for_work_still_queued_behind_it_is_recursive(v):
    """Work another thread submitted after the item was taken, still queued (every worker busy),
    is a wait for the pool: were every worker to wait so, none would be left to take it."""
    go, started, blocked = threading.Event(), threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        pool_line = line() - 1
        queued: list[concurrent.futures.Future] = []
        runner: list[threading.Thread] = []

        def waits_for_the_queued():
            runner.append(threading.current_thread())
            started.set()
            blocked.wait()
            return queued[0].result()

        waiter = pool.submit(waits_for_the_queued)
        busy = pool.submit(go.wait)
        queued.append(pool.submit(int, "3"))
        assert queued[0]._state == "PENDING"
        started.wait()
        blocked.set()
        wait_until_waiting(v, runner[0])
        go.set()
        assert (waiter.result(), busy.result()) == (3, True)
    assert kinds_and_classes(v) == [("recursive", {f"(wq_completion){FILE}:{pool_line}"})]


def test_a_thread_outside_a_one_worker_pool_waiting_for_its_done_future_still_waits_for_the_pool(v):
    """Outside the pool, a future found done could have been queued behind work that takes the
    lock the waiter holds: that wait is still one for the pool, and the cycle is reported."""
    lock = threading.Lock()

    def takes_the_lock():
        with lock:
            pass

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool_line = line() - 1
        pool.submit(takes_the_lock).result()
        done = pool.submit(int)
        done.result()
        with lock:
            assert done.result() == 0
    assert [(r.kind, set(r.classes)) for r in v.reports if not about_future_conditions(r)] == [
        ("circular", {f"(wq_completion){FILE}:{pool_line}", f"Lock@{FILE}:{lock_line(takes_the_lock)}"})
    ]


def test_waiting_inside_a_bounded_pool_for_its_own_work_is_reported_even_when_it_completes(v):
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        pool_line = line() - 1
        assert pool.submit(lambda: pool.submit(int).result()).result() == 0
    assert kinds_and_classes(v) == [("recursive", {f"(wq_completion){FILE}:{pool_line}"})]


def test_future_result_exception_wait_and_as_completed_each_touch_the_work(v):
    lock = threading.Lock()

    def work():
        with lock:
            return 1

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    for waiter in (
        lambda fs: fs[0].result(),
        lambda fs: fs[0].exception(),
        lambda fs: concurrent.futures.wait(fs, timeout=5),
        lambda fs: list(concurrent.futures.as_completed(fs)),
    ):
        with pylockdep.validate(raise_on_report=False) as fresh:
            # A fresh graph for each waiter: the work's dependency is learned again.
            futures = [pool.submit(work) for _ in range(3)]
            submit_line = line() - 1
            concurrent.futures.wait(futures)
            with lock:
                waiter(futures)
        assert [(r.kind, set(r.classes)) for r in fresh.reports if not about_future_conditions(r)] == [
            ("circular", {f"(work_completion){FILE}:{submit_line}", f"Lock@{FILE}:{lock_line(work)}"})
        ]
    pool.shutdown()


# -- queue.Queue: join() waits for every get() to be marked done ---------------------------------


def test_two_threads_joining_each_other_is_circular_and_one_join_raises(v):
    """A cycle of joins never ends: one thread's join raises DeadlockError, the other's then ends."""
    both_started = threading.Barrier(2)
    threads: dict[str, threading.Thread] = {}
    outcome: dict[str, str] = {}

    def join_the_other(me: str, other: str) -> None:
        both_started.wait()
        try:
            threads[other].join()
            outcome[me] = "joined"
        except pylockdep.DeadlockError as exc:
            outcome[me] = str(exc)

    threads["a"] = threading.Thread(target=join_the_other, args=("a", "b"), name="a")
    threads["b"] = threading.Thread(target=join_the_other, args=("b", "a"), name="b")
    for thread in threads.values():
        thread.start()
    for thread in threads.values():
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads.values())
    assert sorted(outcome) == ["a", "b"] and list(outcome.values()).count("joined") == 1, outcome
    [refused] = [said for said in outcome.values() if said != "joined"]
    assert refused.startswith("deadlock: ") and refused.count(" waits for '(thread)") == 2, refused
    assert [r.kind for r in v.reports] == ["circular"]


@pytest.mark.parametrize("kind", ["RLock", "Mutex"])
def test_a_wait_for_a_lock_whose_owner_ends_during_the_wait_raises(v, kind):
    """The owner check runs at every poll of a wait, not only as it starts: an owner that ends
    holding the lock while another thread already waits for it leaves that wait with no end."""
    lock = threading.RLock() if kind == "RLock" else pylockdep.Mutex("ends_during_the_wait")
    taken, may_end = threading.Event(), threading.Event()
    caught: list[BaseException] = []

    def owner() -> None:
        lock.acquire()
        taken.set()
        may_end.wait(20)  # ends holding the lock, once the waiter waits

    def waiter() -> None:
        try:
            lock.acquire()
        except pylockdep.DeadlockError as exc:
            caught.append(exc)

    owning = threading.Thread(target=owner, name="owner")
    owning.start()
    taken.wait(20)
    waiting = threading.Thread(target=waiter, name="waiter")
    waiting.start()
    wait_until_waiting(v, waiting)
    may_end.set()
    owning.join()
    waiting.join(20)
    assert not waiting.is_alive()
    assert len(caught) == 1 and "its owner, thread" in str(caught[0]) and "ended without releasing it" in str(caught[0])
    assert [r.kind for r in v.reports] == ["lock_held_at_exit"]


class WorkError(Exception):
    pass


def test_a_futures_exception_raised_by_result_is_freed_without_the_collector(v):
    """The stand-in of ``result()`` is a frame of the traceback: it must not keep the future, and so
    the exception in it, alive, as CPython's ``result()`` does not (dramatiq's suite checks it)."""
    go = threading.Event()

    def work():
        go.wait(5)
        raise WorkError

    def wait_for_a_future_it_then_drops():
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(work)
            threading.Timer(0.05, go.set).start()  # result() waits: the stand-in's wait, on both paths
            try:
                future.result()
            finally:
                del future

    assert freed_without_the_collector(wait_for_a_future_it_then_drops)
    assert v.reports == []


def test_queue_join_under_a_lock_the_consumer_takes_is_circular(v):
    lock = threading.Lock()
    q = queue.Queue()
    q_line = line() - 1

    def consume():
        while q.get() is not None:
            with lock:
                pass
            q.task_done()
        q.task_done()

    consumer = threading.Thread(target=consume)
    consumer.start()
    q.put(1)
    q.join()
    with lock:
        q.join()  # nothing is pending: no hang
    q.put(None)
    consumer.join()
    assert kinds_and_classes(v) == [("circular", {f"(queue){FILE}:{q_line}", f"Lock@{FILE}:{lock_line(consume)}"})]


def test_a_consumer_that_never_marks_items_done_holds_one_span_at_a_time(v):
    a, b = queue.Queue(), queue.Queue()
    q_line = line() - 1
    for q in (a, b, a, b):
        q.put(0)
        q.get()
    held = [e for e in next(iter(v.tasks.values())).held]
    assert [e[0] for e in held] == [b.__dict__["_lockdep_map"]]
    # Two queues made on one line are two classes, as two locks are: the second names its column.
    column = open(__file__).read().splitlines()[q_line - 1].rindex("queue.Queue()") + 1
    assert a.__dict__["_lockdep_map"].name == f"(queue){FILE}:{q_line}"
    assert held[0][0].name == f"(queue){FILE}:{q_line}:{column}"


# -- ordinary use stays clean -------------------------------------------------------------------


def test_ordinary_executor_map_and_results_over_many_futures_are_clean(v):
    lock = threading.Lock()
    total = []

    def work(n):
        with lock:
            total.append(n)
        return n

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        assert sorted(pool.map(work, range(300))) == list(range(300))
        assert [f.result() for f in [pool.submit(work, n) for n in range(300)]] == list(range(300))
        other = threading.Lock()
        with other:  # a lock the work never takes may be held while waiting
            assert pool.submit(work, 1).result() == 1
    assert v.reports == []


def test_unusual_submits_and_waits_end_as_concurrent_futures_ends_them(v):
    """Keyword arguments, a subclass's submit(), a job that raises, a cancelled future, a timeout
    given by name, a submit without a function and one after shutdown: each ends as it does without
    pylockdep (the C path hands them to the Python wrappers), no submit stays under way, and the
    work is still named after the line that gave it to the pool (past the subclass's submit(),
    which only returns what its base made)."""
    from pylockdep import _waits

    lock = threading.Lock()

    class Pool(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # only returns what its base made: not the line
            return super().submit(fn, *args, **kwargs)

    def work(n, *, add):
        with lock:
            if n < 0:
                raise ValueError(n)
            return n + add

    started, release = threading.Event(), threading.Event()
    pool = Pool(max_workers=1)
    pool_line = line() - 1
    for _ in range(2):  # the second time, every site and chain is known
        assert pool.submit(work, 1, add=2).result() == 3
        assert pool.submit(work, 2, add=0).result(timeout=5) == 2
        failed = pool.submit(work, -1, add=0)
        assert isinstance(failed.exception(), ValueError)
        with pytest.raises(ValueError):
            failed.result()
        blocker = pool.submit(lambda: (started.set(), release.wait()))
        started.wait()
        queued = pool.submit(work, 5, add=0)
        assert queued.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            queued.result()
        with pytest.raises(concurrent.futures.CancelledError):
            queued.exception()
        release.set()
        blocker.result()
        started.clear()
        release.clear()
        with pytest.raises(TypeError):
            pool.submit()
    done = pool.submit(work, 1, add=0)
    submit_line = line() - 1
    done.result()
    with lock:
        assert done.result() == 1  # the work takes the lock held here: a dependency, reported
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(work, 1, add=0)
    assert _waits._submitting == {}
    # One worker: waiting for its work waits for the pool too (the kernel's ordered workqueue).
    assert kinds_and_classes(v) == [
        ("circular", {f"(work_completion){FILE}:{submit_line}", f"Lock@{FILE}:{lock_line(work)}"}),
        ("circular", {f"(wq_completion){FILE}:{pool_line}", f"Lock@{FILE}:{lock_line(work)}"}),
    ]


def test_a_failed_jobs_exception_is_freed_with_its_future_as_without_pylockdep(v):
    """_WorkItem.run drops the work item when the call raised, for the exception's traceback
    links back to the frames that ran it; the instrumented run does the same, so the exception
    goes with its last reference, with no garbage collection."""
    import gc
    import weakref

    class JobFailed(Exception):  # weakly referable, as built-in exceptions are not
        pass

    def fail():
        raise JobFailed()

    gc.disable()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(fail)
            error = future.exception()
            ref = weakref.ref(error)
            del error, future
        assert ref() is None
    finally:
        gc.enable()
    assert v.reports == []


def test_ordinary_as_completed_and_wait_over_many_futures_add_no_report_of_their_own(v):
    lock = threading.Lock()

    def work(n):
        with lock:
            return n

    # Fewer than the held-lock depth limit: wait() and as_completed() hold every future's
    # condition at once (same class, one instance each: the precision issue's per-instance rule
    # will judge those; today they are reported as recursive locking, which is not ours).
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            futures = [pool.submit(work, n) for n in range(40)]
            assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == list(range(40))
            done, _ = concurrent.futures.wait([pool.submit(work, n) for n in range(40)])
            assert len(done) == 40
    assert not v.off
    assert all(about_future_conditions(r) for r in v.reports)


def test_wait_for_the_first_exception_over_done_futures_is_clean(v):
    # wait() asks done futures for their exception() while it holds every future's condition,
    # which the work itself takes to finish: not a wait of the caller's.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(int), pool.submit(int, "x")]
        concurrent.futures.wait(futures)
        done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
        assert done == set(futures)
    assert v.reports == []


def test_producer_consumer_queue_with_join_is_clean(v):
    q: queue.Queue = queue.Queue(maxsize=10)
    results = queue.Queue()
    lock = threading.Lock()

    def consume():
        while True:
            item = q.get()
            try:
                if item is None:
                    return
                with lock:
                    results.put(item * 2)
            finally:
                q.task_done()

    consumers = [threading.Thread(target=consume) for _ in range(3)]
    for c in consumers:
        c.start()
    for n in range(100):
        with lock:
            pass
        q.put(n)
    q.join()
    for _ in consumers:
        q.put(None)
    for c in consumers:
        c.join()
    assert sorted(results.get() for _ in range(100)) == [n * 2 for n in range(100)]
    assert v.reports == []


def test_logging_queue_listener_is_clean(v):
    records = queue.Queue()
    target = logging.handlers.BufferingHandler(capacity=1000)
    listener = logging.handlers.QueueListener(records, target)
    logger = logging.getLogger("pylockdep.test_waits.queue_listener")
    logger.propagate = False
    handler = logging.handlers.QueueHandler(records)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    listener.start()
    for n in range(50):
        logger.info("record %d", n)
    listener.stop()
    logger.removeHandler(handler)
    assert len(target.buffer) == 50
    assert v.reports == []


def test_threads_joined_in_a_loop_and_threads_joining_their_siblings_are_clean(v):
    lock = threading.Lock()
    done = []

    def work(sibling):
        if sibling is not None:
            sibling.join()  # another thread made by the same line: judged apart
        with lock:
            done.append(1)

    previous = None
    threads = []
    for _ in range(5):
        previous = threading.Thread(target=work, args=(previous,))
        threads.append(previous)
        previous.start()
    for t in threads:
        t.join()
    assert len(done) == 5
    assert v.reports == []


def test_dot_draws_completion_maps_apart_from_locks(v):
    from pylockdep._picture import graph_to_dot, lock_family

    lock = threading.Lock()

    def take():
        with lock:
            pass

    t = threading.Thread(target=take)
    t_line = line() - 1
    t.start()
    t.join()
    families = {cls.name: lock_family(cls) for cls in v.graph.classes}
    assert families == {f"(thread){FILE}:{t_line}": "wait", f"Lock@{FILE}:{lock_line(take)}": "python"}
    dot = graph_to_dot(v)
    (node,) = [row for row in dot.splitlines() if "(thread)" in row and "->" not in row]
    assert "shape=ellipse" in node and "dashed" in node


def test_the_hang_dump_shows_a_thread_blocked_in_a_join(v):
    from pylockdep._hang import show_all_locks

    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="worker")
    worker.start()
    joiner = threading.Thread(target=worker.join, name="joiner")
    joiner.start()
    wait_until_waiting(v, joiner)
    try:
        dump = show_all_locks(v)
    finally:
        release.set()
        joiner.join()
    blocked = dump.index(next(line for line in dump if line.startswith("INFO: task joiner/")))
    assert dump[blocked].endswith("blocked on lock:")
    assert f"((thread){FILE}:" in dump[blocked + 1]
    assert dump[blocked + 2].startswith(" held by: worker/")


def test_a_pool_dropped_without_shutdown_is_collected_and_its_workers_end(v):
    """The futures of pending work must not keep their executor alive: dropping the last reference
    to a pool is how its workers learn to end (CPython's test_del_shutdown)."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=5)
    results = executor.map(abs, range(-5, 5))
    threads = list(executor._threads)
    del executor
    for t in threads:
        t.join(20)
        assert not t.is_alive()
    assert list(results) == [abs(n) for n in range(-5, 5)]
    assert v.reports == []


# -- the maps of work items -----------------------------------------------------------------------


def test_futures_carry_their_pools_idle_map_and_one_of_their_own_only_while_running(v):
    """The futures a program keeps cost no map each: queued and finished items carry the pool's
    one map of their class; a running item's future carries a map naming its runner."""
    go, seen = threading.Event(), []

    def job():
        go.wait()
        seen.append(running.__dict__["_lockdep_work"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(job)
        queued = [pool.submit(int, n) for n in range(3)]  # one line: one class of work
        idle = queued[0].__dict__["_lockdep_work"]
        assert [f.__dict__["_lockdep_work"] for f in queued] == [idle] * 3
        assert (idle.runner, idle._owner) == (None, None)
        go.set()
        assert [f.result() for f in queued] == [0, 1, 2]
    own = seen[0]
    assert own is not idle and own.runner == next(iter(pool._threads)).ident and own.pool is idle.pool
    assert own._owner is None  # released when the item ended
    assert all(f.__dict__["_lockdep_work"] is idle for f in queued)  # idle again, not their own maps
    assert running.__dict__["_lockdep_work"] is not own and running.__dict__["_lockdep_work"].runner is None
    assert v.reports == []


def test_a_wait_for_a_queued_item_that_then_blocks_on_the_waiters_lock_is_refused(v):
    """The waiter holds a lock and waits for an item queued behind a full pool of two workers; the
    item then runs and blocks on that lock, while the other worker goes idle.  The wait that began
    on a queued item (stuck only if every worker is) must follow it to its runner, or neither
    thread would ever see the cycle and both would hang."""
    lock = threading.Lock()
    busy = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        blockers = [pool.submit(busy.wait) for _ in range(2)]
        with lock:
            future = pool.submit(lock.acquire)  # runs once a worker is free; waits for the lock
            waiter = threading.current_thread()
            threading.Thread(target=lambda: (wait_until_waiting(v, waiter), busy.set())).start()
            with pytest.raises(pylockdep.DeadlockError):
                future.result()
        assert [f.result() for f in blockers] == [True, True]
    assert "circular" in [r.kind for r in v.reports]


# -- done callbacks ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_done_callback_reading_its_future_in_the_worker_is_clean(v, workers):
    """A callback given to add_done_callback() before the work ends runs in the worker, with the
    work's maps still held; reading the done future there (result(), exception(), as apscheduler
    3.x's pool executors do) never waits, but was reported recursive on the work's and the pool's
    maps."""
    go = threading.Event()
    got = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        future = pool.submit(go.wait)
        future.add_done_callback(lambda f: got.append((f.exception(), f.result(), threading.current_thread())))
        go.set()
    assert len(got) == 1 and got[0][:2] == (None, True) and got[0][2] is not threading.current_thread()
    assert v.reports == []


def test_a_long_wait_is_checked_at_each_poll_while_young_then_less_often(monkeypatch):
    """A hundred threads idle in their waits cost a quarter of a processor when each checked its
    wait at every poll: a wait is checked at each poll for its first fifth of a second, then a
    quarter of its age apart, at most CHECK_SECONDS_MAX.  A clock that moves only by the polls."""
    from types import SimpleNamespace

    from pylockdep import _waitfor

    clock = [0.0]
    checks: list[float] = []
    monkeypatch.setattr(_waitfor, "monotonic", lambda: clock[0])
    monkeypatch.setattr(_waitfor, "_check", lambda v, t, lock, mode, alone: checks.append(clock[0]))

    def poll(seconds: float) -> bool:
        clock[0] += seconds
        return clock[0] >= 10

    _waitfor.wait(None, SimpleNamespace(waiting=None), SimpleNamespace(_owner=None), 0, poll)
    start = _waitfor.FIRST_SLICE_SECONDS
    young = [at for at in checks if at - start < 0.18]
    assert young == pytest.approx([start + i * _waitfor.POLL_SECONDS for i in range(4)])
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert max(gaps) <= _waitfor.CHECK_SECONDS_MAX + _waitfor.POLL_SECONDS
    assert gaps[-1] >= _waitfor.CHECK_SECONDS_MAX  # ten seconds in, the checks are at their sparsest
    assert len(checks) < 40  # against 200 polls


def test_a_thread_notified_but_not_yet_running_is_not_idle_in_its_condition_wait():
    """A thread in an untimed ``Condition.wait()`` counted as idle (waiting for anyone to act) until
    it ran again, notified or not: a busy bounded queue's producers and consumers, all seen in
    their waits at one moment, had their joiner refused as a deadlock.  A waiter that is no
    longer among the Condition's was notified, and moves as soon as it gets the lock."""
    from pylockdep import _waitfor

    cond = threading.Condition()
    entered = threading.Event()

    def wait_once() -> None:
        with cond:
            entered.set()
            cond.wait()

    thread = threading.Thread(target=wait_once)
    thread.start()
    entered.wait()
    with cond:  # taken once the waiter has let it go, in wait()
        assert _waitfor.idle_wait(sys._current_frames()[thread.ident]) is _waitfor.NOTIFY
        cond.notify()
        assert _waitfor.idle_wait(sys._current_frames()[thread.ident]) is None  # still in wait()
    thread.join()


def test_a_pool_worker_with_work_queued_is_not_idle():
    """A pool's worker in its work queue's ``get()`` is idle only while that queue is empty: one
    woken by a submit that has yet to run again must not count as waiting for new work."""
    from pylockdep import _waitfor

    switching = sys.getswitchinterval()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(int).result()
        (worker,) = pool._threads
        deadline = time.monotonic() + 20
        while _waitfor.idle_wait(sys._current_frames()[worker.ident]) is not _waitfor.NEW_WORK:
            assert time.monotonic() < deadline, "the worker never went idle"
            time.sleep(0.005)
        sys.setswitchinterval(1000)  # the worker does not run before the second look
        try:
            pool.submit(int)
            assert _waitfor.idle_wait(sys._current_frames()[worker.ident]) is None
        finally:
            sys.setswitchinterval(switching)


def _take_lock(lock: threading.Lock) -> None:
    with lock:
        pass


def test_a_done_callback_reading_its_own_future_under_a_lock_waits_for_nothing(v):
    """``add_done_callback()`` on a done future calls the callback at once, in the caller's thread:
    APScheduler 3.x adds it under its executor's lock, and the callback reads the future's
    exception.  A future read in its own done callback is done in every run (CPython calls them
    only then), so the work taking that lock closes no cycle."""
    lock = threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_take_lock, lock)
        concurrent.futures.wait([future])
        with lock:
            future.add_done_callback(lambda done: done.exception())
    assert v.reports == []


def test_a_done_callback_reading_another_future_under_a_lock_still_waits_for_it(v):
    """Only the future whose callbacks run is done by design: another one, done in this run, may
    still be running in the next, and its work takes the lock held."""
    lock = threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future, other = pool.submit(_take_lock, lock), pool.submit(int)
        concurrent.futures.wait([future, other])
        with lock:
            other.add_done_callback(lambda done: future.exception())
    assert v.reports and all(r.kind == "circular" and lock.name in r.classes for r in v.reports)  # work, pool


def test_a_done_callback_added_is_stored_as_given(v):
    """Code that forgets its callback by removing it from ``_done_callbacks`` (a task manager's
    "once done" hook) finds the very function it added: pylockdep marks the thread around
    ``add_done_callback()`` and stores nothing of its own."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def forget_me(done: concurrent.futures.Future) -> None:
        raise AssertionError("removed before the future was done")

    future.add_done_callback(forget_me)
    future._done_callbacks.remove(forget_me)
    future.set_result(1)
    assert v.reports == []
