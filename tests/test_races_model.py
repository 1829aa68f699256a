"""Pieces of the fast page fault model: the volatile rule, host frames, the dirty bitmap."""

from __future__ import annotations

import pytest

from kvm_model.races.dirtylog import DirtyLog
from kvm_model.races.host import FIRST_PFN, HostFrames
from kvm_model.races.mmu import spte_has_volatile_bits
from kvm_model.races.spte import ACCESSED, DIRTY, HOST_WRITEABLE, MMU_WRITEABLE, PRESENT, WRITABLE, make_spte

BOTH_WRITEABLE = HOST_WRITEABLE | MMU_WRITEABLE


@pytest.mark.parametrize(
    ("flags", "under_3_4", "under_3_10"),
    [
        (PRESENT | ACCESSED, False, False),  # read-only, A already set: nothing can change it
        (PRESENT, True, True),  # hardware may still set A
        (PRESENT | WRITABLE | ACCESSED, True, True),  # hardware may still set D
        (PRESENT | WRITABLE | ACCESSED | DIRTY, False, False),
        (PRESENT | ACCESSED | BOTH_WRITEABLE, False, True),  # the fast path may set W: Race A's spte
        (PRESENT | WRITABLE | ACCESSED | DIRTY | BOTH_WRITEABLE, False, True),
        (0, False, False),
    ],
)
def test_volatile_rule_of_each_version(flags: int, under_3_4: bool, under_3_10: bool) -> None:
    spte = make_spte(0x101, flags) if flags else 0
    assert spte_has_volatile_bits(spte, "3.4") is under_3_4
    assert spte_has_volatile_bits(spte, "3.10") is under_3_10


def test_a_freed_frame_is_handed_out_again_first() -> None:
    host = HostFrames()
    pfn = host.gfn_to_pfn(1)
    assert pfn == FIRST_PFN and host.owner(pfn) == 1
    assert host.unmap(1) == pfn and host.owner(pfn) is None
    assert host.free(pfn)
    assert host.gfn_to_pfn(2) == pfn and host.owner(pfn) == 2


def test_a_pinned_frame_is_not_reused_until_unpinned() -> None:
    host = HostFrames()
    pfn = host.gfn_to_pfn(1)
    assert host.gfn_to_pfn_atomic(1) == pfn
    host.unmap(1)
    assert not host.free(pfn)
    assert host.gfn_to_pfn(2) != pfn
    host.release_pfn(pfn)
    assert host.gfn_to_pfn(3) == pfn


def test_atomic_lookup_does_not_fault_pages_in() -> None:
    assert HostFrames().gfn_to_pfn_atomic(7) is None


def test_dirty_bitmap_holds_the_marked_gfns() -> None:
    slot = DirtyLog(base_gfn=64, npages=130)
    for gfn in (64, 130, 193):
        slot.mark_dirty(gfn)
    assert slot.dirty_gfns() == [64, 130, 193]
