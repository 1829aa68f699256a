"""The switches of the model: which version of each fast-page-fault rule of locking.txt it runs.

Each race flips one switch away from the rule that prevents it (the defaults, as in Linux 3.10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VolatileRule = Literal["3.4", "3.10"]
FastPathRule = Literal["indirect", "direct-only", "pin-pfn"]
FlushRule = Literal["caller-read", "mmu_spte_update"]
WalkRule = Literal["irqs-off", "unprotected"]

_WORDS = {
    "3.4": "volatile sptes: the 3.4 rule (A clear, or W set and D clear): an spte the fast path may make "
    "writable can still be overwritten by a plain store",
    "3.10": "volatile sptes: the 3.10 rule: an spte the fast path may change is always updated with xchg",
    "indirect": "fast page fault: allowed on indirect shadow pages, trusting the gfn in sp->gfns",
    "direct-only": "fast page fault: direct shadow pages only (their gfn is fixed by position)",
    "pin-pfn": "fast page fault: on indirect pages only after pinning gfn -> pfn with gfn_to_pfn_atomic",
    "caller-read": "TLB flush on W -> read-only: decided from the caller's earlier plain read of the spte",
    "mmu_spte_update": "TLB flush on W -> read-only: decided by mmu_spte_update from the value it replaced",
    "irqs-off": "lockless walk: interrupts off between reading the spte and its cmpxchg "
    "(walk_shadow_page_lockless_begin/end), so a remote TLB flush, and the free it precedes, waits for it",
    "unprotected": "lockless walk: unprotected (locking.txt's hypothetical): a remote TLB flush does not wait "
    "for a CPU between reading the spte and its cmpxchg",
}


@dataclass(frozen=True)
class Rules:
    """One choice per rule.

    ``volatile``: F1 (``"3.4"``) or F2 (``"3.10"``) definition of an spte with volatile bits, which decides
    between a plain store and ``xchg`` when an spte is changed under ``mmu_lock``.
    ``fast_path``: G1 (``"indirect"``), G2 (``"direct-only"``) or the documented alternative to G2,
    ``"pin-pfn"``.
    ``flush``: whether a W -> read-only change asks for a TLB flush from a stale read or from the value it
    replaced.
    ``walk``: whether the fast path's lockless walk runs with interrupts off (3.10), which makes the flush
    IPI that must come before a shadow page or frame is freed wait until the walker has done its cmpxchg.
    """

    volatile: VolatileRule = "3.10"
    fast_path: FastPathRule = "direct-only"
    flush: FlushRule = "mmu_spte_update"
    walk: WalkRule = "irqs-off"

    def describe(self) -> list[str]:
        """One line per rule, in words."""
        return [_WORDS[self.volatile], _WORDS[self.fast_path], _WORDS[self.flush], _WORDS[self.walk]]
