"""Execution contexts: unbalanced context calls, and what each context changes for the checks."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from _waiting import wait_until_waiting

import pylockdep


def _hardirq_enable() -> None:
    with pylockdep.hardirq():
        pylockdep.local_irq_enable()


def _softirq_bh_enable() -> None:
    with pylockdep.softirq():
        pylockdep.local_bh_enable()


# call: (report kind, title, the line saying what is wrong)
UNBALANCED: dict[str, tuple[Callable[[], None], str, str, str]] = {
    "preempt_enable": (
        pylockdep.preempt_enable,
        "context_imbalance",
        "WARNING: unbalanced preempt_enable()",
        "but preemption is not disabled!",
    ),
    "local_bh_enable": (
        pylockdep.local_bh_enable,
        "context_imbalance",
        "WARNING: unbalanced local_bh_enable()",
        "but bottom halves are not disabled!",
    ),
    "local_bh_enable_in_softirq": (
        _softirq_bh_enable,
        "context_imbalance",
        "WARNING: unbalanced local_bh_enable()",
        "but bottom halves are not disabled!",
    ),
    "local_irq_enable_in_hardirq": (
        _hardirq_enable,
        "context_imbalance",
        "WARNING: local_irq_enable() in hardirq context",
        "but interrupts stay disabled until the hardirq handler returns!",
    ),
    # lockdep itself reports this one: releasing rcu_read_lock()'s map, which is not held.
    "rcu_read_unlock": (
        pylockdep.rcu_read_unlock,
        "bad_unlock_balance",
        "WARNING: bad unlock balance detected!",
        "but there are no more locks to release!",
    ),
}


@pytest.mark.parametrize("rt", [False, True], ids=["nort", "rt"])
@pytest.mark.parametrize("name", list(UNBALANCED))
def test_unbalanced_context_call_is_reported_and_changes_nothing(name: str, rt: bool) -> None:
    call, kind, title, detail = UNBALANCED[name]
    lock, mutex = pylockdep.SpinLock("ctx_lock"), pylockdep.Mutex("ctx_mutex")
    with pylockdep.validate(preempt_rt=rt, raise_on_report=False) as v:
        for _ in range(2):  # the same call site twice: reported once
            call()
        # The context is as it was: process context, preemptible, irqs and softirqs on.
        with lock:
            pass
        with mutex:
            pylockdep.might_sleep()
        with pylockdep.hardirq():
            pass
    (report,) = v.reports
    assert (report.kind, report.title) == (kind, title)
    assert report.classes == (("rcu_read_lock",) if kind == "bad_unlock_balance" else ())
    assert detail in report.text.splitlines()


def test_unbalanced_calls_in_a_thread_do_not_crash_it() -> None:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            for call, *_ in UNBALANCED.values():
                call()
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    with pylockdep.validate(raise_on_report=False) as v:
        t = threading.Thread(target=body, name="unbalanced")
        t.start()
        t.join(timeout=30)
    assert not t.is_alive() and errors == []
    assert sorted(r.kind for r in v.reports) == ["bad_unlock_balance"] + ["context_imbalance"] * 4
    assert all(r.threads[0].startswith("unbalanced/") for r in v.reports)


def test_local_irq_enable_in_hardirq_leaves_irqs_disabled() -> None:
    """A lock taken in the handler after the refused enable is still taken with irqs off: it is
    irq-safe only, with no clash."""
    lock = pylockdep.RawSpinLock("handler_lock")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq():
            pylockdep.local_irq_enable()
            with lock:
                pass
            pylockdep.might_sleep()
    assert [r.kind for r in v.reports] == ["context_imbalance", "sleep_in_atomic"]
    assert "in_atomic(): 1, irqs_disabled(): 1," in v.reports[1].text


def test_rwlock_readers_are_recursive_only_in_interrupt_context() -> None:
    """Queued rwlocks: a second read_lock() of one class is recursive locking in process context
    (a queued writer would block it), fine with bottom halves disabled or in an irq handler (a
    threaded one: rwlock_t is not valid in a true hard irq with raw-lock nesting checks)."""
    x1, x2 = (pylockdep.RWLock("rwlock_X") for _ in range(2))
    with pylockdep.validate(raise_on_report=False) as v:
        for context in (pylockdep.softirq, lambda: pylockdep.hardirq(threaded=True)):
            with context(), x1.read(), x2.read():
                pass
        pylockdep.local_bh_disable()
        with x1.read(), x2.read():
            pass
        pylockdep.local_bh_enable()
        assert v.reports == []
        with x1.read(), x2.read():
            pass
    (report,) = v.reports
    assert (report.kind, report.classes) == ("recursive", ("rwlock_X",))


def test_rt_threaded_handler_allows_spinlock_but_not_mutex() -> None:
    """On PREEMPT_RT a threaded handler is a thread with bottom halves disabled: a spinlock_t is
    fine in it, a mutex is an invalid wait context and sleeps inside an RCU read side."""
    spin, mutex = pylockdep.SpinLock("dev_lock"), pylockdep.Mutex("dev_mutex")
    with pylockdep.validate(preempt_rt=True, raise_on_report=False) as v:
        with pylockdep.hardirq(threaded=True), spin:
            pass
        assert v.reports == []
        with pylockdep.hardirq(threaded=True), mutex:
            pass
    assert [r.kind for r in v.reports] == ["sleep_in_atomic", "invalid_wait_context"]
    assert "context-{3:3}" in v.reports[1].text.splitlines()


@pytest.mark.parametrize("rt", [False, True], ids=["nort", "rt"])
def test_softirq_keeps_hard_irqs_enabled(rt: bool) -> None:
    """A lock taken in a softirq is softirq-safe and, since hard irqs stay on, hardirq-unsafe: taking
    it in a hard irq too is inconsistent."""
    lock = pylockdep.SpinLock("net_lock")
    with pylockdep.validate(preempt_rt=rt, raise_on_report=False) as v:
        with pylockdep.softirq(), lock:
            pass
        with pylockdep.hardirq(), lock:
            pass
    kinds = [r.kind for r in v.reports]
    assert "inconsistent_lock_state" in kinds
    report = v.reports[kinds.index("inconsistent_lock_state")]
    assert "inconsistent {HARDIRQ-ON-W} -> {IN-HARDIRQ-W} usage." in report.text


@pytest.mark.parametrize("form", ["irqsave", "bh", "nested"])
def test_a_lock_section_that_fails_to_take_its_lock_restores_the_context(form: str) -> None:
    lock = pylockdep.RawSpinLock("section")
    with pylockdep.validate(raise_on_report=False) as v:
        t = v.task()
        section = (lambda: lock.nested(1)) if form == "nested" else getattr(lock, form)
        with lock:  # held: taking it again can only wait for ever
            with pytest.raises(pylockdep.DeadlockError):
                with section():
                    pass
            assert (t.irqs_off, t.bh, t.preempt, t.spins) == (False, 0, 0, 1)
        assert not t.held and t.spins == 0
        with section() as taken:  # and the section still works afterwards
            assert taken is lock
            assert (t.irqs_off, t.bh) == ((form == "irqsave"), int(form == "bh"))
        assert (t.irqs_off, t.bh, t.held) == (False, 0, [])
    # A second subclass is another class: only the real wait, not the class graph, shows the deadlock.
    assert [r.kind for r in v.reports] == ([] if form == "nested" else ["recursive"])


# A with-block left without being entered (its __exit__ alone) is judged as the unlock call it
# stands for, in the context as it is: (make the block from the locks, the reports it gives).
UNENTERED: dict[str, tuple[Callable[[dict[str, Any]], Any], list[tuple[str, tuple[str, ...]]]]] = {
    "irqsave": (lambda locks: locks["spin"].irqsave(), [("bad_unlock_balance", ("unentered_spin",))]),
    "irq": (lambda locks: locks["spin"].irq(), [("bad_unlock_balance", ("unentered_spin",))]),
    "bh": (
        lambda locks: locks["spin"].bh(),
        [("bad_unlock_balance", ("unentered_spin",)), ("context_imbalance", ())],
    ),
    "nested": (lambda locks: locks["spin"].nested(1), [("bad_unlock_balance", ("unentered_spin",))]),
    "rwlock_read": (lambda locks: locks["rw"].read(), [("bad_unlock_balance", ("unentered_rw",))]),
    "rwsem_read": (lambda locks: locks["rwsem"].read(), [("bad_unlock_balance", ("unentered_rwsem",))]),
    "srcu_read": (lambda locks: locks["srcu"].read(), [("bad_unlock_balance", ("unentered_srcu",))]),
    "rcu_read": (lambda locks: pylockdep.rcu_read(), [("bad_unlock_balance", ("rcu_read_lock",))]),
    "irqs_disabled": (lambda locks: pylockdep.irqs_disabled(), []),
    "preempt_disabled": (lambda locks: pylockdep.preempt_disabled(), [("context_imbalance", ())]),
}


@pytest.mark.parametrize("form", list(UNENTERED))
def test_a_block_left_without_being_entered_is_judged_as_its_unlock_call(form: str) -> None:
    make, expected = UNENTERED[form]
    locks = {
        "spin": pylockdep.SpinLock("unentered_spin"),
        "rw": pylockdep.RWLock("unentered_rw"),
        "rwsem": pylockdep.RWSemaphore("unentered_rwsem"),
        "srcu": pylockdep.SRCU("unentered_srcu"),
    }
    with pylockdep.validate(raise_on_report=False) as v:
        t = v.task()
        make(locks).__exit__(None, None, None)
        assert (t.irqs_off, t.bh, t.preempt, t.held) == (False, 0, 0, [])
        assert [(r.kind, r.classes) for r in v.reports] == expected
        block = make(locks)
        with block:
            pass
        block.__exit__(None, None, None)  # left twice: judged again, at another line
        assert (t.irqs_off, t.bh, t.preempt, t.held) == (False, 0, 0, [])
        with locks["rwsem"]:  # a sleeping lock: the context is a process's again
            pylockdep.might_sleep()
    assert [(r.kind, r.classes) for r in v.reports] == expected * 2


def test_irqs_disabled_entered_inside_its_own_block_restores_each_entry() -> None:
    with pylockdep.validate() as v:
        t = v.task()
        block = pylockdep.irqs_disabled()
        with block:
            with block:
                assert t.irqs_off
            assert t.irqs_off  # the inner entry found them off
        assert not t.irqs_off


@pytest.mark.parametrize("threaded", ["x", 1, None])
def test_hardirq_threaded_must_be_a_bool(threaded: object) -> None:
    with pytest.raises(TypeError, match=rf"^hardirq\(\): threaded must be a bool, not {type(threaded).__name__}$"):
        pylockdep.hardirq(threaded=threaded)  # type: ignore[arg-type]


@pytest.mark.parametrize("handler", ["hardirq", "softirq"])
def test_a_handler_block_entered_while_running_or_left_unentered_is_refused(handler: str) -> None:
    with pylockdep.validate() as v:
        t = v.task()
        block = getattr(pylockdep, handler)()
        with pytest.raises(RuntimeError, match=rf"^{handler}\(\): this handler block was left without being entered$"):
            block.__exit__(None, None, None)
        with block:
            inside = (t.hardirq, t.softirq, t.irqs_off, t.ctx)
            with pytest.raises(RuntimeError, match=rf"^{handler}\(\): this handler block is already running$"):
                block.__enter__()
            assert (t.hardirq, t.softirq, t.irqs_off, t.ctx) == inside
        assert (t.hardirq, t.softirq, t.irqs_off) == (0, 0, False)
        with block:  # it runs again once it has ended
            assert (t.hardirq, t.softirq) == (int(handler == "hardirq"), int(handler == "softirq"))
        assert (t.hardirq, t.softirq, t.irqs_off) == (0, 0, False)
    assert v.reports == []


def test_irqsave_inside_irqs_off_leaves_them_off() -> None:
    lock = pylockdep.RawSpinLock("nested_irqsave")
    with pylockdep.validate() as v:
        t = v.task()
        with pylockdep.irqs_disabled():
            with lock.irqsave():
                assert t.irqs_off
            assert t.irqs_off  # restored to off, as local_irq_restore() does
        assert not t.irqs_off
        section = lock.irqsave()
        for _ in range(2):  # one section object, entered twice
            with section:
                assert t.irqs_off and t.held
            assert not t.irqs_off and not t.held


@pytest.mark.parametrize("shared", ["irqsave", "irqs_disabled"])
def test_one_irqsave_block_object_shared_by_threads_restores_what_each_entry_found(shared) -> None:
    """The kernel keeps spin_lock_irqsave()'s flags in the caller's frame.  A block object kept and
    entered by several threads (``self.guard = lock.irqsave()``) restores, at each exit, what that
    thread's entry found: A enters it with interrupts already off, B with them on while A is
    inside; A's exit leaves them off (it used to restore B's "on", the object's last save)."""
    lock = pylockdep.SpinLock("shared_guard")
    outer = pylockdep.SpinLock("shared_guard_outer")
    guard = lock.irqsave() if shared == "irqsave" else pylockdep.irqs_disabled()
    a_inside, b_entered, a_left = threading.Event(), threading.Event(), threading.Event()
    seen = {}
    with pylockdep.validate() as v:

        def a() -> None:
            t = v.task()
            with outer.irqsave():
                with guard:
                    a_inside.set()
                    if shared == "irqs_disabled":  # B stays inside until A has left
                        assert b_entered.wait(20)
                    else:  # B saves its state, then blocks on the lock A holds
                        wait_until_waiting(v, threads[1])
                seen["a, after the guard"] = t.irqs_off
                a_left.set()
            seen["a, after outer"] = t.irqs_off

        def b() -> None:
            t = v.task()
            assert a_inside.wait(20)
            with guard:
                b_entered.set()
                assert a_left.wait(20)
                seen["b, inside"] = t.irqs_off
            seen["b, after"] = t.irqs_off

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for thread in reversed(threads):  # B first: A waits for it to wait
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == {"a, after the guard": True, "a, after outer": False, "b, inside": True, "b, after": False}
        assert v.task().irq_saves in (None, [])
    assert v.reports == []


def test_irq_event_stamps_of_a_section_name_the_line_of_its_with_block() -> None:
    """``irqsave()`` and ``bh()`` stamp where interrupts and softirqs went off and on: the with
    statement, whether the block enters the section itself or contextlib does it for the block."""
    spin = pylockdep.SpinLock("stamped")
    code = test_irq_event_stamps_of_a_section_name_the_line_of_its_with_block.__code__
    with pylockdep.validate() as v:
        trace = v.task().irqtrace
        with spin.irqsave():
            line = sys._getframe().f_lineno
        assert (trace.hardirq_disable_site, trace.hardirq_enable_site) == ((code, line - 1), (code, line - 1))
        with spin.bh():
            line = sys._getframe().f_lineno
        assert (trace.softirq_disable_site, trace.softirq_enable_site) == ((code, line - 1), (code, line - 1))
        with contextlib.ExitStack() as stack:
            stack.enter_context(spin.irqsave())
            line = sys._getframe().f_lineno
        assert trace.hardirq_disable_site == (code, line - 1)
        assert trace.hardirq_enable_site[0] is code
