"""Recorded lock graphs: one run's graph written to a file, and many runs' files merged.

A *recording* is a JSON file (optionally gzip-compressed, by a ``.gz`` name) holding one run's lock
graph as :func:`pylockdep._export.graph_to_data` gives it, with a header saying what it is::

    {"format": "pylockdep-graph", "version": 1, "source": "run name", "graph": {...}}

Classes are named by stable ids (lock type, name, creation site), so the same class has the same id
in every run of the same code, on any machine.  :func:`merge_files` joins recordings into one graph
and lists the cycles that no single run saw whole: a lock order seen only in one CI job and its
reverse seen only in another is a deadlock no single job reports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import IO, Any

from ._checks import check_gate, check_gated, check_loop_order
from ._export import MergedGraph, cycle_report, graph_to_data, held_ever_ids, loop_id, strong_cycles
from ._report import Report
from ._validator import Validator, current

FORMAT = "pylockdep-graph"
VERSION = 1


class RecordingError(ValueError):
    """A file is not a recording this version of pylockdep can read (the message says why)."""


def record_graph(path: str | os.PathLike[str], validator: Validator | None = None, source: str | None = None) -> None:
    """Write the lock graph of ``validator`` (default: the one in force) to ``path`` as a recording
    for ``pylockdep merge``, as ``pylockdep run --record`` does; gzip-compressed when ``path`` ends
    in ``.gz``.  ``source`` names the run in merged reports (default: the file's name).

    For code validated with ``validate()``: ``with pylockdep.validate() as v: ...`` then
    ``pylockdep.record_graph("job3.json", v)``.
    """
    path = os.fspath(path)  # TypeError for anything but a path, before a file is touched
    if not isinstance(path, str):
        raise TypeError(f"record_graph() needs a file name (str), not {type(path).__name__}")
    if validator is None:
        validator = current()
    elif not isinstance(validator, Validator):
        raise TypeError(f"record_graph() records a pylockdep.Validator, not {type(validator).__name__}")
    if source is not None and not isinstance(source, str):
        raise TypeError(f"source must be a str or None, not {type(source).__name__}")
    with open_for_writing(path) as f:
        record(validator, f, source or os.path.basename(path))


def record(graph: Validator | MergedGraph, f: IO[str], source: str) -> None:
    """Write a validator's graph (or a merged one, as an xdist controller has) to the open text file
    ``f`` as a recording named ``source``."""
    data = merged_to_data(graph) if isinstance(graph, MergedGraph) else graph_to_data(graph)
    json.dump({"format": FORMAT, "version": VERSION, "source": source, "graph": data}, f)
    f.write("\n")


def merged_to_data(merged: MergedGraph) -> dict:
    """A merged graph as :func:`pylockdep._export.graph_to_data` gives a validator's."""
    ids = {cls: cid for cid, cls in merged.by_id.items()}
    return {
        "classes": [
            {
                "id": ids[cls],
                "name": cls.key.name,
                "subclass": cls.subclass,
                "type": cls.ltype.name,
                "site": merged.sites.get(cls, "?"),
                "gate": check_gate(cls),
            }
            for cls in merged.graph.classes
        ],
        "edges": [
            {
                "prev": ids[e.prev],
                "next": ids[e.next],
                "types": e.types,
                "origin": e.origin,
                "thread": e.thread,
                "stack": list(merged.edge_sources[e].stack),
                "guards": sorted(ids[c] for c in e.guards),
                "held_ever": held_ever_ids(e, ids),
                "loop": loop_id(e.loop),
            }
            for e in merged.graph.edges()
        ],
    }


def open_for_writing(path: str) -> IO[str]:
    """``path`` opened for a recording (gzip-compressed when the name ends in ``.gz``)."""
    if path.endswith(".gz"):
        import gzip  # only for compressed recordings: importing pylockdep stays cheap

        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def load(path: str) -> dict[str, Any]:
    """The recording in ``path``; :class:`RecordingError` when it is not one (or a newer version)."""
    try:
        if path.endswith(".gz"):
            import gzip

            opener = gzip.open
        else:
            opener = open
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: cannot read a recording: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecordingError(f"{path}: not a pylockdep recording")
    if data.get("version") != VERSION:
        raise RecordingError(f"{path}: recording version {data.get('version')!r}; this pylockdep reads {VERSION}")
    return data


def merge_files(paths: Iterable[str]) -> tuple[MergedGraph, list[Report]]:
    """Merge the recordings in ``paths``; the merged graph and a ``circular`` report for every cycle
    that no single recording holds whole (each recording is named by its ``source``, else its path)."""
    merged = MergedGraph()
    for path in paths:
        data = load(path)
        merged.add(data.get("source") or path, data["graph"])
    return merged, union_cycles(merged)


def union_cycles(merged: MergedGraph) -> list[Report]:
    """A report for each cycle of ``merged`` that no single source saw all of, judged as one
    process would judge it: not one that a single loop made alone (:func:`check_loop_order`), nor
    one that gates close (:func:`check_gated`), as if the sources had run in one process."""
    reports = []
    for cycle in strong_cycles(merged.graph):
        common = set(merged.edge_sources[cycle[0]].sources)
        for edge in cycle[1:]:
            common &= set(merged.edge_sources[edge].sources)
        made = [(edge.prev, edge.held_ever) for edge in cycle]
        if common or check_loop_order([edge.loop for edge in cycle]) or check_gated([e.guards for e in cycle], made):
            continue
        reports.append(cycle_report(merged, cycle))
    return reports
