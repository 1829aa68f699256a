"""What the slow path keeps about a holder's stack so as not to scan it on every new chain (the wait
types of its irq segment) is what a scan of the stack finds, whatever was done to the stack since
it was kept."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylockdep
from pylockdep._held import H_CLASS

pytestmark = pytest.mark.timeout(120)


def scanned_waits(t):
    return frozenset(e[H_CLASS].ltype.inner for e in t.irq_segment())


# A step: take a lock of one of three kernel types (by index, its class that of its place in a
# list of each type: new chains as the stack grows), release the top one, or enter or leave an
# interrupt handler.
kernel_steps = st.lists(
    st.tuples(st.sampled_from(["raw", "spin", "mutex", "release", "hardirq", "softirq", "leave"]), st.integers(0, 3)),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kernel_steps)
def test_the_wait_types_of_the_irq_segment_are_those_a_scan_finds(steps):
    """After any sequence of takes and releases in and out of interrupt handlers, the wait types
    kept for the irq segment are those of the locks a scan finds taken in the current context."""
    with pylockdep.validate(raise_on_report=False) as v:
        made = {
            "raw": [pylockdep.RawSpinLock(f"raw{i}", key=("facts", "raw", i)) for i in range(4)],
            "spin": [pylockdep.SpinLock(f"spin{i}", key=("facts", "spin", i)) for i in range(4)],
            "mutex": [pylockdep.Mutex(f"mutex{i}", key=("facts", "mutex", i)) for i in range(4)],
        }
        levels: list[tuple[object, list[object]]] = [(None, [])]  # each handler and the locks it took
        for action, n in steps:
            if action in made:
                lock = made[action][n]
                if not any(lock in taken for _, taken in levels):
                    lock.acquire()
                    levels[-1][1].append(lock)
            elif action == "release" and levels[-1][1]:
                levels[-1][1].pop().release()
            elif action in ("hardirq", "softirq") and len(levels) < 3:
                handler = getattr(pylockdep, action)()
                handler.__enter__()
                levels.append((handler, []))
            elif action == "leave" and len(levels) > 1:
                handler, taken = levels.pop()
                for lock in reversed(taken):
                    lock.release()
                handler.__exit__(None, None, None)
            t = v.task()
            assert t.segment_waits() == scanned_waits(t)
        for handler, taken in reversed(levels):
            for lock in reversed(taken):
                lock.release()
            if handler is not None:
                handler.__exit__(None, None, None)
