"""``python -m bench``: see :func:`bench.harness.main`."""

import sys

from bench.harness import main

sys.exit(main())
