"""Who a thread is in a splat: the pid, CPU and kind of task a program says it stands for.

By default a splat names a thread ``name/ident`` with Python's thread ident and prints ``CPU: 0``,
and its trace runs down to threading's bootstrap.  A program that models kernel tasks (kvm_model)
can say, per thread, which task it stands for: a small pid, the simulated CPU it runs on, whether
it is a kernel thread, and its entry function.  Splats then print that pid and CPU, and end the
trace where the kernel's ends (``kthread`` for a kernel thread), with the Python frames below the
entry function after a separator.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from types import CodeType
from typing import Any

_ATTRIBUTE = "_pylockdep_identity"


@dataclasses.dataclass(frozen=True)
class TaskIdentity:
    """The task a thread stands for: ``pid``, simulated ``cpu``, whether it is a ``kthread``, and the
    code of its ``entry`` function (None: traces are not cut)."""

    pid: int
    cpu: int = 0
    kthread: bool = False
    entry: CodeType | None = None

    def __post_init__(self) -> None:
        for name in ("pid", "cpu"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"TaskIdentity: {name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"TaskIdentity: {name} must not be negative, not {value}")
        if not isinstance(self.kthread, bool):
            raise TypeError(f"TaskIdentity: kthread must be True or False, not {self.kthread!r}")
        if self.entry is not None and not isinstance(self.entry, CodeType):
            raise TypeError(f"TaskIdentity: entry must be a code object or None, not {type(self.entry).__name__}")


def identify_thread(
    thread: threading.Thread, *, pid: int, cpu: int = 0, kthread: bool = False, entry: Callable[..., Any] | None = None
) -> None:
    """Make splats show ``thread`` as task ``pid`` on CPU ``cpu`` (a kernel thread when ``kthread``).

    ``entry`` is the function the thread runs as the task (its ``target``, or what that calls):
    call traces end with it, then ``kthread`` and the thread-start frame of the kernel for a kernel
    thread, and the Python frames outside it follow a separator.  Call before the thread takes
    its first lock.  TypeError or ValueError, naming the argument, for a wrong one.
    """
    if not isinstance(thread, threading.Thread):
        raise TypeError(f"identify_thread() needs a threading.Thread, not {type(thread).__name__}")
    if entry is not None and not callable(entry):
        raise TypeError(f"identify_thread(): entry must be a function or None, not {entry!r}")
    while isinstance(entry, functools.partial):
        entry = entry.func
    code = getattr(getattr(entry, "__func__", entry), "__code__", None)
    setattr(thread, _ATTRIBUTE, TaskIdentity(pid, cpu, kthread, code))


def identity_of(thread: threading.Thread | None) -> TaskIdentity | None:
    """The identity given to ``thread`` by :func:`identify_thread`, or None."""
    return getattr(thread, _ATTRIBUTE, None)
