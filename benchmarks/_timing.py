"""Timing that a busy machine cannot fool: baseline and subject alternate over many short rounds.

A round times ``loops`` iterations of the baseline and then of the subject (the order swaps every
round, so a drift in machine load weighs on both alike).  The figures are the ratio of the
minima (the least disturbed rounds) and the ratio of the medians, with the number of rounds.

:func:`instructions` counts the machine instructions of a loop under valgrind's callgrind
instead, for a figure without noise: each side runs in its own process at two loop counts, and
the difference divided by the difference of counts is the cost of one iteration.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter_ns

#: A loop body run ``n`` times by the benchmark: ``loop(n)``.
Loop = Callable[[int], None]


@dataclass
class Ratio:
    """Subject against baseline: ratio of minima and of medians over ``rounds`` rounds."""

    minimum: float
    median: float
    rounds: int
    base_ns: float  # baseline, best round, per iteration
    subject_ns: float  # subject, best round, per iteration


def _round(loop: Loop, loops: int) -> float:
    start = perf_counter_ns()
    loop(loops)
    return (perf_counter_ns() - start) / loops


def alternate(baseline: Loop, subject: Loop, *, rounds: int, loops: int) -> Ratio:
    """Time ``baseline`` and ``subject`` in alternation, after one untimed warm-up round of each.

    The warm-up lets the validator see (and cache) the chains the subject takes.
    """
    baseline(loops)
    subject(loops)
    base: list[float] = []
    subj: list[float] = []
    for i in range(rounds):
        if i % 2:
            subj.append(_round(subject, loops))
            base.append(_round(baseline, loops))
        else:
            base.append(_round(baseline, loops))
            subj.append(_round(subject, loops))
    return Ratio(
        minimum=min(subj) / min(base),
        median=statistics.median(subj) / statistics.median(base),
        rounds=rounds,
        base_ns=min(base),
        subject_ns=min(subj),
    )


def have_callgrind() -> bool:
    """Whether valgrind is installed (``--instructions`` needs it)."""
    return shutil.which("valgrind") is not None


_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _callgrind(argv: Sequence[str], env: dict[str, str]) -> int:
    """Instructions executed by ``argv`` under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *argv],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = _COLLECTED.search(out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no instruction count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def instructions(argv_for: Callable[[int], Sequence[str]], *, low: int, high: int, env: dict[str, str]) -> float:
    """Instructions per iteration of a loop: ``argv_for(n)`` runs a process that loops ``n`` times.

    Running it at two loop counts cancels the cost of starting Python and setting up.
    """
    return (_callgrind(argv_for(high), env) - _callgrind(argv_for(low), env)) / (high - low)


def python_env(pure: bool) -> dict[str, str]:
    """The environment of a child Python on the C path (``pure`` False) or the pure one."""
    env = dict(os.environ)
    env.pop("PYLOCKDEP_PURE_PYTHON", None)
    if pure:
        env["PYLOCKDEP_PURE_PYTHON"] = "1"
    # With bytecode caches, as an installed package has them: PYTHONDONTWRITEBYTECODE set around the
    # benchmarks would make every validated child compile pylockdep's sources again (some 0.1 s).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


#: The interpreter children run on: this one.
PYTHON = sys.executable
