"""The invariants a run must keep, one function per rule, checked on the final state and the write history.

Each check returns the violations it found; :func:`check` runs them all.  A violation names its invariant,
so a test can assert exactly which rule a race breaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .spte import DIRTY, is_present, spte_pfn
from .vm import GuestWrite, RaceVm, WriteProtected

INVARIANTS = {
    "dirty-log": "no dirty page missing from the bitmap: every gfn the guest wrote while dirty logging was "
    "on has its bit set in the memslot's dirty bitmap",
    "dirty-bit": "dirty bit never lost: every page the guest wrote through an spte is known dirty to the "
    "host (kvm_set_pfn_dirty was called for it, or an spte still maps it with D = 1)",
    "write-protect": "no write through a read-only mapping: once rmap_write_protect of a gfn has returned, "
    "with any TLB flush it asked for, no vCPU completes a write to that gfn through a TLB entry or an spte",
}


@dataclass(frozen=True)
class Violation:
    invariant: str  # a key of INVARIANTS
    detail: str


def _per_first_write(
    vm: RaceVm, invariant: str, key: Callable[[GuestWrite], int | None], detail: Callable[[int, GuestWrite], str]
) -> list[Violation]:
    """One violation of ``invariant`` per value of ``key`` over the guest's writes, told by ``detail``.

    ``key`` maps a write that breaks the rule to what it broke it for (a gfn, a pfn) and a sound write
    to None; ``detail(value, write)`` describes the first write that broke it for ``value``.
    """
    first: dict[int, GuestWrite] = {}
    for event in vm.history:
        if isinstance(event, GuestWrite) and (value := key(event)) is not None:
            first.setdefault(value, event)
    return [Violation(invariant, detail(value, write)) for value, write in first.items()]


def check_dirty_log(vm: RaceVm) -> list[Violation]:
    """Every gfn written by the guest (through its mappings or the emulator) is set in the dirty bitmap."""
    logged = vm.dirty_log.dirty_gfns()
    return _per_first_write(
        vm,
        "dirty-log",
        lambda w: w.gfn if w.gfn is not None and w.gfn not in logged else None,
        lambda gfn, w: (
            f"gfn {gfn} was written by {w.vcpu} (through pfn {w.pfn:#x}) but its bit in the dirty "
            f"bitmap is clear; the bitmap holds {_gfns(logged)}"
        ),
    )


def check_dirty_bit(vm: RaceVm) -> list[Violation]:
    """Every frame written through an spte has reached the host as dirty, or still has D = 1 in an spte."""
    still_dirty = {spte_pfn(v) for cell in vm.sp.sptes if is_present(v := cell.load()) and v & DIRTY}
    known_dirty = vm.host.dirty | still_dirty
    return _per_first_write(
        vm,
        "dirty-bit",
        lambda w: w.pfn if w.via != "emulator" and w.pfn not in known_dirty else None,
        lambda pfn, w: (
            f"{w.vcpu} wrote pfn {pfn:#x} (gfn {w.gfn}) through an spte, but no spte maps it with D = 1 "
            f"any more and kvm_set_pfn_dirty({pfn:#x}) was never called: the host may drop the data"
        ),
    )


def check_write_protect(vm: RaceVm) -> list[Violation]:
    """No write through a mapping completes after the write protection of its gfn has returned."""
    protected: set[int] = set()
    found = []
    for event in vm.history:
        if isinstance(event, WriteProtected):
            protected.add(event.gfn)
        elif event.via != "emulator" and event.gfn in protected:
            found.append(
                Violation(
                    "write-protect",
                    f"{event.vcpu} wrote gfn {event.gfn} through "
                    f"{'its TLB' if event.via == 'tlb' else 'the spte'} "
                    f"after rmap_write_protect(gfn {event.gfn}) had returned",
                )
            )
    return found


CHECKS: tuple[Callable[[RaceVm], list[Violation]], ...] = (check_dirty_log, check_dirty_bit, check_write_protect)


def check(vm: RaceVm) -> list[Violation]:
    """All violations of all invariants, in the order of :data:`INVARIANTS`."""
    return [violation for rule in CHECKS for violation in rule(vm)]


def _gfns(gfns: list[int]) -> str:
    return "{" + ", ".join(f"gfn {g}" for g in gfns) + "}" if gfns else "nothing"
