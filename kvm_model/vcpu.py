"""vCPU threads: the VMM's ``KVM_RUN`` loop, guest entries and exits, and the guest itself.

A vCPU thread repeatedly issues ``KVM_RUN``, which holds ``vcpu->mutex`` and, outside the guest,
the VM's SRCU read side (dropped around each guest entry, as ``__vcpu_run`` does).  The guest
is a deterministic stream of memory accesses (:class:`GuestProgram`): it touches its share of
RAM once, then random frames of RAM, of the framebuffer slot and of MMIO.  An access that finds
no SPTE exits to KVM, which faults the page in or emulates the MMIO.
"""

from __future__ import annotations

import dataclasses
import random

from .hardware import Cpus
from .kvm import Vcpu, kvm_io_bus_write
from .mmu import IN_GUEST_MODE, OUTSIDE_GUEST_MODE, SPTES_PER_PAGE, tdp_page_fault
from .tasks import Event
from .x86 import kvm_guest_time_update, kvm_write_tsc

EXITS_PER_RUN = 32  # exits handled before KVM_RUN returns to the VMM (a signal, say)
ACCESSES_PER_ENTRY = 16  # guest accesses before the preemption timer forces an exit
TSC_WRITE_EVERY = 40  # guest entries between two writes of the TSC MSR


@dataclasses.dataclass(frozen=True)
class GuestLayout:
    """Guest physical frames: RAM, a framebuffer slot the VMM toggles, and MMIO devices."""

    ram: range
    fb: range
    mmio: range


class GuestProgram:
    """One vCPU's accesses: each frame of ``share`` once, then random ones, forever."""

    def __init__(self, layout: GuestLayout, share: list[int], rng: random.Random) -> None:
        self.layout, self._share, self._rng = layout, share, rng
        self._next = 0
        self.entries = 0
        self._gfn = self._pick()

    @property
    def populated(self) -> bool:
        """Whether every frame of the vCPU's share of RAM has been accessed once."""
        return self._next > len(self._share)

    def current(self) -> int:
        """The frame the guest is accessing (again, after an exit that did not complete it)."""
        return self._gfn

    def advance(self) -> None:
        """The access completed; move to the next one."""
        self._gfn = self._pick()

    def _pick(self) -> int:
        self._next += 1
        if self._next <= len(self._share):
            return self._share[self._next - 1]
        roll = self._rng.random()
        region = self.layout.ram if roll < 0.8 else self.layout.fb if roll < 0.9 else self.layout.mmio
        return self._rng.choice(region)

    def tsc_value(self) -> int | None:
        """Count a guest entry; every ``TSC_WRITE_EVERY``-th one the guest writes its TSC."""
        self.entries += 1
        return self._rng.randrange(1 << 40) if self.entries % TSC_WRITE_EVERY == 0 else None


def guest_access(vcpu: Vcpu, gfn: int) -> bool:
    """The CPU's page walk: true if an SPTE maps ``gfn`` (marking it accessed), else an exit."""
    sp = vcpu.kvm.mmu.pages.get(gfn - gfn % SPTES_PER_PAGE)
    spte = sp.sptes.get(gfn) if sp is not None else None
    if spte is None:
        return False
    spte.accessed = True
    return True


def vcpu_thread(vcpu: Vcpu, program: GuestProgram, cpus: Cpus, populated: Event, stop: Event) -> None:
    """The VMM's vCPU thread: ``KVM_RUN`` until told to stop; signals once its RAM is populated."""
    while not stop.is_set():
        kvm_vcpu_ioctl_run(vcpu, program, cpus, stop)
        if program.populated:
            populated.set()


def kvm_vcpu_ioctl_run(vcpu: Vcpu, program: GuestProgram, cpus: Cpus, stop: Event) -> None:
    """``KVM_RUN``: load the vCPU (its mutex) and run it for a bounded number of exits."""
    with vcpu.mutex:
        __vcpu_run(vcpu, program, cpus, stop)


def __vcpu_run(vcpu: Vcpu, program: GuestProgram, cpus: Cpus, stop: Event) -> None:
    """The run loop, inside the VM's SRCU read side except while the guest runs."""
    srcu = vcpu.kvm.srcu
    vcpu.srcu_idx = srcu.read_lock()
    try:
        for _ in range(EXITS_PER_RUN):
            if stop.is_set():
                return
            kvm_check_requests(vcpu, cpus)
            exit_reason, arg = vcpu_enter_guest(vcpu, program)
            kvm_handle_exit(vcpu, program, exit_reason, arg)
    finally:
        srcu.read_unlock(vcpu.srcu_idx)


def kvm_check_requests(vcpu: Vcpu, cpus: Cpus) -> None:
    """Serve the requests other threads made before the next guest entry."""
    if "tlb_flush" in vcpu.requests:
        vcpu.requests.discard("tlb_flush")
        vcpu.stat["tlb_flush"] += 1
    if "clock_update" in vcpu.requests:
        vcpu.requests.discard("clock_update")
        kvm_guest_time_update(vcpu, cpus)


def vcpu_enter_guest(vcpu: Vcpu, program: GuestProgram) -> tuple[str, int]:
    """Run the guest (SRCU dropped) until it exits; returns the exit reason and its argument."""
    srcu = vcpu.kvm.srcu
    srcu.read_unlock(vcpu.srcu_idx)
    vcpu.mode = IN_GUEST_MODE
    try:
        vcpu.stat["exits"] += 1
        for _ in range(ACCESSES_PER_ENTRY):
            gfn = program.current()
            if not guest_access(vcpu, gfn):
                return "ept_violation", gfn
            program.advance()
        tsc = program.tsc_value()
        return ("wrmsr_tsc", tsc) if tsc is not None else ("preemption_timer", 0)
    finally:
        vcpu.mode = OUTSIDE_GUEST_MODE
        vcpu.srcu_idx = srcu.read_lock()


def kvm_handle_exit(vcpu: Vcpu, program: GuestProgram, exit_reason: str, arg: int) -> None:
    """Handle one exit: fault in RAM, emulate MMIO, or write the TSC."""
    if exit_reason == "ept_violation":
        kvm = vcpu.kvm
        if kvm.srcu.dereference(kvm.memslots).gfn_to_memslot(arg) is None:
            if not kvm_io_bus_write(vcpu, arg):
                vcpu.stat["userspace_exits"] += 1
            program.advance()
        else:
            tdp_page_fault(vcpu, arg)
    elif exit_reason == "wrmsr_tsc":
        kvm_write_tsc(vcpu, arg)
