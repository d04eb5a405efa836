"""``python -m projectable ...``: the same command line as the ``projectable`` console script."""

import sys

from projectable.cli import main

if __name__ == "__main__":
    sys.exit(main())
