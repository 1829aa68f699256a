"""``python -m kvm_model race {aba,dirty-bit,tlb} [--fixed] [--explore N] [--seed S] [--schedule ...]``."""

from __future__ import annotations

import argparse

from .catalog import RACES
from .explore import explore
from .report import describe_exploration, describe_outcome, describe_setup
from .scenario import replay, run
from .sched import ModelThreadError, Replay, ScheduleError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kvm_model race",
        description="Replay or search for a race of KVM's lockless fast page fault (locking.txt). "
        "Exit status: 1 when an invariant breaks, 0 when none does, 2 on a usage or schedule error.",
    )
    parser.add_argument("race", choices=sorted(RACES), help="which race")
    fix = parser.add_mutually_exclusive_group()
    fix.add_argument("--fixed", action="store_true", help="run with Linux 3.10's rules, which prevent the race")
    fix.add_argument(
        "--fix",
        metavar="NAME",
        help="run with one other remedy of the race alone (aba: direct-only, pin-pfn, irqs-off-walk)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--explore", type=int, metavar="N", help="try up to N random schedules instead")
    group.add_argument(
        "--schedule",
        metavar="T:STEP,...",
        help="replay this schedule exactly (as printed by --explore) instead of the walkthrough",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random schedules (default 0)")
    return parser


def main(argv: list[str]) -> int:
    """Run the ``race`` command with ``argv`` (the words after ``race``); print the story; return the exit
    status: 1 if an invariant broke, 0 if not, 2 for bad arguments or a schedule that cannot be followed."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    race = RACES[args.race]
    if args.fix is not None and args.fix not in race.fixes:
        print(f"error: race {race.name} has no remedy {args.fix!r} (it has: {', '.join(race.fixes) or 'none'})")
        return 2
    rules = race.fixes[args.fix] if args.fix else race.fixed if args.fixed else race.buggy
    lines = describe_setup(race, rules)
    try:
        if args.explore is not None:
            exploration = explore(race, rules, runs=args.explore, seed=args.seed)
            print("\n".join(lines + describe_exploration(exploration, seed=args.seed)))
            return 1 if exploration.found else 0
        if args.schedule is not None:
            lines.append("schedule (given):")
            outcome = run(race, rules, Replay(args.schedule.split(",")))
        else:
            how = "replayed step by step" if rules == race.buggy else "its order of threads, followed"
            lines.append(f"schedule (the walkthrough, {how}):")
            outcome = replay(race, rules)
    except (ScheduleError, ModelThreadError) as error:
        print("\n".join(lines))
        print(f"error: {error}")
        return 2
    print("\n".join(lines + describe_outcome(outcome)))
    return 1 if outcome.broken else 0
