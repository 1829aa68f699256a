"""The ``pylockdep`` command: run a Python program with its locks validated.

``pylockdep run [OPTIONS] SCRIPT [ARGS...]`` and ``pylockdep run [OPTIONS] -m MODULE [ARGS...]``
(also ``python -m pylockdep run ...``) run the program as ``python SCRIPT ARGS`` or
``python -m MODULE ARGS`` would (same ``sys.argv``, ``sys.path[0]`` and ``__main__``), with
:class:`~pylockdep.instrument_threading` installed before its first line and a fresh validator
in force.  Splats go to stderr as they are found.  Once the program is done, its non-daemon
threads are waited for, as the interpreter does at exit, so what they do is validated too; then
the main thread ends, and the locks with an owner it still holds are reported, as for any thread.

Exit status: :data:`REPORT_STATUS` (1) when a report was made, otherwise the program's own status
(``sys.exit()`` codes as Python maps them, 1 for an uncaught exception).

Options: ``--json FILE`` writes each report as a JSON line (:meth:`pylockdep.Report.as_dict`),
``--dot FILE`` the lock-class dependency graph as Graphviz DOT, ``--preempt-rt`` and
``--no-raw-nesting`` set the validator's kernel flavour (:func:`pylockdep.validate`).

Configuration comes from ``[tool.pylockdep]`` of the nearest ``pyproject.toml`` (or ``--config
FILE``): validator options, which the flags above override, suppressions and a baseline.  A
report that a suppression or the baseline (``--baseline FILE``) silences prints no splat and does
not change the exit status; the final summary counts and lists it.  ``--write-baseline FILE``
also writes the run's reports (those the baseline silenced included) as the new baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO

from ._config import Config, ConfigError
from ._config import load as load_config
from ._export import graph_to_dot
from ._report import Report
from ._suppress import Suppressions, summary_lines
from ._suppress import write_baseline as write_baseline_file
from ._threading import instrument_threading
from ._validator import Validator, validate

REPORT_STATUS = 1
_VALUE_OPTIONS = ("--json", "--dot", "--config", "--baseline", "--write-baseline")
_RUNNER_FILES = (__file__, runpy.run_path.__code__.co_filename)


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command's parser and its ``run`` subcommand's."""
    parser = argparse.ArgumentParser(
        prog="pylockdep", description="Runtime lock-dependency validation for Python programs."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a program with threading locks validated",
        usage="pylockdep run [OPTIONS] (SCRIPT | -m MODULE) [ARGS...]",
        description="Run SCRIPT (or -m MODULE) with threading.Lock/RLock/Condition validated from its "
        f"first line; splats go to stderr.  Exits {REPORT_STATUS} when a report was made, "
        "else with the program's own status.",
    )
    run.add_argument("--json", metavar="FILE", help="write each report as a JSON line to FILE")
    run.add_argument("--dot", metavar="FILE", help="write the lock-class graph as Graphviz DOT to FILE")
    run.add_argument("--preempt-rt", action="store_true", help="check as a PREEMPT_RT kernel would run")
    run.add_argument(
        "--no-raw-nesting",
        action="store_true",
        help="no CONFIG_PROVE_RAW_LOCK_NESTING checks (spinlock_t inside raw_spinlock_t)",
    )
    run.add_argument("--config", metavar="FILE", help="read [tool.pylockdep] from FILE, not the nearest pyproject.toml")
    run.add_argument("--baseline", metavar="FILE", help="report only what is not in this baseline file")
    run.add_argument("--write-baseline", metavar="FILE", help="write this run's reports to FILE as the baseline")
    return parser, run


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
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    return lambda: runpy.run_path(script, run_name="__main__")


def _run_program(program: Callable[[], object]) -> int:
    """Run the program; its exit status, as the interpreter would give it."""
    try:
        program()
    except SystemExit as exc:
        return _exit_status(exc.code)
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename in _RUNNER_FILES:
            tb = tb.tb_next  # start the traceback in the program, as Python's own does
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 1
    return 0


def _end_program(v: Validator) -> None:
    """What the interpreter does before it exits: run threading's exit hooks (executors shut down)
    and join non-daemon threads.  Then the main thread is done: the locks it still holds are
    reported now, as any thread's are when it ends, not after the verdict at interpreter exit."""
    threading._shutdown()  # type: ignore[attr-defined]
    main = getattr(v.local, "task", None)
    if main is not None:
        v._thread_exited(main, os.getpid())


def run(
    options: argparse.Namespace,
    runner: Callable[[], object],
    config: Config | None = None,
    suppress: Suppressions | None = None,
) -> int:
    """``pylockdep run``: run the program, then the interpreter's exit steps; the exit status.

    ``config`` gives validator options (the flags in ``options`` win), ``suppress`` what to silence.
    """
    dot_path = os.path.abspath(options.dot) if options.dot else None  # the program may chdir
    config = config or Config()
    flavour = dict(config.options)
    if options.preempt_rt:
        flavour["preempt_rt"] = True
    if options.no_raw_nesting:
        flavour["prove_raw_lock_nesting"] = False
    write_baseline = os.path.abspath(options.write_baseline) if options.write_baseline else None
    with contextlib.ExitStack() as stack:
        v = stack.enter_context(validate(**flavour, raise_on_report=False, stream=sys.stderr))
        v.suppress = suppress
        if options.json:
            v.listeners.append(_json_writer(stack.enter_context(open(options.json, "w", encoding="utf-8"))))
        with instrument_threading():
            status = _run_program(runner)
            _end_program(v)
    if dot_path:
        with open(dot_path, "w", encoding="utf-8") as f:
            f.write(graph_to_dot(v))
    for line in summary_lines(v.suppressed):
        print(f"pylockdep: {line}", file=sys.stderr)
    if write_baseline:
        known = v.reports + [r for r in v.suppressed if r.suppressed_by == "baseline"]
        written = write_baseline_file(write_baseline, known)
        print(f"pylockdep: {written} report(s) written to the baseline {options.write_baseline}", file=sys.stderr)
    if v.reports:
        kinds = ", ".join(sorted({r.kind for r in v.reports}))
        print(f"pylockdep: {len(v.reports)} report(s): {kinds}", file=sys.stderr)
        return REPORT_STATUS
    return status


def _json_writer(f: IO[str]) -> Callable[[Report], None]:
    """A listener writing each report as one JSON line."""

    def write(report: Report) -> None:
        f.write(json.dumps(report.as_dict()) + "\n")
        f.flush()

    return write


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pylockdep`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, run_parser = _parsers()
    if argv[:1] != ["run"]:
        parser.parse_args(argv)  # help, or the error for a missing or unknown command
        return 2
    ours, program = _split(argv[1:])
    options = parser.parse_args(["run", *ours])
    if program[:1] == ["-m"] and len(program) < 2:
        run_parser.error("argument -m: expected a module name")
    if not program:
        run_parser.error("a SCRIPT or -m MODULE is required")
    try:
        config = load_config(options.config)
        suppress = config.suppressions(options.baseline)
    except ConfigError as exc:
        run_parser.error(str(exc))
    return run(options, _runner(program), config, suppress)
