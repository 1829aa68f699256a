"""Real deadlocks stay found with Python's locks judged per instance and hand-off: small faithful
programs of the bugs issue 14 lists (pebble's waitforqueues, logging's dictConfig against
Handler.close, paho-mqtt's callback and out-message mutexes), CPython's ProcessPoolExecutor
shutdown against a feeder error (gh-125451, found in CPython's own tests), and the leak
readerwriterlock's own test suite leaves."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import threading
from types import MethodType

import pytest
from _waiting import run_alone

import pylockdep

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def v():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        yield v


def in_thread(fn) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join()


# pebble 4.x ``waitforqueues``: each queue's ``_put`` is patched to notify a condition, so a put
# (which holds the queue's mutex) takes the condition; the waiter holds the condition and asks
# each queue ``empty()``, which takes the queue's mutex.


def waitforqueues(queues, timeout=None):
    lock = threading.Condition(threading.Lock())
    for q in queues:
        q._pebble_lock = lock
        with q.mutex:
            q._pebble_old_method = q._put
            q._put = MethodType(_put_and_notify, q)
    try:
        with lock:
            if not any(not q.empty() for q in queues):
                lock.wait(timeout)
    finally:
        for q in queues:
            with q.mutex:
                q._put = q._pebble_old_method
    return [q for q in queues if not q.empty()]


def _put_and_notify(self, *args):
    self._pebble_old_method(*args)
    with self._pebble_lock:
        self._pebble_lock.notify_all()


def test_pebble_waitforqueues_lock_inversion_is_circular(v):
    queues = [queue.Queue(), queue.Queue()]
    waiter = threading.Thread(target=waitforqueues, args=(queues,))
    waiter.start()
    while not hasattr(queues[-1], "_pebble_old_method"):  # every queue patched
        threading.Event().wait(0.001)
    in_thread(lambda: queues[-1].put(1))  # queue mutex, then the condition
    waiter.join()
    (report,) = v.reports
    assert report.kind == "circular"
    assert any(name.startswith("Queue.mutex@queue.py:") for name in report.classes)


# paho-mqtt 1.x: the network loop holds the out-message mutex and calls on_publish under the
# callback mutex; a callback (run under the callback mutex) that publishes takes the out-message
# mutex.


class MqttClient:
    def __init__(self) -> None:
        self._callback_mutex = threading.RLock()
        self._out_message_mutex = threading.RLock()
        self._out_messages: list[str] = []
        self.on_publish = None
        self.on_message = None

    def publish(self, payload: str) -> None:
        with self._out_message_mutex:
            self._out_messages.append(payload)

    def _handle_puback(self) -> None:  # the network loop, for an acknowledged message
        with self._out_message_mutex:
            if self._out_messages:
                self._out_messages.pop(0)
                with self._callback_mutex:
                    if self.on_publish:
                        self.on_publish()

    def _handle_on_message(self, payload: str) -> None:
        with self._callback_mutex:
            if self.on_message:
                self.on_message(payload)


def test_paho_callback_mutex_against_out_message_mutex_is_circular(v):
    client = MqttClient()
    client.on_publish = lambda: None
    client.on_message = lambda payload: client.publish("reply to " + payload)
    client.publish("hello")
    in_thread(client._handle_puback)
    in_thread(lambda: client._handle_on_message("ping"))
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(name.split("@")[0] for name in report.classes) == [
        "MqttClient._callback_mutex",
        "MqttClient._out_message_mutex",
    ]


# CPython's logging: dictConfig() holds the module lock while it shuts the old handlers down,
# taking each handler's lock; logging.shutdown() holds a handler's lock and Handler.close() takes
# the module lock.  logging's module lock is made when logging is imported, so the program runs
# under ``pylockdep run``, which instruments threading before that.

LOGGING_PROGRAM = """\
import logging, logging.config, threading

config = {
    "version": 1,
    "handlers": {"h": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["h"], "level": "INFO"},
}
logging.config.dictConfig(config)
handler = logging.getLogger().handlers[0]

def shut_down():
    logging.shutdown([lambda: handler])  # holds the handler's lock, then close() takes logging's

t = threading.Thread(target=shut_down)
t.start()
t.join()
logging.config.dictConfig(config)  # logging's lock, then the old handlers' locks
"""


def test_logging_dictconfig_against_handler_close_is_circular(tmp_path):
    (tmp_path / "logging_bug.py").write_text(textwrap.dedent(LOGGING_PROGRAM))
    result = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", "--json", "out.jsonl", "logging_bug.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert "WARNING: possible circular locking dependency detected" in result.stderr, result.stderr
    names = (tmp_path / "out.jsonl").read_text()
    assert "Handler.lock@logging/__init__.py:" in names and "_lock@logging/__init__.py:" in names


# CPython's ProcessPoolExecutor, gh-125451: from 3.12 the executor's manager thread holds the
# shutdown lock while it joins the call queue's feeder thread (join_executor_internals), and the
# feeder thread, failing to pickle a work item, takes that lock to wake the manager
# (_SafeQueue._on_queue_feeder_error).  A feeder error during a shutdown hangs both threads for
# ever.  Fixed in 3.12.8 and 3.13.1: the wakeup pipe got a lock of its own, which "fixed" puts in
# place.  3.11 joins the feeder thread outside the lock.  This program never hangs (the feeder's
# error is handled before the shutdown begins): the two orders are each seen once.  test_waits has
# the bug's shape in miniature; this is CPython's own code, end to end under ``pylockdep run``, as
# 3.13.0's test_concurrent_futures gives the same report.

PROCESS_POOL_PROGRAM = """\
import concurrent.futures, sys, threading

class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot be sent to a worker")

if __name__ == "__main__":
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as executor:
        if "fixed" in sys.argv:
            executor._call_queue.shutdown_lock = threading.Lock()  # what the fix does, in effect
        future = executor.submit(id, Unpicklable())  # the feeder thread fails, under the lock
        try:
            future.result()
        except RuntimeError:
            pass
    # leaving the block: the manager thread joins the feeder under the lock
"""


def _has_gh_125451() -> bool:
    """Whether this CPython's process pool joins the feeder thread holding the shutdown lock and
    takes that lock on a feeder error (3.12.0-3.12.7, 3.13.0)."""
    import inspect
    from concurrent.futures import process

    # 3.12 split the join into _join_executor_internals, called under the lock; 3.11 has no such
    # method and takes the lock only after joining.
    joins_under_lock = hasattr(process._ExecutorManagerThread, "_join_executor_internals")
    feeder_takes_lock = "self.shutdown_lock" in inspect.getsource(process._SafeQueue._on_queue_feeder_error)
    return joins_under_lock and feeder_takes_lock


@pytest.mark.parametrize("fixed", [False, True])
def test_process_pool_shutdown_against_a_feeder_error_is_circular_where_cpython_has_the_bug(tmp_path, fixed):
    (tmp_path / "pool_bug.py").write_text(textwrap.dedent(PROCESS_POOL_PROGRAM))
    result = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", "--json", "out.jsonl", "pool_bug.py", *(["fixed"] * fixed)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    lines = (tmp_path / "out.jsonl").read_text().splitlines() if (tmp_path / "out.jsonl").exists() else []
    reports = [json.loads(line) for line in lines]
    if fixed or not _has_gh_125451():
        assert result.returncode == 0, result.stderr
        assert reports == []
        return
    assert result.returncode == 66, result.stderr
    assert [r["kind"] for r in reports] == ["circular"]
    names = reports[0]["classes"]
    assert any(name.startswith("ProcessPoolExecutor._shutdown_lock@concurrent/futures/process.py:") for name in names)
    assert any(name.startswith("(thread)multiprocessing/queues.py:") for name in names)
    assert len(names) == 2


# readerwriterlock 1.0.10, RWLockReadD (readers first): the first reader takes the resource Lock
# under the count's Lock, the last one releases it.  A reader handle keeps only a flag, so taking
# one handle twice counts two readers and its one release takes one off.  downgrade() makes its
# reader in a helper thread (RWLockReadD_Downgrade), which takes the resource and ends.  The
# library's test_write_req14 takes its other reader handle again while it holds it: the count
# stays at 1 and the resource Lock, taken by the ended helper, is never released (no writer gets
# it again; RWLockWriteD and RWLockFairD are left the same way, but there the test's own thread,
# still running, holds it).  The one report that suite gives under the plugin is this true leak.


class ReaderFirstRWLock:
    def __init__(self) -> None:
        self.count = 0
        self.count_lock = threading.Lock()
        self.resource = threading.Lock()


class Reader:
    def __init__(self, rw: ReaderFirstRWLock) -> None:
        self.rw = rw

    def acquire(self) -> None:
        with self.rw.count_lock:
            self.rw.count += 1
            if self.rw.count == 1:
                self.rw.resource.acquire()

    def release(self) -> None:
        with self.rw.count_lock:
            self.rw.count -= 1
            if self.rw.count == 0:
                self.rw.resource.release()


def write_then_downgrade(rw: ReaderFirstRWLock) -> Reader:
    """Take ``rw`` as a writer, then downgrade as readerwriterlock does: a helper thread becomes
    the first reader as the writer lets go."""
    rw.resource.acquire()
    result = Reader(rw)
    helper = threading.Thread(target=result.acquire, name="RWLockReadD_Downgrade")
    helper.start()
    rw.resource.release()
    helper.join()
    return result


@pytest.mark.parametrize("twice", [True, False])
def test_readerwriterlock_test_taking_a_reader_handle_twice_leaks_the_resource_lock(twice):
    """With each handle released once instead, the last reader releases the resource the helper
    took (a hand-off) and the run is clean."""
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        rw = ReaderFirstRWLock()
        downgraded = write_then_downgrade(rw)
        other = Reader(rw)
        other.acquire()
        downgraded.release()
        if twice:
            other.acquire()  # the handle is held already: a second reader counted
        other.release()
        if not twice:
            other.acquire()
            other.release()
        assert rw.count == int(twice) and rw.resource.locked() == twice
        assert v.reports == []  # judged when validation ends
    if not twice:
        assert v.reports == []
        return
    (report,) = v.reports
    assert report.kind == "lock_held_at_exit"
    assert report.classes == (rw.resource._key.name,)
    assert report.title.startswith("WARNING: RWLockReadD_Downgrade/")  # the helper thread, ended


# paho-mqtt 1.1 (#12): the network thread takes the client's callback mutex by a bare acquire()
# and releases it after the user's on_message callback; a callback that calls
# message_callback_add(), which takes the same mutex, blocks the thread for ever.  The main
# thread's timed join returns and the program goes on: nobody is stuck but the thread.

PAHO_12_PROGRAM = """\
import threading, time, pylockdep

with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
    callback_mutex = threading.Lock()

    def message_callback_add():
        callback_mutex.acquire()
        callback_mutex.release()

    def handle_on_message():
        callback_mutex.acquire()
        message_callback_add()  # the user's on_message callback
        callback_mutex.release()

    network = threading.Thread(target=handle_on_message, daemon=True)
    network.start()
    network.join(0.5)
    deadline = time.monotonic() + 20
    while not any(t.waiting for t in list(v.tasks.values())) and time.monotonic() < deadline:
        time.sleep(0.01)  # the network thread blocked in its second acquire()
print([(r.kind, r.classes) for r in v.reports], network.is_alive())  # held back until here
"""


def test_paho_callback_taking_the_mutex_its_caller_holds_is_recursive():
    """A Lock taken by a bare acquire() in a function that releases it (a mutex's use), taken
    again by a function it calls, is recursive locking, as a with-block's is, unless another thread
    releases a lock of its class before validation ends; the thread still waits (another thread
    may release a Lock), for ever here."""
    result = run_alone(PAHO_12_PROGRAM)
    assert result.stdout == "[('recursive', ('callback_mutex@<string>:4',))] True\n", result.stderr


class SyncRunner:
    """A Lock as a completion signal (probe): the caller closes it, hands the job to a worker that
    opens it, waits for it in a helper, and releases it when done, as a mutex's user would."""

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._result = None
        threading.Thread(target=self._worker, daemon=True).start()

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            self._result = job()
            self._done.release()  # the job is done

    def _wait_done(self) -> None:
        self._done.acquire()

    def run(self, job):
        self._done.acquire()
        try:
            self._jobs.put(job)
            self._wait_done()
            return self._result
        finally:
            self._done.release()


def test_a_helper_waiting_for_a_workers_completion_signal_is_a_hand_off():
    """The shape of paho's bug, where a worker does release the Lock: its class is a hand-off
    before validation ends, and the recursive report that waited for that is dropped."""
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        runner = SyncRunner()
        assert [runner.run(lambda i=i: i * i) for i in range(3)] == [0, 1, 4]
    assert v.reports == []


def test_a_gate_that_a_helper_waits_on_is_a_hand_off():
    """The same shape with a taker that never releases what it took (it closes a gate that another
    thread opens) is a wait for a hand-off, not recursive locking."""
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        gate = threading.Lock()

        def wait_for_gate() -> None:
            gate.acquire()
            gate.release()

        def close_then_wait() -> None:
            gate.acquire()
            opener = threading.Timer(0.05, gate.release)
            opener.start()
            wait_for_gate()
            opener.join()

        close_then_wait()
    assert v.reports == []
