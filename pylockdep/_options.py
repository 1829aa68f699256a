"""A validator's options: one frozen :class:`Options`, checked once, where it is made.

``Validator(...)``, ``validate(...)`` and ``configure(...)`` take these names as keyword arguments
and build an :class:`Options` from them, so a wrong value fails at that call with a clear
:class:`TypeError` or :class:`ValueError`, never later inside the validator.  A new option is
added here, once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import IO, Any

_BOOLS = ("preempt_rt", "prove_raw_lock_nesting", "raise_on_report", "report_once")
ERAS = ("modern", "3.4", "3.10")
_LIMITS = ("max_classes", "max_dependencies", "max_lock_depth")


@dataclass(frozen=True)
class Options:
    """What a validator checks and where its reports go.

    ``preempt_rt``: check as a PREEMPT_RT kernel (``spinlock_t`` and ``rwlock_t`` sleep).
    ``prove_raw_lock_nesting``: CONFIG_PROVE_RAW_LOCK_NESTING (always on with ``preempt_rt``).
    ``raise_on_report``: ``validate()`` raises :class:`~pylockdep.LockdepViolation` on exit when
    anything was reported.  ``stream``: receives every splat as it is made (None: none).
    ``max_classes``, ``max_dependencies``, ``max_lock_depth``: capacity limits, positive ints or
    None (unlimited, the default: no fixed limit, held-lock depth included, as ``API.md`` promises;
    the kernel's MAX_LOCK_DEPTH is 48); reaching one stops validation with a report, never with a
    wrong verdict.
    ``era``: which kernels' lockdep to check and print as: ``"modern"`` (today's), ``"3.4"`` or
    ``"3.10"`` (no wait-context check, the 3.x splat layout; 3.10 from its dump line on).
    ``report_once``: as the kernel (``debug_locks_off()``), stop lockdep reports after the first;
    "sleeping function called from invalid context" still prints, with ``INFO: lockdep is turned
    off.`` where the held locks were.  Off by default: pylockdep carries on and reports each problem.
    """

    preempt_rt: bool = False
    prove_raw_lock_nesting: bool = True
    raise_on_report: bool = True
    stream: IO[str] | None = None
    max_classes: int | None = None
    max_dependencies: int | None = None
    max_lock_depth: int | None = None
    era: str = "modern"
    report_once: bool = False

    def __post_init__(self) -> None:
        for name in _BOOLS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, not {value!r}")
        for name in _LIMITS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if self.era not in ERAS:
            raise ValueError(f"era must be one of {', '.join(ERAS)}, not {self.era!r}")
        if self.stream is not None and not callable(getattr(self.stream, "write", None)):
            raise TypeError(f"stream must be a text stream (with write()) or None, not {self.stream!r}")

    @property
    def nesting(self) -> bool:
        """Whether raw-lock nesting is checked: asked for, or implied by PREEMPT_RT."""
        return self.prove_raw_lock_nesting or self.preempt_rt

    def replace(self, **changes: Any) -> Options:
        """These options with ``changes`` (option names as keywords), checked as a new Options is.

        An unknown name is a :class:`TypeError` that says which names there are.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(self))
            raise TypeError(f"unknown validator option(s) {', '.join(unknown)} (options: {known})")
        return dataclasses.replace(self, **changes)
