"""SPTE bit layout of x86 shadow paging (Linux 3.10) and helpers to read and print an SPTE.

An SPTE is a plain 64-bit ``int``.  Only the bits that the fast page fault races depend on are modelled; the
accessed/dirty masks are the shadow-paging ones, so that the guest "hardware" really sets them.
"""

from __future__ import annotations

PRESENT = 1 << 0
WRITABLE = 1 << 1  # the W bit: the guest may write through this entry now
ACCESSED_BIT = 5
ACCESSED = 1 << ACCESSED_BIT
DIRTY = 1 << 6
HOST_WRITEABLE = 1 << 10  # the host maps the gfn's page writable
MMU_WRITEABLE = 1 << 11  # the guest may write and no shadow-page write protection forbids it
PFN_SHIFT = 12

_FLAG_NAMES = (
    (PRESENT, "P"),
    (WRITABLE, "W"),
    (ACCESSED, "A"),
    (DIRTY, "D"),
    (HOST_WRITEABLE, "HW"),
    (MMU_WRITEABLE, "MW"),
)


def make_spte(pfn: int, flags: int) -> int:
    """Return the SPTE mapping ``pfn`` with ``flags`` (an OR of the masks above)."""
    return (pfn << PFN_SHIFT) | flags


def spte_pfn(spte: int) -> int:
    """The page frame number an SPTE points at."""
    return spte >> PFN_SHIFT


def is_present(spte: int) -> bool:
    return bool(spte & PRESENT)


def is_writable(spte: int) -> bool:
    return bool(spte & WRITABLE)


def is_locklessly_modifiable(spte: int) -> bool:
    """True when the fast page fault may set W without ``mmu_lock``: both writeable bits are set."""
    both = HOST_WRITEABLE | MMU_WRITEABLE
    return spte & both == both


def format_spte(spte: int) -> str:
    """Render an SPTE the way the walkthroughs print it, e.g. ``pfn 0x101|P|A|HW|MW`` or ``0``."""
    if spte == 0:
        return "0"
    flags = [name for mask, name in _FLAG_NAMES if spte & mask]
    return "|".join([f"pfn {spte_pfn(spte):#x}", *flags])
