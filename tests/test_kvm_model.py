"""The verdict of each kernel configuration, as kvm-history.md section 10 expects it."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kvm_model
import kvm_model.cli
import kvm_model.kvm
import kvm_model.notifier
import kvm_model.races
import pylockdep
from kvm_model.run import REQUIRED_EVENTS

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def result(config: str, preempt_rt: bool) -> kvm_model.RunResult:
    """One default-sized run per configuration, shared by the tests that read it."""
    return kvm_model.run(config, preempt_rt=preempt_rt)


def frames(text: str) -> list[str]:
    """The function names of a splat's call trace, innermost first, in either layout."""
    lines = text.split("Call Trace:", 1)[1].splitlines()
    names = []
    for line in lines:
        if line.startswith("pylockdep:"):
            break
        if line.startswith(" ") and "<TASK>" not in line and "</TASK>" not in line:
            names.append(line.split("] ")[-1].strip().split("+")[0])
    return names


SEED_SPLAT = (ROOT / "kvm_model" / "seed-splat.txt").read_text().splitlines()


def kernel_lines(lines: list[str]) -> list[str]:
    """A 3.x splat as the kernel would have it, to compare line by line: addresses (or, from the
    model, Python locations) in ``[<...>]`` become ``ADDR``, ``+off/len`` and ``[module]`` go,
    the might_sleep site and the release go, frames marked ``?`` (stale) go; from the model, the
    ``pylockdep:`` lines, the held locks (what a lockdep kernel adds) and the Python frames go."""
    out, held = [], False
    for line in lines:
        if line.startswith("pylockdep: Python frames"):
            break
        if line.startswith("pylockdep:") or line.startswith(" ? ") or " ? " in line.split("]", 1)[-1][:3]:
            continue
        if " locks held by " in line or " lock held by " in line:
            held = True
            continue
        if held and line.startswith(" #"):
            continue
        held = False
        line = re.sub(r"\[<[^>]*>\]", "[<ADDR>]", line)
        line = re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+| \[kvm\]", "", line)
        line = re.sub(r"invalid context at \S+", "invalid context at SITE", line)
        line = re.sub(r"Not tainted .*", "Not tainted RELEASE", line)
        out.append(line)
    return [line for line in out if "[<ADDR>] ?" not in line and "__init_kthread_worker+0x" not in line]


def test_seed_config_on_rt_prints_the_3_4_rt_splat_line_for_line():
    r = result("e935b8372cf8", True)
    assert [rep.kind for rep in r.reports] == ["sleep_in_atomic"]
    assert r.exit_code == 1 and not r.violations and not r.errors
    lines = r.reports[0].text.splitlines()
    assert kernel_lines(lines) == kernel_lines(SEED_SPLAT)
    assert lines[1] == SEED_SPLAT[1] == "in_atomic(): 1, irqs_disabled(): 0, pid: 55, name: kswapd0"
    # What pylockdep adds: the lock being taken, on a line of its own, and lockdep's held locks.
    assert lines[2].startswith("pylockdep: the lock being taken is &kvm->mmu_lock, at mmu_shrink+")
    assert lines[3] == "3 locks held by kswapd0/55:"
    assert lines[5].startswith(" #1:  (kvm_lock){+.+...}, at: [<kvm_model/shrinker.py:")
    preempt = next(line for line in lines if line.startswith("Preemption disabled at:"))
    assert re.fullmatch(r"Preemption disabled at:\[<kvm_model/shrinker\.py:\d+>\] mmu_shrink", preempt)
    for modern in ("non_block", "preempt_count:", "RCU nest depth", "<TASK>", "UID:", "-{"):
        assert modern not in r.reports[0].text


def test_seed_config_ends_the_trace_where_3_4_did_with_the_python_frames_below():
    lines = result("e935b8372cf8", True).reports[0].text.splitlines()
    at = lines.index("pylockdep: Python frames below the task's entry:")
    assert lines[at - 2 : at] == [" [<thread start>] kthread", " [<thread start>] kernel_thread_helper"]
    assert re.fullmatch(r" \[<kvm_model/shrinker\.py:\d+>\] kswapd", lines[at - 3])
    assert lines[at + 1].endswith("] Tasks._run") and lines[-1].endswith("] Thread._bootstrap")


def test_seed_config_modern_reports_the_wait_context_first_then_lockdep_is_off():
    r = kvm_model.run("e935b8372cf8", preempt_rt=True, modern=True)
    assert [rep.kind for rep in r.reports] == ["invalid_wait_context", "sleep_in_atomic"]
    wait, sleep = r.reports
    assert wait.title == "[ BUG: Invalid wait context ]"
    assert wait.classes == ("shrinker_rwsem", "kvm_lock", "&kvm->srcu", "&kvm->mmu_lock")
    trying = wait.text.split("is trying to lock:", 1)[1].splitlines()[1]
    assert "(&kvm->mmu_lock)" in trying and "-{3:3}" in trying and "mmu_shrink+" in trying
    assert "kswapd0/55 is trying to lock:" in wait.text and "CPU: 0 UID: 0 PID: 55 Comm: kswapd0" in wait.text
    # report once: the might-sleep BUG still prints, with lockdep's line where the held locks were
    assert "INFO: lockdep is turned off." in sleep.text and "locks held by" not in sleep.text
    assert "non_block: 0, pid: 55, name: kswapd0" in sleep.text


def test_seed_config_without_rt_is_clean_as_3_4_and_an_invalid_wait_context_today():
    assert result("e935b8372cf8", False).reports == []
    r = kvm_model.run("e935b8372cf8", modern=True, iterations=1)
    assert [rep.kind for rep in r.reports] == ["invalid_wait_context"]
    held = r.reports[0].text.split("locks held by", 1)[1]
    assert "(kvm_lock)" in held and "-{2:2}" in held.split("(kvm_lock)", 1)[1].splitlines()[0]
    assert frames(r.reports[0].text)[:4] == ["mmu_shrink", "shrink_slab", "balance_pgdat", "kswapd"]


def test_naive_revert_on_rt_reports_sleeping_kvm_lock_in_cpu_hotplug_with_irqs_off():
    r = result("naive-revert", True)
    assert r.reports and {rep.kind for rep in r.reports} == {"sleep_in_atomic"}
    assert all(rep.classes == ("kvm_lock",) for rep in r.reports)
    assert r.exit_code == 1 and not r.violations and not r.errors
    first = r.reports[0].text
    # CPU_DYING runs in the stopper thread: preemption off (cpu_stopper_thread), irqs off
    # (stop_machine_cpu_stop), as in 3.10, whose layout it prints in.
    assert "in_atomic(): 1, irqs_disabled(): 1, pid: 10, name: migration/1" in first
    assert "pylockdep: the lock being taken is kvm_lock, at hardware_disable+" in first
    assert re.search(r"^Preemption disabled at:\[<kvm_model/hardware\.py:\d+>\] cpu_stopper_thread$", first, re.M)
    assert "CPU: 1 PID: 10 Comm: migration/1 Not tainted" in first
    assert frames(first)[-2:] == ["kthread", "ret_from_fork"]
    assert frames(first)[2:10] == [
        "hardware_disable",
        "kvm_cpu_hotplug",
        "notifier_call_chain",
        "cpu_notify",
        "take_cpu_down",
        "stop_machine_cpu_stop",
        "cpu_stopper_thread",
        "smpboot_thread_fn",
    ]


def test_naive_revert_without_rt_is_clean():
    r = result("naive-revert", False)
    assert (r.reports, r.violations, r.errors, r.exit_code) == ([], [], [], 0)


@pytest.mark.parametrize("preempt_rt", [False, True], ids=["no-rt", "rt"])
def test_fix_is_clean_and_keeps_its_invariants(preempt_rt):
    r = result("2f303b74a6", preempt_rt)
    assert (r.reports, r.violations, r.errors, r.exit_code) == ([], [], [], 0)


@pytest.mark.parametrize("config,preempt_rt", [("e935b8372cf8", True), ("2f303b74a6", True)])
def test_every_path_runs_in_every_run(config, preempt_rt):
    events = result(config, preempt_rt).events
    assert all(events.get(name, 0) >= 1 for name in REQUIRED_EVENTS), events


@pytest.mark.parametrize("seed,vms,vcpus", [(1, 1, 1), (2, 3, 2), (3, 2, 4)])
def test_verdict_does_not_depend_on_seed_or_size(seed, vms, vcpus):
    r = kvm_model.run("e935b8372cf8", preempt_rt=True, seed=seed, vms=vms, vcpus=vcpus, iterations=1)
    assert [rep.kind for rep in r.reports] == ["sleep_in_atomic"]
    assert not r.violations and not r.errors


def test_a_kvm_that_ignores_invalidation_breaks_the_invariants(monkeypatch):
    monkeypatch.setattr(kvm_model.notifier, "kvm_unmap_hva_range", lambda kvm, slots, start, end: False)
    # 3.x zaps the whole shadow MMU on every memslot deletion, which would wipe the stale SPTEs too.
    monkeypatch.setattr(kvm_model.kvm, "kvm_arch_flush_shadow_all", lambda kvm: None)
    r = kvm_model.run("2f303b74a6")
    assert r.exit_code == 2
    assert any("with the VMs alive: VM" in v and "SPTE of gfn" in v for v in r.violations), r.violations


def test_command_line_prints_the_splat_and_exits_1():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "kvm_model", "--config", "e935b8372cf8", "--preempt-rt"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("BUG: sleeping function called from invalid context at kvm_model/shrinker.py:")
    assert "in_atomic(): 1, irqs_disabled(): 0, pid: 55, name: kswapd0" in proc.stdout
    assert "Invalid wait context" not in proc.stdout  # 3.4's lockdep had no such check
    assert "lockdep reports: sleep_in_atomic; exit 1" in proc.stderr


def test_command_line_exits_0_for_the_fix(capsys):
    assert kvm_model.cli.main(["--config", "2f303b74a6", "--preempt-rt", "--iterations", "1"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "lockdep reports: none; exit 0" in err


def test_race_subcommand_is_handed_to_the_race_models(monkeypatch):
    seen = []
    monkeypatch.setattr(kvm_model.races, "main", lambda argv: seen.append(argv) or 7)
    assert kvm_model.cli.main(["race", "aba", "--fixed"]) == 7
    assert seen == [["aba", "--fixed"]]


def test_command_line_rejects_an_unknown_config(capsys):
    with pytest.raises(SystemExit) as exc:
        kvm_model.cli.main(["--config", "v3.99"])
    assert exc.value.code == 2


@pytest.mark.parametrize(("config", "expected"), [("2f303b74a6", []), ("e935b8372cf8", ["sleep_in_atomic"])])
def test_python_locks_validated_too_leave_the_verdict_alone(config, expected):
    # As under `pytest --lockdep-threading` or `pylockdep run`: the model's harness (events, IPI
    # queues, page refcounts) is built on bare locks and must not show in the lock graph.
    with pylockdep.instrument_threading():
        r = kvm_model.run(config, preempt_rt=True, iterations=1)
    assert [rep.kind for rep in r.reports] == expected
    assert not r.violations and not r.errors


def test_the_harness_event_wakes_waiters_and_times_out():
    import threading

    from kvm_model.tasks import Event

    event = Event()
    assert not event.is_set() and event.wait(0.01) is False
    woken = []
    waiters = [threading.Thread(target=lambda: woken.append(event.wait(30))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    event.set()
    for waiter in waiters:
        waiter.join(30)
    assert woken == [True, True, True]
    assert event.wait() is True and event.wait(0) is True
    event.clear()
    assert not event.is_set() and event.wait(0.01) is False
    assert event._waiters == []  # a waiter that timed out leaves nothing behind


LATER = [name for name, config in kvm_model.CONFIGS.items() if config.scenario is not None]


@pytest.mark.parametrize("name", LATER)
@pytest.mark.parametrize("preempt_rt", [False, True], ids=["no-rt", "rt"])
def test_each_later_bug_gives_its_documented_verdict(name, preempt_rt):
    r = result(name, preempt_rt)
    assert [rep.kind for rep in r.reports] == list(kvm_model.CONFIGS[name].verdict[preempt_rt])
    assert not r.errors


def chain(report: pylockdep.Report) -> list[str]:
    """The lock names of a circular splat's 'Chain exists of' line, or of its dependency entries."""
    return [line.split("(", 1)[1].split(")", 1)[0] for line in report.text.splitlines() if line.startswith("-> #")]


def test_pvclock_lock_in_the_preempt_notifier_is_an_invalid_wait_context_under_rq_lock():
    (report,) = result("before-8228c77d8b56", False).reports
    text = report.text
    trying = text.split("is trying to lock:", 1)[1].splitlines()[1]
    assert "(&kvm->arch.pvclock_gtod_sync_lock)" in trying and "-{3:3}" in trying
    held = text.split("held by", 1)[1]
    assert "(&rq->__lock)" in held and "-{2:2}" in held.split("(&rq->__lock)", 1)[1].splitlines()[0]
    assert frames(text)[:7] == [
        "get_kvmclock_ns",
        "kvm_xen_update_runstate_guest",
        "kvm_arch_vcpu_put",
        "kvm_sched_out",
        "fire_sched_out_preempt_notifiers",
        "prepare_task_switch",
        "schedule",
    ]


def test_kvm_lock_under_cpu_hotplug_lock_closes_the_6_10_cycle_through_srcu():
    (report,) = result("before-44d17459626052", False).reports
    assert chain(report) == ["&kvm->srcu", "&kvm->slots_lock", "kvm_lock", "cpu_hotplug_lock"]
    assert "kvm_lapic_set_base" in frames(report.text) and "static_key_slow_inc" in frames(report.text)
    for site in ("kvm_swap_active_memslots", "set_nx_huge_pages", "hardware_enable_all"):
        assert site in report.text


def test_xen_evtchn_send_under_srcu_against_kvm_lock_held_across_synchronize():
    (report,) = result("before-310bc39546a4", False).reports
    assert chain(report) == ["&kvm->lock", "&kvm->srcu"]
    reader = report.text.split("-> #1 (&kvm->lock)", 1)[1].split("-> #0", 1)[0]
    assert "kvm_xen_set_evtchn+" in reader and "kvm_xen_hcall_evtchn_send+" in reader
    assert "  sync(&kvm->srcu);" in report.text and "kvm_xen_eventfd_reset+" in report.text


def test_arm64_cpu_on_under_vcpu_mutex_inverts_the_creation_order():
    (report,) = result("before-0acc7239c20a", False).reports
    assert set(report.classes) == {"&kvm->lock", "&vcpu->mutex"}
    assert "kvm_vm_ioctl_create_vcpu" in report.text and "kvm_psci_0_2_call" in report.text


def test_help_lists_every_configuration_with_its_verdict(capsys):
    with pytest.raises(SystemExit):
        kvm_model.cli.main(["--help"])
    out = capsys.readouterr().out
    for config in kvm_model.CONFIGS.values():
        assert f"  {config.name} ({config.version}): " in out
    assert "before-44d17459626052 (6.10): " in out and "[no RT: circular; RT: circular]" in out


def test_model_tasks_have_kernel_like_pids_and_their_cpus():
    import threading

    from kvm_model.tasks import Tasks, current_cpu

    def record() -> None:
        identity = pylockdep.identity_of(threading.current_thread())
        seen.append((identity.pid, identity.kthread, current_cpu()))

    tasks, seen = Tasks(), []
    tasks.spawn("kswapd0", record, pid=55, kthread=True).join()
    tasks.spawn("bash", record, cpu=3).join()
    assert seen == [(55, True, 0), (1000, False, 3)]


def test_a_memslot_deletion_zaps_every_shadow_page_as_3_x_does():
    r = result("2f303b74a6", False)
    assert r.events["memslot_update"] >= 1 and not r.violations
