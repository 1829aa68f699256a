"""``python -m kvm_model.verdicts [--runs N] [--modern]``: run every configuration N times (default 20),
without and with PREEMPT_RT, and check that each run gives the documented verdict.

Prints one line per configuration and mode with how many runs gave the verdict; exits 1 if any run
did not, 0 otherwise.  The test suite runs each configuration once; this is the repeated check.
"""

from __future__ import annotations

import argparse
import sys

from .config import CONFIGS
from .run import run


def check(runs: int, names: list[str], modern: bool = False) -> bool:
    """Run each configuration of ``names`` ``runs`` times per mode (as today's lockdep when
    ``modern``); print the tally; True if every run gave the documented verdict."""
    ok = True
    for name in names:
        config = CONFIGS[name]
        for rt in (False, True):
            expected = config.expected(rt, modern)
            seen = []
            for _ in range(runs):
                result = run(config, preempt_rt=rt, modern=modern)
                seen.append(tuple(r.kind for r in result.reports) if not (result.errors or result.violations) else None)
            good = seen.count(tuple(expected))
            ok &= good == runs
            mode = "--preempt-rt" if rt else "no RT"
            verdict = ", ".join(expected) or "clean"
            others = sorted({str(s) for s in seen if s != tuple(expected)})
            print(f"{name:24} {mode:13} {verdict:45} {good}/{runs}" + (f"  other: {others}" if others else ""))
            sys.stdout.flush()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvm_model.verdicts", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per configuration and mode (default 20)")
    parser.add_argument("--modern", action="store_true", help="check as today's lockdep")
    parser.add_argument("configs", nargs="*", choices=[[], *CONFIGS], help="configurations (default: all)")
    args = parser.parse_args(argv)
    return 0 if check(args.runs, args.configs or list(CONFIGS), args.modern) else 1


if __name__ == "__main__":
    sys.exit(main())
