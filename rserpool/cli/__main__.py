"""``python -m rserpool.cli``: the same as the ``rserpool`` console script."""

import sys

from rserpool.cli import main

sys.exit(main())
