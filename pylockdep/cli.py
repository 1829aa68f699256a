"""The ``pylockdep`` command: run a Python program with its locks validated.

``pylockdep run [OPTIONS] SCRIPT [ARGS...]`` and ``pylockdep run [OPTIONS] -m MODULE [ARGS...]``
(also ``python -m pylockdep run ...``) run the program as ``python SCRIPT ARGS`` or
``python -m MODULE ARGS`` would (same ``sys.argv``, ``sys.path[0]`` and ``__main__``), with
:class:`~pylockdep.instrument_threading` installed before its first line and a fresh validator
in force.  Once the program is done, the interpreter's exit steps run as Python runs them
(threading's exit hooks, the non-daemon threads joined, ``atexit`` functions), still validated;
then the main thread ends, and the locks with an owner it still holds are reported, as for any
thread.  Only then is the verdict given, so every report counts.

Splats are written, as they are found, to the standard error the command started with (a copy of
file descriptor 2 taken before the program runs): a program that captures ``sys.stderr`` or even
redirects descriptor 2, as pytest does, does not hide them.

Exit status: 2 for a usage error (a script that does not exist included); :data:`REPORT_STATUS`
(66, or ``--exit-code N``) when a report was made; otherwise the program's own status
(``sys.exit()`` codes as Python maps them, 1 for an uncaught exception).

``--record FILE`` writes the run's lock graph as a recording (``.gz``: compressed);
``pylockdep merge FILE...`` joins recordings of many runs (CI jobs, shards, Pythons) and reports,
in the usual splat layout, every cycle that no single run saw whole, naming the run each dependency
came from; its exit status and picture options are those of ``run``.

Every output file is opened before the program starts, so a path that cannot be written is a
usage error, not a traceback after the whole run.

Configuration comes from ``[tool.pylockdep]`` of the nearest ``pyproject.toml`` (or ``--config
FILE``): validator options, which the flags override, suppressions and a baseline.  A report that a
suppression or the baseline (``--baseline FILE``) silences prints no splat and does not change the
exit status; the final summary counts and lists it.  ``--write-baseline FILE`` also writes the
run's reports (those the baseline silenced included) as the new baseline.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import runpy
import signal
import sys
import threading
import zipimport
from collections.abc import Callable, Sequence
from types import FrameType, ModuleType
from typing import IO

from . import _hang, _record, _signals, _waitfor
from ._config import Config, ConfigError
from ._config import load as load_config
from ._forked import ForkedReports
from ._report import Report
from ._suppress import Suppressions, summary_lines
from ._suppress import write_baseline as write_baseline_file
from ._threading import instrument_threading
from ._validator import Validator, validate

REPORT_STATUS = 66  # what sanitizers exit with: no ordinary program uses it
_OUTPUTS = (
    "json",
    "report_file",
    "dot",
    "svg",
    "html",
    "write_baseline",
    "record",
)  # options naming a file written by the run
_VALUE_OPTIONS = (
    "--json",
    "--dot",
    "--svg",
    "--html",
    "--report-file",
    "--exit-code",
    "--hang-timeout",
    "--config",
    "--baseline",
    "--write-baseline",
    "--record",
)
_RUNNER_FILES = (__file__, runpy.run_path.__code__.co_filename)


def _pictures() -> ModuleType:
    """:mod:`pylockdep._picture`, imported when a picture is asked for: with Graphviz's runner and
    the HTML page it would add to the start-up of every ``pylockdep run``."""
    from . import _picture

    return _picture


def _report_status(text: str) -> int:
    """``--exit-code``: an exit status a process can have that is not success (1 to 255; the
    system would turn 256 into 0, a run with reports that passes)."""
    try:
        status = int(text)
    except ValueError:
        status = 0
    if not 1 <= status <= 255:
        raise argparse.ArgumentTypeError(f"must be an exit status from 1 to 255, not {text!r}")
    return status


def _seconds(text: str) -> float:
    """``--hang-timeout``: a positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return seconds


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command's parser and its ``run`` and ``merge`` subcommands'."""
    parser = argparse.ArgumentParser(
        prog="pylockdep", description="Runtime lock-dependency validation for Python programs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a program with threading locks validated",
        usage="pylockdep run [OPTIONS] (SCRIPT | -m MODULE) [ARGS...]",
        description="Run SCRIPT (or -m MODULE) with threading.Lock/RLock/Condition validated from its "
        "first line; splats go to the standard error pylockdep started with.  Exits "
        f"{REPORT_STATUS} (--exit-code) when a report was made, 2 for a usage error, else with the "
        "program's own status.",
    )
    run.add_argument("--json", metavar="FILE", help="write each report as a JSON line to FILE")
    run.add_argument("--report-file", metavar="FILE", help="write each splat to FILE too, as it is made")
    run.add_argument("--dot", metavar="FILE", help="write the lock-class graph as Graphviz DOT to FILE")
    run.add_argument("--svg", metavar="FILE", help="write the graph as SVG to FILE (needs Graphviz's dot)")
    run.add_argument(
        "--html", metavar="FILE", help="write a page with the graph next to every splat to FILE (SVG with Graphviz)"
    )
    run.add_argument(
        "--exit-code",
        metavar="N",
        type=_report_status,
        default=REPORT_STATUS,
        help=f"exit status when a report was made (default {REPORT_STATUS})",
    )
    run.add_argument(
        "--hang-timeout",
        metavar="S",
        type=_seconds,
        help="after S seconds, print every thread's held locks and waits and end the program "
        "with the --exit-code status (SIGUSR1 prints the same at any time)",
    )
    run.add_argument("--preempt-rt", action="store_true", help="check as a PREEMPT_RT kernel would run")
    run.add_argument(
        "--no-raw-nesting",
        action="store_true",
        help="no CONFIG_PROVE_RAW_LOCK_NESTING checks (spinlock_t inside raw_spinlock_t)",
    )
    run.add_argument("--config", metavar="FILE", help="read [tool.pylockdep] from FILE, not the nearest pyproject.toml")
    run.add_argument("--baseline", metavar="FILE", help="report only what is not in this baseline file")
    run.add_argument("--write-baseline", metavar="FILE", help="write this run's reports to FILE as the baseline")
    run.add_argument(
        "--record", metavar="FILE", help="write the run's lock graph to FILE, for pylockdep merge (.gz: compressed)"
    )
    merge = commands.add_parser(
        "merge",
        help="report the cycles that only the union of recorded runs shows",
        usage="pylockdep merge [OPTIONS] FILE...",
        description="Join lock graphs recorded by pylockdep run --record or pytest --lockdep-record and "
        "report every cycle that no single recording holds whole.  Exits "
        f"{REPORT_STATUS} (--exit-code) when there is one, 2 for a usage error, else 0.",
    )
    merge.add_argument("files", metavar="FILE", nargs="+", help="recordings")
    merge.add_argument("--json", metavar="FILE", help="write each report as a JSON line to FILE")
    merge.add_argument("--dot", metavar="FILE", help="write the merged graph as Graphviz DOT to FILE")
    merge.add_argument("--svg", metavar="FILE", help="write the merged graph as SVG to FILE (needs Graphviz's dot)")
    merge.add_argument("--html", metavar="FILE", help="write a page with the merged graph next to the splats")
    merge.add_argument(
        "--exit-code",
        metavar="N",
        type=_report_status,
        default=REPORT_STATUS,
        help=f"exit status when a cycle was found (default {REPORT_STATUS})",
    )
    return parser, run, merge


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``run``'s arguments into pylockdep's options and the program (``-m MODULE ...`` or
    ``SCRIPT ...``): everything from the script or ``-m`` on belongs to the program."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return list(argv[:i]), list(argv[i + 1 :])
        if arg == "-m" or not arg.startswith("-"):
            return list(argv[:i]), list(argv[i:])
        i += 2 if arg in _VALUE_OPTIONS else 1
    return list(argv), []


def _exit_status(code: object) -> int:
    """The status Python exits with for ``SystemExit(code)``, printing a message as it does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _runner(program: list[str]) -> Callable[[], object]:
    """Set ``sys.argv`` and ``sys.path[0]`` as Python would and return what runs the program."""
    if program[0] == "-m":
        module = program[1]
        sys.argv = [module, *program[2:]]  # runpy puts the module's file in argv[0]
        sys.path[0] = os.getcwd()
        return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    script = program[0]
    sys.argv = list(program)
    # A directory or zip archive with a __main__.py is itself the first entry, as Python puts it.
    sys.path[0] = script if _has_main(script) else os.path.dirname(os.path.realpath(script))
    return lambda: runpy.run_path(script, run_name="__main__")


def _has_main(path: str) -> bool:
    """Whether ``path`` is a directory or zip archive that Python runs by its ``__main__.py``."""
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "__main__.py"))
    try:  # the importer Python itself tries on the path (zipimport is loaded at start-up; zipfile is not)
        return zipimport.zipimporter(path).find_spec("__main__") is not None
    except zipimport.ZipImportError:
        return False


def _run_program(program: Callable[[], object]) -> tuple[int, object]:
    """Run the program; its exit status, as the interpreter would give it, and what keeps its
    module's globals alive (its namespace, or the exception whose frames hold it): until the
    program has ended (:func:`_end_program`) they are the program's, as ``__main__``'s are until
    the interpreter exits, so a lock it keeps there is still referenced then."""
    try:
        namespace = program()
    except SystemExit as exc:
        return _exit_status(exc.code), exc
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename in _RUNNER_FILES:
            tb = tb.tb_next  # start the traceback in the program, as Python's own does
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1, exc
    return 0, namespace


def _end_program(v: Validator) -> None:
    """What the interpreter does before it exits, done now so that it is validated and counted:
    threading's exit hooks (executors shut down), joining non-daemon threads, then the program's
    ``atexit`` functions.  Then the main thread is done: the locks it still holds are reported
    now, as any thread's are when it ends, and so are the ``threading.Lock``s that ended threads
    left held (:meth:`Validator.finish`).

    An exception while joining the threads (Ctrl-C on a program that hangs there) is printed and
    ignored, as the interpreter does, and the rest goes on: the reports are not lost."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - the interpreter's own rule at this point
        import traceback  # only here: importing the command stays cheap

        print(f"Exception ignored in: {threading!r}", file=sys.stderr)
        traceback.print_exception(exc)
    atexit._run_exitfuncs()
    main = getattr(v.local, "task", None)
    if main is not None:
        v._thread_exited(main, os.getpid())
    v.finish()


def _watch_exit(v: Validator, verdict: _Verdict) -> _hang.Watchdog:
    """A watchdog over the main thread's end, where it joins the non-daemon threads: once those
    joins can never end (a worker idle in a ``Queue.get()`` that no thread is left to feed, or
    threads waiting for one another), the process is ended as ``--hang-timeout`` ends it, rather
    than hanging at its exit as the interpreter would (:func:`pylockdep._waitfor.stuck_at_exit`)."""
    watchdog = _hang.Watchdog()
    alone_since = None

    def check() -> None:
        nonlocal alone_since
        stuck, alone_since = _waitfor.stuck_at_exit(v, alone_since)
        if stuck is None:
            watchdog.arm(_waitfor.EXIT_CHECK_SECONDS, check)
            return
        header = f"INFO: pylockdep: the program's end would wait for ever ({_waitfor.describe_stuck(stuck)})."
        verdict.give_up(header, "ended at exit instead of waiting for ever")

    watchdog.arm(_waitfor.EXIT_CHECK_SECONDS, check)
    return watchdog


def real_stderr() -> IO[str]:
    """A stream on a copy of file descriptor 2 as it is now: later redirections of descriptor 2
    (pytest's capture, a program's ``dup2``) and replacements of ``sys.stderr`` do not reach it."""
    try:
        fd = os.dup(2)
    except OSError:  # no descriptor 2 at all: fall back to whatever Python has
        return sys.__stderr__ or sys.stderr
    return open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=True)  # noqa: SIM115


def _open_outputs(options: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, IO[str]]:
    """Open every output file the options name, before the program runs; a usage error if one
    cannot be written (the program may also change directory later: the files are open already)."""
    files: dict[str, IO[str]] = {}
    if getattr(options, "svg", None) and _pictures().graphviz() is None:
        parser.error("argument --svg: needs Graphviz's dot program (apt-get install graphviz)")
    for name in _OUTPUTS:
        path = getattr(options, name, None)
        if not path:
            continue
        try:
            if name == "record":
                files[name] = _record.open_for_writing(os.path.abspath(path))
            else:
                files[name] = open(os.path.abspath(path), "w", encoding="utf-8")  # noqa: SIM115 - closed by run()
        except OSError as exc:
            for f in files.values():
                f.close()
            flag = "--" + name.replace("_", "-")
            parser.error(f"argument {flag}: cannot write {path!r}: {exc.strerror}")
    return files


class _Verdict:
    """Counts the reports of a run and writes them to the report file and as JSON lines (the
    validator prints the splats); reports made after the verdict still end the process with the
    report status.

    A process forked from the program (``os.fork()``, ``multiprocessing``'s fork start method)
    inherits the validator, and this listener with it: it prints its reports as the program
    does, and passes each on to the run (:attr:`forked`), whose verdict counts them with its own."""

    def __init__(self, v: Validator, out: IO[str], files: dict[str, IO[str]], exit_code: int) -> None:
        self.v, self.out, self.files, self.exit_code = v, out, files, exit_code
        self.given = -1  # reports counted by the verdict; -1 until it is given
        self.failed: set[str] = set()  # the output files that could not be written, each said once
        self.forked = ForkedReports()

    def deliver(self, report: Report) -> None:
        """The validator's listener: the report file gets the splat (unless suppressed), the JSON
        output every report; a forked child's report is passed on to the run too."""
        self.forked.pass_on(report)
        if "report_file" in self.files and not report.suppressed:
            self.write_file("report_file", report.text + "\n\n")
        if "json" in self.files:
            self.write_file("json", json.dumps(report.as_dict()) + "\n")

    def write_file(self, name: str, text: str) -> None:
        """Write and flush ``text`` to the output file ``name``; one that fails (a full disk) is
        named once on the report stream, and the program goes on."""
        f = self.files[name]
        try:
            f.write(text)
            f.flush()
        except Exception as exc:  # noqa: BLE001 - whatever the file raises, the program goes on
            self.say_failed(name, getattr(f, "name", name), exc)

    def say_failed(self, name: str, path: object, exc: BaseException) -> None:
        if name not in self.failed:
            self.failed.add(name)
            _write(self.out, f"pylockdep: could not write {path}: {type(exc).__name__}: {exc}\n")

    def summary(self, status: int) -> int:
        """Print the verdict line; the exit status (``status`` when there were no reports).  A
        report of forked children counts once, unless the run made the same (kind and classes)."""
        for line in summary_lines(self.v.suppressed):
            _write(self.out, f"pylockdep: {line}\n")
        reports = list(self.v.reports)
        self.given = len(reports)
        own = {(r.kind, r.classes) for r in reports}
        children = {(r.kind, r.classes) for r in self.forked.read()} - own
        if not reports and not children:
            return status
        kinds = ", ".join(sorted({r.kind for r in reports} | {kind for kind, _ in children}))
        forked = f" ({len(children)} in forked processes)" if children else ""
        _write(self.out, f"pylockdep: {len(reports) + len(children)} report(s): {kinds}{forked}\n")
        return self.exit_code

    def at_exit(self) -> None:
        """The last exit hook: reports made while the interpreter shut down (a daemon thread, a
        finalizer) were not in the verdict; say so and end with the report status."""
        late = len(self.v.reports) - self.given
        if self.given < 0 or late <= 0:
            return
        _write(self.out, f"pylockdep: {late} more report(s) made while the interpreter shut down\n")
        for f in (sys.stdout, sys.stderr, *self.files.values()):
            with contextlib.suppress(Exception):
                f.flush()
        os._exit(self.exit_code)

    def hang(self, seconds: float) -> None:
        """The ``--hang-timeout`` action: :meth:`give_up`."""
        header = f"INFO: pylockdep: the program is still running after {seconds:g} s (--hang-timeout)."
        self.give_up(header, f"ended after {seconds:g} s")

    def give_up(self, header: str, ended: str) -> None:
        """End a program that would not end by itself: the reports held back until validation
        ends, the dump under ``header``, a line saying the program was ``ended``, then end the
        process with the report status."""
        self.v.finish()
        _dump(self.v, self.out, header)
        _write(self.out, f"pylockdep: {ended}; {len(self.v.reports)} report(s) before\n")
        for f in (sys.stdout, sys.stderr, *self.files.values()):
            with contextlib.suppress(Exception):
                f.flush()
        os._exit(self.exit_code)


def _write(f: IO[str], text: str) -> None:
    """Write and flush; a stream that fails (a closed pipe) never breaks the program."""
    with contextlib.suppress(Exception):
        f.write(text)
        f.flush()


def _dump(v: Validator, out: IO[str], header: str) -> None:
    """Every thread's held locks and what each waits for, then every thread's Python stack."""
    _write(out, "\n".join(_hang.show_all_locks(v, header)) + "\n")
    with contextlib.suppress(Exception):
        import faulthandler

        faulthandler.dump_traceback(out, all_threads=True)
    _write(out, "\n")


def run(
    options: argparse.Namespace,
    runner: Callable[[], object],
    files: dict[str, IO[str]] | None = None,
    config: Config | None = None,
    suppress: Suppressions | None = None,
) -> int:
    """``pylockdep run``: run the program, then the interpreter's exit steps; the exit status.

    ``files`` are the output files already opened (:func:`_open_outputs`), by option name;
    ``config`` gives validator options (the flags in ``options`` win), ``suppress`` what to silence.
    """
    files = dict(files or {})
    out = real_stderr()
    flavour = dict((config or Config()).options)
    if options.preempt_rt:
        flavour["preempt_rt"] = True
    if options.no_raw_nesting:
        flavour["prove_raw_lock_nesting"] = False
    # Never left: the validator stays in force while the interpreter shuts down, so reports made
    # then are counted (_Verdict.at_exit); the report files stay open for them too.
    v = validate(**flavour, raise_on_report=False, stream=out).__enter__()
    v.suppress = suppress
    verdict = _Verdict(v, out, files, options.exit_code)
    v.listeners.append(verdict.deliver)
    watchdog = None
    if options.hang_timeout is not None:
        watchdog = _hang.Watchdog()
        watchdog.arm(options.hang_timeout, lambda: verdict.hang(options.hang_timeout))
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():

        def dump(signum: int, frame: FrameType | None) -> None:
            _dump(v, out, "INFO: pylockdep: SIGUSR1")

        _signals.OWN_HANDLERS.add(dump)
        signal.signal(signal.SIGUSR1, dump)
    with instrument_threading():
        status, program_globals = _run_program(runner)
        exit_watch = _watch_exit(v, verdict)
        try:
            _end_program(v)
        finally:
            exit_watch.stop()
        del program_globals
    if watchdog is not None:
        watchdog.stop()
    pictures = {name: files.pop(name) for name in ("dot", "svg", "html") if name in files}
    reports = [r.as_dict() for r in v.reports + v.suppressed]
    if pictures:
        _pictures().write_pictures(v, reports, "pylockdep run " + " ".join(sys.argv), pictures)
    for f in pictures.values():
        f.close()
    recording = files.pop("record", None)
    if recording is not None:
        try:
            with recording:
                _record.record(v, recording, os.path.basename(options.record))
        except OSError as exc:
            verdict.say_failed("record", options.record, exc)
    baseline = files.pop("write_baseline", None)
    if baseline is not None:
        baseline.close()
        known = v.reports + [r for r in v.suppressed if r.suppressed_by == "baseline"]
        written = write_baseline_file(baseline.name, known)
        _write(out, f"pylockdep: {written} report(s) written to the baseline {options.write_baseline}\n")
    status = verdict.summary(status)
    atexit.register(verdict.at_exit)  # registered after the program's own hooks ran: runs last
    return status


def merge(options: argparse.Namespace, files: dict[str, IO[str]]) -> int:
    """``pylockdep merge``: the cycles only the union of the recordings shows; the exit status."""
    try:
        merged, cycles = _record.merge_files(options.files)
    except _record.RecordingError as exc:
        print(f"pylockdep merge: error: {exc}", file=sys.stderr)
        return 2
    for report in cycles:
        print(report.text + "\n", file=sys.stderr)
    reports = [r.as_dict() for r in cycles]
    if "json" in files:
        with files.pop("json") as f:
            f.writelines(json.dumps(r) + "\n" for r in reports)
    pictures = {name: files.pop(name) for name in ("dot", "svg", "html") if name in files}
    _pictures().write_pictures(merged, reports, f"pylockdep merge of {len(options.files)} recording(s)", pictures)
    for f in pictures.values():
        f.close()
    sources = len({s for e in merged.edge_sources.values() for s in e.sources})
    print(
        f"pylockdep: merged {len(options.files)} recording(s) ({sources} source(s)): "
        f"{len(merged.graph.classes)} lock classes, {merged.graph.nr_edges} dependencies; "
        f"{len(cycles)} cycle(s) that no single run saw",
        file=sys.stderr,
    )
    return options.exit_code if cycles else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pylockdep`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, run_parser, merge_parser = _parsers()
    if argv[:1] == ["merge"]:
        options = merge_parser.parse_args(argv[1:])
        return merge(options, _open_outputs(options, merge_parser))
    if argv[:1] != ["run"]:
        parser.parse_args(argv)  # help, or the error for a missing or unknown command
        return 2
    ours, program = _split(argv[1:])
    options = run_parser.parse_args(ours)  # run's own usage in its errors
    if program[:1] == ["-m"] and len(program) < 2:
        run_parser.error("argument -m: expected a module name")
    if not program:
        run_parser.error("a SCRIPT or -m MODULE is required")
    if program[0] != "-m" and os.path.isdir(program[0]) and not _has_main(program[0]):
        run_parser.error(f"can't find '__main__' module in {program[0]!r}")
    if program[0] != "-m" and not os.path.isfile(program[0]) and not os.path.isdir(program[0]):
        run_parser.error(f"can't open file {program[0]!r}: no such file")
    try:
        config = load_config(options.config)
        suppress = config.suppressions(options.baseline)
    except ConfigError as exc:
        run_parser.error(str(exc))
    files = _open_outputs(options, run_parser)
    return run(options, _runner(program), files, config, suppress)
