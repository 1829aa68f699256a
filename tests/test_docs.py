"""The documentation stays true: every example program prints the splat shown next to it, and the
API page is the API promise.

An example is named after the kind it reports, with ``-variant`` when a kind has several
(``circular-join.py``).  The splats in ``docs/examples/*.txt`` are made by running ``pylockdep run EXAMPLE.py`` and
normalising what changes from run to run (addresses, thread ids).  After changing a splat's layout
on purpose, regenerate them with ``PYLOCKDEP_REGEN_DOCS=1 python -m pytest tests/test_docs.py``.
Line numbers in CPython's own files differ between versions: the exact comparison runs on the
version the files were made with (3.11), the others check the kind and title.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
PROGRAMS = sorted(EXAMPLES.glob("*.py"))
MADE_WITH = (3, 11)


def run_example(program: Path) -> tuple[int, str]:
    """``pylockdep run`` the example from its directory; its exit status and normalised stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", program.name],
        cwd=program.parent,
        capture_output=True,
        text=True,
        timeout=100,
    )
    return done.returncode, normalise(done.stderr)


def normalise(text: str) -> str:
    """Addresses numbered in order of appearance, thread ids numbered per thread name (a finished
    thread's id may be reused by the next one), the Python version's patch level dropped."""
    addresses: dict[str, str] = {}
    threads: dict[str, str] = {}

    def thread(name: str) -> str:
        return threads.setdefault(name, str(len(threads) + 1))

    text = re.sub(r"\b[0-9a-f]{16}\b", lambda m: addresses.setdefault(m[0], f"ffff8880{len(addresses) + 1:08x}"), text)
    text = re.sub(r"(\S+)/\d{6,}\b", lambda m: f"{m[1]}/{thread(m[1])}", text)
    text = re.sub(r"PID: \d{6,} Comm: (\S+)", lambda m: f"PID: {thread(m[1])} Comm: {m[1]}", text)
    text = re.sub(r"pid: \d{6,}, name: (\S+)", lambda m: f"pid: {thread(m[1])}, name: {m[1]}", text)
    return re.sub(r"Python 3\.\d+\.\d+", "Python 3.x", text)


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_example_prints_the_splat_the_docs_show(program: Path) -> None:
    kind = program.stem.partition("-")[0]
    status, splat = run_example(program)
    expected = program.with_suffix(".txt")
    if os.environ.get("PYLOCKDEP_REGEN_DOCS") == "1":
        expected.write_text(splat)
    assert status == 66, splat
    assert splat.rstrip().endswith(f"pylockdep: 1 report(s): {kind}")
    shown = expected.read_text()
    if sys.version_info[:2] == MADE_WITH:
        assert splat == shown
    else:
        assert [line for line in splat.splitlines() if line.startswith(("WARNING", "BUG", "["))] == [
            line for line in shown.splitlines() if line.startswith(("WARNING", "BUG", "["))
        ]


def test_every_report_kind_has_an_example_and_a_page_section() -> None:
    from pylockdep._report import KINDS

    page = (ROOT / "docs" / "reports.md").read_text()
    shown = {p.stem.partition("-")[0] for p in PROGRAMS}
    for kind in KINDS:
        assert f"`{kind}`" in page, kind
    # Kinds without a program: a capacity limit needs options, asyncio's kind its own feature.
    assert KINDS - shown <= {"limit_exceeded", "scheduling_while_atomic"}


def test_every_example_program_is_included_in_a_page() -> None:
    """Each program is shown through a well-formed snippet line (a formatter that rewrote
    ``--8<-- "x.py"`` as Python would leave the page showing that line instead of the program)."""
    pages = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for program in PROGRAMS:
        assert f'--8<-- "{program.name}"' in pages, program.name
    assert "--8 <" not in pages


def test_the_api_page_is_the_api_promise() -> None:
    promise = ROOT.parent / "shared" / "API.md"
    if not promise.exists():
        pytest.skip("../shared/API.md is not next to this checkout")
    assert (ROOT / "docs" / "api-promise.md").read_text() == promise.read_text()
