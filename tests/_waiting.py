"""Waiting, in a test, for a thread to block where the validator sees it."""

from __future__ import annotations

import threading
import time

import pylockdep


def wait_until_waiting(v: pylockdep.Validator, thread: threading.Thread) -> None:
    """Poll until ``thread`` is blocked in a wait ``v`` validates (a lock, a join, a future): no
    timing assumption, only progress; an AssertionError if it ends or 20 s pass first."""
    deadline = time.monotonic() + 20
    while not any(t.ident == thread.ident and t.waiting is not None for t in list(v.tasks.values())):
        assert thread.is_alive() and time.monotonic() < deadline, f"{thread.name} never waited"
        time.sleep(0.005)
