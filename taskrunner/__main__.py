"""`python -m taskrunner`: the same as the `taskrunner` command."""

import sys

from .entry import main

if __name__ == "__main__":
    sys.exit(main())
