"""The model's invariants, checked while no thread runs: every page accounted for exactly.

Each allocated host page has one owner per reference: a page-table entry of a VMM's address
space, a shadow page, or a vCPU's page cache.  From that follow the checks: used-page counters
agree with the shadow pages that exist, no page is freed twice, no page is in use after it was
freed, no page leaks, no SPTE maps a freed page or disagrees with the host page table, and
virtualization is on exactly on the online CPUs while VMs exist.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .hostmm import HostMM
from .kvm import Kvm, KvmModule


def check_invariants(module: KvmModule, mms: Sequence[HostMM]) -> list[str]:
    """Every invariant violated by the state of ``module``, its VMs and the VMMs' ``mms``.

    Returns one message per violation (empty when all hold).  The caller guarantees that no
    thread of the model is running.
    """
    memory = module.memory
    violations = list(memory.errors)
    owners: Counter[int] = Counter()
    vms = module.vm_list.unlocked_snapshot()

    for mm in mms:
        owners.update(mm.ptes.values())
    total_used = 0
    for kvm in vms:
        mmu = kvm.mmu
        total_used += mmu.n_used_mmu_pages
        if mmu.n_used_mmu_pages != len(mmu.pages):
            violations.append(
                f"VM {kvm.vm_id}: n_used_mmu_pages is {mmu.n_used_mmu_pages} "
                f"but {len(mmu.pages)} shadow pages are active"
            )
        if mmu.notifier_count:
            violations.append(
                f"VM {kvm.vm_id}: mmu_notifier_count is {mmu.notifier_count} with no invalidation running"
            )
        for vcpu in kvm.vcpus:
            owners.update(vcpu.mmu_page_cache)
        for sp in mmu.pages.values():
            owners[sp.pfn] += 1
            for gfn, spte in sp.sptes.items():
                violations += _spte_violations(kvm, gfn, spte.pfn, memory.refcount)

    if module.total_used_mmu_pages.value != total_used:
        violations.append(
            f"kvm_total_used_mmu_pages is {module.total_used_mmu_pages.value} but the VMs use {total_used} shadow pages"
        )
    for pfn, expected in sorted(owners.items()):
        actual = memory.refcount.get(pfn, 0)
        if actual == 0:
            violations.append(f"page {pfn} is freed but still in use ({expected} owners)")
        elif actual != expected:
            violations.append(f"page {pfn} has {actual} references but {expected} owners")
    leaked = sorted(set(memory.refcount) - set(owners))
    if leaked:
        violations.append(f"{len(leaked)} pages are allocated with no owner (leaked), e.g. page {leaked[0]}")
    if memory.nr_free + len(memory.refcount) != memory.total:
        violations.append(f"{memory.nr_free} free + {len(memory.refcount)} allocated pages != {memory.total} pages")

    if module.usage_count != len(vms):
        violations.append(f"kvm_usage_count is {module.usage_count} with {len(vms)} VMs")
    expected_on = set(module.cpus.online) if vms else set()
    if module.hardware_enabled != expected_on:
        violations.append(
            f"virtualization is on for CPUs {sorted(module.hardware_enabled)}, expected {sorted(expected_on)}"
        )
    return violations


def _spte_violations(kvm: Kvm, gfn: int, pfn: int, refcount: dict[int, int]) -> list[str]:
    """What is wrong with the SPTE mapping ``gfn`` to ``pfn`` in ``kvm``, if anything."""
    where = f"VM {kvm.vm_id}: SPTE of gfn {gfn}"
    if pfn not in refcount:
        return [f"{where} points at freed page {pfn}"]
    with kvm.srcu.read():
        slot = kvm.srcu.dereference(kvm.memslots).gfn_to_memslot(gfn)
    if slot is None:
        return [f"{where} maps a frame outside every memslot"]
    host = kvm.mm.ptes.get(slot.gfn_to_hva(gfn))
    if host != pfn:
        return [f"{where} maps page {pfn} but the host maps that address to {host}"]
    return []
