"""The reports of processes forked from this one.

A child that ``os.fork()`` or ``multiprocessing``'s fork start method makes inherits the validator:
it prints its own splats, but its reports stay in its own memory, and a ``multiprocessing`` child
ends in ``os._exit()``, with no verdict.  So a run (``pylockdep run``, the pytest plugin) keeps a
:class:`ForkedReports`: a child appends each report it makes to a file every process of the run
shares, and the run reads them back to count, as its own, what its children found.
"""

from __future__ import annotations

import contextlib
import json
import os

from ._report import Report


class ForkedReports:
    """The reports forked children of this process pass on, through a temporary file unlinked at
    once and opened for appending (the children's lines never overwrite one another).  Made with
    ``os`` alone: importing ``tempfile`` would make its lock before the program's first line."""

    __slots__ = ("pid", "fd", "offset", "seen")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd = _shared_file()
        self.offset = 0  # how much of the file read() has read
        self.seen: set[tuple[str, tuple[str, ...], str | None]] = set()

    def pass_on(self, report: Report) -> bool:
        """In a forked child: append ``report`` (unless suppressed) for the process that made this
        object, and return True; in that process, return False."""
        if os.getpid() == self.pid:
            return False
        if self.fd is not None and not report.suppressed:
            with contextlib.suppress(OSError):
                os.write(self.fd, (json.dumps(report.as_dict()) + "\n").encode())
        return True

    def read(self) -> list[Report]:
        """The reports forked children passed on since the last call, each (kind, classes, origin)
        once: many children of one pool make the same."""
        if self.fd is None:
            return []
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := os.pread(self.fd, 1 << 16, self.offset):
                chunks.append(chunk)
                self.offset += len(chunk)
        data = b"".join(chunks)
        cut = data.rfind(b"\n") + 1  # a line a child is still writing is read next time
        self.offset -= len(data) - cut
        reports = []
        for line in data[:cut].decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                report = Report.from_dict(json.loads(line))
                key = (report.kind, report.classes, report.origin)
                if key not in self.seen:
                    self.seen.add(key)
                    reports.append(report)
        return reports


def _shared_file() -> int | None:
    """A descriptor of a new temporary file, already unlinked, opened for appending; None where
    there is no ``fork()``, or no such file can be made."""
    if not hasattr(os, "fork"):
        return None
    directory = os.environ.get("TMPDIR") or "/tmp"
    path = os.path.join(directory, f"pylockdep-forked-{os.getpid()}-{os.urandom(6).hex()}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    except OSError:
        return None
    with contextlib.suppress(OSError):
        os.unlink(path)
    return fd
