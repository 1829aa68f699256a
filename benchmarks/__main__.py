"""``python -m benchmarks``: every benchmark in one table (see :mod:`benchmarks.run`)."""

from benchmarks.run import main

raise SystemExit(main())
