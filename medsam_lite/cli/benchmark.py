"""``medsam-lite benchmark``: speed of our Predictor against the LiteMedSAM baseline, in one run."""
from __future__ import annotations

import argparse
from typing import Any

BACKENDS = ("eager", "torchscript", "onnxruntime", "onnxruntime-int8")
"""``--backends`` choices (same as :data:`medsam_lite.benchmark.backends.BACKENDS`; kept here so --help stays light)."""


def register(subparsers: Any) -> None:
    """Add the ``benchmark`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "benchmark", help="time encoders, decoder and whole cases: baseline vs ours",
        description="Time every registry image encoder, the prompt encoder + mask decoder per box, whole cases "
        "(bundled examples and, in full mode, generated 287x512x512 / 1024x1024 cases) with the LiteMedSAM baseline "
        "(no embedding cache, one box at a time) against our Predictor, and scaling in boxes and slices. Writes "
        "benchmark.json, benchmark.md and benchmark.png into --out.")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--models", nargs="+", default=["lite_medsam"],
                   help="model specs timed as 'ours': pretrained name, checkpoint path, random:<encoder> (random "
                        "weights, timing only), optional +fused suffix (default: lite_medsam)")
    p.add_argument("--baseline-model", default="lite_medsam", help="model spec for the baseline path")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per latency (median; default 5)")
    p.add_argument("--quick", action="store_true", help="tiny cases and grids (seconds; for tests)")
    p.add_argument("--encoders", nargs="+", default=None, help="registry encoders to time (default: all)")
    p.add_argument("--max-calls", type=int, default=None,
                   help="cap on baseline encoder calls (3D) / decoder calls (2D) per measurement; larger cases "
                        "are measured on a labelled subset, larger scaling cells are skipped (never extrapolated)")
    p.add_argument("--scaling-model", default=None, help="model spec for the scaling table (default: baseline)")
    p.add_argument("--scaling-max-calls", type=int, default=None,
                   help="--max-calls for the scaling table (default: --max-calls)")
    p.add_argument("--boxes", type=int, nargs="+", default=None, help="scaling: box counts (default 1 2 4 8)")
    p.add_argument("--slices", type=int, nargs="+", default=None, help="scaling: slice counts (default 50 100 200)")
    p.add_argument("--backends", nargs="+", default=None, choices=BACKENDS, metavar="BACKEND",
                   help="also time the first --models model with these backends (" + ", ".join(BACKENDS) + ") on "
                        "the bundled cases: seconds, agreement with eager, DSC vs ground truth, artifact size, "
                        "load time (default: none)")
    p.add_argument("--backends-all-cases", action="store_true",
                   help="full mode: include the generated large cases in the backend comparison")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse arguments and call :func:`medsam_lite.benchmark.core.run_benchmark`."""
    import torch

    from ..benchmark.core import run_benchmark
    from ..errors import InputError

    if args.threads < 1 or args.repeats < 1:
        raise InputError("--threads and --repeats must be at least 1")
    torch.set_num_threads(args.threads)  # process state belongs to the entry point
    run_benchmark(args.out, models=tuple(args.models), baseline_model=args.baseline_model, threads=args.threads,
                  repeats=args.repeats, quick=args.quick, encoders=args.encoders, max_calls=args.max_calls,
                  scaling_model=args.scaling_model,
                  scaling_max_calls=args.scaling_max_calls, box_counts=args.boxes, slice_counts=args.slices,
                  backends=args.backends, backends_all_cases=args.backends_all_cases)
    return 0
