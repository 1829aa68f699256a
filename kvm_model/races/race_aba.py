"""Race B, locking.txt case 1: ABA on gfn -> pfn under an indirect shadow page.

The fast path reads the spte and the gfn it was built for, then sets W with ``cmpxchg``.  Meanwhile the host
reclaims the page, the guest re-points its pte at another gfn, and the freed frame comes back for that gfn:
the rebuilt spte has the very same value, the ``cmpxchg`` succeeds, and the old gfn is logged dirty while the
new one, which the guest then writes, is not.  A direct page cannot be fooled (its gfn is its position), so
3.10 allows the fast path only there; pinning gfn -> pfn before the ``cmpxchg`` would work too, since a pinned
frame cannot be reused.
"""

from __future__ import annotations

from .guest import guest_read, guest_set_gpte, guest_write
from .kvm import Kvm, Vcpu
from .mmu import kvm_mmu_notifier_invalidate_page
from .rules import Rules
from .scenario import Race
from .spte import ACCESSED, HOST_WRITEABLE, MMU_WRITEABLE, PRESENT

GVA, GFN1, GFN2 = 0, 1, 2


def _swap_out(kvm: Kvm, gfn: int) -> None:
    """Host reclaim of ``gfn``'s page: unmap it from the host, let KVM zap its sptes, free the frame."""
    kvm.point("unmap")
    pfn = kvm.host.unmap(gfn)
    kvm.note(f"host reclaims gfn {gfn}: its page pfn {pfn:#x} is unmapped")
    kvm_mmu_notifier_invalidate_page(kvm, gfn)
    kvm.point("free")
    freed = kvm.host.free(pfn)
    kvm.note(f"pfn {pfn:#x} {'freed' if freed else 'is pinned: it will be freed only when unpinned'}")


def _repoint_and_read(kvm: Kvm, vcpu: Vcpu) -> None:
    """Another vCPU of the guest points the pte of ``GVA`` at ``GFN2`` and reads the page."""
    guest_set_gpte(kvm, GVA, GFN2)
    guest_read(kvm, vcpu, GVA)


def _build(kvm: Kvm) -> None:
    vcpu0, vcpu1 = kvm.add_vcpu("vcpu0"), kvm.add_vcpu("vcpu1")
    kvm.map_at_start(GVA, GFN1, PRESENT | ACCESSED | HOST_WRITEABLE | MMU_WRITEABLE)
    kvm.sched.spawn("vcpu0", lambda: guest_write(kvm, vcpu0, GVA))
    kvm.sched.spawn("reclaim", lambda: _swap_out(kvm, GFN1))
    kvm.sched.spawn("vcpu1", lambda: _repoint_and_read(kvm, vcpu1))


RACE = Race(
    name="aba",
    title="ABA on gfn -> pfn in the fast page fault (locking.txt, fast page fault case 1)",
    invariant="dirty-log",
    buggy=Rules(fast_path="indirect"),
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
)
