"""Race B, locking.txt case 1: ABA on gfn -> pfn under an indirect shadow page.

The fast path reads the spte and the gfn it was built for, then sets W with ``cmpxchg``.  Meanwhile the host
reclaims the page, the guest re-points its pte at another gfn, and the freed frame comes back for that gfn:
the rebuilt spte has the very same value, the ``cmpxchg`` succeeds, and the old gfn is logged dirty while the
new one, which the guest then writes, is not.

That walkthrough is locking.txt's hypothetical.  In 3.10 it cannot run at all: the fast path walks with
interrupts off, and the host cannot free the frame before KVM's remote TLB flush, whose IPI waits for the
walker to finish.  So the buggy variant removes two protections: that lockless walk (``walk="unprotected"``)
and the restriction of the fast path to direct shadow pages, without pinning.  Each of these alone fixes it:
3.10's own remedy (no fast path for indirect pages: their gfn can change, a direct page's is its position),
the documentation's other one (pin gfn -> pfn with ``gfn_to_pfn_atomic`` before the ``cmpxchg``, so the frame
cannot be reused), and the interrupts-off walk itself.
"""

from __future__ import annotations

from .guest import guest_read, guest_set_gpte, guest_write
from .mmu import kvm_mmu_notifier_invalidate_page
from .rules import Rules
from .scenario import Race
from .spte import ACCESSED, HOST_WRITEABLE, MMU_WRITEABLE, PRESENT
from .vm import GuestCpu, RaceVm

GVA, GFN1, GFN2 = 0, 1, 2


def _swap_out(vm: RaceVm, gfn: int) -> None:
    """Host reclaim of ``gfn``'s page: unmap it from the host, let KVM zap its sptes, free the frame."""
    vm.point("unmap")
    pfn = vm.host.unmap(gfn)
    vm.note(f"host reclaims gfn {gfn}: its page pfn {pfn:#x} is unmapped")
    kvm_mmu_notifier_invalidate_page(vm, gfn)
    vm.point("free")
    freed = vm.host.free(pfn)
    vm.note(f"pfn {pfn:#x} {'freed' if freed else 'is pinned: it will be freed only when unpinned'}")


def _repoint_and_read(vm: RaceVm, vcpu: GuestCpu) -> None:
    """Another vCPU of the guest points the pte of ``GVA`` at ``GFN2`` and reads the page."""
    guest_set_gpte(vm, GVA, GFN2)
    guest_read(vm, vcpu, GVA)


def _build(vm: RaceVm) -> None:
    vcpu0, vcpu1 = vm.add_vcpu("vcpu0"), vm.add_vcpu("vcpu1")
    vm.map_at_start(GVA, GFN1, PRESENT | ACCESSED | HOST_WRITEABLE | MMU_WRITEABLE)
    vm.sched.spawn("vcpu0", lambda: guest_write(vm, vcpu0, GVA))
    vm.sched.spawn("reclaim", lambda: _swap_out(vm, GFN1))
    vm.sched.spawn("vcpu1", lambda: _repoint_and_read(vm, vcpu1))


RACE = Race(
    name="aba",
    title="ABA on gfn -> pfn in the fast page fault (locking.txt, fast page fault case 1)",
    invariant="dirty-log",
    buggy=Rules(fast_path="indirect", walk="unprotected"),
    direct=False,
    start=(
        f"indirect shadow page; gpte of gva {GVA} -> gfn {GFN1} -> pfn 0x101; spte = pfn 0x101|P|A|HW|MW "
        "(W = 0: dirty logging write-protected it); dirty logging on"
    ),
    walkthrough=(
        "vcpu0:guest.write",
        "vcpu0:fast.walk",
        "reclaim:unmap",
        "reclaim:mmu_lock",
        "reclaim:clear.write",
        "reclaim:free",
        "vcpu1:mmu_lock",
        "vcpu1:guest.read",
        "vcpu1:mmu_lock",
        "vcpu1:guest.read",
        "vcpu0:fast.cmpxchg",
        "vcpu0:guest.write",
    ),
    build=_build,
    fixes={
        "direct-only": Rules(walk="unprotected"),
        "pin-pfn": Rules(fast_path="pin-pfn", walk="unprotected"),
        "irqs-off-walk": Rules(fast_path="indirect"),
    },
)
