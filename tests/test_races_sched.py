"""The interleaving driver: exact replay, lock-aware choices, and clear failures instead of hangs."""

from __future__ import annotations

import random
import threading

import pytest

from kvm_model.races.sched import (
    ModelThreadError,
    RandomPolicy,
    Replay,
    ScheduleError,
    Scheduler,
    ScheduleTimeout,
)


def _two_counters(sched: Scheduler, log: list[str]) -> None:
    """Two threads of two steps each, logging which step ran."""
    for name in ("a", "b"):

        def body(name: str = name) -> None:
            for step in ("one", "two"):
                sched.point(step)
                log.append(f"{name}.{step}")

        sched.spawn(name, body)


def test_replay_runs_steps_in_the_scheduled_order() -> None:
    sched, log = Scheduler(), []
    _two_counters(sched, log)
    trace = sched.run(Replay(["b:one", "a", "a:two", "b:two"]))
    assert log == ["b.one", "a.one", "a.two", "b.two"]
    assert trace.schedule == ["b:one", "a:one", "a:two", "b:two"]


def test_leftover_steps_run_in_spawn_order_after_the_schedule() -> None:
    sched, log = Scheduler(), []
    _two_counters(sched, log)
    sched.run(Replay(["b"]))
    assert log == ["b.one", "a.one", "a.two", "b.two"]


def test_notes_are_kept_with_the_step_that_made_them() -> None:
    sched = Scheduler()

    def body() -> None:
        sched.note("before any point")
        sched.point("s")
        sched.note("inside s")

    sched.spawn("t", body)
    trace = sched.run(Replay([]))
    assert [(r.step, r.scheduled, r.notes) for r in trace.records] == [
        ("<start>", False, ["before any point"]),
        ("s", True, ["inside s"]),
    ]


def test_strict_replay_rejects_a_thread_at_another_step() -> None:
    sched = Scheduler()
    _two_counters(sched, [])
    with pytest.raises(ScheduleError, match=r"entry 1 'a:two': a is at step 'one', not 'two'"):
        sched.run(Replay(["a:two"]))


def test_strict_replay_rejects_a_finished_thread() -> None:
    sched = Scheduler()
    _two_counters(sched, [])
    with pytest.raises(ScheduleError, match=r"entry 3 'a': a has no pending step"):
        sched.run(Replay(["a", "a", "a"]))


def test_guided_replay_skips_entries_that_cannot_run() -> None:
    sched, log = Scheduler(), []
    _two_counters(sched, log)
    sched.run(Replay(["a:two", "a", "a", "a", "ghost", "b"], strict=False))
    assert log == ["a.one", "a.two", "b.one", "b.two"]


def test_a_thread_waiting_for_a_held_lock_is_not_runnable() -> None:
    sched, log = Scheduler(), []
    lock = sched.lock("mmu_lock")

    def holder() -> None:
        with lock:
            sched.point("inside")
            log.append("holder.inside")

    def waiter() -> None:
        with lock:
            log.append("waiter.locked")

    sched.spawn("holder", holder)
    sched.spawn("waiter", waiter)
    with pytest.raises(ScheduleError, match="waiter is waiting at 'mmu_lock' for a lock held by holder"):
        sched.run(Replay(["holder:mmu_lock", "waiter:mmu_lock"]))


def _exclusive_run(seed: int) -> None:
    """Three threads each hold one lock across a point; the holder must be alone inside."""
    sched, inside = Scheduler(), []
    lock = sched.lock("l")

    def body(name: str) -> None:
        with lock:
            inside.append(name)
            sched.point("critical")
            assert inside == [name]
            inside.remove(name)

    for name in ("x", "y", "z"):
        sched.spawn(name, lambda name=name: body(name))
    sched.run(RandomPolicy(random.Random(seed)))


def test_random_schedules_respect_locks() -> None:
    for seed in range(30):
        _exclusive_run(seed)


def test_deadlock_is_reported_not_waited_for() -> None:
    sched = Scheduler()
    first, second = sched.lock("first"), sched.lock("second")

    def ab() -> None:
        with first, second:
            pass

    def ba() -> None:
        with second, first:
            pass

    sched.spawn("ab", ab)
    sched.spawn("ba", ba)
    with pytest.raises(ScheduleError, match="deadlock: every live thread waits for another"):
        sched.run(Replay(["ab:first", "ba:second"]))


def test_a_step_that_never_ends_times_out() -> None:
    sched, release = Scheduler(timeout=0.2), threading.Event()

    def stuck() -> None:
        sched.point("stuck")
        release.wait(10)

    sched.spawn("stuck", stuck)
    sched.spawn("other", lambda: sched.point("other"))
    try:
        with pytest.raises(ScheduleTimeout, match=r"stuck neither reached its next point nor ended"):
            sched.run(Replay(["stuck"]))
    finally:
        release.set()


def test_an_exception_in_a_model_thread_reaches_the_caller() -> None:
    sched = Scheduler()

    def boom() -> None:
        sched.point("boom")
        raise ValueError("model bug")

    sched.spawn("boom", boom)
    sched.spawn("other", lambda: sched.point("waits"))
    with pytest.raises(ModelThreadError, match="boom raised ValueError") as info:
        sched.run(Replay([]))
    assert isinstance(info.value.__cause__, ValueError)


def test_ending_with_a_lock_held_is_a_model_error() -> None:
    sched = Scheduler()
    lock = sched.lock("l")
    sched.spawn("leaky", lock.__enter__)
    with pytest.raises(ModelThreadError, match="leaky ended holding l"):
        sched.run(Replay([]))


def test_point_outside_a_model_thread_is_refused() -> None:
    with pytest.raises(RuntimeError, match="only be called from a thread started by Scheduler.run"):
        Scheduler().point("nowhere")
