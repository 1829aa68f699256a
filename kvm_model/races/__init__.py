"""Races of x86 KVM's lockless fast page fault, reproduced step by step and shown fixed by each rule of
locking.txt ("Fast page fault").

Public face: :func:`main` (the ``race`` command), :data:`RACES`, :class:`Rules`, and :func:`replay`,
:func:`run` and :func:`explore` to drive a race from code.
"""

from .catalog import RACES
from .cli import main
from .explore import Exploration, explore
from .invariants import INVARIANTS, Violation
from .rules import Rules
from .scenario import Outcome, Race, replay, run

__all__ = [
    "INVARIANTS",
    "RACES",
    "Exploration",
    "Outcome",
    "Race",
    "Rules",
    "Violation",
    "explore",
    "main",
    "replay",
    "run",
]
