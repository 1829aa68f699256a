"""The kernel states the model can run as: each one is the lock table with some types changed.

The shipped table is locking.txt as of 2f303b74a6 (the fix).  The older states differ only in
the type of ``kvm_lock`` and in whether ``kvm_count_lock`` exists; every code path is the same,
and it asks :attr:`Config.count_lock` which lock guards hardware enabling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from .locktable import LockRecord, LockTable, load_records


@dataclasses.dataclass(frozen=True)
class Config:
    """A kernel state: record types to change, records that do not exist yet, and a summary."""

    name: str
    summary: str
    types: Mapping[str, str] = dataclasses.field(default_factory=dict)
    absent: frozenset[str] = frozenset()

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

    def apply(self, records: Iterable[LockRecord]) -> list[LockRecord]:
        """The records as this configuration has them."""
        return [
            dataclasses.replace(r, type=self.types.get(r.name, r.type)) for r in records if r.name not in self.absent
        ]

    def lock_table(self) -> LockTable:
        """The shipped records with this configuration applied."""
        return LockTable(self.apply(load_records()))


CONFIGS: Mapping[str, Config] = {
    c.name: c
    for c in (
        Config(
            "e935b8372cf8",
            "kvm_lock is a raw_spinlock_t and also guards hardware enable and the usage count",
            types={"kvm_lock": "raw_spinlock_t"},
            absent=frozenset({"kvm_count_lock"}),
        ),
        Config(
            "naive-revert",
            "kvm_lock is a spinlock_t again but still guards hardware enable (no kvm_count_lock)",
            absent=frozenset({"kvm_count_lock"}),
        ),
        Config("2f303b74a6", "kvm_lock is a spinlock_t; the raw kvm_count_lock guards hardware enable (the fix)"),
    )
}
