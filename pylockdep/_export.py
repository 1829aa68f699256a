"""A validator's dependency graph as plain data, and graphs merged across processes.

:func:`graph_to_data` turns a validator's graph into plain lists and dicts (JSON- and
execnet-serialisable).  Classes are named by a *stable id* built from what makes the class (lock
type, name, creation site or explicit key, subclass), so the same class seen by two processes of
one test run gets the same id.  :func:`merge` builds one :class:`pylockdep._graph.Graph` from the
data of several processes, remembering which process saw each edge, and :func:`strong_cycles` finds
the cycles lockdep would report in any graph (:mod:`pylockdep._picture` draws them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _locktypes, _splat
from ._checks import check_gate
from ._classes import LockClass, LockKey
from ._frames import format_file_line, format_stack
from ._graph import DEP_EN, DEP_ER, DEP_NAMES, DEP_SR, Edge, Graph, LoopMark
from ._report import Report

if TYPE_CHECKING:
    from ._validator import Validator

_EXCLUSIVE = DEP_ER | DEP_EN  # the tail was held exclusively
_RECURSIVE = DEP_SR | DEP_ER  # the head was taken as a recursive reader
_STABLE_KEYS = (str, int, float, bytes, bool, type(None))
_TYPES_BY_NAME = {t.name: t for t in vars(_locktypes).values() if isinstance(t, _locktypes.LockType)}


def class_id(cls: LockClass) -> str:
    """A name for ``cls`` that is the same in every process running the same code.

    Made of the lock type, the class name, the subclass and either the explicit key (when its
    ``repr`` is stable: strings, numbers, tuples of them) or the file and line that created it.
    """
    key = cls.key
    explicit = key.explicit
    if explicit is not None and _is_stable(explicit):
        origin = f"key={explicit!r}"
    elif key.site is not None:
        origin = f"{key.site[0].co_filename}:{key.site[1]}"
    else:
        origin = "?"
    return f"{cls.ltype.name}|{key.name}|{origin}|{cls.subclass}"


def _is_stable(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_is_stable(v) for v in value)
    return isinstance(value, _STABLE_KEYS)


def graph_to_data(v: Validator) -> dict:
    """The validator's classes and dependencies as plain data.

    Returns ``{"classes": [...], "edges": [...]}``; a class is ``{"id", "name", "subclass",
    "type", "site", "gate"}`` (``id`` from :func:`class_id`, ``site`` as ``file:line``, ``gate``
    whether it is one, :func:`pylockdep._checks.check_gate`), an edge is ``{"prev", "next",
    "types", "origin", "thread", "stack", "guards", "held_ever", "loop"}`` (class ids, the
    dependency kinds as bits of :attr:`Edge.types`, the test or other origin that first made it,
    its thread, its stack as printed lines, innermost first, the ids of :attr:`Edge.guards` and of
    :attr:`Edge.held_ever` (None where not known), and :attr:`Edge.loop` as :func:`loop_id` gives
    it).
    """
    with v.graph_lock:
        classes = list(v.graph.classes)
        edges = list(v.graph.edges())
    ids = {cls: class_id(cls) for cls in classes}
    return {
        "classes": [
            {
                "id": ids[cls],
                "name": cls.key.name,
                "subclass": cls.subclass,
                "type": cls.ltype.name,
                "site": format_file_line(cls.key.site) if cls.key.site else "?",
                "gate": check_gate(cls),
            }
            for cls in classes
        ],
        "edges": [
            {
                "prev": ids[e.prev],
                "next": ids[e.next],
                "types": e.types,
                "origin": e.origin,
                "thread": e.thread,
                "stack": format_stack(e.stack, ""),
                "guards": sorted(ids[c] for c in e.guards if c in ids),
                "held_ever": held_ever_ids(e, ids),
                "loop": loop_id(e.loop),
            }
            for e in edges
        ],
    }


def held_ever_ids(edge: Edge, ids: dict[LockClass, str]) -> list[str] | None:
    """The ids of ``edge``'s :attr:`Edge.held_ever`, None where not known: a class the ids lack
    (made meanwhile) would be dropped, and fewer classes held would judge too little."""
    if edge.held_ever is None or any(c not in ids for c in edge.held_ever):
        return None
    return sorted(ids[c] for c in edge.held_ever)


def loop_id(loop: LoopMark | str | None) -> str | None:
    """The loop that made a dependency (:attr:`Edge.loop`) as a name that is the same in every
    process running the same code: its file, function and line (not the thread, which is the
    run's own)."""
    if loop is None or isinstance(loop, str):
        return loop
    (code, line), _thread = loop
    return f"{code.co_filename}:{code.co_qualname}:{line}"


@dataclass
class EdgeSources:
    """Where a merged edge came from: the processes that saw it and the first one's stack."""

    sources: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)


@dataclass
class MergedGraph:
    """Several processes' graphs as one :class:`Graph`.

    ``sites`` gives each class's creation site (``file:line``); ``edge_sources`` says which
    sources (an xdist worker id, say) saw each edge, and its stack as printed lines.
    """

    graph: Graph = field(default_factory=Graph)
    sites: dict[LockClass, str] = field(default_factory=dict)
    edge_sources: dict[Edge, EdgeSources] = field(default_factory=dict)
    by_id: dict[str, LockClass] = field(default_factory=dict)

    def add(self, source: str, data: dict) -> None:
        """Merge ``data`` (from :func:`graph_to_data`) seen by ``source`` into the graph.

        A class is a gate if it was one in every source that had it (``key.at_once`` 1, else 2:
        see :func:`pylockdep._checks.check_gate`); an edge's guards are those held every time any
        source made it, the locks it was ever made holding those of any source (not known if one
        source did not say), and its loop the one loop that made it in every source (recordings of
        older versions hold none of these: no guards, not known, no loop)."""
        for c in data["classes"]:
            cls = self.by_id.get(c["id"])
            if cls is None:
                ltype = _TYPES_BY_NAME.get(c["type"]) or _locktypes.LockType(c["type"], 0, 0)
                key = LockKey(c["name"], ltype, None, c["id"])
                cls = self.graph.new_class(key, c["subclass"])
                self.by_id[c["id"]] = cls
                self.sites[cls] = c["site"]
                key.at_once = 1
            if not c.get("gate"):
                cls.key.at_once = 2
        for e in data["edges"]:
            prev, nxt = self.by_id[e["prev"]], self.by_id[e["next"]]
            guards = frozenset(self.by_id[g] for g in e.get("guards", ()) if g in self.by_id)
            ever = e.get("held_ever")
            held_ever = None if ever is None else frozenset(self.by_id[g] for g in ever if g in self.by_id)
            edge = prev.after.get(nxt)
            if edge is None:
                edge = self.graph.add_edge(
                    prev,
                    nxt,
                    e["types"],
                    (),
                    e["thread"],
                    e["origin"],
                    False,
                    guards,
                    e.get("loop"),
                    held_ever=held_ever,
                )
                self.edge_sources[edge] = EdgeSources(stack=list(e["stack"]))
            else:
                edge.guards &= guards
                edge.held_ever = None if edge.held_ever is None or held_ever is None else edge.held_ever | held_ever
                edge.loop = edge.loop if edge.loop == e.get("loop") else None
            self.graph.add_types(edge, e["types"])
            sources = self.edge_sources[edge].sources
            if source not in sources:
                sources.append(source)


def merge(datas: Iterable[tuple[str, dict]]) -> MergedGraph:
    """One graph from ``(source, data)`` pairs, data as :func:`graph_to_data` returns it."""
    merged = MergedGraph()
    for source, data in datas:
        merged.add(source, data)
    return merged


def strong_cycles(graph: Graph) -> list[list[Edge]]:
    """The distinct strong cycles lockdep's search finds in ``graph``, each as its list of edges.

    Every cycle holds at least one edge that is out of the graph's topological order, so only those
    are tried as the edge that closes it: from its head, lockdep's breadth-first search over strong
    paths (:meth:`Graph.find_path`) looks for its tail, once per kind of dependency the edge has.
    A cycle is listed once per set of classes, closing edge first, then the path back to its tail.
    """
    cycles: list[list[Edge]] = []
    seen: set[frozenset[LockClass]] = set()
    for closing in list(graph.unordered):
        for bit in DEP_NAMES:
            if not closing.types & bit:
                continue
            tail = closing.prev
            exclusive = bool(bit & _EXCLUSIVE)

            def reaches_tail(step, tail=tail, exclusive=exclusive) -> bool:
                return step.cls is tail and (exclusive or not step.only_recursive)

            path = graph.find_path(closing.next, bool(bit & _RECURSIVE), reaches_tail)
            if path is None:
                continue
            edges = [closing, *path.edges()]
            classes = frozenset(e.prev for e in edges)
            if classes not in seen:
                seen.add(classes)
                cycles.append(edges)
            break
    return cycles


def cycle_report(merged: MergedGraph, cycle: list[Edge]) -> Report:
    """A circular-locking report for a cycle of the merged graph, in the layout of lockdep's splat.

    ``cycle`` is as :func:`strong_cycles` gives it.  Every dependency on it is listed with the
    origin (test id), source (worker) and thread that made it, and its stack.
    """
    closing = cycle[0]
    tail, head = closing.prev, closing.next
    sources = sorted({s for e in cycle for s in merged.edge_sources[e].sources})
    title = _splat.title("circular")
    lines = _splat.framed(title, f"{_splat.VERSION} merged graph of {', '.join(sources)}", 54)
    lines += [
        "no single process saw this cycle; the union of their graphs closes it.",
        "",
        f"{closing.thread} ({_made_by(merged, closing, thread=False)}) acquired lock:",
        _describe(merged, head),
        "",
        "while holding lock:",
        _describe(merged, tail),
        "",
        *_splat.DEPENDS_ON_NEW,
    ]
    # Entry #0 is the head with the closing edge; #k the k-th class after it, with the edge into it.
    entries = [(head, closing)] + [(e.next, e) for e in cycle[1:]]
    for depth in range(len(entries) - 1, -1, -1):
        cls, edge = entries[depth]
        lines += ["", f"-> #{depth}{_describe(merged, cls)}:", f"       [{_made_by(merged, edge)}]"]
        lines += ["       " + frame for frame in merged.edge_sources[edge].stack]
    parent = entries[-2][0] if len(entries) >= 2 else head
    first = "lock" if closing.types & _EXCLUSIVE else "rlock"
    last = "lock" if closing.types & ~_RECURSIVE else "rlock"
    via = parent.name if parent is not head else None
    lines += _splat.circular_scenario(first, head.name, via, tail.name, last)
    classes = [head] + [e.next for e in cycle[1:]]
    return Report(
        kind="circular",
        title=title,
        text="\n".join(lines).strip("\n"),
        classes=tuple(cls.key.name for cls in classes),
        threads=tuple(dict.fromkeys(e.thread for e in cycle)),
    )


def _describe(merged: MergedGraph, cls: LockClass) -> str:
    """`` (name) [type, file:line]``: a merged class, which has no usage bits to print."""
    return f" ({cls.name}) [{cls.ltype.name}, {merged.sites.get(cls, '?')}]"


def _made_by(merged: MergedGraph, edge: Edge, thread: bool = True) -> str:
    """``in <origin>, <sources>[, thread <thread>]``: who made an edge of the merged graph."""
    parts = [f"in {edge.origin}"] if edge.origin else []
    parts.append(", ".join(merged.edge_sources[edge].sources))
    if thread:
        parts.append(f"thread {edge.thread}")
    return ", ".join(parts)
