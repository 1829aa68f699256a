"""A memslot's dirty bitmap: one bit per gfn, set atomically by ``mark_page_dirty`` while dirty logging
is on."""

from __future__ import annotations

from .atomic import Atomic64


class DirtyLog:
    """Guest frames ``base_gfn .. base_gfn + npages - 1`` with dirty logging enabled."""

    def __init__(self, base_gfn: int, npages: int) -> None:
        self.base_gfn = base_gfn
        self.npages = npages
        self._bitmap = [Atomic64() for _ in range((npages + 63) // 64)]

    def mark_dirty(self, gfn: int) -> None:
        """Set ``gfn``'s bit (an atomic ``set_bit``, since vCPUs mark pages without any lock)."""
        index = gfn - self.base_gfn
        self._bitmap[index // 64].fetch_or(1 << (index % 64))

    def dirty_gfns(self) -> list[int]:
        """The gfns whose bit is set, in order."""
        return [
            self.base_gfn + index
            for index in range(self.npages)
            if self._bitmap[index // 64].load() >> (index % 64) & 1
        ]
