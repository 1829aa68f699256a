"""Python's locks judged as Python uses them: creation sites, same-class instances, hand-off locks
(API.md, "Python's own locks: precision").  Each false-positive family of issue 14 has a test that
failed before and is clean now; true findings stay found."""

from __future__ import annotations

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


def test_two_creation_sites_on_one_line_are_two_classes_and_their_abba_is_circular(v):
    a, b = threading.Lock(), threading.Lock()
    line = a._key.site[1]
    take_ab_then_ba(a, b)
    (report,) = v.reports
    assert report.kind == "circular"
    assert sorted(report.classes) == sorted([f"Lock@{FILE}:{line}", f"Lock@{FILE}:{line}:30"])


def test_instances_of_one_site_share_a_class():
    with pylockdep.instrument_threading():
        locks = [Scheduler() for _ in range(2)]
    assert locks[0]._jobstores_lock._key is locks[1]._jobstores_lock._key
