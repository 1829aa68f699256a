"""The host's memory: physical pages, the VMM's address space and its MMU notifiers.

:class:`HostMemory` is the page allocator of one memory node: pages with reference counts, an
LRU of mapped pages for reclaim to age, and watermarks that wake kswapd.  Its own locking
(``zone->lock``, ``lru_lock``) is outside the model and uses a plain, unvalidated lock.
:class:`HostMM` is the address space of a VMM process: page table entries (hva page -> pfn)
under the page-table lock ``ptl``, ``mmap_sem``, and the registered MMU notifiers that the
functions below call as the kernel's mm code does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pylockdep
from pylockdep import _plain

from .locktable import LockTable


class OutOfMemory(RuntimeError):
    """The model's memory node has no free page left: the model was sized wrongly."""


class HostMemory:
    """Physical pages ``0 .. total-1`` with reference counts; a page is free at count 0.

    ``on_low`` is called (without any model lock held) after an allocation that leaves fewer
    than ``low`` pages free: it is how the allocator wakes kswapd.  Misuse that the kernel would
    catch as a bad page (freeing a free page, taking a reference on one) is recorded in
    :attr:`errors` instead of raising, so a run can finish and report it.
    """

    def __init__(self, total: int, low: int, high: int, on_low: Callable[[], None]) -> None:
        self.total, self.low, self.high = total, low, high
        self._on_low = on_low
        # Page reference counts are atomics and the free list a spinning zone lock, usable under
        # any lock the model takes: a bare lock stands for them and stays out of the lock graph,
        # even when Python's own locks are validated too.
        self._lock = _plain.plain_lock()
        self._free = list(range(total - 1, -1, -1))
        self.refcount: dict[int, int] = {}
        self.lru: dict[int, tuple[HostMM, int]] = {}
        self.errors: list[str] = []

    @property
    def nr_free(self) -> int:
        """How many pages are free now."""
        return len(self._free)

    def zone_watermark_ok(self) -> bool:
        """Whether the node is balanced: at least ``high`` pages free."""
        return len(self._free) >= self.high

    def alloc_page(self) -> int:
        """Allocate a page (reference count 1) and return its pfn; wake kswapd below ``low``."""
        with self._lock:
            if not self._free:
                raise OutOfMemory(f"out of memory: all {self.total} host pages are in use")
            pfn = self._free.pop()
            self.refcount[pfn] = 1
            low = len(self._free) < self.low
        if low:
            self._on_low()
        return pfn

    def get_page(self, pfn: int) -> None:
        """Take a reference on an allocated page."""
        with self._lock:
            if pfn not in self.refcount:
                self.errors.append(f"get_page() on free page {pfn}")
                return
            self.refcount[pfn] += 1

    def get_page_unless_zero(self, pfn: int) -> bool:
        """Take a reference unless the page is free (the lockless pin of get_user_pages_fast)."""
        with self._lock:
            if pfn not in self.refcount:
                return False
            self.refcount[pfn] += 1
            return True

    def put_page(self, pfn: int) -> None:
        """Drop a reference; the page is freed when the last one goes.  A free page is an error."""
        with self._lock:
            count = self.refcount.get(pfn)
            if count is None:
                self.errors.append(f"page {pfn} freed twice")
                return
            if count > 1:
                self.refcount[pfn] = count - 1
                return
            del self.refcount[pfn]
            self.lru.pop(pfn, None)
            self._free.append(pfn)

    def lru_add(self, pfn: int, mm: HostMM, hva: int) -> None:
        """Put a newly mapped page on the LRU with its reverse mapping."""
        with self._lock:
            self.lru[pfn] = (mm, hva)

    def lru_snapshot(self, nr: int) -> list[tuple[int, HostMM, int]]:
        """The ``nr`` least recently added LRU pages, with their mm and hva, rotated to the head."""
        with self._lock:
            taken = list(self.lru.items())[:nr]
            for pfn, rmap in taken:
                del self.lru[pfn]
                self.lru[pfn] = rmap
        return [(pfn, mm, hva) for pfn, (mm, hva) in taken]


class MmuNotifier(Protocol):
    """What a secondary MMU (KVM) is told about changes to an address space."""

    def invalidate_range_start(self, mm: HostMM, start: int, end: int) -> None: ...

    def invalidate_range_end(self, mm: HostMM, start: int, end: int) -> None: ...

    def clear_flush_young(self, mm: HostMM, hva: int) -> bool: ...

    def release(self, mm: HostMM) -> None: ...


class HostMM:
    """The address space of one VMM process: ``ptes`` maps hva pages to pfns, under ``ptl``.

    The notifier list is changed only while no callback can run (registration before the VM is
    published, unregistration after its vCPUs stopped), so callers iterate over a copy.
    """

    def __init__(self, memory: HostMemory, table: LockTable) -> None:
        self.memory = memory
        self.mmap_sem = table.new("mm->mmap_sem")
        self.ptl = table.new("page->ptl")
        self.ptes: dict[int, int] = {}
        self.notifiers: list[MmuNotifier] = []


def get_user_page(mm: HostMM, hva: int) -> int:
    """Pin the page mapped at ``hva``, faulting one in if needed; the caller must put_page() it.

    Like KVM's hva_to_pfn(): the lockless get_user_pages_fast first, then the slow path.
    """
    pfn = get_user_pages_fast(mm, hva)
    return pfn if pfn is not None else get_user_pages(mm, hva)


def get_user_pages_fast(mm: HostMM, hva: int) -> int | None:
    """Walk the page table with irqs off and no lock; pin the page if one is mapped, else None."""
    with pylockdep.irqs_disabled():
        pfn = mm.ptes.get(hva)
        if pfn is None or not mm.memory.get_page_unless_zero(pfn):
            return None
        if mm.ptes.get(hva) == pfn:
            return pfn
    mm.memory.put_page(pfn)
    return None


def get_user_pages(mm: HostMM, hva: int) -> int:
    """The slow path: under ``mmap_sem`` (read), fault the page in if absent and pin it."""
    with mm.mmap_sem.read():
        with mm.ptl:
            pfn = mm.ptes.get(hva)
            if pfn is not None:
                mm.memory.get_page(pfn)
                return pfn
        new = mm.memory.alloc_page()
        with mm.ptl:
            pfn = mm.ptes.setdefault(hva, new)
            if pfn == new:
                mm.memory.lru_add(new, mm, hva)
            mm.memory.get_page(pfn)
        if pfn != new:  # another thread faulted the page in meanwhile
            mm.memory.put_page(new)
        return pfn


def zap_page_range(mm: HostMM, start: int, end: int) -> int:
    """Unmap and free the pages of ``[start, end)`` (``madvise(MADV_DONTNEED)``); returns how many.

    The secondary MMUs are told before the ptes change and after the pages are gone.
    """
    with mm.mmap_sem.read():
        mmu_notifier_invalidate_range_start(mm, start, end)
        with mm.ptl:
            pfns = [mm.ptes.pop(hva) for hva in range(start, end) if hva in mm.ptes]
        for pfn in pfns:
            mm.memory.put_page(pfn)
        mmu_notifier_invalidate_range_end(mm, start, end)
    return len(pfns)


def page_referenced(pfn: int, mm: HostMM, hva: int) -> bool:
    """Reclaim's aging of one mapped page: test and clear its young bits, secondary MMUs included.

    The notifier runs under the page-table lock, as page_referenced_one() calls it.
    """
    with mm.ptl:
        if mm.ptes.get(hva) != pfn:
            return False
        return mmu_notifier_clear_flush_young(mm, hva)


def exit_mmap(mm: HostMM) -> None:
    """Tear the address space down at process exit: release the notifiers, free every page."""
    mmu_notifier_release(mm)
    with mm.ptl:
        pfns = list(mm.ptes.values())
        mm.ptes.clear()
    for pfn in pfns:
        mm.memory.put_page(pfn)


def mmu_notifier_invalidate_range_start(mm: HostMM, start: int, end: int) -> None:
    """Tell every secondary MMU that ``[start, end)`` is about to be unmapped."""
    for notifier in list(mm.notifiers):
        notifier.invalidate_range_start(mm, start, end)


def mmu_notifier_invalidate_range_end(mm: HostMM, start: int, end: int) -> None:
    """Tell every secondary MMU that the unmapping of ``[start, end)`` is done."""
    for notifier in list(mm.notifiers):
        notifier.invalidate_range_end(mm, start, end)


def mmu_notifier_clear_flush_young(mm: HostMM, hva: int) -> bool:
    """Clear the accessed state of ``hva`` in every secondary MMU; true if any had it set."""
    young = False
    for notifier in list(mm.notifiers):
        young |= notifier.clear_flush_young(mm, hva)
    return young


def mmu_notifier_release(mm: HostMM) -> None:
    """The address space is going away: each secondary MMU drops all its mappings."""
    for notifier in list(mm.notifiers):
        notifier.release(mm)
