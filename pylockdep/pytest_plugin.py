"""pytest plugin: one lockdep validator for the whole test session.

Off unless ``pytest --lockdep`` (or the ini option ``lockdep = true``).  When on:

- A fresh validator (:func:`pylockdep.validate`, ``raise_on_report=False``) is in force from the
  start of the session to its end, so its graph keeps every dependency any test taught it, as the
  kernel's graph lives for its uptime.  ``--lockdep-rt`` checks with PREEMPT_RT rules;
  ``--lockdep-threading`` runs the session inside :func:`pylockdep.instrument_threading`, from
  before the initial ``conftest.py`` files are imported: the module-level locks of a library that
  a conftest imports are made instrumented, as under ``pylockdep run``.
- The validator's ``origin`` is the running test's node id during its setup, call and teardown,
  so each dependency (and each report) remembers which test made it; a cycle closed by a later
  test's edge prints the earlier test's id next to the edge it made.
- A report made during a test's setup, call or teardown fails that phase of the test, with the
  whole splat in its failure text.  ``@pytest.mark.lockdep_expect("kind", ...)`` turns that
  around: each kind named must have been reported by the end of the test's call phase, and
  reports of those kinds do not fail it (any other kind still does).  The ``lockdep`` fixture is
  the live list of the reports made during the test.
- Tests that open their own ``pylockdep.validate()`` block are validated by that validator while
  it is in force; its reports are theirs to judge and never reach the session.
  ``@pytest.mark.lockdep_off`` runs a test under whatever validator was in force before the
  session (the process-wide default), as without the plugin: for tests of that default itself.
- Reports made outside every test (while collecting, say) are listed in the summary and make the
  session exit non-zero.  So are the reports that validation holds back until it ends (a cycle
  through a ``threading.Lock`` that may yet prove a hand-off signal): listed under the test that
  made them, which has passed by then.
- The terminal summary counts the reports by kind and the classes and dependencies learned, and
  says so when Python's threading locks are not validated (``--lockdep`` alone checks only
  pylockdep's own lock types).  ``--lockdep-dot=FILE.dot`` (also spelled ``--lockdep-graph``)
  writes the graph and ``--lockdep-json=FILE`` the reports, one JSON object (``Report.as_dict()``)
  per line: the CLI's ``--dot`` and ``--json`` with the plugin's prefix.  Output paths are checked
  when the session starts: one that cannot be written is a usage error.
- Configuration comes from ``[tool.pylockdep]`` of the nearest ``pyproject.toml`` above the
  directory pytest was started in (or ``--lockdep-config FILE``): validator options, suppressions
  and a baseline (``--lockdep-baseline FILE`` names another).  A report they silence fails no
  test and prints no splat; the summary counts and lists it, and the JSON output keeps it with
  ``"suppressed": true``.  ``--lockdep-write-baseline FILE`` writes the session's reports (those
  the baseline silenced included) as the new baseline; the session is judged as usual.
- ``lockdep_expect`` naming a kind that does not exist is a usage error at collection; the marker
  used without ``--lockdep`` is a warning (nothing checks it then).
- A report made after the session's verdict (by a thread a test left running) still fails the
  session: it is printed on the real standard error when pytest unconfigures, or, if such a
  thread is still running then, when the interpreter exits (which then exits with status 1).
- Under pytest-xdist each worker sends its graph and reports to the controller when it finishes.
  The controller merges the graphs, reports every cycle that no single worker saw (a worker
  reported the others itself) with a splat of the merged graph, and makes the session exit
  non-zero.  Summary and files then describe the whole run.
- Under pytest-timeout (any method) a watchdog fires shortly before a test's timeout (a quarter of
  it, at most one second, early) and prints, on the process's standard error, every thread's held
  locks and the lock each thread is blocked on, in the layout of the kernel's "Showing all locks
  held in the system", then the reports the test made so far.  pytest's capture collects it, and
  pytest-timeout prints what was captured before it ends the test or the process.  A test that
  finishes after all still passes.  The watchdog is armed and disarmed through pytest-timeout's
  ``pytest_timeout_set_timer``/``pytest_timeout_cancel_timer`` hooks (leaving its own timer
  alone) and is one raw thread for the whole session, started with the first watched test, so it
  changes no thread count a test can observe between its start and its end.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import pylockdep

from . import _checks, _export, _hang, _picture, _record
from ._config import Config, ConfigError
from ._config import load as load_config
from ._forked import ForkedReports
from ._report import KINDS, Report
from ._suppress import Suppressions, summary_lines, write_baseline
from ._validator import Validator, active, validate

_TEST = pytest.StashKey["_Test"]()
_OUTPUTS = (
    "lockdep_dot",
    "lockdep_svg",
    "lockdep_html",
    "lockdep_json",
    "lockdep_write_baseline",
    "lockdep_record",
)  # options naming files the session writes
_SUBOPTIONS = ("lockdep_rt", "lockdep_threading", "lockdep_config", "lockdep_baseline", *_OUTPUTS)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lockdep", "lock dependency validation (pylockdep)")
    group.addoption(
        "--lockdep",
        action="store_true",
        default=False,
        help="validate lock usage with pylockdep: one graph for the session; a test that breaks a lock rule fails",
    )
    group.addoption(
        "--lockdep-rt",
        action="store_true",
        default=False,
        help="check as a PREEMPT_RT kernel would run (spinlock_t and rwlock_t sleep)",
    )
    group.addoption(
        "--lockdep-threading",
        action="store_true",
        default=False,
        help="validate Python's threading locks created during the session too",
    )
    group.addoption(
        "--lockdep-dot",
        "--lockdep-graph",
        dest="lockdep_dot",
        metavar="FILE.dot",
        default=None,
        help="write the dependency graph in Graphviz DOT, cycle edges in red (as pylockdep run --dot)",
    )
    group.addoption(
        "--lockdep-svg", metavar="FILE", default=None, help="write the graph as SVG (as pylockdep run --svg; Graphviz)"
    )
    group.addoption(
        "--lockdep-html",
        metavar="FILE",
        default=None,
        help="write a page with the graph next to every splat (as pylockdep run --html)",
    )
    group.addoption("--lockdep-json", metavar="FILE", default=None, help="write the reports as JSON lines")
    group.addoption(
        "--lockdep-record",
        metavar="FILE",
        default=None,
        help="write the session's lock graph to FILE, for pylockdep merge (as pylockdep run --record)",
    )
    group.addoption(
        "--lockdep-config",
        metavar="FILE",
        default=None,
        help="read [tool.pylockdep] from FILE instead of the nearest pyproject.toml",
    )
    group.addoption(
        "--lockdep-baseline", metavar="FILE", default=None, help="report only what this baseline file does not list"
    )
    group.addoption(
        "--lockdep-write-baseline", metavar="FILE", default=None, help="write the session's reports as a baseline"
    )
    parser.addini("lockdep", "validate lock usage with pylockdep (as --lockdep)", type="bool", default=False)


# The instrumentation that pytest_load_initial_conftests enters, left at pytest_unconfigure.
_EARLY = pytest.StashKey[Any]()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Instrument Python's locks before pytest imports the initial ``conftest.py`` files, which
    commonly import the library under test: its module-level locks would stay CPython's, never
    validated, if they were made before the session starts instrumenting."""
    known = early_config.known_args_namespace
    if not getattr(known, "lockdep_threading", False):
        return
    if not (getattr(known, "lockdep", False) or early_config.getini("lockdep")):
        return  # pytest_configure refuses the suboption alone
    instrumentation = pylockdep.instrument_threading()
    instrumentation.__enter__()
    early_config.stash[_EARLY] = instrumentation


def pytest_unconfigure(config: pytest.Config) -> None:
    instrumentation = config.stash.get(_EARLY, None)
    if instrumentation is not None:
        del config.stash[_EARLY]
        instrumentation.__exit__(None, None, None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lockdep_expect(*kinds): the test must make pylockdep reports of these kinds (and no others)"
    )
    config.addinivalue_line(
        "markers", "lockdep_off: run the test under the validator in force before the session, not the session's"
    )
    if not enabled(config):
        given = [name for name in _SUBOPTIONS if config.getoption(name)]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise pytest.UsageError(f"{flags}: needs --lockdep (or the ini option lockdep = true)")
        return
    try:
        settings = load_config(config.getoption("lockdep_config"), str(config.invocation_params.dir))
        suppress = settings.suppressions(config.getoption("lockdep_baseline"))
    except ConfigError as exc:
        raise pytest.UsageError(f"pylockdep: {exc}") from None
    is_worker = hasattr(config, "workerinput")
    if not is_worker:
        check_outputs(config)
    if not is_worker and getattr(config.option, "dist", "no") != "no":
        plugin: _Session | _Controller = _Controller(config, suppress)
    else:
        plugin = _Session(config, settings, suppress)
    config.pluginmanager.register(plugin, "lockdep-session")


def enabled(config: pytest.Config) -> bool:
    """Whether the session validates locks (``--lockdep`` or the ini option)."""
    return bool(config.getoption("lockdep") or config.getini("lockdep"))


def check_outputs(config: pytest.Config) -> None:
    """Refuse, before any test runs, an output file that cannot be written (or an SVG without Graphviz)."""
    if config.getoption("lockdep_svg") and _picture.graphviz() is None:
        raise pytest.UsageError("--lockdep-svg: needs Graphviz's dot program (apt-get install graphviz)")
    for name in _OUTPUTS:
        path = config.getoption(name)
        if not path:
            continue
        try:
            with open(path, "w", encoding="utf-8"):
                pass
        except OSError as exc:
            flag = "--" + name.replace("_", "-")
            raise pytest.UsageError(f"{flag}: cannot write {path!r}: {exc.strerror}") from None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """``lockdep_expect`` must name known report kinds; without ``--lockdep`` nothing checks it: say so."""
    marked = 0
    for item in items:
        for marker in item.iter_markers("lockdep_expect"):
            unknown = [kind for kind in marker.args if kind not in KINDS]
            if unknown or not marker.args:
                given = ", ".join(map(repr, marker.args)) or "no kind"
                raise pytest.UsageError(
                    f"{item.nodeid}: lockdep_expect({given}): "
                    + (f"unknown report kind {', '.join(map(repr, unknown))}; " if unknown else "")
                    + f"the kinds are {', '.join(sorted(KINDS))}"
                )
            marked += 1
    if marked and not enabled(config):
        warnings.warn(
            pytest.PytestWarning(
                f"{marked} test(s) marked lockdep_expect, but lock validation is off: "
                "their expectations are not checked (run pytest with --lockdep)"
            ),
            stacklevel=1,
        )


@pytest.fixture
def lockdep(request: pytest.FixtureRequest) -> Iterator[list[Report]]:
    """The reports made during this test, as a list that grows while the test runs.

    Under ``--lockdep`` these are the session validator's reports from this test's setup on;
    without it (or with ``lockdep_off``), those of the validator in force when the fixture was
    set up (usually the process-wide default) while the fixture is alive.
    """
    test = request.node.stash.get(_TEST, None)
    if test is not None and request.node.get_closest_marker("lockdep_off") is None:
        yield test.reports
        return
    reports: list[Report] = []
    listener = reports.append
    v = pylockdep.current()
    v.listeners.append(listener)
    try:
        yield reports
    finally:
        v.listeners.remove(listener)


@dataclass
class _Test:
    """What the session knows about the running test."""

    nodeid: str
    expected: frozenset[str] | None  # kinds named by lockdep_expect, None without the marker
    reports: list[Report] = field(default_factory=list)
    judged: int = 0  # reports already attributed to a phase


class _Session:
    """The plugin in a process that runs tests (no xdist, or an xdist worker)."""

    def __init__(self, config: pytest.Config, settings: Config, suppress: Suppressions) -> None:
        self.config = config
        options = dict(settings.options)
        if config.getoption("lockdep_rt"):
            options["preempt_rt"] = True
        self.scope = validate(**options, raise_on_report=False)
        self.validator: Validator = self.scope.validator
        self.validator.suppress = suppress
        self.validator.listeners.append(self._on_report)
        self.forked = ForkedReports()  # what processes forked by the tests report
        self.instrumentation: Any = None
        if config.getoption("lockdep_threading"):
            self.instrumentation = pylockdep.instrument_threading()
        self.outer: Validator | None = None  # the validator in force before the session
        self.test: _Test | None = None
        self.outside: list[Report] = []
        self.is_worker = hasattr(config, "workerinput")
        self.watchdog: _hang.Watchdog | None = None  # started for the first test pytest-timeout watches
        self.threads_before: set[threading.Thread] = set()
        self.session: pytest.Session | None = None
        self.given: int | None = None  # reports counted by the session's verdict, once given
        self.scope_open = False  # the session validator is still in force after the verdict

    # -- the session -------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.outer = pylockdep.current()
        self.threads_before = set(threading.enumerate())
        self.scope.__enter__()
        if self.instrumentation is not None:
            self.instrumentation.__enter__()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.instrumentation is not None:
            self.instrumentation.__exit__(None, None, None)
        self.session = session
        self._take_forked()
        self._judge_main_thread()
        self.given = len(self.validator.reports)
        if self._left_running() and not self.is_worker:
            self.scope_open = True  # what those threads do is still the session's
        else:
            self.scope.__exit__(None, None, None)
        if self.is_worker:
            self.config.workeroutput["lockdep"] = {  # type: ignore[attr-defined]
                "graph": _export.graph_to_data(self.validator),
                "reports": [r.as_dict() for r in self.validator.reports],
                "outside": [r.as_dict() for r in self.outside],
                "suppressed": [r.as_dict() for r in self.validator.suppressed],
            }
            return
        if self.outside and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reports = [r.as_dict() for r in self.validator.reports + self.validator.suppressed]
        write_files(self.config, self.validator, reports)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        reports = list(self.validator.reports)
        if self.given is not None and len(reports) > self.given:  # made since the verdict: they count
            self.given = len(reports)
            if self.session is not None and self.session.exitstatus == pytest.ExitCode.OK:
                self.session.exitstatus = pytest.ExitCode.TESTS_FAILED
        graph = self.validator.graph
        summarize(
            terminalreporter,
            [r.as_dict() for r in reports],
            len(graph.classes),
            graph.nr_edges,
            [r.as_dict() for r in self.outside],
            [],
            [r.as_dict() for r in self.validator.suppressed],
        )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Reports made after the verdict fail the session; while threads the tests left are still
        running, the validator stays in force and the interpreter's exit judges what they do."""
        if self.given is None or not self.scope_open:
            return
        self._judge_late()
        if self._left_running():
            atexit.register(self._judge_late, at_exit=True)
        else:
            self.scope.__exit__(None, None, None)

    def _judge_main_thread(self) -> None:
        """The tests are done and every fixture torn down: the locks with an owner that the main
        thread still holds were left held by a test, and are reported as held at exit, as
        ``pylockdep run`` reports those the program's main thread holds at its end."""
        v = self.validator
        main = getattr(v.local, "task", None)
        if main is not None and main.held and threading.current_thread() is threading.main_thread():
            v.run_check(main, _checks.check_held_at_exit)

    def _left_running(self) -> list[threading.Thread]:
        """Threads started during the session and still running."""
        return [t for t in threading.enumerate() if t not in self.threads_before and t.is_alive()]

    def _judge_late(self, at_exit: bool = False) -> None:
        """Print the reports made since the verdict; they fail the session (at exit: the process)."""
        assert self.given is not None
        late = self.validator.reports[self.given :]
        if not late:
            return
        self.given += len(late)
        stream = sys.__stderr__
        if stream is not None:
            when = "while the interpreter exited" if at_exit else "after the session's verdict"
            stream.write(describe_reports(late, f"threads left running by the tests, {when}") + "\n")
            stream.flush()
        if at_exit:
            os._exit(pytest.ExitCode.TESTS_FAILED)
        if self.session is not None and self.session.exitstatus == pytest.ExitCode.OK:
            self.session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _on_report(self, report: Report) -> None:
        """Attribute a report to the test running, else to the session (:attr:`outside`, where
        one made in an earlier test keeps that test as its ``origin``: a report held back until
        validation ended, or one a process forked by that test passed on late); in a
        process a test forked, pass it on to the session's process, where it is attributed so
        at the test's next report (:meth:`_take_forked`)."""
        if report.suppressed or self.forked.pass_on(report):
            return  # a suppressed one is counted in the validator's ``suppressed``; it fails nothing
        test = self.test
        if test is not None and report.origin == test.nodeid:
            test.reports.append(report)
        else:
            self.outside.append(report)

    # -- each test ---------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        marker = item.get_closest_marker("lockdep_expect")
        test = _Test(item.nodeid, frozenset(marker.args) if marker is not None else None)
        item.stash[_TEST] = test
        off = item.get_closest_marker("lockdep_off") is not None
        if off:
            active.validator = self.outer or active.validator
        self.test = test
        self.validator.origin = item.nodeid
        try:
            return (yield)
        finally:
            self.validator.origin = None
            self.test = None
            if off:
                active.validator = self.validator

    def _take_forked(self) -> None:
        """Count and attribute what processes forked by the tests reported since the last call."""
        for report in self.forked.read():
            self.validator.reports.append(report)
            self._on_report(report)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        rep = yield
        test = item.stash.get(_TEST, None)
        if test is None or test is not self.test:
            return rep
        self._take_forked()
        new = test.reports[test.judged :]
        test.judged += len(new)
        problems = []
        unexpected = [r for r in new if test.expected is None or r.kind not in test.expected]
        if unexpected:
            problems.append(describe_reports(unexpected, f"the {call.when} of {item.nodeid}"))
        if test.expected and call.when == "call" and not rep.skipped:
            missing = sorted(test.expected - {r.kind for r in test.reports})
            if missing:
                made = ", ".join(r.kind for r in test.reports) or "none"
                problems.append(
                    f"pylockdep: {item.nodeid} expected report(s) of kind {', '.join(missing)}; made: {made}"
                )
        if problems:
            fail_report(rep, "\n\n".join(problems))
        return rep

    # -- pytest-timeout ----------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> None:
        timeout = float(settings.timeout)
        early = timeout - min(1.0, timeout / 4)
        started = time.monotonic()

        def dump() -> None:
            header = (
                f"INFO: {item.nodeid} still running after {time.monotonic() - started:.1f} s; "
                f"pytest-timeout stops it at {timeout:g} s."
            )
            test = item.stash.get(_TEST, None)
            made = describe_reports(test.reports, f"{item.nodeid} so far") if test and test.reports else ""
            _hang.print_dump(pylockdep.current(), header, made)

        if self.watchdog is None:
            self.watchdog = _hang.Watchdog()
        self.watchdog.arm(early, dump)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> None:
        if self.watchdog is not None:
            self.watchdog.disarm()


class _Controller:
    """The plugin in an xdist controller: gathers the workers' graphs and reports, merges them."""

    def __init__(self, config: pytest.Config, suppress: Suppressions) -> None:
        self.config = config
        self.suppress = suppress
        self.workers: list[tuple[str, dict]] = []
        self.merged: _export.MergedGraph | None = None
        self.cycles: list[Report] = []
        self.silenced: list[Report] = []  # merged-graph cycles that the configuration suppresses

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        data = getattr(node, "workeroutput", {}).get("lockdep")
        if data is not None:
            self.workers.append((node.gateway.id, data))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.workers.sort(key=lambda pair: (len(pair[0]), pair[0]))  # gw0, gw1, ..., gw10: a stable merge
        merged = self.merged = _export.merge((worker, data["graph"]) for worker, data in self.workers)
        for report in _record.union_cycles(merged):  # a cycle one worker saw whole, that worker reported
            why = self.suppress.reason(report)
            if why is None:
                self.cycles.append(report)
            else:
                self.silenced.append(dataclasses.replace(report, suppressed=True, suppressed_by=why))
        if (self.cycles or self._outside()) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        write_files(
            self.config,
            merged,
            self._reports() + [r.as_dict() for r in self.cycles] + self._suppressed(),
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        merged = self.merged
        if merged is None:
            return
        summarize(
            terminalreporter,
            self._reports(),
            len(merged.graph.classes),
            merged.graph.nr_edges,
            self._outside(),
            self.cycles,
            self._suppressed(),
            workers=len(self.workers),
        )

    def _reports(self) -> list[dict]:
        return [dict(r, worker=worker) for worker, data in self.workers for r in data["reports"]]

    def _suppressed(self) -> list[dict]:
        found = [dict(r, worker=worker) for worker, data in self.workers for r in data.get("suppressed", [])]
        return found + [r.as_dict() for r in self.silenced]

    def _outside(self) -> list[dict]:
        return [dict(r, worker=worker) for worker, data in self.workers for r in data["outside"]]


# -- helpers shared by both roles ------------------------------------------------------------


def describe_reports(reports: list[Report], during: str) -> str:
    """A header saying how many reports of which kinds were made ``during`` what, then each splat."""
    kinds = ", ".join(r.kind for r in reports)
    header = f"pylockdep: {len(reports)} report(s) during {during}: {kinds}"
    return "\n\n".join([header] + [r.text for r in reports])


def fail_report(rep: pytest.TestReport, text: str) -> None:
    """Make ``rep`` a failure showing ``text`` (after its own failure text, if it already failed)."""
    longrepr = rep.longrepr
    if rep.failed and hasattr(longrepr, "addsection"):
        longrepr.addsection("pylockdep", text)
    elif rep.failed and longrepr is not None:
        rep.longrepr = f"{longrepr}\n\n{text}"
    else:
        rep.outcome = "failed"
        rep.longrepr = text


def write_files(config: pytest.Config, graph: Validator | _export.MergedGraph, reports: list[dict]) -> None:
    """Write ``--lockdep-dot``/``-svg``/``-html`` (the pictures of ``graph``), ``--lockdep-json``
    (JSON lines) and ``--lockdep-write-baseline`` (every report but those a suppression silenced)."""
    with contextlib.ExitStack() as stack:
        pictures = {
            kind: stack.enter_context(open(path, "w", encoding="utf-8"))
            for kind in ("dot", "svg", "html")
            if (path := config.getoption(f"lockdep_{kind}"))
        }
        _picture.write_pictures(graph, reports, "pytest " + " ".join(config.invocation_params.args), pictures)
    json_path = config.getoption("lockdep_json")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in reports)
    record_path = config.getoption("lockdep_record")
    if record_path:
        with _record.open_for_writing(record_path) as f:
            _record.record(graph, f, os.path.basename(record_path))
    baseline_path = config.getoption("lockdep_write_baseline")
    if baseline_path:
        known = [r for r in reports if not r.get("suppressed") or r.get("suppressed_by") == "baseline"]
        write_baseline(baseline_path, known)


def summarize(
    tr: Any,
    reports: list[dict],
    nr_classes: int,
    nr_edges: int,
    outside: list[dict],
    cycles: list[Report],
    suppressed: list[dict],
    workers: int | None = None,
) -> None:
    """The ``lockdep`` section of the terminal summary."""
    tr.section("lockdep")
    kinds = Counter(r["kind"] for r in reports) + Counter(r.kind for r in cycles)
    total = sum(kinds.values())
    if total:
        tr.line(f"{total} report(s): " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
    else:
        tr.line("no reports")
    merged = f" (graphs of {workers} xdist workers merged)" if workers is not None else ""
    tr.line(f"{nr_classes} lock classes, {nr_edges} dependencies learned{merged}")
    for line in summary_lines(suppressed):
        tr.line(line)
    confirmed_later = [r for r in outside if r.get("origin")]
    if confirmed_later:
        tr.line(
            f"{len(confirmed_later)} report(s) made by tests but confirmed after them, when validation ended "
            "(a cycle through a threading.Lock is held back until then, in case the lock proves a hand-off signal):",
            red=True,
        )
        for r in confirmed_later:
            tr.line(f"made in {r['origin']}:")
            tr.line(r["text"])
    outside = [r for r in outside if not r.get("origin")]
    if outside:
        tr.line(f"{len(outside)} report(s) made outside any test:", red=True)
        for r in outside:
            tr.line(r["text"])
    if cycles:
        tr.line(f"{len(cycles)} cycle(s) that only the merged graph shows:", red=True)
        for r in cycles:
            tr.line(r.text)
    if not tr.config.getoption("lockdep_threading"):
        tr.line(
            "Python's threading locks were not validated: only pylockdep's own lock types were checked "
            "(--lockdep-threading validates threading.Lock, RLock and Condition too)",
            yellow=True,
        )
    outputs = (
        ("lockdep_dot", "graph"),
        ("lockdep_svg", "graph (SVG)"),
        ("lockdep_html", "graph and splats (HTML)"),
        ("lockdep_json", "reports"),
        ("lockdep_write_baseline", "baseline"),
        ("lockdep_record", "lock graph (recording)"),
    )
    for option, what in outputs:
        path = tr.config.getoption(option)
        if path:
            tr.line(f"{what} written to {path}")
