"""``medsam-lite benchmark``: speed of our Predictor against the LiteMedSAM baseline, in one run."""
from __future__ import annotations

import argparse
from typing import Any

from ..benchmark import BACKENDS  # the package __init__ imports nothing heavy: --help stays fast


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
    p.add_argument("--inference", nargs="*", metavar="BACKEND:PRECISION", default=None,
                   help="run only the fast-inference benchmark: the LiteMedSAM baseline algorithm against ours for "
                        "each configuration (default torch:fp32 onnxruntime:fp32 openvino:fp32 openvino:bf16; auto "
                        "allowed), in process and as whole 'medsam-lite segment' processes; writes inference.json / "
                        "inference.md into --out")
    p.add_argument("--model", default="lite_medsam", help="--inference: the model timed (default lite_medsam)")
    p.add_argument("--no-whole-process", action="store_true", help="--inference: skip the whole-process runs")
    p.add_argument("--cases", nargs="+", default=None, metavar="NAME",
                   help="--inference: only these cases (full mode: 2d_nuclei_125boxes 3d_ct_5organs 3d_mr_1box "
                        "3d_ct_133x512x512_6boxes 2d_nuclei_1024_241boxes)")
    p.add_argument("--baseline-max-encoder-calls", type=int, default=None, metavar="N",
                   help="--inference: skip the baseline on cases needing more than N encoder calls")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parse arguments and call :func:`medsam_lite.benchmark.core.run_benchmark`."""
    import torch

    from ..benchmark.core import run_benchmark
    from ..errors import InputError

    if args.threads < 1 or args.repeats < 1:
        raise InputError("--threads and --repeats must be at least 1")
    torch.set_num_threads(args.threads)  # process state belongs to the entry point
    if args.inference is not None:
        return _run_inference(args)
    run_benchmark(args.out, models=tuple(args.models), baseline_model=args.baseline_model, threads=args.threads,
                  repeats=args.repeats, quick=args.quick, encoders=args.encoders, max_calls=args.max_calls,
                  scaling_model=args.scaling_model,
                  scaling_max_calls=args.scaling_max_calls, box_counts=args.boxes, slice_counts=args.slices,
                  backends=args.backends, backends_all_cases=args.backends_all_cases)
    return 0


def _run_inference(args: argparse.Namespace) -> int:
    """``--inference``: :func:`medsam_lite.benchmark.inference.run_inference_bench`, written to ``--out``."""
    import json
    from pathlib import Path

    from ..benchmark.inference import DEFAULT_CONFIGS, InferenceBenchConfig, markdown_lines, run_inference_bench
    from ..benchmark.timing import machine_info
    from ..io_utils import atomic_path

    cfg = InferenceBenchConfig(model=args.model, configs=tuple(args.inference or DEFAULT_CONFIGS), quick=args.quick,
                               whole_process=not args.no_whole_process,
                               baseline_max_calls=args.baseline_max_encoder_calls, repeats=args.repeats,
                               threads=args.threads, cases=args.cases)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    section = run_inference_bench(cfg, log=print)
    result = {"machine": machine_info(args.threads), "settings": {**cfg.__dict__, "configs": list(cfg.configs)},
              "inference": section}
    with atomic_path(out / "inference.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    lines = [f"# medsam-lite inference benchmark", "", f"Machine: {result['machine']['cpu']} "
             f"({result['machine']['cpu_count']} logical CPUs), torch {result['machine']['torch']}, "
             f"{args.threads} threads. All numbers measured in this one run.", ""] + markdown_lines(section)
    with atomic_path(out / "inference.md") as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0
