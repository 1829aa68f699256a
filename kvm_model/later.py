"""Later real KVM lockdep bugs (5.15 to 6.11), each run as the few threads whose locking closes its chain.

The 3.x configurations run a whole machine (:mod:`kvm_model.run`).  The bugs here were found by
lockdep in kernels whose KVM differs in many ways from 3.x, so each scenario runs only the paths of
its report, under the function names of the real traces, with the locks of the configuration's
lock table (``kvm_model/model-locks.txt`` marks the version that added each).  The threads run one
after another: lockdep reports a possible deadlock from orders seen at different times, so no
interleaving is needed and the verdict is the same every run.

Scenarios, by :attr:`~kvm_model.config.Config.scenario`:

- ``pvclock`` (8228c77d8b56, 5.15): a vCPU thread is switched out; ``__schedule`` holds the raw
  ``rq->__lock`` with interrupts off and calls the preempt notifier, which reads the Xen runstate
  clock under ``pvclock_gtod_sync_lock``: a ``spinlock_t`` there is an invalid wait context.
- ``usage-lock`` (44d17459626052, 6.11): hardware enabling takes ``kvm_lock`` under
  ``cpus_read_lock()``; ``set_nx_huge_pages`` takes ``slots_lock`` under ``kvm_lock``; a memslot
  update waits for ``kvm->srcu`` readers under ``slots_lock``; a vCPU in its SRCU read side
  updates a static key, which takes ``cpus_read_lock()``.  The fix takes a new ``kvm_usage_lock``
  instead of ``kvm_lock`` around hardware enabling.
- ``xen`` (310bc39546a4, 6.2): a vCPU's ``EVTCHNOP_send`` takes ``kvm->lock`` in its SRCU read
  side, while ``kvm_xen_eventfd_reset`` waits for SRCU readers holding ``kvm->lock``.  The fix
  takes a leaf ``xen_lock`` and synchronizes after dropping it.
- ``arm64-cpu-on`` (0acc7239c20a, 6.3): vCPU creation orders ``kvm->lock`` before ``vcpu->mutex``
  (42a90008f890 tells lockdep so), while PSCI ``CPU_ON`` from a running vCPU took ``kvm->lock``
  under its ``vcpu->mutex``.  The fix takes the target's ``mp_state_lock`` instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pylockdep

from .config import Config
from .locktable import LockTable
from .tasks import Tasks

VMM_PID = 2000


class VmLocks:
    """The part of one VM (``struct kvm``) these chains touch: its locks and the vCPUs' locks."""

    def __init__(self, table: LockTable, nr_vcpus: int = 2) -> None:
        self.table = table
        self.lock = table.new("kvm->lock")
        self.slots_lock = table.new("kvm->slots_lock")
        self.srcu = table.new("kvm->srcu")
        self.vcpu_mutexes = [table.new("vcpu->mutex") for _ in range(nr_vcpus)]

    def optional(self, name: str) -> Any:
        """A new lock of record ``name`` if the configured kernel has it, else None."""
        return self.table.new(name) if name in self.table else None


class Scenario:
    """One later bug: the configuration, the VM's locks and the model's tasks."""

    def __init__(self, config: Config, tasks: Tasks) -> None:
        self.config, self.tasks = config, tasks
        self.table = config.lock_table()
        self.vm = VmLocks(self.table)

    def run_task(self, name: str, fn: Callable[..., None], *args: Any, pid: int, cpu: int = 0) -> None:
        """Run ``fn(*args)`` as task ``name`` and wait for it to end."""
        self.tasks.spawn(name, fn, *args, pid=pid, cpu=cpu).join()


# --- pvclock_gtod_sync_lock under rq->__lock (8228c77d8b56) ---------------------------------------


def run_pvclock(s: Scenario) -> None:
    """A vCPU thread inside KVM_RUN, with a Xen runstate area, is switched out by the scheduler."""
    rq_lock = s.table.new("rq->__lock")
    pvclock_lock = s.table.new("kvm_arch::pvclock_gtod_sync_lock")
    s.run_task("CPU 0/KVM", kvm_vcpu_ioctl_run_preempted, s.vm, rq_lock, pvclock_lock, pid=VMM_PID + 1, cpu=1)


def kvm_vcpu_ioctl_run_preempted(vm: VmLocks, rq_lock: Any, pvclock_lock: Any) -> None:
    """KVM_RUN (``vcpu->mutex``, preempt notifier registered by ``vcpu_load``) until preempted."""
    with vm.vcpu_mutexes[0]:
        schedule(rq_lock, functools.partial(kvm_sched_out, pvclock_lock))


def schedule(rq_lock: Any, sched_out_notifiers: Callable[[], None]) -> None:
    """``__schedule``: interrupts off, the runqueue lock held, the outgoing task's preempt notifiers."""
    with pylockdep.irqs_disabled(), rq_lock:
        prepare_task_switch(sched_out_notifiers)


def prepare_task_switch(sched_out_notifiers: Callable[[], None]) -> None:
    fire_sched_out_preempt_notifiers(sched_out_notifiers)


def fire_sched_out_preempt_notifiers(sched_out_notifiers: Callable[[], None]) -> None:
    sched_out_notifiers()


def kvm_sched_out(pvclock_lock: Any) -> None:
    """KVM's preempt notifier: the vCPU is put."""
    kvm_arch_vcpu_put(pvclock_lock)


def kvm_arch_vcpu_put(pvclock_lock: Any) -> None:
    kvm_xen_update_runstate_guest(pvclock_lock)


def kvm_xen_update_runstate_guest(pvclock_lock: Any) -> None:
    """Write the Xen runstate area: the time comes from the VM's kvmclock."""
    get_kvmclock_ns(pvclock_lock)


def get_kvmclock_ns(pvclock_lock: Any) -> int:
    """Read the master clock under ``pvclock_gtod_sync_lock`` (irqsave)."""
    with pvclock_lock.irqsave():
        return 0


# --- kvm_usage_lock (44d17459626052) -------------------------------------------------------------


def run_usage_lock(s: Scenario) -> None:
    """The four links of the 6.10 chain, one task each."""
    cpu_hotplug_lock = s.table.new("cpu_hotplug_lock")
    kvm_lock = s.table.new("kvm_lock")
    usage_lock = s.vm.optional("kvm_usage_lock")
    s.run_task("qemu-system-x86", kvm_dev_ioctl_create_vm, cpu_hotplug_lock, kvm_lock, usage_lock, pid=VMM_PID)
    s.run_task("tee", set_nx_huge_pages, kvm_lock, s.vm, pid=VMM_PID + 100)
    s.run_task("qemu-system-x86", kvm_vm_ioctl_set_memory_region, s.vm, pid=VMM_PID)
    s.run_task("CPU 0/KVM", kvm_vcpu_ioctl_run_apic_base, s.vm, cpu_hotplug_lock, pid=VMM_PID + 1, cpu=1)


def kvm_dev_ioctl_create_vm(cpu_hotplug_lock: Any, kvm_lock: Any, usage_lock: Any) -> None:
    """KVM_CREATE_VM: the first VM enables virtualization on every CPU."""
    hardware_enable_all(cpu_hotplug_lock, kvm_lock, usage_lock)


def hardware_enable_all(cpu_hotplug_lock: Any, kvm_lock: Any, usage_lock: Any) -> None:
    """6.10: ``cpus_read_lock`` then ``kvm_lock`` around the usage count; 6.11: ``kvm_usage_lock``
    then ``cpus_read_lock``, and ``kvm_lock`` is not taken."""
    if usage_lock is None:
        with cpu_hotplug_lock.read(), kvm_lock:
            pass
    else:
        with usage_lock, cpu_hotplug_lock.read():
            pass


def set_nx_huge_pages(kvm_lock: Any, vm: VmLocks) -> None:
    """A write of the ``nx_huge_pages`` module parameter: zap every VM's MMU under its ``slots_lock``."""
    with kvm_lock:
        with vm.slots_lock:
            pass


def kvm_vm_ioctl_set_memory_region(vm: VmLocks) -> None:
    """KVM_SET_USER_MEMORY_REGION: the new memslots are published under ``slots_lock``."""
    with vm.slots_lock:
        kvm_swap_active_memslots(vm)


def kvm_swap_active_memslots(vm: VmLocks) -> None:
    """Publish the new memslots and wait for every SRCU reader of the old ones."""
    vm.srcu.synchronize()


def kvm_vcpu_ioctl_run_apic_base(vm: VmLocks, cpu_hotplug_lock: Any) -> None:
    """KVM_RUN (``vcpu->mutex``, ``kvm->srcu`` read side); the guest writes its APIC base MSR."""
    with vm.vcpu_mutexes[0], vm.srcu.read():
        kvm_lapic_set_base(cpu_hotplug_lock)


def kvm_lapic_set_base(cpu_hotplug_lock: Any) -> None:
    """The guest disabled its APIC: count it on the ``apic_hw_disabled`` static key."""
    static_key_slow_inc(cpu_hotplug_lock)


def static_key_slow_inc(cpu_hotplug_lock: Any) -> None:
    """Patching the jump sites keeps the CPUs stable: ``cpus_read_lock()``."""
    with cpu_hotplug_lock.read():
        pass


# --- xen_lock (310bc39546a4) ---------------------------------------------------------------------


def run_xen(s: Scenario) -> None:
    """A vCPU sends a Xen event; the VMM resets the event channels."""
    xen_lock = s.vm.optional("kvm_arch::xen.xen_lock")
    s.run_task("CPU 0/KVM", kvm_vcpu_ioctl_run_evtchn_send, s.vm, xen_lock, pid=VMM_PID + 1, cpu=1)
    s.run_task("qemu-system-x86", kvm_xen_eventfd_reset, s.vm, xen_lock, pid=VMM_PID)


def kvm_vcpu_ioctl_run_evtchn_send(vm: VmLocks, xen_lock: Any) -> None:
    """KVM_RUN (``vcpu->mutex``, ``kvm->srcu`` read side): the guest makes an EVTCHNOP_send hypercall."""
    with vm.vcpu_mutexes[0], vm.srcu.read():
        kvm_xen_hypercall(vm, xen_lock)


def kvm_xen_hypercall(vm: VmLocks, xen_lock: Any) -> None:
    kvm_xen_hcall_evtchn_send(vm, xen_lock)


def kvm_xen_hcall_evtchn_send(vm: VmLocks, xen_lock: Any) -> None:
    kvm_xen_set_evtchn(vm, xen_lock)


def kvm_xen_set_evtchn(vm: VmLocks, xen_lock: Any) -> None:
    """Deliver the event on the slow path: under ``kvm->lock`` (6.1) or ``xen_lock`` (6.2)."""
    with xen_lock if xen_lock is not None else vm.lock:
        pass


def kvm_xen_eventfd_reset(vm: VmLocks, xen_lock: Any) -> None:
    """KVM_XEN_HVM_SET_ATTR (EVTCHN_RESET): drop every event channel and wait for SRCU readers.

    6.1 waits holding ``kvm->lock``; 6.2 unlinks them under ``xen_lock`` and waits after dropping it.
    """
    if xen_lock is None:
        with vm.lock:
            vm.srcu.synchronize()
    else:
        with xen_lock:
            pass
        vm.srcu.synchronize()


# --- arm64 CPU_ON (0acc7239c20a) -----------------------------------------------------------------


def run_arm64_cpu_on(s: Scenario) -> None:
    """The VMM creates a vCPU; then vCPU 0 starts vCPU 1 with PSCI CPU_ON."""
    mp_state_lock = s.vm.optional("vcpu_arch::mp_state_lock")
    s.run_task("qemu-system-aar", kvm_vm_ioctl_create_vcpu, s.vm, pid=VMM_PID)
    s.run_task("CPU 0/KVM", kvm_vcpu_ioctl_run_psci, s.vm, mp_state_lock, pid=VMM_PID + 1, cpu=1)


def kvm_vm_ioctl_create_vcpu(vm: VmLocks) -> None:
    """KVM_CREATE_VCPU under ``kvm->lock``; 42a90008f890 takes the new ``vcpu->mutex`` inside it once,
    so that lockdep learns the documented order."""
    with vm.lock:
        with vm.vcpu_mutexes[1]:
            pass


def kvm_vcpu_ioctl_run_psci(vm: VmLocks, mp_state_lock: Any) -> None:
    """KVM_RUN of vCPU 0 (its ``vcpu->mutex``): the guest calls PSCI CPU_ON for vCPU 1."""
    with vm.vcpu_mutexes[0]:
        handle_hvc(vm, mp_state_lock)


def handle_hvc(vm: VmLocks, mp_state_lock: Any) -> None:
    kvm_psci_call(vm, mp_state_lock)


def kvm_psci_call(vm: VmLocks, mp_state_lock: Any) -> None:
    kvm_psci_0_2_call(vm, mp_state_lock)


def kvm_psci_0_2_call(vm: VmLocks, mp_state_lock: Any) -> None:
    """PSCI 0.2 dispatch: CPU_ON ran under ``kvm->lock`` before 0acc7239c20a."""
    if mp_state_lock is None:
        with vm.lock:
            kvm_psci_vcpu_on(mp_state_lock)
    else:
        kvm_psci_vcpu_on(mp_state_lock)


def kvm_psci_vcpu_on(mp_state_lock: Any) -> None:
    """Mark the target vCPU runnable with its reset state (under its ``mp_state_lock`` from 6.3)."""
    if mp_state_lock is not None:
        with mp_state_lock:
            pass


SCENARIOS: dict[str, Callable[[Scenario], None]] = {
    "pvclock": run_pvclock,
    "usage-lock": run_usage_lock,
    "xen": run_xen,
    "arm64-cpu-on": run_arm64_cpu_on,
}


def run_scenario(config: Config) -> list[str]:
    """Run ``config``'s scenario under the active validator; return the model's failures."""
    assert config.scenario is not None
    tasks = Tasks()
    SCENARIOS[config.scenario](Scenario(config, tasks))
    tasks.join_all()
    return list(tasks.errors)
