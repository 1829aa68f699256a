"""``python -m kvm_model.races ...``: the same as ``python -m kvm_model race ...``."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
