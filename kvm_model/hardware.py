"""Simulated CPUs, IPIs, stop_machine, CPU hotplug, and KVM's hardware enable/disable on top of them.

Each simulated CPU has an idle task ``swapper/N`` that takes its IPIs, run as true hard interrupts,
and, when the CPU is brought up, runs the CPU_STARTING notifiers with preemption and interrupts
off; and a stopper thread ``migration/N`` (``cpu_stopper_thread``, preemption off) that runs
stop_machine work.  CPU hotplug is the 3.x ``kernel/cpu.c``: ``cpu_add_remove_lock``, then
``cpu_hotplug.lock`` once no ``get_online_cpus()`` reader is left, CPU_DOWN_PREPARE in process
context, CPU_DYING inside stop_machine with interrupts off on every online CPU, CPU_DEAD after.
KVM turns virtualization on or off per CPU from those contexts, and on every CPU at once by IPI
when the first VM is created or the last destroyed, always under the count lock of the
configuration (``kvm_lock`` before 4a937f96, the raw ``kvm_count_lock`` after).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pylockdep
from pylockdep import _plain

from .locktable import LockTable, parse_version
from .tasks import Event, Tasks, current_cpu

if TYPE_CHECKING:
    from .kvm import KvmModule

CPU_UP_PREPARE = "CPU_UP_PREPARE"
CPU_STARTING = "CPU_STARTING"
CPU_ONLINE = "CPU_ONLINE"
CPU_DOWN_PREPARE = "CPU_DOWN_PREPARE"
CPU_DYING = "CPU_DYING"
CPU_DEAD = "CPU_DEAD"


def migration_pid(cpu: int) -> int:
    """The pid a booted 3.x machine gives CPU ``cpu``'s stopper thread (a few kthreads per CPU)."""
    return 6 + 4 * cpu


CpuFunc = Callable[[int], None]


WorkQueue = queue.SimpleQueue[tuple[Callable[[], None], Event] | None]  # a CPU's work items; None stops it


def version_at_least(version: str, least: str) -> bool:
    """Whether kernel ``version`` is ``least`` or later."""
    return parse_version(version) >= parse_version(least)


class Cpus:
    """The simulated CPUs ``0 .. n-1``: online mask, per-CPU TSC frequency, idle and stopper tasks.

    Work for a CPU goes through its idle task's queue, one item at a time, so a CPU never runs
    two handlers at once.  The queues (``queue.SimpleQueue``, a C type) and completions
    (:class:`~kvm_model.tasks.Event`) are hardware: no lock of theirs shows in the lock graph, and
    waiting for an IPI under a raw spinlock is a spin, as ``csd_lock_wait`` is.
    """

    def __init__(self, n: int, tasks: Tasks, version: str = "3.10") -> None:
        self.tasks = tasks
        self.version = version
        self.online: set[int] = set(range(n))
        self.tsc_khz: dict[int, int] = dict.fromkeys(range(n), 2_000_000)
        self.ipis = 0
        self._queues: list[WorkQueue] = []
        self._stoppers: list[WorkQueue] = []
        for cpu in range(n):
            self._queues.append(queue.SimpleQueue())
            self._stoppers.append(queue.SimpleQueue())
            tasks.spawn(f"swapper/{cpu}", self._idle, cpu, pid=0, cpu=cpu, kthread=True)
            tasks.spawn(
                f"migration/{cpu}",
                smpboot_thread_fn if version_at_least(version, "3.10") else cpu_stopper_thread,
                self._stoppers[cpu],
                pid=migration_pid(cpu),
                cpu=cpu,
                kthread=True,
            )

    def _idle(self, cpu: int) -> None:
        _serve(self._queues[cpu])

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

    def queue_stop_work(self, cpu: int, work: Callable[[], None]) -> Event:
        """Have ``cpu``'s stopper thread run ``work`` (``cpu_stop_queue_work``); returns its completion."""
        done = Event()
        self._stoppers[cpu].put((work, done))
        return done

    def shutdown(self) -> None:
        """Stop every idle and stopper task once its queued work is done."""
        for q in self._queues + self._stoppers:
            q.put(None)


def _serve(q: WorkQueue) -> None:
    while (item := q.get()) is not None:
        work, done = item
        try:
            work()
        finally:
            done.set()


def smpboot_thread_fn(q: WorkQueue) -> None:
    """3.10+: the stopper is a per-CPU smpboot thread that calls ``cpu_stopper_thread`` when it has work."""
    while cpu_stopper_thread(q, one=True):
        pass


def cpu_stopper_thread(q: WorkQueue, one: bool = False) -> bool:
    """A CPU's stopper: run queued work items with preemption disabled (only the next one when
    ``one``); return False once told to stop."""
    while (item := q.get()) is not None:
        work, done = item
        try:
            with pylockdep.preempt_disabled():
                work()
        finally:
            done.set()
        if one:
            return True
    return False


def _ipi_handler(func: CpuFunc, cpu: int) -> None:
    with pylockdep.hardirq():
        func(cpu)


def on_each_cpu(cpus: Cpus, func: CpuFunc) -> None:
    """Run ``func`` on every online CPU: IPI the others and wait for them, then run it here with
    interrupts off, all with preemption disabled (3.x ``on_each_cpu(func, info, 1)``)."""
    with pylockdep.preempt_disabled():
        me = current_cpu()
        for done in [cpus.send_ipi(cpu, func) for cpu in sorted(cpus.online) if cpu != me]:
            cpus.tasks.wait_for(done, "an IPI")
        with pylockdep.irqs_disabled():
            func(me)


def smp_call_function_many(cpus: Cpus, targets: set[int], func: CpuFunc) -> None:
    """IPI ``func`` to the online CPUs of ``targets`` other than this one and wait for them all."""
    me = current_cpu()
    for done in [cpus.send_ipi(cpu, func) for cpu in sorted(targets & cpus.online) if cpu != me]:
        cpus.tasks.wait_for(done, "an IPI")


def smp_call_function_single(cpus: Cpus, cpu: int, func: CpuFunc) -> None:
    """Run ``func`` on ``cpu`` by IPI and wait; nothing happens if the CPU is offline."""
    if cpu in cpus.online:
        cpus.tasks.wait_for(cpus.send_ipi(cpu, func), "an IPI")


class _Rendezvous:
    """stop_machine's state steps: every participating CPU arrives before any moves on (hardware)."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._arrived = 0
        self._all = Event()

    def arrive(self, tasks: Tasks) -> None:
        with _RENDEZVOUS_GUARD:
            self._arrived += 1
            last = self._arrived == self._n
        if last:
            self._all.set()
        tasks.wait_for(self._all, "every CPU entering stop_machine")


_RENDEZVOUS_GUARD = _plain.plain_lock()  # an atomic counter: hardware, outside the lock graph


def stop_machine_cpu_stop(cpus: Cpus, steps: tuple[_Rendezvous, _Rendezvous], fn: Callable[[], None] | None) -> None:
    """Every online CPU, in its stopper: interrupts off once all have arrived; the CPU being taken
    down runs ``fn``; nobody leaves before it is done (3.10's ``stop_machine_cpu_stop``)."""
    with pylockdep.irqs_disabled():
        steps[0].arrive(cpus.tasks)
        if fn is not None:
            fn()
        steps[1].arrive(cpus.tasks)


def __stop_machine(cpus: Cpus, fn: Callable[[], None], cpu: int) -> None:
    """Run ``fn`` on ``cpu`` while every online CPU spins with interrupts off; wait for it."""
    online = sorted(cpus.online)
    steps = (_Rendezvous(len(online)), _Rendezvous(len(online)))
    pending = [
        cpus.queue_stop_work(c, functools.partial(stop_machine_cpu_stop, cpus, steps, fn if c == cpu else None))
        for c in online
    ]
    for done in pending:
        cpus.tasks.wait_for(done, "stop_machine")


class Hotplug:
    """CPU hotplug state: ``cpu_add_remove_lock``, ``cpu_hotplug.lock`` with its reader refcount, and
    the notifier chain."""

    def __init__(self, table: LockTable, cpus: Cpus) -> None:
        self.cpu_add_remove_lock = table.new("cpu_add_remove_lock")
        self.lock = table.new("cpu_hotplug.lock")
        self.refcount = 0
        self.readers_gone = Event()
        self.active_writer: threading.Thread | None = None
        self.cpus = cpus
        self.notifiers: list[Callable[[str, int], None]] = []
        self.events: list[tuple[str, int]] = []


def cpu_notify(hotplug: Hotplug, action: str, cpu: int) -> None:
    """Tell the hotplug notifier chain that ``cpu`` reached ``action``."""
    hotplug.events.append((action, cpu))
    notifier_call_chain(hotplug.notifiers, action, cpu)


def notifier_call_chain(chain: list[Callable[[str, int], None]], action: str, cpu: int) -> None:
    """Call every notifier of ``chain`` in order."""
    for notifier in list(chain):
        notifier(action, cpu)


def get_online_cpus(hotplug: Hotplug) -> None:
    """Keep the online CPUs stable: count a reader under ``cpu_hotplug.lock`` (a writer waits for 0)."""
    if hotplug.active_writer is threading.current_thread():
        return
    with hotplug.lock:
        hotplug.refcount += 1
        hotplug.readers_gone.clear()


def put_online_cpus(hotplug: Hotplug) -> None:
    """Drop a reader; the last one lets a waiting hotplug writer in."""
    if hotplug.active_writer is threading.current_thread():
        return
    with hotplug.lock:
        hotplug.refcount -= 1
        if hotplug.refcount == 0:
            hotplug.readers_gone.set()


def cpu_hotplug_begin(hotplug: Hotplug) -> None:
    """Become the hotplug writer: hold ``cpu_hotplug.lock`` once no reader is counted."""
    hotplug.active_writer = threading.current_thread()
    while True:
        hotplug.lock.acquire()
        if hotplug.refcount == 0:
            return
        hotplug.lock.release()
        hotplug.cpus.tasks.wait_for(hotplug.readers_gone, "get_online_cpus() readers leaving")


def cpu_hotplug_done(hotplug: Hotplug) -> None:
    hotplug.active_writer = None
    hotplug.lock.release()


def register_cpu_notifier(hotplug: Hotplug, notifier: Callable[[str, int], None]) -> None:
    """Add a hotplug notifier, under ``cpu_add_remove_lock`` (``cpu_maps_update_begin``)."""
    with hotplug.cpu_add_remove_lock:
        hotplug.notifiers.append(notifier)


def cpu_down(hotplug: Hotplug, cpu: int) -> None:
    """Take ``cpu`` offline (a write to its sysfs ``online`` file): CPU maps, then hotplug lock."""
    with hotplug.cpu_add_remove_lock:
        _cpu_down(hotplug, cpu)


def _cpu_down(hotplug: Hotplug, cpu: int) -> None:
    cpu_hotplug_begin(hotplug)
    try:
        cpu_notify(hotplug, CPU_DOWN_PREPARE, cpu)
        __stop_machine(hotplug.cpus, functools.partial(take_cpu_down, hotplug, cpu), cpu)
        cpu_notify(hotplug, CPU_DEAD, cpu)
    finally:
        cpu_hotplug_done(hotplug)


def take_cpu_down(hotplug: Hotplug, cpu: int) -> None:
    """On the dying CPU, in stop_machine (interrupts off): leave the online mask, call CPU_DYING."""
    hotplug.cpus.online.discard(cpu)
    cpu_notify(hotplug, CPU_DYING, cpu)


def cpu_up(hotplug: Hotplug, cpu: int) -> None:
    """Bring ``cpu`` online: CPU maps and hotplug lock, CPU_UP_PREPARE, the CPU starts and runs
    CPU_STARTING, then CPU_ONLINE."""
    with hotplug.cpu_add_remove_lock:
        cpu_hotplug_begin(hotplug)
        try:
            cpu_notify(hotplug, CPU_UP_PREPARE, cpu)
            done = hotplug.cpus.run_idle(cpu, functools.partial(start_secondary, hotplug, cpu))
            hotplug.cpus.tasks.wait_for(done, f"CPU {cpu} coming online")
            cpu_notify(hotplug, CPU_ONLINE, cpu)
        finally:
            cpu_hotplug_done(hotplug)


def start_secondary(hotplug: Hotplug, cpu: int) -> None:
    """A CPU's first code: preemption and interrupts still off, CPU_STARTING, then online."""
    with pylockdep.preempt_disabled(), pylockdep.irqs_disabled():
        cpu_notify(hotplug, CPU_STARTING, cpu)
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
    """Module init: KVM follows CPU hotplug (``register_cpu_notifier``)."""
    register_cpu_notifier(hotplug, functools.partial(kvm_cpu_hotplug, module))
