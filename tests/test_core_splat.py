"""The text of the core's splats, line by line, in the kernel's layout (reference/lockdep.md section 2)."""

from __future__ import annotations

import re
import threading
import traceback

import pylockdep
from pylockdep import Mutex

CPU1 = " " * 31
SITE = r"\S+\+\S+:\d+"  # function+file:line


def mutexes(*names: str) -> list[Mutex]:
    """One Mutex per name, all made at this line: same name, same class."""
    return [Mutex(name) for name in names]


def hline(name: str, function: str) -> str:
    """A held-lock line of a process-context mutex, as a regex."""
    return rf"[0-9a-f]{{16}} \({re.escape(name)}\)\{{\+\.\+\.\}}-\{{4:4\}}, at: {function}\+\S+:\d+"


def take_ab(a: Mutex, b: Mutex) -> None:
    with a, b:
        pass


def take_ba(b: Mutex, a: Mutex) -> None:
    with b, a:
        pass


def test_circular_splat_layout():
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        take_ab(a, b)
        take_ba(b, a)
    (report,) = v.reports
    comm = f"{threading.current_thread().name}/{threading.get_ident()}"
    lines = report.text.splitlines()
    assert lines[:2] == ["=" * 54, "WARNING: possible circular locking dependency detected"]
    assert lines[2].startswith("pylockdep ") and lines[2].endswith(" Not tainted")
    assert lines[3] == "-" * 54
    assert lines[4] == f"{comm} is trying to acquire lock:"
    assert re.fullmatch(hline("A", "take_ba"), lines[5])
    assert lines[6:8] == ["", "but task is already holding lock:"]
    assert re.fullmatch(hline("B", "take_ba"), lines[8])
    assert lines[9:14] == [
        "",
        "which lock already depends on the new lock.",
        "",
        "",
        "the existing dependency chain (in reverse order) is:",
    ]
    text = report.text
    chain = text.split("the existing dependency chain (in reverse order) is:\n", 1)[1]
    chain = chain.split("\nother info that might help us debug this:", 1)[0]
    entries = chain.strip("\n").split("\n\n")
    assert [e.splitlines()[0] for e in entries] == ["-> #1 (B){+.+.}-{4:4}:", "-> #0 (A){+.+.}-{4:4}:"]
    # Each entry shows the stack where the dependency into it was made, indented by 7 spaces.
    first_entry = [e for e in entries if e.startswith("-> #1")][0].splitlines()[1:]
    assert all(line.startswith(" " * 7) for line in first_entry)
    assert any(line.strip().startswith("take_ab+") for line in first_entry)
    last_entry = [e for e in entries if e.startswith("-> #0")][0].splitlines()[1:]
    assert last_entry[0].strip().startswith("take_ba+")
    assert "Chain exists of:" not in text
    scenario = (
        "other info that might help us debug this:\n\n"
        " Possible unsafe locking scenario:\n\n"
        "       CPU0                    CPU1\n"
        "       ----                    ----\n"
        "  lock(B);\n"
        f"{CPU1}lock(A);\n"
        f"{CPU1}lock(B);\n"
        "  lock(A);\n\n"
        " *** DEADLOCK ***\n\n"
        f"1 lock held by {comm}:\n"
    )
    assert scenario in text
    held = text.split(f"1 lock held by {comm}:\n", 1)[1].splitlines()
    assert re.fullmatch(" #0: " + hline("B", "take_ba"), held[0])
    assert held[1:6] == [
        "",
        "stack backtrace:",
        f"CPU: 0 UID: 0 PID: {threading.get_ident()} Comm: "
        f"{threading.current_thread().name} Not tainted {lines[2].split(' Python')[0]}",
        "Call Trace:",
        " <TASK>",
    ]
    assert re.fullmatch(" take_ba" + r"\+\S+:\d+", held[6])
    assert held[-1] == " </TASK>"


def test_call_traces_under_pytest_leave_out_pytest_and_end_with_the_test_function():
    test = "test_call_traces_under_pytest_leave_out_pytest_and_end_with_the_test_function"
    assert any("_pytest" in f.filename for f in traceback.extract_stack())  # pytest is running this test
    a, b = mutexes("A", "B")
    with pylockdep.validate(raise_on_report=False) as v:
        take_ab(a, b)
        take_ba(b, a)
    (report,) = v.reports
    chain = report.text.split("the existing dependency chain (in reverse order) is:\n", 1)[1]
    edge_stacks, backtrace = chain.split("other info that might help us debug this:", 1)
    stacks = [entry.splitlines()[1:] for entry in edge_stacks.strip("\n").split("\n\n")]
    stacks.append(backtrace.split(" <TASK>\n", 1)[1].split("\n </TASK>", 1)[0].splitlines())
    stacks = [[line.strip() for line in stack if re.fullmatch(rf"\s+{SITE}", line)] for stack in stacks]
    assert [(stack[0].partition("+")[0], stack[-1].partition("+")[0]) for stack in stacks] == [
        ("take_ab", test),
        ("take_ba", test),
        ("take_ba", test),
    ]
    assert not [site for stack in stacks for site in stack if "_pytest/" in site or "pluggy/" in site]


def test_circular_splat_names_the_chain_for_three_classes():
    a, b, c = mutexes("A", "B", "C")
    with pylockdep.validate(raise_on_report=False) as v:
        take_ab(a, b)
        take_ab(b, c)
        take_ab(c, a)
    (report,) = v.reports
    text = report.text
    assert "\n\nChain exists of:\n  A --> B --> C\n\n Possible unsafe locking scenario:" in text
    assert f"  lock(C);\n{CPU1}lock(B);\n{CPU1}lock(C);\n  lock(A);\n" in text
    assert re.search(r"\n-> #2 \(C\)\{\+\.\+\.\}-\{4:4\}:\n", text)
    assert [int(n) for n in re.findall(r"^-> #(\d+) ", text, re.M)] == [2, 1, 0]


def test_circular_splat_with_a_reader_says_rlock():
    """A reader held (or taken) prints as rlock( in the scenario; the other CPU always says lock(."""
    r, m = pylockdep.RWSemaphore("R"), pylockdep.Mutex("M")
    with pylockdep.validate(raise_on_report=False) as v:
        r.down_read()
        m.lock()
        m.unlock()
        r.up_read()
        m.lock()
        r.down_read()
        r.up_read()
        m.unlock()
    (report,) = v.reports
    assert f"  lock(M);\n{CPU1}lock(R);\n{CPU1}lock(M);\n  rlock(R);\n" in report.text


def test_recursive_splat_layout():
    x1, x2 = mutexes("X", "X")
    with pylockdep.validate(raise_on_report=False) as v:
        take_ab(x1, x2)
    (report,) = v.reports
    lines = report.text.splitlines()
    assert lines[:2] == ["=" * 44, "WARNING: possible recursive locking detected"]
    assert lines[3] == "-" * 44
    assert re.fullmatch(hline("X", "take_ab"), lines[5])
    assert re.fullmatch(hline("X", "take_ab"), lines[8])
    assert lines[5][:16] == f"{id(x2):016x}" and lines[8][:16] == f"{id(x1):016x}"
    assert (
        "other info that might help us debug this:\n Possible unsafe locking scenario:\n\n"
        "       CPU0\n       ----\n  lock(X);\n  lock(X);\n\n *** DEADLOCK ***\n\n"
        " May be due to missing lock nesting notation\n\n1 lock held by "
    ) in report.text
    assert "\n\nstack backtrace:\n" in report.text


def test_bad_unlock_splat_layout():
    (a,) = mutexes("A")
    with pylockdep.validate(raise_on_report=False) as v:
        a.lock()
        a.unlock()
        a.unlock()
    (report,) = v.reports
    lines = report.text.splitlines()
    comm = f"{threading.current_thread().name}/{threading.get_ident()}"
    assert lines[:2] == ["=" * 37, "WARNING: bad unlock balance detected!"]
    assert lines[3] == "-" * 37
    assert lines[4] == f"{comm} is trying to release lock (A) at:"
    assert re.fullmatch(r"\[<[0-9a-f]{16}>\] " + SITE, lines[5])
    assert lines[6:10] == [
        "but there are no more locks to release!",
        "",
        "other info that might help us debug this:",
        f"no locks held by {comm}.",
    ]
    assert lines[10:12] == ["", "stack backtrace:"]


def test_the_version_is_written_once():
    import importlib.metadata
    from pathlib import Path

    from pylockdep import _splat

    assert importlib.metadata.version("pylockdep") == pylockdep.__version__
    assert _splat.VERSION == f"pylockdep {pylockdep.__version__}"
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "pylockdep._version.__version__" }' in pyproject
    assert pyproject.count(f'"{pylockdep.__version__}"') == 0
