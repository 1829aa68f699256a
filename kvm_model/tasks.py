"""The model's threads: started under the names, pids and CPUs of the kernel tasks they stand for.

The thread name is what a splat prints as the task (``kswapd0``, ``CPU 0/KVM``), so every thread
of the model is started through :meth:`Tasks.spawn`, which also gives it a small kernel-like pid
(kernel threads the pid a booted machine gives them, ``kswapd0`` the seed's 55; user tasks from
1000 up) and the simulated CPU it runs on; pylockdep prints both.  A kernel thread's trace ends in
``kthread``, a user task's in the system call it made.  A thread that dies with an exception does
not take the run down silently: the failure is kept in :attr:`Tasks.errors`.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pylockdep
from pylockdep import _plain

TIMEOUT = 60.0  # seconds any one phase of a run may take before the run is declared stuck
FIRST_USER_PID = 1000


def current_cpu() -> int:
    """``smp_processor_id()``: the simulated CPU the calling model thread runs on (0 outside the model)."""
    identity = pylockdep.identity_of(threading.current_thread())
    return identity.cpu if identity is not None else 0


class Event:
    """``threading.Event``, made of bare CPython locks (:mod:`pylockdep._plain`), for the model's own signalling.

    The harness around the modelled kernel (phase signals, stop flags, IPI completions) is not
    part of the locking being modelled.  Built on locks that pylockdep never instruments, it stays
    out of the lock graph even when Python's locks are validated too (``pytest --lockdep-threading``,
    ``pylockdep run``), where an Event set under a raw spinlock would read as a sleeping lock.
    Like the kernel's ``complete()``, :meth:`set` may be called in any context.
    """

    def __init__(self) -> None:
        self._lock = _plain.plain_lock()
        self._waiters: list[Any] = []
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._lock:
            self._flag = True
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.release()

    def clear(self) -> None:
        with self._lock:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set, at most ``timeout`` seconds; True if it was set."""
        with self._lock:
            if self._flag:
                return True
            waiter = _plain.plain_lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(True, -1 if timeout is None else timeout):
            return True
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return self._flag


class ModelError(RuntimeError):
    """The model itself went wrong (a phase never finished, a thread crashed)."""


class Tasks:
    """The threads of one run and the failures they ended with."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.failed = Event()
        self._threads: list[threading.Thread] = []
        self._lock = _plain.plain_lock()
        self._next_pid = FIRST_USER_PID

    def spawn(
        self, name: str, fn: Callable[..., Any], *args: Any, pid: int | None = None, cpu: int = 0, kthread: bool = False
    ) -> threading.Thread:
        """Start ``fn(*args)`` in a new thread called ``name``, as task ``pid`` on simulated ``cpu``.

        Without ``pid`` the task gets the next free user pid.  ``kthread`` marks a kernel thread
        (its trace ends in ``kthread``).  pylockdep's splats print the pid and CPU, and end the
        trace at ``fn`` (:func:`pylockdep.identify_thread`).
        """
        with self._lock:
            if pid is None:
                pid, self._next_pid = self._next_pid, self._next_pid + 1
            thread = threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True)
            pylockdep.identify_thread(thread, pid=pid, cpu=cpu, kthread=kthread, entry=fn)
            self._threads.append(thread)
        thread.start()
        return thread

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:  # every failure must reach the run's result
            if isinstance(exc, ModelError) and self.failed.is_set():
                return  # a consequence of the first failure, which is already recorded
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.fail(
                f"thread {threading.current_thread().name!r} failed: "
                f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
            )

    def fail(self, message: str) -> None:
        """Record a failure; every thread waiting in :meth:`wait_for` gives up."""
        with self._lock:
            self.errors.append(message)
        self.failed.set()

    def wait_for(self, event: Event, what: str, timeout: float = TIMEOUT) -> None:
        """Wait for ``event`` unless the run failed; raise :class:`ModelError` on failure or timeout."""
        deadline = time.monotonic() + timeout
        while not event.wait(0.05):
            if self.failed.is_set():
                raise ModelError(f"gave up waiting for {what}: the run failed")
            if time.monotonic() > deadline:
                raise ModelError(f"{what} did not happen within {timeout:.0f}s")

    def join_all(self, timeout: float = TIMEOUT) -> None:
        """Wait for every thread; raise :class:`ModelError` naming those still running."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            raise ModelError(f"threads still running after {timeout:.0f}s: {', '.join(stuck)}")
