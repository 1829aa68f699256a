"""``python -m kvm_model``: see :mod:`kvm_model.cli`."""

import sys

from .cli import main

sys.exit(main())
