"""Thread-local re-entrancy guards: a section whose entry leaves when a ``threading.local`` flag is
set, and sets it around the lock, cannot be entered by a finalizer or a signal handler that
interrupts its own thread inside it.  Such a lock is no inconsistent lock state (sentry-python
2.55's log batcher, loguru 0.7's handlers); any acquisition of one usage that the flag does not
guard still is."""

from __future__ import annotations

import contextlib
import gc
import signal
import threading

import pytest
from _interrupts import in_finalizer, run_as_signal_handler

import pylockdep
from pylockdep import _guards


@pytest.fixture
def v():
    previous = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    try:
        with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
            yield v
    finally:
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)


INTERRUPTS = [pytest.param(in_finalizer, id="finalizer")]
if hasattr(signal, "SIGUSR1"):
    INTERRUPTS.append(pytest.param(run_as_signal_handler, id="signal-handler"))


class Batcher:
    """sentry-python 2.55's guard: leave early when the flag is set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = threading.local()
        self.items: list[object] = []

    def add(self, item: object) -> None:
        if getattr(self._active, "flag", False):
            return None
        self._active.flag = True
        try:
            self._append(item)
        finally:
            self._active.flag = False

    def _append(self, item: object) -> None:
        with self._lock:
            self.items.append(item)

    def flush(self) -> None:
        """Saves and restores the flag: a setter, but no check that leaves."""
        was = getattr(self._active, "flag", False)
        self._active.flag = True
        try:
            with self._lock:
                self.items.clear()
        finally:
            self._active.flag = was

    def add_unguarded(self, item: object) -> None:
        self._append(item)


class Handler:
    """loguru 0.7's guard: a generator context manager that raises when the flag is set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock_acquired = threading.local()

    @contextlib.contextmanager
    def _protected_lock(self):
        if getattr(self._lock_acquired, "acquired", False):
            raise RuntimeError("deadlock avoided")
        self._lock_acquired.acquired = True
        try:
            with self._lock:
                yield
        finally:
            self._lock_acquired.acquired = False

    def emit(self) -> None:
        with self._protected_lock():
            pass


class State(threading.local):
    busy = False  # a class default: no __init__ runs in a new thread


class Sink:
    """A guard read as a plain attribute of a ``threading.local`` subclass."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = State()

    def write(self) -> None:
        if self._state.busy:
            raise RuntimeError("re-entered")
        self._state.busy = True
        try:
            with self._lock:
                pass
        finally:
            self._state.busy = False


_busy = threading.local()
_module_lock = threading.Lock()  # replaced by an instrumented one in the test


def log_once() -> None:
    """A guard on a module's ``threading.local``, written ``if not flag: ...``."""
    if not getattr(_busy, "inside", False):
        _busy.inside = True
        try:
            with _module_lock:
                pass
        finally:
            _busy.inside = False


def kinds(v) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.kind, r.classes) for r in v.reports]


@pytest.mark.parametrize("interrupt", INTERRUPTS)
@pytest.mark.parametrize("interrupt_first", [True, False], ids=["interrupt-first", "outside-first"])
def test_a_section_that_leaves_when_its_flag_is_set_is_no_inconsistent_state(v, interrupt, interrupt_first):
    batcher = Batcher()
    if interrupt_first:
        interrupt(lambda: batcher.add("from the interrupt"))
        batcher.add(1)
    else:
        batcher.add(1)
        interrupt(lambda: batcher.add("from the interrupt"))
    batcher.flush()  # another setter of the flag, outside
    assert batcher.items == []
    assert kinds(v) == []


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_a_collection_inside_a_signal_handler_keeps_the_handlers_guard(v):
    """A collection that starts and ends inside a handler gives the handler back the frame it
    interrupted: the section entered after it is still guarded by its flag."""
    batcher = Batcher()

    def handler_body() -> None:
        gc.collect()
        batcher.add("from the interrupt")

    run_as_signal_handler(handler_body)
    batcher.add(1)
    assert batcher.items == ["from the interrupt", 1]
    assert kinds(v) == []


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_a_guard_in_a_generator_that_raises_is_no_inconsistent_state(v, interrupt):
    handler = Handler()
    handler.emit()
    interrupt(handler.emit)
    handler.emit()
    assert kinds(v) == []


def test_a_guard_on_a_modules_thread_local_is_no_inconsistent_state(v, monkeypatch):
    monkeypatch.setitem(globals(), "_module_lock", threading.Lock())  # instrumented: made now
    log_once()
    in_finalizer(log_once)
    assert kinds(v) == []


def test_a_guard_read_as_an_attribute_is_no_inconsistent_state(v):
    sink = Sink()
    in_finalizer(sink.write)
    sink.write()
    assert kinds(v) == []


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_an_interrupt_that_takes_the_lock_past_the_guard_is_inconsistent(v, interrupt):
    batcher = Batcher()
    batcher.add(1)
    interrupt(lambda: batcher.add_unguarded("from the interrupt"))
    [(kind, classes)] = kinds(v)
    assert kind == "inconsistent_lock_state" and classes[0].startswith("Batcher._lock@")


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_a_flag_the_interrupt_saves_and_restores_guards_nothing(v, interrupt):
    # flush() sets the flag but goes on when it was set: a flush from the interrupt would wait.
    batcher = Batcher()
    batcher.add(1)
    interrupt(batcher.flush)
    [(kind, _)] = kinds(v)
    assert kind == "inconsistent_lock_state"


@pytest.mark.parametrize("interrupt", INTERRUPTS)
def test_an_unguarded_acquisition_outside_is_inconsistent_with_a_guarded_interrupt(v, interrupt):
    batcher = Batcher()
    interrupt(lambda: batcher.add("from the interrupt"))
    batcher.add_unguarded(1)  # the flag is not set here: the interrupt may come inside
    [(kind, classes)] = kinds(v)
    assert kind == "inconsistent_lock_state" and classes[0].startswith("Batcher._lock@")


def test_an_unguarded_acquisition_on_a_new_chain_after_guarded_ones_is_inconsistent(v):
    # The usage was first set under the flag; a later acquisition without it, on a chain not seen
    # before, drops the guard and is checked again.
    batcher = Batcher()
    other = threading.Lock()
    batcher.add(1)
    in_finalizer(lambda: batcher.add("from the finalizer"))
    assert kinds(v) == []
    with other:
        batcher.add_unguarded(2)
    [(kind, classes)] = kinds(v)
    assert kind == "inconsistent_lock_state" and classes[0].startswith("Batcher._lock@")


def test_the_guards_are_read_without_running_the_programs_code(v):
    calls = []

    class Sneaky(Batcher):
        @property
        def _active(self):  # noqa: D401 - a property the guard's lookup must not call
            calls.append(1)
            return self.__dict__["_real"]

        @_active.setter
        def _active(self, value):
            self.__dict__["_real"] = value

    batcher = Sneaky()
    calls.clear()
    batcher.add(1)
    before = len(calls)
    in_finalizer(lambda: batcher.add("from the finalizer"))
    # The program's own calls: add() reads the property three times per call.
    assert len(calls) - before == 3
    # Not reached through the property, the flag is no guard: the lock is reported.
    [(kind, _)] = kinds(v)
    assert kind == "inconsistent_lock_state"


def test_a_thread_local_subclass_with_its_own_init_is_not_touched(v):
    made = []

    class Flags(threading.local):
        def __init__(self) -> None:
            made.append(threading.get_ident())

    batcher = Batcher()
    batcher._active = Flags()
    batcher.add(1)
    in_finalizer(lambda: batcher.add("from the finalizer"))
    assert made == [threading.get_ident()]  # made once, by the program, in this thread
    [(kind, _)] = kinds(v)
    assert kind == "inconsistent_lock_state"


def test_the_guard_sites_of_a_code_are_its_flags_with_whether_it_leaves_when_set():
    sites = _guards._guard_sites(Batcher.add.__code__)
    assert sites == (("fast", "self", ("_active",), "flag", True),)
    [flush] = _guards._guard_sites(Batcher.flush.__code__)
    assert flush[3:] == ("flag", False)
    assert _guards._guard_sites(log_once.__code__) == (("global", "_busy", (), "inside", True),)
    assert _guards._guard_sites(Batcher._append.__code__) == ()


class Counted:
    """A guard that counts: ``depth += 1`` sets the flag; the early exit counts what it drops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.dropped = 0

    def put(self) -> list[object] | None:
        if getattr(self._local, "depth", 0):
            self.dropped += 1
            return []
        self._local.depth = 0
        self._local.depth += 1
        try:
            with self._lock:
                return None
        finally:
            self._local.depth -= 1

    def flush(self) -> None:
        with self._lock:  # another line, unguarded, where a collection may start (a new list)
            self.batch: list[object] = []


def test_a_counting_guard_whose_early_exit_counts_is_no_inconsistent_state(v):
    counted = Counted()
    counted.put()
    in_finalizer(counted.put)
    counted.put()
    assert kinds(v) == []


def test_an_unguarded_line_taking_a_guarded_lock_on_a_chain_seen_guarded_is_inconsistent(v):
    # The guarded put() comes first; flush() takes the lock on the same chain, at another line.
    counted = Counted()
    counted.put()
    in_finalizer(counted.put)
    assert kinds(v) == []
    counted.flush()
    [(kind, classes)] = kinds(v)
    assert kind == "inconsistent_lock_state" and classes[0].startswith("Counted._lock@")


class Exporter:
    """Guards its own section with a flag of the same name as Batcher's, on its own class."""

    def __init__(self, batcher: Batcher) -> None:
        self._active = threading.local()
        self.batcher = batcher

    def export(self) -> None:
        if getattr(self._active, "flag", False):
            return None
        self._active.flag = True
        try:
            self.batcher.add_unguarded("exported")
        finally:
            self._active.flag = False


def test_another_classs_flag_of_the_same_name_guards_nothing(v):
    """Flags are named with the class holding them: the exporter's ``_active.flag`` says nothing of
    the batcher's, so a finalizer reaching the batcher's add() inside export() would wait."""
    batcher = Batcher()
    Exporter(batcher).export()
    in_finalizer(lambda: batcher.add("from the finalizer"))
    [(kind, classes)] = kinds(v)
    assert kind == "inconsistent_lock_state" and classes[0].startswith("Batcher._lock@")


def test_the_code_of_a_test_harness_is_not_read_for_guards():
    # pytest's frames lie under every test's locks: reading their code cost milliseconds at a
    # test's first lock, for flags that guard nothing of the program.
    import _pytest.nodes

    harness = _pytest.nodes.Node.__init__.__code__  # sets attributes on self, as a guard's code does
    assert _guards._STORE_ATTR in harness.co_code[::2]
    assert _guards._guard_sites(harness) == ()
    assert _guards._guard_sites(Batcher.add.__code__) != ()  # the program's own code is read
