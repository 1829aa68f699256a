"""Python's two interrupts, run now in this thread: a finalizer the garbage collector runs, and a
signal handler (shared by the tests of the GC and SIGNAL usage states and of re-entrancy guards)."""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable


class Circular:
    """Garbage in a reference cycle, so that only the collector frees it, whose ``__del__`` runs
    ``body``."""

    def __init__(self, body: Callable[[], object]) -> None:
        self.me = self
        self.body = body

    def __del__(self) -> None:
        self.body()


def in_finalizer(body: Callable[[], object]) -> None:
    """Run ``body`` in a finalizer the collector runs, now, in this thread."""
    Circular(body)
    gc.collect()


def run_as_signal_handler(body: Callable[[], object]) -> None:
    """Run ``body`` as the handler of a signal raised now (SIGUSR1), in the main thread."""
    signal.signal(signal.SIGUSR1, lambda signum, frame: body())
    signal.raise_signal(signal.SIGUSR1)
