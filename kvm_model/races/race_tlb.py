"""Rule 3 of locking.txt: flush TLBs when an spte goes from writable to read-only.

KVM write-protects a gfn that the guest starts using as a page table.  If the decision to flush comes from a
read of the spte made before the update, the fast path can make the spte writable in between, and the vCPU
cache a writable translation; the update then clears W but nobody flushes, and the vCPU keeps writing to a
page that is supposed to trap every write.  ``mmu_spte_update`` must report W -> read-only from the value it
actually replaced (an ``xchg``, given the 3.10 volatile rule), and its callers must flush on that report.
"""

from __future__ import annotations

from .guest import guest_write
from .mmu import write_protect_guest_page_table
from .rules import Rules
from .scenario import Race
from .spte import ACCESSED, HOST_WRITEABLE, MMU_WRITEABLE, PRESENT
from .vm import GuestCpu, RaceVm

GVA = GFN = 1


def _write_twice(vm: RaceVm, vcpu: GuestCpu) -> None:
    guest_write(vm, vcpu, GVA)
    guest_write(vm, vcpu, GVA)


def _build(vm: RaceVm) -> None:
    vcpu = vm.add_vcpu("vcpu0")
    vm.map_at_start(GVA, GFN, PRESENT | ACCESSED | HOST_WRITEABLE | MMU_WRITEABLE)
    vm.sched.spawn("protect", lambda: write_protect_guest_page_table(vm, GFN))
    vm.sched.spawn("vcpu0", lambda: _write_twice(vm, vcpu))


RACE = Race(
    name="tlb",
    title="write-protection without a TLB flush (locking.txt, fast page fault case 3)",
    invariant="write-protect",
    buggy=Rules(flush="caller-read"),
    direct=True,
    start=(
        f"direct shadow page; gfn {GFN} -> pfn 0x101; spte = pfn 0x101|P|A|HW|MW (W = 0: dirty logging "
        f"write-protected it); KVM is about to shadow gfn {GFN} as a guest page table; "
        "a vCPU stores to it twice"
    ),
    walkthrough=(
        "protect:mmu_lock",
        "vcpu0:guest.write",
        "vcpu0:fast.walk",
        "vcpu0:fast.cmpxchg",
        "vcpu0:guest.write",
        "protect:update.write",
        "vcpu0:guest.write",
    ),
    build=_build,
)
