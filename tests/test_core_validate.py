"""The validation scope: validate(), the default validator, per-thread checks, bad input and limits."""

from __future__ import annotations

import _thread
import io
import subprocess
import sys
import textwrap
import threading

import pytest

import pylockdep
from pylockdep import Mutex

CIRCULAR = "WARNING: possible circular locking dependency detected"


def mutexes(*names: str) -> list[Mutex]:
    """One Mutex per name, all made at this line: same name, same class."""
    return [Mutex(name) for name in names]


def abba(a: Mutex, b: Mutex) -> None:
    with a, b:
        pass
    with b, a:
        pass


# -- validate() -----------------------------------------------------------------------------------


def test_validate_raises_lockdep_violation_with_every_splat():
    a, b, c = mutexes("A", "B", "C")
    c1, c2 = mutexes("C", "C")
    with pytest.raises(pylockdep.LockdepViolation) as info:
        with pylockdep.validate() as v:
            abba(a, b)
            with c1, c2:
                pass
    err = info.value
    assert isinstance(err, AssertionError)
    assert [r.kind for r in err.reports] == ["circular", "recursive"]
    assert err.reports == v.reports
    for report in err.reports:
        assert report.text in str(err)


def test_validate_without_reports_does_not_raise():
    a, b = mutexes("A", "B")
    with pylockdep.validate() as v:
        with a, b:
            pass
    assert v.reports == []


def test_validate_does_not_mask_the_blocks_own_exception():
    a, b = mutexes("A", "B")
    with pytest.raises(KeyError):
        with pylockdep.validate():
            abba(a, b)
            raise KeyError("mine")


@pytest.mark.parametrize("raise_on_report", [True, False])
def test_exiting_a_validate_block_more_times_than_it_was_entered_is_a_runtime_error(raise_on_report: bool) -> None:
    """A second __exit__ was accepted silently (and gave the verdict again)."""
    a, b = mutexes("A", "B")
    block = pylockdep.validate(raise_on_report=raise_on_report)
    with pytest.raises(RuntimeError, match=r"^validate\(\) block exited more times than it was entered$"):
        block.__exit__(None, None, None)  # never entered
    outer = pylockdep.current()
    v = block.__enter__()
    block.__enter__()  # the same block twice: two exits are due
    abba(a, b)
    for _ in range(2):  # each exit gives the verdict
        if raise_on_report:
            with pytest.raises(pylockdep.LockdepViolation):
                block.__exit__(None, None, None)
        else:
            block.__exit__(None, None, None)
    assert pylockdep.current() is outer
    with pytest.raises(RuntimeError, match="exited more times than it was entered"):
        block.__exit__(None, None, None)
    assert pylockdep.current() is outer and [r.kind for r in v.reports] == ["circular"]


def test_nested_validate_uses_a_fresh_graph_and_restores_the_outer_one():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as outer:
        with a, b:
            pass
        with pylockdep.validate(raise_on_report=False) as inner:
            assert pylockdep.current() is inner
            with b, a:  # A -> B is the outer graph's
                pass
        assert pylockdep.current() is outer
        with b, a:
            pass
    assert inner.reports == []
    assert [r.kind for r in outer.reports] == ["circular"]


def test_releases_of_locks_taken_before_validate_are_ignored():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as before:
        a.acquire()
        with pylockdep.validate(raise_on_report=False) as v:
            with b:  # A is not held as far as this validator knows: no A -> B
                pass
            a.release()
            with b, a:
                pass
    assert v.reports == []
    assert before.reports == []


def test_threads_started_inside_validate_are_validated():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        for first, second in ((a, b), (b, a)):

            def run(x: Mutex = first, y: Mutex = second) -> None:
                with x, y:
                    pass

            worker = threading.Thread(target=run)
            worker.start()
            worker.join()
    assert [r.kind for r in v.reports] == ["circular"]


def test_validate_stream_receives_each_splat():
    a, b = mutexes("A", "B")
    stream = io.StringIO()
    with pylockdep.validate(raise_on_report=False, stream=stream) as v:
        abba(a, b)
        abba(a, b)
    assert stream.getvalue().count(CIRCULAR) == 1
    assert v.reports[0].text in stream.getvalue()


def test_a_stream_with_write_alone_receives_each_splat():
    """A stream needs ``write()`` only, as the option's check says."""

    class Lines:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

    a, b = mutexes("A", "B")
    stream = Lines()
    with pylockdep.validate(raise_on_report=False, stream=stream) as v:
        abba(a, b)
    assert stream.text.count(CIRCULAR) == 1 and v.delivery_failures == {}


# -- the default validator ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_default_validator_prints_each_splat_once_to_stderr():
    script = textwrap.dedent("""
        import pylockdep
        a, b = pylockdep.Mutex("A"), pylockdep.Mutex("B")
        for _ in range(3):
            with a, b:
                pass
            with b, a:
                pass
        print(len(pylockdep.current().reports))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert done.stderr.count(CIRCULAR) == 1
    assert "  A --> B" not in done.stderr  # two classes: no chain block


@pytest.mark.lockdep_off  # under pytest --lockdep: this test is about the process-wide default validator
def test_configure_sets_the_default_validators_stream():
    a, b = mutexes("configure_A", "configure_B")
    default = pylockdep.current()
    old_stream = default.stream
    stream = io.StringIO()
    try:
        assert pylockdep.configure(stream=stream) is default
        abba(a, b)
    finally:
        pylockdep.configure(stream=old_stream)
    assert stream.getvalue().count(CIRCULAR) == 1
    assert "configure_A" in stream.getvalue()


# -- per-thread checks ----------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_thread_ending_with_a_lock_held_is_reported():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        worker = threading.Thread(target=lambda: (a.acquire(), b.acquire()), name="holder")
        worker.start()
        worker.join()
    assert [r.kind for r in v.reports] == ["lock_held_at_exit"]
    report = v.reports[0]
    assert report.title == f"WARNING: holder/{worker.ident} still has locks held!"
    assert report.classes == ("A", "B")
    assert f"2 locks held by holder/{worker.ident}:" in report.text
    assert report.threads == (f"holder/{worker.ident}",)  # was thread-<ident>: a holder made at its end


@pytest.mark.timeout(20)
def test_a_mutex_released_by_a_thief_is_one_bad_unlock_and_its_owners_release_no_echo():
    """The thief's release is the fault (the kernel's bad unlock balance of a mutex released by
    another task); the owner's own release of the lock, freed under it, is that fault again, not a
    second report.  A release after that is a double unlock of its own."""
    m, n = mutexes("M", "N")
    with pylockdep.validate(raise_on_report=False) as v:
        m.acquire()
        thief = threading.Thread(target=m.release, name="thief")
        thief.start()
        thief.join()
        with n:  # the owner's next lock operation forgets M: no M -> N order
            pass
        m.release()
        assert [(r.kind, r.threads) for r in v.reports] == [("bad_unlock_balance", (f"thief/{thief.ident}",))]
        m.release()
    assert [r.kind for r in v.reports] == ["bad_unlock_balance"] * 2
    assert v.reports[1].classes == ("M",) and "MainThread" in v.reports[1].threads[0]
    assert not m.locked() and list(v.graph.edges()) == []


@pytest.mark.timeout(20)
def test_thread_ending_with_no_lock_held_is_not_reported():
    (a,) = mutexes("A")
    with pylockdep.validate(raise_on_report=False) as v:
        worker = threading.Thread(target=lambda: a.acquire() and a.release())
        worker.start()
        worker.join()
    assert v.reports == []


@pytest.mark.timeout(60)
def test_threads_that_ended_leave_no_holder_behind():
    """A thread's end is handled in the thread, after its local storage is gone: the check at
    its end made it a new holder there, never forgotten, so every thread a program started
    stayed in the validator's tasks (and each wait's deadlock search walked them all)."""
    (a,) = mutexes("A")
    with pylockdep.validate(raise_on_report=False) as v:
        baseline = len(v.tasks)
        for _ in range(50):
            worker = threading.Thread(target=lambda: a.acquire() and a.release())
            worker.start()
            worker.join()
        assert len(v.tasks) == baseline
    assert v.reports == []


def test_lockdep_assert_held():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        with a:
            pylockdep.lockdep_assert_held(a)
            pylockdep.lockdep_assert_held(b)
    assert [r.kind for r in v.reports] == ["assert_held"]
    assert v.reports[0].title == "WARNING: lockdep_assert_held() failed"
    assert v.reports[0].classes == ("B",)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [123, None, b"A", ""])
def test_lock_name_must_be_a_non_empty_str(name):
    with pytest.raises(TypeError, match="name"):
        Mutex(name)


def test_lock_key_must_be_hashable():
    with pytest.raises(TypeError, match=r"^Mutex\(\): key must be hashable"):
        Mutex("A", key=["unhashable"])


_LOCK_TYPES = ["RawSpinLock", "SpinLock", "Mutex", "RWLock", "RWSemaphore", "SRCU"]


@pytest.mark.parametrize("type_name", _LOCK_TYPES)
def test_wrong_arguments_to_a_lock_type_name_that_type(type_name):
    lock_type = getattr(pylockdep, type_name)
    calls = [
        ((), {}, "missing 1 required positional argument: 'name'"),
        (("A", "B"), {}, "takes 2 positional arguments but 3 were given"),
        (("A",), {"bogus": 1}, "got an unexpected keyword argument 'bogus'"),
    ]
    for _ in range(2):  # the second time from a site that made a lock before (the C constructor's case)
        lock_type("A")
        for args, kwargs, wrong in calls:
            with pytest.raises(TypeError) as caught:
                lock_type(*args, **kwargs)
            assert str(caught.value) == f"{type_name}.__init__() {wrong}"
    with pytest.raises(TypeError, match=rf"^{type_name}\(\) needs a non-empty name"):
        lock_type(7)


# A lock pylockdep does not know, nothing like a lock, a lock type rather than a lock.
@pytest.mark.parametrize("not_a_lock", [_thread.allocate_lock(), None, Mutex], ids=["plain", "None", "type"])
def test_assert_held_on_a_non_lock_is_a_type_error(not_a_lock):
    with pylockdep.validate(raise_on_report=False) as v:
        with pytest.raises(TypeError, match=r"^lockdep_assert_held\(\) needs a pylockdep lock, not "):
            pylockdep.lockdep_assert_held(not_a_lock)
    assert v.reports == []


@pytest.mark.parametrize(
    ("thread", "arguments", "error", "wrong"),
    [
        (None, {"pid": 1}, TypeError, r"identify_thread\(\) needs a threading.Thread, not NoneType"),
        ("me", {"pid": "1"}, TypeError, "pid must be an int, not str"),
        ("me", {"pid": -1}, ValueError, "pid must not be negative, not -1"),
        ("me", {"pid": 1, "cpu": 1.0}, TypeError, "cpu must be an int, not float"),
        ("me", {"pid": 1, "kthread": 1}, TypeError, "kthread must be True or False, not 1"),
        ("me", {"pid": 1, "entry": "main"}, TypeError, "entry must be a function or None, not 'main'"),
    ],
)
def test_identify_thread_refuses_a_wrong_argument_and_changes_nothing(thread, arguments, error, wrong):
    me = threading.Thread(target=lambda: None)
    with pytest.raises(error, match=wrong):
        pylockdep.identify_thread(me if thread == "me" else thread, **arguments)
    assert pylockdep.identity_of(me) is None


@pytest.mark.parametrize("option", ["max_classes", "max_dependencies", "max_lock_depth"])
@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_limits_must_be_positive_ints(option, value):
    with pytest.raises(ValueError, match=option):
        pylockdep.validate(**{option: value})


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("max_classes", "x", ValueError),
        ("max_dependencies", 2.0, ValueError),
        ("max_lock_depth", -5, ValueError),
        ("max_lock_depth", True, ValueError),
        ("preempt_rt", "yes", TypeError),
        ("prove_raw_lock_nesting", 1, TypeError),
        ("stream", "stderr", TypeError),
    ],
)
def test_configure_rejects_a_wrong_option_at_the_call_and_changes_nothing(option, value, error):
    default = pylockdep.configure()
    before, depth = default.options, default.max_lock_depth
    with pytest.raises(error, match=option):
        pylockdep.configure(**{option: value})
    assert default.options == before
    assert default.graph.max_classes == before.max_classes
    assert default.max_lock_depth == depth


@pytest.mark.parametrize("make", [pylockdep.validate, pylockdep.Validator, pylockdep.configure])
def test_an_unknown_option_is_a_type_error_naming_it(make):
    with pytest.raises(TypeError, match="max_lock_dept"):
        make(max_lock_dept=4)


@pytest.mark.parametrize("make", [pylockdep.validate, pylockdep.Validator])
@pytest.mark.parametrize("options", [5, "preempt_rt", {"preempt_rt": True}])
def test_options_that_are_not_an_options_object_are_a_type_error(make, options):
    """validate(5) failed with AttributeError ('int' object has no attribute 'replace')."""
    with pytest.raises(TypeError, match=f"^options must be a pylockdep.Options, not {type(options).__name__}$"):
        make(options)


def test_configure_changes_only_the_options_given_and_validate_takes_an_options_object():
    default = pylockdep.configure()
    before = default.options
    try:
        assert pylockdep.configure(max_classes=500).options == before.replace(max_classes=500)
        assert default.graph.max_classes == 500
        assert pylockdep.configure(max_classes=None).options.max_classes == 500  # None: unchanged
    finally:
        pylockdep.configure(max_classes=before.max_classes or 10**9)
        default.apply(before)
    options = pylockdep.Options(raise_on_report=False, max_lock_depth=3)
    with pylockdep.validate(options, preempt_rt=True) as v:
        assert v.options == options.replace(preempt_rt=True)
        assert (v.max_lock_depth, v.preempt_rt, v.nesting, v.raise_on_report) == (3, True, True, False)


# -- limits ---------------------------------------------------------------------------------------


def _only_limit_report(v: pylockdep.Validator, message: str) -> pylockdep.Report:
    assert [r.kind for r in v.reports] == ["limit_exceeded"], [r.text for r in v.reports]
    report = v.reports[0]
    assert report.title == message
    assert report.text.startswith(f"{message}\nturning off the locking correctness validator.")
    return report


def test_a_lock_depth_limit_of_48_reports_and_stops_validation_but_locks_keep_working():
    # No limit by default (API.md); the kernel's MAX_LOCK_DEPTH, when asked for, behaves as there.
    locks = [Mutex(f"L{i}") for i in range(60)]
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False, max_lock_depth=48) as v:
        for lock in locks[:47]:
            lock.acquire()
        assert v.reports == []
        locks[47].acquire()
        report = _only_limit_report(v, "BUG: MAX_LOCK_DEPTH too low!")
        assert "depth: 48  max: 48!" in report.text
        assert "48 locks held by" in report.text
        assert "INFO: lockdep is turned off." in report.text
        for lock in locks[48:]:
            lock.acquire()
        for lock in reversed(locks):
            lock.release()
        assert not any(lock.locked() for lock in locks)
        abba(a, b)  # validation is off: no verdict at all rather than a wrong one
    assert len(v.reports) == 1


def test_lock_depth_limit_is_configurable():
    locks = [Mutex(f"L{i}") for i in range(3)]
    with pylockdep.validate(raise_on_report=False, max_lock_depth=3) as v:
        for lock in locks:
            lock.acquire()
        for lock in reversed(locks):
            lock.release()
    report = _only_limit_report(v, "BUG: MAX_LOCK_DEPTH too low!")
    assert "depth: 3  max: 3!" in report.text


def test_max_classes_limit_stops_validation():
    a, b, c, d = mutexes("A", "B", "C", "D")
    with pylockdep.validate(raise_on_report=False, max_classes=2) as v:
        with a, b:
            pass
        assert v.reports == []
        with c:
            pass
        abba(a, d)
        abba(a, b)
    _only_limit_report(v, "BUG: MAX_LOCKDEP_KEYS too low!")


def test_the_classes_limit_met_making_a_lock_is_printed():
    """The limit met registering a class, outside any check: the report still reaches the stream."""
    out = io.StringIO()
    with pylockdep.validate(raise_on_report=False, stream=out, max_classes=1) as v:
        a, b = mutexes("A", "B")
        with a, b:
            pass
    assert [r.kind for r in v.reports] == ["limit_exceeded"]
    assert "BUG: MAX_LOCKDEP_KEYS too low!" in out.getvalue()


def test_max_dependencies_limit_stops_validation():
    a, b, c = mutexes("A", "B", "C")
    with pylockdep.validate(raise_on_report=False, max_dependencies=1) as v:
        with a, b:
            pass
        with b, c:
            pass
        abba(a, b)
    _only_limit_report(v, "BUG: MAX_LOCKDEP_ENTRIES too low!")


def test_limit_report_raises_from_validate():
    a, b, c = mutexes("A", "B", "C")
    with pytest.raises(pylockdep.LockdepViolation, match="MAX_LOCKDEP_KEYS too low"):
        with pylockdep.validate(max_classes=1):
            with a, b:
                pass
