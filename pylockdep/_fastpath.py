"""The optional C fast path (``pylockdep/_speedups.c``) and where it is plugged in.

The C module runs the common case of ``with lock:``, ``acquire()`` and ``release()`` (an
exclusive acquisition on a chain already validated, the release of the most recent lock) and
hands every other call, untouched, to the Python method it wraps.  The Python methods and
:func:`pylockdep._locks._acquire`/``_release`` remain the definition of what happens; the C code
reads and writes the same objects.

Set ``PYLOCKDEP_PURE_PYTHON=1`` to run without it; :data:`ACCELERATED` tells which is in use.
Where the extension could not be built, pylockdep runs in pure Python.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

from ._classes import LockClass, LockKey
from ._task import Task
from ._validator import Validator, active

#: The version of the objects' layout that ``_speedups.c`` reads, which its ``ABI`` must equal.
SPEEDUPS_ABI = 1


def _load() -> ModuleType | None:
    """The C module, set up, or None: turned off, not built, or built from another version."""
    if os.environ.get("PYLOCKDEP_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    if getattr(_speedups, "ABI", None) != SPEEDUPS_ABI:
        warnings.warn(
            f"pylockdep: ignoring {_speedups.__file__}, built from another version; reinstall pylockdep to rebuild it",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    _speedups.setup(active, Validator, Task, LockKey, LockClass)
    return _speedups


_speedups = _load()

#: Whether lock fast paths run in C.
ACCELERATED = _speedups is not None


def accelerate(cls: type, *, enter_returns_self: bool, skip_file: str | None = None, recursive: bool = False) -> None:
    """Give ``cls`` C versions of its ``__enter__``, ``acquire``, ``__exit__`` and ``release``.

    Each wraps the Python method defined in ``cls`` itself (and replaces every alias of it, such as
    ``lock = acquire``).  ``__enter__`` returns the lock when ``enter_returns_self``, else True.
    Acquisitions from code in ``skip_file`` always take the Python path (threading's own callers,
    whose site is found further up the stack).  ``recursive``: the owner may take the lock again,
    counted in ``_count`` with the owner's thread ident in ``_ident`` (``threading.RLock``).  Does
    nothing when the C module is not in use.

    ``cls`` must keep ``_key``, ``_try``, ``_unlock`` and ``_owner`` in ``__slots__``, and so must
    its subclasses (the C code reads them in place); a subclass that redefines one of them as a
    method or property would be misread.
    """
    if _speedups is None:
        return
    own = vars(cls)
    fast = {
        "__enter__": _speedups.Acquire(own["__enter__"], cls, enter_returns_self, skip_file, recursive),
        "acquire": _speedups.Acquire(own["acquire"], cls, False, skip_file, recursive),
        "__exit__": _speedups.Release(own["__exit__"], cls, -1, recursive),
        "release": _speedups.Release(own["release"], cls, 1, recursive),
    }
    replacing = {id(own[method]): replacement for method, replacement in fast.items()}
    for name, value in list(own.items()):
        if id(value) in replacing:
            setattr(cls, name, replacing[id(value)])
