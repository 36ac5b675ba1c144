"""`python -m chaos [--seed N] [--short] [--only NAME ...] [--keep]` (from tests/): the campaign."""

from __future__ import annotations

import argparse
import random
import sys

from .campaign import SCENARIOS, campaign
from .driver import ChaosError


def main() -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay the campaign of this seed")
    parser.add_argument("--short", action="store_true", help="the version under a minute")
    parser.add_argument(
        "--only", nargs="+", default=(), metavar="NAME",
        help=f"run these scenarios only: {', '.join(s.name for s in SCENARIOS)}",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the sandboxes for reading")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1, 1_000_000)
    try:
        return campaign(seed, short=options.short, only=options.only, out=sys.stdout,
                        keep=options.keep)  # fmt: skip
    except ChaosError as error:
        print(f"chaos: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
