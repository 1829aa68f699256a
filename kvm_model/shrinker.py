"""Memory reclaim (``mm/vmscan.c`` of Linux 3.x) and KVM's MMU shrinker, in each version's shape.

``kswapd0`` sleeps until an allocation leaves fewer free pages than the low watermark, then
runs :func:`balance_pgdat`: from priority ``DEF_PRIORITY`` down to 0, until the node is balanced,
it ages a share of the LRU (:func:`shrink_zone`, which asks KVM through the MMU notifier) and
calls :func:`shrink_slab`.  That asks each shrinker for its object count, works out how much to
scan from the reclaim pressure, and calls it to scan in batches, deferring the remainder.

KVM's shrinker has three bodies: 3.4's ``mmu_shrink`` locks every VM on ``vm_list``; 3.10's
stops at the first VM with shadow pages; 3.12 split it into ``mmu_shrink_count`` (a lockless
counter) and ``mmu_shrink_scan`` (the 3.10 walk).  The configuration's kernel version picks one.

The function names are the kernel's on purpose: a splat's call trace then reads
``mmu_shrink <- shrink_slab <- balance_pgdat <- kswapd`` as in the seed report.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from .hostmm import HostMemory, page_referenced
from .locktable import LockTable
from .mmu import ShadowPage, kvm_mmu_commit_zap_page, kvm_mmu_remove_some_alloc_mmu_pages
from .tasks import Event

if TYPE_CHECKING:
    from .kvm import Kvm, KvmModule

DEF_PRIORITY = 12
DEFAULT_SEEKS = 2
# The kernel scans slabs in batches of 128 objects; the model's caches hold tens of objects, so
# its batch is scaled down with them.
SHRINK_BATCH = 16


@dataclasses.dataclass
class ShrinkControl:
    """What a shrinker is asked: ``nr_to_scan == 0`` is a count query, else scan that many."""

    nr_to_scan: int


SHRINK_STOP = -1  # what a scan_objects callback returns when it cannot make progress


@dataclasses.dataclass(eq=False)
class Shrinker:
    """A registered cache: its callbacks, its cost to recreate, and the scan work deferred so far.

    Before 3.12 a cache has one ``shrink`` callback (``nr_to_scan == 0`` asks for the count);
    from 3.12 it has ``count_objects`` and ``scan_objects``.
    """

    seeks: int
    shrink: Callable[[ShrinkControl], int] | None = None
    count_objects: Callable[[ShrinkControl], int] | None = None
    scan_objects: Callable[[ShrinkControl], int] | None = None
    nr_in_batch: int = 0


class Vmscan:
    """Reclaim state of the model's one memory node: the shrinker list and kswapd's wait."""

    def __init__(self, table: LockTable) -> None:
        self.shrinker_rwsem = table.new("shrinker_rwsem")
        self.shrinkers: list[Shrinker] = []
        self.memory: HostMemory | None = None
        self.kswapd_wait = Event()
        self.stop = Event()
        self.park_request = Event()
        self.parked = Event()  # kswapd is parked, between two passes
        self.unparked = Event()
        self.balance_runs = 0

    def wakeup_kswapd(self) -> None:
        """An allocation dipped below the low watermark: kswapd has work."""
        self.kswapd_wait.set()

    def kthread_stop(self) -> None:
        """Ask kswapd to exit."""
        self.stop.set()
        self.kswapd_wait.set()
        self.unparked.set()

    def kthread_park(self) -> Event:
        """Ask kswapd to stop between two passes (``kthread_park``); returns the event it sets once
        it has.  It stays parked until :meth:`kthread_unpark`."""
        self.unparked.clear()
        self.park_request.set()
        self.kswapd_wait.set()
        return self.parked

    def kthread_unpark(self) -> None:
        """Let a parked kswapd run again; it looks at the watermarks at once."""
        self.park_request.clear()
        self.parked.clear()
        self.unparked.set()


def register_shrinker(vmscan: Vmscan, shrinker: Shrinker) -> None:
    """Add a shrinker to the list (write side of ``shrinker_rwsem``)."""
    with vmscan.shrinker_rwsem.write():
        vmscan.shrinkers.append(shrinker)


def kswapd(vmscan: Vmscan) -> None:
    """The node's reclaim thread: balance the node each time it is woken, until stopped."""
    while True:
        vmscan.kswapd_wait.wait()
        if vmscan.stop.is_set():
            return
        if vmscan.park_request.is_set():
            vmscan.parked.set()
            vmscan.unparked.wait()
            continue
        vmscan.kswapd_wait.clear()
        balance_pgdat(vmscan)
        vmscan.balance_runs += 1


def balance_pgdat(vmscan: Vmscan) -> None:
    """Reclaim at rising pressure until the node has ``high`` free pages or priority 0 is done."""
    memory = vmscan.memory
    assert memory is not None, "kswapd runs only once the node's memory is set up"
    for priority in range(DEF_PRIORITY, -1, -1):
        if memory.zone_watermark_ok():
            return
        lru_pages = len(memory.lru)
        nr_scanned = shrink_zone(memory, priority)
        shrink_slab(vmscan, nr_scanned, lru_pages)


def shrink_zone(memory: HostMemory, priority: int) -> int:
    """Age ``lru >> priority`` of the LRU's oldest pages; returns how many were scanned.

    The model has no swap and VMM memory is anonymous, so aging is all LRU reclaim does here.
    """
    pages = memory.lru_snapshot(len(memory.lru) >> priority)
    for pfn, mm, hva in pages:
        page_referenced(pfn, mm, hva)
    return len(pages)


def shrink_slab(vmscan: Vmscan, nr_pages_scanned: int, lru_pages: int) -> int:
    """Shrink every registered cache in proportion to the LRU scanning just done.

    Returns the number of objects freed, or 1 if the shrinker list was busy (its rwsem is only
    read-trylocked, so reclaim never waits for a shrinker being registered).
    """
    if not vmscan.shrinker_rwsem.down_read_trylock():
        return 1
    freed = 0
    try:
        for shrinker in list(vmscan.shrinkers):
            if shrinker.shrink is not None:
                max_pass = shrinker.shrink(ShrinkControl(0))
            else:
                assert shrinker.count_objects is not None
                max_pass = shrinker.count_objects(ShrinkControl(0))
            if max_pass <= 0:
                continue
            total_scan, shrinker.nr_in_batch = shrinker.nr_in_batch, 0
            delta = (4 * nr_pages_scanned // shrinker.seeks) * max_pass // (lru_pages + 1)
            total_scan += delta
            if delta < max_pass // 4:
                total_scan = min(total_scan, max_pass // 2)
            total_scan = min(total_scan, max_pass * 2)
            while total_scan >= SHRINK_BATCH:
                if shrinker.shrink is not None:
                    nr_before = shrinker.shrink(ShrinkControl(0))
                    shrink_ret = shrinker.shrink(ShrinkControl(SHRINK_BATCH))
                    freed += max(nr_before - shrink_ret, 0)
                else:
                    assert shrinker.scan_objects is not None
                    ret = shrinker.scan_objects(ShrinkControl(SHRINK_BATCH))
                    if ret == SHRINK_STOP:
                        break
                    freed += ret
                total_scan -= SHRINK_BATCH
            shrinker.nr_in_batch += total_scan
    finally:
        vmscan.shrinker_rwsem.up_read()
    return freed


def mmu_shrink(module: KvmModule, sc: ShrinkControl) -> int:
    """KVM's shrinker before 3.12.  3.4: with ``kvm_lock`` held, visit every VM under its SRCU read
    side and ``mmu_lock``, zap the oldest shadow page of the first VM that has any.  3.10: stop at
    the first VM with shadow pages (skipping the others without locking them).  Either way the
    VM shrunk moves to the tail of ``vm_list``.  Returns the number of shadow pages in use.
    """
    nr_to_scan = sc.nr_to_scan
    if nr_to_scan == 0:
        return module.total_used_mmu_pages.value
    if module.config.at_least("3.10"):
        with module.kvm_lock:
            _shrink_first_vm_with_pages(module, nr_to_scan)
        return module.total_used_mmu_pages.value
    kvm_freed: Kvm | None = None
    with module.kvm_lock:
        for kvm in module.vm_list:
            idx = kvm.srcu.read_lock()
            with kvm.mmu_lock:
                invalid_list: list[ShadowPage] = []
                if kvm_freed is None and nr_to_scan > 0 and kvm.mmu.n_used_mmu_pages > 0:
                    kvm_mmu_remove_some_alloc_mmu_pages(kvm, invalid_list)
                    kvm_freed = kvm
                nr_to_scan -= 1
                kvm_mmu_commit_zap_page(kvm, invalid_list)
            kvm.srcu.read_unlock(idx)
        if kvm_freed is not None:
            _shrunk(module, kvm_freed)
    return module.total_used_mmu_pages.value


def mmu_shrink_count(module: KvmModule, sc: ShrinkControl) -> int:
    """3.12+: how many shadow pages KVM could free (the lockless counter)."""
    return module.total_used_mmu_pages.value


def mmu_shrink_scan(module: KvmModule, sc: ShrinkControl) -> int:
    """3.12+: under ``kvm_lock``, zap one shadow page of the first VM that has any; returns how
    many pages were freed (0 or 1)."""
    with module.kvm_lock:
        return _shrink_first_vm_with_pages(module, sc.nr_to_scan)


def _shrink_first_vm_with_pages(module: KvmModule, nr_to_scan: int) -> int:
    """The 3.10+ walk of ``vm_list`` (``kvm_lock`` held): look at no more than ``nr_to_scan`` VMs,
    skip those without shadow pages unlocked, zap the oldest page of the first with some."""
    for kvm in module.vm_list:
        if nr_to_scan == 0:
            break
        nr_to_scan -= 1
        if not kvm.mmu.n_used_mmu_pages:
            continue
        idx = kvm.srcu.read_lock()
        with kvm.mmu_lock:
            invalid_list: list[ShadowPage] = []
            kvm_mmu_remove_some_alloc_mmu_pages(kvm, invalid_list)
            kvm_mmu_commit_zap_page(kvm, invalid_list)
        kvm.srcu.read_unlock(idx)
        _shrunk(module, kvm)
        return 1
    return 0


def _shrunk(module: KvmModule, kvm: Kvm) -> None:
    """``list_move_tail``: the next shrink starts with another VM; count the zap."""
    module.vm_list.move_tail(kvm)
    module.events["shrinker_zap"] += 1
    module.shrunk.set()


def kvm_mmu_module_init(module: KvmModule, vmscan: Vmscan) -> Shrinker:
    """Register KVM's MMU shrinker, in its version's shape; it is costly to refill
    (``DEFAULT_SEEKS * 10``)."""
    if module.config.at_least("3.12"):
        shrinker = Shrinker(
            DEFAULT_SEEKS * 10,
            count_objects=functools.partial(mmu_shrink_count, module),
            scan_objects=functools.partial(mmu_shrink_scan, module),
        )
    else:
        shrinker = Shrinker(DEFAULT_SEEKS * 10, shrink=functools.partial(mmu_shrink, module))
    register_shrinker(vmscan, shrinker)
    return shrinker
