"""One run of the model: a machine, VMs and the kernel's tasks, in phases that fix what must happen.

Threads run concurrently within a phase; the phases make sure that every locking path the
verdicts depend on runs at least once whatever the timing:

1. *boot*: the kvm module registers its shrinker and hotplug notifier; ``kswapd0`` and the CPUs'
   idle tasks start.
2. *VMs*: each VMM (``qemu-system-x86``) creates a VM (virtualization enabled by IPI on every CPU
   for the first one), its irqchip, PIT, memslots and vCPUs; the vCPUs (``CPU n/KVM``) run and fault
   in all guest RAM.
3. *reclaim*: a memory hog (``stress``) pushes free memory under the low watermark until
   ``kswapd0`` has aged the VMs' pages (MMU notifier under ``ptl``) and ``mmu_shrink`` has zapped a
   shadow page.
4. *busy*: memslot updates, the balloon (MMU notifier range invalidation), debugfs statistics
   (``kvm_stat``) and cpufreq transitions (``kworker/0:1``) run together with the vCPUs.
5. *hotplug*: CPU 1 goes down (CPU_DYING) and comes back (CPU_STARTING) while VMs exist.
6. *teardown*: the vCPUs stop, the invariants are checked, the VMs are destroyed (virtualization
   disabled by IPI after the last one), and the invariants are checked again.
"""

from __future__ import annotations

import dataclasses
import random
import threading

import pylockdep

from .config import CONFIGS, Config
from .hardware import Cpus, Hotplug, cpu_down, cpu_up, register_kvm_cpu_notifier
from .hostmm import HostMemory, HostMM, exit_mmap
from .invariants import check_invariants
from .kvm import (
    IoDevice,
    Kvm,
    KvmModule,
    Memslot,
    kvm_arch_vm_ioctl_create_pit,
    kvm_create_irqchip,
    kvm_create_vm,
    kvm_destroy_vm,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
    vcpu_stat_get,
    vm_stat_get,
)
from .later import run_scenario
from .mmu import MMU_CACHE_MIN, SPTES_PER_PAGE
from .notifier import virtio_balloon
from .shrinker import Vmscan, kswapd, kvm_mmu_module_init
from .tasks import Event, ModelError, Tasks
from .vcpu import GuestLayout, GuestProgram, vcpu_thread
from .x86 import kvmclock_cpufreq_notifier

NR_CPUS = 4
HOTPLUG_CPU = 1
RAM_PAGES = 256  # guest RAM frames per VM: enough shadow pages for the shrinker to scan a batch
FB_PAGES = 16
LAYOUT = GuestLayout(ram=range(0, RAM_PAGES), fb=range(RAM_PAGES, RAM_PAGES + FB_PAGES), mmio=range(0x1000, 0x1004))
IRQCHIP = (IoDevice("pic", 0x1000, 1), IoDevice("ioapic", 0x1001, 1))
PIT = IoDevice("pit", 0x1002, 1)
FB_SLOT = Memslot(1, LAYOUT.fb.start, FB_PAGES, userspace_addr=0x10000 + LAYOUT.fb.start)
RAM_SLOT = Memslot(0, LAYOUT.ram.start, RAM_PAGES, userspace_addr=0x10000)
LOW_WATERMARK, HIGH_WATERMARK = 32, 48
HEADROOM = 96  # free pages left once every VM is fully populated
HOG_RESERVE = 8  # pages the memory hog leaves free so that vCPUs can still fault
BALLOON_PAGES = 8
KSWAPD_PID = 55  # as in the seed report
KWORKER_PID = 21
VMM_THREADS = 16  # pids reserved per VMM: its main thread, its vCPU threads, its balloon thread

# Paths every run must have executed, with the counter that proves it.
REQUIRED_EVENTS = (
    "vm_create",
    "vm_destroy",
    "memslot_update",
    "shrinker_zap",
    "notifier_young",
    "notifier_invalidate",
    "balloon_zap",
    "cpufreq_notifier",
    "stat_read",
    "ipi",
    "cpu_dying",
    "cpu_starting",
    "tsc_write",
    "pf_fixed",
)


def check_sizes(vms: int, vcpus: int, iterations: int) -> None:
    """``ValueError`` unless the sizes are at least 1 and the vCPUs fit the pids a VMM has."""
    if vms < 1 or vcpus < 1 or iterations < 1:
        raise ValueError("vms, vcpus and iterations must be at least 1")
    if vcpus > VMM_THREADS - 2:
        raise ValueError(f"at most {VMM_THREADS - 2} vCPUs per VM")


@dataclasses.dataclass
class RunResult:
    """What a run found: lockdep reports, violated invariants, model failures, path counters."""

    config: str
    preempt_rt: bool
    modern: bool
    reports: list[pylockdep.Report]
    violations: list[str]
    errors: list[str]
    events: dict[str, int]

    @property
    def exit_code(self) -> int:
        """2 when the model itself is broken (a violated invariant, a failure), else 1 if lockdep
        reported something, else 0."""
        if self.violations or self.errors:
            return 2
        return 1 if self.reports else 0


@dataclasses.dataclass(eq=False)
class Vmm:
    """One VMM process: its address space, its VM, its vCPU threads and the events between them."""

    vm_id: int
    mm: HostMM
    pid: int
    kvm: Kvm | None = None
    vcpu_threads: list[threading.Thread] = dataclasses.field(default_factory=list)
    populated: list[Event] = dataclasses.field(default_factory=list)
    created: Event = dataclasses.field(default_factory=Event)
    busy_done: Event = dataclasses.field(default_factory=Event)
    stop_vcpus: Event = dataclasses.field(default_factory=Event)
    vcpus_stopped: Event = dataclasses.field(default_factory=Event)
    destroyed: Event = dataclasses.field(default_factory=Event)


class Model:
    """The machine and kernel of one run, and the phases that drive it (see the module doc)."""

    def __init__(self, config: Config, vms: int, vcpus: int, iterations: int, seed: int) -> None:
        check_sizes(vms, vcpus, iterations)
        self.config, self.nr_vcpus, self.iterations, self.seed = config, vcpus, iterations, seed
        self.tasks = Tasks()
        table = config.lock_table()
        self.vmscan = Vmscan(table)
        guest_pages = RAM_PAGES + FB_PAGES
        per_vm = guest_pages + -(-guest_pages // SPTES_PER_PAGE) + vcpus * MMU_CACHE_MIN
        self.memory = HostMemory(vms * per_vm + HEADROOM, LOW_WATERMARK, HIGH_WATERMARK, self.vmscan.wakeup_kswapd)
        self.vmscan.memory = self.memory
        self.cpus = Cpus(NR_CPUS, self.tasks, config.version)
        self.hotplug = Hotplug(table, self.cpus)
        self.module = KvmModule(config, table, self.memory, self.cpus, self.hotplug)
        self.vmms = [Vmm(i, HostMM(self.memory, table), 2000 + VMM_THREADS * i) for i in range(vms)]
        self.busy = Event()
        self.teardown = Event()
        self.stat_reads = 0

    def run(self) -> tuple[list[str], list[str], dict[str, int]]:
        """Run every phase; returns (model failures, violated invariants, path counters)."""
        violations: list[str] = []
        try:
            self._boot()
            self._start_vms()
            self._reclaim()
            self._busy()
            self._hotplug()
            for vmm in self.vmms:
                vmm.stop_vcpus.set()
            for vmm in self.vmms:
                self.tasks.wait_for(vmm.vcpus_stopped, f"VM {vmm.vm_id}'s vCPUs stopping")
            violations += self._invariants("with the VMs alive")
            self.teardown.set()
            for vmm in self.vmms:
                self.tasks.wait_for(vmm.destroyed, f"VM {vmm.vm_id} being destroyed")
            violations += self._invariants("after the VMs were destroyed")
        except ModelError as exc:
            self.tasks.fail(str(exc))
        finally:
            self.vmscan.kthread_stop()
            self.cpus.shutdown()
            for vmm in self.vmms:
                vmm.stop_vcpus.set()
            try:
                self.tasks.join_all()
            except ModelError as exc:
                self.tasks.fail(str(exc))
        events = self._events()
        errors = list(self.tasks.errors)
        if not errors:
            errors += [f"the {name} path never ran" for name in REQUIRED_EVENTS if not events.get(name)]
        return errors, violations, events

    def _boot(self) -> None:
        """Load the kvm module (shrinker, hotplug notifier), start kswapd0."""
        init = self.tasks.spawn("modprobe", self._kvm_init)
        init.join()
        self.tasks.spawn("kswapd0", kswapd, self.vmscan, pid=KSWAPD_PID, kthread=True)

    def _kvm_init(self) -> None:
        kvm_mmu_module_init(self.module, self.vmscan)
        register_kvm_cpu_notifier(self.module, self.hotplug)

    def _start_vms(self) -> None:
        """Start every VMM and wait until each VM exists and its vCPUs touched all its RAM."""
        for vmm in self.vmms:
            self.tasks.spawn("qemu-system-x86", self._vmm_main, vmm, pid=vmm.pid)
        for vmm in self.vmms:
            self.tasks.wait_for(vmm.created, f"creation of VM {vmm.vm_id}")
            for n, populated in enumerate(vmm.populated):
                self.tasks.wait_for(populated, f"VM {vmm.vm_id} vCPU {n} populating its RAM")

    def _vmm_main(self, vmm: Vmm) -> None:
        """A VMM's main thread, through the whole life of its VM."""
        kvm = vmm.kvm = kvm_create_vm(self.module, vmm.vm_id, vmm.mm)
        kvm_create_irqchip(kvm, IRQCHIP)
        kvm_arch_vm_ioctl_create_pit(kvm, PIT)
        kvm_set_memory_region(kvm, RAM_SLOT)
        kvm_set_memory_region(kvm, FB_SLOT)
        for n in range(self.nr_vcpus):
            vcpu = kvm_vm_ioctl_create_vcpu(kvm, cpu=(vmm.vm_id * self.nr_vcpus + n) % NR_CPUS)
            share = list(LAYOUT.ram[n :: self.nr_vcpus])
            program = GuestProgram(LAYOUT, share, random.Random(f"{self.seed}/{vmm.vm_id}/{n}"))
            populated = Event()
            vmm.populated.append(populated)
            vmm.vcpu_threads.append(
                self.tasks.spawn(
                    f"CPU {n}/KVM",
                    vcpu_thread,
                    vcpu,
                    program,
                    self.cpus,
                    populated,
                    vmm.stop_vcpus,
                    pid=vmm.pid + 1 + n,
                    cpu=vcpu.cpu,
                )
            )
        vmm.created.set()

        self.tasks.wait_for(self.busy, "the busy phase")
        for _ in range(self.iterations):
            kvm_set_memory_region(kvm, FB_SLOT, delete=True)
            kvm_set_memory_region(kvm, FB_SLOT)
        vmm.busy_done.set()

        self.tasks.wait_for(vmm.stop_vcpus, "the end of the run")
        for thread in vmm.vcpu_threads:
            thread.join()
        vmm.vcpus_stopped.set()

        self.tasks.wait_for(self.teardown, "the teardown phase")
        kvm_destroy_vm(kvm)
        exit_mmap(vmm.mm)
        vmm.destroyed.set()

    def _reclaim(self) -> None:
        """Keep memory short until kswapd0's shrinking has reached KVM."""
        hog = self.tasks.spawn("stress", self._memory_hog)
        self.tasks.wait_for(self.module.shrunk, "kswapd0 shrinking a VM's shadow pages")
        hog.join()

    def _memory_hog(self) -> None:
        """``stress --vm``: take memory down to the low watermark, then one page more after each
        kswapd pass until KVM has been shrunk, then exit (freeing it all)."""
        memory, seen = self.memory, self.vmscan.balance_runs
        pages = [memory.alloc_page()]
        while memory.nr_free >= memory.low:
            pages.append(memory.alloc_page())
        while not self.module.shrunk.wait(0.005) and not self.tasks.failed.is_set():
            if self.vmscan.balance_runs != seen and memory.nr_free > HOG_RESERVE:
                seen = self.vmscan.balance_runs
                pages.append(memory.alloc_page())
        for pfn in pages:
            memory.put_page(pfn)

    def _busy(self) -> None:
        """Memslot updates, balloon, statistics and cpufreq, all at once; wait for them all."""
        self.busy.set()
        workers = [
            self.tasks.spawn("kvm_stat", self._kvm_stat),
            self.tasks.spawn("kworker/0:1", self._cpufreq, pid=KWORKER_PID, kthread=True),
        ]
        for vmm in self.vmms:
            assert vmm.kvm is not None
            starts = [i * 5 * BALLOON_PAGES % (RAM_PAGES - BALLOON_PAGES) for i in range(self.iterations)]
            ranges = [(start, start + BALLOON_PAGES) for start in starts]
            workers.append(
                self.tasks.spawn(
                    "qemu-system-x86",
                    virtio_balloon,
                    vmm.kvm,
                    RAM_SLOT.userspace_addr,
                    ranges,
                    self.tasks.failed,
                    pid=vmm.pid + VMM_THREADS - 1,
                )
            )
        for worker in workers:
            worker.join()
        for vmm in self.vmms:
            self.tasks.wait_for(vmm.busy_done, f"VM {vmm.vm_id}'s memslot updates")

    def _kvm_stat(self) -> None:
        """Read KVM's debugfs statistics, as ``kvm_stat`` does."""
        for _ in range(self.iterations):
            vm_stat_get(self.module, "remote_tlb_flush")
            vcpu_stat_get(self.module, "pf_fixed")
            self.stat_reads += 1

    def _cpufreq(self) -> None:
        """cpufreq transitions, one CPU after another, each notified to kvmclock."""
        for i in range(self.iterations):
            kvmclock_cpufreq_notifier(self.module, i % NR_CPUS, 2_000_000 - 100_000 * (i % 3))

    def _hotplug(self) -> None:
        """Take a CPU down and bring it back, as writing to its sysfs ``online`` file does."""
        self.tasks.spawn("bash", self._cpu_offline_online).join()

    def _cpu_offline_online(self) -> None:
        cpu_down(self.hotplug, HOTPLUG_CPU)
        cpu_up(self.hotplug, HOTPLUG_CPU)

    def _invariants(self, when: str) -> list[str]:
        """The violated invariants, each prefixed with ``when`` they were checked.

        Every other thread has stopped but kswapd0, which an allocation may wake at any time: it
        is parked while the state is read, or a shrink half done would look like a broken invariant.
        """
        self.tasks.wait_for(self.vmscan.kthread_park(), "kswapd0 parking")
        try:
            return [f"{when}: {v}" for v in check_invariants(self.module, [vmm.mm for vmm in self.vmms])]
        finally:
            self.vmscan.kthread_unpark()

    def _events(self) -> dict[str, int]:
        """Every path counter of the run."""
        events = dict(self.module.events)
        vcpus = [vcpu for vmm in self.vmms if vmm.kvm for vcpu in vmm.kvm.vcpus]
        for field in ("pf_fixed", "pf_retry", "tsc_write", "mmio_exits", "exits", "tlb_flush"):
            events[field] = sum(vcpu.stat[field] for vcpu in vcpus)
        events["ipi"] = self.cpus.ipis
        events["stat_read"] = self.stat_reads
        events["kswapd_balance"] = self.vmscan.balance_runs
        for action, _cpu in self.hotplug.events:
            events[action.lower()] = events.get(action.lower(), 0) + 1
        return events


def run(
    config: str | Config,
    *,
    preempt_rt: bool = False,
    modern: bool = False,
    vms: int = 2,
    vcpus: int = 2,
    iterations: int = 3,
    seed: int = 0,
) -> RunResult:
    """Run the model once as kernel state ``config`` under a fresh pylockdep validator.

    The validator checks and prints as the configuration's kernel did (its ``era``: no wait-context
    check before 5.7, the layout of the time), or as today's lockdep with
    CONFIG_PROVE_RAW_LOCK_NESTING when ``modern``; as PREEMPT_RT when ``preempt_rt``.  Like the
    kernel it reports once: after the first lockdep report only "sleeping function called" BUGs
    follow.  It never raises; its reports are in the result.  A configuration with a
    scenario (a later bug) runs that scenario's tasks instead of the 3.x machine; the sizes do not
    apply to it.  ``KeyError`` for an unknown configuration name, ``ValueError`` for counts below 1.
    """
    cfg = CONFIGS[config] if isinstance(config, str) else config
    check_sizes(vms, vcpus, iterations)
    era = "modern" if modern else cfg.era
    options = {"era": era, "report_once": True, "prove_raw_lock_nesting": era == "modern"}
    with pylockdep.validate(preempt_rt=preempt_rt, raise_on_report=False, **options) as validator:
        if cfg.scenario is not None:
            errors, violations, events = run_scenario(cfg), [], {}
        else:
            errors, violations, events = Model(cfg, vms, vcpus, iterations, seed).run()
    return RunResult(cfg.name, preempt_rt, era == "modern", list(validator.reports), violations, errors, events)
