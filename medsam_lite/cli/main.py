"""``medsam-lite`` console script: dispatches to one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=run``; ``run(args) -> int`` only converts arguments and calls a typed library function.
Heavy imports (torch, models) happen inside ``run``, so ``medsam-lite --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ..errors import InputError

SUBCOMMANDS = {
    "segment": "medsam_lite.cli.segment",
    "benchmark": "medsam_lite.cli.benchmark",
    "prep": "medsam_lite.cli.prep",
    "evaluate": "medsam_lite.cli.evaluate",
    "export": "medsam_lite.cli.export",
    "train-teacher": "medsam_lite.cli.train_teacher",
    "distill": "medsam_lite.cli.distill",
    "serve": "medsam_lite.cli.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsam-lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` and run the subcommand; bad input exits 2 with one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"medsam-lite {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
