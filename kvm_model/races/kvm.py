"""The modelled VM: its memslot, host memory, one last-level shadow page, vCPUs, ``mmu_lock`` and the history
of guest writes that the invariants are checked against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .atomic import Atomic64
from .host import HostMemory
from .memslot import Memslot
from .rules import Rules
from .sched import Scheduler
from .spte import make_spte


@dataclass(frozen=True)
class GuestWrite:
    """A guest store that completed: through a cached translation, through a fresh walk of the spte, or done
    by KVM's emulator.  ``gfn`` is the gfn whose data ``pfn`` held at that moment (None if none did)."""

    vcpu: str
    gva: int
    pfn: int
    gfn: int | None
    via: Literal["tlb", "walk", "emulator"]


@dataclass(frozen=True)
class WriteProtected:
    """``rmap_write_protect`` of ``gfn`` returned, together with any TLB flush it asked for."""

    gfn: int


Event = GuestWrite | WriteProtected


@dataclass(frozen=True)
class TlbEntry:
    """A translation a vCPU has cached: the frame and whether writes may use it."""

    pfn: int
    writable: bool


class Vcpu:
    """A simulated CPU: its name and its TLB, ``gva -> TlbEntry``, emptied by a remote TLB flush."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tlb: dict[int, TlbEntry] = {}


class ShadowPage:
    """A last-level shadow page table; entry ``i`` translates guest page ``gva i``.

    A direct page maps gfn ``i`` at entry ``i``.  An indirect page shadows a guest page table, so the gfn of
    each entry depends on the guest pte it was built from and is remembered per entry (``sp->gfns``).
    """

    def __init__(self, *, direct: bool, size: int) -> None:
        self.direct = direct
        self.sptes = [Atomic64() for _ in range(size)]
        self._gfns: list[int | None] = [None] * size

    def gfn_at(self, index: int) -> int:
        """The gfn that entry ``index`` was built for."""
        if self.direct:
            return index
        gfn = self._gfns[index]
        if gfn is None:
            raise LookupError(f"indirect spte {index} was never built")
        return gfn

    def set_gfn(self, index: int, gfn: int) -> None:
        if self.direct and gfn != index:
            raise ValueError(f"a direct page maps gfn {index} at entry {index}, not gfn {gfn}")
        self._gfns[index] = gfn


class Kvm:
    """All the state of one model run.  Functions of :mod:`.mmu`, :mod:`.fault` and :mod:`.guest` act on it
    from model threads; ``point`` and ``note`` forward to the scheduler."""

    def __init__(self, sched: Scheduler, rules: Rules, *, direct: bool, npages: int = 4) -> None:
        self.sched = sched
        self.rules = rules
        self.memslot = Memslot(0, npages)
        self.host = HostMemory()
        self.mmu_lock = sched.lock("mmu_lock")
        self.sp = ShadowPage(direct=direct, size=npages)
        self.guest_pt: dict[int, int] = {}  # the guest's own page table (gva -> gfn), for an indirect page
        self.rmap: dict[int, set[int]] = {}  # gfn -> entries of self.sp that map it
        self.shadowed: set[int] = set()  # gfns that are guest page tables: KVM emulates writes to them
        self.vcpus: dict[str, Vcpu] = {}
        self.history: list[Event] = []

    def add_vcpu(self, name: str) -> Vcpu:
        vcpu = self.vcpus[name] = Vcpu(name)
        return vcpu

    def point(self, step: str) -> None:
        self.sched.point(step)

    def note(self, text: str) -> None:
        self.sched.note(text)

    def guest_gfn(self, gva: int) -> int:
        """The gfn the guest maps ``gva`` to now: by position for a direct page, else its page table."""
        return gva if self.sp.direct else self.guest_pt[gva]

    def mark_page_dirty(self, gfn: int) -> None:
        """Log ``gfn`` in its memslot's dirty bitmap."""
        self.memslot.mark_dirty(gfn)
        self.note(f"mark_page_dirty(gfn {gfn})")

    def map_at_start(self, gva: int, gfn: int, flags: int) -> int:
        """Before any thread runs: make ``gva``'s spte map ``gfn`` with ``flags``; return the pfn used."""
        if not self.sp.direct:
            self.guest_pt[gva] = gfn
        pfn = self.host.gfn_to_pfn(gfn)
        self.sp.sptes[gva].store(make_spte(pfn, flags))
        self.sp.set_gfn(gva, gfn)
        self.rmap.setdefault(gfn, set()).add(gva)
        return pfn
