"""kvm_model: a threaded model of KVM's MMU, shrinker and locks, validated by pylockdep.

Run as the kernel was after e935b8372cf8 ("KVM: Convert kvm_lock to raw_spinlock") on
PREEMPT_RT, pylockdep reports the seed's "sleeping function called from invalid context" from
kswapd0 in mmu_shrink; run as after 2f303b74a6 it is clean.

Public face: :func:`run` (one run, a :class:`RunResult`), :data:`CONFIGS`, the lock table
(:func:`load_records`, :class:`LockRecord`) and :func:`check_invariants`.  The SPTE race models
are in :mod:`kvm_model.races`.
"""

from .config import CONFIGS, Config
from .invariants import check_invariants
from .locktable import LockRecord, LockTable, load_records
from .run import RunResult, run

__all__ = ["CONFIGS", "Config", "LockRecord", "LockTable", "RunResult", "check_invariants", "load_records", "run"]
