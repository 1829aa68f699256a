"""Printing a run the way locking.txt tells its races: the starting state, each step with what it did, and
the invariant that broke (or that all held)."""

from __future__ import annotations

from .explore import Exploration
from .invariants import INVARIANTS
from .rules import Rules
from .scenario import Outcome, Race

_STEP_WIDTH = 14


def describe_setup(race: Race, rules: Rules) -> list[str]:
    """The race, the rules in force and the starting state."""
    named = [name for name, fix in race.fixes.items() if fix == rules]
    variant = "buggy" if rules == race.buggy else "fixed" if rules == race.fixed else named[0] if named else "custom"
    return [
        f"race {race.name}: {race.title}",
        f"rules ({variant}):",
        *(f"  - {line}" for line in rules.describe()),
        "at the beginning:",
        f"  {race.start}",
    ]


def describe_outcome(outcome: Outcome) -> list[str]:
    """Every step that did something, numbered in the order it ran, then the verdict."""
    threads = {record.thread for record in outcome.trace.records}
    width = max(map(len, threads)) + 2
    lines = []
    number = 0
    for record in outcome.trace.records:
        if record.scheduled:
            number += 1
        elif not record.notes:
            continue
        label = f"{number:3}" if record.scheduled else "  -"
        head = f"  {label}  {record.thread:<{width}}{record.step:<{_STEP_WIDTH}}"
        notes = record.notes or [""]
        lines.append(head + notes[0])
        lines.extend(" " * len(head) + note for note in notes[1:])
    return lines + describe_verdict(outcome)


def describe_verdict(outcome: Outcome) -> list[str]:
    if not outcome.broken:
        return ["no invariant broken: " + ", ".join(INVARIANTS) + " all hold"]
    lines = []
    for invariant in sorted(outcome.broken_invariants, key=list(INVARIANTS).index):
        lines += [f"OOPS!!! invariant broken: {invariant}", f"  rule: {INVARIANTS[invariant]}"]
        lines += [f"  {v.detail}" for v in outcome.violations if v.invariant == invariant]
    return lines


def describe_exploration(exploration: Exploration, *, seed: int) -> list[str]:
    """How many random schedules ran and, if one broke an invariant, that run and its replayable schedule."""
    found = exploration.found
    if found is None:
        return [f"explored {exploration.runs} random schedules (seed {seed}): no invariant broken"]
    return [
        f"random schedule {exploration.runs} (seed {seed}) broke an invariant:",
        *describe_outcome(found),
        "replay it with --schedule " + ",".join(found.trace.schedule),
    ]
