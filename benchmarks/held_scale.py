"""Held stacks at scale: releases from the bottom of long stacks, the pattern of
``concurrent.futures.wait()`` (every future's condition taken, then released oldest first) and of a
deep nest of distinct lock classes released oldest first.

Run: ``python -m benchmarks.held_scale [--wait 1000,2000,5000] [--deep 250,500,1000] [--json]``
(``PYLOCKDEP_PURE_PYTHON=1`` for the pure-Python path).  Each figure is the best of ``--rounds``
runs, in seconds, for the whole operation under a fresh validator (and ``instrument_threading()``
for the futures).

What to expect: a ``wait()`` on twice as many futures costs about twice as much (the run of
conditions is relabelled lazily, see ``pylockdep._held.remove``).  Each release from the bottom of
a nest of distinct classes pushes every lock above again under a new chain key, as lockdep's
``__lock_release`` does, so that case grows with the square of the depth (lockdep caps the depth
at 48): it is timed to keep that cost known and its constant small.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time

import pylockdep


def wait_on_done_futures(count: int) -> float:
    """Seconds for one ``concurrent.futures.wait()`` on ``count`` futures that are done."""
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        futures = [concurrent.futures.Future() for _ in range(count)]
        for future in futures:
            future.set_result(None)
        started = time.perf_counter()
        concurrent.futures.wait(futures)
        seconds = time.perf_counter() - started
    assert not v.reports, [r.title for r in v.reports]
    return seconds


def deep_nest_released_oldest_first(depth: int) -> float:
    """Seconds to take ``depth`` Mutexes of distinct classes nested, then release them oldest first."""
    with pylockdep.validate(raise_on_report=False) as v:
        locks = [pylockdep.Mutex(f"deep{i}", key=("held_scale", i)) for i in range(depth)]
        started = time.perf_counter()
        for lock in locks:
            lock.acquire()
        for lock in locks:
            lock.release()
        seconds = time.perf_counter() - started
    assert not v.reports, [r.title for r in v.reports]
    return seconds


def rows(waits: list[int], depths: list[int], rounds: int) -> list[dict[str, object]]:
    """A table row per size: the best and median seconds of ``rounds`` runs."""
    made = []
    linear = "seconds, not a ratio: twice the size should cost about twice as much"
    square = "seconds, not a ratio: each release replays the locks above it, so twice the depth costs about 4x"
    cases = [(f"wait() on {n} done futures, s", wait_on_done_futures, n, linear) for n in waits]
    cases += [
        (f"{d} nested Mutexes released oldest first, s", deep_nest_released_oldest_first, d, square) for d in depths
    ]
    for name, run, size, note in cases:
        times = sorted(run(size) for _ in range(rounds))
        made.append(
            {
                "name": name,
                "group": "held",
                "goal": None,
                "figure": times[0],
                "median": times[len(times) // 2],
                "rounds": rounds,
                "note": note,
                "higher_is_better": False,
            }
        )
    return made


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", default="1000,2000,5000", help="numbers of futures")
    parser.add_argument("--deep", default="250,500,1000", help="depths of the nest")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the table rows as JSON lines")
    args = parser.parse_args(argv)
    for row in rows(_sizes(args.wait), _sizes(args.deep), args.rounds):
        print(json.dumps(row) if args.json else f"{row['name']}: {row['figure']:.3f} (median {row['median']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
