"""KVM's MMU notifier (``kvm_mmu_notifier_*`` in ``kvm_main.c``) and the balloon that drives it.

The host tells KVM before it unmaps VMM memory and after it is done; KVM drops the SPTEs in
between and makes concurrent faults retry (see :func:`kvm_model.mmu.tdp_page_fault`).  Reclaim's
aging asks KVM whether a page was used, under the host page-table lock, which is why the locks
nest ``ptl -> kvm->srcu (read) -> kvm->mmu_lock``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hostmm import HostMM, zap_page_range
from .mmu import kvm_age_hva, kvm_flush_remote_tlbs, kvm_mmu_zap_all, kvm_unmap_hva_range
from .tasks import Event

if TYPE_CHECKING:
    from .kvm import Kvm


class KvmMmuNotifier:
    """The notifier a VM registers on its VMM's address space."""

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm

    def invalidate_range_start(self, mm: HostMM, start: int, end: int) -> None:
        """Host pages ``[start, end)`` are going away: make faults retry and drop their SPTEs."""
        kvm = self.kvm
        with kvm.srcu.read():
            with kvm.mmu_lock:
                kvm.mmu.notifier_count += 1
                if kvm_unmap_hva_range(kvm, kvm.srcu.dereference(kvm.memslots), start, end):
                    kvm_flush_remote_tlbs(kvm)
        kvm.module.events["notifier_invalidate"] += 1

    def invalidate_range_end(self, mm: HostMM, start: int, end: int) -> None:
        """The host is done: bump the sequence so that faults which sampled it before retry."""
        kvm = self.kvm
        with kvm.mmu_lock:
            kvm.mmu.notifier_seq += 1
            kvm.mmu.notifier_count -= 1

    def clear_flush_young(self, mm: HostMM, hva: int) -> bool:
        """Reclaim asks whether ``hva`` was used: test and clear the SPTEs' accessed bits."""
        kvm = self.kvm
        with kvm.srcu.read():
            with kvm.mmu_lock:
                young = kvm_age_hva(kvm, kvm.srcu.dereference(kvm.memslots), hva)
                if young:
                    kvm_flush_remote_tlbs(kvm)
        kvm.module.events["notifier_young"] += 1
        return young

    def release(self, mm: HostMM) -> None:
        """The address space (or the VM) is going away: drop every shadow page."""
        kvm = self.kvm
        with kvm.srcu.read():
            with kvm.mmu_lock:
                kvm_mmu_zap_all(kvm)


def virtio_balloon(kvm: Kvm, ram_hva: int, ranges: list[tuple[int, int]], stop: Event) -> None:
    """The VMM's balloon: the guest gave back guest RAM frames ``[start, end)`` of each range, so
    the VMM discards the host pages behind them (``madvise(MADV_DONTNEED)`` at ``ram_hva + start``)."""
    for start, end in ranges:
        if stop.is_set():
            return
        zap_page_range(kvm.mm, ram_hva + start, ram_hva + end)
        kvm.module.events["balloon_zap"] += 1
