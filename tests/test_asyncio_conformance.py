"""CPython's own asyncio lock tests (``test.test_asyncio.test_locks`` and ``test_pep492``) on the
instrumented types.

Each test of CPython's classes runs under a fresh validator with instrumentation installed, so the
``asyncio.Lock()``, ``Condition()``, ``Semaphore()``, ``BoundedSemaphore()`` and ``Event()`` the tests
make are pylockdep's.  Each test must pass and make exactly the reports the rules call for
(:data:`EXPECTED`), no other.
"""

from __future__ import annotations

import unittest

import pytest

import pylockdep

test_locks = pytest.importorskip("test.test_asyncio.test_locks", reason="CPython's test package is not installed")
test_pep492 = pytest.importorskip("test.test_asyncio.test_pep492", reason="CPython's test package is not installed")

pytestmark = pytest.mark.timeout(120)

# Reports the rules call for, by test.  CPython's tests hand locks from task to task: a task (often
# the test method's own, which IsolatedAsyncioTestCase runs as a task) ends holding a lock that the
# test releases later, or drops.  An asyncio.Lock has no owner in CPython, so that is judged when
# validation ends, as for a threading.Lock: released by then, or referred to by nothing, it is no
# leak (test_acquire, test_repr, test_wait).
# test_ambiguous_loops re-takes a lock its task holds, from another loop, to see CPython refuse a lock
# of another loop: CPython's RuntimeError comes first, before any validation, and there is no report.
# Three tests await, holding a lock, a task that is waiting for that lock or comes to wait for it,
# once the test has scheduled its way out (test_acquire_cancel cancels the task; test_cancel_release_race
# cancels it and releases the lock from a call_soon() callback; test_wait_cancel_contested releases the
# lock from one).  The cycle is judged once the callbacks already due have run, and by then it no
# longer stands; the awaited task that ended cancelled is no work the test waited for: no report.
# test_wait_cancel_contested's Condition.wait() runs in a task of its own, which releases the lock the
# test's task took: a hand-off, no report either.  Tests whose lock is released for them before the
# awaited task wants it (by the awaited task's own Condition.wait()) did not hold it all through the
# wait: no dependency, no report.
EXPECTED: dict[str, list[str]] = {}


class Instrumented(unittest.TestCase):
    """Run each test inside validate() and instrumentation; check its reports after."""

    def setUp(self) -> None:
        self._validation = pylockdep.validate(raise_on_report=False)
        self.validator = self._validation.__enter__()
        self._instrumentation = pylockdep.instrument().__enter__()
        self.addCleanup(self._check_reports)
        super().setUp()

    def _check_reports(self) -> None:
        self._instrumentation.__exit__(None, None, None)
        self._validation.__exit__(None, None, None)
        expected = EXPECTED.get(f"{type(self).__name__}.{self._testMethodName}", [])
        kinds = [r.kind for r in self.validator.reports]
        self.assertEqual(kinds, expected, "\n".join(r.text for r in self.validator.reports))


class LockTests(Instrumented, test_locks.LockTests):
    pass


class EventTests(Instrumented, test_locks.EventTests):
    pass


class ConditionTests(Instrumented, test_locks.ConditionTests):
    pass


class SemaphoreTests(Instrumented, test_locks.SemaphoreTests):
    pass


class PEP492LockTests(Instrumented, test_pep492.LockTests):
    pass
