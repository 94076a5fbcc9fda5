"""``python -m subiso check MODULE...``: see :mod:`subiso._check`."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "check":
        print("usage: python -m subiso check [--json | --markdown] MODULE...", file=sys.stderr)
        return 2
    from ._check import main as check

    return check(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
