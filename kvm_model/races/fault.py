"""The two ways KVM fixes a guest page fault: the lockless fast path, and the slow path under ``mmu_lock``.

The fast path (:func:`fast_page_fault`) only handles a write to a present, read-only spte that the host and
the guest both allow to be writable: it sets W with one ``cmpxchg`` and logs the gfn as dirty.  The
``cmpxchg`` proves only that the spte *value* did not change; whether that is enough depends on the rules of
:class:`~.rules.Rules` (Race B), and what the locked paths do with a value read before it lands is Race A
and C.
"""

from __future__ import annotations

import enum

from .mmu import mmu_set_spte
from .spte import WRITABLE, format_spte, is_locklessly_modifiable, is_present, is_writable, spte_pfn
from .vm import GuestCpu, GuestWrite, RaceVm


class Fault(enum.Enum):
    """How a fault handler left things."""

    RETRY = "retry"  # re-execute the access: it was fixed, or the spte changed and a new fault will tell
    SLOW = "slow"  # the fast path declined: take the locked path
    EMULATED = "emulated"  # KVM performed the write itself; the access is complete


def fast_page_fault(vm: RaceVm, vcpu: GuestCpu, gva: int) -> Fault:
    """Try to fix a write fault on ``gva`` without ``mmu_lock``, inside a lockless walk.

    Steps: ``fast.walk`` reads the spte once and decides, and reads the gfn it maps; ``fast.pin`` (only
    under the ``pin-pfn`` rule, on an indirect page) pins gfn -> pfn; ``fast.cmpxchg`` sets W if the spte
    still holds the value read, and then marks the gfn dirty.  Under the ``irqs-off`` walk rule the CPU
    has interrupts off from the walk to the end, so no remote TLB flush completes meanwhile.
    """
    vm.point("fast.walk")
    walk_shadow_page_lockless_begin(vm, vcpu)
    try:
        return _fast_page_fault(vm, gva)
    finally:
        walk_shadow_page_lockless_end(vm, vcpu)


def walk_shadow_page_lockless_begin(vm: RaceVm, vcpu: GuestCpu) -> None:
    """Interrupts off and the CPU marked as reading shadow page tables (under the ``irqs-off`` rule)."""
    if vm.rules.walk == "irqs-off":
        vcpu.lockless_walk = True
        vm.note("walk_shadow_page_lockless_begin: local_irq_disable()")


def walk_shadow_page_lockless_end(vm: RaceVm, vcpu: GuestCpu) -> None:
    if vcpu.lockless_walk:
        vcpu.lockless_walk = False
        vm.note("walk_shadow_page_lockless_end: local_irq_enable()")


def _fast_page_fault(vm: RaceVm, gva: int) -> Fault:
    sp, cell = vm.sp, vm.sp.sptes[gva]
    spte = cell.load()
    vm.note(f"fast_page_fault: old_spte = *spte = {format_spte(spte)}")
    if not is_present(spte):
        vm.note("spte is gone: retry the access")
        return Fault.RETRY
    if is_writable(spte):
        vm.note("already writable (fixed by someone else): retry the access")
        return Fault.RETRY
    if not is_locklessly_modifiable(spte):
        vm.note("HW or MW clear: not fixable without mmu_lock")
        return Fault.SLOW
    if not sp.direct and vm.rules.fast_path == "direct-only":
        vm.note("indirect shadow page: no fast path")
        return Fault.SLOW
    gfn = sp.gfn_at(gva)
    vm.note(f"gfn = {'sp->gfn + index' if sp.direct else 'sp->gfns[index]'} = gfn {gfn}")
    pinned = None
    if not sp.direct and vm.rules.fast_path == "pin-pfn":
        vm.point("fast.pin")
        pinned = vm.host.gfn_to_pfn_atomic(gfn)
        vm.note(f"gfn_to_pfn_atomic(gfn {gfn}) = {'none' if pinned is None else f'{pinned:#x} (pinned)'}")
        if pinned != spte_pfn(spte):
            if pinned is not None:
                vm.host.release_pfn(pinned)
            vm.note("gfn is no longer backed by the spte's pfn: take the slow path")
            return Fault.SLOW
    vm.point("fast.cmpxchg")
    won = cell.cmpxchg(spte, spte | WRITABLE)
    vm.note(f"cmpxchg(spte, old_spte, old_spte | W) {'succeeded' if won else 'failed'}")
    if won:
        vm.mark_page_dirty(gfn)
    if pinned is not None:
        vm.host.release_pfn(pinned)
    return Fault.RETRY if won else Fault.SLOW


def slow_page_fault(vm: RaceVm, vcpu: GuestCpu, gva: int, *, write: bool) -> Fault:
    """Handle a fault under ``mmu_lock``: find the gfn the guest means, get its frame and build the spte.

    A write to a guest page table is emulated instead.  The frame is looked up inside the lock; the kernel
    looks it up before and retries if an MMU notifier ran meanwhile, which ends the same way.
    """
    with vm.mmu_lock:
        gfn = vm.guest_gfn(gva)
        pfn = vm.host.gfn_to_pfn(gfn)
        vm.note(f"spin_lock(mmu_lock); slow path: gva {gva} -> gfn {gfn} -> pfn {pfn:#x}")
        if write and gfn in vm.shadowed:
            vm.host.set_dirty(pfn)
            vm.mark_page_dirty(gfn)
            vm.history.append(GuestWrite(vcpu.name, gva, pfn, gfn, "emulator"))
            vm.note(f"gfn {gfn} is a guest page table: write emulated; spin_unlock(mmu_lock)")
            return Fault.EMULATED
        mmu_set_spte(vm, gva, gfn, pfn, writable=write)
        if write:
            vm.mark_page_dirty(gfn)
        vm.note("spin_unlock(mmu_lock)")
    return Fault.RETRY


def page_fault(vm: RaceVm, vcpu: GuestCpu, gva: int, *, write: bool, present: bool) -> Fault:
    """Handle a fault: a write to a present spte first tries the fast path."""
    if write and present:
        result = fast_page_fault(vm, vcpu, gva)
        if result is not Fault.SLOW:
            return result
    return slow_page_fault(vm, vcpu, gva, write=write)
