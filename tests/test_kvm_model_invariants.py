"""The invariant checker finds each kind of broken state."""

from __future__ import annotations

import importlib
import time

import pytest

import kvm_model
from kvm_model import CONFIGS, check_invariants
from kvm_model.hardware import Cpus, Hotplug
from kvm_model.hostmm import HostMemory, HostMM
from kvm_model.kvm import Kvm, KvmModule, Memslot, Memslots
from kvm_model.mmu import ShadowPage, Spte, kvm_mod_used_mmu_pages
from kvm_model.tasks import Tasks

run_module = importlib.import_module("kvm_model.run")  # kvm_model.run is also the function

HVA = 100


@pytest.fixture
def state():
    """One VM mapping gfn 3 through one shadow page: a consistent state."""
    config = CONFIGS["2f303b74a6"]
    table = config.lock_table()
    memory = HostMemory(64, 4, 8, lambda: None)
    cpus = Cpus(0, Tasks())
    module = KvmModule(config, table, memory, cpus, Hotplug(table, cpus))
    mm = HostMM(memory, table)
    kvm = Kvm(module, 0, mm)
    with module.kvm_lock:
        module.vm_list.add(kvm)
    module.usage_count = 1
    with kvm.slots_lock:  # memslots are guarded data: writers hold slots_lock
        kvm.memslots = Memslots(1, (Memslot(0, 0, 8, HVA),))
    page = memory.alloc_page()
    mm.ptes[HVA + 3] = page
    sp = ShadowPage(0, memory.alloc_page(), {3: Spte(page)})
    kvm.mmu.pages[0] = sp
    kvm_mod_used_mmu_pages(kvm, 1)
    return module, mm, kvm, page


def test_consistent_state_holds(state):
    module, mm, _, _ = state
    assert check_invariants(module, [mm]) == []


def test_page_freed_twice(state):
    module, mm, _, _ = state
    spare = module.memory.alloc_page()
    module.memory.put_page(spare)
    module.memory.put_page(spare)
    assert check_invariants(module, [mm]) == [f"page {spare} freed twice"]


def test_spte_pointing_at_a_freed_page(state):
    module, mm, _, page = state
    del mm.ptes[HVA + 3]
    module.memory.put_page(page)
    assert f"VM 0: SPTE of gfn 3 points at freed page {page}" in check_invariants(module, [mm])


def test_spte_disagreeing_with_the_host_page_table(state):
    module, mm, _, page = state
    other = module.memory.alloc_page()
    mm.ptes[HVA + 4] = other
    mm.ptes[HVA + 3], mm.ptes[HVA + 4] = other, page
    assert check_invariants(module, [mm]) == [
        f"VM 0: SPTE of gfn 3 maps page {page} but the host maps that address to {other}"
    ]


def test_spte_outside_every_memslot(state):
    module, mm, kvm, _ = state
    with kvm.slots_lock:
        kvm.memslots = Memslots(2)
    assert check_invariants(module, [mm]) == ["VM 0: SPTE of gfn 3 maps a frame outside every memslot"]


def test_used_page_counts_that_do_not_add_up(state):
    module, mm, kvm, _ = state
    kvm.mmu.n_used_mmu_pages += 1
    assert check_invariants(module, [mm]) == [
        "VM 0: n_used_mmu_pages is 2 but 1 shadow pages are active",
        "kvm_total_used_mmu_pages is 1 but the VMs use 2 shadow pages",
    ]


def test_leaked_page(state):
    module, mm, _, _ = state
    leaked = module.memory.alloc_page()
    assert check_invariants(module, [mm]) == [f"1 pages are allocated with no owner (leaked), e.g. page {leaked}"]


def test_usage_count_and_hardware_state(state):
    module, mm, _, _ = state
    module.usage_count = 0
    module.hardware_enabled.add(2)
    assert check_invariants(module, [mm]) == [
        "kvm_usage_count is 0 with 1 VMs",
        "virtualization is on for CPUs [2], expected []",
    ]


def test_kswapd_is_parked_while_the_invariants_are_read(monkeypatch):
    passes_during_checks = []
    real_check = run_module.check_invariants

    def check_while_kswapd_is_woken(module, mms):
        vmscan = module.memory._on_low.__self__
        before = vmscan.balance_runs
        vmscan.wakeup_kswapd()  # as an allocation below the low watermark may, at any time
        time.sleep(0.1)  # time for a pass, were kswapd free to make one
        passes_during_checks.append(vmscan.balance_runs - before)
        return real_check(module, mms)

    monkeypatch.setattr(run_module, "check_invariants", check_while_kswapd_is_woken)
    r = kvm_model.run("2f303b74a6", iterations=1)
    assert r.exit_code == 0, (r.violations, r.errors)
    assert passes_during_checks == [0, 0]
