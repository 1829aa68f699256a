"""What a validator reports: :class:`Report`, and the exceptions it raises."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Report:
    """One problem found, as the splat that describes it.

    ``kind`` is one of the names in the API table (``circular``, ``recursive``, ...), ``title`` the
    splat's header line in the kernel's wording, ``text`` the whole splat as printed, ``classes`` the
    bare names of every lock class involved (for a cycle, every class on it).  ``threads`` names
    the threads involved (``name/ident``), ``sites`` the places in the source (``file:line``), and
    ``origin`` what the validator was told was running (a pytest test id, for instance).
    ``suppressed`` is true for a report that a suppression or the baseline silenced (``suppressed_by``
    says which): it is kept and counted, but prints no splat and fails nothing.
    """

    kind: str
    title: str
    text: str
    classes: tuple[str, ...]
    threads: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    origin: str | None = None
    suppressed: bool = False
    suppressed_by: str | None = None

    def __str__(self) -> str:
        return self.text

    def as_dict(self) -> dict:
        """The report as plain data (for JSON output)."""
        return {
            "kind": self.kind,
            "title": self.title,
            "classes": list(self.classes),
            "threads": list(self.threads),
            "sites": list(self.sites),
            "origin": self.origin,
            "text": self.text,
            "suppressed": self.suppressed,
            "suppressed_by": self.suppressed_by,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        """The report :meth:`as_dict` gave ``data`` of (KeyError or TypeError if it is not one)."""
        return cls(
            kind=str(data["kind"]),
            title=str(data["title"]),
            text=str(data["text"]),
            classes=tuple(data["classes"]),
            threads=tuple(data["threads"]),
            sites=tuple(data["sites"]),
            origin=data["origin"],
            suppressed=bool(data["suppressed"]),
            suppressed_by=data["suppressed_by"],
        )


#: Every kind of report, as ``Report.kind`` names it (the API's table, and capacity limits).
KINDS = frozenset(
    {
        "circular",
        "recursive",
        "invalid_wait_context",
        "sleep_in_atomic",
        "inconsistent_lock_state",
        "irq_inversion",
        "irq_unsafe_order",
        "bad_unlock_balance",
        "context_imbalance",
        "suspicious_rcu_usage",
        "assert_held",
        "lock_held_at_exit",
        "scheduling_while_atomic",
        "loop_blocked",
        "hung_task",
        "limit_exceeded",
    }
)


class LockdepViolation(AssertionError):
    """Raised on leaving ``validate()`` when reports were made; ``.reports`` lists them."""

    def __init__(self, reports: list[Report]) -> None:
        self.reports = list(reports)
        kinds = ", ".join(r.kind for r in self.reports)
        body = "\n".join(r.text for r in self.reports)
        super().__init__(f"pylockdep found {len(self.reports)} problem(s): {kinds}\n{body}")


class DeadlockError(RuntimeError):
    """Raised instead of blocking for ever: the wait could never end (the message says why)."""
