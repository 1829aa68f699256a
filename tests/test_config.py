"""[tool.pylockdep], suppressions and baselines, in the CLI and the plugin (API.md, "Suppressions")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _abba import ABBA_PROGRAM

import pylockdep
from pylockdep._config import Config, ConfigError, find, load
from pylockdep._report import Report
from pylockdep._suppress import Baseline, Suppression, Suppressions, write_baseline

pytestmark = pytest.mark.timeout(120)

SUPPRESS_ABBA = """\
[tool.pylockdep]
max-lock-depth = 64

[[tool.pylockdep.suppress]]
kind = "circular"
classes = ["*@abba.py:*"]
reason = "known"
"""


def report(kind: str, *classes: str, sites: tuple[str, ...] = ()) -> Report:
    return Report(kind=kind, title="t", text="t", classes=classes, sites=sites)


def pylockdep_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pylockdep", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=100
    )


# -- the configuration file ------------------------------------------------------------------


def test_the_nearest_pyproject_with_the_table_is_found_from_the_working_directory_up(tmp_path):
    (tmp_path / "pyproject.toml").write_text(SUPPRESS_ABBA)
    inner = tmp_path / "pkg" / "sub"
    inner.mkdir(parents=True)
    (tmp_path / "pkg" / "pyproject.toml").write_text("[tool.other]\nx = 1\n")  # no table: skipped
    assert find(str(inner)) == str(tmp_path / "pyproject.toml")
    config = load(start=str(inner))
    assert config.options == {"max_lock_depth": 64}
    assert config.suppress == (Suppression("circular", ("*@abba.py:*",), "known"),)


def test_without_a_file_the_configuration_is_empty(tmp_path):
    assert find(str(tmp_path)) is None
    assert load(start=str(tmp_path)) == Config()


def test_a_named_file_may_be_a_plain_table_and_the_baseline_is_relative_to_it(tmp_path):
    (tmp_path / "lockdep.toml").write_text('preempt_rt = true\nbaseline = "known.json"\n')
    config = load(str(tmp_path / "lockdep.toml"))
    assert config.options == {"preempt_rt": True}
    assert config.baseline == str(tmp_path / "known.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tool.pylockdep]\nmax_clases = 3\n", "max_clases: unknown key"),
        ("[tool.pylockdep]\npreempt_rt = 1\n", "preempt_rt must be True or False"),
        ("[tool.pylockdep]\nmax_classes = 0\n", "max_classes must be a positive integer"),
        ('[[tool.pylockdep.suppress]]\nkind = "circle"\nclasses = ["*"]\n', "kind must be one of"),
        ('[[tool.pylockdep.suppress]]\nkind = "circular"\nclasses = []\n', "non-empty list"),
        ('[[tool.pylockdep.suppress]]\nkind = "circular"\nclass = ["x"]\n', "unknown key(s) class"),
        ("[tool.pylockdep\n", "cannot read it"),
    ],
)
def test_mistakes_are_errors_naming_the_file_and_key(tmp_path, text, message):
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load(str(tmp_path / "pyproject.toml"))
    assert message in str(info.value) and str(tmp_path / "pyproject.toml") in str(info.value)


# -- suppressions and the baseline -----------------------------------------------------------


def test_a_suppression_needs_every_class_of_the_report_to_match():
    mine = Suppression("circular", ("*readerwriterlock/rwlock.py:*",))
    assert mine.matches(report("circular", "Lock@readerwriterlock/rwlock.py:30", "Lock@readerwriterlock/rwlock.py:31"))
    assert not mine.matches(report("circular", "Lock@readerwriterlock/rwlock.py:30", "Lock@app.py:9"))
    assert not mine.matches(report("recursive", "Lock@readerwriterlock/rwlock.py:30"))
    assert Suppression("*", ("*rwlock.py:*",)).matches(report("recursive", "Lock@readerwriterlock/rwlock.py:30"))


def test_a_report_without_classes_is_matched_on_its_sites():
    entry = Suppression("sleep_in_atomic", ("app.py:*",))
    assert entry.matches(report("sleep_in_atomic", sites=("app.py:12",)))
    assert not entry.matches(report("sleep_in_atomic", sites=("lib.py:12",)))
    assert not entry.matches(report("sleep_in_atomic"))
    assert Suppression("sleep_in_atomic", ("*",)).matches(report("sleep_in_atomic"))


def test_a_baseline_round_trips_by_kind_and_classes_in_any_order(tmp_path):
    path = str(tmp_path / "baseline.json")
    assert write_baseline(path, [report("circular", "B", "A"), report("circular", "A", "B")]) == 1
    baseline = Baseline.read(path)
    assert report("circular", "A", "B") in baseline
    assert report("recursive", "A", "B") not in baseline
    assert report("circular", "A", "C") not in baseline
    assert Baseline.read(str(tmp_path / "missing.json")).known == set()
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ConfigError, match="not a pylockdep baseline"):
        Baseline.read(str(tmp_path / "bad.json"))


def test_the_validator_keeps_a_suppressed_report_apart_flagged_and_unprinted():
    seen = []
    with pylockdep.validate(raise_on_report=True) as v:  # a suppressed report does not raise
        v.suppress = Suppressions((Suppression("circular", ("A", "B")),))
        v.listeners.append(seen.append)
        a, b = pylockdep.Mutex("A"), pylockdep.Mutex("B")
        with a, b:
            pass
        with b, a:
            pass
    assert v.reports == []
    (silenced,) = v.suppressed
    assert silenced.kind == "circular" and silenced.suppressed
    assert silenced.suppressed_by == "suppress: circular [A, B]"
    assert seen == [silenced] and silenced.as_dict()["suppressed"] is True


# -- the command line ------------------------------------------------------------------------


def test_cli_suppression_from_pyproject_silences_counts_and_keeps_the_json(tmp_path):
    (tmp_path / "abba.py").write_text(ABBA_PROGRAM)
    (tmp_path / "pyproject.toml").write_text(SUPPRESS_ABBA)
    result = pylockdep_run("--json", "out.jsonl", "abba.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    assert "1 report(s) suppressed" in result.stderr
    assert "circular: a@abba.py:" in result.stderr and "(suppress: circular [*@abba.py:*]: known)" in (result.stderr)
    (line,) = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(line)["suppressed"] is True


def test_cli_config_option_names_the_file_and_a_bad_one_is_a_usage_error(tmp_path):
    (tmp_path / "abba.py").write_text(ABBA_PROGRAM)
    (tmp_path / "mine.toml").write_text(SUPPRESS_ABBA)
    assert pylockdep_run("--config", "mine.toml", "abba.py", cwd=tmp_path).returncode == 0
    assert pylockdep_run("abba.py", cwd=tmp_path).returncode == 66  # no file found: reported
    (tmp_path / "bad.toml").write_text("[tool.pylockdep]\nnope = 1\n")
    result = pylockdep_run("--config", "bad.toml", "abba.py", cwd=tmp_path)
    assert result.returncode == 2 and "nope: unknown key" in result.stderr


def test_cli_baseline_reports_only_what_is_new(tmp_path):
    (tmp_path / "abba.py").write_text(ABBA_PROGRAM)
    first = pylockdep_run("--write-baseline", "base.json", "abba.py", cwd=tmp_path)
    assert first.returncode == 66 and "1 report(s) written to the baseline" in first.stderr
    again = pylockdep_run("--baseline", "base.json", "abba.py", cwd=tmp_path)
    assert again.returncode == 0 and "WARNING" not in again.stderr, again.stderr
    assert "(baseline)" in again.stderr
    # A new cycle (c, d) is still reported; the known one stays silent.
    (tmp_path / "abba.py").write_text(
        ABBA_PROGRAM + "c = threading.Lock()\nd = threading.Lock()\ntake_ab_then_ba(c, d)\n"
    )
    c_line = ABBA_PROGRAM.count("\n") + 1
    new = pylockdep_run("--baseline", "base.json", "--json", "new.jsonl", "abba.py", cwd=tmp_path)
    assert new.returncode == 66
    found = [json.loads(x) for x in (tmp_path / "new.jsonl").read_text().splitlines()]
    assert sorted((r["suppressed"], tuple(sorted(r["classes"]))) for r in found) == [
        (False, (f"c@abba.py:{c_line}", f"d@abba.py:{c_line + 1}")),
        (True, ("a@abba.py:2", "b@abba.py:3")),
    ]


# -- the pytest plugin -----------------------------------------------------------------------

ABBA_TESTS = """\
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


def test_plugin_reads_the_table_and_a_suppressed_report_fails_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA_TESTS)
    pytester.makepyprojecttoml(
        '[tool.pylockdep]\n[[tool.pylockdep.suppress]]\nkind = "circular"\nclasses = ["*@test_abba.py:*"]\n'
    )
    result = pytester.runpytest("--lockdep", "--lockdep-threading", "--lockdep-json=out.jsonl", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*1 report(s) suppressed:*", "*circular: *@test_abba.py:*"])
    (line,) = (pytester.path / "out.jsonl").read_text().splitlines()
    assert json.loads(line)["suppressed"] is True


def test_plugin_baseline_written_then_read(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_abba=ABBA_TESTS)
    first = pytester.runpytest("--lockdep", "--lockdep-threading", "--lockdep-write-baseline=base.json")
    first.assert_outcomes(passed=1, failed=1)
    assert json.loads((pytester.path / "base.json").read_text())["reports"][0]["kind"] == "circular"
    again = pytester.runpytest("--lockdep", "--lockdep-threading", "--lockdep-baseline=base.json")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["*(baseline)*"])


def test_plugin_bad_configuration_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.makepyprojecttoml("[tool.pylockdep]\npreempt = true\n")
    result = pytester.runpytest("--lockdep")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*preempt: unknown key*"])


RWLOCK_LIBRARY = """\
import threading

class RWLockRead:
    def __init__(self):
        self.c_resource = threading.Lock()
        self.c_lock_read_count = threading.Lock()
        self.v_read_count = 0

    def acquire_read(self):
        with self.c_lock_read_count:
            self.v_read_count += 1
            if self.v_read_count == 1:
                self.c_resource.acquire()

    def release_read(self):
        with self.c_lock_read_count:
            self.v_read_count -= 1
            if self.v_read_count == 0:
                self.c_resource.release()
"""


def test_the_apis_readers_writers_suppression_silences_a_single_threaded_counter(tmp_path):
    """The first reader takes the resource lock under the counter's lock and the last one releases it
    under it again: one thread alone shows both orders, which no order graph can see through."""
    (tmp_path / "readerwriterlock").mkdir()
    (tmp_path / "readerwriterlock" / "__init__.py").write_text("")
    (tmp_path / "readerwriterlock" / "rwlock.py").write_text(RWLOCK_LIBRARY)
    (tmp_path / "reader.py").write_text(
        "from readerwriterlock.rwlock import RWLockRead\nl = RWLockRead()\nl.acquire_read()\nl.release_read()\n"
    )
    assert pylockdep_run("reader.py", cwd=tmp_path).returncode == 66
    (tmp_path / "pyproject.toml").write_text(
        '[[tool.pylockdep.suppress]]\nkind = "circular"\nclasses = ["*readerwriterlock/rwlock.py:*"]\n'
    )
    result = pylockdep_run("reader.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 report(s) suppressed" in result.stderr
