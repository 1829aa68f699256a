"""The ``race`` command: what it prints and its exit status."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kvm_model.races import RACES, main


@pytest.mark.parametrize("name", list(RACES))
def test_walkthrough_exits_1_buggy_and_0_fixed(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name]) == 1
    out = capsys.readouterr().out
    assert f"OOPS!!! invariant broken: {RACES[name].invariant}" in out
    assert "schedule (the walkthrough, replayed step by step):" in out
    assert main([name, "--fixed"]) == 0
    assert "no invariant broken: dirty-log, dirty-bit, write-protect all hold" in capsys.readouterr().out


def test_output_tells_the_aba_story_step_by_step(capsys: pytest.CaptureFixture[str]) -> None:
    main(["aba"])
    out = capsys.readouterr().out
    for line in (
        "at the beginning:",
        "    2  vcpu0    fast.walk     fast_page_fault: old_spte = *spte = pfn 0x101|P|A|HW|MW",
        "    6  reclaim  free          pfn 0x101 freed",
        "    9  vcpu1    mmu_lock      spin_lock(mmu_lock); slow path: gva 0 -> gfn 2 -> pfn 0x101",
        "   11  vcpu0    fast.cmpxchg  cmpxchg(spte, old_spte, old_spte | W) succeeded",
        "mark_page_dirty(gfn 1)",
        "data written to pfn 0x101 (gfn 2)",
    ):
        assert line in out


def test_explore_reports_the_schedule_count_and_a_replayable_schedule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tlb", "--explore", "100", "--seed", "0"]) == 1
    out = capsys.readouterr().out
    assert "random schedule 4 (seed 0) broke an invariant:" in out
    schedule = out.rsplit("replay it with --schedule ", 1)[1].strip()
    assert main(["tlb", "--schedule", schedule]) == 1
    assert "OOPS!!! invariant broken: write-protect" in capsys.readouterr().out


def test_explore_of_the_fixed_rule_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dirty-bit", "--fixed", "--explore", "50", "--seed", "7"]) == 0
    assert "explored 50 random schedules (seed 7): no invariant broken" in capsys.readouterr().out


def test_a_schedule_that_cannot_be_followed_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tlb", "--schedule", "vcpu0:fast.cmpxchg"]) == 2
    assert "error: schedule entry 1 'vcpu0:fast.cmpxchg': vcpu0 is at step 'guest.write'" in (capsys.readouterr().out)


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-race"]) == 2
    assert main(["aba", "--explore", "3", "--schedule", "x"]) == 2
    capsys.readouterr()


def test_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kvm_model.races", "dirty-bit"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "OOPS!!! invariant broken: dirty-bit" in done.stdout


@pytest.mark.parametrize("fix", ["direct-only", "pin-pfn", "irqs-off-walk"])
def test_each_named_remedy_of_the_aba_exits_0(fix: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aba", "--fix", fix]) == 0
    out = capsys.readouterr().out
    assert f"rules ({fix}):" in out and "no invariant broken" in out


def test_an_unknown_remedy_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tlb", "--fix", "pin-pfn"]) == 2
    assert "race tlb has no remedy 'pin-pfn'" in capsys.readouterr().out
