"""The world of one race run: a dirty log, host frames, one last-level page of SPTE words, guest CPUs with
TLBs, ``mmu_lock`` and the history of guest writes that the invariants are checked against.

These are not :mod:`kvm_model`'s ``Kvm``/``Vcpu``/``ShadowPage``/``Memslot``: the threaded lock model
works at the level of locks and whole shadow pages, this one at the level of single SPTE words and the
atomic operations on them, so its names say so (:class:`RaceVm`, :class:`GuestCpu`, :class:`SptePage`,
:class:`~.dirtylog.DirtyLog`).  Function names of the kernel appear in the notes a run prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .atomic import Atomic64
from .dirtylog import DirtyLog
from .host import HostFrames
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


HistoryEntry = GuestWrite | WriteProtected  # one entry of RaceVm.history (not a synchronisation event)


@dataclass(frozen=True)
class TlbEntry:
    """A translation a vCPU has cached: the frame and whether writes may use it."""

    pfn: int
    writable: bool


class GuestCpu:
    """A guest CPU as the race sees it: its name (that of the model thread running it), its TLB,
    ``gva -> TlbEntry``, emptied by a remote TLB flush, and whether it is in a lockless walk."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tlb: dict[int, TlbEntry] = {}
        self.lockless_walk = False  # between walk_shadow_page_lockless_begin and _end, interrupts off


class SptePage:
    """A last-level shadow page table made of atomic SPTE words; entry ``i`` translates guest page ``gva i``.

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


class RaceVm:
    """All the state of one race run.  Functions of :mod:`.mmu`, :mod:`.fault` and :mod:`.guest` act on it
    from model threads; ``point`` and ``note`` forward to the scheduler."""

    def __init__(self, sched: Scheduler, rules: Rules, *, direct: bool, npages: int = 4) -> None:
        self.sched = sched
        self.rules = rules
        self.dirty_log = DirtyLog(0, npages)
        self.host = HostFrames()
        self.mmu_lock = sched.lock("mmu_lock")
        self.sp = SptePage(direct=direct, size=npages)
        self.guest_pt: dict[int, int] = {}  # the guest's own page table (gva -> gfn), for an indirect page
        self.rmap: dict[int, set[int]] = {}  # gfn -> entries of self.sp that map it
        self.shadowed: set[int] = set()  # gfns that are guest page tables: KVM emulates writes to them
        self.vcpus: dict[str, GuestCpu] = {}
        self.history: list[HistoryEntry] = []

    def add_vcpu(self, name: str) -> GuestCpu:
        vcpu = self.vcpus[name] = GuestCpu(name)
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
        self.dirty_log.mark_dirty(gfn)
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
