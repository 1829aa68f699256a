"""``python -m kvm_model``: run the model as one kernel state, or the SPTE race models.

``python -m kvm_model --config CONFIG [--preempt-rt] [--vms N] [--vcpus N] [--iterations N]
[--seed S]`` prints every lockdep splat of the run to stdout and exits 1 if there was one, 0 if
not, 2 if the model itself failed (a violated invariant, a stuck phase).
``python -m kvm_model race ...`` hands the rest of the command line to :func:`kvm_model.races.main`.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from .config import CONFIGS
from .run import RunResult, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kvm_model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="configurations (kernel version): what they are [the verdict each gives]:\n"
        + "\n".join(f"  {c.help_line}" for c in CONFIGS.values()),
        description=textwrap.fill(
            "Run a threaded model of KVM's VMs, shadow MMU, shrinker, MMU notifier, hardware "
            "enabling and CPU hotplug under pylockdep, as the kernel was at CONFIG (a later bug: the "
            "threads of its chain), checked and printed as that kernel's lockdep did (--modern: as "
            "today's). Exit status: 1 when lockdep reported something, 0 when not, 2 when the model failed. "
            "'python -m kvm_model race --help' describes the SPTE race models."
        ),
    )
    parser.add_argument(
        "--config",
        required=True,
        choices=list(CONFIGS),
        metavar="CONFIG",
        help="the kernel state to run as (see the list below)",
    )
    parser.add_argument("--preempt-rt", action="store_true", help="check as a PREEMPT_RT kernel runs")
    parser.add_argument(
        "--modern",
        action="store_true",
        help="check and print as today's lockdep (CONFIG_PROVE_RAW_LOCK_NESTING: invalid wait context), "
        "not as the configuration's kernel did",
    )
    parser.add_argument("--vms", type=int, default=2, help="number of VMs (default 2)")
    parser.add_argument("--vcpus", type=int, default=2, help="vCPUs per VM (default 2)")
    parser.add_argument(
        "--iterations",
        type=int,
        default=3,
        help="memslot updates, balloon ranges, stat reads and cpufreq changes (default 3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the guests' accesses (default 0)")
    return parser


def describe(result: RunResult) -> str:
    """The closing summary line of a run, for stderr."""
    rt = (" --preempt-rt" if result.preempt_rt else "") + (" --modern" if result.modern else "")
    kinds = ", ".join(r.kind for r in result.reports) or "none"
    return f"kvm_model --config {result.config}{rt}: lockdep reports: {kinds}; exit {result.exit_code}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["race"]:
        from .races import main as race_main

        return race_main(argv[1:])
    args = _parser().parse_args(argv)
    for name in ("vms", "vcpus", "iterations"):
        if getattr(args, name) < 1:
            _parser().error(f"--{name} must be at least 1")
    result = run(
        args.config,
        preempt_rt=args.preempt_rt,
        modern=args.modern,
        vms=args.vms,
        vcpus=args.vcpus,
        iterations=args.iterations,
        seed=args.seed,
    )
    for report in result.reports:
        print(report.text, flush=True)
    for error in result.errors:
        print(f"kvm_model: error: {error}", file=sys.stderr)
    for violation in result.violations:
        print(f"kvm_model: invariant violated: {violation}", file=sys.stderr)
    print(describe(result), file=sys.stderr)
    return result.exit_code
