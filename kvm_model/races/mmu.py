"""What KVM does to sptes while holding ``mmu_lock``: set, update and clear an spte, zap or write-protect all
the sptes of a gfn (rmap), age them, and flush remote TLBs.

Holding ``mmu_lock`` excludes every other updater but two: the fast page fault, which sets W with ``cmpxchg``,
and the guest "hardware", which sets A and D.  Both run without the lock, so a plain read followed by a plain
store of the same spte can undo what they did in between.  ``spte_has_volatile_bits`` decides when that danger
exists and an ``xchg`` must be used instead; the two versions of that rule are the heart of Race A and Race C.
"""

from __future__ import annotations

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
from .vm import RaceVm, WriteProtected


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


def _store_or_xchg(vm: RaceVm, index: int, old: int, new: int) -> int:
    """Replace the spte read as ``old`` with ``new`` as the volatile rule says; return the replaced value
    (what ``xchg`` returned, or the stale ``old`` after a plain store)."""
    cell = vm.sp.sptes[index]
    if spte_has_volatile_bits(old, vm.rules.volatile):
        old = cell.xchg(new)
        vm.note(f"volatile: xchg(spte, {format_spte(new)}) returned {format_spte(old)}")
    else:
        cell.store(new)
        vm.note(f"not volatile under the {vm.rules.volatile} rule: plain store spte = {format_spte(new)}")
    return old


def _track_cleared_bits(vm: RaceVm, old: int, new: int) -> None:
    """Tell the host about an Accessed or Dirty bit that ``old`` had and ``new`` drops."""
    pfn = spte_pfn(old)
    if old & ACCESSED and not new & ACCESSED:
        vm.note(f"kvm_set_pfn_accessed({pfn:#x})")
    if old & DIRTY and not new & DIRTY:
        vm.host.set_dirty(pfn)
        vm.note(f"kvm_set_pfn_dirty({pfn:#x})")
    elif new == 0:
        vm.note(f"old_spte.D = 0: kvm_set_pfn_dirty({pfn:#x}) not called")


def mmu_spte_update(vm: RaceVm, index: int, new: int) -> bool:
    """Change a present spte into another present one; return True if it went from writable to read-only,
    i.e. if TLBs must be flushed.  The answer comes from the value actually replaced."""
    old = vm.sp.sptes[index].load()
    vm.note(f"mmu_spte_update: old_spte = *spte = {format_spte(old)}")
    vm.point("update.write")
    old = _store_or_xchg(vm, index, old, new)
    _track_cleared_bits(vm, old, new)
    return is_writable(old) and not is_writable(new)


def mmu_spte_clear_track_bits(vm: RaceVm, index: int) -> None:
    """Make an spte non-present and pass its Accessed/Dirty bits on to the host."""
    old = vm.sp.sptes[index].load()
    vm.note(f"mmu_spte_clear_track_bits: old_spte = *spte = {format_spte(old)}")
    vm.point("clear.write")
    old = _store_or_xchg(vm, index, old, 0)
    if is_present(old):
        _track_cleared_bits(vm, old, 0)


def drop_spte(vm: RaceVm, index: int) -> None:
    """Zap one spte and take it off its gfn's rmap."""
    gfn = vm.sp.gfn_at(index)
    mmu_spte_clear_track_bits(vm, index)
    vm.rmap[gfn].discard(index)


def mmu_set_spte(vm: RaceVm, index: int, gfn: int, pfn: int, *, writable: bool) -> None:
    """Build the spte of a fault handled under ``mmu_lock``.  Unless the gfn is a guest page table, the spte
    keeps both writeable bits even when mapped read-only, so that a later write can take the fast path."""
    flags = PRESENT | ACCESSED | HOST_WRITEABLE
    if gfn not in vm.shadowed:
        flags |= MMU_WRITEABLE | (WRITABLE if writable else 0)
    new = make_spte(pfn, flags)
    current = vm.sp.sptes[index].load()
    if is_present(current) and (vm.sp.gfn_at(index) != gfn or spte_pfn(current) != pfn):
        drop_spte(vm, index)
        flush_tlbs_and_wait(vm)
        current = 0
    if is_present(current):
        if mmu_spte_update(vm, index, new):
            flush_tlbs_and_wait(vm)
        return
    vm.sp.sptes[index].store(new)
    vm.sp.set_gfn(index, gfn)
    vm.rmap.setdefault(gfn, set()).add(index)
    vm.note(f"spte = {format_spte(new)} (gfn {gfn})")


def flush_tlbs_and_wait(vm: RaceVm) -> None:
    """``kvm_flush_remote_tlbs`` at the SPTE level: empty every guest CPU's TLB.  It stands for the
    kernel's IPI-and-wait: when it returns, no CPU can use a translation cached before it.  A CPU in a
    lockless walk with interrupts off takes the IPI only once it leaves the walk, so the flush waits for it
    (step ``flush.ipi``, only when there is such a CPU)."""
    me = vm.sched.current()
    if any(c.lockless_walk for c in vm.vcpus.values() if c.name != me):
        vm.note("kvm_flush_remote_tlbs(): IPI to a CPU with interrupts off in its lockless walk: wait")
        vm.sched.point("flush.ipi", until=lambda: _in_lockless_walk(vm, me))
    for vcpu in vm.vcpus.values():
        vcpu.tlb.clear()
    vm.note("kvm_flush_remote_tlbs()")


def _in_lockless_walk(vm: RaceVm, me: str) -> str | None:
    """The first CPU other than ``me`` still in a lockless walk, described; None when there is none."""
    busy = next((c.name for c in vm.vcpus.values() if c.lockless_walk and c.name != me), None)
    return None if busy is None else f"{busy} (interrupts off in its lockless walk)"


def kvm_unmap_rmapp(vm: RaceVm, gfn: int) -> bool:
    """Zap every spte that maps ``gfn``; return whether any was zapped (so TLBs need flushing)."""
    indexes = sorted(vm.rmap.get(gfn, ()))
    for index in indexes:
        drop_spte(vm, index)
    return bool(indexes)


def kvm_mmu_notifier_invalidate_page(vm: RaceVm, gfn: int) -> None:
    """The host is taking ``gfn``'s page away: zap its sptes and flush, under ``mmu_lock``."""
    with vm.mmu_lock:
        vm.note(f"spin_lock(mmu_lock); kvm_unmap_rmapp(gfn {gfn})")
        if kvm_unmap_rmapp(vm, gfn):
            flush_tlbs_and_wait(vm)
        vm.note("spin_unlock(mmu_lock)")


def spte_write_protect(vm: RaceVm, index: int, *, pt_protect: bool) -> bool:
    """Clear W (and, with ``pt_protect``, MMU_WRITEABLE so that the fast path gives up on it too).

    Returns whether TLBs must be flushed.  Under the ``caller-read`` flush rule the answer is taken from the
    plain read made here, before the update; under ``mmu_spte_update`` it is that function's answer.
    """
    spte = vm.sp.sptes[index].load()
    if not (is_writable(spte) or (pt_protect and is_locklessly_modifiable(spte))):
        vm.note(f"spte = {format_spte(spte)}: nothing to protect")
        return False
    new = spte & ~(WRITABLE | (MMU_WRITEABLE if pt_protect else 0))
    vm.note(f"spte_write_protect: spte = *sptep = {format_spte(spte)}, W = {int(is_writable(spte))}")
    flush = mmu_spte_update(vm, index, new)
    if vm.rules.flush == "caller-read":
        flush = is_writable(spte)
        vm.note(f"the flush is decided from the earlier read, which saw W = {int(flush)}")
    return flush


def rmap_write_protect(vm: RaceVm, gfn: int, *, pt_protect: bool) -> bool:
    """Write-protect every spte of ``gfn``; return whether TLBs must be flushed."""
    flush = False
    for index in sorted(vm.rmap.get(gfn, ())):
        flush |= spte_write_protect(vm, index, pt_protect=pt_protect)
    return flush


def write_protect_guest_page_table(vm: RaceVm, gfn: int) -> None:
    """The guest starts using ``gfn`` as a page table, so KVM shadows it: from now on every guest store to it
    must trap and be emulated.  Write-protect its sptes (clearing MMU_WRITEABLE too) and flush if asked."""
    with vm.mmu_lock:
        vm.note(f"spin_lock(mmu_lock); gfn {gfn} becomes a guest page table: rmap_write_protect(pt_protect)")
        vm.shadowed.add(gfn)
        if rmap_write_protect(vm, gfn, pt_protect=True):
            flush_tlbs_and_wait(vm)
        else:
            vm.note("no TLB flush")
        vm.history.append(WriteProtected(gfn))
        vm.note(f"gfn {gfn} is write-protected; spin_unlock(mmu_lock)")


def age_gfn(vm: RaceVm, gfn: int) -> bool:
    """Page aging: clear the Accessed bit of every spte of ``gfn`` (an atomic ``clear_bit``, since the
    hardware may set A or D meanwhile); return whether any was set (the page is young)."""
    young = False
    with vm.mmu_lock:
        vm.note(f"spin_lock(mmu_lock); kvm_age_rmapp(gfn {gfn})")
        for index in sorted(vm.rmap.get(gfn, ())):
            cell = vm.sp.sptes[index]
            if cell.load() & ACCESSED:
                young = True
                cell.clear_bit(ACCESSED_BIT)
                vm.note(f"clear_bit(A): spte = {format_spte(cell.load())}")
        vm.note(f"young = {young}; spin_unlock(mmu_lock)")
    return young
