"""The races the model knows, by the name the command line uses."""

from __future__ import annotations

from . import race_aba, race_dirty_bit, race_tlb
from .scenario import Race

RACES: dict[str, Race] = {race.name: race for race in (race_aba.RACE, race_dirty_bit.RACE, race_tlb.RACE)}
