"""SPTE bits and the atomic cell."""

from __future__ import annotations

from kvm_model.races.atomic import Atomic64
from kvm_model.races.spte import (
    ACCESSED,
    DIRTY,
    HOST_WRITEABLE,
    MMU_WRITEABLE,
    PRESENT,
    WRITABLE,
    format_spte,
    is_locklessly_modifiable,
    make_spte,
    spte_pfn,
)


def test_bits_sit_where_x86_puts_them() -> None:
    assert (PRESENT, WRITABLE, ACCESSED, DIRTY) == (1, 2, 32, 64)
    assert (HOST_WRITEABLE, MMU_WRITEABLE) == (1 << 10, 1 << 11)
    spte = make_spte(0x101, PRESENT | ACCESSED)
    assert spte == 0x101021 and spte_pfn(spte) == 0x101


def test_lockless_fix_needs_both_writeable_bits() -> None:
    assert is_locklessly_modifiable(make_spte(1, PRESENT | HOST_WRITEABLE | MMU_WRITEABLE))
    assert not is_locklessly_modifiable(make_spte(1, PRESENT | HOST_WRITEABLE))


def test_format_names_the_set_bits() -> None:
    assert format_spte(make_spte(0x101, PRESENT | ACCESSED | HOST_WRITEABLE | MMU_WRITEABLE)) == ("pfn 0x101|P|A|HW|MW")
    assert format_spte(0) == "0"


def test_cmpxchg_writes_only_over_the_expected_value() -> None:
    cell = Atomic64(5)
    assert not cell.cmpxchg(4, 9) and cell.load() == 5
    assert cell.cmpxchg(5, 9) and cell.load() == 9


def test_xchg_fetch_or_and_clear_bit_return_or_keep_the_old_bits() -> None:
    cell = Atomic64(PRESENT)
    assert cell.fetch_or(ACCESSED | DIRTY) == PRESENT
    cell.clear_bit(5)
    assert cell.load() == PRESENT | DIRTY
    assert cell.xchg(0) == PRESENT | DIRTY and cell.load() == 0
    cell.store(1 << 64 | 3)
    assert cell.load() == 3
