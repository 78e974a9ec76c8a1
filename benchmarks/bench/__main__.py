"""``python -m benchmarks.bench …`` from the checkout: ``python benchmarks/run.py …``."""

import sys

from .cli import main

sys.exit(main())
