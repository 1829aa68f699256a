"""Waiting, in a test, for a thread to block where the validator sees it; for what a wait leaves
behind to be freed; and for a program run where no other thread may end its waits."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable

import pylockdep


def run_alone(program: str) -> subprocess.CompletedProcess[str]:
    """Run ``program`` (dedented) in a fresh interpreter, where no other thread is left to release
    a lock: in this one pytest-xdist's workers run execnet's threads, any of which might (a wait
    for a lock nobody else would release then goes on)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(program)], capture_output=True, text=True, timeout=60)


def wait_until_waiting(v: pylockdep.Validator, thread: threading.Thread) -> None:
    """Poll until ``thread`` is blocked in a wait ``v`` validates (a lock, a join, a future): no
    timing assumption, only progress; an AssertionError if it ends or 20 s pass first."""
    deadline = time.monotonic() + 20
    while not any(t.ident == thread.ident and t.waiting is not None for t in list(v.tasks.values())):
        assert thread.is_alive() and time.monotonic() < deadline, f"{thread.name} never waited"
        time.sleep(0.005)


def freed_without_the_collector(wait: Callable[[], object]) -> bool:
    """Whether the exception that ``wait()`` raises is freed by reference counting alone once it is
    handled, as CPython's ``Future.result()`` arranges (a cycle through a waiting frame would keep
    it alive until the cyclic collector ran, which is off meanwhile)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        try:
            wait()
        except Exception as exc:
            error = weakref.ref(exc)
        else:
            raise AssertionError("wait() raised nothing")
        return error() is None
    finally:
        if was_on:
            gc.enable()
