"""KVM's VM-wide state and the generic VM operations of ``virt/kvm/kvm_main.c``.

:class:`KvmModule` holds what the kvm module keeps globally (``kvm_lock`` and ``vm_list``, the
usage count and its lock, the MMU page counter); :class:`Kvm` is one VM (``struct kvm``) and
:class:`Vcpu` one of its vCPUs.  Memslots and I/O buses are immutable snapshots: readers get
them with ``kvm.srcu.dereference()`` inside a read section, writers hold ``slots_lock``, publish a
new snapshot and wait for a grace period.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pylockdep
from pylockdep import _plain

from .config import Config
from .hardware import Cpus, Hotplug, get_online_cpus, hardware_disable_all, hardware_enable_all, put_online_cpus
from .hostmm import HostMemory, HostMM
from .locktable import LockTable
from .mmu import OUTSIDE_GUEST_MODE, KvmMmu, kvm_mmu_zap_all
from .notifier import KvmMmuNotifier
from .tasks import Event
from .x86 import kvm_arch_vcpu_postcreate


@dataclasses.dataclass(frozen=True)
class Memslot:
    """Guest frames ``[base_gfn, base_gfn + npages)`` backed by host pages from ``userspace_addr``."""

    id: int
    base_gfn: int
    npages: int
    userspace_addr: int
    invalid: bool = False

    def contains(self, gfn: int) -> bool:
        return self.base_gfn <= gfn < self.base_gfn + self.npages

    def gfn_to_hva(self, gfn: int) -> int:
        return self.userspace_addr + gfn - self.base_gfn

    def gfns_in_hva_range(self, start: int, end: int) -> range:
        """The guest frames whose host address lies in ``[start, end)``."""
        lo = max(start, self.userspace_addr)
        hi = min(end, self.userspace_addr + self.npages)
        return range(lo - self.userspace_addr + self.base_gfn, hi - self.userspace_addr + self.base_gfn)


@dataclasses.dataclass(frozen=True)
class Memslots:
    """One published generation of a VM's memslots."""

    generation: int
    slots: tuple[Memslot, ...] = ()

    def gfn_to_memslot(self, gfn: int) -> Memslot | None:
        """The usable slot holding ``gfn``; a slot being deleted (invalid) is not usable."""
        for slot in self.slots:
            if slot.contains(gfn) and not slot.invalid:
                return slot
        return None

    def replace(self, slot_id: int, slot: Memslot | None) -> Memslots:
        """The next generation, with slot ``slot_id`` replaced by ``slot`` (or removed)."""
        kept = tuple(s for s in self.slots if s.id != slot_id)
        return Memslots(self.generation + 1, kept + ((slot,) if slot is not None else ()))


@dataclasses.dataclass(frozen=True)
class IoDevice:
    """An in-kernel device decoding guest frames ``[base_gfn, base_gfn + npages)``."""

    name: str
    base_gfn: int
    npages: int


class Vcpu:
    """One vCPU: its mutex, pending requests, MMU page cache, the simulated CPU it runs on and
    whether it is in the guest (``mode``: a remote TLB flush IPIs only the vCPUs in the guest)."""

    def __init__(self, kvm: Kvm, vcpu_id: int, cpu: int) -> None:
        self.kvm, self.vcpu_id, self.cpu = kvm, vcpu_id, cpu
        self.mutex = kvm.module.table.new("vcpu->mutex")
        self.mode = OUTSIDE_GUEST_MODE
        self.requests: set[str] = set()
        self.mmu_page_cache: list[int] = []
        self.srcu_idx = -1
        self.clock_khz = 0
        self.master_clock = 0
        self.stat: Counter[str] = Counter()

    def make_request(self, request: str) -> None:
        """kvm_make_request(): the vCPU handles it before its next guest entry (a set is atomic)."""
        self.requests.add(request)


class Kvm:
    """One VM (``struct kvm``).  Field guards: ``memslots``/``buses`` by ``srcu`` (readers) and
    ``slots_lock`` (writers), ``mmu`` by ``mmu_lock``, ``vcpus`` by ``lock``, ``arch_tsc`` by
    ``tsc_write_lock``.  The table's "Protects" entries for ``kvm->srcu`` and ``tsc_write_lock``
    are checked on every access (:func:`pylockdep.guarded_by`)."""

    memslots = pylockdep.guarded_by("srcu", writer="slots_lock")
    buses = pylockdep.guarded_by("srcu", writer="slots_lock")
    arch_tsc = pylockdep.guarded_by("tsc_write_lock")

    def __init__(self, module: KvmModule, vm_id: int, mm: HostMM) -> None:
        table = module.table
        self.module, self.vm_id, self.mm = module, vm_id, mm
        self.mmu_lock = table.new("kvm->mmu_lock")
        self.srcu = table.new("kvm->srcu")
        self.tsc_write_lock = table.new("kvm_arch::tsc_write_lock")
        self.pvclock_gtod_sync_lock = (
            table.new("kvm_arch::pvclock_gtod_sync_lock") if "kvm_arch::pvclock_gtod_sync_lock" in table else None
        )
        self.lock = table.new("kvm->lock")
        self.slots_lock = table.new("kvm->slots_lock")
        self.irq_lock = table.new("kvm->irq_lock")
        self.memslots = Memslots(0)
        self.buses: tuple[IoDevice, ...] = ()
        self.irq_routing: tuple[str, ...] = ()
        self.irq_ack_notifiers: tuple[str, ...] = ()
        self.mmu = KvmMmu(module.memory)
        self.vcpus: list[Vcpu] = []
        self.arch_tsc = {"last_tsc_write": 0, "last_tsc_nsec": 0, "last_tsc_offset": 0}
        self.stat: Counter[str] = Counter()
        self.mmu_notifier = KvmMmuNotifier(self)
        self.pit_lock: Any = None
        self.nr_vcpus_matched_tsc = 0  # the master clock's state, under pvclock_gtod_sync_lock

    def __repr__(self) -> str:
        return f"<Kvm {self.vm_id}>"


class VmList:
    """``vm_list``: the VMs in shrinker order; every access holds ``kvm_lock``."""

    def __init__(self, kvm_lock: Any) -> None:
        self._lock = kvm_lock
        self._vms: list[Kvm] = []

    def __iter__(self) -> Iterator[Kvm]:
        pylockdep.lockdep_assert_held(self._lock)
        return iter(list(self._vms))

    def add(self, kvm: Kvm) -> None:
        pylockdep.lockdep_assert_held(self._lock)
        self._vms.append(kvm)

    def remove(self, kvm: Kvm) -> None:
        pylockdep.lockdep_assert_held(self._lock)
        self._vms.remove(kvm)

    def move_tail(self, kvm: Kvm) -> None:
        """list_move_tail(): ``kvm`` goes last, so the next shrink starts with another VM."""
        pylockdep.lockdep_assert_held(self._lock)
        self._vms.remove(kvm)
        self._vms.append(kvm)

    def unlocked_snapshot(self) -> list[Kvm]:
        """The VMs, for the invariant checker once every thread has stopped."""
        return list(self._vms)


class UsedPagesCounter:
    """``kvm_total_used_mmu_pages``: a counter read without locks (a percpu_counter)."""

    def __init__(self) -> None:
        # A percpu_counter's updates are atomic in any context: a bare lock stands for that and,
        # never instrumented, stays out of the lock graph.
        self._lock = _plain.plain_lock()
        self.value = 0

    def add(self, delta: int) -> None:
        with self._lock:
            self.value += delta


class KvmModule:
    """The kvm module's globals for one configuration.

    ``count_lock`` is ``kvm_lock`` itself or ``kvm_count_lock`` (see :attr:`Config.count_lock`);
    it guards ``usage_count`` and ``hardware_enabled`` (the CPUs with virtualization on).
    """

    def __init__(self, config: Config, table: LockTable, memory: HostMemory, cpus: Cpus, hotplug: Hotplug) -> None:
        self.config, self.table, self.memory, self.cpus, self.hotplug = config, table, memory, cpus, hotplug
        self.jump_label_mutex = table.new("jump_label_mutex")
        self.text_mutex = table.new("text_mutex")
        self.apic_sw_disabled = 0  # the static key's count
        self.kvm_lock = table.new("kvm_lock")
        self.count_lock = self.kvm_lock if config.count_lock == "kvm_lock" else table.new("kvm_count_lock")
        self.vm_list = VmList(self.kvm_lock)
        self.usage_count = 0
        self.hardware_enabled: set[int] = set()
        self.total_used_mmu_pages = UsedPagesCounter()
        self.events: Counter[str] = Counter()  # how often each path ran; only ever compared with 0
        self.shrunk = Event()  # set once the shrinker has zapped a shadow page


def kvm_create_vm(module: KvmModule, vm_id: int, mm: HostMM) -> Kvm:
    """KVM_CREATE_VM: enable virtualization on every CPU (first VM only), register the MMU
    notifier, then publish the VM on ``vm_list``."""
    kvm = Kvm(module, vm_id, mm)
    hardware_enable_all(module)
    mm.notifiers.append(kvm.mmu_notifier)
    with module.kvm_lock:
        module.vm_list.add(kvm)
    module.events["vm_create"] += 1
    return kvm


def kvm_destroy_vm(kvm: Kvm) -> None:
    """The last reference is gone: unpublish the VM, drop its shadow MMU and notifier, free its
    vCPUs' page caches, and disable virtualization when it was the last VM."""
    module = kvm.module
    with module.kvm_lock:
        module.vm_list.remove(kvm)
    kvm.mmu_notifier.release(kvm.mm)
    kvm.mm.notifiers.remove(kvm.mmu_notifier)
    for vcpu in kvm.vcpus:
        while vcpu.mmu_page_cache:
            module.memory.put_page(vcpu.mmu_page_cache.pop())
    hardware_disable_all(module)
    module.events["vm_destroy"] += 1


def kvm_vm_ioctl_create_vcpu(kvm: Kvm, cpu: int) -> Vcpu:
    """KVM_CREATE_VCPU: create the vCPU and its local APIC, add it under ``kvm->lock``, then its
    post-create TSC write."""
    vcpu = Vcpu(kvm, len(kvm.vcpus), cpu)
    kvm_create_lapic(vcpu)
    with kvm.lock:
        kvm.vcpus.append(vcpu)
    kvm_arch_vcpu_postcreate(vcpu)
    return vcpu


def kvm_create_lapic(vcpu: Vcpu) -> None:
    """A new local APIC starts software-disabled: count it on the ``apic_sw_disabled`` static key."""
    static_key_slow_inc(vcpu.kvm.module)


def static_key_slow_inc(module: KvmModule) -> None:
    """Count a static key user; the first one patches the kernel text (``jump_label_lock``, then
    ``arch_jump_label_transform``: ``get_online_cpus`` and ``text_mutex``)."""
    with module.jump_label_mutex:
        if module.apic_sw_disabled == 0:
            arch_jump_label_transform(module)
        module.apic_sw_disabled += 1


def arch_jump_label_transform(module: KvmModule) -> None:
    """Patch the jump sites with the online CPUs kept stable."""
    get_online_cpus(module.hotplug)
    try:
        with module.text_mutex:
            module.events["text_poke"] += 1
    finally:
        put_online_cpus(module.hotplug)


def install_new_memslots(kvm: Kvm, slots: Memslots) -> None:
    """Publish ``slots`` and wait until no reader can still see the old generation."""
    pylockdep.lockdep_assert_held(kvm.slots_lock)
    kvm.memslots = slots
    kvm.srcu.synchronize()


def kvm_set_memory_region(kvm: Kvm, slot: Memslot, delete: bool = False) -> None:
    """KVM_SET_USER_MEMORY_REGION: create slot ``slot.id``, or delete it when ``delete``.

    A deletion first publishes the slot as invalid (faults on it stop), zaps the shadow MMU (all
    of it, as 3.x does: ``kvm_arch_flush_shadow``), and only then publishes the generation
    without it.
    """
    with kvm.slots_lock:
        old = kvm.memslots
        if delete:
            install_new_memslots(kvm, old.replace(slot.id, dataclasses.replace(slot, invalid=True)))
            kvm_arch_flush_shadow_all(kvm)
            install_new_memslots(kvm, kvm.memslots.replace(slot.id, None))
        else:
            install_new_memslots(kvm, old.replace(slot.id, slot))
    kvm.module.events["memslot_update"] += 1


def kvm_arch_flush_shadow_all(kvm: Kvm) -> None:
    """Drop every shadow page of the VM (a memslot went away)."""
    with kvm.mmu_lock:
        kvm_mmu_zap_all(kvm)


def kvm_io_bus_register_dev(kvm: Kvm, dev: IoDevice) -> None:
    """Add an in-kernel device to the MMIO bus: a new bus array and a grace period."""
    pylockdep.lockdep_assert_held(kvm.slots_lock)
    kvm.buses = kvm.buses + (dev,)
    kvm.srcu.synchronize()


def kvm_set_irq_routing(kvm: Kvm, routes: tuple[str, ...]) -> None:
    """Install a new irq routing table under ``irq_lock``."""
    with kvm.irq_lock:
        kvm.irq_routing = routes


def kvm_create_irqchip(kvm: Kvm, devices: tuple[IoDevice, ...]) -> None:
    """KVM_CREATE_IRQCHIP: under ``kvm->lock``, register the chips' MMIO devices (``slots_lock``)
    and then the default routing (``irq_lock``)."""
    with kvm.lock:
        with kvm.slots_lock:
            for dev in devices:
                kvm_io_bus_register_dev(kvm, dev)
        kvm_set_irq_routing(kvm, tuple(dev.name for dev in devices))


def kvm_register_irq_ack_notifier(kvm: Kvm, name: str) -> None:
    """Have device ``name`` told when the guest acknowledges its interrupt (under ``irq_lock``)."""
    with kvm.irq_lock:
        kvm.irq_ack_notifiers = kvm.irq_ack_notifiers + (name,)


def kvm_arch_vm_ioctl_create_pit(kvm: Kvm, dev: IoDevice) -> None:
    """KVM_CREATE_PIT2: the ioctl creates the PIT with ``slots_lock`` held."""
    with kvm.slots_lock:
        kvm_create_pit(kvm, dev)


def kvm_create_pit(kvm: Kvm, dev: IoDevice) -> None:
    """Set the PIT up under its own ``pit_state.lock`` (registering its irq ack notifier, so
    ``irq_lock`` nests inside it), then put it on the I/O bus."""
    pylockdep.lockdep_assert_held(kvm.slots_lock)
    kvm.pit_lock = kvm.module.table.new("pit->pit_state.lock")
    with kvm.pit_lock:
        kvm_register_irq_ack_notifier(kvm, dev.name)
    kvm_io_bus_register_dev(kvm, dev)


def kvm_io_bus_write(vcpu: Vcpu, gfn: int) -> bool:
    """An MMIO write by the guest: find the device on the bus (inside the vCPU's SRCU section)."""
    for dev in vcpu.kvm.srcu.dereference(vcpu.kvm.buses):
        if dev.base_gfn <= gfn < dev.base_gfn + dev.npages:
            vcpu.stat["mmio_exits"] += 1
            return True
    return False


def vm_stat_get(module: KvmModule, field: str) -> int:
    """A debugfs read of a VM statistic: the sum over every VM, under ``kvm_lock``."""
    with module.kvm_lock:
        return sum(kvm.stat[field] for kvm in module.vm_list)


def vcpu_stat_get(module: KvmModule, field: str) -> int:
    """A debugfs read of a vCPU statistic: the sum over every vCPU of every VM, under ``kvm_lock``."""
    with module.kvm_lock:
        return sum(vcpu.stat[field] for kvm in module.vm_list for vcpu in kvm.vcpus)
