"""Merging recorded lock graphs at CI scale: thousands of recordings, a million edges.

Run: ``python -m benchmarks.merge_scale [--runs N] [--edges M] [--classes C] [--seed S]``.  It writes
``--runs`` recordings (as ``pylockdep run --record`` does) whose edges, ``--edges`` in all, are drawn
from one random DAG over ``--classes`` lock classes, so runs overlap as the jobs of one suite do; one
extra pair of runs each holds one half of a two-lock cycle.  It then times ``pylockdep merge`` over
all of them (reading, merging, searching for cycles), in process, and checks that the planted
cycle, and only it, is reported.

Goal (issue 19): a million edges in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

from benchmarks.graph_scale import random_dag
from pylockdep import _record

STACK = ["worker+app/jobs.py:120", "Thread.run+threading.py:982"]


def klass(i: int) -> dict:
    site = f"app/module{i % 97}.py:{10 + i}"
    return {
        "id": f"threading.Lock|Lock@{site}|{site}|0",
        "name": f"Lock@{site}",
        "subclass": 0,
        "type": "threading.Lock",
        "site": site,
    }


def recording(source: str, classes: list[dict], edges: list[tuple[int, int]]) -> dict:
    used = sorted({c for edge in edges for c in edge})
    return {
        "format": _record.FORMAT,
        "version": _record.VERSION,
        "source": source,
        "graph": {
            "classes": [classes[c] for c in used],
            "edges": [
                {
                    "prev": classes[a]["id"],
                    "next": classes[b]["id"],
                    "types": 8,
                    "origin": None,
                    "thread": "MainThread/1",
                    "stack": STACK,
                }
                for a, b in edges
            ],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--edges", type=int, default=1_000_000, help="edges in all the recordings together")
    parser.add_argument("--classes", type=int, default=20_000)
    parser.add_argument("--distinct", type=int, default=100_000, help="distinct edges the runs draw from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    dag = random_dag(args.classes, args.distinct, rng)
    classes = [klass(i) for i in range(args.classes + 2)]
    a, b = args.classes, args.classes + 1  # the planted cycle's two classes
    per_run = args.edges // args.runs
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        started = time.perf_counter()
        for run in range(args.runs):
            edges = rng.sample(dag, per_run)
            if run == 0:
                edges.append((a, b))
            elif run == 1:
                edges.append((b, a))
            path = os.path.join(tmp, f"job{run}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(recording(f"job{run}", classes, edges), f)
            paths.append(path)
        written = time.perf_counter() - started
        size = sum(os.path.getsize(p) for p in paths)
        started = time.perf_counter()
        merged, cycles = _record.merge_files(paths)
        elapsed = time.perf_counter() - started
    total = per_run * args.runs + 2
    print(
        f"recordings: {args.runs}, edges in them: {total:,} ({size / 1e6:.0f} MB of JSON, written in {written:.1f} s)"
    )
    print(f"merged graph: {len(merged.graph.classes):,} classes, {merged.graph.nr_edges:,} distinct edges")
    print(f"merge (read, join, search for cycles): {elapsed:.1f} s, {total / elapsed:,.0f} edges/s")
    found = [sorted(r.classes) for r in cycles]
    ok = found == [sorted([classes[a]["name"], classes[b]["name"]])]
    print(f"cycles only the union shows: {len(cycles)} ({'the planted one' if ok else 'WRONG: ' + repr(found)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
