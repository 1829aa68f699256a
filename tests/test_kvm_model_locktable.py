"""The lock table: parsed from locking.txt, changed by configurations only in types."""

from __future__ import annotations

import dataclasses

import pytest

import pylockdep
from kvm_model import CONFIGS, LockTable, load_records
from kvm_model.locktable import parse_records, reference_section

KERNEL_TABLE = [
    ("kvm_lock", "spinlock_t", "any", "kvm_lock"),
    ("kvm_count_lock", "raw_spinlock_t", "any", "kvm_count_lock"),
    ("kvm_arch::tsc_write_lock", "raw_spinlock", "x86", "&kvm->arch.tsc_write_lock"),
    ("kvm->mmu_lock", "spinlock_t", "any", "&kvm->mmu_lock"),
    ("kvm->srcu", "srcu lock", "any", "&kvm->srcu"),
]


def test_reference_table_of_locking_txt_is_read_record_by_record():
    records = load_records()
    assert [(r.name, r.type, r.arch, r.lockdep_name) for r in records[:5]] == KERNEL_TABLE
    srcu = records[4]
    assert srcu.protects == "- kvm->memslots\n- kvm->buses"
    assert srcu.comment.startswith("The srcu read lock must be held while accessing memslots")
    assert records[1].comment == "'raw' because hardware enabling/disabling must be atomic /wrt\nmigration."


def test_model_records_name_the_locks_as_the_kernel_does():
    names = [r.lockdep_name for r in load_records()[5:]]
    assert names == [
        "&kvm->lock",
        "&kvm->slots_lock",
        "&kvm->irq_lock",
        "&vcpu->mutex",
        "shrinker_rwsem",
        "&mm->mmap_sem",
        "&page->ptl",
        "cpu_hotplug.lock",
        "cpu_add_remove_lock",
        "jump_label_mutex",
        "text_mutex",
        "&pit->pit_state.lock",
        "&kvm->arch.pvclock_gtod_sync_lock",
        "&rq->__lock",
        "cpu_hotplug_lock",
        "kvm_usage_lock",
        "&kvm->arch.xen.xen_lock",
        "&vcpu->arch.mp_state_lock",
    ]


def test_parser_rejects_unknown_types_and_missing_sections():
    with pytest.raises(ValueError, match="unknown type"):
        parse_records("Name: x\nType: seqlock_t\nArch: any\n")
    with pytest.raises(ValueError, match="3. Reference"):
        reference_section("1. Acquisition Orders\n")


@pytest.mark.parametrize("name", ["e935b8372cf8", "naive-revert", "2f303b74a6"])
def test_3_x_configurations_change_only_types(name):
    config = CONFIGS[name]
    base = {r.name: r for r in load_records() if r.exists_in(config.version)}
    table = config.lock_table()
    for record in table.records.values():
        assert record == dataclasses.replace(base[record.name], type=record.type)
    changed = {n: r.type for n, r in table.records.items() if r.type != base[n].type}
    missing = set(base) - set(table.records)
    expected = {
        "e935b8372cf8": ({"kvm_lock": "raw_spinlock_t"}, {"kvm_count_lock"}),
        "naive-revert": ({}, {"kvm_count_lock"}),
        "2f303b74a6": ({}, set()),
    }
    assert (changed, missing) == expected[name]


def test_a_configuration_has_only_the_locks_of_its_kernel_version():
    assert "kvm_arch::pvclock_gtod_sync_lock" not in CONFIGS["e935b8372cf8"].lock_table()  # 3.4: no master clock
    assert "kvm_arch::pvclock_gtod_sync_lock" in CONFIGS["naive-revert"].lock_table()  # 3.10 has it
    assert "cpu_hotplug.lock" in CONFIGS["2f303b74a6"].lock_table()
    later = CONFIGS["44d17459626052"].lock_table()
    assert "cpu_hotplug.lock" not in later and "cpu_hotplug_lock" in later and "kvm_usage_lock" in later
    assert "kvm_usage_lock" not in CONFIGS["before-44d17459626052"].lock_table()
    assert isinstance(
        CONFIGS["8228c77d8b56"].lock_table().new("kvm_arch::pvclock_gtod_sync_lock"), pylockdep.RawSpinLock
    )


def test_records_of_the_model_are_marked_with_the_versions_that_have_them():
    records = {r.name: r for r in load_records()}
    assert (records["kvm_usage_lock"].since, records["cpu_hotplug.lock"].until) == ("6.11", "4.13")
    assert records["rq->__lock"].exists_in("5.15") and not records["rq->__lock"].exists_in("5.10")


def test_locks_of_one_record_share_one_lock_class():
    table = CONFIGS["2f303b74a6"].lock_table()
    with pylockdep.validate(raise_on_report=False) as v:
        vm0, vm1 = table.new("kvm->mmu_lock"), table.new("kvm->mmu_lock")
        with vm0, vm1:
            pass
    assert [(r.kind, r.classes) for r in v.reports] == [("recursive", ("&kvm->mmu_lock",))]


def test_locks_are_built_with_the_configured_type():
    assert isinstance(CONFIGS["e935b8372cf8"].lock_table().new("kvm_lock"), pylockdep.RawSpinLock)
    assert isinstance(CONFIGS["naive-revert"].lock_table().new("kvm_lock"), pylockdep.SpinLock)
    assert "kvm_count_lock" not in CONFIGS["naive-revert"].lock_table()
    assert isinstance(LockTable(load_records()).new("kvm->srcu"), pylockdep.SRCU)
