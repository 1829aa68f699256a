"""The host's side of guest memory: which page frame holds each gfn, reclaim and re-allocation of frames,
pins, and whether the host knows a frame is dirty."""

from __future__ import annotations

from collections import Counter

FIRST_PFN = 0x101


class HostFrames:
    """Page frames backing the guest's memory.

    A gfn is backed by at most one pfn.  Reclaim is two calls, as in the kernel: :meth:`unmap` takes the page
    away from the gfn (the host page table entry goes), :meth:`free` gives the frame back, unless a pin holds
    it.  A freed frame is the first one handed out again, so reuse for another gfn is the natural outcome.
    """

    def __init__(self) -> None:
        self._backing: dict[int, int] = {}  # gfn -> pfn
        self._owner: dict[int, int] = {}  # pfn -> gfn whose data it holds
        self._free: list[int] = []  # freed frames; the last one freed is reused first
        self._next_pfn = FIRST_PFN
        self._pins: Counter[int] = Counter()
        self._freed_on_unpin: set[int] = set()
        self.dirty: set[int] = set()  # frames the host must write back before dropping them

    def gfn_to_pfn(self, gfn: int) -> int:
        """The frame backing ``gfn``, allocating one (fault-in) if there is none."""
        if gfn not in self._backing:
            pfn = self._free.pop() if self._free else self._fresh_pfn()
            self._backing[gfn], self._owner[pfn] = pfn, gfn
        return self._backing[gfn]

    def gfn_to_pfn_atomic(self, gfn: int) -> int | None:
        """The frame backing ``gfn``, pinned (it cannot be freed until :meth:`release_pfn`), or None if
        ``gfn`` is not backed now: an atomic caller cannot fault a page in."""
        pfn = self._backing.get(gfn)
        if pfn is not None:
            self._pins[pfn] += 1
        return pfn

    def release_pfn(self, pfn: int) -> None:
        """Drop a pin; a frame reclaimed while pinned is freed with its last pin."""
        self._pins[pfn] -= 1
        if not self._pins[pfn] and pfn in self._freed_on_unpin:
            self._freed_on_unpin.discard(pfn)
            self._free.append(pfn)

    def owner(self, pfn: int) -> int | None:
        """The gfn whose data ``pfn`` holds, or None for a frame on its way out."""
        return self._owner.get(pfn)

    def unmap(self, gfn: int) -> int:
        """First half of reclaim: ``gfn`` loses its frame, which is returned (it is not free yet)."""
        pfn = self._backing.pop(gfn)
        del self._owner[pfn]
        return pfn

    def free(self, pfn: int) -> bool:
        """Second half of reclaim: free an unmapped frame, or, if it is pinned, only once its pins are
        dropped.  Returns whether the frame is free now."""
        if self._pins[pfn]:
            self._freed_on_unpin.add(pfn)
            return False
        self._free.append(pfn)
        return True

    def set_dirty(self, pfn: int) -> None:
        """The host learns that ``pfn`` was written (``kvm_set_pfn_dirty``, or a write by the host itself)."""
        self.dirty.add(pfn)

    def _fresh_pfn(self) -> int:
        pfn, self._next_pfn = self._next_pfn, self._next_pfn + 1
        return pfn
