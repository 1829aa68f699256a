"""What a race scenario is, and how one run of it goes: build the VM, run its threads under a policy, check
the invariants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .invariants import Violation, check
from .rules import Rules
from .sched import Policy, Replay, Scheduler, Trace
from .vm import RaceVm


@dataclass(frozen=True)
class Race:
    """One race of locking.txt.

    ``build`` sets up the starting state described by ``start`` and spawns the threads; ``walkthrough`` is the
    schedule (``thread:step`` entries) that makes the ``buggy`` rules break ``invariant``; ``fixed`` are the
    rules (Linux 3.10's) under which no schedule may break any invariant, and ``fixes`` other sets of rules
    that each prevent the race on their own.
    """

    name: str
    title: str
    invariant: str
    buggy: Rules
    direct: bool  # whether the shadow page is direct
    start: str
    walkthrough: tuple[str, ...]
    build: Callable[[RaceVm], None]
    fixed: Rules = field(default_factory=Rules)
    fixes: dict[str, Rules] = field(default_factory=dict)  # other rules that each prevent it, by name


@dataclass(frozen=True)
class Outcome:
    """One finished run: the steps as they ran and the invariants they broke."""

    race: Race
    rules: Rules
    trace: Trace
    violations: list[Violation]

    @property
    def broken(self) -> bool:
        return bool(self.violations)

    @property
    def broken_invariants(self) -> set[str]:
        return {v.invariant for v in self.violations}


def run(race: Race, rules: Rules, policy: Policy) -> Outcome:
    """Run ``race`` once under ``rules``, choosing steps with ``policy`` (see :class:`~.sched.Scheduler`)."""
    sched = Scheduler()
    vm = RaceVm(sched, rules, direct=race.direct)
    race.build(vm)
    trace = sched.run(policy)
    return Outcome(race, rules, trace, check(vm))


def replay(race: Race, rules: Rules) -> Outcome:
    """Run the walkthrough.  Under the buggy rules every step must happen as written; under other rules only
    its order of threads is followed, as far as the code those rules run allows."""
    return run(race, rules, Replay(race.walkthrough, strict=rules == race.buggy))
