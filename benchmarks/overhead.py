"""The lock rows of the benchmark table: ``python benchmarks/overhead.py [ARGS]``.

The same as ``python -m benchmarks --skip sections,creation,threading,memory,scaling,graph,programs
[ARGS]``: ``with`` blocks on Mutex, SpinLock and instrumented threading locks, depth 1 and 4, against
CPython's own locks, C and pure paths.  See :mod:`benchmarks.run`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run import main  # noqa: E402

raise SystemExit(main(["--skip", "sections,creation,threading,memory,scaling,graph,programs", *sys.argv[1:]]))
