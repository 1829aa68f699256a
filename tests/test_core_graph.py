"""The dependency graph: its incremental topological order, reachability filter and irq-safe summary."""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pylockdep
from pylockdep import RawSpinLock, _graph
from pylockdep._classes import LockKey
from pylockdep._graph import DEP_EN, Graph
from pylockdep._locktypes import MUTEX

N = 8


def reaches(src, dst, ordered_only: bool = False) -> bool:
    """Plain depth-first reachability over every edge (or the edges kept in the order only)."""
    seen, stack = {src}, [src]
    while stack:
        for nxt, edge in stack.pop().after.items():
            if ordered_only and not edge.ordered:
                continue
            if nxt is dst:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def new_graph(n: int) -> tuple[Graph, list]:
    graph = Graph()
    return graph, [graph.new_class(LockKey(f"c{i}", MUTEX, None, None), 0) for i in range(n)]


def assert_order_consistent(graph: Graph) -> None:
    """The labels are distinct and climb along the order list, every ordered edge climbs them, and
    no ordered successor of a class is labelled below the floor its search would skip on."""
    places = graph._places
    heads = [c for c in graph.classes if places[c].prior is None]
    assert len(heads) == 1
    walked, cls = [], heads[0]
    while cls is not None:
        walked.append(cls)
        assert places[cls].later is None or places[places[cls].later].prior is cls
        cls = places[cls].later
    assert walked[-1] is graph._last
    assert sorted(walked, key=lambda c: c.id) == graph.classes
    assert [c.ord for c in walked] == sorted({c.ord for c in walked})
    for edge in graph.edges():
        if edge.ordered:
            assert edge.prev.ord < edge.next.ord
            assert places[edge.prev].first <= edge.next.ord


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
        assert_order_consistent(graph)
        for edge in graph.edges():
            if not edge.ordered:
                assert reaches(edge.next, edge.prev)  # only edges on a cycle are kept out of the order


edge_lists = st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=60)


@pytest.mark.parametrize("gap", [1, 1 << 32])  # with labels 1 apart every move relabels a range
@settings(max_examples=150, deadline=None)
@given(pairs=edge_lists)
def test_new_edges_agree_with_brute_force_reachability(gap, pairs):
    """Left to find cycles itself (as when merging recorded graphs), the graph keeps an edge out of
    the order exactly when the ordered edges already lead from its head back to its tail; the
    validator's question (may_reach, then find_path) finds a path exactly when one exists."""
    with mock.patch.object(_graph, "_GAP", gap):
        graph, classes = new_graph(12)
        for u, w in pairs:
            prev, nxt = classes[u], classes[w]
            if prev is nxt or nxt in prev.after:
                continue
            closes = reaches(nxt, prev)
            if graph.may_reach(nxt, prev):
                found = graph.find_path(nxt, False, lambda step, prev=prev: step.cls is prev)
                assert (found is not None) == closes
            else:
                assert not closes
            against = reaches(nxt, prev, ordered_only=True)
            edge = graph.add_edge(prev, nxt, DEP_EN, (), "t", None, closes_cycle=False)
            assert edge.ordered is not against
            assert_order_consistent(graph)


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 120))
def test_random_dag_stays_wholly_ordered(rng, m):
    """Edges of a DAG, in any order, all find a place in the order."""
    n = 30
    rank = list(range(n))
    rng.shuffle(rank)
    graph, classes = new_graph(n)
    for _ in range(m):
        u, w = rng.randrange(n), rng.randrange(n)
        if rank[u] > rank[w]:
            u, w = w, u
        if u == w or classes[w] in classes[u].after:
            continue
        assert not graph.may_reach(classes[w], classes[u])
        graph.add_edge(classes[u], classes[w], DEP_EN, (), "t", None, closes_cycle=False)
    assert graph.unordered == []
    assert_order_consistent(graph)


def test_a_path_made_after_a_search_is_seen_by_the_next_one():
    graph, (a, b, c) = new_graph(3)
    assert not graph.may_reach(a, c)
    graph.add_edge(a, b, DEP_EN, (), "t", None, closes_cycle=False)
    graph.add_edge(b, c, DEP_EN, (), "t", None, closes_cycle=False)
    assert graph.may_reach(a, c)


def test_moves_into_one_gap_relabel_and_keep_the_order():
    """Forty classes each moved to just after the same class halve one gap past its 32 bits."""
    graph, classes = new_graph(42)
    *movers, anchor, after = classes
    for cls in movers:
        graph.add_edge(anchor, cls, DEP_EN, (), "t", None, closes_cycle=False)
        graph.add_edge(cls, after, DEP_EN, (), "t", None, closes_cycle=False)
    assert graph.unordered == []
    assert_order_consistent(graph)
    assert anchor.ord < min(c.ord for c in movers) and max(c.ord for c in movers) < after.ord
    assert graph.may_reach(anchor, after) and not graph.may_reach(after, anchor)


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
