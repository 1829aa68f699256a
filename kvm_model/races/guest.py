"""What the guest does: loads and stores as the processor performs them (TLB, page walk setting Accessed and
Dirty, fault), and changes to its own page table."""

from __future__ import annotations

from typing import Literal

from .fault import Fault, page_fault
from .mmu import drop_spte, flush_tlbs_and_wait
from .spte import ACCESSED, DIRTY, format_spte, is_present, is_writable, spte_pfn
from .vm import GuestCpu, GuestWrite, RaceVm, TlbEntry

MAX_ATTEMPTS = 8  # faults tolerated for one access; more would mean the model livelocks


def guest_write(vm: RaceVm, vcpu: GuestCpu, gva: int) -> None:
    """Store to ``gva``, re-executing the store after each fault (step ``guest.write``) until it completes."""
    for _ in range(MAX_ATTEMPTS):
        vm.point("guest.write")
        faulting = _store(vm, vcpu, gva)
        if faulting is None:
            return
        if page_fault(vm, vcpu, gva, write=True, present=is_present(faulting)) is Fault.EMULATED:
            return
    raise RuntimeError(f"{vcpu.name}: store to gva {gva} still faulting after {MAX_ATTEMPTS} attempts")


def guest_read(vm: RaceVm, vcpu: GuestCpu, gva: int) -> None:
    """Load from ``gva``, re-executing the load after each fault (step ``guest.read``) until it completes."""
    for _ in range(MAX_ATTEMPTS):
        vm.point("guest.read")
        if gva in vcpu.tlb:
            vm.note(f"load from gva {gva}: TLB hit")
            return
        cell = vm.sp.sptes[gva]
        spte = cell.load()
        if is_present(spte):
            cell.fetch_or(ACCESSED)
            vcpu.tlb[gva] = TlbEntry(spte_pfn(spte), is_writable(spte))
            vm.note(f"load from gva {gva}: walk finds {format_spte(spte)}; TLB caches it")
            return
        vm.note(f"load from gva {gva}: spte not present -> page fault")
        page_fault(vm, vcpu, gva, write=False, present=False)
    raise RuntimeError(f"{vcpu.name}: load from gva {gva} still faulting after {MAX_ATTEMPTS} attempts")


def _store(vm: RaceVm, vcpu: GuestCpu, gva: int) -> int | None:
    """One try of the store: None if it completed, else the spte value that made it fault."""
    entry = vcpu.tlb.get(gva)
    if entry is not None and entry.writable:
        _record(vm, vcpu, gva, entry.pfn, "tlb")
        return None
    cell = vm.sp.sptes[gva]
    spte = cell.load()
    if not is_writable(spte):
        vm.note(f"store to gva {gva}: spte = {format_spte(spte)} is not writable -> write fault")
        return spte
    # Walking and setting A/D form one step: the processor's locked update of the entry it has just read.
    cell.fetch_or(ACCESSED | DIRTY)
    vcpu.tlb[gva] = TlbEntry(spte_pfn(spte), writable=True)
    vm.note(f"store to gva {gva}: walk sets A and D: spte = {format_spte(cell.load())}")
    vm.note("TLB caches the translation, writable")
    _record(vm, vcpu, gva, spte_pfn(spte), "walk")
    return None


def _record(vm: RaceVm, vcpu: GuestCpu, gva: int, pfn: int, via: Literal["tlb", "walk"]) -> None:
    gfn = vm.host.owner(pfn)
    vm.history.append(GuestWrite(vcpu.name, gva, pfn, gfn, via))
    through = " through the cached TLB entry" if via == "tlb" else ""
    vm.note(f"data written to pfn {pfn:#x} (gfn {gfn}){through}")


def guest_set_gpte(vm: RaceVm, gva: int, gfn: int) -> None:
    """The guest points its pte for ``gva`` at ``gfn``.  Its page table is write-protected, so KVM emulates
    the store under ``mmu_lock`` and zaps the spte built from the old pte."""
    with vm.mmu_lock:
        vm.note(f"spin_lock(mmu_lock); guest pte of gva {gva}: gfn {vm.guest_pt[gva]} -> gfn {gfn}")
        vm.guest_pt[gva] = gfn
        if is_present(vm.sp.sptes[gva].load()):
            drop_spte(vm, gva)
            flush_tlbs_and_wait(vm)
        vm.note("spin_unlock(mmu_lock)")
