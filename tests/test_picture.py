"""Pictures of the lock graph: DOT with a legend, SVG through Graphviz, the HTML page (in a real browser)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pylockdep
from pylockdep import _picture

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)


def abba_with_three_families() -> pylockdep.Validator:
    """A validator whose graph has a Mutex/SpinLock cycle and a threading.Lock after the mutex."""
    m, s = pylockdep.Mutex("m"), pylockdep.SpinLock("s")
    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        plain = threading.Lock()
        with m, s:
            pass
        with s, m:  # sleeping inside a spinlock, and the reverse order: reports, no hang
            pass
        with m, plain:
            pass
    return v


def node_lines(dot: str) -> dict[str, str]:
    """Node id -> its attribute text, for the graph's own nodes (not the legend's)."""
    return dict(re.findall(r"^  (c\d+) \[(.*)\];$", dot, re.M))


def test_dot_has_one_label_per_node_a_legend_and_red_cycle_edges() -> None:
    v = abba_with_three_families()
    dot = _picture.graph_to_dot(v)
    nodes = node_lines(dot)
    assert len(nodes) == 3
    labels = [re.search(r'label="([^"]*)"', attrs).group(1) for attrs in nodes.values()]
    python_label = next(label for label in labels if label.startswith("Lock@"))
    # The creation site is in a Python lock's name: it is not repeated.
    assert python_label == "Lock@test_picture.py:26\\nthreading.Lock"
    assert any(label.startswith("m\\nstruct mutex\\ntest_picture.py:") for label in labels)
    red = sorted(line.split(" [")[0].strip() for line in dot.splitlines() if "color=red" in line)
    m_id, s_id = (cls.id for cls in sorted(v.graph.classes, key=lambda c: c.id)[:2])
    assert red == sorted([f"c{m_id} -> c{s_id}", f"c{s_id} -> c{m_id}"])
    assert "subgraph cluster_legend" in dot and "E = A held exclusively" in dot and "N = B taken normally" in dot
    for family in ("sleep", "spin", "python"):
        assert f"legend_{family} [" in dot
    assert "legend_rcu" not in dot  # only the kinds of lock the graph has
    assert len({re.search(r'fillcolor="([^"]*)"', attrs).group(1) for attrs in nodes.values()}) == 3


def test_pseudo_locks_are_drawn_as_dashed_ellipses() -> None:
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.Mutex("(work_completion)job"), pylockdep.Mutex("lock"):
            pass
    dot = _picture.graph_to_dot(v)
    (pseudo,) = [attrs for attrs in node_lines(dot).values() if "(work_completion)" in attrs]
    assert "shape=ellipse" in pseudo and "dashed" in pseudo
    assert "legend_wait [" in dot


@needs_dot
def test_svg_and_html_outputs_of_pylockdep_run(tmp_path: Path) -> None:
    from _abba import ABBA_PROGRAM

    (tmp_path / "abba.py").write_text(ABBA_PROGRAM)
    done = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", "--svg", "g.svg", "--html", "g.html", "abba.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 66, done.stderr
    svg = (tmp_path / "g.svg").read_text()
    assert svg.startswith("<svg") and "a@abba.py:2" in svg and 'id="class_0"' in svg
    page = (tmp_path / "g.html").read_text()
    assert "<svg" in page and "WARNING: possible circular locking dependency detected" in page


def test_svg_without_graphviz_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text("print('ran')\n")
    env = dict(os.environ, PATH=str(tmp_path))  # no dot on it
    done = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", "--svg", "g.svg", "prog.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
    )
    assert done.returncode == 2 and "needs Graphviz's dot" in done.stderr and "ran" not in done.stdout


def test_html_without_graphviz_shows_the_dot_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_picture, "graphviz", lambda: None)
    v = abba_with_three_families()
    page = _picture.html_page(_picture.graph_to_dot(v), [r.as_dict() for r in v.reports], "t", _picture.class_ids(v))
    assert "Graphviz&#x27;s dot program is not installed" in page and "digraph lockdep {" in page
    assert page.count("<details open class='report'") == len(v.reports) >= 2


@needs_dot
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_page_in_a_headless_browser(tmp_path: Path) -> None:
    v = abba_with_three_families()
    reports = [r.as_dict() for r in v.reports]
    page = tmp_path / "lockdep.html"
    page.write_text(_picture.html_page(_picture.graph_to_dot(v), reports, "browser test", _picture.class_ids(v)))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=100,
    )
    dom = done.stdout
    assert 'data-ready="1"' in dom, done.stderr[-2000:]  # the page's script ran to its end
    # The browser parsed the inline SVG: its script found the three lock classes as graph nodes.
    assert 'data-graph-nodes="3"' in dom
    assert dom.count('class="report"') == len(reports)
    assert "WARNING: possible circular locking dependency detected" in dom
