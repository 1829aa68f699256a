"""What KVM does to sptes while holding ``mmu_lock``: set, update and clear an spte, zap or write-protect all
the sptes of a gfn (rmap), age them, and flush remote TLBs.

Holding ``mmu_lock`` excludes every other updater but two: the fast page fault, which sets W with ``cmpxchg``,
and the guest "hardware", which sets A and D.  Both run without the lock, so a plain read followed by a plain
store of the same spte can undo what they did in between.  ``spte_has_volatile_bits`` decides when that danger
exists and an ``xchg`` must be used instead; the two versions of that rule are the heart of Race A and Race C.
"""

from __future__ import annotations

from .kvm import Kvm, WriteProtected
from .rules import VolatileRule
from .spte import (
    ACCESSED,
    ACCESSED_BIT,
    DIRTY,
    HOST_WRITEABLE,
    MMU_WRITEABLE,
    PRESENT,
    WRITABLE,
    format_spte,
    is_locklessly_modifiable,
    is_present,
    is_writable,
    make_spte,
    spte_pfn,
)


def spte_has_volatile_bits(spte: int, rule: VolatileRule) -> bool:
    """Whether a lockless agent may change ``spte`` under our feet, so that it must be replaced atomically.

    The 3.4 rule only knows the hardware: it may still set A (if clear) or D (if W is set and D clear).
    The 3.10 rule adds the fast page fault: an spte with both writeable bits may gain W at any moment.
    """
    if rule == "3.10" and is_locklessly_modifiable(spte):
        return True
    if not is_present(spte):
        return False
    return not (spte & ACCESSED and (not is_writable(spte) or spte & DIRTY))


def _store_or_xchg(kvm: Kvm, index: int, old: int, new: int) -> int:
    """Replace the spte read as ``old`` with ``new`` as the volatile rule says; return the replaced value
    (what ``xchg`` returned, or the stale ``old`` after a plain store)."""
    cell = kvm.sp.sptes[index]
    if spte_has_volatile_bits(old, kvm.rules.volatile):
        old = cell.xchg(new)
        kvm.note(f"volatile: xchg(spte, {format_spte(new)}) returned {format_spte(old)}")
    else:
        cell.store(new)
        kvm.note(f"not volatile under the {kvm.rules.volatile} rule: plain store spte = {format_spte(new)}")
    return old


def _track_cleared_bits(kvm: Kvm, old: int, new: int) -> None:
    """Tell the host about an Accessed or Dirty bit that ``old`` had and ``new`` drops."""
    pfn = spte_pfn(old)
    if old & ACCESSED and not new & ACCESSED:
        kvm.note(f"kvm_set_pfn_accessed({pfn:#x})")
    if old & DIRTY and not new & DIRTY:
        kvm.host.set_dirty(pfn)
        kvm.note(f"kvm_set_pfn_dirty({pfn:#x})")
    elif new == 0:
        kvm.note(f"old_spte.D = 0: kvm_set_pfn_dirty({pfn:#x}) not called")


def mmu_spte_update(kvm: Kvm, index: int, new: int) -> bool:
    """Change a present spte into another present one; return True if it went from writable to read-only,
    i.e. if TLBs must be flushed.  The answer comes from the value actually replaced."""
    old = kvm.sp.sptes[index].load()
    kvm.note(f"mmu_spte_update: old_spte = *spte = {format_spte(old)}")
    kvm.point("update.write")
    old = _store_or_xchg(kvm, index, old, new)
    _track_cleared_bits(kvm, old, new)
    return is_writable(old) and not is_writable(new)


def mmu_spte_clear_track_bits(kvm: Kvm, index: int) -> None:
    """Make an spte non-present and pass its Accessed/Dirty bits on to the host."""
    old = kvm.sp.sptes[index].load()
    kvm.note(f"mmu_spte_clear_track_bits: old_spte = *spte = {format_spte(old)}")
    kvm.point("clear.write")
    old = _store_or_xchg(kvm, index, old, 0)
    if is_present(old):
        _track_cleared_bits(kvm, old, 0)


def drop_spte(kvm: Kvm, index: int) -> None:
    """Zap one spte and take it off its gfn's rmap."""
    gfn = kvm.sp.gfn_at(index)
    mmu_spte_clear_track_bits(kvm, index)
    kvm.rmap[gfn].discard(index)


def mmu_set_spte(kvm: Kvm, index: int, gfn: int, pfn: int, *, writable: bool) -> None:
    """Build the spte of a fault handled under ``mmu_lock``.  Unless the gfn is a guest page table, the spte
    keeps both writeable bits even when mapped read-only, so that a later write can take the fast path."""
    flags = PRESENT | ACCESSED | HOST_WRITEABLE
    if gfn not in kvm.shadowed:
        flags |= MMU_WRITEABLE | (WRITABLE if writable else 0)
    new = make_spte(pfn, flags)
    current = kvm.sp.sptes[index].load()
    if is_present(current) and (kvm.sp.gfn_at(index) != gfn or spte_pfn(current) != pfn):
        drop_spte(kvm, index)
        kvm_flush_remote_tlbs(kvm)
        current = 0
    if is_present(current):
        if mmu_spte_update(kvm, index, new):
            kvm_flush_remote_tlbs(kvm)
        return
    kvm.sp.sptes[index].store(new)
    kvm.sp.set_gfn(index, gfn)
    kvm.rmap.setdefault(gfn, set()).add(index)
    kvm.note(f"spte = {format_spte(new)} (gfn {gfn})")


def kvm_flush_remote_tlbs(kvm: Kvm) -> None:
    """Empty every vCPU's TLB.  It stands for the IPI-and-wait of the kernel: when it returns, no vCPU can use
    a translation cached before it."""
    for vcpu in kvm.vcpus.values():
        vcpu.tlb.clear()
    kvm.note("kvm_flush_remote_tlbs()")


def kvm_unmap_rmapp(kvm: Kvm, gfn: int) -> bool:
    """Zap every spte that maps ``gfn``; return whether any was zapped (so TLBs need flushing)."""
    indexes = sorted(kvm.rmap.get(gfn, ()))
    for index in indexes:
        drop_spte(kvm, index)
    return bool(indexes)


def kvm_mmu_notifier_invalidate_page(kvm: Kvm, gfn: int) -> None:
    """The host is taking ``gfn``'s page away: zap its sptes and flush, under ``mmu_lock``."""
    with kvm.mmu_lock:
        kvm.note(f"spin_lock(mmu_lock); kvm_unmap_rmapp(gfn {gfn})")
        if kvm_unmap_rmapp(kvm, gfn):
            kvm_flush_remote_tlbs(kvm)
        kvm.note("spin_unlock(mmu_lock)")


def spte_write_protect(kvm: Kvm, index: int, *, pt_protect: bool) -> bool:
    """Clear W (and, with ``pt_protect``, MMU_WRITEABLE so that the fast path gives up on it too).

    Returns whether TLBs must be flushed.  Under the ``caller-read`` flush rule the answer is taken from the
    plain read made here, before the update; under ``mmu_spte_update`` it is that function's answer.
    """
    spte = kvm.sp.sptes[index].load()
    if not (is_writable(spte) or (pt_protect and is_locklessly_modifiable(spte))):
        kvm.note(f"spte = {format_spte(spte)}: nothing to protect")
        return False
    new = spte & ~(WRITABLE | (MMU_WRITEABLE if pt_protect else 0))
    kvm.note(f"spte_write_protect: spte = *sptep = {format_spte(spte)}, W = {int(is_writable(spte))}")
    flush = mmu_spte_update(kvm, index, new)
    if kvm.rules.flush == "caller-read":
        flush = is_writable(spte)
        kvm.note(f"the flush is decided from the earlier read, which saw W = {int(flush)}")
    return flush


def rmap_write_protect(kvm: Kvm, gfn: int, *, pt_protect: bool) -> bool:
    """Write-protect every spte of ``gfn``; return whether TLBs must be flushed."""
    flush = False
    for index in sorted(kvm.rmap.get(gfn, ())):
        flush |= spte_write_protect(kvm, index, pt_protect=pt_protect)
    return flush


def write_protect_guest_page_table(kvm: Kvm, gfn: int) -> None:
    """The guest starts using ``gfn`` as a page table, so KVM shadows it: from now on every guest store to it
    must trap and be emulated.  Write-protect its sptes (clearing MMU_WRITEABLE too) and flush if asked."""
    with kvm.mmu_lock:
        kvm.note(f"spin_lock(mmu_lock); gfn {gfn} becomes a guest page table: rmap_write_protect(pt_protect)")
        kvm.shadowed.add(gfn)
        if rmap_write_protect(kvm, gfn, pt_protect=True):
            kvm_flush_remote_tlbs(kvm)
        else:
            kvm.note("no TLB flush")
        kvm.history.append(WriteProtected(gfn))
        kvm.note(f"gfn {gfn} is write-protected; spin_unlock(mmu_lock)")


def kvm_age_hva(kvm: Kvm, gfn: int) -> bool:
    """Page aging: clear the Accessed bit of every spte of ``gfn`` (an atomic ``clear_bit``, since the
    hardware may set A or D meanwhile); return whether any was set (the page is young)."""
    young = False
    with kvm.mmu_lock:
        kvm.note(f"spin_lock(mmu_lock); kvm_age_rmapp(gfn {gfn})")
        for index in sorted(kvm.rmap.get(gfn, ())):
            cell = kvm.sp.sptes[index]
            if cell.load() & ACCESSED:
                young = True
                cell.clear_bit(ACCESSED_BIT)
                kvm.note(f"clear_bit(A): spte = {format_spte(cell.load())}")
        kvm.note(f"young = {young}; spin_unlock(mmu_lock)")
    return young
