"""pylockdep: a runtime lock-dependency validator modelled on the Linux kernel's lockdep.

Locks carry the kernel lock type they model; every acquisition is checked against the order of
lock classes seen so far, the wait type its context allows, and the irq states the classes were
used in.  A deadlock that *could* happen is reported from a run in which it did not.

See ``API.md`` for the promises; the names below are the public API.

PYTEST_DONT_REWRITE: ``pylockdep run -m pytest`` imports this package before pytest marks the
packages of its plugins for assertion rewriting, and a suite that turns warnings into errors
would stop at pytest's warning that it comes too late; its assertions need no rewriting.
"""

from . import _fork  # noqa: F401 - registers the after-fork reset
from ._annotate import lockdep_off, nested, set_class
from ._context import (
    hardirq,
    irqs_disabled,
    local_bh_disable,
    local_bh_enable,
    local_irq_disable,
    local_irq_enable,
    lockdep_assert_held,
    might_sleep,
    preempt_disable,
    preempt_disabled,
    preempt_enable,
    softirq,
)
from ._guarded import Guarded, guarded_by
from ._identity import TaskIdentity, identify_thread, identity_of
from ._locks import Mutex, RawSpinLock, RWLock, RWSemaphore, SpinLock
from ._options import Options
from ._rcu import (
    RCU,
    RCU_SCHED,
    SRCU,
    rcu_dereference,
    rcu_dereference_sched,
    rcu_read,
    rcu_read_lock,
    rcu_read_lock_sched,
    rcu_read_sched,
    rcu_read_unlock,
    rcu_read_unlock_sched,
)
from ._record import record_graph
from ._report import DeadlockError, LockdepViolation, Report
from ._threading import instrument_threading
from ._validator import Validator, configure, current, validate
from ._version import __version__ as __version__

instrument = instrument_threading  # the general name: threading's and asyncio's locks

__all__ = [
    "SRCU",
    "DeadlockError",
    "LockdepViolation",
    "Mutex",
    "Options",
    "RWLock",
    "RWSemaphore",
    "RawSpinLock",
    "Report",
    "SpinLock",
    "Validator",
    "configure",
    "current",
    "hardirq",
    "irqs_disabled",
    "local_bh_disable",
    "local_bh_enable",
    "local_irq_disable",
    "local_irq_enable",
    "lockdep_assert_held",
    "might_sleep",
    "preempt_disable",
    "preempt_disabled",
    "preempt_enable",
    "rcu_dereference",
    "rcu_read",
    "rcu_read_lock",
    "rcu_read_unlock",
    "softirq",
    "validate",
]
__all__ += ["RCU", "Guarded", "guarded_by"]  # guarded data (the "Protects" column)
__all__ += ["instrument", "instrument_threading", "lockdep_off", "nested", "set_class"]  # Python's own locks
__all__ += [
    "RCU_SCHED",
    "rcu_dereference_sched",
    "rcu_read_lock_sched",
    "rcu_read_sched",
    "rcu_read_unlock_sched",
]  # RCU-sched read sides
__all__ += ["TaskIdentity", "identify_thread", "identity_of"]  # the task a thread stands for in splats
__all__ += ["record_graph"]  # recorded graphs, for pylockdep merge
