"""Silencing reports without losing them: suppressions by kind and class pattern, and a baseline.

A *suppression* names a report kind (or ``"*"``) and ``fnmatch`` patterns.  It silences a report
of that kind when every lock class the report names matches one of the patterns, so a cycle that
runs through a library's locks *and* the user's still shows.  A report that names no class is
matched on its sites (``file:line``) instead, and a report with neither only by the pattern
``"*"``.

A *baseline* is the set of reports a code base already had when pylockdep was adopted: a later
run reports only what is not in it.  Reports are identified by kind and the classes (else sites)
they name; the text, threads and order are not compared, so a baseline survives unrelated edits.

Neither drops anything: :meth:`Suppressions.reason` says why a report is silenced, and the
validator keeps such a report, flagged ``suppressed``, for counting, listing and JSON output.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from ._report import KINDS, Report

BASELINE_FORMAT = 1


class ConfigError(ValueError):
    """A configuration (``[tool.pylockdep]``, a suppression, a baseline file) that cannot be used."""


def report_names(classes: Sequence[str], sites: Sequence[str]) -> tuple[str, ...]:
    """What patterns and the baseline match a report on: its classes, else its sites, else ``("",)``."""
    return tuple(classes) or tuple(sites) or ("",)


@dataclass(frozen=True)
class Suppression:
    """Silence reports of ``kind`` (``"*"``: any) whose every class matches one of ``classes``."""

    kind: str
    classes: tuple[str, ...]
    reason: str = ""

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "suppress") -> Suppression:
        """A suppression from its TOML table (``kind``, ``classes``, optional ``reason``).

        Raises :class:`ConfigError` naming ``where`` for a missing or unknown key, an unknown
        kind, or patterns that are not a non-empty list of strings.
        """
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table with 'kind' and 'classes', not {table!r}")
        unknown = sorted(set(table) - {"kind", "classes", "reason"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: kind, classes, reason)")
        kind = table.get("kind")
        if kind != "*" and kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(sorted(KINDS))} or '*', not {kind!r}")
        patterns = table.get("classes")
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ConfigError(f"{where}: classes must be a non-empty list of fnmatch patterns, not {patterns!r}")
        reason = table.get("reason", "")
        if not isinstance(reason, str):
            raise ConfigError(f"{where}: reason must be a string, not {reason!r}")
        return cls(kind, tuple(patterns), reason)

    def matches(self, report: Report) -> bool:
        """Whether this suppression silences ``report``."""
        if self.kind != "*" and self.kind != report.kind:
            return False
        names = report_names(report.classes, report.sites)
        return all(any(fnmatchcase(name, pattern) for pattern in self.classes) for name in names)

    def describe(self) -> str:
        """``kind [pattern, ...]`` and the reason, as summaries list it."""
        text = f"{self.kind} [{', '.join(self.classes)}]"
        return f"{text}: {self.reason}" if self.reason else text


def _identity(kind: str, names: Iterable[str]) -> tuple[str, frozenset[str]]:
    return (kind, frozenset(names))


@dataclass
class Baseline:
    """The reports a code base is known to have; ``path`` is where they were read from."""

    path: str
    known: set[tuple[str, frozenset[str]]] = field(default_factory=set)

    def __contains__(self, report: Report) -> bool:
        return _identity(report.kind, report_names(report.classes, report.sites)) in self.known

    @classmethod
    def read(cls, path: str) -> Baseline:
        """The baseline in ``path`` (as :func:`write_baseline` writes it); a missing file is empty.

        Raises :class:`ConfigError` for a file that is not a pylockdep baseline.
        """
        baseline = cls(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return baseline
        except (OSError, ValueError) as exc:
            raise ConfigError(f"baseline {path}: cannot read it: {exc}") from None
        if not isinstance(data, dict) or data.get("pylockdep_baseline") != BASELINE_FORMAT:
            raise ConfigError(f"baseline {path}: not a pylockdep baseline (format {BASELINE_FORMAT})")
        for entry in data.get("reports", []):
            try:
                names = report_names(entry.get("classes", ()), entry.get("sites", ()))
                baseline.known.add(_identity(entry["kind"], names))
            except (KeyError, TypeError):
                raise ConfigError(f"baseline {path}: malformed entry {entry!r}") from None
        return baseline


def write_baseline(path: str, reports: Iterable[Report | Mapping[str, Any]]) -> int:
    """Write ``reports`` (:class:`Report` objects or their ``as_dict()``) as a baseline to ``path``.

    Each distinct report (kind and classes, else sites) is written once, sorted, with its title
    for the reader.  Returns how many were written.
    """
    entries: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}
    for report in reports:
        r = report.as_dict() if isinstance(report, Report) else report
        classes = sorted(r["classes"])
        sites = [] if classes else sorted(r["sites"])  # sites identify only a report without classes
        ident = _identity(r["kind"], report_names(classes, sites))
        entries.setdefault(ident, {"kind": r["kind"], "title": r["title"], "classes": classes, "sites": sites})
    ordered = sorted(entries.values(), key=lambda e: (e["kind"], e["classes"], e["sites"]))
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"pylockdep_baseline": BASELINE_FORMAT, "reports": ordered}, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return len(ordered)


@dataclass
class Suppressions:
    """What a validator silences: configured suppressions, then the baseline."""

    entries: tuple[Suppression, ...] = ()
    baseline: Baseline | None = None

    def reason(self, report: Report) -> str | None:
        """Why ``report`` is silenced (``"baseline"`` or the matching suppression), or None."""
        for entry in self.entries:
            if entry.matches(report):
                return "suppress: " + entry.describe()
        if self.baseline is not None and report in self.baseline:
            return "baseline"
        return None


def summary_lines(suppressed: Sequence[Report | Mapping[str, Any]]) -> list[str]:
    """``N report(s) suppressed`` and one line per suppressed report: kind, classes, and why."""
    if not suppressed:
        return []
    lines = [f"{len(suppressed)} report(s) suppressed:"]
    for report in suppressed:
        r = report.as_dict() if isinstance(report, Report) else report
        names = ", ".join(report_names(r["classes"], r["sites"]))
        lines.append(f"  {r['kind']}: {names} ({r.get('suppressed_by') or 'suppressed'})")
    return lines
