"""The ``deam-mamba`` command: parses arguments and calls library functions, nothing else.

Each subcommand is one ``_cmd_<name>(sub)`` function that adds its parser and sets
``func``; ``COMMANDS`` lists them. Library errors (:class:`DeamError`) print as one line.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from .errors import DeamError


# --- subcommands --------------------------------------------------------------------------


# (each helper adds its _cmd_* function above this line)

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deam-mamba",
        description="Train and serve MambaVision models that predict music emotion (DEAM valence/arousal).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except DeamError as exc:
        print(f"deam-mamba {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deam-mamba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m deam_mamba.cli
    sys.exit(main())
