"""Simulated CPUs, IPIs, CPU hotplug, and KVM's hardware enable/disable on top of them.

Each simulated CPU has an idle task ``swapper/N`` that takes its IPIs, run as true hard
interrupts, and, when the CPU is brought up, runs the CPU_STARTING notifiers with preemption and
interrupts off.  CPU_DYING runs in ``migration/N`` (stop_machine) with interrupts off.  KVM
turns virtualization on or off per CPU from those contexts, and on every CPU at once by IPI when
the first VM is created or the last destroyed, always under the count lock of the configuration
(``kvm_lock`` before 4a937f96, the raw ``kvm_count_lock`` after).
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING

import pylockdep

from .locktable import LockTable
from .tasks import Event, Tasks

if TYPE_CHECKING:
    from .kvm import KvmModule

THIS_CPU = 0  # smp_processor_id() of every process-context task of the model
CPU_STARTING = "CPU_STARTING"
CPU_DYING = "CPU_DYING"

CpuFunc = Callable[[int], None]


class Cpus:
    """The simulated CPUs ``0 .. n-1``: online mask, per-CPU TSC frequency, idle tasks.

    Work for a CPU goes through its idle task's queue, one item at a time, so a CPU never runs
    two handlers at once.  The queues (``queue.SimpleQueue``, a C type) and completions
    (:class:`~kvm_model.tasks.Event`) are hardware: no lock of theirs shows in the lock graph, and
    waiting for an IPI under a raw spinlock is a spin, as ``csd_lock_wait`` is.  The online mask
    changes only in hotplug, which the model never runs together with an :func:`on_each_cpu` caller.
    """

    def __init__(self, n: int, tasks: Tasks) -> None:
        self.tasks = tasks
        self.online: set[int] = set(range(n))
        self.tsc_khz: dict[int, int] = dict.fromkeys(range(n), 2_000_000)
        self.ipis = 0
        self._queues: list[queue.SimpleQueue[tuple[Callable[[], None], Event] | None]] = []
        for cpu in range(n):
            self._queues.append(queue.SimpleQueue())
            tasks.spawn(f"swapper/{cpu}", self._idle, cpu)

    def _idle(self, cpu: int) -> None:
        while (item := self._queues[cpu].get()) is not None:
            work, done = item
            try:
                work()
            finally:
                done.set()

    def _queue(self, cpu: int, work: Callable[[], None]) -> Event:
        done = Event()
        self._queues[cpu].put((work, done))
        return done

    def send_ipi(self, cpu: int, func: CpuFunc) -> Event:
        """Interrupt ``cpu`` to run ``func(cpu)`` in hard interrupt context; returns its completion."""
        self.ipis += 1
        return self._queue(cpu, functools.partial(_ipi_handler, func, cpu))

    def run_idle(self, cpu: int, work: Callable[[], None]) -> Event:
        """Have ``cpu``'s idle task run ``work`` (a CPU coming up runs its start-up this way)."""
        return self._queue(cpu, work)

    def shutdown(self) -> None:
        """Stop every idle task once its queued work is done."""
        for q in self._queues:
            q.put(None)


def _ipi_handler(func: CpuFunc, cpu: int) -> None:
    with pylockdep.hardirq():
        func(cpu)


def on_each_cpu(cpus: Cpus, func: CpuFunc) -> None:
    """Run ``func`` on every online CPU and wait: by IPI on the others, with interrupts off here."""
    with pylockdep.preempt_disabled():
        pending = [cpus.send_ipi(cpu, func) for cpu in sorted(cpus.online) if cpu != THIS_CPU]
        with pylockdep.irqs_disabled():
            func(THIS_CPU)
        for done in pending:
            cpus.tasks.wait_for(done, "an IPI")


def smp_call_function_single(cpus: Cpus, cpu: int, func: CpuFunc) -> None:
    """Run ``func`` on ``cpu`` by IPI and wait; nothing happens if the CPU is offline."""
    if cpu in cpus.online:
        cpus.tasks.wait_for(cpus.send_ipi(cpu, func), "an IPI")


class Hotplug:
    """CPU hotplug: ``cpu_hotplug.lock`` held by the initiator, and the notifier chain."""

    def __init__(self, table: LockTable, cpus: Cpus) -> None:
        self.lock = table.new("cpu_hotplug.lock")
        self.cpus = cpus
        self.notifiers: list[Callable[[str, int], None]] = []
        self.events: list[tuple[str, int]] = []

    def notify(self, action: str, cpu: int) -> None:
        """Call every registered hotplug notifier with ``action`` for ``cpu``."""
        self.events.append((action, cpu))
        for notifier in list(self.notifiers):
            notifier(action, cpu)


def cpu_down(hotplug: Hotplug, cpu: int) -> None:
    """Take ``cpu`` offline: under the hotplug lock, stop_machine runs the dying step on it."""
    with hotplug.lock:
        stopper = hotplug.cpus.tasks.spawn(f"migration/{cpu}", take_cpu_down, hotplug, cpu)
        stopper.join()


def take_cpu_down(hotplug: Hotplug, cpu: int) -> None:
    """The dying CPU, in stop_machine with interrupts off: leave the online mask, call CPU_DYING."""
    with pylockdep.irqs_disabled():
        hotplug.cpus.online.discard(cpu)
        hotplug.notify(CPU_DYING, cpu)


def cpu_up(hotplug: Hotplug, cpu: int) -> None:
    """Bring ``cpu`` online: under the hotplug lock, the CPU starts and runs CPU_STARTING."""
    with hotplug.lock:
        done = hotplug.cpus.run_idle(cpu, functools.partial(start_secondary, hotplug, cpu))
        hotplug.cpus.tasks.wait_for(done, f"CPU {cpu} coming online")


def start_secondary(hotplug: Hotplug, cpu: int) -> None:
    """A CPU's first code: preemption and interrupts still off, CPU_STARTING, then online."""
    with pylockdep.preempt_disabled(), pylockdep.irqs_disabled():
        hotplug.notify(CPU_STARTING, cpu)
        hotplug.cpus.online.add(cpu)


def hardware_enable_nolock(module: KvmModule, cpu: int) -> None:
    """Turn virtualization on for ``cpu`` (VMXON); runs on that CPU with interrupts off."""
    module.hardware_enabled.add(cpu)


def hardware_disable_nolock(module: KvmModule, cpu: int) -> None:
    """Turn virtualization off for ``cpu``; runs on that CPU with interrupts off."""
    module.hardware_enabled.discard(cpu)


def hardware_enable_all(module: KvmModule) -> None:
    """A VM is being created: count it, and turn virtualization on everywhere for the first one."""
    with module.count_lock:
        module.usage_count += 1
        if module.usage_count == 1:
            on_each_cpu(module.cpus, functools.partial(hardware_enable_nolock, module))


def hardware_disable_all(module: KvmModule) -> None:
    """A VM is gone: uncount it, and turn virtualization off everywhere after the last one."""
    with module.count_lock:
        module.usage_count -= 1
        if module.usage_count == 0:
            on_each_cpu(module.cpus, functools.partial(hardware_disable_nolock, module))


def kvm_cpu_hotplug(module: KvmModule, action: str, cpu: int) -> None:
    """KVM's hotplug notifier: follow a CPU going down or coming up while VMs exist.

    Before the 3.13 series the usage count was tested here without the lock.
    """
    if not module.config.hotplug_checks_count_under_lock and not module.usage_count:
        return
    if action == CPU_DYING:
        hardware_disable(module, cpu)
    elif action == CPU_STARTING:
        hardware_enable(module, cpu)


def hardware_enable(module: KvmModule, cpu: int) -> None:
    """CPU_STARTING: turn virtualization on for the new CPU, under the count lock.

    The usage count is tested again under the lock in every configuration (3.10 did not); that
    changes no locking, only closes a race the model does not exercise.
    """
    with module.count_lock:
        if module.usage_count:
            hardware_enable_nolock(module, cpu)


def hardware_disable(module: KvmModule, cpu: int) -> None:
    """CPU_DYING: turn virtualization off for the dying CPU, under the count lock."""
    with module.count_lock:
        if module.usage_count:
            hardware_disable_nolock(module, cpu)


def register_kvm_cpu_notifier(module: KvmModule, hotplug: Hotplug) -> None:
    """Module init: KVM follows CPU hotplug."""
    hotplug.notifiers.append(functools.partial(kvm_cpu_hotplug, module))
