"""The shadow MMU of one VM (``arch/x86/kvm/mmu.c``): shadow pages, SPTEs and the fault path.

A shadow page is a host page holding the SPTEs of ``SPTES_PER_PAGE`` consecutive guest frames
(one level: the model has no upper-level tables).  Every function here that changes MMU state
runs under ``kvm->mmu_lock`` and says so with ``lockdep_assert_held``; the guest's own page walk
(:func:`kvm_model.vcpu.guest_access`) reads SPTEs without it, as the hardware does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pylockdep

from .hardware import smp_call_function_many
from .hostmm import HostMemory, get_user_page

if TYPE_CHECKING:
    from .kvm import Kvm, Memslots, Vcpu

SPTES_PER_PAGE = 8
# vcpu->mode: a remote TLB flush kicks only the vCPUs that are not outside the guest.
OUTSIDE_GUEST_MODE = "OUTSIDE_GUEST_MODE"
IN_GUEST_MODE = "IN_GUEST_MODE"
MMU_CACHE_MIN = 2  # pages a vCPU keeps ready so that no allocation happens under mmu_lock


@dataclasses.dataclass
class Spte:
    """A present SPTE: the host page it maps and its accessed bit (set by the guest's walks)."""

    pfn: int
    accessed: bool = True


@dataclasses.dataclass(eq=False)
class ShadowPage:
    """A shadow page table: its own host page ``pfn`` and the SPTEs of frames ``gfn .. gfn+7``."""

    gfn: int
    pfn: int
    sptes: dict[int, Spte] = dataclasses.field(default_factory=dict)
    valid: bool = True


class KvmMmu:
    """A VM's shadow MMU state; all of it is guarded by ``kvm->mmu_lock``.

    ``pages`` is ``active_mmu_pages`` (and the page hash): by first frame, oldest first.
    ``n_used_mmu_pages`` is kept separately, as the kernel does, and must equal ``len(pages)``.
    ``notifier_seq``/``notifier_count`` are the retry protocol of the MMU notifiers.
    """

    def __init__(self, memory: HostMemory) -> None:
        self.memory = memory
        self.pages: dict[int, ShadowPage] = {}
        self.n_used_mmu_pages = 0
        self.notifier_seq = 0
        self.notifier_count = 0


def tdp_page_fault(vcpu: Vcpu, gfn: int) -> bool:
    """Map ``gfn`` for ``vcpu`` (inside its SRCU read section); false when the guest must retry.

    The notifier sequence is sampled before the host page is looked up, and checked again under
    ``mmu_lock``: an invalidation in between means the page may already be gone from the host.
    """
    kvm = vcpu.kvm
    slot = kvm.srcu.dereference(kvm.memslots).gfn_to_memslot(gfn)
    if slot is None:
        return False
    mmu_topup_memory_caches(vcpu)
    mmu_seq = kvm.mmu.notifier_seq
    pfn = get_user_page(kvm.mm, slot.gfn_to_hva(gfn))
    try:
        with kvm.mmu_lock:
            if mmu_notifier_retry(kvm, mmu_seq):
                vcpu.stat["pf_retry"] += 1
                return False
            sp = kvm_mmu_get_page(vcpu, gfn - gfn % SPTES_PER_PAGE)
            sp.sptes[gfn] = Spte(pfn)
            vcpu.stat["pf_fixed"] += 1
            return True
    finally:
        kvm.mmu.memory.put_page(pfn)


def mmu_topup_memory_caches(vcpu: Vcpu) -> None:
    """Refill the vCPU's page cache before ``mmu_lock`` is taken (allocating may sleep)."""
    while len(vcpu.mmu_page_cache) < MMU_CACHE_MIN:
        vcpu.mmu_page_cache.append(vcpu.kvm.mmu.memory.alloc_page())


def mmu_notifier_retry(kvm: Kvm, mmu_seq: int) -> bool:
    """Whether an invalidation ran or is running since ``mmu_seq`` was sampled."""
    pylockdep.lockdep_assert_held(kvm.mmu_lock)
    return kvm.mmu.notifier_count > 0 or kvm.mmu.notifier_seq != mmu_seq


def kvm_mmu_get_page(vcpu: Vcpu, gfn: int) -> ShadowPage:
    """The shadow page for frames from ``gfn``, made from the vCPU's cache if there is none."""
    kvm = vcpu.kvm
    pylockdep.lockdep_assert_held(kvm.mmu_lock)
    sp = kvm.mmu.pages.get(gfn)
    if sp is None:
        sp = ShadowPage(gfn, vcpu.mmu_page_cache.pop())
        kvm.mmu.pages[gfn] = sp
        kvm_mod_used_mmu_pages(kvm, 1)
    return sp


def kvm_mod_used_mmu_pages(kvm: Kvm, nr: int) -> None:
    """Account ``nr`` shadow pages to the VM and to the module-wide counter the shrinker reads."""
    kvm.mmu.n_used_mmu_pages += nr
    kvm.module.total_used_mmu_pages.add(nr)


def kvm_mmu_prepare_zap_page(kvm: Kvm, sp: ShadowPage, invalid_list: list[ShadowPage]) -> None:
    """Unlink ``sp``, drop its SPTEs and queue it on ``invalid_list`` for the commit."""
    pylockdep.lockdep_assert_held(kvm.mmu_lock)
    del kvm.mmu.pages[sp.gfn]
    kvm_mod_used_mmu_pages(kvm, -1)
    sp.sptes.clear()
    sp.valid = False
    invalid_list.append(sp)


def kvm_mmu_commit_zap_page(kvm: Kvm, invalid_list: list[ShadowPage]) -> None:
    """Flush every vCPU's TLB, then free the zapped pages."""
    pylockdep.lockdep_assert_held(kvm.mmu_lock)
    if not invalid_list:
        return
    kvm_flush_remote_tlbs(kvm)
    for sp in invalid_list:
        kvm.mmu.memory.put_page(sp.pfn)
    kvm.stat["mmu_shadow_zapped"] += len(invalid_list)
    invalid_list.clear()


def kvm_flush_remote_tlbs(kvm: Kvm) -> None:
    """Ask every vCPU to flush its TLB before it next enters the guest, and kick the ones in the
    guest now: an IPI, waited for, to each CPU running one (``make_all_cpus_request``)."""
    make_all_cpus_request(kvm, "tlb_flush")
    kvm.stat["remote_tlb_flush"] += 1


def make_all_cpus_request(kvm: Kvm, request: str) -> None:
    """Post ``request`` to every vCPU; IPI (wait=1) the other CPUs whose vCPU is in guest mode."""
    with pylockdep.preempt_disabled():  # get_cpu()
        cpus = set()
        for vcpu in list(kvm.vcpus):
            vcpu.make_request(request)
            if vcpu.mode != OUTSIDE_GUEST_MODE:
                cpus.add(vcpu.cpu)
        smp_call_function_many(kvm.module.cpus, cpus, ack_flush)


def ack_flush(cpu: int) -> None:
    """The flush IPI's handler: nothing; the interrupt alone made the vCPU leave the guest."""


def kvm_mmu_remove_some_alloc_mmu_pages(kvm: Kvm, invalid_list: list[ShadowPage]) -> None:
    """Queue the VM's oldest shadow page for zapping (the shrinker's victim)."""
    oldest = next(iter(kvm.mmu.pages.values()))
    kvm_mmu_prepare_zap_page(kvm, oldest, invalid_list)


def kvm_mmu_zap_all(kvm: Kvm) -> None:
    """Zap and free every shadow page of the VM."""
    invalid_list: list[ShadowPage] = []
    for sp in list(kvm.mmu.pages.values()):
        kvm_mmu_prepare_zap_page(kvm, sp, invalid_list)
    kvm_mmu_commit_zap_page(kvm, invalid_list)


def _sptes_of_hva_range(kvm: Kvm, slots: Memslots, start: int, end: int) -> Iterator[tuple[ShadowPage, int]]:
    """The (shadow page, frame) of every present SPTE whose frame is backed by ``[start, end)``."""
    for slot in slots.slots:
        for gfn in slot.gfns_in_hva_range(start, end):
            sp = kvm.mmu.pages.get(gfn - gfn % SPTES_PER_PAGE)
            if sp is not None and gfn in sp.sptes:
                yield sp, gfn


def kvm_unmap_hva_range(kvm: Kvm, slots: Memslots, start: int, end: int) -> bool:
    """Drop the SPTEs backed by host pages ``[start, end)``; true if a TLB flush is needed."""
    pylockdep.lockdep_assert_held(kvm.mmu_lock)
    flush = False
    for sp, gfn in list(_sptes_of_hva_range(kvm, slots, start, end)):
        del sp.sptes[gfn]
        flush = True
    return flush


def kvm_age_hva(kvm: Kvm, slots: Memslots, hva: int) -> bool:
    """Clear the accessed bits of the SPTEs backed by ``hva``; true if any was set."""
    pylockdep.lockdep_assert_held(kvm.mmu_lock)
    young = False
    for sp, gfn in _sptes_of_hva_range(kvm, slots, hva, hva + 1):
        spte = sp.sptes[gfn]
        young |= spte.accessed
        spte.accessed = False
    return young
