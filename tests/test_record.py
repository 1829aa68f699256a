"""Recorded lock graphs and ``pylockdep merge``: a cycle split across runs is found in their union."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pylockdep import _record

PROGRAM = """\
import sys, threading
a = threading.Lock()
b = threading.Lock()
if sys.argv[1] == "ab":
    with a, b:
        pass
elif sys.argv[1] == "ba":
    with b, a:
        pass
else:
    with a, b:
        pass
    with b, a:
        pass
"""

CIRCULAR = "WARNING: possible circular locking dependency detected"


def pylockdep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pylockdep", *args], cwd=cwd, capture_output=True, text=True, timeout=100
    )


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """Two runs of one program, one taking a then b, the other b then a: neither sees a cycle."""
    (tmp_path / "prog.py").write_text(PROGRAM)
    assert pylockdep("run", "--record", "job1.json", "prog.py", "ab", cwd=tmp_path).returncode == 0
    assert pylockdep("run", "--record", "job2.json.gz", "prog.py", "ba", cwd=tmp_path).returncode == 0
    return tmp_path


def test_recording_is_versioned_data_with_stable_class_names(recorded: Path) -> None:
    data = _record.load(str(recorded / "job1.json"))
    assert (data["format"], data["version"], data["source"]) == ("pylockdep-graph", 1, "job1.json")
    names = sorted(c["name"] for c in data["graph"]["classes"])
    assert names == ["a@prog.py:2", "b@prog.py:3"]
    (edge,) = data["graph"]["edges"]
    assert edge["stack"] == ["<module>+prog.py:5"]


def test_merge_reports_the_cycle_only_the_union_shows_naming_each_run(recorded: Path) -> None:
    result = pylockdep("merge", "--json", "cycles.jsonl", "job1.json", "job2.json.gz", cwd=recorded)
    assert result.returncode == 66
    assert result.stderr.count(CIRCULAR) == 1
    assert "merged graph of job1.json, job2.json.gz" in result.stderr
    assert "[job1.json, thread MainThread/" in result.stderr and "<module>+prog.py:5" in result.stderr
    assert "[job2.json.gz, thread MainThread/" in result.stderr and "<module>+prog.py:8" in result.stderr
    assert "1 cycle(s) that no single run saw" in result.stderr
    (report,) = [json.loads(line) for line in (recorded / "cycles.jsonl").read_text().splitlines()]
    assert report["kind"] == "circular" and sorted(report["classes"]) == ["a@prog.py:2", "b@prog.py:3"]


def test_merge_leaves_a_cycle_one_run_saw_whole_to_that_run(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(PROGRAM)
    alone = pylockdep("run", "--record", "both.json", "prog.py", "both", cwd=tmp_path)
    assert alone.returncode == 66 and CIRCULAR in alone.stderr  # that run reported it itself
    pylockdep("run", "--record", "ab.json", "prog.py", "ab", cwd=tmp_path)
    result = pylockdep("merge", "both.json", "ab.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert CIRCULAR not in result.stderr


GATED = """\
import sys, threading
class Gate:
    def __init__(self):
        self.lock = threading.Lock()
gate = Gate().lock
if "again" in sys.argv:
    spare = Gate()  # a second lock of the gate's class, alive with the first: no gate
a = threading.Lock()
b = threading.Lock()
first, second = (a, b) if sys.argv[1] == "ab" else (b, a)
with gate, first, second:
    pass
"""


def test_merge_judges_a_cycle_as_one_process_would_where_gates_close_it(tmp_path: Path) -> None:
    """Each run took a and b under the one lock of the gate's class: run in one process, the two
    orders could not deadlock, and merged they are not reported, unless a run had two gates."""
    (tmp_path / "gated.py").write_text(GATED)
    for job, args in (("ab", ["ab"]), ("ba", ["ba"]), ("ba-again", ["ba", "again"])):
        assert pylockdep("run", "--record", f"{job}.json", "gated.py", *args, cwd=tmp_path).returncode == 0
    gated = pylockdep("merge", "ab.json", "ba.json", cwd=tmp_path)
    assert gated.returncode == 0 and CIRCULAR not in gated.stderr, gated.stderr
    not_gated = pylockdep("merge", "ab.json", "ba-again.json", cwd=tmp_path)
    assert not_gated.returncode == 66 and not_gated.stderr.count(CIRCULAR) == 1, not_gated.stderr
    assert "(a@gated.py:8)" in not_gated.stderr and "(b@gated.py:9)" in not_gated.stderr
    for job in ("ab", "ba"):  # a recording without gates and guards (an older version's) is not gated
        data = json.loads((tmp_path / f"{job}.json").read_text())
        for edge in data["graph"]["edges"]:
            del edge["guards"]
        (tmp_path / f"old-{job}.json").write_text(json.dumps(data))
    old = pylockdep("merge", "old-ab.json", "old-ba.json", cwd=tmp_path)
    assert old.returncode == 66 and old.stderr.count(CIRCULAR) == 1, old.stderr


LOGURU = """\
import queue, sys, threading
class Core:
    def __init__(self):
        self.lock = threading.Lock()
core = Core().lock
lk = threading.Lock()
ql = threading.Lock()
messages = queue.SimpleQueue()
def writer():
    while messages.get() is not None:
        with ql:
            pass
writing = threading.Thread(target=writer)
writing.start()
messages.put("message")
if sys.argv[1] == "fork-hook":
    with core, ql, lk:
        pass
    messages.put(None)
    writing.join()
else:
    with core, lk:
        messages.put(None)
        writing.join()
"""


def test_merge_judges_a_share_of_a_cycle_by_the_locks_held_when_each_part_was_made(tmp_path: Path) -> None:
    """loguru's fork hook (ql, then lk, under the global lock) in one run, its remove() (lk, under
    that lock, joining the writer that takes ql) in another: one process could not deadlock there,
    as no thread held ql while it joined the writer, and the merge says so.  A recording that does
    not say what its dependencies were ever made holding (an older version's) is not judged so."""
    (tmp_path / "loguru.py").write_text(LOGURU)
    for job in ("fork-hook", "remove"):
        assert pylockdep("run", "--record", f"{job}.json", "loguru.py", job, cwd=tmp_path).returncode == 0
    merged = pylockdep("merge", "fork-hook.json", "remove.json", cwd=tmp_path)
    assert merged.returncode == 0 and CIRCULAR not in merged.stderr, merged.stderr
    data = json.loads((tmp_path / "remove.json").read_text())
    for edge in data["graph"]["edges"]:
        del edge["held_ever"]
    (tmp_path / "old-remove.json").write_text(json.dumps(data))
    old = pylockdep("merge", "fork-hook.json", "old-remove.json", cwd=tmp_path)
    assert old.returncode == 66 and old.stderr.count(CIRCULAR) == 1, old.stderr


LOOP = """\
import sys, threading
a = threading.Lock()
b = threading.Lock()
locks = [a, b] if sys.argv[1] == "ab" else [b, a]
for lock in locks:
    lock.acquire()
for lock in reversed(locks):
    lock.release()
"""


def test_merge_leaves_out_a_cycle_that_one_loop_made_alone(tmp_path: Path) -> None:
    """A loop that takes a registry's locks in the registry's order, which differs between runs."""
    (tmp_path / "loop.py").write_text(LOOP)
    for order in ("ab", "ba"):
        assert pylockdep("run", "--record", f"{order}.json", "loop.py", order, cwd=tmp_path).returncode == 0
    (edge,) = _record.load(str(tmp_path / "ab.json"))["graph"]["edges"]
    assert edge["loop"] == "loop.py:<module>:6"  # the program's name as it was run
    merged = pylockdep("merge", "ab.json", "ba.json", cwd=tmp_path)
    assert merged.returncode == 0 and CIRCULAR not in merged.stderr, merged.stderr


def test_merge_exit_code_and_pictures(recorded: Path) -> None:
    result = pylockdep(
        "merge", "--exit-code", "9", "--dot", "m.dot", "--html", "m.html", "job1.json", "job2.json.gz", cwd=recorded
    )
    assert result.returncode == 9
    assert (recorded / "m.dot").read_text().count(" color=red") == 2
    assert CIRCULAR in (recorded / "m.html").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json", "cannot read a recording"), ('{"format": "other"}', "not a pylockdep recording")],
)
def test_merge_of_something_else_is_a_usage_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    result = pylockdep("merge", "bad.json", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_newer_recording_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "new.json").write_text(json.dumps({"format": "pylockdep-graph", "version": 2, "graph": {}}))
    result = pylockdep("merge", "new.json", cwd=tmp_path)
    assert result.returncode == 2 and "recording version 2" in result.stderr


def test_plugin_records_sessions_that_merge_into_a_cycle(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_locks="""
        import threading
        a = threading.Lock()
        b = threading.Lock()

        def test_ab():
            with a, b:
                pass

        def test_ba():
            with b, a:
                pass
        """
    )
    quiet = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--lockdep", "--lockdep-threading")
    for name in ("ab", "ba"):
        result = pytester.runpytest_subprocess(*quiet, "-k", f"test_{name}", f"--lockdep-record=shard-{name}.json")
        result.assert_outcomes(passed=1, deselected=1)
        result.stdout.fnmatch_lines([f"lock graph (recording) written to shard-{name}.json"])
    merged = pylockdep("merge", "shard-ab.json", "shard-ba.json", cwd=pytester.path)
    assert merged.returncode == 66 and CIRCULAR in merged.stderr
    assert "in test_locks.py::test_ab, shard-ab.json" in merged.stderr


def test_record_graph_writes_a_validate_blocks_graph(tmp_path: Path) -> None:
    import threading

    from _abba import take_ab_then_ba

    import pylockdep

    with pylockdep.validate(raise_on_report=False) as v, pylockdep.instrument_threading():
        a, b = threading.Lock(), threading.Lock()
        take_ab_then_ba(a, b)
    pylockdep.record_graph(str(tmp_path / "block.json.gz"), v)
    data = _record.load(str(tmp_path / "block.json.gz"))
    assert data["source"] == "block.json.gz"
    locks = {c["id"] for c in data["graph"]["classes"] if c["type"] == "threading.Lock"}
    assert len(locks) == 2
    between = [e for e in data["graph"]["edges"] if {e["prev"], e["next"]} == locks]
    assert len(between) == 2  # a -> b and b -> a


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5,), "expected str, bytes or os.PathLike object, not int"),
        ((b"g.json",), r"record_graph\(\) needs a file name \(str\), not bytes"),
        (("g.json", 5), r"record_graph\(\) records a pylockdep.Validator, not int"),
        (("g.json", None, 5), "source must be a str or None, not int"),
    ],
)
def test_record_graph_refuses_wrong_arguments_before_touching_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple, message: str
) -> None:
    """A number as path or validator failed with AttributeError, the second after emptying the file."""
    import pylockdep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.json").write_text("kept")
    with pytest.raises(TypeError, match=f"^{message}$"):
        pylockdep.record_graph(*args)
    assert (tmp_path / "g.json").read_text() == "kept"
    pylockdep.record_graph(tmp_path / "g.json")  # a path object is a file name too
    assert _record.load(str(tmp_path / "g.json"))["source"] == "g.json"
