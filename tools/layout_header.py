"""Write ``pylockdep/_csrc/_held_layout.h``, the header that tells the C module what it shares with the
Python code (see :func:`pylockdep._fastpath.layout_header`).  Run it after changing
``pylockdep._held.HELD_FIELDS``, ``pylockdep._fastpath.SPEEDUPS_ABI`` or
``pylockdep._waitfor.FIRST_SLICE_SECONDS``, then reinstall to rebuild.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["PYLOCKDEP_PURE_PYTHON"] = "1"  # a build that is stale until the header is written is expected

from pylockdep import _fastpath  # noqa: E402 - after the switch above

Path(_fastpath.LAYOUT_HEADER).write_text(_fastpath.layout_header())
print(f"wrote {_fastpath.LAYOUT_HEADER}")
