"""The garbage collector as Python's other interrupt (the GC usage state): a finalizer the collector
runs takes its locks between two instructions of whatever thread started the collection, so a lock
taken both there and outside can deadlock with the code the collection interrupted, and is reported
from a run in which it did not (bpo-14976: ``queue.Queue.put`` in a ``__del__``)."""

from __future__ import annotations

import _signal
import contextlib
import gc
import queue
import signal
import sys
import threading
import weakref

import pytest
from _interrupts import Circular, in_finalizer

import pylockdep
from pylockdep import _collector, _signals
from pylockdep._classes import ENABLED_GC


@pytest.fixture
def v():
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        yield v


def take(lock) -> None:
    """Take ``lock`` around a call, where a collection may start (see
    test_a_section_that_starts_no_collection_is_no_inconsistent_state)."""
    with lock:
        collection_point()


def collection_point() -> None:
    """A call: the interpreter may start a collection at one."""


def kinds(v) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.kind, r.classes) for r in v.reports]


@pytest.mark.parametrize("finalizer_first", [True, False], ids=["finalizer-first", "outside-first"])
def test_queue_put_in_a_finalizer_is_inconsistent_bpo_14976(v, finalizer_first):
    q = queue.Queue()
    if finalizer_first:
        in_finalizer(lambda: q.put("from __del__"))
        q.put(1)
        usage = "inconsistent {IN-GC-W} -> {GC-ON-W} usage."
    else:
        q.put(1)
        in_finalizer(lambda: q.put("from __del__"))
        usage = "inconsistent {GC-ON-W} -> {IN-GC-W} usage."
    [(kind, classes)] = kinds(v)
    assert kind == "inconsistent_lock_state" and len(classes) == 1 and classes[0].startswith("Queue.mutex@")
    splat = v.reports[0].text
    assert usage in splat
    assert "  <Garbage collector: finalizer>\n" in splat and "<Signal handler>" not in splat


def test_a_simple_queue_in_a_finalizer_is_clean(v):
    # What CPython added for bpo-14976: its put() takes no lock a finalizer could wait for.
    q = queue.SimpleQueue()
    q.put(1)
    in_finalizer(lambda: q.put("from __del__"))
    q.put(2)
    assert kinds(v) == []


def test_another_threads_use_counts_too(v):
    # Any thread may start a collection: a lock another thread takes outside a finalizer is as
    # unsafe as the collecting thread's.
    lock = threading.Lock()
    t = threading.Thread(target=take, args=(lock,))
    t.start()
    t.join()
    in_finalizer(lambda: take(lock))
    assert kinds(v) == [("inconsistent_lock_state", (lock.name,))]


def test_a_weakref_callback_the_collector_runs_is_a_finalizer(v):
    lock = threading.Lock()
    take(lock)
    garbage = Circular(lambda: None)
    ref = weakref.ref(garbage, lambda r: take(lock))
    del garbage
    gc.collect()
    assert ref() is None
    assert kinds(v) == [("inconsistent_lock_state", (lock.name,))]
    assert "inconsistent {GC-ON-W} -> {IN-GC-W} usage." in v.reports[0].text


class Owner:
    """Garbage in a reference cycle whose ``__del__`` takes its own lock, as ``IOBase.__del__``
    closes its file under the buffer's lock; ``lock`` given: that lock, shared, as its own."""

    def __init__(self, lock=None) -> None:
        self.me = self
        self.lock = threading.Lock() if lock is None else lock

    def __del__(self) -> None:
        take(self.lock)


@pytest.mark.parametrize("finalizer_first", [True, False], ids=["finalizer-first", "outside-first"])
def test_a_finalizer_taking_its_own_objects_lock_is_clean(v, finalizer_first):
    # No live thread can reach a lock that is garbage, so none can hold it when the collector
    # interrupts it: the class taken outside finalizers too (the same creation site) is no clash.
    live = Owner()
    if finalizer_first:
        Owner()
        gc.collect()
    take(live.lock)
    Owner()
    gc.collect()
    assert kinds(v) == []
    assert _collector._undecided == {}


def test_a_pyio_writer_the_collector_closes_is_clean(v):
    # cheroot's test_peercreds_unix_sock: a _pyio writer in a reference cycle, closed by its
    # finalizer (IOBase.__del__ -> close() -> with self._write_lock), while writers of the same
    # class are used outside finalizers.  (The raw stream has no finalizer of its own, which would
    # close the writer's stream before the writer's finalizer looks.)
    import _pyio

    closed = []

    class Raw:
        closed = False

        def writable(self):
            return True

        def write(self, data):
            return len(data)

        def close(self):
            self.closed = True
            closed.append(self)

    used = _pyio.BufferedWriter(Raw())
    assert hasattr(used._write_lock, "_key"), "_pyio's locks are instrumented"
    used.write(b"x")
    used.flush()
    garbage = _pyio.BufferedWriter(Raw())
    raw = garbage.raw
    garbage.me = garbage
    del garbage
    gc.collect()
    assert closed == [raw]  # the finalizer closed the writer, under its lock
    assert kinds(v) == []


class Counter:
    """SQLAlchemy's ``QueuePool`` overflow count: a Lock around ``n += 1``, whose ``with`` blocks
    call nothing and build nothing, taken by live code and by a finalizer (a ``weakref.finalize``
    of a connection the collector frees)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n = 0
        self.most = 10

    def inc(self) -> bool:
        with self.lock:
            if self.n < self.most:
                self.n += 1
                return True
            else:
                return False

    def dec(self) -> bool:
        with self.lock:
            self.n -= 1
            return True

    def reset(self) -> None:
        with self.lock:
            self.history = []  # a new list: a collection may start here
            self.n = 0

    def inc_bare(self) -> None:
        self.lock.acquire()  # the section's end is not read: one may start
        self.n += 1
        self.lock.release()


def dropped_connection(counter: Counter) -> None:
    """A connection in a reference cycle whose finalizer gives its count back, collected now."""
    connection = Circular(lambda: None)
    weakref.finalize(connection, counter.dec)
    del connection
    gc.collect()


@pytest.mark.parametrize("finalizer_first", [True, False], ids=["finalizer-first", "outside-first"])
def test_a_section_that_starts_no_collection_is_no_inconsistent_state(v, finalizer_first):
    """A collection starts only at a call, an allocation or a backward jump: no finalizer runs in
    a thread while it is inside ``with lock: n += 1``, so taking that lock in a finalizer cannot
    wait for its own thread (SQLAlchemy's test_overflow_reset_on_failed_connect was reported
    inconsistent)."""
    counter = Counter()
    if finalizer_first:
        dropped_connection(counter)
    counter.inc()
    counter.dec()
    dropped_connection(counter)
    counter.inc()
    assert kinds(v) == []


@pytest.mark.parametrize("collecting", ["reset", "inc_bare"])
@pytest.mark.parametrize("when", ["first", "between", "after"])
def test_a_line_of_the_counter_where_a_collection_may_start_is_inconsistent(v, collecting, when):
    """The counter's lock taken where a collection may start (around a new list, or by a bare
    ``acquire()``, whose section is not read): a finalizer may then wait for its own thread.  Seen
    first, it clashes with the finalizer at once.  Seen after a line that starts none took the lock
    on the same chain, that chain is cached: the line is seen once the finalizer has taken the lock,
    at its next acquisition (``between``), as is a line first seen then (``after``)."""
    counter = Counter()
    take_collecting = getattr(counter, collecting)
    if when == "first":
        take_collecting()
    counter.inc()
    if when == "between":
        take_collecting()
    dropped_connection(counter)
    if when == "after":
        assert kinds(v) == []  # no line where a collection may start was seen yet
    if when != "first":
        take_collecting()
    assert kinds(v) == [("inconsistent_lock_state", (counter.lock.name,))]
    usage = "{GC-ON-W} -> {IN-GC-W}" if when == "first" else "{IN-GC-W} -> {GC-ON-W}"
    assert f"inconsistent {usage} usage." in v.reports[0].text


def test_a_lock_the_garbage_shares_with_live_code_is_inconsistent(v):
    # Being the finalized object's attribute makes no lock garbage: this one outlives the
    # collection, and the interrupted code could have held it.  The report is made as the
    # collection ends, with the stack of the finalizer that took it.
    shared = threading.Lock()
    take(shared)
    Owner(shared)
    gc.collect()
    assert kinds(v) == [("inconsistent_lock_state", (shared.name,))]
    splat = v.reports[0].text
    assert "inconsistent {GC-ON-W} -> {IN-GC-W} usage." in splat
    backtrace = splat.split("stack backtrace:")[1]
    assert "Owner.__del__" in backtrace and "take" in backtrace.split("Owner.__del__")[0]


def test_a_live_lock_on_a_chain_a_garbage_lock_took_before_is_still_checked(v):
    # Whether a finalizer's lock counts depends on the instance: the chain (no lock held, in a
    # collection) is not cached by the garbage lock's acquisition, so a live lock of the same
    # class taken on it later is checked.
    live = Owner()
    take(live.lock)
    Owner()
    gc.collect()
    assert kinds(v) == []
    in_finalizer(lambda: take(live.lock))
    assert kinds(v) == [("inconsistent_lock_state", (live.lock.name,))]
    assert "inconsistent {GC-ON-W} -> {IN-GC-W} usage." in v.reports[0].text


def test_a_finalizer_given_a_lock_of_its_own_is_clean(v):
    # weakref.finalize(obj, take, lock): the lock lives only as the finalizer's argument, and goes
    # with it during the collection.
    outside, own = (threading.Lock() for _ in range(2))  # one class: one creation site
    take(outside)
    garbage = Circular(lambda: None)
    done = weakref.finalize(garbage, take, own)
    del garbage, own
    gc.collect()
    assert not done.alive
    assert kinds(v) == []
    assert v.class_for(outside._key).usage & ENABLED_GC


def test_a_finalizer_that_brings_its_object_back_keeps_its_lock_live(v):
    # The lock outlives the collection: it counts, and clashes with the use outside.
    kept = []

    class Phoenix(Owner):
        def __del__(self) -> None:
            take(self.lock)
            kept.append(self)

    outside = Phoenix()
    kept.append(outside)
    take(outside.lock)
    Phoenix()
    gc.collect()
    assert len(kept) == 2
    assert kinds(v) == [("inconsistent_lock_state", (outside.lock.name,))]


def test_an_rlock_in_a_finalizer_is_clean(v):
    # Its owner only enters it again: a finalizer interrupting the owner takes it at once.
    rlock = threading.RLock()
    take(rlock)
    in_finalizer(lambda: take(rlock))
    take(rlock)
    assert kinds(v) == []


def test_a_lock_taken_only_in_finalizers_is_clean(v):
    lock = threading.Lock()
    in_finalizer(lambda: take(lock))
    t = threading.Thread(target=in_finalizer, args=(lambda: take(lock),))
    t.start()
    t.join()
    assert kinds(v) == []


def test_kernel_lock_types_have_no_gc_state(v):
    # They model the kernel, where the collector is no interrupt.
    mutex = pylockdep.Mutex("collector_mutex")
    take(mutex)
    in_finalizer(lambda: take(mutex))
    assert kinds(v) == []


def test_the_collecting_thread_is_back_in_its_context_after_the_collection(v):
    t = v.task()
    seen = []
    in_finalizer(lambda: seen.append(v.task().in_gc))
    assert seen == [True] and t.in_gc is False
    assert gc.callbacks[0] is _collector._begin and gc.callbacks[-1] is _collector._end
    assert gc.callbacks.count(_collector._begin) == gc.callbacks.count(_collector._end) == 1


@pytest.mark.parametrize("phase", ["start", "stop"])
@pytest.mark.parametrize("placed", ["appended", "inserted"])
def test_a_lock_taken_in_the_programs_own_gc_callback_is_taken_in_the_collection(v, phase, placed):
    """prometheus_client #322: its GC metrics observed a histogram, under the histogram's lock, from
    a ``gc.callbacks`` hook, which runs in whichever thread collects, whatever that thread holds.
    pylockdep's hooks stay around the program's, wherever it puts its own: one inserted before
    them counts from the next collection on."""
    lock = threading.Lock()

    def hook(when: str, info: dict) -> None:
        if when == phase:
            take(lock)

    if placed == "appended":
        gc.callbacks.append(hook)
    else:
        gc.callbacks.insert(0, hook)
    try:
        gc.collect()
        gc.collect()
    finally:
        gc.callbacks.remove(hook)
    take(lock)
    assert kinds(v) == [("inconsistent_lock_state", (lock.name,))]
    assert "{IN-GC-W}" in v.reports[0].text and "{GC-ON-W}" in v.reports[0].text
    assert gc.callbacks[0] is _collector._begin and gc.callbacks[-1] is _collector._end
    assert gc.callbacks.count(_collector._begin) == gc.callbacks.count(_collector._end) == 1


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_a_signal_handler_that_interrupts_a_finalizer_is_no_finalizer(v):
    # What the handler takes is signal-safe, not collector-safe: with the lock taken outside both,
    # only the SIGNAL state is inconsistent.
    lock = threading.Lock()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: take(lock))
    try:
        in_finalizer(lambda: signal.raise_signal(signal.SIGUSR1))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    take(lock)
    assert kinds(v) == [("inconsistent_lock_state", (lock.name,))]
    assert "inconsistent {IN-SIGNAL-W} -> {SIGNAL-ON-W} usage." in v.reports[0].text


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_a_keyboard_interrupt_landing_in_the_hook_reaches_the_program(v):
    # The collector drops what its callbacks raise: a signal that lands in pylockdep's hook as a
    # collection starts is raised again as it stops, and its KeyboardInterrupt comes out of
    # gc.collect() into the program, with the holder back in its context.
    t = v.task()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    deferring = _signal.getsignal(signal.SIGUSR1)  # pylockdep's wrapper, as CPython calls it
    landed = []

    def land_in_the_hook(frame, event, arg):
        if event == "call" and frame.f_code is _collector._begin.__code__ and not landed:
            landed.append(frame)
            sys.setprofile(None)  # no Python code of the test's may run inside the hook after this
            deferring(signal.SIGUSR1, frame)  # as if the signal came at the hook's first instruction

    dropped = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = dropped.append
    try:
        Circular(lambda: None)
        sys.setprofile(land_in_the_hook)
        with pytest.raises(KeyboardInterrupt):
            try:
                gc.collect()
            finally:
                sys.setprofile(None)
            for _ in range(100):  # the signal raised again is handled at the latest here
                pass
    finally:
        sys.unraisablehook = old_hook
        signal.signal(signal.SIGUSR1, previous)
    assert landed and not dropped and t.in_gc is False and not _signals.landed


def test_a_collection_at_the_recursion_limit_prints_nothing_and_leaves_its_thread_unmarked(v):
    """The hooks' own calls may meet the limit: the collector would print that as unraisable."""
    t = v.task()

    def depth() -> int:
        frame, n = sys._getframe(), 0
        while frame is not None:
            frame, n = frame.f_back, n + 1
        return n

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            Circular(lambda: None)
            gc.collect()

    dropped = []
    old_hook, limit = sys.unraisablehook, sys.getrecursionlimit()
    sys.unraisablehook = dropped.append
    try:
        sys.setrecursionlimit(depth() + 60)
        for slack in range(1, 30):
            with contextlib.suppress(RecursionError):
                deep(60 - slack)
    finally:
        sys.setrecursionlimit(limit)
        sys.unraisablehook = old_hook
    assert [d for d in dropped if d.object in (_collector._begin, _collector._end)] == []  # the test's own may fail
    assert t.in_gc is False


def test_a_collection_in_a_thread_with_no_holder_makes_none_but_marks_the_one_a_finalizer_makes():
    # A collection may start in a thread threading does not know yet (its start-up): a holder made
    # then would not bear the thread's name.  The holder the finalizer's first lock makes runs in
    # the collection, and leaves it with it.  (threading's own locks not instrumented here: with
    # them, a thread's start-up takes its first lock before its target runs.)
    mutex = pylockdep.Mutex("collector_first_lock")
    seen = []

    def body():
        _collector._begin("start", {})
        seen.append(getattr(validator.local, "task", None))
        take(mutex)  # the thread's first lock, as a finalizer would take it
        seen.append(validator.task().in_gc)
        _collector._end("stop", {})
        seen.append((validator.task().in_gc, validator.task().name))

    with pylockdep.validate(raise_on_report=False, stream=None) as validator:
        t = threading.Thread(target=body, name="fresh")
        t.start()
        t.join()
    assert seen == [None, True, (False, "fresh")]
