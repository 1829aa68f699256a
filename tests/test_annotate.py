"""Annotations for Python's locks: set_class(), nested() and lockdep_off() (API.md, "precision, annotations")."""

from __future__ import annotations

import asyncio
import queue
import sys
import threading

import pytest
from _abba import take_ab_then_ba

import pylockdep
from pylockdep._frames import short_filename

pytestmark = pytest.mark.timeout(60)
FILE = short_filename(__file__)


@pytest.fixture
def v():
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        yield v


def two_locks_from_one_line(factory):
    return [factory() for _ in range(2)]


# -- set_class ---------------------------------------------------------------------------------


def test_set_class_splits_locks_of_one_creation_site_so_abba_between_them_is_circular(v):
    a, b = two_locks_from_one_line(threading.Lock)
    pylockdep.set_class(a, "Account.lock")
    line_a = a._key.site[1]
    pylockdep.set_class(b, "Bank.lock")
    take_ab_then_ba(a, b)
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(report.classes) == [f"Account.lock@{FILE}:{line_a}", f"Bank.lock@{FILE}:{line_a + 2}"]


def test_set_class_with_one_name_gives_locks_of_two_sites_one_class(v):
    a = threading.RLock()
    b = threading.RLock()
    for lock in (a, b):
        pylockdep.set_class(lock, "Shared")
    assert a._key is b._key
    take_ab_then_ba(a, b)  # one class, two instances in both orders
    assert [r.kind for r in v.reports] == ["circular"]
    assert v.reports[0].classes[0].startswith("Shared@")


def shared_lock_from_one_site():
    lock = threading.Lock()
    pylockdep.set_class(lock, "Shared")
    return lock


def shared_lock_from_another_site():
    lock = threading.Lock()
    pylockdep.set_class(lock, "Shared")
    return lock


def test_one_name_given_at_two_sites_is_one_class_and_reports_name_each_instances_site(v):
    # The helpers make the lock they return: each lock was made where its helper was called.
    a_made = sys._getframe().f_lineno + 1
    a = shared_lock_from_one_site()
    b = shared_lock_from_another_site()
    b_made = a_made + 1
    assert a._key is b._key
    take_ab_then_ba(a, b)
    (report,) = v.reports
    named = shared_lock_from_one_site.__code__.co_firstlineno + 2
    assert report.kind == "circular"
    assert report.classes == (f"Shared@{FILE}:{named}",) * 2  # the class: where the name was first given
    lines = report.text.splitlines()
    taking = lines[next(i for i, x in enumerate(lines) if x.endswith("is trying to acquire lock:")) + 1]
    held = lines[lines.index("but task is already holding another instance of its class:") + 1]
    assert taking.startswith(f"{id(a):016x} (Shared@") and taking.endswith(f", made at {FILE}:{a_made}")
    assert held.startswith(f"{id(b):016x} (Shared@") and held.endswith(f", made at {FILE}:{b_made}")


def test_a_lock_that_keeps_its_own_class_shows_no_made_at(v):
    a, b = threading.Lock(), threading.Lock()
    take_ab_then_ba(a, b)
    (report,) = v.reports
    assert "made at" not in report.text


def test_set_class_keeps_a_kernel_lock_types_name_bare_and_leaves_plain_locks_alone(v):
    m = pylockdep.Mutex("m")
    pylockdep.set_class(m, "other")
    assert m.name == "other"
    plain = threading._allocate_lock()  # CPython's own: nothing to set
    pylockdep.set_class(plain, "ignored")
    with pytest.raises(TypeError):
        pylockdep.set_class(m, "")


# -- nested ------------------------------------------------------------------------------------


def test_nested_takes_a_python_lock_of_the_held_class_as_a_subclass(v):
    outer, inner = two_locks_from_one_line(threading.Lock)
    with outer, pylockdep.nested(inner, 1):
        assert inner.locked()
    assert not inner.locked() and not outer.locked()
    assert v.reports == []
    (edge,) = v.graph.edges()
    assert (edge.prev.subclass, edge.next.subclass) == (0, 1)


def test_nested_enters_an_owned_rlock_again_and_releases_it_once(v):
    r = threading.RLock()
    with r, pylockdep.nested(r, 1):
        assert r._recursion_count() == 2
    assert not r._is_owned() and v.reports == []


def test_nested_of_a_kernel_lock_is_its_own_nested_and_a_plain_lock_is_just_held(v):
    a, b = two_locks_from_one_line(lambda: pylockdep.Mutex("m"))
    with a, pylockdep.nested(b, 1):
        pass
    plain = threading._allocate_lock()
    with pylockdep.nested(plain, 1):
        assert plain.locked()
    assert v.reports == []
    with pytest.raises(ValueError):
        pylockdep.nested(threading.Lock(), 8)


@pytest.mark.parametrize("not_a_lock", [42, "lock", None, object()])
def test_annotations_refuse_what_is_not_a_lock_by_name(v, not_a_lock):
    with pytest.raises(TypeError, match=r"set_class\(\) needs a lock .*not " + type(not_a_lock).__name__):
        pylockdep.set_class(not_a_lock, "name")
    with pytest.raises(TypeError, match=r"nested\(\) needs a lock"):
        pylockdep.nested(not_a_lock, 1)


def test_nested_checks_the_subclass_of_a_lock_pylockdep_does_not_validate_too(v):
    plain = threading._allocate_lock()
    with pytest.raises(ValueError):
        pylockdep.nested(plain, 8)
    with pytest.raises(TypeError):
        pylockdep.nested(plain, "1")
    pylockdep.set_class(pylockdep.SRCU("s"), "srcu class")  # validated, though it has no acquire()


# -- lockdep_off -------------------------------------------------------------------------------


def test_lockdep_off_learns_and_reports_nothing_in_the_region(v):
    a = threading.Lock()
    b = threading.Lock()
    with a, b:
        pass
    with pylockdep.lockdep_off(), b, a:  # the inverse order, unseen
        pass
    assert v.reports == []
    assert len(list(v.graph.edges())) == 1


def test_lockdep_off_is_per_thread_and_ends_with_its_block(v):
    a = threading.Lock()
    b = threading.Lock()
    with pylockdep.lockdep_off():
        with a, b:
            pass
        with pylockdep.lockdep_off():  # regions nest
            pass

        def other_thread():
            with b, a:
                pass

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    # b -> a, from the other thread (which also ran under its completion map: (thread) -> b).
    lock_edges = [(e.prev.name, e.next.name) for e in v.graph.edges() if not e.prev.name.startswith("(thread)")]
    assert v.reports == [] and lock_edges == [(b._key.name, a._key.name)]
    with a, b:  # after the block: validated again, closing the cycle
        pass
    assert [r.kind for r in v.reports] == ["circular"]


def test_lockdep_off_left_more_often_than_entered_is_refused(v):
    """Leaving the block without entering it, or once more than entered, raises and leaves the
    thread validated (a negative count would have suspended it for good)."""
    off = pylockdep.lockdep_off()
    with pytest.raises(RuntimeError, match=r"^lockdep_off\(\): block left more often than entered$"):
        off.__exit__(None, None, None)
    with off:
        pass
    with pytest.raises(RuntimeError, match="left more often than entered"):
        off.__exit__(None, None, None)
    take_ab_then_ba(threading.Lock(), threading.Lock())
    assert [r.kind for r in v.reports] == ["circular"]


def test_a_lock_taken_in_the_region_may_be_released_after_it(v):
    a = threading.Lock()
    b = threading.Lock()
    with pylockdep.lockdep_off():
        a.acquire()
    with b:  # a is still held, and orders b after it
        pass
    a.release()
    assert v.reports == []
    assert [(e.prev.name, e.next.name) for e in v.graph.edges()] == [(a.name, b.name)]


class _Worker:
    """A worker object with a queue of its own, made on one line for every worker, and a consumer
    task running ``handler`` on each item; ``name`` gives the queue a class of its own."""

    def __init__(self, handler, name=None):
        self.q: asyncio.Queue[int] = asyncio.Queue()
        if name is not None:
            pylockdep.set_class(self.q, name)
        self.handler = handler
        self.task = asyncio.create_task(self.run())

    async def run(self):
        while True:
            item = await self.q.get()
            try:
                await self.handler(item)
            finally:
                self.q.task_done()


def _join_one_workers_queue_under_a_lock_another_takes(named: bool) -> list[pylockdep.Report]:
    async def main():
        db_lock = asyncio.Lock()

        async def write_row(item):
            async with db_lock:
                await asyncio.sleep(0)

        async def write_audit(item):
            await asyncio.sleep(0)

        db = _Worker(write_row, "db" if named else None)
        audit = _Worker(write_audit, "audit" if named else None)
        db.q.put_nowait(1)
        await db.q.join()
        async with db_lock:  # only the db worker's consumer takes it
            audit.q.put_nowait(2)
            await audit.q.join()
        for worker in (db, audit):
            worker.task.cancel()
        await asyncio.gather(db.task, audit.task, return_exceptions=True)

    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        asyncio.run(main())
    return v.reports


def test_set_class_gives_each_workers_queue_a_class_of_its_own():
    """Queues made on one line are one class: joining one under a lock that another one's consumer
    takes is reported.  Named apart by set_class(), they are judged apart."""
    assert [r.kind for r in _join_one_workers_queue_under_a_lock_another_takes(named=False)] == ["circular"]
    assert _join_one_workers_queue_under_a_lock_another_takes(named=True) == []


def test_set_class_of_a_queue_names_its_map_and_leaves_a_plain_queue_alone():
    with pylockdep.instrument_threading():
        q: queue.Queue[int] = queue.Queue()
    line = sys._getframe().f_lineno + 1
    pylockdep.set_class(q, "jobs")
    assert q._lockdep_map.name == f"(queue)jobs@{FILE}:{line}"
    plain: queue.Queue[int] = queue.Queue()
    pylockdep.set_class(plain, "plain")  # made without instrumentation: nothing to name
    assert not hasattr(plain, "_lockdep_map")
    with pytest.raises(TypeError, match="non-empty name"):
        pylockdep.set_class(q, "")
