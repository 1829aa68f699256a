"""Kernel lock types and the wait types lockdep gives them.

A wait type says how a lock waits: spinning for real (``raw_spinlock_t``), spinning only on a
normal kernel and sleeping on PREEMPT_RT (``spinlock_t``, ``rwlock_t``: "CONFIG"), or sleeping
(``mutex``, ``rw_semaphore``).  The wait-context rule (:func:`pylockdep._checks.check_wait_context`)
compares them; the irq and preemption behaviour of an acquisition also follows from the type.
"""

from __future__ import annotations

from dataclasses import dataclass

# Wait types as lockdep numbers them with CONFIG_PROVE_RAW_LOCK_NESTING.
WAIT_INV = 0  # not checked (SRCU, completions, ...)
WAIT_FREE = 1  # wait-free: RCU readers
WAIT_SPIN = 2  # spins everywhere
WAIT_CONFIG = 3  # spins on a normal kernel, sleeps on PREEMPT_RT
WAIT_SLEEP = 4  # always sleeps
WAIT_MAX = 5  # process context: anything goes

# Without raw-lock nesting checks CONFIG collapses onto SPIN and the values above it move down
# by one, so only "sleeping inside spinning" can fail.
_WITHOUT_NESTING = {WAIT_INV: 0, WAIT_FREE: 1, WAIT_SPIN: 2, WAIT_CONFIG: 2, WAIT_SLEEP: 3, WAIT_MAX: 4}


def effective_wait(wait: int, nesting: bool) -> int:
    """Map a wait type to the value lockdep uses with (``nesting``) or without raw-lock nesting checks."""
    return wait if nesting else _WITHOUT_NESTING[wait]


@dataclass(frozen=True)
class LockType:
    """What the kernel knows about one lock primitive.

    ``spins`` is true when the lock spins (and so disables preemption) on a normal kernel;
    ``sleeps_on_rt`` when PREEMPT_RT turns it into a sleeping rt_mutex; ``sleeps`` when it always
    sleeps.  ``owned`` locks have an owner thread, so a wait on them can be proven to be for ever.
    ``suspends`` marks asyncio's locks, whose waits suspend a task instead of blocking the thread.
    ``check`` is false for lockdep's check=0 maps (the RCU readers): tracked, held, printed and
    wait-context checked, but they add no dependencies.  ``pseudo`` marks completion maps (the
    work a thread, a pool or a queue consumer is doing): held, never locked, so never leaked.
    ``lock_fn``/``rt_lock_fn`` name the kernel function that takes it, for call traces.
    ``python`` marks Python's own lock types (threading's and asyncio's), where Python's semantics
    win: instances of one class may nest in a consistent order (:mod:`pylockdep._instances`), and a
    ``threading.Lock`` released by another thread is a hand-off signal.
    """

    name: str
    inner: int
    outer: int
    spins: bool = False
    sleeps_on_rt: bool = False
    sleeps: bool = False
    owned: bool = True
    check: bool = True
    suspends: bool = False
    pseudo: bool = False
    lock_fn: str = "lock_acquire"
    rt_lock_fn: str = ""
    python: bool = False

    def spins_under(self, preempt_rt: bool) -> bool:
        """True when taking this lock disables preemption on the configured kernel."""
        return self.spins and not (preempt_rt and self.sleeps_on_rt)

    def sleeps_under(self, preempt_rt: bool) -> bool:
        """True when a blocking acquisition of this lock may sleep on the configured kernel."""
        return self.sleeps or (preempt_rt and self.sleeps_on_rt)

    def function(self, preempt_rt: bool) -> str:
        """The kernel function a call trace shows for a blocking acquisition."""
        return self.rt_lock_fn if preempt_rt and self.rt_lock_fn else self.lock_fn


RAW_SPINLOCK = LockType("raw_spinlock_t", WAIT_SPIN, WAIT_SPIN, spins=True, lock_fn="_raw_spin_lock")
SPINLOCK = LockType(
    "spinlock_t",
    WAIT_CONFIG,
    WAIT_CONFIG,
    spins=True,
    sleeps_on_rt=True,
    lock_fn="_raw_spin_lock",
    rt_lock_fn="rt_spin_lock",
)
RWLOCK = LockType(
    "rwlock_t",
    WAIT_CONFIG,
    WAIT_CONFIG,
    spins=True,
    sleeps_on_rt=True,
    lock_fn="_raw_write_lock",
    rt_lock_fn="rt_write_lock",
)
MUTEX = LockType("struct mutex", WAIT_SLEEP, WAIT_SLEEP, sleeps=True, lock_fn="mutex_lock")
RWSEM = LockType("struct rw_semaphore", WAIT_SLEEP, WAIT_SLEEP, sleeps=True, lock_fn="down_write")
SRCU = LockType("struct srcu_struct", WAIT_INV, WAIT_INV, lock_fn="synchronize_srcu")
RCU = LockType("rcu_read_lock", WAIT_CONFIG, WAIT_FREE, check=False, lock_fn="rcu_read_lock")
# rcu_read_lock_sched(): preemption off, and only truly spinning locks inside (inner SPIN).
RCU_SCHED = LockType("rcu_read_lock_sched", WAIT_SPIN, WAIT_FREE, check=False, lock_fn="rcu_read_lock_sched")
# Python's threading.Lock: a sleeping lock without an owner (any thread may release it).
PY_LOCK = LockType(
    "threading.Lock", WAIT_SLEEP, WAIT_SLEEP, sleeps=True, owned=False, lock_fn="Lock.acquire", python=True
)
PY_RLOCK = LockType("threading.RLock", WAIT_SLEEP, WAIT_SLEEP, sleeps=True, lock_fn="RLock.acquire", python=True)
# asyncio.Lock: a sleeping lock owned by the asyncio task that took it; waiting suspends the task.
# Python's: instances of one class nest per instance, as threading's locks do.
ASYNC_LOCK = LockType(
    "asyncio.Lock", WAIT_SLEEP, WAIT_SLEEP, sleeps=True, suspends=True, lock_fn="Lock.acquire", python=True
)
# A completion map: the pseudo-lock a thread, a work item, a pool or a queue's consumers hold while
# they work, and that waiting for them touches (pylockdep._waits).  Waiting sleeps; no wait type.
COMPLETION = LockType(
    "completion", WAIT_INV, WAIT_INV, sleeps=True, owned=False, pseudo=True, lock_fn="wait_for_completion"
)


def is_plain_lock(ltype: LockType) -> bool:
    """Whether ``ltype`` is ``threading.Lock``'s: Python's, without an owner (not a pseudo-lock)."""
    return ltype.python and not ltype.owned


def may_hand_off(ltype: LockType) -> bool:
    """Whether CPython lets any thread or task release a lock of ``ltype`` (``threading.Lock``,
    ``asyncio.Lock``, which the validator holds to its taker all the same): such a lock may be a
    hand-off signal or a token (:func:`pylockdep._checks.check_token_held`)."""
    return ltype is ASYNC_LOCK or is_plain_lock(ltype)


def locktype_named(name: str) -> LockType:
    """The lock type whose ``name`` is ``name`` (KeyError for none)."""
    return _BY_NAME[name]


_BY_NAME = {value.name: value for value in list(globals().values()) if isinstance(value, LockType)}
