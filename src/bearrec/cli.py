"""The `bearrec` command line: each subcommand parses its options and calls one library function."""
from __future__ import annotations

import argparse
import sys

from .errors import BearrecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bearrec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bearrec {_version()}")
    parser.add_subparsers(dest="command", required=True)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BearrecError as e:
        print(f"bearrec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
