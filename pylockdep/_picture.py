"""Pictures of a lock graph: Graphviz DOT with a legend, SVG through Graphviz, and an HTML page.

:func:`graph_to_dot` draws one box per lock class (its name, and its type and creation site when
the name does not already say them), coloured by what kind of lock it is, and one arrow per
dependency ``A -> B`` ("B was taken while A was held"), labelled with lockdep's dependency kinds
and drawn red when it lies on a cycle.  A legend explains labels and colours.  :func:`dot_to_svg`
runs Graphviz's ``dot`` program (only when asked for: nothing is imported or started otherwise);
:func:`html_page` puts the graph next to the splats in one self-contained page, the file people
open from a CI run's artifacts.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from collections.abc import Iterable
from contextlib import nullcontext
from typing import IO, TYPE_CHECKING

from ._classes import LockClass
from ._export import MergedGraph, strong_cycles
from ._frames import format_file_line

if TYPE_CHECKING:
    from ._validator import Validator

# How each family of lock looks: (legend text, fill colour, extra node attributes).
_STYLES = {
    "raw": ("raw spinning lock (raw_spinlock_t)", "#f6c7a5", "penwidth=2"),
    "spin": ("spinning lock (spinlock_t, rwlock_t)", "#fde3cc", ""),
    "sleep": ("sleeping lock (mutex, rw_semaphore)", "#d5e5f5", ""),
    "python": ("Python lock (threading.Lock, RLock)", "#dcefd3", ""),
    "rcu": ("RCU / SRCU read side", "#e8dcf2", 'style="rounded,filled"'),
    "wait": ("wait for other work (thread, future, queue)", "#eeeeee", 'shape=ellipse, style="dashed,filled"'),
    "other": ("other lock", "#ffffff", ""),
}
_LEGEND_EDGES = [
    "A -> B: B was taken while A was held (so A is ordered before B)",
    "label: how A was held, then how B was taken",
    "  E = A held exclusively (lock, write side), S = held shared (read side)",
    "  N = B taken normally, R = B taken as a recursive read",
    "  several kinds seen: joined by |, e.g. SR|EN",
    "red, bold: on a cycle, a possible deadlock (the 'circular' report)",
]


def lock_family(cls: LockClass) -> str:
    """Which entry of the legend draws ``cls``: ``raw``, ``spin``, ``sleep``, ``python``, ``rcu``,
    ``wait`` (pseudo-locks standing for waited-for work, named ``(kind)...``) or ``other``."""
    ltype = cls.ltype
    name = ltype.name
    if getattr(ltype, "pseudo", False) or cls.name.startswith("("):
        return "wait"
    if name.startswith("threading.") or name.startswith("asyncio."):
        return "python"
    if name == "raw_spinlock_t":
        return "raw"
    if "rcu" in name:
        return "rcu"
    if ltype.spins:
        return "spin"
    if ltype.sleeps:
        return "sleep"
    return "other"


def graph_to_dot(source: Validator | MergedGraph, title: str = "") -> str:
    """The graph in Graphviz DOT, with a legend for the colours and labels it uses.

    Each node carries ``id="class_N"`` (N the class's id) and each edge a tooltip naming who made
    it first (the test or the worker, and the thread), for the SVG and HTML outputs.
    """
    if isinstance(source, MergedGraph):
        graph, sites = source.graph, source.sites
    else:
        graph = source.graph
        sites = {cls: format_file_line(cls.key.site) if cls.key.site else "" for cls in graph.classes}
    with _graph_lock(source):
        classes = list(graph.classes)
        edges = list(graph.edges())
        on_cycle = {id(e) for cycle in strong_cycles(graph) for e in cycle}
    lines = ["digraph lockdep {", "  nodesep=0.5;", "  ranksep=0.6;"]
    if title:
        lines.append(f'  label="{_escape(title)}"; labelloc=t;')
    lines.append('  node [shape=box, style=filled, fontname="monospace", fontsize=11];')
    lines.append('  edge [fontname="monospace", fontsize=10];')
    families = []
    for cls in classes:
        family = lock_family(cls)
        if family not in families:
            families.append(family)
        _, fill, extra = _STYLES[family]
        attrs = [
            f'label="{_escape(node_label(cls, sites.get(cls, "")))}"',
            f'fillcolor="{fill}"',
            f'id="class_{cls.id}"',
        ]
        if extra:
            attrs.append(extra)
        lines.append(f"  c{cls.id} [{', '.join(attrs)}];")
    for e in edges:
        attrs = [f'label=" {e.kinds} "']
        made = ", ".join(part for part in (e.origin, e.thread and f"thread {e.thread}") if part)
        if made:
            attrs.append(f'tooltip="{_escape(made)}"')
        if id(e) in on_cycle:
            attrs += ["color=red", "fontcolor=red", "penwidth=2", "style=bold"]
        lines.append(f"  c{e.prev.id} -> c{e.next.id} [{', '.join(attrs)}];")
    lines += _legend(families)
    lines.append("}")
    return "\n".join(lines) + "\n"


def node_label(cls: LockClass, site: str) -> str:
    """``name`` then ``type`` and ``site`` on their own lines, each only if the name lacks it."""
    parts = [cls.name]
    if cls.ltype.name not in cls.name:
        parts.append(cls.ltype.name)
    if site and site not in cls.name:
        parts.append(site)
    return "\n".join(parts)


def _legend(families: Iterable[str]) -> list[str]:
    """A legend cluster: one sample node per kind of lock drawn, then what edges mean."""
    lines = ["  subgraph cluster_legend {", '    label="legend"; fontname="monospace"; style=dashed;']
    previous = None
    for family in families:
        text, fill, extra = _STYLES[family]
        attrs = [f'label="{_escape(text)}"', f'fillcolor="{fill}"']
        if extra:
            attrs.append(extra)
        lines.append(f"    legend_{family} [{', '.join(attrs)}];")
        if previous is not None:
            lines.append(f"    legend_{previous} -> legend_{family} [style=invis];")
        previous = family
    edge_text = "".join(_escape(line) + "\\l" for line in _LEGEND_EDGES)
    lines.append(f'    legend_edges [shape=note, style=filled, fillcolor="#ffffff", label="{edge_text}"];')
    if previous is not None:
        lines.append(f"    legend_{previous} -> legend_edges [style=invis];")
    lines.append("  }")
    return lines


def _escape(text: str) -> str:
    """``text`` as the contents of a DOT string (line breaks become centred ``\\n``)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _graph_lock(source: object):
    """The validator's graph lock, or nothing for a merged graph (owned by its caller)."""
    lock = getattr(source, "graph_lock", None)
    return lock if lock is not None else nullcontext()


def graphviz() -> str | None:
    """The path of Graphviz's ``dot`` program, or None when it is not installed."""
    return shutil.which("dot")


def dot_to_svg(dot: str) -> str:
    """Lay ``dot`` out as SVG with Graphviz's ``dot`` program (:func:`graphviz` must find it).

    Raises :class:`RuntimeError` with Graphviz's message if it fails.
    """
    program = graphviz()
    if program is None:
        raise RuntimeError("Graphviz's dot program is not installed (apt-get install graphviz)")
    done = subprocess.run([program, "-Tsvg"], input=dot, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dot -Tsvg failed: {done.stderr.strip()}")
    svg = done.stdout
    return svg[svg.find("<svg") :] if "<svg" in svg else svg  # drop the XML prologue for inlining


def html_page(dot: str, reports: list[dict], title: str, class_ids: dict[str, list[int]]) -> str:
    """A self-contained page: the graph (SVG when Graphviz is installed, else its DOT source) next
    to every report's splat.  ``reports`` are ``Report.as_dict()`` dicts; ``class_ids`` maps a
    bare class name to the ids of its nodes, so that pointing at a report highlights its locks."""
    try:
        picture = dot_to_svg(dot)
    except RuntimeError as exc:
        picture = f"<p class='note'>{html.escape(str(exc))}; the graph's DOT source:</p><pre>{html.escape(dot)}</pre>"
    shown = [r for r in reports if not r.get("suppressed")]
    items = []
    for i, r in enumerate(shown):
        nodes = sorted({n for name in r.get("classes", []) for n in class_ids.get(name, [])})
        where = f" <span class='origin'>{html.escape(r['origin'])}</span>" if r.get("origin") else ""
        items.append(
            f"<details open class='report' data-nodes='{json.dumps(nodes)}' id='report-{i}'>"
            f"<summary><b>{html.escape(r['kind'])}</b>: {html.escape(r['title'])}{where}</summary>"
            f"<pre>{html.escape(r['text'])}</pre></details>"
        )
    suppressed = len(reports) - len(shown)
    counts = f"{len(shown)} report(s)" + (f", {suppressed} suppressed" if suppressed else "")
    body = "\n".join(items) if items else "<p>No reports.</p>"
    return _PAGE.format(title=html.escape(title), counts=counts, picture=picture, reports=body)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 0; }}
  header {{ padding: 0.5em 1em; background: #24292f; color: #fff; }}
  main {{ display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1em; padding: 1em; }}
  #graph {{ overflow: auto; border: 1px solid #ddd; }}
  #graph svg {{ max-width: 100%; height: auto; }}
  #reports pre {{ font-size: 12px; overflow: auto; background: #f6f8fa; padding: 0.5em; }}
  .origin {{ color: #57606a; font-size: 90%; }}
  .node.highlight polygon, .node.highlight ellipse {{ stroke: #0969da; stroke-width: 4px; }}
  @media (max-width: 900px) {{ main {{ grid-template-columns: 1fr; }} }}
</style>
</head>
<body>
<header><b>pylockdep</b>: {title} &mdash; {counts}</header>
<main>
<section id="graph">{picture}</section>
<section id="reports">{reports}</section>
</main>
<script>
  // Pointing at a report outlines the locks it names in the graph.
  const nodes = document.querySelectorAll('#graph svg g.node[id^="class_"]');
  document.body.dataset.graphNodes = String(nodes.length);
  for (const report of document.querySelectorAll(".report")) {{
    const ids = JSON.parse(report.dataset.nodes);
    const mark = (on) => {{
      for (const id of ids) {{
        const node = document.getElementById("class_" + id);
        if (node) node.classList.toggle("highlight", on);
      }}
    }};
    report.addEventListener("mouseenter", () => mark(true));
    report.addEventListener("mouseleave", () => mark(false));
  }}
  document.body.dataset.ready = "1";
</script>
</body>
</html>
"""


def write_pictures(
    source: Validator | MergedGraph, reports: list[dict], title: str, outputs: dict[str, IO[str]]
) -> None:
    """Write the pictures ``outputs`` asks for (keys ``dot``, ``svg``, ``html``; open text files)."""
    if not outputs:
        return
    dot = graph_to_dot(source, title)
    if "dot" in outputs:
        outputs["dot"].write(dot)
    if "svg" in outputs:
        outputs["svg"].write(dot_to_svg(dot))
    if "html" in outputs:
        outputs["html"].write(html_page(dot, reports, title, class_ids(source)))


def class_ids(source: Validator | MergedGraph) -> dict[str, list[int]]:
    """Bare class name -> ids of the graph's classes of that name (for :func:`html_page`)."""
    graph = source.graph
    with _graph_lock(source):
        classes = list(graph.classes)
    ids: dict[str, list[int]] = {}
    for cls in classes:
        ids.setdefault(cls.bare_name, []).append(cls.id)
    return ids
