"""Race A, locking.txt case 2: the Dirty bit lost by ``mmu_spte_clear_track_bits``.

Under the 3.4 rule a read-only spte with A set is "not volatile", so zapping it is a plain read, then a plain
store of 0.  The fast path can make it writable between the two, the guest then writes and the hardware sets
D; the store wipes D and the host is never told the page is dirty.  The 3.10 rule makes such an spte volatile,
so the zap uses ``xchg`` and sees D (or the zap lands first and the ``cmpxchg`` of the fast path fails).
Page aging runs alongside: clearing A atomically, it is the reason the 3.4 rule calls an spte without A
volatile.
"""

from __future__ import annotations

from .guest import guest_write
from .mmu import age_gfn, kvm_mmu_notifier_invalidate_page
from .rules import Rules
from .scenario import Race
from .spte import ACCESSED, HOST_WRITEABLE, MMU_WRITEABLE, PRESENT
from .vm import RaceVm

GVA = GFN = 1


def _build(vm: RaceVm) -> None:
    vcpu = vm.add_vcpu("vcpu0")
    vm.map_at_start(GVA, GFN, PRESENT | ACCESSED | HOST_WRITEABLE | MMU_WRITEABLE)
    vm.sched.spawn("notifier", lambda: kvm_mmu_notifier_invalidate_page(vm, GFN))
    vm.sched.spawn("vcpu0", lambda: guest_write(vm, vcpu, GVA))
    vm.sched.spawn("aging", lambda: age_gfn(vm, GFN))


RACE = Race(
    name="dirty-bit",
    title="Dirty bit lost by mmu_spte_clear_track_bits (locking.txt, fast page fault case 2)",
    invariant="dirty-bit",
    buggy=Rules(volatile="3.4"),
    direct=True,
    start=(
        f"direct shadow page; gfn {GFN} -> pfn 0x101; spte = pfn 0x101|P|A|HW|MW (W = 0: dirty logging "
        "write-protected it); the MMU notifier is about to zap it, a vCPU is about to write the page"
    ),
    walkthrough=(
        "notifier:mmu_lock",
        "vcpu0:guest.write",
        "vcpu0:fast.walk",
        "vcpu0:fast.cmpxchg",
        "vcpu0:guest.write",
        "notifier:clear.write",
        "aging:mmu_lock",
    ),
    build=_build,
)
