"""x86 timekeeping of ``arch/x86/kvm/x86.c``: TSC writes and the kvmclock cpufreq notifier.

``kvm_write_tsc`` updates the VM's TSC matching state under the raw ``tsc_write_lock`` with
interrupts saved; the cpufreq notifier walks ``vm_list`` under ``kvm_lock`` to ask the vCPUs of
a CPU whose frequency changed to refresh their clock, and updates that CPU's frequency by IPI.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

import pylockdep

from .hardware import Cpus, smp_call_function_single

if TYPE_CHECKING:
    from .kvm import KvmModule, Vcpu


def kvm_write_tsc(vcpu: Vcpu, data: int) -> None:
    """A write of the guest TSC (MSR write or vCPU creation): new offset and matching state."""
    kvm = vcpu.kvm
    ns = time.monotonic_ns()
    with kvm.tsc_write_lock.irqsave():
        kvm.arch_tsc.update(last_tsc_write=data, last_tsc_nsec=ns, last_tsc_offset=data - ns)
    if kvm.pvclock_gtod_sync_lock is not None:  # 3.10+: the master clock's TSC matching
        with kvm.pvclock_gtod_sync_lock:
            kvm.nr_vcpus_matched_tsc += 1
    vcpu.stat["tsc_write"] += 1


def kvm_arch_vcpu_postcreate(vcpu: Vcpu) -> None:
    """After KVM_CREATE_VCPU: load the vCPU (its mutex) and give it a TSC of 0."""
    with vcpu.mutex:
        kvm_write_tsc(vcpu, 0)


def kvm_guest_time_update(vcpu: Vcpu, cpus: Cpus) -> None:
    """Refresh the guest's clock: read the master clock (3.10+, under ``pvclock_gtod_sync_lock``),
    then the frequency of the CPU the vCPU runs on, with interrupts off."""
    ka = vcpu.kvm
    if ka.pvclock_gtod_sync_lock is not None:
        with ka.pvclock_gtod_sync_lock:
            vcpu.master_clock = ka.nr_vcpus_matched_tsc
    with pylockdep.irqs_disabled():
        vcpu.clock_khz = cpus.tsc_khz[vcpu.cpu]


def tsc_khz_changed(cpus: Cpus, khz: int, cpu: int) -> None:
    """IPI handler: record the new TSC frequency of this CPU."""
    cpus.tsc_khz[cpu] = khz


def kvmclock_cpufreq_notifier(module: KvmModule, cpu: int, khz: int) -> None:
    """A cpufreq transition of ``cpu``: update its frequency, and ask its vCPUs for a clock update."""
    smp_call_function_single(module.cpus, cpu, functools.partial(tsc_khz_changed, module.cpus, khz))
    with module.kvm_lock:
        for kvm in module.vm_list:
            for vcpu in kvm.vcpus:
                if vcpu.cpu == cpu:
                    vcpu.make_request("clock_update")
    module.events["cpufreq_notifier"] += 1
