"""asyncio's locks under validation: the task is the holder (specifications of each rule).

Every test runs its program under a fresh validator with instrumentation installed, so
``asyncio.Lock()`` and friends are the validated types and every task step runs with its holder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import dataclasses
import gc
import pickle
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from _waiting import freed_without_the_collector, run_alone

import pylockdep
from pylockdep import _asyncio, _classes, _waits
from pylockdep._held import H_CLASS, H_CTX, H_LOCK, H_PREV_KEY, chain_key, held_site
from pylockdep.cli import REPORT_STATUS

pytestmark = pytest.mark.timeout(60)


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> list[pylockdep.Report]:
    """Run ``main()`` in a new event loop, validated and instrumented; the reports it made."""
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        asyncio.run(main())
    return v.reports


def asyncio_run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """What ``main()`` returns, run as :func:`run` runs it; it must make no report."""
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        result = asyncio.run(main())
    assert v.reports == []
    return result


def kinds(reports: list[pylockdep.Report]) -> list[str]:
    return [r.kind for r in reports]


# -- instrumentation -------------------------------------------------------------------------


def test_instrumentation_makes_the_validated_types_and_puts_cpythons_back():
    plain = asyncio.Lock
    with pylockdep.instrument_threading():
        assert asyncio.Lock is _asyncio.Lock and asyncio.locks.Lock is _asyncio.Lock
        for name in ("Condition", "Semaphore", "BoundedSemaphore", "Event"):
            made = getattr(asyncio, name)()
            assert type(made) is getattr(_asyncio, name)
            assert isinstance(made, getattr(_asyncio, name).__mro__[1])  # CPython's own class
        assert asyncio.run_coroutine_threadsafe is _asyncio.run_coroutine_threadsafe
        assert asyncio.shield is _asyncio.shield and asyncio.tasks.shield is _asyncio.shield
    assert asyncio.Lock is plain and asyncio.events.Handle._run is _asyncio._plain_run
    assert asyncio.run_coroutine_threadsafe is _asyncio._plain_run_coroutine_threadsafe
    assert asyncio.shield is _asyncio._plain_shield and asyncio.tasks.shield is _asyncio._plain_shield


def test_the_general_name_instrument_is_the_same_context_manager():
    assert pylockdep.instrument is pylockdep.instrument_threading


def test_repr_and_locked_have_cpythons_shape():
    async def main():
        lock = asyncio.Lock()
        assert lock.locked() is False
        assert repr(lock).endswith(" [unlocked]>") and repr(lock).startswith("<pylockdep._asyncio.Lock object at 0x")
        async with lock:
            assert lock.locked() is True
            assert repr(lock).endswith(" [locked]>")
        sem = asyncio.BoundedSemaphore(2)
        assert repr(sem).endswith(" [unlocked, value:2]>")

    assert run(main) == []


def test_asyncio_imported_after_install_is_instrumented(pytester: pytest.Pytester):
    """``pylockdep run`` installs before the program imports asyncio: the import is hooked."""
    pytester.makepyfile(
        prog="""
        import sys
        assert "asyncio" not in sys.modules
        import asyncio
        print(type(asyncio.Lock()).__module__)
        """
    )
    result = pytester.run(sys.executable, "-m", "pylockdep", "run", "prog.py")
    assert result.ret == 0, result.stderr.str()
    assert result.stdout.lines == ["pylockdep._asyncio"]


# -- a chain already validated: the fast path ----------------------------------------------------


def validated_locks(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.Lock]:
    """The list to which every asyncio Lock that goes through validation (``_take``) is appended."""
    took: list[asyncio.Lock] = []
    plain_take = _asyncio.Lock._take

    def take(self: asyncio.Lock, frame: Any) -> Any:
        took.append(self)
        return plain_take(self, frame)

    monkeypatch.setattr(_asyncio.Lock, "_take", take)
    return took


def test_locks_on_a_known_chain_are_held_as_when_the_chain_was_new(monkeypatch: pytest.MonkeyPatch):
    """The second time round both chains are known: neither lock goes through validation, and the
    task's stack and chain key are what validating them made the first time."""
    took = validated_locks(monkeypatch)
    seen: list[tuple[list[tuple[Any, ...]], int, list[asyncio.Lock]]] = []

    async def main():
        outer = asyncio.Lock()
        inner = asyncio.Lock()  # of another class: a chain of one class twice is judged every time
        t = _asyncio._current_holder(pylockdep.current())
        below, key_below = t.held[:], t.key  # the task's own completion map
        for _ in range(2):
            async with outer:
                async with inner:
                    seen.append(([tuple(entry) for entry in t.held[len(below) :]], t.key, took[:]))
                    took.clear()
            assert t.held == below and t.key == key_below
        return key_below

    key_below = asyncio_run(main)
    (held, key, took_first), (held_again, key_again, took_again) = seen
    assert len(took_first) == 2 and took_again == []
    assert held_again == held and key_again == key
    assert held[0][H_PREV_KEY] == key_below
    assert held[1][H_PREV_KEY] == chain_key(key_below, held[0][H_CTX], held[0][H_CLASS].variants[0])
    assert key == chain_key(held[1][H_PREV_KEY], held[1][H_CTX], held[1][H_CLASS].variants[0])


def test_a_lock_taken_on_two_known_chains_in_turn_gets_each_chains_key():
    """Taken alone, then under another lock, round after round: each time the key is the one
    chain_key() gives for the stack below it (the fast path's memo of its last key is not reused
    for another stack)."""

    async def main():
        outer = asyncio.Lock()
        inner = asyncio.Lock()
        t = _asyncio._current_holder(pylockdep.current())
        key_below = t.key
        for _ in range(3):
            async with inner:
                (alone,) = t.held[-1:]
                assert t.key == chain_key(key_below, alone[H_CTX], alone[H_CLASS].variants[0])
            async with outer:
                key_outer = t.key
                async with inner:
                    (nested,) = t.held[-1:]
                    assert nested[H_PREV_KEY] == key_outer != key_below
                    assert t.key == chain_key(key_outer, nested[H_CTX], nested[H_CLASS].variants[0])

    asyncio_run(main)


def test_a_condition_entered_on_a_known_chain_is_sited_at_the_async_with(monkeypatch: pytest.MonkeyPatch):
    """``async with cond`` takes the lock from asyncio's ``__aenter__``: the held entry names the
    line of the ``async with``, the first time (validated) and once the chain is known (the lock is
    not validated again)."""
    took = validated_locks(monkeypatch)
    lines: list[int] = []

    async def main():
        cond = asyncio.Condition()
        t = _asyncio._current_holder(pylockdep.current())
        for _ in range(3):
            took.clear()
            async with cond:
                entry = t.held[-1]  # above the task's own map
                assert entry[H_LOCK] is cond._lock
                lines.append(held_site(entry)[1])

    asyncio_run(main)
    assert lines == [line_of(main, "async with cond:")] * 3
    assert took == []


def test_a_condition_lock_retaken_by_wait_on_a_known_chain_is_sited_at_the_wait():
    """``Condition.wait()`` takes its lock back from inside asyncio: the held entry names the line
    that awaited ``wait()``, every time round."""
    lines: list[int] = []

    async def main():
        cond = asyncio.Condition()
        v = pylockdep.current()
        for _ in range(2):
            async with cond:
                asyncio.get_running_loop().call_soon(notify, cond)
                await cond.wait()
                entry = _asyncio._current_holder(v).held[-1]  # above the task's own map
                assert entry[H_LOCK] is cond._lock
                lines.append(held_site(entry)[1])

    def notify(cond: asyncio.Condition) -> None:
        asyncio.ensure_future(notify_under(cond))

    async def notify_under(cond: asyncio.Condition) -> None:
        async with cond:
            cond.notify()

    assert run(main) == []
    assert lines == [line_of(main, "await cond.wait()")] * 2


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_an_eager_tasks_first_step_holds_a_lock_on_a_known_chain_itself():
    """An eager task's first step runs inside its creator's step, whose holder is still in place:
    the lock it takes on a chain the creator validated is the eager task's, not its creator's."""

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        lock, stop = asyncio.Lock(), asyncio.Event()
        v = pylockdep.current()

        async def child():
            async with lock:
                await stop.wait()

        async with lock:  # the chain of this lock alone is known from here on
            pass
        task = asyncio.create_task(child())
        assert lock.locked()  # its first step took the lock, inside create_task()
        assert lock._owner is v.async_holders[id(task)]
        assert all(entry[H_LOCK] is not lock for entry in _asyncio._current_holder(v).held)
        stop.set()
        await task

    assert run(main) == []


# -- circular ----------------------------------------------------------------------------------


def test_two_tasks_taking_two_locks_in_both_orders_is_circular():
    async def main():
        a = asyncio.Lock()
        b = asyncio.Lock()

        async def ab():
            async with a:
                async with b:
                    await asyncio.sleep(0)

        async def ba():
            async with b:
                async with a:
                    pass

        await asyncio.create_task(ab(), name="ab")
        await asyncio.create_task(ba(), name="ba")  # never overlaps with ab: no hang, still a report

    reports = run(main)
    assert kinds(reports) == ["circular"]
    text = reports[0].text
    assert any(line.startswith("ba/") and line.endswith(" is trying to acquire lock:") for line in text.splitlines())
    assert sorted(reports[0].classes) == sorted(c for c in reports[0].classes if c.startswith("Lock@test_asyncio.py:"))
    assert "[thread ab/" in text  # the earlier dependency was made by task ab


def test_a_cycle_through_a_threading_lock_and_an_asyncio_lock_is_found():
    async def main():
        alock = asyncio.Lock()
        tlock = threading.Lock()

        async def first():
            async with alock:
                with tlock:
                    pass

        async def second():
            with tlock:
                async with alock:  # free: taking it does not suspend, so tlock is not held across a suspension
                    pass

        await asyncio.create_task(first())
        await asyncio.create_task(second())

    reports = run(main)
    assert kinds(reports) == ["circular"]
    assert sorted(c.split("@")[0] for c in reports[0].classes) == ["Lock", "Lock"]
    assert len(set(reports[0].classes)) == 2


class _Connection:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()


class _Tunnel(_Connection):
    """Forwards to another connection under its own lock."""


def test_asyncio_locks_made_for_self_are_named_and_classed_per_type_of_self():
    """As for threading's locks: a tunnel holding its lock while it sends on a plain connection, and
    a connection that takes a shared lock before sending, make no cycle; two tunnels would."""

    async def main():
        shared = asyncio.Lock()
        tunnel, plain, other_tunnel = _Tunnel(), _Connection(), _Tunnel()
        async with tunnel.lock, shared:
            pass
        async with shared, plain.lock:
            pass
        line = _Connection.__init__.__code__.co_firstlineno + 1
        assert [c.lock.name for c in (tunnel, plain)] == [
            f"_Tunnel.lock@test_asyncio.py:{line}",
            f"_Connection.lock@test_asyncio.py:{line}",
        ]
        assert other_tunnel.lock._key is tunnel.lock._key and plain.lock._key is not tunnel.lock._key
        assert pylockdep.current().reports == []  # a _Tunnel's lock is never a _Connection's
        async with shared, other_tunnel.lock:
            pass

    reports = run(main)
    assert kinds(reports) == ["circular"]
    assert all(name.startswith(("_Tunnel.lock@", "Lock@")) for name in reports[0].classes)


# -- same-class nesting, judged per instance as for threading's locks ---------------------------


def test_two_locks_of_one_site_nested_in_one_order_are_clean():
    async def main():
        outer, inner = [asyncio.Lock() for _ in range(2)]  # one creation site: one class
        conds = [asyncio.Condition() for _ in range(2)]

        async def nest():
            async with outer, inner:
                await asyncio.sleep(0)
            async with conds[0], conds[1]:
                pass

        await asyncio.gather(*(nest() for _ in range(3)))

    assert run(main) == []


def test_two_locks_of_one_site_nested_in_both_orders_are_circular_naming_both():
    async def main():
        a, b = [asyncio.Lock() for _ in range(2)]

        async def nest(first, second):
            async with first, second:
                pass

        await asyncio.create_task(nest(a, b))
        await asyncio.create_task(nest(b, a))
        return a, b

    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        a, b = asyncio.run(main())
    (report,) = v.reports
    line = test_two_locks_of_one_site_nested_in_both_orders_are_circular_naming_both.__code__.co_firstlineno + 2
    assert report.kind == "circular"
    assert report.classes == (f"Lock@test_asyncio.py:{line}",) * 2
    assert f"{id(a):016x}" in report.text and f"{id(b):016x}" in report.text


def test_set_class_names_an_asyncio_lock_as_a_python_lock_with_its_site():
    async def main():
        lock = asyncio.Lock()
        pylockdep.set_class(lock, "Cache.lock")
        return lock._key.name

    line = test_set_class_names_an_asyncio_lock_as_a_python_lock_with_its_site.__code__.co_firstlineno + 3
    with pylockdep.validate(raise_on_report=False), pylockdep.instrument_threading():
        assert asyncio.run(main()) == f"Cache.lock@test_asyncio.py:{line}"


@dataclasses.dataclass
class _Holder:
    """Something a program copies or pickles, that holds asyncio's primitives."""

    lock: Any
    queue: Any


def test_asyncio_locks_and_queues_copy_and_pickle_as_cpythons_do():
    """CPython's ``asyncio.Lock`` and ``asyncio.Queue`` are plain objects: a deep copy and a pickle
    of what holds them work.  A copied lock is of its original's class; a copied queue is followed,
    with a map of its own of its original's class."""
    with pylockdep.validate(raise_on_report=False, stream=None), pylockdep.instrument_threading():
        held = _Holder(asyncio.Lock(), asyncio.Queue())
        held.queue.put_nowait(1)
        for copied in (copy.deepcopy(held), pickle.loads(pickle.dumps(held))):
            assert type(copied.lock) is type(held.lock) and copied.lock is not held.lock
            assert copied.lock._key is held.lock._key and not copied.lock.locked()
            assert copied.queue.get_nowait() == 1
            original, mine = getattr(held.queue, _waits._MAP), getattr(copied.queue, _waits._MAP)
            assert mine is not original and mine._key is original._key
        assert copy.copy(held.lock)._key is held.lock._key

        async def copy_held() -> list[bool]:
            async with held.lock:  # copied held, as CPython copies it: locked, with no holder here
                return [c.locked() for c in (copy.deepcopy(held.lock), pickle.loads(pickle.dumps(held.lock)))]

        assert asyncio.run(copy_held()) == [True, True]


def test_a_key_pickled_in_another_process_is_the_key_of_its_name():
    key = _classes.key_named("Lock@elsewhere.py:3", "asyncio.Lock")
    assert (key.name, key.ltype.name, key.site) == ("Lock@elsewhere.py:3", "asyncio.Lock", None)
    assert _classes.key_named("Lock@elsewhere.py:3", "asyncio.Lock") is key


# -- recursive and real deadlocks --------------------------------------------------------------


def test_a_task_taking_its_own_lock_again_is_recursive_and_raises_deadlock_error():
    caught: list[BaseException] = []

    async def main():
        lock = asyncio.Lock()
        async with lock:
            try:
                await lock.acquire()
            except pylockdep.DeadlockError as exc:
                caught.append(exc)
        assert not lock.locked()

    reports = run(main)
    assert kinds(reports) == ["recursive"]
    assert len(caught) == 1 and "which it holds itself" in str(caught[0])


def test_a_lock_a_task_took_by_acquire_and_waits_for_again_is_a_hand_off_another_task_may_give():
    """CPython lets any task release an asyncio.Lock: a task that took one by ``acquire()`` (no
    ``async with`` of its own to release it) and waits for it again waits for whoever releases it,
    as a thread does for a ``threading.Lock``; while another task is left to do it, no report."""
    order: list[str] = []

    async def main():
        gate = asyncio.Lock()

        async def opener():
            await asyncio.sleep(0.01)
            order.append("opened")
            gate.release()

        await gate.acquire()
        task = asyncio.create_task(opener())
        async with gate:
            order.append("passed")
        await task

    assert kinds(run(main)) == []
    assert order == ["opened", "passed"]


# Run alone (see run_alone): another thread may release an asyncio.Lock through its loop.
TAKEN_AGAIN_WITH_NOBODY_LEFT = """
    import asyncio, pylockdep

    async def main():
        lock = asyncio.Lock()
        await lock.acquire()
        RELEASER
        try:
            async with lock:
                print("taken again")
        except pylockdep.DeadlockError as exc:
            print("DeadlockError", "which it holds itself" in str(exc))
            lock.release()

    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        asyncio.run(main())
    print([r.kind for r in v.reports])
"""


def test_a_lock_a_task_took_by_acquire_and_waits_for_with_no_task_left_is_recursive():
    result = run_alone(TAKEN_AGAIN_WITH_NOBODY_LEFT.replace("RELEASER", ""))
    assert result.stdout == "DeadlockError True\n['recursive']\n", result.stderr


@pytest.mark.parametrize(
    "releaser",
    [
        "asyncio.get_running_loop().call_later(0.01, lock.release)",
        "threading.Thread(target=lambda: (time.sleep(0.05), loop.call_soon_threadsafe(lock.release))).start()",
        "loop.run_in_executor(None, time.sleep, 0.05).add_done_callback(lambda f: lock.release())",
    ],
    ids=["timer", "thread", "executor"],
)
def test_a_lock_a_timer_a_thread_or_an_executor_callback_will_release_is_waited_for(releaser):
    """CPython lets any code on the loop release an asyncio.Lock: a callback the loop is to run, or
    another thread that may still schedule one, may hand the lock over, as another task may."""
    program = TAKEN_AGAIN_WITH_NOBODY_LEFT.replace("import asyncio,", "import asyncio, threading, time,")
    result = run_alone(program.replace("RELEASER", f"loop = asyncio.get_running_loop(); {releaser}"))
    assert result.stdout == "taken again\n[]\n", result.stderr


@pytest.mark.parametrize("delay", [0.05, 0])
def test_a_task_taking_its_own_lock_again_inside_asyncio_timeout_is_recursive_and_times_out(delay: float):
    """A wait that a timeout ends is no deadlock: ``asyncio.timeout()`` raised DeadlockError where
    CPython times out, and still did for a timeout already due when the block began (its handle
    waits in the loop's ready queue, not among its timers).  The acquisition itself is an ordinary
    one: it is still reported."""
    outcome: list[str] = []

    async def main():
        lock = asyncio.Lock()
        async with lock:
            try:
                async with asyncio.timeout(delay):
                    await lock.acquire()
            except TimeoutError:
                outcome.append("timed out")
            assert lock.locked()
        assert not lock.locked()
        async with lock:  # it works on
            outcome.append("taken again")

    reports = run(main)
    assert outcome == ["timed out", "taken again"]
    assert kinds(reports) == ["recursive"]


@pytest.mark.parametrize("timeout", [0.05, sys.float_info.min, 0])
def test_a_timed_acquisition_of_a_lock_the_task_holds_is_a_trylock(timeout: float):
    """``wait_for(lock.acquire(), timeout)`` is asyncio's timed acquire, a trylock as threading's
    ``acquire(timeout=...)`` is: readerwriterlock's async locks try a lock the task may hold with
    ``timeout=sys.float_info.min``, which raised DeadlockError on 3.12 and 3.13 (its timeout is
    already due, so no timer handle stands for it) and was reported recursive (circular on 3.11,
    where the acquisition runs in a task that the holder awaits)."""
    outcome: list[str] = []

    async def main():
        lock = asyncio.Lock()
        async with lock:
            try:
                await asyncio.wait_for(lock.acquire(), timeout=timeout)
            except TimeoutError:
                outcome.append("timed out")
            assert lock.locked()
        async with lock:  # it works on
            outcome.append("taken again")

    assert kinds(run(main)) == []
    assert outcome == ["timed out", "taken again"]


@pytest.mark.parametrize("how", ["timed", "blocking"])
def test_a_timed_acquisition_adds_no_dependency_into_the_lock(how: str):
    """As a trylock, a timed acquisition of ``a`` under ``b`` orders nothing against ``a`` then
    ``b`` elsewhere; a blocking one closes the cycle."""

    async def main():
        a = asyncio.Lock()
        b = asyncio.Lock()
        async with a, b:
            pass
        async with b:
            if how == "timed":
                await asyncio.wait_for(a.acquire(), timeout=5)
            else:
                await a.acquire()
            a.release()

    reports = run(main)
    if how == "timed":
        assert reports == []
    else:
        (report,) = reports
        assert report.kind == "circular"
        assert sorted(report.classes) == [f"Lock@test_asyncio.py:{line_of(main, c)}" for c in ("a = ", "b = ")]


def test_a_real_deadlock_among_tasks_raises_in_the_task_that_closes_the_cycle():
    outcome: dict[str, str] = {}

    async def main():
        l1 = asyncio.Lock()
        l2 = asyncio.Lock()
        both_hold = asyncio.Event()
        holding = 0

        async def worker(name: str, first: asyncio.Lock, second: asyncio.Lock) -> None:
            nonlocal holding
            async with first:
                holding += 1
                if holding == 2:
                    both_hold.set()
                await both_hold.wait()
                try:
                    async with second:
                        outcome[name] = "took both"
                except pylockdep.DeadlockError:
                    outcome[name] = "deadlock"

        await asyncio.gather(
            asyncio.create_task(worker("A", l1, l2), name="A"), asyncio.create_task(worker("B", l2, l1), name="B")
        )

    reports = run(main)
    assert kinds(reports) == ["circular"]
    # B sets the event and goes on to wait for l1 at once; A, woken later, closes the cycle and
    # gives up, which lets B through.
    assert outcome == {"A": "deadlock", "B": "took both"}


def test_awaiting_a_task_while_holding_a_lock_it_does_not_take_is_clean():
    async def main():
        lock = asyncio.Lock()
        other = asyncio.Lock()

        async def child():
            async with other:
                await asyncio.sleep(0)

        async with lock:
            await asyncio.create_task(child())
            await asyncio.gather(child(), child())
            await asyncio.wait_for(child(), 20)
            await asyncio.wait([asyncio.create_task(child())])
            async with asyncio.TaskGroup() as tg:
                tg.create_task(child())

    assert run(main) == []


# -- awaiting tasks: waits as dependencies ------------------------------------------------------


async def refresher(lock: asyncio.Lock, refreshed: asyncio.Event, stop: asyncio.Event) -> None:
    """A task that takes ``lock`` once, then idles until told to stop (it never takes it again)."""
    async with lock:
        pass
    refreshed.set()
    await stop.wait()


async def wait_for_task(how: str, task: asyncio.Task, group: asyncio.TaskGroup) -> None:
    """Wait for ``task`` (of ``group``) in the way ``how`` names."""
    if how == "await":
        await task
    elif how == "gather":
        await asyncio.gather(task, asyncio.sleep(0))
    elif how == "wait_for":
        await asyncio.wait_for(task, 20)  # 3.11: through a future of wait_for()'s own
    elif how == "wait":
        await asyncio.wait([task])
    else:
        await group.__aexit__(None, None, None)


WAYS_TO_WAIT = ["await", "gather", "wait_for", "wait", "taskgroup"]


async def open_group() -> asyncio.TaskGroup:
    """A TaskGroup entered, for a test to leave (or to wait for) when it chooses."""
    group = asyncio.TaskGroup()
    await group.__aenter__()
    return group


@pytest.mark.parametrize("how", WAYS_TO_WAIT)
def test_awaiting_a_task_under_a_lock_the_task_takes_is_circular(how: str):
    """The task took the lock before the await and never waits for it again: nothing hangs in this
    run, and the dependency is still found (as joining a thread is)."""

    async def main():
        lock = asyncio.Lock()
        refreshed, stop = asyncio.Event(), asyncio.Event()
        group = await open_group()
        task = group.create_task(refresher(lock, refreshed, stop))
        await refreshed.wait()
        async with lock:
            asyncio.get_running_loop().call_soon(stop.set)
            await wait_for_task(how, task, group)

    reports = run(main)
    assert kinds(reports) == ["circular"]
    (report,) = reports
    # the task's map is named after the line that made the task
    made = line_of(main, "task = group.create_task(")
    assert set(report.classes) == {f"(task)test_asyncio.py:{made}", f"Lock@test_asyncio.py:{line_of(main, 'lock = ')}"}
    # where the awaiting task was suspended, not the event loop's frames
    assert "main+test_asyncio.py:" in report.text.split("-> #0")[1].split("other info")[0]


def test_a_tasks_stack_ends_with_its_coroutine_or_the_line_that_made_it():
    """A task's stack in a report stops at the event loop, whatever runs the loop; a task whose
    coroutine is the lock's own ``acquire()`` shows the line that made it."""

    async def main():
        lock = asyncio.Lock()
        await lock.acquire()
        task = asyncio.create_task(lock.acquire())
        asyncio.get_running_loop().call_later(0.01, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        lock.release()

    (report,) = run(main)
    assert report.kind == "circular"

    def frames(block: str) -> list[str]:  # a chain's call trace, after its heading and thread lines
        return [line.strip() for line in block.splitlines()[1:] if line.strip() and not line.strip().startswith("[")]

    made = line_of(main, "task = asyncio.create_task(")
    task_chain = report.text.split("-> #1")[1].split("-> #0")[0]  # the task's: it waits for the lock
    assert frames(task_chain) == [f"{main.__qualname__}+test_asyncio.py:{made}"]
    awaiter = frames(report.text.split("-> #0")[1].split("other info")[0])  # not the test that runs the loop
    assert awaiter == [f"{main.__qualname__}+test_asyncio.py:{line_of(main, 'await task')}"]


@pytest.mark.parametrize("started", [False, True], ids=["task-not-started", "task-waiting"])
def test_awaiting_a_task_whose_cancellation_is_already_due_is_clean(started: bool):
    """CPython's ``test_acquire_cancel``: the task holding the lock schedules the waiting task's
    cancellation, then awaits it.  The cycle closes, but the cancellation was due before anything
    could wait on it: no deadlock in any run, and the task that ends cancelled did no work for the
    awaiter."""

    async def main():
        lock = asyncio.Lock()
        await lock.acquire()
        task = asyncio.create_task(lock.acquire())
        if started:
            await asyncio.sleep(0)  # the task waits for the lock before the await
        asyncio.get_running_loop().call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        lock.release()

    assert run(main) == []


def test_awaiting_a_task_that_a_due_callback_cancels_and_lets_take_the_lock_is_clean():
    """CPython's ``test_cancel_release_race``: a callback scheduled before the await cancels the
    awaited task and releases the lock the others wait for."""

    async def main():
        lock = asyncio.Lock()
        await lock.acquire()
        tasks = [asyncio.create_task(lock.acquire()) for _ in range(3)]
        await asyncio.sleep(0)

        def trigger():
            tasks[0].cancel()
            lock.release()

        asyncio.get_running_loop().call_soon(trigger)
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert tasks[1].done() and not tasks[2].done()
        lock.release()
        await tasks[2]
        lock.release()

    assert run(main) == []


def test_awaiting_a_task_that_a_callback_due_later_cancels_is_circular():
    """The same cycle, with a cancellation that the callbacks already due do not bring: the cycle
    stands once they have run, and is reported."""

    async def main():
        lock = asyncio.Lock()
        await lock.acquire()
        task = asyncio.create_task(lock.acquire())
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: loop.call_soon(lambda: loop.call_soon(task.cancel)))
        with pytest.raises(asyncio.CancelledError):
            await task
        lock.release()

    assert kinds(run(main)) == ["circular"]


def test_awaiting_a_task_after_releasing_the_lock_it_takes_is_clean():
    async def main():
        lock = asyncio.Lock()
        refreshed, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(refresher(lock, refreshed, stop))
        await refreshed.wait()
        async with lock:
            stop.set()
        await task
        await asyncio.gather(asyncio.create_task(refresher(lock, refreshed, stop)))

    assert run(main) == []


@pytest.mark.parametrize("how", WAYS_TO_WAIT)
def test_waiting_for_tasks_that_take_the_lock_while_holding_nothing_is_clean(how: str):
    async def main():
        lock = asyncio.Lock()
        refreshed, stop = asyncio.Event(), asyncio.Event()
        group = await open_group()
        task = group.create_task(refresher(lock, refreshed, stop))
        group.create_task(refresher(lock, asyncio.Event(), stop))
        await refreshed.wait()
        asyncio.get_running_loop().call_soon(stop.set)
        await wait_for_task(how, task, group)
        await group.__aexit__(None, None, None)

    assert run(main) == []


@pytest.mark.parametrize("first", ["awaiter", "task"])
def test_the_lock_a_task_takes_after_being_awaited_under_it_closes_the_cycle(first: str):
    """The other order: the awaiter holds the lock and the task wants it while awaited (the real
    deadlock, which the task's timeout breaks here): reported as soon as both are stuck, whether
    the awaiter or the task came to wait first, not only once the awaiter resumes."""
    seen_while_stuck: list[list[str]] = []

    async def main():
        lock = asyncio.Lock()
        start = asyncio.Event()

        async def late():
            await start.wait()
            try:
                async with asyncio.timeout(0.05):
                    await lock.acquire()
            except TimeoutError:
                seen_while_stuck.append(kinds(pylockdep.current().reports))
                return
            lock.release()

        task = asyncio.create_task(late())
        async with lock:
            if first == "awaiter":
                asyncio.get_running_loop().call_soon(start.set)
            else:
                start.set()
                while _asyncio.holder_of(pylockdep.current(), task).waiting is None:
                    await asyncio.sleep(0)
            await task

    reports = run(main)
    assert seen_while_stuck == [["circular"]]
    assert kinds(reports) == ["circular"]
    assert f"(task)test_asyncio.py:{line_of(main, 'task = asyncio.create_task(late())')}" in reports[0].classes
    # told as the awaiter's wait for the task, where the awaiter was suspended
    assert "main+test_asyncio.py:" in reports[0].text.split("-> #0")[1].split("other info")[0]


needs_eager_tasks = pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")


@needs_eager_tasks
def test_an_eager_tasks_first_step_runs_under_its_map():
    """An eager task takes the lock in its first step, inside create_task(): that step runs under
    the task's map too, so awaiting the task under the lock is found."""

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        lock = asyncio.Lock()
        refreshed, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(refresher(lock, refreshed, stop))
        assert refreshed.is_set()  # its first step took and released the lock already
        async with lock:
            asyncio.get_running_loop().call_soon(stop.set)
            await task

    (report,) = run(main)
    assert report.kind == "circular"
    assert f"(task)test_asyncio.py:{line_of(main, 'task = asyncio.create_task(')}" in report.classes


@needs_eager_tasks
def test_an_eager_task_that_ends_inside_create_task_is_seen_to_end():
    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        lock = asyncio.Lock()

        async def quick():
            async with lock:
                pass

        async def keeps():
            await lock.acquire()

        async with lock:
            pass
        v = pylockdep.current()
        for coro in (quick(), keeps()):
            task = asyncio.create_task(coro)
            assert task.done() and id(task) not in v.async_holders
        kept.append(lock)  # and never released: a leak, judged when validation ends

    kept: list[asyncio.Lock] = []
    # the task that ended holding the lock is told, the other is clean
    reports = run(main)
    assert kinds(reports) == ["lock_held_at_exit"] and "keeps" in reports[0].text


def test_the_holder_of_a_task_destroyed_while_pending_is_forgotten():
    """A task that nothing refers to any more while it waits is destroyed by the garbage
    collector without ever ending: its holder goes with it."""

    async def main():
        v = pylockdep.current()

        async def stuck(future):
            await future

        future = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(stuck(future))
        await asyncio.sleep(0)  # its first step: it has a holder
        key = id(task)
        assert key in v.async_holders
        del task, future
        gc.collect()
        assert key not in v.async_holders

    assert kinds(run(main)) == []


def test_tasks_of_one_coroutine_made_by_two_lines_are_two_map_classes():
    """A task's map is named after the line that made the task, as a thread's is: one worker
    function given a different lock by each line is two kinds of work.  Named after the function,
    the two would be one class, and this program a false cycle."""

    async def worker(lock: asyncio.Lock) -> None:
        async with lock:
            pass

    async def main():
        a = asyncio.Lock()
        b = asyncio.Lock()
        async with a:
            await asyncio.create_task(worker(b))
        await asyncio.create_task(worker(a))

    assert run(main) == []


def test_a_task_made_by_a_helper_that_returns_it_is_named_after_the_helpers_caller():
    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        return asyncio.create_task(coro)

    async def main():
        lock = asyncio.Lock()
        refreshed, stop = asyncio.Event(), asyncio.Event()
        task = spawn(refresher(lock, refreshed, stop))
        await refreshed.wait()
        async with lock:
            stop.set()
            await task

    (report,) = run(main)
    assert f"(task)test_asyncio.py:{line_of(main, 'task = spawn(')}" in report.classes


def _two_jobs(first: asyncio.Lock, second: asyncio.Lock) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Two coroutine functions (two kinds of work), each taking its lock across a suspension."""

    async def job1() -> None:
        async with first:
            await asyncio.sleep(0)

    async def job2() -> None:
        async with second:
            await asyncio.sleep(0)

    return job1, job2


def test_a_generic_helper_that_makes_and_awaits_tasks_names_them_after_its_callers():
    """A helper handed a coroutine that makes a task of it and awaits it (a timeout wrapper) runs
    whatever its callers ask for: each task's map is named after the line that called the helper
    with its coroutine, so the lock held while awaiting one job and the lock another caller's job
    takes make no cycle, even when the jobs are one coroutine function called with other
    arguments.  A lock held while awaiting a job that takes it still does."""

    async def run_bounded(coro, timeout=10.0):
        task = asyncio.create_task(coro)
        return await asyncio.wait_for(task, timeout)

    async def run_either(job):  # a coroutine, or a function to make one
        return await asyncio.create_task(job() if callable(job) else job)

    async def noop():
        await asyncio.sleep(0)

    async def main():
        x, z = asyncio.Lock(), asyncio.Lock()
        job1, job2 = _two_jobs(z, x)

        async def op(kind):
            if kind == "write":
                async with x:
                    await asyncio.sleep(0)

        async with x:
            await run_bounded(job1())
        await run_bounded(job2())
        await run_either(noop)  # a function first: the line's answer differs call by call
        await run_either(op("write"))
        async with x:
            await run_bounded(op("read"))
            await run_either(op("read"))
        return x

    assert kinds(run(main)) == []

    async def bug():
        x = asyncio.Lock()

        async def job2():
            async with x:
                await asyncio.sleep(0)

        await run_bounded(job2())
        async with x:
            with contextlib.suppress(TimeoutError, pylockdep.DeadlockError):  # it does deadlock
                await run_bounded(job2(), 0.1)

    reports = run(bug)
    assert kinds(reports) == ["circular"]
    assert f"(task)test_asyncio.py:{line_of(bug, 'await run_bounded(job2(), 0.1)')}" in reports[0].classes


def test_naming_the_task_of_a_helpers_coroutine_keeps_nothing_of_the_helper_alive():
    """Finding whether a helper was handed its coroutine reads the helper's arguments; before 3.13
    that makes a snapshot of its locals that the frame keeps: it must keep nothing alive while the
    helper runs on (CPython's test_log_destroyed_pending_task saw a coroutine kept so)."""
    freed: list[bool] = []

    class Payload:
        pass

    async def job():
        await asyncio.sleep(0)

    async def helper(coro, payload):
        task = asyncio.create_task(coro)
        gone = weakref.ref(payload)
        del payload
        freed.append(gone() is None)  # the helper still runs: its frame is alive
        await task

    async def main():
        await helper(job(), Payload())

    assert run(main) == []
    assert freed == [True]


async def gather_with_limit(limit: int, *coros: Coroutine[Any, Any, Any]) -> list[Any]:
    """The common helper: each coroutine runs in a task of a wrapper that takes a semaphore."""
    sem = asyncio.Semaphore(limit)

    async def guarded(coro: Coroutine[Any, Any, Any]) -> Any:
        async with sem:
            return await coro

    return await asyncio.gather(*(guarded(c) for c in coros))


def test_tasks_of_a_wrapper_coroutine_are_named_after_the_coroutine_it_runs():
    """The tasks of a gather-with-a-limit helper all run its inner wrapper, made on one line: they
    count as the coroutine each wrapper was handed, so a snapshot holding a lock while awaiting
    readers makes no cycle with writers that take the lock.  Readers that may take it still do."""
    state: dict[str, int] = {}

    async def read(k: str) -> int | None:
        await asyncio.sleep(0)
        return state.get(k)

    async def write(lock: asyncio.Lock, k: str, take: bool = True) -> None:
        if take:
            async with lock:
                state[k] = 1

    async def main():
        lock = asyncio.Lock()
        await gather_with_limit(2, *(write(lock, k) for k in "abc"))
        async with lock:
            return await gather_with_limit(2, *(read(k) for k in "abc"))

    assert kinds(run(main)) == []

    async def bug():
        lock = asyncio.Lock()
        await gather_with_limit(2, write(lock, "a"))
        async with lock:
            await gather_with_limit(2, write(lock, "b", take=False))

    reports = run(bug)
    assert kinds(reports) == ["circular"]
    # The line's first coroutine function (in this process) has the line's own name.
    line = line_of(gather_with_limit, "return await asyncio.gather(")
    assert {f"(task)write@test_asyncio.py:{line}", f"(task)test_asyncio.py:{line}"} & set(reports[0].classes)


class _Job:
    """A coroutine kept in an object, run as a task by a method."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro

    async def run(self) -> Any:
        return await asyncio.create_task(self.coro)


def test_a_task_of_a_coroutine_kept_in_an_argument_is_named_after_the_caller():
    """A method that makes a task of a coroutine its object was handed runs whatever its callers
    ask for: the task's map is named after the line that called the method, as for a coroutine
    handed as an argument.  One line that takes the lock and awaits its own kind of job is a cycle."""

    async def op(lock: asyncio.Lock, kind: str) -> None:
        if kind == "write":
            async with lock:
                await asyncio.sleep(0)

    async def main():
        lock = asyncio.Lock()
        await _Job(op(lock, "write")).run()
        async with lock:
            await _Job(op(lock, "read")).run()

    assert kinds(run(main)) == []

    async def bug():
        lock = asyncio.Lock()
        for hold in (False, True):
            async with lock if hold else contextlib.nullcontext():
                await _Job(op(lock, "read" if hold else "write")).run()

    reports = run(bug)
    assert kinds(reports) == ["circular"]
    assert f"(task)test_asyncio.py:{line_of(bug, 'await _Job(')}" in reports[0].classes


def test_a_line_making_tasks_of_several_coroutine_functions_gives_each_its_map():
    """A helper that makes the coroutine itself (handed the function) is the line that asked for
    the task: one map class per coroutine function made there, the first named after the line,
    each other one ``(task)function@file:line``."""

    async def run_job(fn, timeout=10.0):
        return await asyncio.wait_for(asyncio.create_task(fn()), timeout)

    async def main():
        x, z = asyncio.Lock(), asyncio.Lock()
        job1, job2 = _two_jobs(z, x)

        async with x:
            await run_job(job1)
        await run_job(job2)
        return x

    assert kinds(run(main)) == []

    async def bug():
        x = asyncio.Lock()

        async def job1():
            await asyncio.sleep(0)

        async def job2():
            async with x:
                await asyncio.sleep(0)

        await run_job(job1)
        await run_job(job2)
        async with x:
            with contextlib.suppress(TimeoutError, pylockdep.DeadlockError):  # it does deadlock
                await run_job(job2, 0.1)

    reports = run(bug)
    assert kinds(reports) == ["circular"]
    assert f"(task)job2@test_asyncio.py:{line_of(run_job, 'create_task(fn())')}" in reports[0].classes


def test_asyncio_wait_with_a_zero_timeout_is_a_poll_and_no_wait():
    """``asyncio.wait(tasks, timeout=0)`` never waits for the tasks (it returns after one pass of
    the loop): held across it, a lock the task takes makes no cycle.  With a timeout it does."""

    async def work(lock: asyncio.Lock, go: asyncio.Event) -> None:
        async with lock:
            pass
        await go.wait()

    async def main(timeout: float):
        lock, go = asyncio.Lock(), asyncio.Event()
        task = asyncio.create_task(work(lock, go))
        await asyncio.sleep(0)
        async with lock:
            await asyncio.wait([task], timeout=timeout)
        go.set()
        await task

    assert kinds(run(lambda: main(0))) == []
    assert kinds(run(lambda: main(0.01))) == ["circular"]


def test_a_condition_wait_under_a_timeout_is_clean():
    """``wait_for(cond.wait(), timeout)`` holding the condition's lock is the way to wait for a
    condition with a timeout; 3.11 runs the wait in a task of its own, which gives the awaiter's
    lock back while it waits: the lock is not held all through the wait."""

    async def main():
        cond = asyncio.Condition()
        async with cond:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(cond.wait(), 0.01)

    # On 3.11 the wait's own task takes the lock back and ends holding it, for the awaiter, which
    # releases it: the lock changes hands, nothing is held at exit.
    assert kinds(run(main)) == []


def test_a_condition_wait_under_a_timeout_notified_in_time_is_clean():
    """Notified before the timeout, 3.11's task for ``cond.wait()`` ends holding the lock, which
    passes to the awaiter: the awaiter did not hold it all through its wait for that task (the
    wait gave it back), so no order from the lock to the task's map is learned, and with it no
    false cycle against the task's own re-acquisition."""

    async def main():
        cond = asyncio.Condition()

        async def notifier():
            async with cond:
                cond.notify()

        async with cond:
            task = asyncio.create_task(notifier())
            await asyncio.wait_for(cond.wait(), 10)
        await task

    assert kinds(run(main)) == []


def test_an_order_after_a_condition_wait_under_a_timeout_is_still_judged():
    """The task that 3.11's ``wait_for(cond.wait(), timeout)`` makes releases its awaiter's lock
    for the awaiter: not a hand-off of the lock to another task, which would silence every later
    report on the condition's class.  Here an ABBA with another lock follows (missed on 3.11)."""

    async def main():
        cond, other = asyncio.Condition(), asyncio.Lock()
        async with cond:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(cond.wait(), 0.01)
        async with cond:
            async with other:
                pass
        async with other:
            async with cond:
                pass

    assert kinds(run(main)) == ["circular"]


def test_a_lock_taken_under_wait_for_is_the_awaiters_to_release():
    """``wait_for(lock.acquire(), timeout)`` is how a task takes an asyncio.Lock with a timeout;
    3.11 runs the acquisition in a task of its own, which ends holding the lock for its awaiter
    (readerwriterlock's async locks are built so).  A task that ends holding a lock it took in its
    own code is still told (see the test of keeps() above)."""

    async def main():
        lock = asyncio.Lock()
        await asyncio.wait_for(lock.acquire(), timeout=5)
        await asyncio.sleep(0)
        assert lock.locked()
        lock.release()
        async with lock:  # usable again, by anyone
            pass

    assert kinds(run(main)) == []


@pytest.mark.parametrize("inverse", [True, False], ids=["inverse-order", "same-order"])
def test_what_the_awaiter_takes_under_a_lock_taken_under_wait_for_depends_on_it(inverse: bool):
    """The lock that ``wait_for(lock.acquire(), timeout)`` took is the awaiter's: what the awaiter
    takes while holding it depends on it, on every version (3.11 takes it in a task of its own,
    which passes it on as it ends), so the opposite order elsewhere is a circular dependency."""

    async def main():
        a, b = asyncio.Lock(), asyncio.Lock()
        await asyncio.wait_for(a.acquire(), timeout=5)
        try:
            async with b:
                pass
        finally:
            a.release()
        first, second = (b, a) if inverse else (a, b)
        async with first:
            async with second:
                pass
        return a, b

    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        a, b = asyncio.run(main())
    if inverse:
        [report] = v.reports
        assert report.kind == "circular" and set(report.classes) == {a.name, b.name}
    else:
        assert v.reports == []


class CountedRWLock:
    """readerwriterlock's async RWLockRead: the first reader takes the resource lock under the
    counter's lock, the last reader (perhaps another task) releases it, each in a method of its own."""

    def __init__(self) -> None:
        self.readers = 0
        self.resource = asyncio.Lock()
        self.counter = asyncio.Lock()

    async def acquire_read(self) -> None:
        async with self.counter:
            self.readers += 1
            if self.readers == 1:
                await self.resource.acquire()

    async def release_read(self) -> None:
        async with self.counter:
            self.readers -= 1
            if self.readers == 0:
                self.resource.release()


def test_readers_writers_counter_of_asyncio_locks_whose_last_reader_releases_the_resource_is_clean():
    """An asyncio.Lock has no owner in CPython: as a threading.Lock, one held on after the function
    that took it returned may be a token, and one released by another task is a hand-off signal.
    Reported before: the counter/resource cycle, and the first reader ending with the resource."""
    made: list[CountedRWLock] = []

    async def main():
        rw = CountedRWLock()
        made.append(rw)
        await rw.acquire_read()  # alone: the reader that took the resource releases it (held back)
        await rw.release_read()
        # Two readers overlap; the second releases the resource the first (now ended) took.
        for step in (rw.acquire_read, rw.acquire_read, rw.release_read, rw.release_read):
            await asyncio.create_task(step())
        async with rw.resource:  # a writer
            pass

    assert run(main) == []
    assert made[0].resource._key.handoff


@pytest.mark.parametrize("released", [True, False])
def test_an_asyncio_lock_handed_off_is_judged_held_at_exit_when_validation_ends(released: bool):
    """A task ending holding a lock of a class known as a hand-off is no leak if another task
    releases it later; one that nobody releases is reported when validation ends."""
    locks: list[asyncio.Lock] = []

    async def main():
        lock = asyncio.Lock()
        locks.append(lock)
        await lock.acquire()

        async def release() -> None:
            lock.release()

        async def keep() -> None:
            await lock.acquire()

        await asyncio.create_task(release())  # the hand-off marks the class
        await asyncio.create_task(keep())
        if released:
            lock.release()

    assert kinds(run(main)) == ([] if released else ["lock_held_at_exit"])


@pytest.mark.parametrize("releaser", ["taker", "another task"])
def test_a_lock_taken_under_wait_for_is_handed_off_when_another_task_releases_it(releaser: str):
    """The task that 3.11's ``wait_for(lock.acquire(), t)`` makes takes the lock for its awaiter:
    released by the awaiter it is no hand-off, by another task it is (as it is from 3.12 on, where
    the awaiter takes it itself)."""
    handed_off: list[bool] = []

    async def main():
        lock = asyncio.Lock()

        taken = asyncio.Event()
        done = asyncio.Event()

        async def take() -> None:
            await asyncio.wait_for(lock.acquire(), timeout=5)
            taken.set()
            await done.wait()
            if releaser == "taker":
                lock.release()

        task = asyncio.create_task(take())
        await taken.wait()
        if releaser == "another task":
            lock.release()
        done.set()
        await task
        handed_off.append(lock._key.handoff)

    assert kinds(run(main)) == []
    assert handed_off == [releaser == "another task"]


def line_of(fn: Callable[..., Any], text: str) -> int:
    """The line of ``fn``'s source holding ``text``."""
    import inspect

    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def test_a_task_blocking_the_thread_on_a_lock_a_suspended_task_holds_raises():
    caught: list[BaseException] = []

    async def main():
        tlock = threading.Lock()
        held = asyncio.Event()

        async def holder():
            with tlock:
                held.set()
                await asyncio.sleep(0.01)  # suspends holding a thread lock

        async def blocker():
            await held.wait()
            try:
                with tlock:  # would block the loop's only thread for ever
                    pass
            except pylockdep.DeadlockError as exc:
                caught.append(exc)

        await asyncio.gather(holder(), blocker())

    reports = run(main)
    assert kinds(reports) == ["scheduling_while_atomic"]
    assert len(caught) == 1 and "event loop's thread" in str(caught[0])


def test_waiting_on_the_loops_thread_for_run_coroutine_threadsafe_is_reported_and_raises():
    caught: list[BaseException] = []

    async def main():
        loop = asyncio.get_running_loop()
        future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "done"), loop)
        try:
            future.result()  # only this thread can run the coroutine: it would wait for ever
        except pylockdep.DeadlockError as exc:
            caught.append(exc)
        assert await asyncio.wrap_future(future) == "done"
        assert future.result() == "done"  # done: no wait, nothing to refuse

    reports = run(main)
    assert kinds(reports) == ["loop_blocked"]
    assert reports[0].title.startswith("BUG: Task-") and reports[0].title.endswith(
        " blocks its own event loop's thread for ever"
    )
    assert "run_coroutine_threadsafe" in reports[0].text
    assert len(caught) == 1


def test_a_timed_wait_on_the_loops_thread_for_run_coroutine_threadsafe_is_reported_and_times_out():
    """With a timeout the wait can only time out, the loop stalled all along: reported, and left to
    time out as CPython's would.  A zero timeout only polls: nothing to report."""
    timed_out: list[BaseException] = []

    async def main():
        loop = asyncio.get_running_loop()
        future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "done"), loop)
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(0)  # a poll
        with pytest.raises(concurrent.futures.TimeoutError):
            future.exception(timeout=-1)
        try:
            future.result(timeout=0.05)
        except concurrent.futures.TimeoutError as exc:
            timed_out.append(exc)
        assert await asyncio.wrap_future(future) == "done"

    reports = run(main)
    assert kinds(reports) == ["loop_blocked"]
    assert reports[0].title.endswith(" blocks its own event loop's thread until its wait times out")
    assert "The wait can only time out, after 0.05 s" in reports[0].text
    assert len(timed_out) == 1


def test_an_exception_from_run_coroutine_threadsafe_is_freed_without_the_collector():
    """``result()`` of the future run_coroutine_threadsafe() returns re-raises the coroutine's
    exception through pylockdep's frame: that frame must not keep the future alive (dramatiq)."""

    class CoroutineError(Exception):  # a class of its own: weak references to it are allowed
        pass

    async def fails():
        raise CoroutineError

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()

    def wait_for_the_coroutine():
        future = asyncio.run_coroutine_threadsafe(fails(), loop)
        try:
            future.result()
        finally:
            del future

    try:
        with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
            assert isinstance(asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop), _asyncio._LoopFuture)
            assert freed_without_the_collector(wait_for_the_coroutine)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    assert v.reports == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, 0.2])
def test_a_thread_waiting_for_run_coroutine_threadsafe_under_a_lock_the_coroutine_takes_is_circular(timeout):
    """The future's waiter waits for the task that runs the coroutine, through the task's map
    (named after the line that asked for it): a lock held across the wait and taken by the
    coroutine is a cycle.  Without a timeout the wait would never end (the loop's thread blocks
    on the lock): it raises DeadlockError instead; with one, it times out, as in plain Python."""
    outcome: list[str] = []
    locks = []

    async def handler():
        with locks[0]:
            return "done"

    def client(loop):
        lock = locks[0]
        assert asyncio.run_coroutine_threadsafe(handler(), loop).result() == "done"  # learns map -> lock
        with lock:
            try:
                asyncio.run_coroutine_threadsafe(handler(), loop).result(timeout)
            except pylockdep.DeadlockError:
                outcome.append("DeadlockError")
            except TimeoutError:
                outcome.append("TimeoutError")

    async def main():
        locks.append(threading.Lock())
        await asyncio.to_thread(client, asyncio.get_running_loop())

    reports = run(main)
    assert outcome == ["DeadlockError" if timeout is None else "TimeoutError"]
    assert [r.kind for r in reports] == ["circular"]
    (report,) = reports
    line = line_of(client, "with lock:") + 2
    assert f"(task)test_asyncio.py:{line}" in report.classes and locks[0].name in report.classes


def test_run_coroutine_threadsafe_waited_for_from_another_thread_is_clean():
    async def main():
        loop = asyncio.get_running_loop()
        results = []

        def other_thread():
            results.append(asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "done"), loop).result())

        await asyncio.to_thread(other_thread)
        assert results == ["done"]

    assert run(main) == []


def test_an_executor_future_awaited_by_a_loop_inside_pool_work_is_no_wait():
    """A coroutine awaiting ``run_in_executor()`` blocks no thread: when the work is done, asyncio
    hands its outcome over with ``Future.result()`` on the finished future (``_copy_future_state``),
    in the loop's thread.  That call is no wait for the work, even when the loop runs inside other
    pool work (asgiref's ``async_to_sync`` runs a loop in a pool thread, whose work a
    ``run_in_executor()`` job waits for): counted as one, it closed a cycle between the pool's work
    and every executor job (asgiref 3.13.0's test_thread_sensitive_disabled under the plugin)."""
    from concurrent.futures import ThreadPoolExecutor

    def inner_loop() -> int:  # pool work: an event loop that awaits executor work
        async def awaits_executor_work() -> int:
            return await asyncio.get_running_loop().run_in_executor(None, int)

        return asyncio.run(awaits_executor_work())

    def executor_job() -> int:  # executor work that waits for the pool work
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(inner_loop).result()

    async def main():
        assert await asyncio.get_running_loop().run_in_executor(None, executor_job) == 0

    assert run(main) == []


def test_a_lock_of_another_loop_is_refused_by_cpython_before_any_report():
    """CPython refuses to wait for a lock bound to another loop (test_locks' test_ambiguous_loops):
    its RuntimeError comes first, and what it refuses is no acquisition to judge."""

    async def main():
        other_loop = asyncio.new_event_loop()
        lock = asyncio.Lock()
        lock._loop = other_loop  # as CPython's test binds it
        try:
            async with lock:  # free: taken without the loop
                with pytest.raises(RuntimeError, match="is bound to a different event loop"):
                    await lock.acquire()
        finally:
            other_loop.close()

    assert run(main) == []


# -- held at exit ------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["returns", "raises", "cancelled"])
def test_a_task_ending_with_an_asyncio_lock_held_is_reported(ending: str):
    """When validation ends, as for a ``threading.Lock``: any task may release an asyncio.Lock, and
    one that nothing refers to any more is no leak (here the test keeps it)."""
    kept: list[asyncio.Lock] = []

    async def main():
        lock = asyncio.Lock()
        kept.append(lock)

        async def leaky():
            await lock.acquire()
            if ending == "raises":
                raise ValueError("boom")
            if ending == "cancelled":
                await asyncio.sleep(10)

        task = asyncio.create_task(leaky(), name="leaky")
        await asyncio.sleep(0)
        if ending == "cancelled":
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert lock.locked()

    reports = run(main)
    assert kinds(reports) == ["lock_held_at_exit"]
    assert reports[0].title.startswith("WARNING: leaky/") and reports[0].title.endswith("still has locks held!")
    assert reports[0].classes[0].startswith("Lock@test_asyncio.py:")


def test_a_lock_handed_to_another_task_to_release_is_not_held_at_exit():
    async def main():
        lock = asyncio.Lock()

        async def taker():
            await lock.acquire()

        await asyncio.create_task(taker())  # ends holding it ...
        lock.release()  # ... and another task releases it, as CPython allows (its own tests do)
        async with lock:
            pass

    assert run(main) == []


# -- scheduling while atomic -------------------------------------------------------------------


def test_a_threading_lock_held_across_a_suspending_await_is_scheduling_while_atomic():
    async def main():
        tlock = threading.Lock()

        async def worker():
            with tlock:
                await asyncio.sleep(0)

        await asyncio.create_task(worker(), name="worker")

    reports = run(main)
    assert kinds(reports) == ["scheduling_while_atomic"]
    report = reports[0]
    lines = report.text.splitlines()
    assert lines[0].startswith("BUG: scheduling while atomic: worker/") and lines[0].endswith("/0x00000001")
    assert report.title == lines[0]
    assert report.classes[0].startswith("Lock@test_asyncio.py:")
    # The task's own completion map lies below the lock, as a work item's does in the kernel.
    assert "2 locks held by worker/" in lines[1]
    assert "((task)test_asyncio.py:" in lines[2] and f"({report.classes[0]})" in lines[3]
    taken = lines.index(f"{report.classes[0]} (a lock that blocks the loop's thread) taken at:")
    assert "worker+tests/test_asyncio.py:" in lines[taken + 1] or "worker+test_asyncio.py:" in lines[taken + 1]
    suspended = next(i for i, line in enumerate(lines) if line.startswith("worker/") and "suspended at" in line)
    # innermost first: asyncio.sleep(0)'s own frames, then the task's coroutine that awaited it
    functions = [line.split("+")[0].strip() for line in lines[suspended + 1 : suspended + 4]]
    assert functions[:2] == ["__sleep0", "sleep"] and functions[2].endswith("<locals>.worker")
    assert " __schedule_bug" in lines and " schedule" in lines


def test_a_threading_lock_held_across_an_await_in_a_later_step_is_scheduling_while_atomic():
    # The first step of a task makes its holder; the C fast path runs the later ones, and must
    # still hand a step that ends holding a thread lock to the check.
    async def main():
        tlock = threading.Lock()

        async def worker():
            for _ in range(3):
                await asyncio.sleep(0)
            with tlock:
                await asyncio.sleep(0)

        await asyncio.create_task(worker(), name="late")

    reports = run(main)
    assert kinds(reports) == ["scheduling_while_atomic"]
    assert reports[0].title.startswith("BUG: scheduling while atomic: late/")


def test_a_later_step_raising_out_of_the_loop_puts_the_threads_holder_back():
    # KeyboardInterrupt and SystemExit leave a task's step and the loop; the step's holder must not
    # stay the thread's, nor the task its running one.
    holders = []

    async def main():
        await asyncio.sleep(0)
        holders.append(v.task())
        raise KeyboardInterrupt

    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        thread_holder = v.task()
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(main())
        assert v.task() is thread_holder and v.local.task is thread_holder
        with threading.Lock():  # taken by the thread, not the task
            assert thread_holder.held and not holders[0].held
    assert holders[0] is not thread_holder and holders[0].running is None
    assert v.reports == []


def test_a_thread_lock_on_a_chain_already_validated_is_still_held_by_the_task():
    """The second time round the chain is known, so the C fast path takes the lock: it too must
    push it on the task's stack, not on the thread's."""

    async def main():
        tlock = threading.Lock()

        async def worker():
            with tlock:
                await asyncio.sleep(0)

        with tlock:  # the loop's thread itself, outside any task: chain validated, no report
            pass
        await asyncio.create_task(worker(), name="worker")

    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        lock = threading.Lock()
        with lock:  # the thread's first lock: its Task is made (and cached by the C fast path)
            pass
        asyncio.run(main())
    assert kinds(v.reports) == ["scheduling_while_atomic"]


@pytest.mark.parametrize(
    "make",
    [lambda: threading.RLock(), lambda: pylockdep.RawSpinLock("spin"), lambda: pylockdep.Mutex("m")],
    ids=["RLock", "RawSpinLock", "Mutex"],
)
def test_every_lock_that_blocks_the_thread_counts(make):
    async def main():
        lock = make()

        async def worker():
            with lock:
                await asyncio.sleep(0)

        await asyncio.create_task(worker())

    assert kinds(run(main)) == ["scheduling_while_atomic"]


def test_a_thread_lock_held_across_an_await_that_does_not_suspend_is_fine():
    async def main():
        tlock = threading.Lock()

        async def no_suspension():
            return 1

        async def worker():
            with tlock:
                await no_suspension()
                await asyncio.sleep(0) if False else None
            await asyncio.sleep(0)

        await asyncio.create_task(worker())

    assert run(main) == []


def test_loguru_0_7_0_coroutine_sink_completion_holds_its_handler_lock_across_await():
    """loguru 0.7.0's ``Handler.complete_queue``/``_CoroutineSink``: the handler's threading lock was
    held while awaiting the coroutine sink's pending tasks (fixed in 0.7.1 by awaiting outside it)."""

    class Handler:
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._tasks: list[asyncio.Task] = []

        def emit(self, message: str) -> None:
            with self._lock:
                self._tasks.append(asyncio.get_running_loop().create_task(self._sink(message)))

        async def _sink(self, message: str) -> None:
            await asyncio.sleep(0)

        async def complete_0_7_0(self) -> None:
            with self._lock:
                for task in self._tasks:
                    await task

        async def complete_0_7_1(self) -> None:
            with self._lock:
                tasks = list(self._tasks)
            for task in tasks:
                await task

    async def fixed():
        handler = Handler()
        handler.emit("hello")
        await handler.complete_0_7_1()

    async def broken():
        handler = Handler()
        handler.emit("hello")
        await handler.complete_0_7_0()

    assert run(fixed) == []
    reports = run(broken)
    assert kinds(reports) == ["scheduling_while_atomic"]
    assert "complete_0_7_0+" in reports[0].text


# -- semaphores, conditions, events --------------------------------------------------------------


def test_semaphores_are_not_owner_locks_and_add_no_dependencies():
    async def main():
        sem = asyncio.Semaphore(1)
        lock = asyncio.Lock()

        async def one():
            async with sem:
                async with lock:
                    pass

        async def other():
            async with lock:
                async with sem:
                    pass

        await asyncio.create_task(one())
        await asyncio.create_task(other())

    assert run(main) == []


def test_waiting_on_a_semaphore_under_a_spinning_lock_may_sleep_in_atomic_context():
    async def main():
        spin = pylockdep.SpinLock("spin")
        sem = asyncio.BoundedSemaphore(1)
        with spin:
            await sem.acquire()
        sem.release()

    assert kinds(run(main)) == ["sleep_in_atomic"]


def test_a_condition_lock_is_validated_and_wait_notify_is_clean():
    async def main():
        cond = asyncio.Condition()
        items: list[int] = []

        async def consumer():
            async with cond:
                await cond.wait_for(lambda: items)
                return items.pop()

        task = asyncio.create_task(consumer())
        await asyncio.sleep(0)
        async with cond:
            items.append(1)
            cond.notify()
        assert await task == 1
        assert cond._lock.name.startswith("Condition@test_asyncio.py:")
        # its lock is on the task's stack while held
        async with cond:
            holder = _asyncio.holder_of(pylockdep.current(), asyncio.current_task())
            assert [entry[0] for entry in holder.held] == [holder.work, cond._lock]
        assert [entry[0] for entry in holder.held] == [holder.work]  # the task's own map, below

    assert run(main) == []


# -- clean counterparts ------------------------------------------------------------------------


def test_ordered_locking_across_many_tasks_is_clean():
    async def main():
        # Three classes, one line each (locks made by one line share a class, and nest as
        # instances of one class: in one order, as here, clean too).
        first = asyncio.Lock()
        second = asyncio.Lock()
        third = asyncio.Lock()
        locks = [first, second, third]

        async def worker(i: int):
            for _ in range(3):
                async with locks[0]:
                    async with locks[1]:
                        await asyncio.sleep(0)
                        async with locks[2]:
                            await asyncio.sleep(0)

        await asyncio.gather(*(worker(i) for i in range(20)))
        assert not any(lock.locked() for lock in locks)

    assert run(main) == []


def test_queue_producer_consumer_with_a_lock_is_clean():
    async def main():
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=4)
        lock = asyncio.Lock()
        total = 0

        async def producer():
            for i in range(100):
                await queue.put(i)
            await queue.put(-1)

        async def consumer():
            nonlocal total
            while (item := await queue.get()) != -1:
                async with lock:
                    total += item
                    await asyncio.sleep(0)

        await asyncio.gather(producer(), consumer())
        assert total == sum(range(100))

    assert run(main) == []


# -- asyncio.Queue.join() is a wait ------------------------------------------------------------


async def _join_under_the_consumers_lock(timeout: float, how: str = "get") -> list[int]:
    """Hold ``lock`` across ``queue.join()`` while the consumer needs it for each item: a real
    deadlock, which the timeout ends.  The consumer takes items by ``get()``, through
    ``wait_for(get(), ...)`` (which runs the get() in a task of its own on 3.11), or by a task of
    ``get()`` it makes and waits for with ``asyncio.wait()``.  Returns what the consumer got done."""
    lock = asyncio.Lock()
    queue: asyncio.Queue[int] = asyncio.Queue()
    done: list[int] = []

    async def consumer():
        while True:
            if how == "get_task":
                getting = asyncio.create_task(queue.get())
                await asyncio.wait({getting}, return_when=asyncio.FIRST_COMPLETED)
                item = getting.result()
            else:
                item = await (asyncio.wait_for(queue.get(), 10) if how == "wait_for_get" else queue.get())
            async with lock:
                done.append(item)
            queue.task_done()

    task = asyncio.create_task(consumer())
    async with lock:
        await queue.put(1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await queue.join()
    await queue.join()  # the lock released, the consumer gets on
    task.cancel()
    return done


@pytest.mark.parametrize("how", ["get", "wait_for_get", "get_task"])
def test_joining_a_queue_holding_a_lock_its_consumer_takes_is_circular(how):
    line = line_of(_join_under_the_consumers_lock, "queue: asyncio.Queue[int] = asyncio.Queue()")
    reports = run(lambda: _join_under_the_consumers_lock(0.05, how))
    assert kinds(reports) == ["circular"]
    assert f"(queue)test_asyncio.py:{line}" in reports[0].classes
    assert any(c.startswith("Lock@test_asyncio.py:") for c in reports[0].classes)


def test_a_queue_the_consumer_took_the_lock_of_before_the_join_is_circular_too():
    """Found from a run that did not hang: the consumer took the lock while it held an item, then
    the lock was held across join() when every item was done already."""

    async def main():
        lock = asyncio.Lock()
        queue: asyncio.Queue[int] = asyncio.Queue()

        async def consumer():
            while True:
                await queue.get()
                async with lock:
                    pass
                queue.task_done()

        task = asyncio.create_task(consumer())
        await queue.put(1)
        await queue.join()
        async with lock:
            await queue.join()  # nothing left to do: returns at once
        task.cancel()

    assert kinds(run(main)) == ["circular"]


def test_ordinary_queue_joins_are_clean():
    """A join with no lock held; a lock held around put() only; items marked done by a later
    stage; a batch consumer that takes the lock once its items are done; a consumer cancelled
    holding an item; subclasses."""

    async def main():
        lock = asyncio.Lock()
        first: asyncio.Queue[int] = asyncio.Queue()
        second: asyncio.PriorityQueue[int] = asyncio.PriorityQueue()
        done = []

        async def stage_one():
            while True:
                item = await first.get()
                async with lock:  # holding an item of ``first``: the joiner must not hold ``lock``
                    await second.put(item)

        async def stage_two():
            while True:
                item = await second.get()
                done.append(item)
                second.task_done()
                first.task_done()  # the pipeline's end marks the first stage's item done

        async def batch():
            lifo: asyncio.LifoQueue[int] = asyncio.LifoQueue()
            for i in range(3):
                lifo.put_nowait(i)
            got = [lifo.get_nowait() for _ in range(3)]
            for _ in got:
                lifo.task_done()
            async with lock:  # taken with no item held
                await lifo.join()  # every item done, and done by the taker

        tasks = [asyncio.create_task(stage_one()), asyncio.create_task(stage_two())]
        for i in range(5):
            async with lock:
                await first.put(i)
        await first.join()
        await second.join()
        await batch()

        stuck: asyncio.Queue[int] = asyncio.Queue()
        stuck.put_nowait(0)

        async def cancelled_holding_an_item():
            await stuck.get()
            await asyncio.sleep(10)

        victim = asyncio.create_task(cancelled_holding_an_item())
        await asyncio.sleep(0.01)
        victim.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(victim, *tasks, return_exceptions=True)
        async with lock:
            pass
        assert sorted(done) == list(range(5))

    assert run(main) == []


def test_a_consumer_joining_the_queue_it_holds_an_item_of_is_recursive():
    async def main():
        queue: asyncio.Queue[int] = asyncio.Queue()
        lock = asyncio.Lock()
        queue.put_nowait(1)
        await queue.get()
        async with lock:  # a real lock held: the wait is checked
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await queue.join()  # waits for its own task_done()
        queue.task_done()

    reports = run(main)
    assert kinds(reports) == ["recursive"]
    assert any(c.startswith("(queue)test_asyncio.py:") for c in reports[0].classes)


def test_queues_made_by_a_factory_on_one_line_are_two_classes():
    """A helper that only returns the queue it made is its caller's line, and two queues made on
    one line are two classes, as two locks are: joining the one whose consumer never takes the
    lock, under the lock the other's consumer takes, is clean."""

    def make_queue() -> asyncio.Queue[int]:
        return asyncio.Queue()

    async def main():
        lock = asyncio.Lock()
        dbq, auditq = make_queue(), make_queue()

        async def db_worker():
            while True:
                await dbq.get()
                async with lock:
                    pass
                dbq.task_done()

        async def audit_worker():
            while True:
                await auditq.get()
                auditq.task_done()

        tasks = [asyncio.create_task(db_worker()), asyncio.create_task(audit_worker())]
        dbq.put_nowait(1)
        await dbq.join()
        async with lock:
            auditq.put_nowait(1)
            await auditq.join()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return getattr(dbq, _waits._MAP).name, getattr(auditq, _waits._MAP).name

    line = line_of(main, "dbq, auditq = make_queue(), make_queue()")
    with pylockdep.validate(raise_on_report=False, stream=None) as v, pylockdep.instrument_threading():
        names = asyncio.run(main())
    assert v.reports == []
    assert names[0] == f"(queue)test_asyncio.py:{line}" and names[1].startswith(f"(queue)test_asyncio.py:{line}:")


def test_asyncio_queue_instrumentation_is_put_back():
    plain = {name: vars(asyncio.Queue)[name] for name in ("__init__", "get_nowait", "task_done", "join")}
    with pylockdep.instrument_threading():
        assert all(vars(asyncio.Queue)[name] is not method for name, method in plain.items())
    assert all(vars(asyncio.Queue)[name] is method for name, method in plain.items())


def test_taskgroup_with_shared_locks_is_clean():
    async def main():
        a = asyncio.Lock()
        b = asyncio.Lock()

        async def worker():
            async with a:
                await asyncio.sleep(0)
                async with b:
                    await asyncio.sleep(0)

        async with asyncio.TaskGroup() as tg:
            for _ in range(10):
                tg.create_task(worker())

    assert run(main) == []


def test_cancellation_while_waiting_for_a_lock_leaves_no_held_entry():
    async def main():
        v = pylockdep.current()
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)
        waiter_holder = _asyncio.holder_of(v, waiter)
        assert waiter_holder.waiting is not None and waiter_holder.waiting[0] is lock
        waiter.cancel()
        while not waiter.done():  # not `await waiter`: that would wait, holding the lock, for its taker
            await asyncio.sleep(0)
        assert waiter.cancelled()
        assert waiter_holder.held == [] and waiter_holder.waiting is None
        assert waiter_holder not in v.tasks.values()
        me = _asyncio.holder_of(v, asyncio.current_task())
        assert [entry[0] for entry in me.held] == [me.work, lock]
        lock.release()
        assert [entry[0] for entry in me.held] == [me.work]
        async with lock:  # taken again, cleanly
            pass

    assert run(main) == []


def test_timeout_around_a_lock_wait_is_clean():
    async def main():
        lock = asyncio.Lock()
        held, done = asyncio.Event(), asyncio.Event()

        async def holder():
            async with lock:
                held.set()
                await done.wait()

        async def impatient():
            try:
                async with asyncio.timeout(0.01):
                    await lock.acquire()
            except TimeoutError:
                return "timed out"
            lock.release()
            return "took it"

        holding = asyncio.create_task(holder())
        await held.wait()
        assert await asyncio.create_task(impatient()) == "timed out"
        done.set()
        await holding
        assert await asyncio.create_task(impatient()) == "took it"

    assert run(main) == []


# -- where instrumentation reaches -------------------------------------------------------------

ASYNC_ABBA = """
import asyncio
import contextlib

async def main():
    a = asyncio.Lock()
    b = asyncio.Lock()

    async def ab():
        async with a:
            async with b:
                await asyncio.sleep(0)

    async def ba():
        async with b:
            async with a:
                pass

    await asyncio.create_task(ab(), name="ab")
    await asyncio.create_task(ba(), name="ba")

asyncio.run(main())
"""


def test_pylockdep_run_validates_asyncio_locks_from_the_first_line(pytester: pytest.Pytester):
    pytester.makepyfile(prog=ASYNC_ABBA)
    result = pytester.run(sys.executable, "-m", "pylockdep", "run", "prog.py")
    assert result.ret == REPORT_STATUS  # pylockdep's status for "reports were made"
    err = result.stderr.str()
    assert "WARNING: possible circular locking dependency detected" in err
    lines = pytester.path.joinpath("prog.py").read_text().splitlines()
    a_line, b_line = (lines.index(f"    {name} = asyncio.Lock()") + 1 for name in "ab")
    assert "ba/" in err and f"(Lock@prog.py:{a_line})" in err and f"(Lock@prog.py:{b_line})" in err


QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def test_the_plugin_covers_tests_run_by_pytest_asyncio(pytester: pytest.Pytester):
    pytest.importorskip("pytest_asyncio")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_async="""
        import asyncio
        import pytest

        @pytest.mark.asyncio
        async def test_ab_then_ba():
            a = asyncio.Lock()
            b = asyncio.Lock()
            async with a:
                async with b:
                    pass
            async with b:
                async with a:
                    pass

        @pytest.mark.asyncio
        async def test_clean():
            lock = asyncio.Lock()
            async with lock:
                await asyncio.sleep(0)
        """
    )
    with pylockdep.validate(raise_on_report=False):
        result = pytester.runpytest(*QUIET, "-p", "asyncio", "--lockdep", "--lockdep-threading")
    result.assert_outcomes(passed=1, failed=1)
    assert "possible circular locking dependency" in "\n".join(result.outlines)


def test_the_plugin_covers_tests_run_by_anyio_on_asyncio(pytester: pytest.Pytester):
    pytest.importorskip("anyio")
    pytester.makepyfile(
        test_async="""
        import asyncio
        import threading
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        @pytest.mark.anyio
        async def test_thread_lock_across_await():
            lock = threading.Lock()
            with lock:
                await asyncio.sleep(0)
        """
    )
    with pylockdep.validate(raise_on_report=False):
        result = pytester.runpytest(*QUIET, "-p", "anyio", "--lockdep", "--lockdep-threading")
    result.assert_outcomes(failed=1)
    assert "BUG: scheduling while atomic" in "\n".join(result.outlines)


@pytest.mark.parametrize("task_type", ["Task", "_PyTask"])
def test_a_task_that_raised_is_freed_when_its_last_reference_goes(task_type):
    """As without pylockdep (Handle._run drops its handle for this): the step that ran the task
    keeps no reference, so a task nobody awaits is freed at once and the loop's exception handler
    hears that its exception was never retrieved, with no garbage collection."""
    import gc
    import weakref

    async def boom() -> None:
        raise ZeroDivisionError("boom")

    async def main() -> tuple[bool, list[str]]:
        heard: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: heard.append(context["message"]))
        task = getattr(asyncio.tasks, task_type)(boom())  # C's task, and asyncio's pure-Python one
        ref = weakref.ref(task)
        del task
        await asyncio.sleep(0)
        return ref() is None, heard

    gc.disable()
    try:
        freed, heard = asyncio_run(main)
    finally:
        gc.enable()
    assert freed
    assert heard == ["Task exception was never retrieved"]


# -- shield(): its outer future stands for the task it shields ---------------------------------


WAYS_TO_AWAIT_A_CHILD = {
    # the shielded task or gather goes on once the lock is free; wait_for() cancels a bare gather
    "shield(task)": lambda child: asyncio.shield(asyncio.create_task(child())),
    "shield(coroutine)": lambda child: asyncio.shield(child()),
    "gather through 3.11's wait_for task": lambda child: asyncio.gather(asyncio.create_task(child())),
    "shield(gather)": lambda child: asyncio.shield(asyncio.gather(asyncio.create_task(child()))),
}


@pytest.mark.parametrize("how", WAYS_TO_AWAIT_A_CHILD)
def test_awaiting_a_shield_or_a_gather_under_a_lock_the_task_takes_is_circular(how: str):
    """A shield()'s outer future stands for what it shields, a gather()'s future for the tasks it
    gathers, wherever they are awaited: here the task waits for the lock its awaiter holds (a real
    deadlock, escaped by the timeout)."""

    async def main():
        lock = asyncio.Lock()
        done = asyncio.Event()

        async def child():
            async with lock:
                done.set()

        async with lock:
            awaited = WAYS_TO_AWAIT_A_CHILD[how](child)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(awaited, 0.05)
        if how.startswith("shield"):
            await done.wait()

    reports = run(main)
    assert kinds(reports) == ["circular"]
    task_map, lock_class = reports[0].classes
    assert task_map.startswith("(task)test_asyncio.py:")  # the map of the task the child runs in
    assert lock_class == f"Lock@test_asyncio.py:{line_of(main, 'lock = asyncio.Lock()')}"


def test_a_shielded_commit_outliving_its_timed_out_handler_is_clean():
    async def main():
        lock = asyncio.Lock()

        async def commit():
            async with lock:
                await asyncio.sleep(0.02)
                return "ok"

        commit_task = asyncio.create_task(commit())

        async def handler():
            return await asyncio.shield(commit_task)

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(handler(), 0.005)
        assert await commit_task == "ok"
        async with lock:
            pass

    asyncio_run(main)
