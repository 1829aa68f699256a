"""The lock table: one source of truth for every lock the model takes.

Locks are described by records with the fields of section 3 of KVM's ``locking.txt`` (name, type,
arch, protects, comment).  Two data files ship with the package: ``kvm-locking.txt``, a copy of
the kernel document as of 2f303b74a6 (only its "3. Reference" section is read), and
``model-locks.txt``, the same format for the locks the document does not list.  A configuration
(:mod:`kvm_model.config`) changes record types, nothing else; :meth:`LockTable.new` then builds
the pylockdep lock for a record, under the name lockdep prints for it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import pylockdep

FIELDS = ("name", "type", "arch", "protects", "comment", "since", "until")


@dataclasses.dataclass(frozen=True)
class LockRecord:
    """One entry of the lock table; multi-line fields keep their line breaks."""

    name: str
    type: str
    arch: str
    protects: str
    comment: str = ""
    since: str = ""  # first kernel version that has the lock ("" = every modelled version)
    until: str = ""  # first kernel version that no longer has it ("" = still there)

    def exists_in(self, version: str) -> bool:
        """Whether kernel ``version`` (``"3.10"``) has this lock."""
        v = parse_version(version)
        return (not self.since or parse_version(self.since) <= v) and (not self.until or v < parse_version(self.until))

    @property
    def lockdep_name(self) -> str:
        """The class name lockdep prints: ``&kvm->mmu_lock`` for a lock inside an object
        (``kvm_arch::x`` lives at ``kvm->arch.x``), the bare variable name for a static lock."""
        if "::" in self.name:
            struct, member = self.name.split("::", 1)
            return f"&{_EMBEDDED_IN[struct]}.{member}"
        if "->" in self.name:
            return "&" + self.name
        return self.name


def parse_version(version: str) -> tuple[int, ...]:
    """``"3.10"`` as ``(3, 10)``, so that versions compare as numbers."""
    return tuple(int(part) for part in version.split("."))


# Structures that the kernel embeds in another one, spelled as the path from the outer object.
_EMBEDDED_IN = {"kvm_arch": "kvm->arch", "vcpu_arch": "vcpu->arch"}

# Type spellings of the table, mapped to the pylockdep class that models them.
LOCK_CLASSES: Mapping[str, type[Any]] = {
    "raw_spinlock_t": pylockdep.RawSpinLock,
    "raw_spinlock": pylockdep.RawSpinLock,
    "spinlock_t": pylockdep.SpinLock,
    "rwlock_t": pylockdep.RWLock,
    "mutex": pylockdep.Mutex,
    "rw_semaphore": pylockdep.RWSemaphore,
    "srcu lock": pylockdep.SRCU,
}

_FIELD_LINE = re.compile(r"^(Name|Type|Arch|Protects|Comment|Since|Until):\s*(.*)$")


def parse_records(text: str) -> list[LockRecord]:
    """Parse every ``Name:``/``Type:``/``Arch:``/``Protects:``/``Comment:`` record in ``text``
    (the model's own records add ``Since:``/``Until:``, the kernel versions that have the lock).

    A record starts at a ``Name:`` line; a line that starts no field continues the previous
    field, and a blank line ends the record.  Raises ``ValueError`` for a record without a type
    or with a type that :data:`LOCK_CLASSES` does not know.
    """
    records: list[LockRecord] = []
    fields: dict[str, str] = {}
    current = ""

    def finish() -> None:
        if not fields:
            return
        if "type" not in fields:
            raise ValueError(f"lock record {fields.get('name')!r} has no Type")
        if fields["type"] not in LOCK_CLASSES:
            raise ValueError(f"lock record {fields['name']!r} has an unknown type {fields['type']!r}")
        records.append(LockRecord(**{f: fields.get(f, "") for f in FIELDS}))
        fields.clear()

    for line in text.splitlines():
        match = _FIELD_LINE.match(line)
        if match:
            if match.group(1) == "Name":
                finish()
            current = match.group(1).lower()
            fields[current] = match.group(2).strip()
        elif not line.strip():
            finish()
            current = ""
        elif current:
            fields[current] += "\n" + line.strip()
    finish()
    return records


def reference_section(text: str) -> str:
    """The "3. Reference" section of ``locking.txt``: from its heading to the end of the text."""
    match = re.search(r"^3\. Reference\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError("locking.txt has no '3. Reference' section")
    return text[match.end() :]


def load_records() -> list[LockRecord]:
    """The records of both shipped data files: locking.txt's reference table, then the model's."""
    package = resources.files("kvm_model")
    kernel = (package / "kvm-locking.txt").read_text(encoding="utf-8")
    model = (package / "model-locks.txt").read_text(encoding="utf-8")
    return parse_records(reference_section(kernel)) + parse_records(model)


class LockTable:
    """Records by name, and the factory of the locks they describe.

    Every lock is created by the one line in :meth:`new`, so pylockdep gives all locks built from
    one record (every VM's ``&kvm->mmu_lock``) one lock class, as a ``spin_lock_init()`` site does.
    """

    def __init__(self, records: Iterable[LockRecord]) -> None:
        self.records: dict[str, LockRecord] = {r.name: r for r in records}

    def __contains__(self, name: str) -> bool:
        return name in self.records

    def new(self, name: str) -> Any:
        """A new lock for the record ``name``: of its type's pylockdep class, named for lockdep.

        Raises ``KeyError`` when the table (as configured) has no such lock.
        """
        record = self.records[name]
        return LOCK_CLASSES[record.type](record.lockdep_name)
