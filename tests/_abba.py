"""The ABBA pattern with Python's own locks, shared by tests that run it in process and as a program."""

from __future__ import annotations

import inspect
import threading


def take_ab_then_ba(a: object, b: object) -> None:
    """Take ``a`` then ``b`` in one thread, then ``b`` then ``a`` in another, one after the other.

    The two orders make a circular dependency, but the threads never overlap, so nothing hangs.
    """

    def ab():
        with a, b:
            pass

    def ba():
        with b, a:
            pass

    for fn in (ab, ba):
        t = threading.Thread(target=fn)
        t.start()
        t.join()


# A program (for ``pylockdep run``) whose two locks are made on its lines 2 and 3.
ABBA_PROGRAM = (
    "import threading\na = threading.Lock()\nb = threading.Lock()\n"
    + inspect.getsource(take_ab_then_ba)
    + "take_ab_then_ba(a, b)\n"
)
