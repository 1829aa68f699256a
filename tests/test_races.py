"""The three races of locking.txt's fast page fault: each breaks exactly its invariant under the buggy rule,
never under the fixed one, replays identically, and is found by random exploration on its own."""

from __future__ import annotations

import pytest

from kvm_model.races import RACES, Race, Rules, explore, replay, run
from kvm_model.races.sched import Replay

RANDOM_RUNS_FIXED = 300  # schedules each fixed variant must survive
EXPLORE_BOUND = 500  # schedules within which exploration must find each race (seed 0 needs far fewer)

# What the violation says, per race: the gfn lost from the bitmap, the pfn whose dirtiness the host never
# learnt, the write that went through a stale TLB entry.
EXPECTED_DETAIL = {
    "aba": "gfn 2 was written by vcpu0 (through pfn 0x101) but its bit in the dirty bitmap is clear; "
    "the bitmap holds {gfn 1}",
    "dirty-bit": "vcpu0 wrote pfn 0x101 (gfn 1) through an spte, but no spte maps it with D = 1 any more and "
    "kvm_set_pfn_dirty(0x101) was never called",
    "tlb": "vcpu0 wrote gfn 1 through its TLB after rmap_write_protect(gfn 1) had returned",
}

races = pytest.mark.parametrize("race", RACES.values(), ids=list(RACES))


def test_each_race_names_the_invariant_of_the_issue() -> None:
    assert {name: race.invariant for name, race in RACES.items()} == {
        "aba": "dirty-log",
        "dirty-bit": "dirty-bit",
        "tlb": "write-protect",
    }


@races
def test_walkthrough_under_the_buggy_rule_breaks_exactly_its_invariant(race: Race) -> None:
    outcome = replay(race, race.buggy)
    assert outcome.broken_invariants == {race.invariant}
    assert len(outcome.violations) == 1
    assert EXPECTED_DETAIL[race.name] in outcome.violations[0].detail


@races
def test_walkthrough_under_the_fixed_rule_keeps_every_invariant(race: Race) -> None:
    outcome = replay(race, race.fixed)
    assert outcome.violations == []


@races
def test_fixed_rule_survives_random_schedules(race: Race) -> None:
    exploration = explore(race, race.fixed, runs=RANDOM_RUNS_FIXED, seed=1)
    assert exploration.found is None and exploration.runs == RANDOM_RUNS_FIXED


@races
def test_same_schedule_gives_the_same_run_twenty_times(race: Race) -> None:
    first = replay(race, race.buggy)
    for _ in range(20):
        again = replay(race, race.buggy)
        assert again.trace.records == first.trace.records
        assert again.violations == first.violations


@races
def test_exploration_finds_the_race_without_the_walkthrough(race: Race) -> None:
    exploration = explore(race, race.buggy, runs=EXPLORE_BOUND, seed=0)
    assert exploration.found is not None, f"not found in {EXPLORE_BOUND} schedules"
    assert exploration.found.broken_invariants == {race.invariant}
    assert exploration == explore(race, race.buggy, runs=EXPLORE_BOUND, seed=0)


@races
def test_a_found_schedule_replays_exactly(race: Race) -> None:
    found = explore(race, race.buggy, runs=EXPLORE_BOUND, seed=3).found
    assert found is not None
    again = run(race, race.buggy, Replay(found.trace.schedule))
    assert again.trace.records == found.trace.records
    assert again.violations == found.violations


def test_pinning_the_pfn_also_prevents_the_aba() -> None:
    pin = Rules(fast_path="pin-pfn")
    assert replay(RACES["aba"], pin).violations == []
    assert explore(RACES["aba"], pin, runs=RANDOM_RUNS_FIXED, seed=2).found is None


def test_pinned_fast_path_falls_back_when_the_gfn_lost_its_frame() -> None:
    outcome = replay(RACES["aba"], Rules(fast_path="pin-pfn"))
    notes = [note for record in outcome.trace.records if record.thread == "vcpu0" for note in record.notes]
    assert "gfn_to_pfn_atomic(gfn 1) = none" in notes


def test_tlb_race_also_follows_the_volatile_rule() -> None:
    # With the flush decided by mmu_spte_update but the 3.4 volatile rule, the update is a plain store whose
    # "was it writable" comes from a stale read: the flush is missed and D is wiped as well.
    outcome = replay(RACES["tlb"], Rules(volatile="3.4"))
    assert outcome.broken_invariants == {"write-protect", "dirty-bit"}


def test_aba_buggy_rules_remove_the_lockless_walk_and_the_direct_only_fast_path() -> None:
    buggy = RACES["aba"].buggy
    assert (buggy.walk, buggy.fast_path) == ("unprotected", "indirect")
    assert any("does not wait" in line for line in buggy.describe())


@pytest.mark.parametrize("fix", ["direct-only", "pin-pfn", "irqs-off-walk"])
def test_each_remedy_of_the_aba_alone_prevents_it(fix: str) -> None:
    rules = RACES["aba"].fixes[fix]
    assert replay(RACES["aba"], rules).violations == []
    assert explore(RACES["aba"], rules, runs=RANDOM_RUNS_FIXED, seed=4).found is None


def test_in_3_10_the_flush_ipi_waits_for_the_walker_so_the_walkthrough_cannot_run() -> None:
    # Strictly replayed under the interrupts-off walk, reclaim cannot free the frame while vcpu0 sits
    # between its read of the spte and its cmpxchg: its flush IPI waits for vcpu0.
    from kvm_model.races.sched import ScheduleError

    with pytest.raises(ScheduleError, match="'reclaim:free': reclaim is at step 'flush.ipi', not 'free'"):
        run(RACES["aba"], RACES["aba"].fixes["irqs-off-walk"], Replay(RACES["aba"].walkthrough))


def test_the_walker_leaves_its_walk_before_the_flush_completes() -> None:
    outcome = replay(RACES["aba"], RACES["aba"].fixes["irqs-off-walk"])
    steps = [(r.thread, r.step) for r in outcome.trace.records if r.scheduled]
    assert (
        steps.index(("vcpu0", "fast.cmpxchg"))
        < steps.index(("reclaim", "flush.ipi"))
        < steps.index(("reclaim", "free"))
    )
