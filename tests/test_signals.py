"""Python signal handlers as Python's interrupt (the SIGNAL usage state): a lock a handler takes
and the main thread takes outside a handler can deadlock when the signal lands while it is held,
and is reported from a run in which it did not."""

from __future__ import annotations

import _signal
import os
import queue
import signal
import subprocess
import sys
import threading

import pytest
from _interrupts import run_as_signal_handler

import pylockdep
from pylockdep import _context, _signals

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")


@pytest.fixture
def v():
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
            yield v
    finally:
        signal.signal(signal.SIGUSR1, previous)


def in_thread(body) -> None:
    t = threading.Thread(target=body)
    t.start()
    t.join()


def kinds(v) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.kind, r.classes) for r in v.reports]


def take(lock) -> None:
    """Hold ``lock`` over a call, where a handler may run (one cannot run in a section with no
    call: test_a_section_no_handler_can_interrupt_is_not_signal_unsafe)."""
    with lock:
        called()


def called() -> None:
    pass


@pytest.mark.parametrize("handler_first", [True, False], ids=["handler-first", "main-first"])
def test_a_lock_taken_in_a_handler_and_in_the_main_thread_is_inconsistent(v, handler_first):
    lock = threading.Lock()
    name = lock.name
    if handler_first:
        run_as_signal_handler(lambda: take(lock))
        take(lock)
        usage = "inconsistent {IN-SIGNAL-W} -> {SIGNAL-ON-W} usage."
    else:
        take(lock)
        run_as_signal_handler(lambda: take(lock))
        usage = "inconsistent {SIGNAL-ON-W} -> {IN-SIGNAL-W} usage."
    assert kinds(v) == [("inconsistent_lock_state", (name,))]
    text = v.reports[0].text
    assert usage in text
    assert f"  lock({name});\n  <Signal handler>\n    lock({name});" in text


def test_an_rlock_taken_in_a_handler_and_in_the_main_thread_is_not(v):
    """Its owner enters it again: the handler cannot wait for the code it interrupted."""
    lock = threading.RLock()
    run_as_signal_handler(lambda: take(lock))
    take(lock)
    assert v.reports == []


def test_a_lock_a_handler_shares_only_with_other_threads_is_not(v):
    """Handlers run in the main thread only: another thread holding the lock is only waited for."""
    lock = threading.Lock()
    run_as_signal_handler(lambda: take(lock))
    in_thread(lambda: take(lock))
    assert v.reports == []


def test_a_lock_taken_only_in_handlers_is_not(v):
    lock = threading.Lock()
    run_as_signal_handler(lambda: take(lock))
    run_as_signal_handler(lambda: take(lock))
    assert v.reports == []


def test_queue_put_in_a_handler_is_reported_and_simplequeue_is_not(v):
    """CPython bpo-14976: a handler that puts into a ``queue.Queue`` that the main thread reads
    deadlocks if it lands while the main thread is inside ``get()``; ``SimpleQueue`` was made for
    this and is clean."""
    q = queue.Queue()
    run_as_signal_handler(lambda: q.put(1))
    assert q.get() == 1
    assert [kind for kind, _ in kinds(v)] == ["inconsistent_lock_state"]
    assert v.reports[0].classes[0].startswith("Queue.mutex@")
    del v.reports[:]
    sq = queue.SimpleQueue()
    run_as_signal_handler(lambda: sq.put(1))
    assert sq.get() == 1
    assert v.reports == []


def test_event_set_in_a_handler_and_waited_for_in_the_main_thread_is_reported(v):
    """``Event.set()`` takes the event's condition, which ``wait()`` holds for a moment."""
    stop = threading.Event()
    run_as_signal_handler(stop.set)
    assert stop.wait(0)
    assert [kind for kind, _ in kinds(v)] == ["inconsistent_lock_state"]


LOGGING_FROM_A_HANDLER = """
import concurrent.futures, logging, signal
logging.basicConfig(level=logging.INFO)
log = logging.getLogger("app")
signal.signal(signal.SIGTERM, lambda signum, frame: log.info("terminating"))
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    futures = [pool.submit(log.info, "job %d", i) for i in range(8)]
    signal.raise_signal(signal.SIGTERM)
    for future in futures:
        future.result()
log.info("done")
"""


def test_logging_from_a_handler_while_threads_log_is_not_reported(tmp_path):
    """logging's locks are RLocks: the handler re-enters what the main thread holds.  The orders
    between them (Handler.close() takes the module lock under the handler's, as logging.shutdown()
    does at exit) are the main thread's alone, and a handler can wait for the thread it
    interrupted only through another thread's orders (check_signal_order)."""
    program = tmp_path / "logs_from_a_handler.py"
    program.write_text(LOGGING_FROM_A_HANDLER)
    done = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", str(program)], capture_output=True, text=True, timeout=100
    )
    assert "terminating" in done.stderr and "done" in done.stderr
    assert "WARNING:" not in done.stderr and done.returncode == 0, done.stderr


def nest(outer, inner) -> None:
    with outer, inner:
        pass


@pytest.mark.parametrize("safe_type", ["Lock", "RLock"])
@pytest.mark.parametrize("order_last", [False, True], ids=["usage-last", "order-last"])
def test_another_threads_order_from_a_handlers_lock_to_the_main_threads_is_reported(v, safe_type, order_last):
    """The main thread holds ``db`` when a signal comes; its handler waits for ``stats``, which a
    worker holds while it waits for ``db``.  An RLock is no better: the handler waits for the
    worker that owns it.  Found whichever comes last, the usage (irq_inversion) or the worker's
    order (irq_unsafe_order)."""
    stats, db = getattr(threading, safe_type)(), threading.Lock()
    run_as_signal_handler(lambda: take(stats))
    if order_last:
        take(db)
        in_thread(lambda: nest(stats, db))
        kind = "irq_unsafe_order"
    else:
        in_thread(lambda: nest(stats, db))
        take(db)
        kind = "irq_inversion"
    assert [r.kind for r in v.reports] == [kind]
    assert set(v.reports[0].classes) == {stats.name, db.name}
    text = v.reports[0].text
    if order_last:
        assert "WARNING: SIGNAL-safe -> SIGNAL-unsafe lock order detected" in text
    assert f"  lock({db.name});\n" in text and f"  <Signal handler>\n    lock({stats.name});" in text
    assert "local_irq_disable" not in text


class Counter:
    """A count bumped under its lock with no call, where no signal handler can run, and, as
    ``reset`` does, around a call, where one can."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n = 0

    def inc(self) -> None:
        with self.lock:
            self.n += 1

    def reset(self) -> None:
        with self.lock:
            called()
            self.n = 0


@pytest.mark.parametrize("handler_first", [True, False], ids=["handler-first", "main-first"])
def test_a_section_no_handler_can_interrupt_is_not_signal_unsafe(v, handler_first):
    """CPython runs a signal handler only where it checks for pending work (a call, a function's
    start, a backward jump): none can run in the main thread while it is inside ``with lock:
    n += 1``, so a handler that takes that lock cannot wait for its own thread."""
    counter = Counter()
    if handler_first:
        run_as_signal_handler(counter.inc)
    counter.inc()
    run_as_signal_handler(counter.inc)
    counter.inc()
    assert kinds(v) == []


@pytest.mark.parametrize("when", ["first", "between", "after"])
def test_a_line_of_the_counter_where_a_handler_may_run_is_inconsistent(v, when):
    """The counter's lock held over a call, where a handler may run.  Seen first, it clashes with
    the handler at once.  Seen after a line where none can run took the lock on the same chain,
    that chain is cached: the line is seen once a handler has taken the lock, at its next
    acquisition (``between``), as is a line first seen then (``after``)."""
    counter = Counter()
    if when == "first":
        counter.reset()
    counter.inc()
    if when == "between":
        counter.reset()
    run_as_signal_handler(counter.inc)
    if when == "after":
        assert kinds(v) == []
    if when != "first":
        counter.reset()
    assert kinds(v) == [("inconsistent_lock_state", (counter.lock.name,))]
    usage = "{SIGNAL-ON-W} -> {IN-SIGNAL-W}" if when == "first" else "{IN-SIGNAL-W} -> {SIGNAL-ON-W}"
    assert f"inconsistent {usage} usage." in v.reports[0].text


@pytest.mark.parametrize("order_last", [False, True], ids=["usage-last", "order-last"])
def test_an_order_into_a_lock_the_main_thread_holds_where_no_handler_runs_is_not_reported(v, order_last):
    """A worker takes ``stats`` then the counter's lock; a handler takes ``stats``.  The main
    thread holds the counter's lock only where no handler can run, so the handler never waits
    for a worker that waits for the main thread.  Once the main thread holds it over a call, the
    order is reported."""
    stats, counter = threading.Lock(), Counter()
    run_as_signal_handler(lambda: take(stats))
    if order_last:
        counter.inc()
        in_thread(lambda: nest(stats, counter.lock))
    else:
        in_thread(lambda: nest(stats, counter.lock))
        counter.inc()
    assert v.reports == []
    counter.reset()
    assert [r.kind for r in v.reports] == ["irq_inversion"]
    assert set(v.reports[0].classes) == {stats.name, counter.lock.name}


HANDLER_WAITS_FOR_ITS_THREAD = """
import os, signal, threading, pylockdep
lock = threading.Lock()
def handler(signum, frame):
    with lock:
        pass
signal.signal(signal.SIGUSR1, handler)
def work():
    os.kill(os.getpid(), signal.SIGUSR1)
try:
    with lock:
        work()
except pylockdep.DeadlockError as exc:
    print("refused:", exc)
"""


def test_a_handler_waiting_for_a_lock_its_thread_holds_is_refused_not_hung(tmp_path):
    """bpo-14976's shape: the main thread holds a Lock over a call, where a signal lands, and the
    handler waits for that Lock.  The wait can end only once the handler returns: DeadlockError,
    although the program handles a signal in Python (for which a waiting main thread otherwise
    counts as one that may still move)."""
    script = tmp_path / "handler_waits.py"
    script.write_text(HANDLER_WAITS_FOR_ITS_THREAD)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pylockdep", "run", str(script)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("hung")
    assert "refused: deadlock: MainThread" in result.stdout, result.stderr[-2000:]
    assert "which it holds itself" in result.stdout
    assert "WARNING: inconsistent lock state" in result.stderr
    assert result.returncode == 66


def test_an_rlock_the_main_thread_also_takes_outside_a_handler_is_looked_beyond(v):
    """An RLock may be both IN-SIGNAL and SIGNAL-ON (its owner only enters it again), so when it
    becomes IN-SIGNAL last the search for a SIGNAL-ON class it leads to goes on past the RLock
    itself, to the Lock a worker takes under it."""
    stats, db = threading.RLock(), threading.Lock()
    take(stats)
    in_thread(lambda: nest(stats, db))
    take(db)
    assert v.reports == []
    run_as_signal_handler(lambda: take(stats))
    assert kinds(v) == [("irq_inversion", (stats.name, db.name))]
    assert f"  <Signal handler>\n    lock({stats.name});" in v.reports[0].text


def test_a_chain_of_other_threads_orders_is_followed(v):
    stats, middle, db = threading.Lock(), threading.Lock(), threading.Lock()
    run_as_signal_handler(lambda: take(stats))
    take(db)
    in_thread(lambda: nest(middle, db))
    assert v.reports == []
    in_thread(lambda: nest(stats, middle))
    assert kinds(v) == [("irq_unsafe_order", (stats.name, middle.name, db.name))]
    assert f"{stats.name} --> {middle.name} --> {db.name}" in v.reports[0].text


def test_orders_only_the_main_thread_made_are_not_reported(v):
    """The main thread takes ``db`` under ``stats`` itself: holding ``db`` it holds ``stats`` too,
    which its handler enters again, and no other thread waits for ``db`` holding ``stats``."""
    stats, db = threading.RLock(), threading.Lock()
    nest(stats, db)
    run_as_signal_handler(lambda: take(stats))
    take(db)
    assert v.reports == []


def test_another_threads_order_to_a_lock_the_main_thread_never_takes_is_not_reported(v):
    stats, db = threading.Lock(), threading.Lock()
    run_as_signal_handler(lambda: take(stats))
    in_thread(lambda: nest(stats, db))
    assert v.reports == []


def test_kernel_lock_types_have_no_signal_state(v):
    """The kernel's types model the kernel, where a Python signal is no interrupt."""
    m = pylockdep.Mutex("m")
    run_as_signal_handler(lambda: take(m))
    take(m)
    assert v.reports == []


def test_a_handler_that_raises_leaves_the_main_thread_outside_any_handler(v):
    lock = threading.Lock()

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_as_signal_handler(interrupt)
    assert v.task().in_signal == 0
    take(lock)
    in_thread(lambda: take(lock))
    assert v.reports == []


def test_a_handler_installed_before_validation_starts_runs_as_one():
    previous = signal.getsignal(signal.SIGUSR1)
    lock = None

    def handler(signum, frame):
        take(lock)

    signal.signal(signal.SIGUSR1, handler)
    try:
        with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
            assert signal.getsignal(signal.SIGUSR1) is handler  # the wrapping stays unseen
            lock = threading.Lock()
            signal.raise_signal(signal.SIGUSR1)
            take(lock)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert [kind for kind, _ in kinds(v)] == ["inconsistent_lock_state"]


def test_handlers_nest_at_most_max_nested_deep_and_none_is_lost(v):
    """A signal that comes while a handler runs interrupts it, as in CPython, but only so deep:
    beyond MAX_NESTED it waits for the innermost handler to return (a storm of signals faster
    than their handlers would otherwise nest them until the recursion limit)."""
    calls, depth, deepest = [], [0], [0]

    def handler(signum, frame):
        depth[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        calls.append(depth[0])
        if len(calls) < 20:
            signal.raise_signal(signal.SIGUSR1)  # lands before this handler returns
        depth[0] -= 1

    signal.signal(signal.SIGUSR1, handler)
    signal.raise_signal(signal.SIGUSR1)
    assert len(calls) == 20
    assert deepest[0] == _signals.MAX_NESTED
    assert v.task().in_signal == 0 and _signals._running == 0


def test_signals_that_come_while_their_handler_waits_are_handled_once(v):
    """A storm of signals faster than their handler (a timer on a busy machine): as each run of
    the handler starts, three signals have landed in the wrapper's code that called it
    (``_handle``).  As in CPython, a signal that comes while one of its number waits to be handled
    is handled with it: one more run after each, and the program's code goes on once the storm
    ends.  Held back one by one they made two more runs to do after each run (61 in all here),
    and under a real storm so many that the program never went on."""
    runs = []

    def handler(signum, frame):
        runs.append(len(_signals._nested))
        if len(runs) <= 20:  # the storm
            wrapper = sys._getframe(1)
            assert wrapper.f_code is _signals._handle.__code__
            for _ in range(3):
                installed(signum, wrapper)

    signal.signal(signal.SIGUSR1, handler)
    installed = _signal.getsignal(signal.SIGUSR1)
    signal.raise_signal(signal.SIGUSR1)
    assert runs == [0] * 21  # none left waiting as a run starts: the one held back is running
    assert not _signals._nested and v.task().in_signal == 0 and _signals._running == 0


def test_signals_that_land_in_release_code_run_as_it_ends_each_number_once(v):
    """Handlers of signals that land in release code (``_signals.install``: it is one) run as it
    ends, in the order the signals came; a signal that comes again before then is handled once,
    as CPython does with a signal that comes while it is pending."""
    ran = []
    previous = signal.getsignal(signal.SIGUSR2)

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is _signals.install.__code__:
            sys.settrace(None)
            for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1, signal.SIGUSR2):
                _signal.getsignal(signum)(signum, frame)
            ran.append("held back")

    signal.signal(signal.SIGUSR1, lambda signum, frame: ran.append(signum))
    signal.signal(signal.SIGUSR2, lambda signum, frame: ran.append(signum))
    try:
        sys.settrace(hook)
        _signals.install()
    finally:
        sys.settrace(None)
        signal.signal(signal.SIGUSR2, previous)
    assert ran == ["held back", signal.SIGUSR1, signal.SIGUSR2]
    assert not _signals.deferred


class Boom(Exception):
    pass


def _sections():
    spin = pylockdep.SpinLock("signalled_section")
    sections = {
        "preempt_disabled": (pylockdep.preempt_disabled, _context.preempt_disable),
        "irqs_disabled": (pylockdep.irqs_disabled, _context.irq_save_for),
    }
    if pylockdep._fastpath._speedups is None:  # the C path changes these contexts in C
        sections["SpinLock.irqsave"] = (spin.irqsave, _context.irq_save_for)
        sections["SpinLock.bh"] = (spin.bh, _context.bh_disable_at)
    return sections


@pytest.mark.parametrize("name", list(_sections()))
def test_a_handler_that_raises_as_a_section_changes_its_context_leaves_it_unchanged(v, name):
    """A signal that comes just after a section changed its context, before its block began, runs
    its handler once the section is set up; the handler's exception leaves the section as its end
    would, so no context is left changed for the code after it."""
    make, changes_context = _sections()[name]
    fired = []

    def handler(signum, frame):
        raise Boom

    def hook(frame, event, arg):
        if event == "return" and frame.f_code is changes_context.__code__ and not fired:
            fired.append(frame.f_back.f_code.co_qualname)
            sys.setprofile(None)
            _signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, frame.f_back)  # as if it came there

    previous = signal.signal(signal.SIGUSR1, handler)
    t = v.task()
    try:
        sys.setprofile(hook)
        with pytest.raises(Boom), make():
            pass
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGUSR1, previous)
    assert fired
    assert (t.preempt, t.irqs_off, t.bh, t.held) == (0, False, 0, [])
    with pylockdep.Mutex("after_the_section"):  # sleeping is fine again
        pass
    assert v.reports == []


FORK_FROM_HANDLER = """
import os, signal
import pylockdep
from pylockdep import _signals
with pylockdep.validate(raise_on_report=False, stream=None):
    _signals.deferred[signal.SIGUSR1] = lambda signum, frame: None
    _signals._nested[signal.SIGUSR2] = lambda signum, frame: None
    _signals.landed.append(signal.SIGUSR1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, repr((dict(_signals.deferred), dict(_signals._nested), _signals.landed)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    print(os.read(read, 1000).decode())
    _signals.deferred.clear()
    _signals._nested.clear()
    _signals.landed.clear()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_runs_none_of_the_parents_held_back_signals():
    """CPython clears a child's pending signals after ``fork()``: so does pylockdep with the
    signals it holds back (a fork from a handler, or from code where one was held back)."""
    result = subprocess.run([sys.executable, "-c", FORK_FROM_HANDLER], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "({}, {}, [])\n"
