"""The dependency graph: its incremental topological order, reachability filter and irq-safe summary."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import pylockdep
from pylockdep import RawSpinLock
from pylockdep._classes import LockKey
from pylockdep._graph import DEP_EN, Graph
from pylockdep._locktypes import MUTEX

N = 8


def reaches(src, dst) -> bool:
    """Plain depth-first reachability over every edge."""
    seen, stack = {src}, [src]
    while stack:
        for nxt in stack.pop().after:
            if nxt is dst:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, N - 1), st.integers(0, N - 1)), max_size=40))
def test_order_stays_topological_and_may_reach_never_misses_a_path(pairs):
    graph = Graph()
    classes = [graph.new_class(LockKey(f"c{i}", MUTEX, None, None), 0) for i in range(N)]
    for u, w in pairs:
        prev, nxt = classes[u], classes[w]
        if prev is nxt or nxt in prev.after:
            continue
        for a in classes:
            for b in classes:
                if reaches(a, b):
                    assert graph.may_reach(a, b)
        closes = reaches(nxt, prev)
        graph.add_edge(prev, nxt, DEP_EN, (), "t", None, closes_cycle=closes)
        assert sorted(c.ord for c in classes) == list(range(N))
        for edge in graph.edges():
            if edge.ordered:
                assert edge.prev.ord < edge.next.ord
            else:
                assert reaches(edge.next, edge.prev)  # only edges on a cycle are kept out of the order


def three_raw_locks() -> list[RawSpinLock]:
    return [RawSpinLock(name) for name in ("X", "Y", "Z")]


def test_irq_safe_class_behind_a_new_edge_is_found_when_it_became_safe_before_the_edges():
    x, y, z = three_raw_locks()
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq(), x:
            pass
        with z:  # irqs on: Z is hardirq-unsafe
            pass
        with pylockdep.irqs_disabled():
            with x, y:
                pass
            with y, z:  # X -> Y -> Z joins the irq-safe X to the irq-unsafe Z
                pass
    assert [r.kind for r in v.reports] == ["irq_unsafe_order"]
    assert v.reports[0].title == "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected"
    assert set(v.reports[0].classes) == {"X", "Y", "Z"}


def test_irq_safe_class_behind_a_new_edge_is_found_when_it_became_safe_after_the_edges():
    x, y, z = three_raw_locks()
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.irqs_disabled():
            with x, y:
                pass
        with pylockdep.hardirq(), x:  # X becomes irq-safe after X -> Y exists
            pass
        with z:
            pass
        with pylockdep.irqs_disabled():
            with y, z:
                pass
    assert [r.kind for r in v.reports] == ["irq_unsafe_order"]
    assert set(v.reports[0].classes) == {"X", "Y", "Z"}


def test_no_irq_report_without_an_irq_safe_class_behind_the_edge():
    x, y, z = three_raw_locks()
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq(), x:
            pass
        with z:
            pass
        with pylockdep.irqs_disabled():
            with z, y:  # Y is reached from Z only; X stands behind nothing
                pass
            with y, x:
                pass
    assert v.reports == []
