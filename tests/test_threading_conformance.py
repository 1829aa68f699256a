"""CPython's own lock conformance suite (``Lib/test/lock_tests.py``) on the instrumented locks.

The classes are subclassed the way ``Lib/test/test_threading.py`` does, with every test run under
a fresh validator and :class:`pylockdep.instrument_threading`, so ``Condition``, ``Event``,
``Semaphore``, ``BoundedSemaphore`` and ``Barrier`` are CPython's own built on instrumented locks.
Each test must pass and make exactly the reports the rules call for (:data:`EXPECTED`), no other.
"""

from __future__ import annotations

import threading
import time
import unittest

import pytest

import pylockdep
from pylockdep import _threading

lock_tests = pytest.importorskip("test.lock_tests", reason="CPython's test package is not installed")

pytestmark = pytest.mark.timeout(120)

# Reports the rules call for, by test.  LockTests.test_reacquire blocks on a Lock its thread holds
# until another thread releases it: a hand-off, no report.  The RLock tests of
# test_different_thread end a thread that still owns an RLock, which nobody can release again.
EXPECTED = {
    "RLockTests.test_different_thread": ["lock_held_at_exit"],
    "ConditionAsRLockTests.test_different_thread": ["lock_held_at_exit"],
}


def made_by(factory_name: str):
    """A type attribute for lock_tests: calls threading's factory at test time, when it is instrumented."""
    return staticmethod(lambda *args, **kwargs: getattr(threading, factory_name)(*args, **kwargs))


class Instrumented(unittest.TestCase):
    """Run each test inside validate() and instrument_threading(); check its reports after."""

    def setUp(self) -> None:
        self._validation = pylockdep.validate(raise_on_report=False)
        self.validator = self._validation.__enter__()
        self._instrumentation = pylockdep.instrument_threading().__enter__()
        self.addCleanup(self._check_reports)
        super().setUp()

    def _check_reports(self) -> None:
        self._instrumentation.__exit__(None, None, None)
        self._validation.__exit__(None, None, None)
        expected = EXPECTED.get(f"{type(self).__name__}.{self._testMethodName}", [])
        deadline = time.monotonic() + 30
        while len(self.validator.reports) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.01)  # a thread's exit is seen when its state is cleared, just after it ends
        kinds = [r.kind for r in self.validator.reports]
        self.assertEqual(kinds, expected, "\n".join(r.text for r in self.validator.reports))


class LockTests(Instrumented, lock_tests.LockTests):
    locktype = made_by("Lock")


class RLockTests(Instrumented, lock_tests.RLockTests):
    locktype = made_by("RLock")


class ConditionAsRLockTests(Instrumented, lock_tests.RLockTests):
    locktype = made_by("Condition")

    def test_recursion_count(self):
        self.skipTest("Condition does not expose _recursion_count() (as in test_threading)")


class EventTests(Instrumented, lock_tests.EventTests):
    eventtype = made_by("Event")


class ConditionTests(Instrumented, lock_tests.ConditionTests):
    condtype = made_by("Condition")


class SemaphoreTests(Instrumented, lock_tests.SemaphoreTests):
    semtype = made_by("Semaphore")


class BoundedSemaphoreTests(Instrumented, lock_tests.BoundedSemaphoreTests):
    semtype = made_by("BoundedSemaphore")


class BarrierTests(Instrumented, lock_tests.BarrierTests):
    barriertype = made_by("Barrier")


def test_the_suite_runs_on_instrumented_locks():
    """Guard against testing CPython's locks by mistake: the factories really are instrumented."""
    with pylockdep.instrument_threading():
        assert type(LockTests.locktype()).__module__ == "pylockdep._threading"
        assert type(ConditionTests.condtype()._lock) is _threading.RLock
        assert type(BarrierTests.barriertype(1)._cond._lock) is _threading.Lock
