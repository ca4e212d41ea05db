"""``medsam-lite gate``: measure this CPU (agreement and speed of OpenVINO's precisions against fp32) and store
the decision ``auto`` then uses, in the user cache folder (never in the installed package)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..backends.decision import SPEED_MARGIN
from ..errors import InputError
from .benchmark import SHARED_ENV


def register(subparsers: Any) -> None:
    """Add the ``gate`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "gate", help="measure which OpenVINO precision 'auto' should run on this CPU (agreement and speed)",
        description="Measure OpenVINO fp32 and the reduced precisions 'auto' may run (bf16, bf16-encoder, int8; "
        "bf16 ones only where the CPU computes bf16 natively) on this CPU: agreement with eager torch fp32 on the "
        "bundled examples, and encoder / decoder speed against fp32 (interleaved, medians). Writes this CPU kind's "
        "entry into gate.json in the user cache folder ($MEDSAM_LITE_CACHE or the platform's cache folder), which "
        "'auto' reads before the project's committed decision. A reduced precision is chosen only when it passes "
        f"the agreement rule and is at least {SPEED_MARGIN:.0%} faster than fp32. Needs torch (the eager reference).")
    p.add_argument("--quick", action="store_true", help="fewer cases and timing rounds (about a minute or two)")
    p.add_argument("--precisions", nargs="+", default=None, metavar="PRECISION",
                   help="OpenVINO precisions to measure besides fp32 (default: every one 'auto' may run)")
    p.add_argument("--shared", type=Path, default=os.environ.get(SHARED_ENV),
                   help=f"labelled data folder with more cases (default: ${SHARED_ENV}; none: bundled examples only)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="report folder (gate.json / gate.md; default: gate-report in the user cache folder)")
    p.add_argument("--cache-dir", type=Path, default=None, help="artifact cache root of the converted models")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure (:func:`medsam_lite.bench.gate.run_gate`), then write the report and the user's decision."""
    import torch

    from ..backends.cpu import this_cpu_kind
    from ..backends.decision import AUTO_CANDIDATES, auto_precision, user_gate_file
    from ..bench.gate import GateConfig, run_gate, write_decision, write_report
    from ..checkpoint import load_model

    if args.threads < 1:
        raise InputError("--threads must be at least 1")
    if args.shared is not None and not Path(args.shared).is_dir():
        raise InputError(f"--shared {args.shared}: not a folder")
    precisions = args.precisions or list(AUTO_CANDIDATES)
    unknown = [p for p in precisions if p not in AUTO_CANDIDATES]
    if unknown:
        raise InputError(f"--precisions: {', '.join(unknown)} not among {', '.join(AUTO_CANDIDATES)}")
    torch.set_num_threads(args.threads)
    variants = ("openvino:fp32",) + tuple(f"openvino:{p}" for p in precisions)
    cfg = GateConfig(shared=args.shared, threads=args.threads, quick=args.quick, cache_dir=args.cache_dir,
                     variants=variants, speed_rounds=5 if args.quick else 9, nuclei_boxes=8 if args.quick else 20)
    report = run_gate(load_model("lite_medsam"), cfg)
    decision_path = user_gate_file()
    json_path, md_path = write_report(report, args.out or decision_path.parent / "gate-report")
    write_decision(report, str(md_path), decision_path)
    print(f"wrote {json_path} and {md_path}")
    print(f"wrote the {this_cpu_kind()} entry of {decision_path}: 'auto' now runs OpenVINO {auto_precision()}")
    return 0
