"""Every benchmark of issue 17's goals, in one table: ``python -m benchmarks`` (or ``benchmarks/run.py``).

Each row is a ratio against plain Python measured in the same process (or, for the programs, in
alternating processes): the ratio of the minima over the rounds, the ratio of the medians, the
number of rounds, the goal and whether it is met, for the C fast path and for pure Python
(``PYLOCKDEP_PURE_PYTHON=1``).  The "C path" column says whether, with the C module loaded, an
operation ran in C alone or how many of pylockdep's Python functions it still called.

    python -m benchmarks                      # everything (several minutes)
    python -m benchmarks --quick              # fewer rounds; no programs, a small graph
    python -m benchmarks --skip programs,graph --only Mutex
    python -m benchmarks --instructions       # also instruction counts under callgrind
    python -m benchmarks --smoke              # tiny sizes: checks the harness runs, not the figures

Groups: locks, sections, creation, threading, asyncio, memory, scaling (micro-benchmarks), graph, held
(releases from the bottom of long held stacks, in seconds), programs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

if __package__ in (None, ""):  # run as a script: benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

from benchmarks import programs
from benchmarks._timing import PYTHON, have_callgrind, instructions, python_env

MICRO_GROUPS = ("locks", "sections", "creation", "threading", "asyncio", "memory", "scaling")
GROUPS = (*MICRO_GROUPS, "graph", "held", "programs")


def c_available() -> bool:
    """Whether this interpreter has the C module built (whatever this process's setting)."""
    out = subprocess.run(
        [PYTHON, "-c", "import pylockdep._fastpath as f; print(f.ACCELERATED)"],
        env=python_env(pure=False),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip() == "True"


def _json_rows(argv: list[str], pure: bool) -> list[dict[str, Any]]:
    out = subprocess.run(argv, env=python_env(pure), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    return [row for line in out.stdout.splitlines() if line.startswith("{") and "name" in (row := json.loads(line))]


def micro(args: argparse.Namespace, pure: bool) -> list[dict[str, Any]]:
    """The micro-benchmarks of one path, in a fresh process."""
    groups = [g for g in MICRO_GROUPS if g in args.groups]
    if not groups:
        return []
    argv = [PYTHON, "-m", "benchmarks.micro", "--rounds", str(args.rounds), "--loops", str(args.loops)]
    argv += ["--groups", ",".join(groups), "--only", args.only]
    return _json_rows(argv, pure)


def graph(args: argparse.Namespace, pure: bool) -> list[dict[str, Any]]:
    argv = [PYTHON, "-m", "benchmarks.graph_scale", "--json"]
    argv += ["--classes", str(args.graph_classes), "--edges", str(args.graph_edges)]
    if args.graph_rounds:
        argv += ["--rounds", str(args.graph_rounds)]
    rows = _json_rows(argv, pure)
    for row in rows:
        row["path"] = "pure" if pure else "C"
    return rows


def held(args: argparse.Namespace, pure: bool) -> list[dict[str, Any]]:
    """Releases from the bottom of long held stacks (:mod:`benchmarks.held_scale`), in a fresh process."""
    argv = [PYTHON, "-m", "benchmarks.held_scale", "--json", "--wait", args.held_wait, "--deep", args.held_deep]
    rows = _json_rows(argv + ["--rounds", str(args.held_rounds)], pure)
    for row in rows:
        row["path"] = "pure" if pure else "C"
    return rows


def count_instructions(rows: list[dict[str, Any]], pure: bool, loops: int) -> None:
    """Add ``instructions``, the subject's instructions per iteration over the baseline's, to the
    timed micro rows (those with a baseline loop)."""
    # A fixed hash seed: string hashes decide dict layouts, and so the instructions of start-up.
    env = dict(python_env(pure), PYTHONHASHSEED="0")

    def per_iteration(name: str, side: str) -> float:
        argv = lambda n: [PYTHON, "-m", "benchmarks.micro", "--one", name, "--side", side, "--count", str(n)]  # noqa: E731
        return instructions(argv, low=loops, high=loops * 11, env=env)

    for row in rows:
        if row["group"] in ("memory", "scaling"):
            continue
        base, subject = per_iteration(row["name"], "base"), per_iteration(row["name"], "subject")
        row["instructions"] = subject / base
        row["note"] += f"; {subject:.0f} vs {base:.0f} instructions"


# -- the table ---------------------------------------------------------------------------------


def _verdict(row: dict[str, Any] | None) -> str:
    if row is None or row.get("goal") is None:
        return "-"
    # A row may be judged on its median ("judged_on"), where that is the steadier of its figures.
    value = row[row.get("judged_on", "figure")]
    ok = value >= row["goal"] if row["higher_is_better"] else value <= row["goal"]
    return "met" if ok else "MISSED"


def _goal(row: dict[str, Any] | None) -> str:
    if row is None or row.get("goal") is None:
        return "-"
    unit = "" if row["name"].endswith(" us") else "x"
    return f"{'>=' if row['higher_is_better'] else '<='} {row['goal']:g}{unit}"


def _fig(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(by_path: dict[str, list[dict[str, Any]]], with_instructions: bool) -> str:
    """One markdown table: a row per measure, C and pure side by side."""
    names: list[str] = []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for path, path_rows in by_path.items():
        for row in path_rows:
            if row["name"] not in names:
                names.append(row["name"])
            rows[path, row["name"]] = row
    head = ["measure", "goal C", "C min", "C med", "C path", "goal pure", "pure min", "pure med", "rounds", "C", "pure"]
    if with_instructions:
        head[9:9] = ["C instr", "pure instr"]
    head.append("C detail")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        c, pure = rows.get(("C", name)), rows.get(("pure", name))
        cells = [
            name,
            _goal(c),
            _fig(c and c["figure"]),
            _fig(c and c.get("median")),
            (c or {}).get("path", ""),
            _goal(pure),
            _fig(pure and pure["figure"]),
            _fig(pure and pure.get("median")),
            str((c or pure or {}).get("rounds", "")),
            _verdict(c),
            _verdict(pure),
        ]
        if with_instructions:
            cells[9:9] = [_fig(c and c.get("instructions")), _fig(pure and pure.get("instructions"))]
        cells.append((c or pure or {}).get("note", ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100, help="alternating rounds per micro-benchmark")
    parser.add_argument("--loops", type=int, default=1000, help="iterations per round")
    parser.add_argument("--paths", default="", help="c,pure (default: both where the C module is built)")
    parser.add_argument("--skip", default="", help=f"groups to leave out, of {','.join(GROUPS)}")
    parser.add_argument("--only", default="", help="micro-benchmarks whose name contains this text")
    parser.add_argument("--programs", default=",".join(programs.PROGRAMS), help="which real programs")
    parser.add_argument("--program-rounds", type=int, default=3)
    parser.add_argument("--program-size", type=int, default=programs.DEFAULT_SIZE)
    parser.add_argument("--graph-classes", type=int, default=10_000)
    parser.add_argument("--graph-edges", type=int, default=100_000)
    parser.add_argument("--graph-rounds", type=int, help="builds of the same graph (default: graph_scale's)")
    parser.add_argument("--graph-paths", default="c", help="paths the graph runs on (its work is Python)")
    parser.add_argument("--held-wait", default="1000,2000,5000", help="futures of the wait() measures")
    parser.add_argument("--held-deep", default="250,500,1000", help="depths of the nested-release measures")
    parser.add_argument("--held-rounds", type=int, default=3)
    parser.add_argument("--instructions", action="store_true", help="also count instructions under callgrind")
    parser.add_argument("--quick", action="store_true", help="20 rounds of 300; no programs; a small graph")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes everywhere, to check the harness runs")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.rounds, args.loops = 20, 300
        args.graph_classes, args.graph_edges = 1000, 10_000
        args.held_rounds = 1
        skip.add("programs")
    if args.smoke:
        args.rounds, args.loops, args.program_rounds, args.program_size = 2, 10, 1, 200
        args.graph_classes, args.graph_edges, args.graph_rounds = 100, 1000, 2
        args.held_wait, args.held_deep, args.held_rounds = "50", "20", 1
        args.programs = ",".join(p for p in args.programs.split(",") if p != "test_queue")
    if unknown := skip - set(GROUPS):
        parser.error(f"unknown groups: {', '.join(sorted(unknown))}")
    args.groups = [g for g in GROUPS if g not in skip]
    return args


def _paths(requested: str) -> list[str]:
    built = c_available()
    paths = [p.lower() for p in requested.split(",") if p] or (["c", "pure"] if built else ["pure"])
    if "c" in paths and not built:
        print("the C module is not built for this Python: pure path only", file=sys.stderr)
        paths.remove("c")
    return ["C" if p == "c" else "pure" for p in paths]


def _echo(rows: Iterable[dict[str, Any]], path: str) -> None:
    for row in rows:
        print(f"  [{path}] {row['name']}: {row['figure']:.2f}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    paths = _paths(args.paths)
    by_path: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    for path in paths:
        pure = path == "pure"
        rows = micro(args, pure)
        if args.instructions:
            if have_callgrind():
                count_instructions(rows, pure, args.loops)
            else:
                print("valgrind is not installed: no instruction counts", file=sys.stderr)
        _echo(rows, path)
        by_path[path] += rows
        if "graph" in args.groups and path.lower() in args.graph_paths.lower().split(","):
            by_path[path] += graph(args, pure)
            _echo(by_path[path][-2:], path)
        if "held" in args.groups:
            rows = held(args, pure)
            _echo(rows, path)
            by_path[path] += rows
        if "programs" in args.groups:
            for name in filter(None, args.programs.split(",")):
                rows = programs.measure(name, args.program_rounds, args.program_size, pure)
                _echo(rows, path)
                by_path[path] += rows
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"pylockdep benchmarks: Python {platform.python_version()} ({sys.executable}), paths {', '.join(paths)}, "
        f"{now}, load {load:.1f}, {os.cpu_count()} CPUs"
    )
    print("Figures are ratios to plain Python (min: ratio of the best rounds, med: of the medians); lower is")
    print("better except for scaling.  C path: `C` when no Python code of pylockdep ran, else its calls per op.")
    print(table(by_path, args.instructions and have_callgrind()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
