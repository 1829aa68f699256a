"""Graph export and merging (``pylockdep._export``), which the pytest plugin and ``pylockdep run`` use."""

from __future__ import annotations

import json
import sys

import pylockdep
from pylockdep import _export, _picture
from pylockdep._graph import DEP_EN, DEP_ER, DEP_SN


def cls(name: str) -> dict:
    return {
        "id": f"struct mutex|{name}|x.py:1|0",
        "name": name,
        "subclass": 0,
        "type": "struct mutex",
        "site": "x.py:1",
    }


def edge(prev: str, nxt: str, types: int, origin: str) -> dict:
    return {
        "prev": f"struct mutex|{prev}|x.py:1|0",
        "next": f"struct mutex|{nxt}|x.py:1|0",
        "types": types,
        "origin": origin,
        "thread": "MainThread/1",
        "stack": [f"{origin}+x.py:2"],
    }


def data(*edges: dict) -> dict:
    names = sorted({e["prev"].split("|")[1] for e in edges} | {e["next"].split("|")[1] for e in edges})
    return {"classes": [cls(n) for n in names], "edges": list(edges)}


def test_data_is_plain_and_names_classes_by_what_makes_them() -> None:
    line = sys._getframe().f_lineno + 1
    a, b = pylockdep.Mutex("A"), pylockdep.SpinLock("B", key="b-key")
    with pylockdep.validate(raise_on_report=False) as v:
        v.origin = "test_here"
        with a, b:
            pass
    d = _export.graph_to_data(v)
    assert json.loads(json.dumps(d)) == d
    ids = [c["id"] for c in d["classes"]]
    assert ids[0] == f"struct mutex|A|{__file__}:{line}|0"
    assert ids[1] == "spinlock_t|B|key='b-key'|0"
    [e] = d["edges"]
    assert (e["prev"], e["next"], e["types"], e["origin"]) == (ids[0], ids[1], DEP_EN, "test_here")
    assert e["stack"][0].startswith("test_data_is_plain_and_names_classes_by_what_makes_them+")


def test_merge_joins_classes_by_id_and_finds_a_cycle_no_source_had() -> None:
    merged = _export.merge(
        [
            ("gw0", data(edge("A", "B", DEP_EN, "t1"), edge("B", "C", DEP_EN, "t1"))),
            ("gw1", data(edge("C", "A", DEP_EN, "t2"), edge("A", "B", DEP_EN, "t3"))),
        ]
    )
    assert len(merged.graph.classes) == 3
    assert merged.graph.nr_edges == 3
    [cycle] = _export.strong_cycles(merged.graph)
    assert {(e.prev.name, e.next.name) for e in cycle} == {("A", "B"), ("B", "C"), ("C", "A")}
    ab = next(e for e in cycle if e.prev.name == "A")
    assert merged.edge_sources[ab].sources == ["gw0", "gw1"]
    report = _export.cycle_report(merged, cycle)
    assert report.kind == "circular"
    assert report.title == "WARNING: possible circular locking dependency detected"
    assert sorted(report.classes) == ["A", "B", "C"]
    assert "[in t1, gw0, gw1, thread MainThread/1]" in report.text
    assert "[in t2, gw1, thread MainThread/1]" in report.text
    assert "Chain exists of:" in report.text


def test_a_weak_cycle_is_not_one() -> None:
    # A held exclusively, B taken as a recursive reader; then A taken under B held shared: a
    # recursive read followed by a shared hold cannot deadlock.
    merged = _export.merge([("gw0", data(edge("A", "B", DEP_ER, "t1"))), ("gw1", data(edge("B", "A", DEP_SN, "t2")))])
    assert _export.strong_cycles(merged.graph) == []
    strong = _export.merge([("gw0", data(edge("A", "B", DEP_EN, "t1"))), ("gw1", data(edge("B", "A", DEP_SN, "t2")))])
    assert len(_export.strong_cycles(strong.graph)) == 1


def test_dot_marks_only_the_edges_on_a_cycle() -> None:
    a, b, c = pylockdep.Mutex("A"), pylockdep.Mutex("B"), pylockdep.Mutex('C "quoted"')
    with pylockdep.validate(raise_on_report=False) as v:
        with a, b:
            pass
        with b, a:
            pass
        with b, c:
            pass
    dot = _picture.graph_to_dot(v)
    assert dot.startswith("digraph lockdep {\n") and dot.endswith("}\n")
    red = [line for line in dot.splitlines() if "color=red" in line]
    assert sorted(line.split(" [")[0].strip() for line in red) == ["c0 -> c1", "c1 -> c0"]
    assert "c1 -> c2" in dot
    assert 'label="C \\"quoted\\"\\nstruct mutex\\n' in dot
