"""CPython's own lock factories, bound once, when pylockdep is imported.

While Python's locks are instrumented, ``_thread.allocate_lock``, ``_thread.RLock``,
``threading._allocate_lock`` and every name a module bound to them make validated locks
(:mod:`pylockdep._threading`).  pylockdep's own bookkeeping locks, and harnesses that must stay
outside the lock graph (kvm_model's), take their locks from here, whatever is installed at the time.
A module outside pylockdep calls them through this module (``_plain.plain_lock()``): a name it bound
to them itself would be rebound by instrumentation like any other.
"""

from __future__ import annotations

from _thread import RLock as plain_rlock
from _thread import allocate_lock as plain_lock

__all__ = ["plain_lock", "plain_rlock"]
