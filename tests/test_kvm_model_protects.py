"""The "Protects" column of KVM's lock table is checked: memslots need kvm->srcu (or slots_lock)."""

from __future__ import annotations

import pylockdep
from kvm_model import CONFIGS
from kvm_model.hardware import Cpus, Hotplug
from kvm_model.hostmm import HostMemory, HostMM
from kvm_model.kvm import Kvm, KvmModule, Memslot, Memslots, install_new_memslots
from kvm_model.tasks import Tasks


def new_kvm() -> Kvm:
    config = CONFIGS["2f303b74a6"]
    table = config.lock_table()
    memory = HostMemory(64, 4, 8, lambda: None)
    cpus = Cpus(0, Tasks())
    module = KvmModule(config, table, memory, cpus, Hotplug(table, cpus))
    return Kvm(module, 0, HostMM(memory, table))


def test_reading_memslots_outside_the_srcu_read_side_is_suspicious_rcu_usage():
    kvm = new_kvm()
    with pylockdep.validate(raise_on_report=False) as v:
        kvm.memslots.gfn_to_memslot(0)
    assert [r.kind for r in v.reports] == ["suspicious_rcu_usage"]
    assert "test_kvm_model_protects.py" in v.reports[0].text


def test_memslots_read_under_srcu_and_replaced_under_slots_lock_are_clean():
    kvm = new_kvm()
    with pylockdep.validate(raise_on_report=False) as v:
        with kvm.srcu.read():
            assert kvm.srcu.dereference(kvm.memslots).gfn_to_memslot(0) is None
        with kvm.slots_lock:
            install_new_memslots(kvm, Memslots(1, (Memslot(0, 0, 8, 100),)))
        with kvm.srcu.read():
            assert kvm.memslots.gfn_to_memslot(3) is not None
    assert v.reports == []


def test_replacing_memslots_without_slots_lock_is_reported():
    kvm = new_kvm()
    with pylockdep.validate(raise_on_report=False) as v:
        with kvm.srcu.read():
            kvm.memslots = Memslots(1, ())
    assert "suspicious_rcu_usage" in [r.kind for r in v.reports]


def test_tsc_state_needs_tsc_write_lock():
    kvm = new_kvm()
    with pylockdep.validate(raise_on_report=False) as v:
        kvm.arch_tsc["last_tsc_write"] = 1
    assert [(r.kind, r.classes) for r in v.reports] == [("assert_held", ("&kvm->arch.tsc_write_lock",))]
