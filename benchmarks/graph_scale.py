"""Cost of a new dependency as the graph grows to 10,000 classes and 100,000 edges.

Run: ``python benchmarks/graph_scale.py [--classes N] [--edges M] [--seed S]``.  The edges form a
random DAG (each goes from a lower to a higher rank of a hidden random order), inserted in random
order, each by taking two real locks (``with a, b``) on a chain not seen before; classes are
registered in another random order, so the validator's topological order starts out unrelated
to the hidden one and must be repaired (Pearce-Kelly) as edges arrive.  Every class is taken
once alone first, so each timed acquisition does the work of exactly one new edge.

``--irq`` first makes one unrelated class hardirq-safe, as any program using interrupt contexts
has; lockdep then owes every new edge an irq-safe -> irq-unsafe check, which must stay cheap for
edges that no irq-safe class stands behind.

Goals (issue 2): median new-edge cost < 1 ms, and the median of the last 10k edges < 2x the
median of the first 10k.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import pylockdep

GOAL_MEDIAN_MS = 1.0
GOAL_GROWTH = 2.0
WINDOW = 10_000


def random_dag(n: int, m: int, rng: random.Random) -> list[tuple[int, int]]:
    """``m`` distinct edges ``u -> v`` with rank(u) < rank(v) for a random ranking, in random order."""
    rank = list(range(n))
    rng.shuffle(rank)
    edges: set[tuple[int, int]] = set()
    while len(edges) < m:
        u, v = rng.randrange(n), rng.randrange(n)
        if rank[u] < rank[v]:
            edges.add((u, v))
        elif rank[v] < rank[u]:
            edges.add((v, u))
    ordered = sorted(edges)
    rng.shuffle(ordered)
    return ordered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--irq", action="store_true", help="first make one unrelated class hardirq-safe")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    edges = random_dag(args.classes, args.edges, rng)
    locks = [pylockdep.Mutex(f"class{i}") for i in range(args.classes)]
    costs = []
    started = time.perf_counter()
    with pylockdep.validate() as v:
        if args.irq:
            with pylockdep.hardirq(), pylockdep.RawSpinLock("irq_safe"):
                pass
        for i in rng.sample(range(args.classes), args.classes):
            with locks[i]:
                pass
        clock = time.perf_counter
        for u, w in edges:
            a, b = locks[u], locks[w]
            t0 = clock()
            with a, b:
                pass
            costs.append(clock() - t0)
        assert v.graph.nr_edges == args.edges and len(v.graph.classes) == args.classes + args.irq
    total = time.perf_counter() - started
    window = min(WINDOW, len(costs) // 2)
    median_ms = statistics.median(costs) * 1e3
    first_ms = statistics.median(costs[:window]) * 1e3
    last_ms = statistics.median(costs[-window:]) * 1e3
    growth = last_ms / first_ms
    worst_ms = max(costs) * 1e3
    p99_ms = statistics.quantiles(costs, n=100)[98] * 1e3
    irq = ", one class irq-safe" if args.irq else ""
    print(f"{args.classes} classes, {args.edges} edges (random DAG, random insertion order{irq}), {total:.1f} s in all")
    print(f"new-edge cost: median {median_ms * 1e3:.0f} us, p99 {p99_ms * 1e3:.0f} us, max {worst_ms:.1f} ms")
    print(
        f"median of first {window} edges {first_ms * 1e3:.0f} us, of last {window} {last_ms * 1e3:.0f} us: "
        f"growth {growth:.2f}x"
    )
    ok_median = median_ms < GOAL_MEDIAN_MS
    ok_growth = growth < GOAL_GROWTH
    print(
        f"goal median < {GOAL_MEDIAN_MS:g} ms: {'ok' if ok_median else 'MISSED'}; "
        f"goal growth < {GOAL_GROWTH:g}x: {'ok' if ok_growth else 'MISSED'}"
    )
    return 0 if ok_median and ok_growth else 1


if __name__ == "__main__":
    sys.exit(main())
