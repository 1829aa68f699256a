"""Search for a race with random schedules: the model finds each race without being shown its
walkthrough."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .rules import Rules
from .scenario import Outcome, Race, run
from .sched import RandomPolicy


@dataclass(frozen=True)
class Exploration:
    """``runs`` schedules were tried; ``found`` is the first that broke an invariant (it was run number
    ``runs``), or None if none did."""

    runs: int
    found: Outcome | None


def explore(race: Race, rules: Rules, *, runs: int, seed: int) -> Exploration:
    """Try up to ``runs`` schedules drawn from one generator seeded with ``seed``; stop at the first
    violation.  The same arguments give the same result."""
    rng = random.Random(seed)
    for number in range(1, runs + 1):
        outcome = run(race, rules, RandomPolicy(rng))
        if outcome.broken:
            return Exploration(number, outcome)
    return Exploration(runs, None)
