"""The kernel states the model can run as: a kernel version, lock types, and what lockdep said.

The shipped table is locking.txt as of 2f303b74a6 (the fix) plus the model's own records, each
marked with the kernel versions that have it.  A configuration picks a version (which decides the
locks that exist and the version-specific code paths: the shrinker's body, the stop-machine
function names), changes some record types, and states the verdict the real kernel gave: the
report kinds a run must print, without and with PREEMPT_RT.

The three 3.x configurations run the whole machine (:mod:`kvm_model.run`); the later bugs
(``before-<commit>`` / ``<commit>`` pairs) run the few threads that close their chain
(:mod:`kvm_model.later`) with the same lock table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from .locktable import LockRecord, LockTable, load_records, parse_version


@dataclasses.dataclass(frozen=True)
class Config:
    """A kernel state.

    ``version`` is the modelled kernel (``"3.4"``); ``types`` changes record types; ``absent``
    removes records the version would otherwise have; ``scenario`` names the later-bug scenario of
    :mod:`kvm_model.later` (None: the whole 3.x machine); ``verdict`` maps ``preempt_rt`` to the
    report kinds the run prints, in order, checked and printed as that kernel's lockdep did.
    ``modern_first`` are the kinds today's lockdep (``--modern``: invalid wait context with
    CONFIG_PROVE_RAW_LOCK_NESTING) prints before those, for a kernel older than that check.
    """

    name: str
    summary: str
    version: str
    verdict: Mapping[bool, tuple[str, ...]]
    types: Mapping[str, str] = dataclasses.field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    scenario: str | None = None
    modern_first: tuple[str, ...] = ()

    @property
    def era(self) -> str:
        """The lockdep this kernel had, as pylockdep's ``era`` option names it: ``"3.4"`` (up to
        3.9: the ``Pid:`` dump line), ``"3.10"`` (3.10 to 5.6), ``"modern"`` (wait types, 5.7 on)."""
        if self.at_least("5.7"):
            return "modern"
        return "3.10" if self.at_least("3.10") else "3.4"

    def expected(self, preempt_rt: bool, modern: bool = False) -> tuple[str, ...]:
        """The report kinds a run must print, in order (``modern``: as today's lockdep checks)."""
        return (self.modern_first if modern else ()) + tuple(self.verdict[preempt_rt])

    @property
    def count_lock(self) -> str:
        """The lock that guards ``kvm_usage_count`` and hardware enable/disable.

        Until 4a937f96 that was ``kvm_lock`` itself; from then on the raw ``kvm_count_lock``.
        """
        return "kvm_lock" if "kvm_count_lock" in self.absent else "kvm_count_lock"

    @property
    def hotplug_checks_count_under_lock(self) -> bool:
        """Whether the CPU hotplug callback reads the usage count with the count lock held.

        The 3.13 series moved that test inside the lock (4fa92fb25ae5); before it, the callback
        returned early on an unlocked read.
        """
        return self.count_lock == "kvm_count_lock"

    def at_least(self, version: str) -> bool:
        """Whether the modelled kernel is ``version`` or later."""
        return parse_version(self.version) >= parse_version(version)

    @property
    def help_line(self) -> str:
        """The configuration's line in ``--help``: what it is and the verdict it must give."""
        verdicts = []
        for rt in (False, True):
            kinds = ", ".join(self.verdict[rt]) or "clean"
            verdicts.append(f"{'RT' if rt else 'no RT'}: {kinds}")
        if self.modern_first:
            verdicts.append(f"--modern adds first: {', '.join(self.modern_first)}")
        return f"{self.name} ({self.version}): {self.summary} [{'; '.join(verdicts)}]"

    def apply(self, records: Iterable[LockRecord]) -> list[LockRecord]:
        """The records as this configuration has them."""
        return [
            dataclasses.replace(r, type=self.types.get(r.name, r.type))
            for r in records
            if r.name not in self.absent and r.exists_in(self.version)
        ]

    def lock_table(self) -> LockTable:
        """The shipped records with this configuration applied."""
        return LockTable(self.apply(load_records()))


SLEEP = "sleep_in_atomic"
_LATER = {"kvm_lock": "mutex", "kvm->mmu_lock": "rwlock_t"}  # kvm_lock is a mutex from 5.4, mmu_lock an rwlock on x86

CONFIGS: Mapping[str, Config] = {
    c.name: c
    for c in (
        Config(
            "e935b8372cf8",
            "kvm_lock is a raw_spinlock_t and also guards hardware enable; the seed's 3.4-rt splat",
            "3.4",
            {False: (), True: (SLEEP,)},
            types={"kvm_lock": "raw_spinlock_t"},
            absent=frozenset({"kvm_count_lock"}),
            modern_first=("invalid_wait_context",),
        ),
        Config(
            "naive-revert",
            "kvm_lock a spinlock_t again but still guarding hardware enable (no kvm_count_lock): "
            "CPU_DYING sleeps in the stopper",
            "3.10",
            {False: (), True: (SLEEP,)},
            absent=frozenset({"kvm_count_lock"}),
        ),
        Config(
            "2f303b74a6",
            "kvm_lock is a spinlock_t; the raw kvm_count_lock guards hardware enable (the fix)",
            "3.13",
            {False: (), True: ()},
        ),
        Config(
            "before-8228c77d8b56",
            "pvclock_gtod_sync_lock (spinlock_t) taken in the preempt notifier under rq->__lock",
            "5.15",
            {False: ("invalid_wait_context",), True: ("invalid_wait_context", SLEEP)},
            types=_LATER,
            scenario="pvclock",
        ),
        Config(
            "8228c77d8b56",
            "pvclock_gtod_sync_lock is a raw_spinlock_t (the fix)",
            "5.15",
            {False: (), True: ()},
            types={**_LATER, "kvm_arch::pvclock_gtod_sync_lock": "raw_spinlock_t"},
            scenario="pvclock",
        ),
        Config(
            "before-44d17459626052",
            "cpu_hotplug_lock -> kvm_lock -> slots_lock -> synchronize_srcu -> a vCPU's cpus_read_lock",
            "6.10",
            {False: ("circular",), True: ("circular",)},
            types=_LATER,
            absent=frozenset({"kvm_count_lock"}),
            scenario="usage-lock",
        ),
        Config(
            "44d17459626052",
            "kvm_usage_lock guards hardware enabling; kvm_lock is not taken under cpu_hotplug_lock (the fix)",
            "6.11",
            {False: (), True: ()},
            types=_LATER,
            absent=frozenset({"kvm_count_lock"}),
            scenario="usage-lock",
        ),
        Config(
            "before-310bc39546a4",
            "Xen EVTCHNOP_send takes kvm->lock inside vcpu->mutex's kvm->srcu read side (6.2-rc)",
            "6.2",
            {False: ("circular",), True: ("circular",)},
            types=_LATER,
            absent=frozenset({"kvm_arch::xen.xen_lock"}),
            scenario="xen",
        ),
        Config(
            "310bc39546a4",
            "the Xen event channel paths take the leaf kvm->arch.xen.xen_lock (the fix)",
            "6.2",
            {False: (), True: ()},
            types=_LATER,
            scenario="xen",
        ),
        Config(
            "before-0acc7239c20a",
            "arm64 PSCI CPU_ON takes kvm->lock under vcpu->mutex, against kvm->lock -> vcpu->mutex "
            "(42a90008f890's hint)",
            "6.3",
            {False: ("circular",), True: ("circular",)},
            types=_LATER,
            absent=frozenset({"vcpu_arch::mp_state_lock"}),
            scenario="arm64-cpu-on",
        ),
        Config(
            "0acc7239c20a",
            "arm64 CPU_ON takes vcpu->arch.mp_state_lock instead of kvm->lock (the fix)",
            "6.3",
            {False: (), True: ()},
            types=_LATER,
            absent=frozenset({"kvm_count_lock"}),
            scenario="arm64-cpu-on",
        ),
    )
}
