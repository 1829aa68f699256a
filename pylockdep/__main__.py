"""``python -m pylockdep``: the ``pylockdep`` command (:mod:`pylockdep.cli`)."""

from .cli import main

raise SystemExit(main())
