"""instrument_threading(): Python's own locks validated with Python's semantics (API.md, "Python's own locks")."""

from __future__ import annotations

import _thread
import concurrent.futures
import copy
import io
import logging
import pickle
import queue
import re
import subprocess
import sys
import textwrap
import threading
import time
import types
import weakref

import pytest
from _abba import take_ab_then_ba
from _waiting import wait_until_waiting

import pylockdep
from pylockdep._frames import short_filename
from pylockdep._threading import Lock, RLock
from pylockdep._waits import CompletionMap

pytestmark = pytest.mark.timeout(60)
FILE = short_filename(__file__)  # as class names show it


def line() -> int:
    """The caller's line number: ``x = threading.Lock(); n = line()`` on one line names x's class."""
    return sys._getframe(1).f_lineno


def name_of(lock: object) -> str:
    return lock._key.name


def run_in_thread(fn, *args) -> None:
    t = threading.Thread(target=fn, args=args)
    t.start()
    t.join()


def task_of(v: pylockdep.Validator, thread: threading.Thread):
    return next(t for t in list(v.tasks.values()) if t.ident == thread.ident)


def edges(v: pylockdep.Validator) -> set[tuple[str, str]]:
    return {(e.prev.name, e.next.name) for e in v.graph.edges()}


@pytest.fixture
def v():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        yield v


# -- the rules -----------------------------------------------------------------------------------


def test_abba_between_two_locks_in_threads_run_one_after_the_other_is_circular(v):
    a = threading.Lock()
    a_line = line() - 1  # the line above
    b = threading.Lock()
    b_line = line() - 1  # the line above
    take_ab_then_ba(a, b)
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(report.classes) == sorted([f"Lock@{FILE}:{a_line}", f"Lock@{FILE}:{b_line}"])
    assert f"lock(Lock@{FILE}:{a_line});" in report.text


def test_rlock_reentry_is_not_a_new_acquisition(v):
    r = threading.RLock()
    other = threading.Lock()
    with r, other, r, r:
        assert r._recursion_count() == 3
    assert edges(v) == {(name_of(r), name_of(other))}
    assert v.reports == []


def test_condition_default_lock_is_an_rlock_named_after_the_condition(v):
    cond = threading.Condition()
    n = line() - 1  # the line above
    assert isinstance(cond._lock, RLock)
    assert name_of(cond._lock) == f"Condition@{FILE}:{n}"
    with cond, cond:
        pass
    assert v.reports == []


def test_blocking_on_a_held_lock_waits_for_another_thread_to_release_it_a_hand_off_with_no_report(v):
    lock = threading.Lock()
    lock.acquire()
    me = threading.current_thread()

    def release_when_main_waits():
        wait_until_waiting(v, me)
        lock.release()

    helper = threading.Thread(target=release_when_main_waits)
    helper.start()
    assert lock.acquire() is True  # waits, then gets it from the helper's release
    helper.join()
    lock.release()
    assert v.reports == []
    assert task_of(v, me).held == []


def test_lock_released_by_another_thread_leaves_the_acquirers_held_stack(v):
    a = threading.Lock()
    b = threading.Lock()
    a.acquire()
    run_in_thread(a.release)
    with b:  # a is no longer held: no a -> b
        pass
    assert not a.locked()
    assert edges(v) == set()
    assert task_of(v, threading.current_thread()).held == []
    assert v.reports == []


def test_nonblocking_and_timed_acquires_are_trylocks_with_no_dependency_into_them(v):
    a = threading.Lock()
    b = threading.Lock()
    c = threading.Lock()
    with a:
        assert b.acquire(False)
        assert c.acquire(timeout=5)
        c.release()
        b.release()
    with b, a:
        pass
    with c, a:
        pass
    assert (name_of(a), name_of(b)) not in edges(v)
    assert v.reports == []


def test_timed_acquire_of_a_busy_lock_waits_and_times_out_or_gets_it(v):
    lock = threading.Lock()
    taken, go = threading.Event(), threading.Event()

    def holder():
        with lock:
            taken.set()
            go.wait()

    t = threading.Thread(target=holder)
    t.start()
    taken.wait()
    assert lock.acquire(timeout=0.01) is False
    assert lock.acquire(blocking=False) is False
    go.set()
    assert lock.acquire(timeout=30) is True
    lock.release()
    t.join()
    assert v.reports == []


def test_acquire_checks_its_arguments_as_cpython_does(v):
    plain = _thread.allocate_lock()
    cases = [
        ((False, 1), {}),
        ((), {"timeout": -100}),
        ((), {"timeout": 1e100}),
        ((), {"timeout": None}),
        ((), {"timeout": float("nan")}),
        ((), {"timeout": _thread.TIMEOUT_MAX + 1}),
    ]
    for lock in (threading.Lock(), threading.RLock()):
        for args, kwargs in cases:
            with pytest.raises(Exception) as expected:
                plain.acquire(*args, **kwargs)
            with pytest.raises(expected.type, match=re.escape(str(expected.value))):
                lock.acquire(*args, **kwargs)
        assert lock.acquire(timeout=_thread.TIMEOUT_MAX)
        if isinstance(lock, RLock):  # re-entry checks them too
            with pytest.raises(ValueError):
                lock.acquire(False, 1)
        lock.release()
        assert not lock._real.locked()
    assert v.reports == []


def test_misuse_cpython_rejects_raises_and_is_not_reported(v):
    lock, rlock = threading.Lock(), threading.RLock()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        rlock.release()
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        rlock._release_save()
    rlock.acquire()
    errors = []

    def release_other_threads_rlock():
        try:
            rlock.release()
        except RuntimeError as exc:
            errors.append(exc)

    run_in_thread(release_other_threads_rlock)
    rlock.release()
    assert len(errors) == 1
    assert v.reports == []


def test_rlock_cycle_of_waiting_threads_raises_deadlock_error_instead_of_hanging(v):
    r1 = threading.RLock()
    r2 = threading.RLock()
    one_in, two_in = threading.Event(), threading.Event()
    errors = []

    def take(first, second, mine, theirs):
        with first:
            mine.set()
            theirs.wait()
            try:
                with second:
                    pass
            except pylockdep.DeadlockError as exc:
                errors.append(exc)

    threads = [
        threading.Thread(target=take, args=(r1, r2, one_in, two_in)),
        threading.Thread(target=take, args=(r2, r1, two_in, one_in)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors  # the thread that closed the cycle (both, if they saw it at once)
    assert [r.kind for r in v.reports] == ["circular"]


# -- drop-in behaviour ---------------------------------------------------------------------------


def test_repr_has_cpythons_shape(v):
    lock, rlock = threading.Lock(), threading.RLock()
    assert re.fullmatch(r"<unlocked pylockdep\._threading\.Lock object at 0x[0-9a-f]+>", repr(lock))
    with lock, rlock, rlock:
        assert re.fullmatch(r"<locked \S+\.Lock object at 0x[0-9a-f]+>", repr(lock))
        assert re.fullmatch(
            rf"<locked \S+\.RLock object owner={threading.get_ident()} count=2 at 0x[0-9a-f]+>", repr(rlock)
        )
    assert re.fullmatch(r"<unlocked \S+\.RLock object owner=0 count=0 at 0x[0-9a-f]+>", repr(rlock))


def test_an_rlock_passes_for_cpythons_signal_safe_one(v):
    """trio's entry queue asserts ``lock.__class__.__module__ == "_thread"`` of its RLock (the
    signal-safe one): ``trio.run()`` failed with TrioInternalError under instrumentation."""
    rlock = threading.RLock()
    assert type(rlock) is RLock and rlock.__class__.__module__ == "_thread"
    assert re.fullmatch(r"<unlocked _thread\.RLock object owner=0 count=0 at 0x[0-9a-f]+>", repr(rlock))


def test_weak_references_and_no_pickling_or_copying(v):
    """Pickling or copying one is refused with CPython's own message, which names the type the lock
    stands for (test suites match it: "cannot pickle '_thread.lock' object")."""
    for factory, plain in ((threading.Lock, _thread.allocate_lock), (threading.RLock, _thread.RLock)):
        with pytest.raises(TypeError) as cpythons:
            pickle.dumps(plain())
        lock = factory()
        ref = weakref.ref(lock)
        assert ref() is lock
        with pytest.raises(TypeError) as refused:
            pickle.dumps(lock)
        assert str(refused.value) == str(cpythons.value)
        with pytest.raises(TypeError) as refused:
            copy.copy(lock)
        assert str(refused.value) == str(cpythons.value)
        del lock, refused  # the traceback refers to the frame holding the lock
        assert ref() is None


def test_the_factories_pickle_by_reference_as_cpythons_do(v):
    """multiprocessing's managers pickle a registry that holds threading.Lock and RLock."""
    for factory in (threading.Lock, threading.RLock):
        loaded = pickle.loads(pickle.dumps(factory))
        assert loaded in (factory, factory.__wrapped__)
        lock = loaded()
        assert lock.acquire()
        lock.release()


@pytest.mark.timeout(100)
def test_a_spawned_multiprocessing_manager_serves_locks(v):
    import multiprocessing

    manager = multiprocessing.get_context("spawn").Manager()
    try:
        remote = manager.Lock()
        with remote:
            pass
    finally:
        manager.shutdown()
    assert v.reports == []


def test_instrumented_locks_pass_isinstance_checks_for_cpythons_lock_types(v):
    """Code that keeps a lock only if it is one (``isinstance(lock, _thread.LockType)``, else makes
    a new one) kept none under instrumentation: each call made a new lock, and nothing excluded."""
    lock, rlock, allocated = threading.Lock(), threading.RLock(), _thread.allocate_lock()
    assert type(lock) is Lock and type(allocated) is Lock and type(rlock) is RLock
    assert isinstance(lock, _thread.LockType) and isinstance(allocated, _thread.LockType)
    assert isinstance(rlock, _thread.RLock) and not isinstance(rlock, _thread.LockType)
    assert not isinstance(lock, _thread.RLock)

    holder = types.SimpleNamespace()

    def registry_lock():
        found = getattr(holder, "lock", None)
        if not isinstance(found, _thread.LockType):
            holder.lock = found = threading.Lock()
        return found

    assert registry_lock() is registry_lock()
    assert name_of(holder.lock).startswith("Lock@")


def test_lock_type_makes_locks_from_3_13_on_and_rlock_type_always_as_cpythons_do(v):
    lock_type = type(threading.Lock())
    if sys.version_info < (3, 13):
        with pytest.raises(TypeError, match=r"cannot create 'pylockdep\._threading\.Lock' instances"):
            lock_type()
    else:
        lock = lock_type()
        assert name_of(lock) == f"Lock@{FILE}:{line() - 1}"
        with pytest.raises(TypeError, match=r"^lock expected 0 arguments, got 1$"):
            lock_type(1)
        with lock:
            assert lock.locked()
    rlock_type = type(threading.RLock())
    rlock = rlock_type()
    n = line() - 1  # the line above
    assert name_of(rlock) == f"RLock@{FILE}:{n}"
    with rlock:
        pass


def test_with_returns_true_and_locked_reports_state(v):
    lock = threading.Lock()
    with lock as got:
        assert got is True
        assert lock.locked() and lock.locked_lock()
    assert not lock.locked()
    assert lock.acquire_lock() is True
    lock.release_lock()


def test_condition_wait_and_notify_over_lock_and_rlock_keep_the_waiter_lock_plain(v):
    for cond in (threading.Condition(threading.Lock()), threading.Condition()):
        ready, waiting_held = [], []
        me = threading.current_thread()

        def waiter(cond=cond, ready=ready):
            with cond:
                cond.wait_for(lambda: ready)

        t = threading.Thread(target=waiter)
        t.start()
        with cond:
            while not cond._waiters:  # the waiter is inside wait(): it dropped the lock
                cond.wait(0.005)
            assert all(type(w) is _thread.LockType for w in cond._waiters)
            waiting_held.append([e for e in task_of(v, t).held if not isinstance(e[0], CompletionMap)])
            ready.append(True)
            cond.notify_all()
        t.join()
        assert waiting_held == [[]]
        assert task_of(v, me).held == []
    assert v.reports == []


def test_semaphores_are_not_tracked_as_locks(v):
    a = threading.Lock()
    sem = threading.BoundedSemaphore(1)
    with a:
        sem.acquire()
    sem.release()
    with sem, a:
        pass
    assert v.reports == []


def test_at_fork_reinit_unlocks_and_forgets_a_held_lock(v):
    for lock in (threading.Lock(), threading.RLock()):
        other = threading.Lock()
        lock.acquire()
        lock._at_fork_reinit()
        assert repr(lock).startswith("<unlocked")
        assert task_of(v, threading.current_thread()).held == []
        with other, lock:
            pass
    assert v.reports == []


FORK_CHILD = textwrap.dedent("""
    import os, threading, pylockdep
    pylockdep.instrument_threading().install()
    v = pylockdep.current()
    r, other = threading.RLock(), threading.Lock()
    held, done = threading.Event(), threading.Event()
    def holder():
        with r:
            held.set()
            done.wait()
    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        ok = len(v.tasks) == 1 and not v.reports
        with other:
            pass
        os._exit(0 if ok and not v.reports else 3)
    _, status = os.waitpid(pid, 0)
    done.set()
    t.join()
    raise SystemExit(os.waitstatus_to_exitcode(status) or len(v.reports))
""")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_fork_child_forgets_the_locks_other_threads_held():
    result = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# The parent learns m -> outer, then forks a multiprocessing child inside `with outer` (as
# ProcessPoolExecutor.submit() forks under its _shutdown_lock, with logging's RLock held by its
# fork hooks); the child takes m.  Two more locks, a Lock and an RLock, are taken by fork hooks
# and released by them in both processes, as loguru does.  KEEP makes the fork hold an RLock of
# the program's too, taken before outer (as pebble forks under its pool's RLock): the child takes
# it again and lets it go.
MP_FORK_CHILD = textwrap.dedent("""
    import multiprocessing, os, sys, threading, pylockdep
    pylockdep.instrument_threading().install()
    v = pylockdep.current()
    outer, m, r = threading.Lock(), threading.Lock(), threading.RLock()
    for hooked in (threading.Lock(), threading.RLock()):
        os.register_at_fork(before=hooked.acquire, after_in_parent=hooked.release, after_in_child=hooked.release)

    def child():
        with m:
            pass
        if KEEP:
            with r:
                pass
            r.release()
        sys.exit(len(v.reports) or (0 if not v.task().held and not r._is_owned() else 9))

    if __name__ == "__main__":
        import logging  # its fork hooks hold its module RLock across the fork
        with m:
            with outer:
                pass
        if KEEP:
            r.acquire()
        with outer:
            process = multiprocessing.get_context("fork").Process(target=child)
            process.start()
        process.join()
        if KEEP:
            r.release()
        raise SystemExit(process.exitcode or len(v.reports))
""")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
@pytest.mark.parametrize("keep", [False, True], ids=["locks", "an-rlock-too"])
def test_a_multiprocessing_fork_child_forgets_the_locks_its_parent_took(tmp_path, keep):
    """multiprocessing's fork child runs its target and ends in os._exit(): it never returns to
    the frames that took the locks held at the fork, and what it takes is ordered after none of
    them (it reported a cycle with the parent's order).  They stay taken; the child's own release
    of one (a fork hook's, or the RLock's owner letting it go) is no bad unlock balance."""
    program = tmp_path / "forks.py"
    program.write_text(MP_FORK_CHILD.replace("KEEP", str(keep)))
    result = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "circular" not in result.stderr and "bad unlock" not in result.stderr


# -- classes -------------------------------------------------------------------------------------


def test_class_is_the_type_and_the_first_frame_outside_threading(v):
    lock = threading.Lock()
    n = line() - 1  # the line above
    rlock = threading.RLock()
    m = line() - 1  # the line above
    event = threading.Event()
    e = line() - 1  # the line above
    sem = threading.Semaphore()
    s = line() - 1  # the line above
    barrier = threading.Barrier(1)
    b = line() - 1  # the line above
    assert name_of(lock) == f"Lock@{FILE}:{n}"
    assert name_of(rlock) == f"RLock@{FILE}:{m}"
    assert name_of(event._cond._lock) == f"Event@{FILE}:{e}"
    assert name_of(sem._cond._lock) == f"Semaphore@{FILE}:{s}"
    assert name_of(barrier._cond._lock) == f"Barrier@{FILE}:{b}"
    twins = [threading.Lock() for _ in range(2)]
    assert twins[0]._key is twins[1]._key


def test_naming_a_class_makes_no_file_system_call(v, tmp_path, monkeypatch):
    """A lock made in a file not named before (an event loop's thread, where blockbuster fails any
    os.getcwd() or os.path.abspath()) is named from strings alone."""
    source = tmp_path / "made_in_a_loop.py"
    code = compile("import threading\nlock = threading.Lock()\n", str(source), "exec")
    monkeypatch.syspath_prepend(str(tmp_path))

    def blocking(*args):
        raise AssertionError("a file system call while naming a lock class")

    monkeypatch.setattr("os.getcwd", blocking)
    monkeypatch.setattr("os.path.abspath", blocking)
    namespace: dict = {}
    exec(code, namespace)
    monkeypatch.undo()
    assert name_of(namespace["lock"]) == "lock@made_in_a_loop.py:2"  # a global is named by its variable


def test_pylockdep_imports_and_names_locks_in_a_working_directory_since_removed(tmp_path):
    """The working directory is read once, at import: a program started in a directory that has
    been removed still imports pylockdep and names its locks by their files."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (
        "import os, sys\n"
        "os.rmdir(os.getcwd())\n"
        "import pylockdep, queue\n"
        "with pylockdep.validate(), pylockdep.instrument_threading():\n"
        "    print(queue.Queue().mutex._key.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=gone, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"Queue\.mutex@queue\.py:\d+\n", result.stdout)


def test_standard_library_locks_take_their_line_in_the_library(v):
    q1, q2 = queue.Queue(), queue.Queue()
    assert q1.mutex._key is q2.mutex._key  # one class per site in queue.py, named for where it lives
    assert re.fullmatch(r"Queue\.mutex@queue\.py:\d+", name_of(q1.mutex))
    handler = logging.StreamHandler(io.StringIO())  # the lock of Handler.createLock(), by handler type
    assert re.fullmatch(r"StreamHandler\.lock@logging/__init__\.py:\d+", name_of(handler.lock))
    assert re.fullmatch(r"Handler\.lock@logging/__init__\.py:\d+", name_of(logging.Handler().lock))


def test_threadings_own_bookkeeping_locks_stay_plain(v):
    t = threading.Thread(target=lambda: None)
    assert type(t._started._cond._lock) is _thread.LockType
    t.start()
    t.join()


@pytest.mark.usefixtures("plain_threading")
def test_locks_made_before_or_after_instrumentation_stay_plain():
    original = threading.Lock
    before = threading.Lock()
    with pylockdep.instrument_threading():
        inside = threading.Lock()
        nested = pylockdep.instrument_threading()
        with nested:
            pass
        assert isinstance(threading.Lock(), Lock)  # still on after an inner block
    after = threading.Lock()
    assert type(before) is type(after) is _thread.LockType
    assert isinstance(inside, Lock)
    assert threading.Lock is original


@pytest.mark.usefixtures("plain_threading")
def test_stand_ins_have_the_shape_of_this_pythons_factories():
    plain = threading.Lock()
    lock_is_a_class = isinstance(threading.Lock, type)  # 3.13 on
    assert lock_is_a_class == (sys.version_info >= (3, 13))
    with pylockdep.instrument_threading():
        assert isinstance(threading.Lock, type) == lock_is_a_class
        made = threading.Lock()
        assert isinstance(made, Lock)
        if lock_is_a_class:
            assert isinstance(made, threading.Lock)
            assert isinstance(plain, threading.Lock)  # made before instrumentation
            assert not isinstance(threading.RLock(), threading.Lock)
            assert issubclass(Lock, threading.Lock) and issubclass(_thread.LockType, threading.Lock)
            assert (threading.Lock | None) == (threading.Lock | None)  # usable in annotations
            assert repr(threading.Lock) == "<class '_thread.lock'>"
            assert threading.Lock.__name__ == "lock" and threading.Lock.__module__ == "_thread"
        else:
            with pytest.raises(TypeError):
                isinstance(made, threading.Lock)
        with pytest.raises(TypeError):
            threading.Lock(1)


@pytest.mark.usefixtures("plain_threading")
def test_rlock_arguments_warn_exactly_where_cpython_warns():
    import warnings

    with pylockdep.instrument_threading(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lock = threading.RLock(1)
        assert isinstance(lock, RLock)
    if sys.version_info >= (3, 13):
        (warning,) = caught
        assert warning.category is DeprecationWarning
        assert warning.filename == __file__
    else:
        assert caught == []


@pytest.mark.usefixtures("plain_threading")
def test_process_wide_install_and_uninstall():
    inst = pylockdep.instrument_threading()
    inst.install()
    try:
        assert isinstance(threading.RLock(), RLock)
    finally:
        inst.uninstall()
    assert type(threading.RLock()) is _thread.RLock
    with pytest.raises(RuntimeError):
        inst.uninstall()


# -- real programs -------------------------------------------------------------------------------


def test_program_using_logging_queue_futures_and_condition_runs_clean(v):
    log = logging.getLogger("pylockdep-test-program")
    log.addHandler(logging.StreamHandler(io.StringIO()))
    log.setLevel(logging.INFO)
    work: queue.Queue[int | None] = queue.Queue(maxsize=4)
    results: list[int] = []
    cond = threading.Condition()

    def consumer():
        while (item := work.get()) is not None:
            log.info("item %d", item)
            with cond:
                results.append(item * item)
                cond.notify_all()
            work.task_done()
        work.task_done()

    consumers = [threading.Thread(target=consumer) for _ in range(2)]
    for t in consumers:
        t.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        for item in pool.map(lambda i: i + 1, range(20)):
            work.put(item)
        futures = [pool.submit(log.info, "done %d", i) for i in range(5)]
        for f in futures:
            f.result()
    with cond:
        cond.wait_for(lambda: len(results) == 20)
    for _ in consumers:
        work.put(None)
    work.join()
    for t in consumers:
        t.join()
    assert sorted(results) == [i * i for i in range(1, 21)]
    assert v.reports == []


@pytest.mark.timeout(60)
def test_waiting_for_a_kernel_lock_whose_owner_ended_raises_instead_of_hanging():
    """A mutex has an owner, as an RLock has: only it may release it."""
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        lock = pylockdep.Mutex("orphaned")
        owner = threading.Thread(target=lock.acquire, name="owner")
        owner.start()
        owner.join()
        with pytest.raises(pylockdep.DeadlockError, match="its owner, thread .*, ended without releasing it"):
            lock.acquire()
    assert [r.kind for r in v.reports] == ["lock_held_at_exit"]


@pytest.mark.timeout(60)
def test_an_owner_that_releases_and_ends_while_its_waiter_checks_is_no_deadlock(monkeypatch):
    """The check reads the lock's owner, then lists the live threads: an owner that released the
    lock and ended in between did not end holding it."""
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        lock = pylockdep.Mutex("handed")
        taken, go = threading.Event(), threading.Event()

        def holder() -> None:
            with lock:
                taken.set()
                go.wait(10)

        owner = threading.Thread(target=holder, name="owner")
        owner.start()
        assert taken.wait(10)
        listed = threading.enumerate

        def enumerate_once_the_owner_ended() -> list[threading.Thread]:
            monkeypatch.setattr(threading, "enumerate", listed)
            go.set()  # the owner releases the lock and ends now, after the check read it
            owner.join(10)
            return listed()

        monkeypatch.setattr(threading, "enumerate", enumerate_once_the_owner_ended)
        with lock:  # contended: after its first slice the wait checks whether the owner ended
            assert threading.enumerate is listed  # it did check
    assert v.reports == []


@pytest.mark.timeout(60)
def test_waiting_for_a_kernel_lock_whose_owner_threading_does_not_know_waits_for_it():
    """An owner started with ``_thread.start_new_thread()`` is no thread of threading's, but it runs
    Python code: the wait is a wait, not a DeadlockError."""
    with pylockdep.validate(raise_on_report=False, stream=None) as v:
        lock = pylockdep.Mutex("held by a bare thread")
        taken, finish = threading.Event(), threading.Event()

        def owner() -> None:
            with lock:
                taken.set()
                finish.wait(20)

        _thread.start_new_thread(owner, ())
        assert taken.wait(20)
        threading.Timer(0.1, finish.set).start()
        with lock:  # waits until the owner lets go
            pass
    assert v.reports == []


LOCK_LEFT_BY_AN_ENDED_THREAD = """
    import threading, pylockdep
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        taker = threading.Thread(target=lock.acquire, name="taker")
        taker.start()
        taker.join()
        try:
            lock.acquire()
        except pylockdep.DeadlockError as exc:
            print(exc)
    print([r.kind for r in v.reports])
"""


def test_waiting_alone_for_a_lock_a_thread_that_ended_holds_raises_instead_of_hanging():
    """No thread is left that could release it (in a fresh interpreter: in this one, pytest-xdist's
    threads might); the thread that ended holding it is reported as validation ends."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOCK_LEFT_BY_AN_ENDED_THREAD)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("deadlock: MainThread/"), result.stderr
    assert ": taker/" in lines[0] and "which took it, ended without releasing it, and no other thread" in lines[0]
    assert lines[1:] == ["['lock_held_at_exit']"], result.stderr


@pytest.mark.timeout(60)
def test_waiting_for_an_rlock_whose_owner_ended_raises_instead_of_hanging():
    """No thread but its owner may release an RLock: one whose owner thread ended holding it can
    never come free, and a blocking wait for it raises (the end was reported); timed and
    non-blocking takes fail as in CPython."""
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        lock = threading.RLock()
        owner = threading.Thread(target=lock.acquire, name="owner")
        owner.start()
        owner.join()
        with pytest.raises(pylockdep.DeadlockError, match="its owner, thread .*, ended without releasing it"):
            lock.acquire()
        assert lock.acquire(timeout=0.05) is False
        assert lock.acquire(blocking=False) is False
    assert [r.kind for r in v.reports] == ["lock_held_at_exit"]


def test_ctrl_c_during_a_timed_acquire_leaves_the_lock_taken_by_its_caller_or_free(v):
    """A timed acquisition of a contended lock waits for it to come free, then takes it again as a
    validated trylock: a KeyboardInterrupt between the two never leaves the lock taken by nobody."""
    lock = threading.RLock()
    held = threading.Event()

    def holder():
        with lock:
            held.set()
            time.sleep(0.3)

    holding = threading.Thread(target=holder)
    holding.start()
    held.wait(20)
    threading.Timer(0.05, _thread.interrupt_main).start()  # pending until the wait returns
    try:
        lock.acquire(timeout=20)
    except KeyboardInterrupt:
        if lock._is_owned():  # raised once the acquisition was over: the caller has it
            lock.release()
    else:
        lock.release()  # the handler ran before the wait: nothing left to check
    holding.join()
    got: list[bool] = []  # the caller took nothing: another thread gets the lock once the holder is done

    def other():
        got.append(lock.acquire(timeout=20))
        lock.release()

    taker = threading.Thread(target=other)
    taker.start()
    taker.join()
    assert got == [True]
    assert v.reports == []


UNHASHABLE_PROGRAM = """
import asyncio, concurrent.futures, os, queue, signal, threading
a = threading.Lock()
b = threading.RLock()

class Box:
    def __init__(self):
        self.lock = threading.Lock()

def ab():
    with a, b:
        pass

def ba():
    with b:
        with a:
            pass

def work():
    with Box().lock:
        return 1

ab()
ba()
worker = threading.Thread(target=work)
worker.start()
worker.join()
with concurrent.futures.ThreadPoolExecutor(2) as pool:
    pool.submit(work).result()
q = queue.Queue()
q.put(1)
q.get()

async def step(lock):
    async with lock:
        await asyncio.sleep(0)

async def main():
    lock = asyncio.Lock()
    await asyncio.gather(*(asyncio.create_task(step(lock)) for _ in range(3)))

asyncio.run(main())

def handler(signum, frame):
    with b:
        pass

previous = signal.signal(signal.SIGUSR2, handler)
os.kill(os.getpid(), signal.SIGUSR2)
signal.signal(signal.SIGUSR2, previous)
"""


def _unhashable(code: types.CodeType) -> types.CodeType:
    consts = tuple(_unhashable(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_consts=(*consts, []))


def test_code_that_makes_and_takes_locks_is_never_hashed():
    """Hashing a code object hashes its contents: a long module body's costs 15 us on 3.11 and
    0.3 ms on 3.12, so tables keyed by code made 10,000 creation sites in one module body take
    5 s and 30 s.  Code whose constants cannot be hashed shows that none is: its locks, threads,
    pool, queue, asyncio tasks and signal handler are validated as any others, and the ABBA of its
    two functions is found."""
    code = _unhashable(compile(UNHASHABLE_PROGRAM, "unhashable.py", "exec"))
    with pytest.raises(TypeError, match="unhashable"):
        hash(code)
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        exec(code, {"__name__": "unhashable"})
    assert [(r.kind, r.classes) for r in v.reports] == [("circular", ("a@unhashable.py:3", "b@unhashable.py:4"))]
