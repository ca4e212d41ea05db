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
from ..extras import missing_module, require_extra

SUBCOMMANDS = {
    "segment": "medsam_lite.cli.segment",
    "benchmark": "medsam_lite.cli.benchmark",
    "prep": "medsam_lite.cli.prep",
    "evaluate": "medsam_lite.cli.evaluate",
    "export": "medsam_lite.cli.export",
    "train-teacher": "medsam_lite.cli.train_teacher",
    "distill": "medsam_lite.cli.distill",
    "train-prompts": "medsam_lite.cli.train_prompts",
    "campaign": "medsam_lite.cli.campaign",
    "serve": "medsam_lite.cli.serve",
    "gate": "medsam_lite.cli.gate",
}

EXTRA_OF_COMMAND = {"export": "torch", "benchmark": "torch", "train-teacher": "train", "distill": "train",
                    "train-prompts": "train", "campaign": "train"}
"""Subcommands that need an extra as a whole (checked before they run; ``segment``, ``serve``, ``evaluate``
and ``prep`` run on the base install, their options that need more check it themselves)."""


DESCRIPTION = """\
Box-prompted medical image segmentation (LiteMedSAM) on a CPU: segment NIfTI / MHA / NRRD volumes,
DICOM series, images and challenge .npz cases from boxes, score the masks against labels, or
annotate in the browser. Start with: medsam-lite segment --help"""


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``medsam-lite`` parser with every subcommand (their modules' ``register``), or with ``command`` alone
    when it names one: :func:`main` parses ``medsam-lite segment ...`` without importing the other subcommands'
    modules (the distillation options, the benchmark), ~50-80 ms of every start-up."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="medsam-lite", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medsam-lite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in [SUBCOMMANDS[command]] if command in SUBCOMMANDS else SUBCOMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


EXIT_OK, EXIT_CASE_FAILED, EXIT_USAGE = 0, 1, 2
"""Exit codes of every subcommand: 0 everything done; 1 some case failed (each listed on stderr,
the others done); 2 bad usage or input found before any work (one line on stderr; argparse errors too)."""


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` and run the subcommand; see :data:`EXIT_USAGE` and friends for exit codes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        if args.command in EXTRA_OF_COMMAND:
            require_extra(EXTRA_OF_COMMAND[args.command], "this command")
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"medsam-lite {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:  # a feature whose extra is missing, past the checks of its command
        missing = missing_module(exc)
        if missing is None:
            raise
        print(f"medsam-lite {args.command}: error: {missing}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # an I/O error outside a case (no traceback for a full disk / read-only folder)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"medsam-lite {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
