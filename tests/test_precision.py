"""Python's locks judged as Python uses them: creation sites, same-class instances, hand-off locks
(API.md, "Python's own locks: precision").  Each false-positive family of issue 14 has a test that
failed before and is clean now; true findings stay found."""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import dis
import functools
import gc
import importlib
import inspect
import io
import itertools
import logging
import logging.handlers
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable

import pytest
from _abba import take_ab_then_ba
from _waiting import run_alone, wait_until_waiting

import pylockdep
from pylockdep import _checks, _held
from pylockdep._classes import MADE_ONE_AT_A_TIME, LockKey
from pylockdep._frames import short_filename
from pylockdep._held import H_CLASS, H_CTX, H_LOCK, H_PREV_KEY, H_READ, H_TRYLOCK, chain_key, variant
from pylockdep._locktypes import MUTEX

pytestmark = pytest.mark.timeout(60)
FILE = short_filename(__file__)


@pytest.fixture
def v():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        yield v


def kinds(v: pylockdep.Validator) -> list[str]:
    return [r.kind for r in v.reports]


# -- classes: creation sites -------------------------------------------------------------------


class Scheduler:
    """APScheduler 3.x makes its unrelated locks through one helper."""

    def __init__(self) -> None:
        self._jobstores_lock = self._create_lock()
        self._executors_lock = self._create_lock()

    def _create_lock(self):
        return threading.RLock()


def test_a_helper_that_returns_a_lock_is_not_the_creation_site_its_caller_is(v):
    s = Scheduler()
    with s._jobstores_lock, s._executors_lock:
        pass
    assert v.reports == []
    names = {s._jobstores_lock.name, s._executors_lock.name}
    line = Scheduler.__init__.__code__.co_firstlineno
    assert names == {f"Scheduler._jobstores_lock@{FILE}:{line + 1}", f"Scheduler._executors_lock@{FILE}:{line + 2}"}


def test_locks_made_again_through_a_helper_keep_their_callers_classes(v):
    # The helper's frame is the same for both attributes: a lock made again is answered from the
    # stack of the last one only when the helper's caller is the same too.
    schedulers = [Scheduler() for _ in range(3)]
    jobstores = {s._jobstores_lock._key for s in schedulers}
    executors = {s._executors_lock._key for s in schedulers}
    assert len(jobstores) == len(executors) == 1 and jobstores != executors
    for s in schedulers:
        with s._jobstores_lock, s._executors_lock:
            pass
    assert v.reports == []


def test_two_creation_sites_on_one_line_are_two_classes_and_their_abba_is_circular(v):
    a, b = threading.Lock(), threading.Lock()
    line = a._key.site[1]
    take_ab_then_ba(a, b)
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(report.classes) == sorted([f"Lock@{FILE}:{line}", f"Lock@{FILE}:{line}:30"])


NAMED = """\
import threading
registry_lock = threading.Lock()
class Cache:
    lock = threading.RLock()
def setup():
    global late_lock
    late_lock = threading.Lock()
    local = threading.Lock()
    return local, late_lock
setup()
"""


def test_globals_and_class_attributes_name_their_locks(v):
    """A lock assigned to a module global (at the top level or through ``global``) or to a class
    attribute in the class body is named after it; a local variable's keeps its type."""
    namespace: dict = {"__name__": "named"}
    exec(compile(NAMED, "named.py", "exec"), namespace)
    local, _ = namespace["setup"]()
    assert namespace["registry_lock"].name == "registry_lock@named.py:2"
    assert namespace["Cache"].lock.name == "Cache.lock@named.py:4"
    assert namespace["late_lock"].name == "late_lock@named.py:7"
    assert local.name == "Lock@named.py:8"


FIELDS = """\
import dataclasses, threading

@dataclasses.dataclass
class Account:
    balance: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

@dataclasses.dataclass(slots=True)
class Ledger:
    entries: list = dataclasses.field(default_factory=list)

    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

class SavingsAccount(Account):
    pass
"""


def test_a_dataclass_fields_lock_is_named_after_the_field_where_the_class_declares_it(v, tmp_path, monkeypatch):
    """A field with a lock factory is made by the ``__init__`` that dataclasses generates (code of
    ``<string>``): the class is named ``Owner.field@file.py:LINE`` of the field's declaration (for a
    subclass, its base's), not after the generated code; each type has its own, as for a method."""
    (tmp_path / "fields_mod.py").write_text(FIELDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fields_mod", raising=False)
    fields_mod = importlib.import_module("fields_mod")  # made after instrumentation: its factories are ours
    account, ledger, savings = fields_mod.Account(), fields_mod.Ledger(), fields_mod.SavingsAccount()
    assert account.lock.name == "Account.lock@fields_mod.py:6"
    assert ledger.lock.name == "Ledger.lock@fields_mod.py:12"
    assert savings.lock.name == "SavingsAccount.lock@fields_mod.py:6"
    assert savings.lock._key is not account.lock._key
    with account.lock, ledger.lock:
        pass
    with ledger.lock, account.lock:
        pass
    assert [(r.kind, sorted(r.classes)) for r in v.reports] == [
        ("circular", sorted([account.lock.name, ledger.lock.name]))
    ]


def test_instances_of_one_site_share_a_class():
    with pylockdep.instrument_threading():
        locks = [Scheduler() for _ in range(2)]
    assert locks[0]._jobstores_lock._key is locks[1]._jobstores_lock._key


def _lock_from_a_helper():
    return threading.Lock()


def test_a_site_made_again_keeps_its_class_through_helpers_and_threading_types(v):
    """Locks made again where locks were made before (the walk to the site is remembered) get
    that site's class: a helper's callers stay two classes, a Condition's lock is its line's."""
    first, second, conditions = [], [], []
    for _ in range(3):
        first.append(_lock_from_a_helper())
        second.append(_lock_from_a_helper())
        conditions.append((threading.Condition(), threading.Condition()))
    line = inspect.currentframe().f_lineno - 4
    assert {lock.name for lock in first} == {f"Lock@{FILE}:{line + 1}"}
    assert {lock.name for lock in second} == {f"Lock@{FILE}:{line + 2}"}
    assert {a._lock.name for a, _ in conditions} == {f"Condition@{FILE}:{line + 3}"}
    assert {b._lock.name for _, b in conditions} == {f"Condition@{FILE}:{line + 3}:51"}
    assert len({lock._key for lock in first + second}) == 2


class _LockHere:
    def __init__(self):
        self.lock = threading.Lock()


class _LockThere:
    def __init__(self):
        self.lock = threading.Lock()


def test_threading_locks_made_in_turn_at_one_offset_of_two_methods_keep_their_sites_classes(v):
    # Both calls are at the same instruction offset of their code: each site keeps its own class.
    assert _LockHere.__init__.__code__.co_code == _LockThere.__init__.__code__.co_code
    made = [(_LockHere().lock, _LockThere().lock) for _ in range(3)]
    line = _LockHere.__init__.__code__.co_firstlineno + 1
    assert {here.name for here, _ in made} == {f"_LockHere.lock@{FILE}:{line}"}
    assert {there.name for _, there in made} == {f"_LockThere.lock@{FILE}:{line + 5}"}
    assert len({lock._key for pair in made for lock in pair}) == 2


def test_threadings_own_locks_stay_plain_when_made_again(v):
    for _ in range(3):
        assert type(threading.Thread(target=lambda: None)._started._cond._lock) is _thread.LockType


def test_kernel_locks_made_again_at_one_line_keep_a_class_per_name_and_key():
    keys = {}
    for name in ["A", "B", "A", "B"]:
        for key in [None, "shared"]:
            keys.setdefault((name, key), set()).add(pylockdep.Mutex(name, key=key)._key)
    assert all(len(found) == 1 for found in keys.values())
    assert len({found.pop() for (_, key), found in keys.items() if key is None}) == 2
    made = []
    with pytest.raises(TypeError, match="name"):  # a site that made a good lock still refuses a bad name
        for name in ["A", "A", ""]:
            made.append(pylockdep.Mutex(name))
    assert len(made) == 2


def _mutex_made_here(name):
    return pylockdep.Mutex(name)


def _mutex_made_there(name):
    return pylockdep.Mutex(name)


def test_kernel_locks_made_in_turn_at_one_offset_of_two_functions_keep_their_sites_classes():
    # Both calls are at the same instruction offset of their code: each site keeps its own class.
    assert _mutex_made_here.__code__.co_code == _mutex_made_there.__code__.co_code
    here, there = [], []
    for _ in range(3):
        here.append(_mutex_made_here("turns")._key)
        there.append(_mutex_made_there("turns")._key)
    line = _mutex_made_here.__code__.co_firstlineno + 1
    assert {key.site[0] for key in here} == {_mutex_made_here.__code__}
    assert {key.site[0] for key in there} == {_mutex_made_there.__code__}
    assert {key.site[1] for key in here} == {line}
    assert len(set(here)) == 1 and len(set(there)) == 1 and here[0] is not there[0]


def test_kernel_locks_made_again_at_one_call_keep_a_class_per_type_and_per_name_value():
    keys = {}
    for i in range(6):
        kind = (pylockdep.Mutex, pylockdep.SpinLock)[i % 2]
        name = "".join(["made", "_again"])  # equal each time, a new string object each time
        keys.setdefault(kind, set()).add(kind(name)._key)
    assert all(len(found) == 1 for found in keys.values())
    assert keys[pylockdep.Mutex] != keys[pylockdep.SpinLock]
    (mutex_key,) = keys[pylockdep.Mutex]
    assert (mutex_key.name, mutex_key.ltype) == ("made_again", MUTEX)


_registry: list = []


def _registered_lock():
    """loguru's factory: make a lock, register it (for a fork hook), return it."""
    lock = threading.Lock()
    _registry.append(lock)
    return lock


def _keyed_lock(locks: dict, key: object):
    """Not a factory: the lock it returns may be one it did not make."""
    lock = locks.get(key)
    if lock is None:
        lock = threading.Lock()
        locks[key] = lock
    return lock


class QueuedHandler:
    """loguru's handler with ``enqueue=True``: ``stop()`` joins the writer under ``_lock``; the
    writer writes under ``_queue_lock``; both locks come from the factory."""

    def __init__(self) -> None:
        self._lock = _registered_lock()
        self._queue_lock = _registered_lock()
        self._thread = threading.Thread(target=self._write)
        self._thread.start()

    def _write(self) -> None:
        with self._queue_lock:
            pass

    def stop(self) -> None:
        with self._lock:
            self._thread.join()


def test_a_factory_that_registers_and_returns_its_lock_is_not_the_creation_site_its_caller_is(v):
    handlers = [QueuedHandler() for _ in range(2)]
    for handler in handlers:
        handler.stop()
    assert v.reports == []  # one class, the join under _lock made a cycle through the writer
    line = QueuedHandler.__init__.__code__.co_firstlineno
    assert handlers[0]._lock.name == f"QueuedHandler._lock@{FILE}:{line + 1}"
    assert handlers[0]._queue_lock.name == f"QueuedHandler._queue_lock@{FILE}:{line + 2}"
    assert handlers[1]._lock._key is handlers[0]._lock._key


def test_a_function_that_may_return_a_lock_it_did_not_make_stays_the_creation_site(v):
    locks: dict = {}
    first, second = _keyed_lock(locks, 1), _keyed_lock(locks, 2)
    assert first._key is second._key
    assert first.name == f"Lock@{FILE}:{_keyed_lock.__code__.co_firstlineno + 4}"


# -- classes: one per type of the object a lock is made for ---------------------------------------


class _Box:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.describe = lambda: self  # a closure captures self: the method holds it in a cell


class _RedBox(_Box):
    pass


class _BlueBox(_Box):
    @classmethod
    def shared(cls) -> threading.Lock:
        cls.lock = threading.Lock()  # for the class, not an instance: the site's class
        return cls.lock


def test_a_lock_made_for_self_is_of_a_class_per_type_of_self(v):
    line = _Box.__init__.__code__.co_firstlineno + 1
    boxes = [_Box(), _RedBox(), _Box(), _RedBox(), _RedBox()]  # the first of a type made in Python, the rest in C
    assert [box.lock.name for box in boxes[:2]] == [f"_Box.lock@{FILE}:{line}", f"_RedBox.lock@{FILE}:{line}"]
    assert boxes[2].lock._key is boxes[0].lock._key and boxes[4].lock._key is boxes[3].lock._key is boxes[1].lock._key
    assert boxes[1].lock._key is not boxes[0].lock._key
    assert _BlueBox.shared().name == f"_BlueBox.lock@{FILE}:{_BlueBox.shared.__code__.co_firstlineno + 2}"


def test_locks_of_two_owner_types_on_either_side_of_a_lock_are_clean_and_of_one_type_circular(v):
    middle = threading.Lock()
    red, blue, other_red = _RedBox(), _BlueBox(), _RedBox()
    with red.lock, middle:
        pass
    with middle, blue.lock:
        pass
    assert v.reports == []  # a _RedBox's lock is never a _BlueBox's: no two threads wait for each other
    with middle, other_red.lock:
        pass
    assert kinds(v) == ["circular"]  # two _RedBoxes can: the split hides no cycle of instances
    assert "_RedBox.lock@" in v.reports[0].text and "_BlueBox" not in v.reports[0].text


def test_a_type_made_at_run_time_that_owns_locks_is_not_kept_alive_by_its_class(v):
    """filelock's test suite checks that a subclass made in a function goes once dropped."""

    def make_type() -> type:
        return type("Temporary", (_Box,), {})

    owner = make_type()
    locks = [owner().lock for _ in range(3)]  # the first made in Python, the others in C
    assert locks[0].name.startswith("Temporary.lock@") and locks[2]._key is locks[0]._key
    gone = weakref.ref(owner)
    del owner, locks
    gc.collect()
    assert gone() is None
    assert _Box().lock.name.startswith("_Box.lock@")


class _Forward(logging.Handler):
    """Hands each record, under a lock of its own, to another logger's handlers."""

    def __init__(self, target: logging.Logger, registry: threading.Lock) -> None:
        super().__init__()
        self.target = target
        self.registry = registry

    def emit(self, record: logging.LogRecord) -> None:
        with self.registry:
            self.target.handle(record)


def test_a_handler_forwarding_to_another_type_of_handler_under_a_lock_is_clean(v):
    """Each handler type's lock is a class: the forwarding handler's lock, then the registry, then the
    stream handler's lock closed a cycle through the one class of every handler's lock."""
    registry = threading.Lock()
    out = logging.Logger("out")
    out.addHandler(logging.StreamHandler(io.StringIO()))
    app = logging.Logger("app")
    app.addHandler(_Forward(out, registry))
    app.warning("hello")
    assert v.reports == []
    assert [h.lock.name.partition("@")[0] for h in (*app.handlers, *out.handlers)] == [
        "_Forward.lock",
        "StreamHandler.lock",
    ]


def test_owner_types_past_the_limit_share_the_class_of_the_defining_class(v, monkeypatch):
    monkeypatch.setattr(pylockdep._classes, "OWNER_TYPES", 2)

    class Owner:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    owners = [type(f"Made{i}", (Owner,), {}) for i in range(4)]  # alive: a dead type frees its place
    made = [owner().lock for owner in owners]
    assert [lock.name.partition("@")[0] for lock in made] == ["Made0.lock", "Made1.lock", "Owner.lock", "Owner.lock"]
    assert made[3]._key is made[2]._key is Owner().lock._key


def test_releasing_many_locks_of_one_class_oldest_first_validates_none_of_them_again(v, monkeypatch):
    """Each release from the bottom moves the rest down as a run, once the class is known not to be
    a token: each of them validated again made 400 such Locks take 46 s to release."""
    locks = [threading.Lock() for _ in range(50)]
    for lock in locks:
        lock.acquire()
    validated = []
    real = _checks.check_acquire

    def counting(*args, **kwargs):
        validated.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(_checks, "check_acquire", counting)
    for lock in locks:
        lock.release()
    assert len(validated) <= 2 and v.reports == []
    assert not locks[0]._key.token


def test_a_code_that_makes_many_locks_is_read_once_for_them_all(v, monkeypatch):
    """Each site is read from its code's instructions: a generated module that makes thousands of
    locks, one site each, was read again for each of them (quadratic)."""
    reads = []
    real = dis.get_instructions

    def counting(code, *args, **kwargs):
        reads.append(code)
        return real(code, *args, **kwargs)

    monkeypatch.setattr(dis, "get_instructions", counting)
    code = compile("import threading\n" + "\n".join(f"L{i} = threading.Lock()" for i in range(50)), "gen.py", "exec")
    made: dict = {}
    exec(code, made)
    assert reads.count(code) == 1
    assert [made[f"L{i}"].name for i in (0, 49)] == ["L0@gen.py:2", "L49@gen.py:51"]


class _Memo:
    """A descriptor that computes its value once under a lock of its own, as 3.11's
    ``functools.cached_property`` does: one lock per decorated attribute, shared by every instance."""

    def __init__(self, func) -> None:
        self.func = func
        self.lock = threading.RLock()

    def __set_name__(self, owner, name) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        with self.lock:
            value = instance.__dict__[self.name] = self.func(instance)
        return value


def _two_memos() -> tuple[type, type, threading.Lock]:
    """Two classes with a memo each: one computed under ``registry``, one read under it."""
    registry = threading.Lock()

    class Settings:
        @_Memo
        def values(self):
            with registry:
                return {}

    class Plugin:
        @_Memo
        def name(self):
            return "plugin"

        def register(self):
            with registry:
                return self.name

    return Settings, Plugin, registry


def test_a_descriptors_lock_is_of_a_class_per_descriptor_named_where_it_was_made(v):
    """Two unrelated properties, one computed under a lock and one read under it, are no cycle."""
    settings, plugin, _ = _two_memos()
    for memo in (settings.__dict__["values"], plugin.__dict__["name"]):
        assert memo.lock.name == f"_Memo.lock@{FILE}:{memo.func.__code__.co_firstlineno}"  # the decorator's line
    assert settings().values == {} and plugin().register() == "plugin"
    assert v.reports == []


def test_one_descriptors_lock_in_both_orders_is_circular(v):
    """gh-87634, as h5py met it: the property's lock is every instance's, so one instance computing
    it under the lock while another waits for it under ``registry`` deadlocks."""
    _, plugin, registry = _two_memos()
    plugin().register()
    with plugin.__dict__["name"].lock, registry:
        pass
    assert kinds(v) == ["circular"]
    assert "_Memo.lock@" in v.reports[0].text


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12 took the lock out of cached_property")
def test_functools_cached_property_on_3_11_has_a_class_per_property(v):
    registry = threading.Lock()

    class Config:
        @functools.cached_property
        def settings(self):
            with registry:
                return {}

    class Plugin:
        @functools.cached_property
        def name(self):
            return "plugin"

    assert Config().settings == {}
    with registry:
        assert Plugin().name == "plugin"
    assert v.reports == []
    names = {Config.__dict__["settings"].lock.name, Plugin.__dict__["name"].lock.name}
    assert len(names) == 2 and all(name.startswith("cached_property.lock@test_precision.py:") for name in names)


def test_descriptors_past_the_limit_share_their_types_class(v, monkeypatch):
    monkeypatch.setattr(pylockdep._sites, "DESCRIPTOR_KEYS", 0)

    class Late:
        @_Memo
        def value(self):
            return 1

    assert Late.__dict__["value"].lock.name == f"_Memo.lock@{FILE}:{_Memo.__init__.__code__.co_firstlineno + 2}"


# -- gates: one lock that every thread of a cycle would hold ------------------------------------


GATED = """\
import sys, threading
class Gate:
    def __init__(self):
        self.lock = threading.Lock()
gate = Gate().lock
a, b = threading.Lock(), threading.Lock()
def ab():
    with gate:
        with a:
            with b:
                pass
def ba():
    with gate:
        with b:
            with a:
                pass
for fn in (ab, ba):
    t = threading.Thread(target=fn)
    t.start()
    t.join()
if sys.argv[1] == "gate made again":
    second = Gate()  # while the first lives: two locks of the gate's class
print("done")
"""


@pytest.mark.parametrize("variant", ["one gate", "gate made again"])
def test_abba_under_one_global_lock_is_no_deadlock_unless_its_class_has_two_locks(tmp_path, variant):
    """Two threads that take ``a`` and ``b`` in opposite orders, each under ``gate``, cannot
    deadlock: the first holds the only ``gate``.  When a second lock of ``gate``'s class appears
    later, the cycle is reported when validation ends."""
    program = tmp_path / "gated.py"
    program.write_text(GATED)
    done = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", str(program), variant],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert "done" in done.stdout
    if variant == "one gate":
        assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr
    else:
        assert done.stderr.count("WARNING: possible circular locking dependency detected") == 1, done.stderr
        assert "(Lock@gated.py:6)" in done.stderr and "(Lock@gated.py:6:26)" in done.stderr


class _Account:
    """A lock per object: never a gate, since many are alive at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_abba_under_per_object_locks_is_circular(v):
    """Each thread holds its own instance of the would-be gate's class: no gate."""
    x, y = _Account(), _Account()
    a, b = threading.Lock(), threading.Lock()

    def ab():
        with x.lock, a, b:
            pass

    def ba():
        with y.lock, b, a:
            pass

    for fn in (ab, ba):
        t = threading.Thread(target=fn)
        t.start()
        t.join()
    assert kinds(v) == ["circular"]


def test_a_gate_is_counted_alike_by_the_c_stand_in_and_python(v):
    """``at_once``: 2 once two locks of a class live at once, 1 while they come one at a time, as
    the C stand-in (a site made again) and the Python constructor count them."""

    class Counted:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    for _ in range(4):
        Counted()  # the site made again (the C stand-in makes all but the first), and dropped
    single = Counted().lock
    assert single._key.at_once == 1
    many = [Counted().lock for _ in range(4)]
    assert single._key is many[0]._key and many[0]._key.at_once == 2

    class PerRequest:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    for _ in range(MADE_ONE_AT_A_TIME - 1):
        PerRequest()
    assert PerRequest().lock._key.at_once == 1  # the last one followed
    assert PerRequest().lock._key.at_once == 2  # a lock per request, made and dropped: no gate


def test_a_cycle_through_a_thread_with_the_gate_held_on_one_side_only_is_circular(v):
    """The otel shape: the gate is held by the thread that waits, not by the worker: a deadlock."""
    gate = threading.Lock()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def work():
        with gate:
            pass

    pool.submit(work).result()
    with gate:
        pool.submit(lambda: None).result()
    pool.shutdown()
    assert kinds(v) == ["circular"]


@pytest.mark.parametrize("one_thread_holds_both", [False, True], ids=["loguru", "one-thread-holds-both"])
def test_a_cycle_through_a_thread_is_closed_by_a_gate_unless_one_thread_held_its_two_locks(v, one_thread_holds_both):
    """loguru's shape: its fork hook takes every handler's queue lock ``ql``, then its lock ``lk``,
    under the logger's global lock; ``remove()`` holds that lock and ``lk`` while it joins the
    handler's writer, which takes ``ql`` holding nothing.  The cycle ``lk -> writer -> ql -> lk``
    needs the hook and ``remove()`` inside the global lock at once, or one thread holding ``ql``
    and ``lk`` while it joins the writer, which no thread did: no report.  Once a thread does hold
    both while joining, the writer and that thread deadlock: ``circular``."""
    core, lk, ql = threading.Lock(), threading.Lock(), threading.Lock()
    messages: queue.SimpleQueue = queue.SimpleQueue()
    written = threading.Event()

    def writer():
        while messages.get() is not None:
            with ql:
                pass
            written.set()

    def freeze():  # the fork hook's order
        with core, ql, lk:
            pass

    def stop(thread: threading.Thread, *held: threading.Lock) -> None:  # remove(): the writer's end
        with contextlib.ExitStack() as stack:
            for lock in held:
                stack.enter_context(lock)
            messages.put(None)
            thread.join()

    first = threading.Thread(target=writer)
    first.start()
    messages.put("message")
    hook = threading.Thread(target=freeze)
    hook.start()
    hook.join()
    stop(first, core, lk)
    assert v.reports == []
    if one_thread_holds_both:
        second = threading.Thread(target=writer)
        written.clear()
        second.start()
        messages.put("message")
        written.wait()  # the writer is idle: stopping it under ql hangs only in another run
        stop(second, core, ql, lk)
        assert kinds(v) == ["circular"]
        lk_class, ql_class = lk._key.name, ql._key.name
        assert {lk_class, ql_class} < set(v.reports[0].classes) and lk_class != ql_class


# -- loops over a collection of locks -------------------------------------------------------------


class _First:
    def __init__(self) -> None:
        self.lock = threading.Lock()


class _Second:
    def __init__(self) -> None:
        self.lock = threading.Lock()


class _Third:
    def __init__(self) -> None:
        self.lock = threading.Lock()


def _take_all(locks) -> None:
    for lock in locks:
        lock.acquire()
    for lock in reversed(locks):
        lock.release()


def test_one_loop_taking_a_registrys_locks_in_its_order_is_clean(v):
    """A fork hook takes every registered lock in the registry's order, which differs from one
    registry to another (a set's): the loop's cycles of classes are no deadlock."""
    first, second, third = _First().lock, _Second().lock, _First().lock
    _take_all([first, second])
    _take_all([second, third])
    assert v.reports == []


def test_locks_taken_on_one_line_inside_a_loop_are_validated_once(v, monkeypatch):
    """``with a, b:`` in a loop takes its locks by two instructions of one line: no loop's order,
    and its chains are cached as any."""
    a, b = _First().lock, _Second().lock
    validated = []
    validate = v.validate_chain
    monkeypatch.setattr(v, "validate_chain", lambda *args, **kwargs: validated.append(validate(*args, **kwargs)))
    for _ in range(3):
        with a, b:
            pass
    assert len(validated) == 2  # [a] and [a, b], once each
    assert v.reports == []


def test_a_loops_order_against_a_nesting_elsewhere_is_circular(v):
    first, second = _First().lock, _Second().lock
    _take_all([first, second])
    with second, first:
        pass
    assert kinds(v) == ["circular"]


def _walk_ring_in_two_threads(ring: list[threading.Lock]) -> None:
    """One thread takes the ring from its first lock, then another from its last."""
    for start in (0, len(ring) - 1):
        thread = threading.Thread(target=_take_all, args=([ring[(start + i) % len(ring)] for i in range(len(ring))],))
        thread.start()
        thread.join()


def test_one_loop_walked_from_different_starts_by_two_threads_is_circular(v):
    """TSan's "lots of lock inversions" (deadlock_detector_stress_test, Test19): each thread takes
    a ring of locks from its own starting point.  Two threads doing so at once deadlock, so the
    loop's order excuses a cycle only when one thread made all of it; this run's threads never
    overlap, and the cycle is reported all the same."""
    ring = [_First().lock, _Second().lock, _Third().lock]

    _walk_ring_in_two_threads(ring)
    assert kinds(v) == ["circular"]
    assert set(v.reports[0].classes) == {lock._key.name for lock in ring}


def test_one_cycle_found_again_from_another_of_its_dependencies_is_reported_once(v):
    """A cycle found again from another of its dependencies names its classes from another start:
    it is the same problem (one kind, one set of classes), reported once.  Here the ring's first
    dependency was made earlier, without the locks that guard it in the ring's run, which judges it
    again there.  (The first locks stay alive: no class of the ring has only one lock, a gate.)"""
    first = [_First().lock, _Second().lock]
    _take_all(first)
    ring = [_First().lock, _Second().lock, _Third().lock]

    _walk_ring_in_two_threads(ring)
    assert kinds(v) == ["circular"]


def test_one_loop_walked_from_different_starts_by_one_thread_is_clean(v):
    """The same loop walked by one thread only, from different starts, cannot deadlock with itself."""
    ring = [_First().lock, _Second().lock, _Third().lock]
    for start in (0, 2):
        _take_all([ring[(start + i) % 3] for i in range(3)])
    assert v.reports == []


def test_one_loop_taking_two_instances_of_a_class_in_both_orders_is_circular(v):
    first, again = _First().lock, _First().lock
    _take_all([first, again])
    _take_all([again, first])
    assert kinds(v) == ["circular"]


# -- same-class nesting, judged per instance ---------------------------------------------------


class Account:
    def __init__(self, balance: int) -> None:
        self.lock = threading.Lock()
        self.balance = balance


def transfer_sorted(src: Account, dst: Account, amount: int) -> None:
    """The textbook fix: take both accounts' locks in one global order (by id)."""
    first, second = sorted((src, dst), key=id)
    with first.lock, second.lock:
        src.balance -= amount
        dst.balance += amount


def transfer_naive(src: Account, dst: Account, amount: int) -> None:
    with src.lock, dst.lock:
        src.balance -= amount
        dst.balance += amount


def test_instances_of_one_class_taken_in_one_consistent_order_are_clean(v):
    accounts = [Account(100) for _ in range(4)]
    for i, a in enumerate(accounts):
        for b in accounts[i + 1 :]:
            run_both_ways(transfer_sorted, a, b)
    assert v.reports == []
    assert sum(a.balance for a in accounts) == 400


def test_two_instances_taken_in_both_orders_are_circular_naming_both(v):
    a, b = Account(1), Account(2)
    run_both_ways(transfer_naive, a, b)
    (report,) = v.reports
    assert report.kind == "circular"
    line = Account.__init__.__code__.co_firstlineno + 1
    assert report.classes == (f"Account.lock@{FILE}:{line}",) * 2
    assert f"{id(a.lock):016x}" in report.text and f"{id(b.lock):016x}" in report.text


def test_a_ring_of_instances_is_circular_as_dining_philosophers_make_it(v):
    forks = [Account(0) for _ in range(3)]
    for i in range(3):
        with forks[i].lock, forks[(i + 1) % 3].lock:
            pass
    assert [r.kind for r in v.reports] == ["circular"]


def test_kernel_lock_types_keep_the_kernels_rule_for_one_class():
    with pylockdep.validate(raise_on_report=False) as v:
        a, b = [pylockdep.Mutex("m") for _ in range(2)]
        with a, b:
            pass
    assert kinds(v) == ["recursive"]


def run_both_ways(fn, a, b) -> None:
    for args in ((a, b, 1), (b, a, 1)):
        t = threading.Thread(target=fn, args=args)
        t.start()
        t.join()


def test_futures_wait_and_as_completed_on_many_futures_are_clean(v):
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(pow, 2, i) for i in range(6)]
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == [2**i for i in range(6)]
        done, _ = concurrent.futures.wait(futures[::-1])
        assert len(done) == 6
    assert v.reports == []


class Vault:
    """An RLock per instance, as every future's condition has."""

    def __init__(self) -> None:
        self.lock = threading.RLock()


def validations_while_waiting(monkeypatch, count: int) -> int:
    """How many acquisitions are validated while ``concurrent.futures.wait()`` takes and releases
    ``count`` done futures' conditions (oldest first, each release from under all the others)."""
    calls = []
    check_acquire = _checks.check_acquire
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(pow, 2, i) for i in range(count)]
        concurrent.futures.wait(futures)
        pylockdep.current().forget_chains()  # the first wait's verdicts on these instances are kept
        with monkeypatch.context() as patch:
            patch.setattr(_checks, "check_acquire", lambda *args: calls.append(1) or check_acquire(*args))
            done, _ = concurrent.futures.wait(futures)
    assert len(done) == count
    return len(calls)


def test_releasing_a_run_of_one_class_oldest_first_validates_nothing_again(v, monkeypatch):
    """Each release from the bottom of N conditions used to validate the N-1 above it again, each
    validation judging every held instance: cubic work for one wait().  Now the stack left keeps
    the chain keys its places had, so a wait validates each acquisition once."""
    small, large = validations_while_waiting(monkeypatch, 100), validations_while_waiting(monkeypatch, 200)
    assert small >= 50 and large <= 2.2 * small + 10
    assert v.reports == []


def lines_run_in_pylockdep(fn: Callable[[], object]) -> int:
    """How many lines of pylockdep's own code (each step of a comprehension or loop included) run
    in this thread while ``fn()`` runs: its work, counted free of the machine's speed."""
    package = os.path.dirname(pylockdep.__file__)
    count = 0

    def local(frame: types.FrameType, event: str, arg: object) -> Callable[..., object]:
        nonlocal count
        count += event == "line"
        return local

    def calls(frame: types.FrameType, event: str, arg: object) -> Callable[..., object] | None:
        return local if frame.f_code.co_filename.startswith(package) else None

    sys.settrace(calls)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def lines_of_a_first_wait(count: int) -> int:
    """The lines pylockdep runs in a ``wait()`` on ``count`` done futures never waited on before:
    every acquisition of their conditions is on a new chain, and validated."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(pow, 2, i) for i in range(count)]
        for future in futures:
            future.result()
        return lines_run_in_pylockdep(lambda: concurrent.futures.wait(futures))


def test_validating_each_condition_a_wait_takes_does_not_read_every_held_one(v):
    """Validating the acquisition of a future's condition under N others held read all N (to
    decide whether the class is a token, which an RLock's never is): a wait() on 16,000 futures
    took minutes.  Its work now grows with N, not N^2."""
    small, large = lines_of_a_first_wait(150), lines_of_a_first_wait(300)
    assert large <= 2.3 * small
    assert v.reports == []


def test_instances_taken_again_in_the_same_order_are_not_compared_one_by_one(v):
    """Taking N instances of a class again in the order known from before compared the instances
    held below each with those held the first time, one by one: N^2 steps.  The same instances in
    the same order are now one cell, told the same at once."""

    def take_all_twice(count: int) -> int:
        vaults = [Vault() for _ in range(count)]

        def take_and_release() -> None:
            for vault in vaults:
                vault.lock.acquire()
            for vault in reversed(vaults):
                vault.lock.release()

        take_and_release()
        pylockdep.current().forget_chains()  # validated again: the instance order is asked
        return lines_run_in_pylockdep(take_and_release)

    small, large = take_all_twice(150), take_all_twice(300)
    assert large <= 2.3 * small
    assert v.reports == []


def test_instances_taken_again_over_fewer_of_their_class_cost_what_they_hold(v):
    """Taking an instance whose edge from the nearest held one was kept with other instances held
    under it asked, for each instance held now, whether that edge's cell named it, walking the
    cell each time: N^2 steps for each of N acquisitions (a sliding window of futures that
    wait(FIRST_COMPLETED) takes, each time over another set).  Each acquisition now costs what
    it holds: N^2 in all, four times the steps for twice the instances."""

    def take_twice(count: int) -> int:
        vaults = [Vault() for _ in range(count)]

        def take_and_release(held: list[Vault]) -> None:
            for vault in held:
                vault.lock.acquire()
            for vault in reversed(held):
                vault.lock.release()

        take_and_release(vaults)
        return lines_run_in_pylockdep(lambda: take_and_release(vaults[1:]))  # the same edges, fewer below

    small, large = take_twice(100), take_twice(200)
    assert large <= 5 * small  # N^3 made it eight times
    assert v.reports == []


def test_what_is_kept_of_a_dead_instance_goes_with_it(v):
    """The verdicts of chains on which instances of one class nest were kept for (chain, instance)
    in one table of the validator's, emptied only when full: short-lived objects whose locks nest
    kept every dead instance, its edges and their stacks (a quarter of a gigabyte for 100,000
    pairs).  They are kept on the instance now, and go with it."""
    nodes = []
    for _ in range(50):
        outer, inner = Vault(), Vault()
        with outer.lock, inner.lock:
            pass
        nodes.append(weakref.ref(v.instances.node(inner.lock)))
    del outer, inner
    gc.collect()
    assert [node for node in nodes[:-1] if node() is not None] == []  # the last: the holder's Task.nearest
    assert v.reports == []


def edges_kept_by_one_wait(v: pylockdep.Validator, count: int) -> int:
    """How many instance order edges one ``wait()`` on ``count`` new done futures leaves between
    their conditions."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(pow, 2, i) for i in range(count)]
        for future in futures:
            future.result()
        concurrent.futures.wait(futures)
        return sum(len(v.instances.node(future._condition._lock).after) for future in futures)


def test_taking_n_instances_in_a_row_keeps_n_edges_not_every_pair(v):
    """Each condition wait() takes is held with all those before it: N^2/2 pairs of the instance
    order, kept as one edge per condition taken (from the one before it)."""
    assert edges_kept_by_one_wait(v, 100) == 99
    assert edges_kept_by_one_wait(v, 200) == 199
    assert v.reports == []


def test_a_pair_an_instance_that_died_stood_for_is_still_in_the_order(v):
    """a, b, c taken in that order, so the order holds a -> c, kept as a -> b -> c: once b has
    died, c then a elsewhere is still circular."""
    a, b, c = Vault(), Vault(), Vault()
    with a.lock, b.lock, c.lock:
        pass
    del b
    gc.collect()
    with c.lock, a.lock:
        pass
    assert [r.kind for r in v.reports] == ["circular"]
    assert f"{id(a.lock):016x}" in v.reports[0].text and f"{id(c.lock):016x}" in v.reports[0].text


def test_a_dead_instance_between_two_never_held_together_orders_nothing(v):
    """a then b, a released, c taken under b: a and c were never held together, so once b has
    died, c then a is clean (while b lives, a -> b -> c is a ring of three and is reported)."""
    a, b, c = Vault(), Vault(), Vault()
    a.lock.acquire()
    b.lock.acquire()
    a.lock.release()
    with c.lock:
        pass
    b.lock.release()
    del b
    gc.collect()
    with c.lock, a.lock:
        pass
    assert v.reports == []


@pytest.mark.parametrize("make", [Vault, lambda: Account(0)], ids=["rlock-run", "lock-replayed"])
def test_a_release_from_under_instances_links_the_ones_on_either_side(v, make):
    """a, x, t taken in a row and x released (from inside a run of RLocks, or replayed for Locks),
    then u under t: the order holds a -> t and a -> u, which must outlive t (x, alive, was not held
    when u was taken)."""
    a, x, t, u = make(), make(), make(), make()
    a.lock.acquire()
    x.lock.acquire()
    t.lock.acquire()
    x.lock.release()
    with u.lock:
        pass
    t.lock.release()
    a.lock.release()
    del t
    gc.collect()
    with u.lock, a.lock:
        pass
    assert [r.kind for r in v.reports] == ["circular"]


def test_a_cycle_of_instances_is_found_after_they_were_released_oldest_first(v):
    """Instances taken in one order and released oldest first (the run path) keep every instance
    order edge: taking two of them the other way round elsewhere is circular, naming both."""
    vaults = [Vault() for _ in range(5)]

    def take_all_release_oldest_first() -> None:
        for vault in vaults:
            vault.lock.acquire()
        for vault in vaults:
            vault.lock.release()

    run_in_threads(take_all_release_oldest_first, 1)
    assert v.reports == []
    first, last = vaults[1].lock, vaults[3].lock
    with last, first:  # the other order, in this thread
        pass
    (report,) = v.reports
    assert report.kind == "circular"
    line = Vault.__init__.__code__.co_firstlineno + 1
    assert report.classes == (f"Vault.lock@{FILE}:{line}",) * 2
    assert f"{id(first):016x}" in report.text and f"{id(last):016x}" in report.text


def assert_keys_name_their_places(t, empty: int) -> None:
    """Every entry of the holder's stack sits on the chain key of the entries below it, from the
    empty stack's key ``empty``, and the holder's key is the whole stack's."""
    key = empty
    for entry in t.held:
        assert entry[H_PREV_KEY] == key
        key = chain_key(key, entry[H_CTX], variant(entry[H_CLASS], entry[H_READ], entry[H_TRYLOCK]))
    assert t.key == key


def test_a_release_from_inside_a_run_leaves_the_chain_keys_of_the_stack_it_leaves(v):
    """After locks of one class are released from the bottom and the middle of their run, with a
    lock of another class above them, every held entry's key is the one its place names, and
    releasing the rest brings the thread back to the empty stack's key."""
    accounts = [Vault() for _ in range(5)]
    other = threading.RLock()
    t = pylockdep.current().task()
    empty = t.key
    for account in accounts:
        account.lock.acquire()
    other.acquire()
    accounts[0].lock.release()
    accounts[2].lock.release()
    assert [entry[H_LOCK] for entry in t.held] == [accounts[1].lock, accounts[3].lock, accounts[4].lock, other]
    assert_keys_name_their_places(t, empty)
    accounts[1].lock.release()
    other.release()
    accounts[4].lock.release()
    accounts[3].lock.release()
    assert t.held == [] and t.key == empty
    assert v.reports == []


def released_from_the_bottom(entries: list[tuple], index: int) -> tuple[list[tuple], int]:
    """The stack and chain key that removing the entry at ``index`` of a run reaching the top of
    ``entries`` leaves, each entry above moved one place down onto the key below it, as remove()
    rewrote every entry of the run: the oracle of the lazy relabelling."""
    run = entries[index:]
    pairs = zip(run[:-1], run[1:], strict=True)
    moved = [above[:H_PREV_KEY] + (below[H_PREV_KEY],) + above[H_PREV_KEY + 1 :] for below, above in pairs]
    return entries[:index] + moved, run[-1][H_PREV_KEY]


@pytest.mark.parametrize("with_other_above", [False, True], ids=["run-on-top", "other-lock-above"])
def test_a_long_run_released_from_its_bottom_leaves_the_stack_every_entry_rewritten_leaves(v, with_other_above):
    """Releases from the bottom of a run longer than LAZY_RUN (kept aside, not rewritten, until the
    holder does anything else) leave the same locks, classes, sites and chain keys, entry by entry,
    as rewriting every entry of the run did; a lock of another class above is pushed again."""
    vaults = [Vault() for _ in range(_held.LAZY_RUN + 8)]
    outer, other = threading.RLock(), threading.RLock()
    t = pylockdep.current().task()
    empty = t.key
    outer.acquire()
    for vault in vaults:
        vault.lock.acquire()
    if with_other_above:
        other.acquire()
    expected, key = list(t.held), t.key
    for vault in vaults[:3]:
        run_end = len(expected) - 1 if with_other_above else len(expected)
        expected_run, key_after_run = released_from_the_bottom(expected[:run_end], 1)
        if with_other_above:
            top = expected[-1]
            key = chain_key(key_after_run, top[H_CTX], variant(top[H_CLASS], top[H_READ], top[H_TRYLOCK]))
            expected = expected_run + [top[:H_PREV_KEY] + (key_after_run,) + top[H_PREV_KEY + 1 :]]
        else:
            expected, key = expected_run, key_after_run
        vault.lock.release()
        assert _held._run_of(t) is not None  # the lazy relabelling is what is checked
        assert t.key == key
        assert [entry[H_LOCK] for entry in t.held] == [entry[H_LOCK] for entry in expected]
    _held.settle(t)
    assert _held._run_of(t) is None
    assert t.held == expected and t.key == key
    if with_other_above:
        other.release()
    for vault in reversed(vaults[3:]):
        vault.lock.release()
    outer.release()
    assert t.held == [] and t.key == empty
    assert v.reports == []


def test_lock_operations_after_releases_from_a_long_runs_bottom_see_exact_entries(v):
    """Whatever the holder does after releasing the bottom of a long run (release the run's top,
    from C or Python, take another lock), every entry's chain key is the one its place names and
    the stack empties back to the empty stack's key."""
    vaults = [Vault() for _ in range(_held.LAZY_RUN + 4)]
    t = pylockdep.current().task()
    empty = t.key
    for vault in vaults:
        vault.lock.acquire()
    vaults[0].lock.release()
    vaults[1].lock.release()
    vaults[-1].lock.release()  # the top: a fast path would pop with its entry's prev_key
    with threading.RLock():
        assert_keys_name_their_places(t, empty)
    vaults[2].lock.release()
    for vault in reversed(vaults[3:-1]):
        vault.lock.release()
    assert t.held == [] and t.key == empty
    assert v.reports == []


class Purse:
    def __init__(self, kind: str) -> None:
        self.lock = getattr(threading, kind)()


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_two_instances_of_one_class_nested_again_and_again_are_validated_once(v, monkeypatch, kind):
    """Locking two accounts in order, in a loop: the chain's verdict depends on which instances
    nest, so it is kept with them, and the same pair is not judged at every turn (it cost 25 us a
    pair).  Another pair on the same chain is judged, and so is the reverse order: reported."""
    x, y, z = (Purse(kind) for _ in range(3))
    calls = []
    check_acquire = _checks.check_acquire
    monkeypatch.setattr(_checks, "check_acquire", lambda *args: calls.append(args[2]) or check_acquire(*args))
    for _ in range(50):
        with x.lock, y.lock:
            pass
    assert calls.count(y.lock) == 1
    with x.lock, z.lock:
        pass
    assert calls.count(z.lock) == 1 and v.reports == []
    with y.lock, x.lock:
        pass
    assert [(r.kind, r.classes) for r in v.reports] == [("circular", (x.lock.name, x.lock.name))]


def test_a_list_walked_hand_over_hand_again_and_again_is_validated_once_per_pair(v, monkeypatch):
    """Lock coupling down a list of nodes of one class takes each node over the one before it:
    each pair is judged once, not at every walk, where only the last pair of the chain was kept
    (some 27 us an acquisition).  Walking the list backwards is then a cycle."""
    nodes = [Purse("Lock") for _ in range(5)]
    calls = []
    check_acquire = _checks.check_acquire
    monkeypatch.setattr(_checks, "check_acquire", lambda *args: calls.append(args[2]) or check_acquire(*args))

    def walk(order: list[Purse]) -> None:
        order[0].lock.acquire()
        for before, node in itertools.pairwise(order):
            node.lock.acquire()
            before.lock.release()
        order[-1].lock.release()

    for _ in range(20):
        walk(nodes)
    assert all(calls.count(node.lock) <= 2 for node in nodes), [calls.count(node.lock) for node in nodes]
    assert v.reports == []
    walk(nodes[::-1])
    assert [r.kind for r in v.reports] == ["circular"]


def test_wait_on_many_futures_validates_each_acquisition_once_with_a_lazy_run(v, monkeypatch):
    """A wait() on more futures than LAZY_RUN, released oldest first through the lazy run:
    each acquisition validated once, no release validates anything again."""
    count = 3 * _held.LAZY_RUN
    calls = validations_while_waiting(monkeypatch, count)
    assert count // 2 <= calls <= count + 2
    assert v.reports == []


def test_deep_nest_released_oldest_first_validates_only_what_is_new():
    """Distinct classes nested and released oldest first: a lock above the released one whose
    chain was validated is only pushed again (the one just above it is validated, to learn the
    dependency on the lock below), so each release validates once instead of once per lock above."""
    calls = []
    check_acquire = _checks.check_acquire
    with pylockdep.validate(raise_on_report=False) as v:
        locks = [pylockdep.Mutex(f"nest{i}", key=("nest", i)) for i in range(30)]
        for lock in locks:
            lock.acquire()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_checks, "check_acquire", lambda *args: calls.append(args[2]) or check_acquire(*args))
            locks[1].release()  # from the middle: the dependency 0 -> 2 is learned
            for lock in [locks[0], *locks[2:]]:
                lock.release()
        classes = [v.class_for(lock._key) for lock in locks]
    assert classes[2] in classes[0].after
    assert calls[0] is locks[2] and len(calls) <= 30
    assert v.reports == []


def test_a_sleeping_lock_pushed_again_under_a_spinning_lock_taken_after_it_is_not_atomic():
    """r, then x (a Mutex), then a SpinLock; releasing r pushes x again while the SpinLock is held
    above it: x was taken preemptible and is still, so no "sleeping function called" report."""
    with pylockdep.validate(raise_on_report=False) as v:
        r, x, spin = pylockdep.Mutex("r"), pylockdep.Mutex("x"), pylockdep.SpinLock("spin")
        r.acquire()
        x.acquire()
        spin.acquire()
        r.release()
        spin.release()
        x.release()
    assert v.reports == []


def test_memory_handler_flushing_into_its_target_is_clean(v):
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    memory = logging.handlers.MemoryHandler(capacity=2, target=target)
    log = logging.getLogger("pylockdep-test-memory-handler")
    log.propagate = False
    log.addHandler(memory)
    try:
        for i in range(5):
            log.warning("message %d", i)
        memory.flush()
    finally:
        log.removeHandler(memory)
        memory.close()
    assert stream.getvalue().count("message") == 5
    assert v.reports == []


def test_fasteners_style_locked_over_a_list_of_locks_is_clean(v):
    """fasteners' ``@locked(lock=[...])`` takes every lock of the list, in list order."""

    class Resource:
        def __init__(self) -> None:
            self._locks = [threading.Lock() for _ in range(3)]

        def locked(self, fn):
            with contextlib.ExitStack() as stack:
                for lock in self._locks:
                    stack.enter_context(lock)
                return fn()

    r = Resource()
    for _ in range(3):
        run_in_threads(lambda: r.locked(lambda: None), 2)
    assert v.reports == []


def test_two_reader_writer_locks_held_at_once_in_one_order_are_clean(v):
    class RWLock:
        def __init__(self) -> None:
            self._cond = threading.Condition(threading.Lock())
            self._readers = 0

        def read(self):
            return _Reading(self)

    class _Reading:
        def __init__(self, rw) -> None:
            self.rw = rw

        def __enter__(self):
            with self.rw._cond:
                self.rw._readers += 1

        def __exit__(self, *exc):
            with self.rw._cond:
                self.rw._readers -= 1
                self.rw._cond.notify_all()

    first, second = RWLock(), RWLock()

    def both():
        with first._cond, second._cond:
            pass

    run_in_threads(both, 2)
    assert v.reports == []


def run_in_threads(fn, n: int) -> None:
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- readers-writers with a counter --------------------------------------------------------------


class CountedRWLock:
    """readerwriterlock's RWLockRead: the first reader takes the resource lock under the counter's
    lock, the last reader (perhaps another thread) releases it, each in a method of its own."""

    def __init__(self) -> None:
        self.readers = 0
        self.resource = threading.Lock()
        self.counter = threading.Lock()

    def acquire_read(self) -> None:
        with self.counter:
            self.readers += 1
            if self.readers == 1:
                self.resource.acquire()

    def release_read(self) -> None:
        with self.counter:
            self.readers -= 1
            if self.readers == 0:
                self.resource.release()

    def acquire_write(self) -> None:
        self.resource.acquire()

    def release_write(self) -> None:
        self.resource.release()


def one_after_another(*steps) -> None:
    """Run each step in a thread of its own, one thread after the other."""
    for step in steps:
        t = threading.Thread(target=step)
        t.start()
        t.join()


def test_readers_writers_counter_whose_last_reader_releases_the_resource_is_clean():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        rw = CountedRWLock()
        rw.acquire_read()  # alone: the reader that took the resource releases it (a cycle, held back)
        rw.release_read()
        # Two readers overlap; the second releases the resource the first (now ended) took.
        one_after_another(rw.acquire_read, rw.acquire_read, rw.release_read, rw.release_read)
        rw.acquire_write()
        rw.release_write()
        assert v.reports == []
    assert v.reports == []
    assert rw.resource._key.handoff


def test_a_wait_cycle_through_a_token_lock_waits_for_its_hand_off():
    """readerwriterlock's RWLockFairD: a reader holds the writers' Lock for the readers (a token,
    taken in a function that returned) and waits for a Lock that a writer holds, while the writer
    waits for the token.  Another reader hands the token back: no DeadlockError, and no report."""
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        token, gate = threading.Lock(), threading.Lock()
        errors: list[BaseException] = []

        def take_token() -> None:
            token.acquire()

        def guarded(fn):
            def run() -> None:
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - the test reports what a thread raised
                    errors.append(exc)

            return threading.Thread(target=run)

        def writer() -> None:
            with gate:
                blocked.wait()
                with token:
                    pass

        def reader() -> None:
            take_token()
            with gate:  # waits for the writer, which waits for the token this reader holds
                pass

        blocked = threading.Event()
        w, r = guarded(writer), guarded(reader)
        w.start()
        while not gate.locked():
            pass
        r.start()
        wait_until_waiting(v, r)
        blocked.set()
        wait_until_waiting(v, w)
        token.release()  # the last reader hands the token back
        w.join(20)
        r.join(20)
        assert not w.is_alive() and not r.is_alive()
        assert errors == []
    assert v.reports == []


class Ledger:
    """A lock taken in one method and released in another, in both orders with a second lock: a
    real ABBA that nothing hands off."""

    def __init__(self) -> None:
        self.entries = threading.Lock()
        self.audit = threading.Lock()

    def begin(self) -> None:
        self.entries.acquire()

    def end(self) -> None:
        with self.audit:
            self.entries.release()

    def audit_then_entries(self) -> None:
        with self.audit, self.entries:
            pass


def test_a_real_cycle_through_a_lock_held_across_methods_is_reported_when_validation_ends():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        ledger = Ledger()
        ledger.audit_then_entries()
        ledger.begin()
        ledger.end()  # entries held since begin() returned, then audit taken: the cycle closes
        assert v.reports == []  # held back: entries could yet prove to be a hand-off signal
    assert [(r.kind, sorted(r.classes)) for r in v.reports] == [
        (
            "circular",
            sorted(
                [
                    "Ledger.audit@" + file_line_of(Ledger, "self.audit ="),
                    "Ledger.entries@" + file_line_of(Ledger, "self.entries ="),
                ]
            ),
        )
    ]


def file_line_of(cls: type, text: str) -> str:
    """``file.py:LINE`` of the line of ``cls``'s source holding ``text``."""
    lines, first = inspect.getsourcelines(cls)
    return f"{FILE}:{first + next(i for i, line in enumerate(lines) if text in line)}"


# -- hand-off locks ------------------------------------------------------------------------------


class SqliteMultithreadStyle:
    """sqlitedict's worker: a Lock taken by the caller and released by the worker when it is ready."""

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.worker = threading.Thread(target=self.ready.release)

    def wait_ready(self) -> None:
        self.worker.start()
        self.ready.acquire()  # blocks until the worker releases it
        self.ready.release()
        self.worker.join()


def test_a_lock_released_by_another_thread_is_a_hand_off_signal_with_no_report(v):
    for _ in range(3):
        SqliteMultithreadStyle().wait_ready()
    assert v.reports == []


def test_a_hand_off_signal_orders_nothing(v):
    signal = threading.Lock()
    other = threading.Lock()
    signal.acquire()
    run_in_threads(signal.release, 1)  # the hand-off marks the site
    with other, signal:
        pass
    with signal, other:
        pass
    assert v.reports == []


def test_a_lock_its_holder_takes_again_is_a_hand_off_before_another_thread_releases_it(v):
    """CPython's test_threadsignals.test_interrupted_timed_acquire: ``done`` is taken, a lock taken
    under it, then ``done`` taken again to wait for another thread's release.  Waiting for a lock
    it holds itself, the thread waits for a hand-off, which orders nothing: no cycle through the
    lock it holds meanwhile, though the release comes only after the second take began."""
    done, lock = threading.Lock(), threading.Lock()
    done.acquire()
    lock.acquire()
    releaser = threading.Thread(target=lambda: (time.sleep(0.05), done.release()))
    releaser.start()
    done.acquire()
    releaser.join()
    lock.release()
    done.release()
    assert v.reports == []


class MadeLockedWorker:
    """trio's thread cache: a worker's Lock is made locked ("no job yet"), the worker waits to take
    it, and whoever gives it a job opens it (here the thread that made it)."""

    def __init__(self) -> None:
        self._job: Callable[[], object] | None = None
        self._gate = threading.Lock()
        self._gate.acquire()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while self._gate.acquire(timeout=10):
            job, self._job = self._job, None
            if job is None:
                return
            job()

    def give(self, job: Callable[[], object] | None) -> None:
        self._job = job
        self._gate.release()


def test_a_lock_made_locked_under_another_lock_adds_no_dependency_into_its_class(v):
    """The worker is made under ``other``, which its job takes while the worker holds its gate:
    the gate's first take cannot wait, so there is no cycle ``other`` -> gate -> ``other``."""
    other = threading.Lock()
    done = threading.Event()
    with other:
        worker = MadeLockedWorker()

    def job() -> None:
        with other:
            done.set()

    worker.give(job)
    assert done.wait(10)
    worker.give(None)
    worker._thread.join(10)
    assert v.reports == []


def test_a_lock_taken_bare_outside_the_function_that_made_it_is_ordered(v):
    """Only the take in the function that made the Lock is judged a trylock: taken by another
    function under ``other``, then held while ``other`` is taken, it is a cycle."""
    other = threading.Lock()

    def close_then_take_other(gate: threading.Lock) -> None:
        with other:
            gate.acquire()
        with other:
            pass
        gate.release()

    gate = threading.Lock()
    close_then_take_other(gate)
    assert [r.kind for r in v.reports] == ["circular"]
    first = test_a_lock_taken_bare_outside_the_function_that_made_it_is_ordered.__code__.co_firstlineno
    assert set(v.reports[0].classes) == {f"Lock@{FILE}:{first + n}" for n in (3, 12)}  # other's line, gate's


def test_locks_made_and_taken_bare_in_a_function_other_than_a_constructor_are_ordered(v):
    """A test's (a module body's) Locks, made and taken bare where they are made, are mutexes."""
    a = threading.Lock()
    b = threading.Lock()
    a.acquire()
    b.acquire()
    b.release()
    a.release()
    b.acquire()
    a.acquire()
    a.release()
    b.release()
    assert [r.kind for r in v.reports] == ["circular"]


def test_a_lock_taken_by_a_with_block_in_the_function_that_made_it_is_ordered(v):
    """A with block in the function that made the Lock is a mutex's use: its take is ordered."""
    other = threading.Lock()
    lock = threading.Lock()
    with other, lock:
        pass
    with lock, other:
        pass
    assert [r.kind for r in v.reports] == ["circular"]


def test_a_lock_its_holder_holds_by_a_with_block_and_takes_again_is_recursive_though_others_may_release_it(v):
    """watchdog #229: the observer dispatched events holding its Lock by ``with``; a handler that
    stopped the observer took it again and the thread waited for itself for ever.  The block's end
    releases the Lock in this thread: it is a mutex, reported as it is taken again, before the wait,
    though another thread is alive (here one that ends the wait, for the test's sake)."""
    lock = threading.Lock()
    me = threading.current_thread()

    def release_when_main_waits():
        wait_until_waiting(v, me)
        lock.release()

    with lock:
        helper = threading.Thread(target=release_when_main_waits)
        helper.start()
        lock.acquire()
        helper.join()
    assert [(r.kind, r.classes) for r in v.reports] == [("recursive", (lock.name,))]


def test_a_real_self_deadlock_on_a_plain_lock_is_reported_and_raises_instead_of_hanging():
    result = run_alone(SELF_DEADLOCK_ON_A_PLAIN_LOCK)
    assert result.stdout == "DeadlockError\nrecursive True\n", result.stderr


SELF_DEADLOCK_ON_A_PLAIN_LOCK = """
    import threading, pylockdep
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        lock.acquire()
        try:
            lock.acquire()  # nobody else is left to release it
        except pylockdep.DeadlockError:
            print("DeadlockError")
        (report,) = v.reports
        print(report.kind, report.classes == (lock.name,))
        lock.release()
"""


def test_threads_all_waiting_for_the_lock_one_of_them_holds_are_refused_instead_of_hanging():
    """A worker waits for a Lock it holds itself; then the main thread waits for it too.  A thread
    blocked on that very Lock can release nothing: the worker is refused (``recursive``), and the
    main thread then too, the Lock's taker having ended."""
    result = run_alone(EVERY_THREAD_WAITS_FOR_ONE_LOCK)
    assert result.stdout == "worker DeadlockError\nmain DeadlockError ended\n['recursive']\n", result.stderr


EVERY_THREAD_WAITS_FOR_ONE_LOCK = """
    import threading, pylockdep
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        waiting = threading.Event()

        def worker():
            lock.acquire()
            waiting.set()
            try:
                lock.acquire()  # waits for itself; the main thread will not release it either
            except pylockdep.DeadlockError:
                print("worker DeadlockError", flush=True)

        thread = threading.Thread(target=worker, name="worker")
        thread.start()
        waiting.wait()
        try:
            lock.acquire()
        except pylockdep.DeadlockError as e:
            print("main DeadlockError", "ended" if "ended without releasing it" in str(e) else e)
        thread.join()
        print([r.kind for r in v.reports if r.kind != "lock_held_at_exit"])
"""


def test_real_abba_on_plain_locks_raises_in_the_thread_closing_the_wait_cycle(v):
    a = threading.Lock()
    b = threading.Lock()
    both_hold_one = threading.Barrier(2)
    errors: list[BaseException] = []

    def take(first, second):
        with first:
            both_hold_one.wait()
            try:
                with second:
                    pass
            except pylockdep.DeadlockError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=take, args=pair) for pair in ((a, b), (b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1  # exactly one thread refuses; the other then gets its lock
    assert "circular" in kinds(v)


# -- leaked Locks ----------------------------------------------------------------------------------


def test_a_lock_left_held_by_a_thread_that_ended_is_reported_when_validation_ends():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        command = threading.Lock()  # pigpio 1.40: a failed socket read leaves the command lock locked
        released_later = threading.Lock()
        run_in_threads(command.acquire, 1)
        run_in_threads(released_later.acquire, 1)
        released_later.release()  # another thread released it: not a leak
        assert v.reports == []  # the thread's end alone proves nothing: someone may release it
    (report,) = v.reports
    assert report.kind == "lock_held_at_exit" and report.classes == (command.name,)


def test_a_lock_held_by_a_thread_still_running_is_not_leaked():
    stop = threading.Event()
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        started = threading.Event()

        def hold():
            with lock:
                started.set()
                stop.wait()

        t = threading.Thread(target=hold)
        t.start()
        started.wait()
    stop.set()
    t.join()
    assert v.reports == []


# -- locks bound before instrumentation --------------------------------------------------------------


def test_names_bound_before_instrumentation_make_validated_locks_and_are_restored_after():
    originals = (_thread.allocate_lock, _thread.RLock, threading._allocate_lock)
    prebound = types.ModuleType("prebound_locks")
    prebound.RLock = _thread.RLock  # as functools (3.11) and bz2 bind them at import
    prebound.allocate_lock = _thread.allocate_lock
    sys.modules["prebound_locks"] = prebound
    try:
        with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
            made = [prebound.RLock(), prebound.allocate_lock(), threading._allocate_lock()]
            made += [_thread.allocate_lock(), _thread.RLock()]  # the _thread module's own names too
            assert all(isinstance(lock._key, LockKey) for lock in made)
            cond = threading.Condition()
            with cond:
                cond.wait(0.001)  # its waiter lock stays CPython's
            assert isinstance(cond._lock._key, LockKey)
        assert v.reports == []
        assert prebound.RLock is _thread.RLock and prebound.allocate_lock is _thread.allocate_lock
        assert (_thread.allocate_lock, _thread.RLock, threading._allocate_lock) == originals
        assert not hasattr(_thread.RLock(), "_key") and not hasattr(_thread.allocate_lock(), "_key")
    finally:
        del sys.modules["prebound_locks"]


def test_locks_made_through_the_thread_module_after_instrumentation_take_part_in_a_cycle(v):
    lock = _thread.allocate_lock()
    rlock = _thread.RLock()
    take_ab_then_ba(lock, rlock)
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(report.classes) == sorted([lock._key.name, rlock._key.name])
    assert all(f"@{FILE}:" in name for name in report.classes)


def test_c_function_factories_kept_as_class_attributes_are_not_bound_as_methods(v):
    # CPython's lock tests keep ``locktype = _thread.allocate_lock`` and call self.locktype(): a C
    # function does not bind, and neither may its stand-in.
    class Tests:
        allocate = _thread.allocate_lock
        lock = threading.Lock
        internal = threading._allocate_lock

    made = [Tests().allocate(), Tests().lock(), Tests().internal()]
    assert all(isinstance(lock._key, LockKey) for lock in made)
    assert repr(_thread.allocate_lock) == "<built-in function allocate_lock>"
    for factory in (_thread.allocate_lock, threading._allocate_lock):
        assert pickle.loads(pickle.dumps(factory)) is factory


def test_handing_a_held_lock_to_a_thread_started_with_the_thread_module_is_clean(v):
    # test_thread's setUp takes done_mutex and the last of its _thread workers releases it: those
    # threads are in no threading list, and may not have run yet when the waiter checks.
    done = _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(lambda: (time.sleep(0.05), done.release()), ())
    done.acquire()  # waits for the worker, which hands the lock back
    assert v.reports == []


def test_pylockdep_and_threading_keep_their_own_locks_plain_while_the_thread_module_is_rebound(v):
    assert not hasattr(pylockdep.Validator().graph_lock, "_key")  # made at run time, through _thread's RLock
    done = threading.Event()
    t = threading.Thread(target=done.set)
    t.start()
    t.join()  # joining waits on the thread's own state lock, released by the interpreter
    assert done.is_set() and not t.is_alive() and v.reports == []


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="cached_property has had no lock since 3.12")
def test_cached_property_lock_of_3_11_is_validated_and_its_lock_order_bug_found(v):
    """cpython#87634: the lock is the descriptor's, for every instance, and held while computing."""

    class Left:
        def __init__(self, right=None):
            self.right = right

        @functools.cached_property
        def value(self):
            return self.right.value if self.right else 1

    class Right:
        def __init__(self, left=None):
            self.left = left

        @functools.cached_property
        def value(self):
            return self.left.value if self.left else 2

    assert isinstance(Left.__dict__["value"].lock._key, LockKey)
    run_in_threads(lambda: Left(Right()).value, 1)  # Left's lock, then Right's
    run_in_threads(lambda: Right(Left()).value, 1)  # Right's lock, then Left's
    assert kinds(v) == ["circular"]


def test_a_leaked_lock_that_nothing_refers_to_any_more_is_not_reported():
    # CPython's lock tests drop locked locks; so may requests that each take a Lock.  Nobody can
    # ever wait for such a Lock: not a leak.  The same Lock kept somewhere is one.
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        kept = threading.Lock()
        run_in_threads(lambda: threading.Lock().acquire(), 1)
        run_in_threads(kept.acquire, 1)
    (report,) = v.reports
    assert report.kind == "lock_held_at_exit" and report.classes == (kept.name,)


def test_hand_off_locks_of_one_class_taken_again_in_another_order_are_no_instance_cycle(v):
    # CPython 3.13's test_join_then_self_join: locks made and taken by one helper are signals that
    # other threads release; taking one again while holding a later one is no inversion.
    def make_lock():
        lock = threading.Lock()
        lock.acquire()
        return lock

    started, barrier = make_lock(), make_lock()  # held in this order

    def worker():
        time.sleep(0.05)
        started.release()  # hands the lock back: a signal, not a mutex

    t = threading.Thread(target=worker)
    t.start()
    started.acquire()  # while holding barrier: the other order of the two instances
    t.join()
    started.release()
    barrier.release()
    v.finish()
    assert v.reports == []


def test_subclassing_a_lock_class_stand_in_subclasses_cpythons_class(v):
    # CPython 3.13's test_threading: threading.Lock takes no subclasses; _thread.RLock (3.13's
    # threading._CRLock) takes them, with their own __init__ and no deprecation warning.
    if isinstance(threading.Lock, type):
        with pytest.raises(TypeError):

            class MyLock(threading.Lock):  # type: ignore[misc]
                pass

    class CustomRLock(_thread.RLock):  # type: ignore[misc]
        def __init__(self, a, *, b) -> None:
            super().__init__()
            self.a = a

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lock = CustomRLock(1, b=2)
    assert type(lock) is CustomRLock and lock.a == 1 and isinstance(lock, _thread.RLock)
    with lock:
        assert lock._is_owned()


def test_a_join_with_a_timeout_in_a_wait_cycle_times_out_instead_of_raising(v):
    # CPython 3.13's test_join_with_timeout: the lock the thread waits for is released after the
    # join has timed out.  The dependency is reported; the wait itself ends by itself.
    lock = _thread.allocate_lock()
    lock.acquire()
    thread = threading.Thread(target=lock.acquire)
    thread.start()
    thread.join(timeout=0.05)
    assert thread.is_alive()
    lock.release()
    thread.join()
    assert kinds(v) == ["circular"]
