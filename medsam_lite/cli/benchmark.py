"""``medsam-lite benchmark``: the measurements of :mod:`medsam_lite.bench`, one subcommand each.

* ``speed``: encoders, decoder, whole cases and scaling, the LiteMedSAM baseline against our Predictor
  (optionally the backend comparison); writes benchmark.json / .md / .png into ``-o``.
* ``inference``: the baseline algorithm against ours on every ``BACKEND:PRECISION``; inference.json / .md.
* ``gate``: may ``auto`` run a reduced precision? gate.json / gate.md, ``--decide`` writes the decision file.
* ``fidelity``: students against their teacher on held-out data; fidelity.json / .md.
* ``serve``: latency of the annotator's API on the bundled cases (JSON on stdout).
* ``report``: our default whole process against the baseline with its time breakdown, first-mask time, install
  size, the CPU named; report.json / report.md.

``medsam-lite benchmark -o DIR [--quick ...]`` (no subcommand) is ``benchmark speed``, and
``medsam-lite benchmark --inference [BACKEND:PRECISION ...] -o DIR`` is ``benchmark inference``, as before.
Folders are always given (``-o``, ``--shared`` or ``$MEDSAM_LITE_SHARED``); nothing defaults into a checkout.
Heavy imports happen inside the ``run_*`` functions, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict

from ..bench import INFERENCE_DEFAULT, compare_choice  # imports no torch: --help stays fast
from ..errors import InputError

SHARED_ENV = "MEDSAM_LITE_SHARED"
"""Environment variable ``--shared`` defaults to (the shared data folder; no built-in default)."""



def _backend_row(text: str) -> str:
    try:
        return compare_choice(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _speed_args(p: argparse.ArgumentParser, out_required: bool) -> None:
    """Options of ``benchmark speed`` (also accepted without the subcommand)."""
    p.add_argument("-o", "--out", required=out_required, help="output folder")
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
    p.add_argument("--backends", nargs="+", default=None, type=_backend_row, metavar="BACKEND:PRECISION",
                   help="also time the first --models model with these backends on the bundled cases: seconds, "
                        "agreement with torch:fp32 (eager), DSC vs ground truth, artifact size, load time. Registry "
                        "choices (torch:fp32 onnxruntime:fp32 onnxruntime:int8 openvino:fp32 ...) and "
                        "'torchscript' (the exported TorchScript artifact, not a registry backend); the old names "
                        "eager / onnxruntime / onnxruntime-int8 still work (default: none)")
    p.add_argument("--backends-all-cases", action="store_true",
                   help="full mode: include the generated large cases in the backend comparison")


def _inference_args(p: argparse.ArgumentParser) -> None:
    """Options of ``benchmark inference`` besides -o, --quick, --threads and --repeats."""
    p.add_argument("--model", default="lite_medsam", help="the model timed (spec as --models; default lite_medsam)")
    p.add_argument("--no-whole-process", action="store_true", help="skip the whole-process runs")
    p.add_argument("--cases", nargs="+", default=None, metavar="NAME",
                   help="only these cases (full mode: 2d_nuclei_125boxes 3d_ct_5organs 3d_mr_1box "
                        "3d_ct_133x512x512_6boxes 2d_nuclei_1024_241boxes)")
    p.add_argument("--baseline-max-encoder-calls", type=int, default=None, metavar="N",
                   help="skip the baseline on cases needing more than N encoder calls")


def _add_speed(sub: Any) -> None:
    p = sub.add_parser("speed", help="baseline vs ours: encoders, decoder, whole cases, scaling (benchmark.json)",
                       description="Time every registry image encoder, the prompt encoder + mask decoder per box, "
                       "whole cases (bundled examples and, in full mode, generated 287x512x512 / 1024x1024 cases) "
                       "with the LiteMedSAM baseline (no embedding cache, one box at a time) against our Predictor, "
                       "and scaling in boxes and slices. Writes benchmark.json, benchmark.md and benchmark.png "
                       "into --out.")
    _speed_args(p, out_required=True)
    p.set_defaults(func=run_speed)


def _add_inference(sub: Any) -> None:
    p = sub.add_parser("inference", help="baseline vs ours on every BACKEND:PRECISION (inference.json)",
                       description="The fast-inference benchmark: the LiteMedSAM baseline algorithm against ours for "
                       "each configuration, in process and as whole 'medsam-lite segment' processes; writes "
                       "inference.json / inference.md into --out.")
    p.add_argument("configs", nargs="*", metavar="BACKEND:PRECISION",
                   help=f"configurations (default {' '.join(INFERENCE_DEFAULT)}; auto allowed)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="small cases (tests)")
    p.add_argument("--threads", type=int, default=2, help="threads of every runtime (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per latency (median; default 5)")
    _inference_args(p)
    p.set_defaults(func=run_inference)


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="ours vs the baseline as whole processes, time breakdown, first mask, install "
                       "(report.md)", description="The benchmark report (medsam_lite.bench.report): interleaved whole "
                       "'medsam-lite segment' processes against 'segment --baseline', where the time goes, cold / warm "
                       "first-mask time, install size and peak RSS, on the CPU it names; writes report.json / report.md.")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("--quick", action="store_true", help="the quick cases (tests)")
    p.add_argument("--cases", nargs="+", default=None, metavar="NAME", help="cases to run (default: the report's)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved (ours, baseline) process pairs per case")
    p.add_argument("--heavy-repeats", type=int, default=None,
                   help="pairs on a case whose baseline makes more than 50 encoder calls (default: --repeats)")
    p.add_argument("--threads", type=int, default=2, help="--threads of every process (default 2)")
    p.add_argument("--model", default="lite_medsam", help="model of both paths (default lite_medsam)")
    p.add_argument("--baseline-max-encoder-calls", type=int, default=200, metavar="N",
                   help="ours only on cases whose baseline needs more encoder calls (default 200)")
    p.add_argument("--cold-warm", type=int, default=2, help="cold / warm first-mask pairs (default 2; 0 skips)")
    p.add_argument("--install-record", type=Path, default=None,
                   help="JSON summary of scripts/check_fresh_install.py (the install size)")
    p.set_defaults(func=run_report)


def _add_gate(sub: Any) -> None:
    p = sub.add_parser("gate", help="agreement + speed gate: every backend x precision against eager fp32 (gate.json)",
                       description="Measure every backend x precision against eager torch fp32 on the bundled "
                       "examples and the labelled shared data, and the OpenVINO precisions' speed against fp32; "
                       "writes gate.json / gate.md into --out (the committed report is docs/backends/) and, with "
                       "--decide, this CPU kind's entry into the package's medsam_lite/backends/gate.json (for the "
                       "project's committed decision; a user measures their CPU with 'medsam-lite gate').")
    p.add_argument("-o", "--out", required=True, type=Path, help="report folder")
    p.add_argument("--shared", type=Path, default=os.environ.get(SHARED_ENV),
                   help=f"shared labelled data folder (default: ${SHARED_ENV}; none: bundled examples only)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    p.add_argument("--quick", action="store_true", help="bundled examples only, small")
    p.add_argument("--decide", action="store_true", help="also write this CPU kind's decision into medsam_lite/backends/gate.json")
    p.add_argument("--cache-dir", type=Path, default=None, help="artifact cache root")
    p.set_defaults(func=run_gate)


def add_report_args(p: argparse.ArgumentParser, report: str, several: bool = False) -> None:
    """--student, --teacher, --shared and -o/--out (``report``.json / .md) for the held-out reports
    (``several``: --student may be repeated). ``--shared`` defaults to ``$MEDSAM_LITE_SHARED``, else it is
    required."""
    if several:
        p.add_argument("--student", required=True, action="append",
                       help="student model name or checkpoint path; repeat to compare several side by side")
    else:
        p.add_argument("--student", required=True, help="student model name or checkpoint path")
    p.add_argument("--teacher", default="lite_medsam", help="teacher model name or checkpoint path")
    p.add_argument("--shared", default=os.environ.get(SHARED_ENV), required=not os.environ.get(SHARED_ENV),
                   help=f"the shared data folder (default: ${SHARED_ENV})")
    p.add_argument("-o", "--out", default=None, help=f"write {report}.json / {report}.md here")


def _add_fidelity(sub: Any) -> None:
    from ..backends import backend_names

    p = sub.add_parser("fidelity", help="students vs teacher on held-out data (fidelity.json)",
                       description="Fidelity of distilled students against their teacher on held-out real images: "
                       "random-box and object-box agreement, ground-truth DSC (2D and 3D propagation), encoder time.")
    add_report_args(p, "fidelity", several=True)
    p.add_argument("--boxes", type=int, default=8, help="random boxes per held-out image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-3d", action="store_true", help="skip the 3D propagation rows")
    p.add_argument("--volumes", nargs="+", default=None, help="only these 3D cases (default: all)")
    p.add_argument("--timing-backend", default="openvino", choices=[*backend_names(), "none"],
                   help="backend the encoders are timed on (fp32); none = no timing")
    p.add_argument("--threads", type=int, default=2, help="threads for timing and eager torch")
    p.add_argument("--backend", default="torch", choices=list(backend_names()),
                   help="backend (fp32) every model's masks are computed with (default torch, the eager reference)")
    p.set_defaults(func=run_fidelity)


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="latency of the annotator's API on the bundled cases (JSON on stdout)",
                       description="Open -> first mask, per-box latency once embedded, cached 3D propagation, "
                       "in process through the ASGI app.")
    p.add_argument("--boxes", type=int, default=10, help="boxes timed per case once embedded")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--cases", nargs="+", default=["2DBox_Microscopy_nuclei.npz", "3DBox_MR_brain_tumour.npz",
                                                  "3DBox_CT_abdomen.npz"], help="bundled examples to time")
    p.set_defaults(func=run_serve)


def _add_interactive(sub: Any) -> None:
    p = sub.add_parser("interactive", help="simulated-user corrections of interactive sessions (issue 29)",
                       description="Per object of the bundled labelled volumes: the 3D box, then 3 correction boxes "
                       "(the ground-truth box of the worst uncorrected slice); mean DSC after 0..3 corrections per "
                       "case and overall, and correction latency (medsam_lite.bench.interactive).")
    p.add_argument("-o", "--out", default=None, help="folder for interactive.json / interactive.md (default: "
                   "Markdown on stdout only)")
    p.add_argument("--threads", type=int, default=None, help="threads of the runtime (default: its own)")
    _interactive_args(p)
    p.set_defaults(func=run_interactive)


def _interactive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corrections", type=int, default=3, help="corrections per object (default 3)")
    p.add_argument("--embedding-cache", default=None, help="embedding cache folder (reused across runs)")
    p.add_argument("--walk", type=int, default=20, help="slices of the timed re-propagation (default 20)")
    p.add_argument("--volume", dest="volumes", action="append", type=Path, default=None, metavar="NPZ",
                   help="interactive: a labelled 3D case (.npz with imgs, gts, boxes) instead of the bundled ones; "
                        "repeat for more")
    p.add_argument("--shared", "--shared-data", dest="shared", default=os.environ.get(SHARED_ENV), metavar="DIR",
                   help=f"interactive: add the training-side labelled volumes of this folder (lesions/lung1, a "
                   f"512 x 512 CT: also the latency case); --clicks: the held-out volumes (default ${SHARED_ENV})")
    p.add_argument("--clicks", type=int, default=0, metavar="N",
                   help="instead: the click protocol (issue 30) on the held-out labelled volumes of --shared: the 3D "
                   "box, then N clicks (worst slice, interior of its largest error), trained path and released "
                   "decoder side by side (medsam_lite.bench.clicks)")
    p.add_argument("--click-weights", default=None, metavar="PTH",
                   help="click checkpoint of train-prompts (default: the shipped one)")


MEASUREMENTS: Dict[str, Callable[[Any], None]] = {"speed": _add_speed, "inference": _add_inference,
                                                  "gate": _add_gate, "fidelity": _add_fidelity, "serve": _add_serve,
                                                  "interactive": _add_interactive, "report": _add_report}
"""``medsam-lite benchmark`` subcommands and the functions adding their parsers."""


def register(subparsers: Any) -> None:
    """Add the ``benchmark`` subcommand (and its measurements) to ``subparsers``."""
    p = subparsers.add_parser(
        "benchmark", help="measurements: speed, inference, gate, fidelity, serve (default: speed)",
        description="Measurements of medsam-lite, one subcommand each. Without a subcommand: 'speed' (its options "
        "below), or 'inference' with --inference [BACKEND:PRECISION ...].")
    _speed_args(p, out_required=False)
    p.add_argument("--interactive", action="store_true", help="same as 'benchmark interactive' (its options below)")
    _interactive_args(p)
    p.add_argument("--inference", nargs="*", metavar="BACKEND:PRECISION", default=None,
                   help="same as 'benchmark inference [BACKEND:PRECISION ...]' (its options below apply)")
    _inference_args(p)
    sub = p.add_subparsers(dest="measurement", metavar="MEASUREMENT")
    for add in MEASUREMENTS.values():
        add(sub)
    p.set_defaults(func=run)


def _threads(args: argparse.Namespace) -> None:
    """Check --threads / --repeats and set torch's pool (process state belongs to the entry point)."""
    import torch

    if args.threads < 1 or getattr(args, "repeats", 1) < 1:
        raise InputError("--threads and --repeats must be at least 1")
    torch.set_num_threads(args.threads)


def run(args: argparse.Namespace) -> int:
    """No subcommand: ``speed``, ``inference`` with ``--inference``, ``interactive`` with ``--interactive``."""
    if args.interactive:
        return run_interactive(args)
    if not args.out:
        raise InputError("-o/--out is required")
    if args.inference is not None:
        args.configs = args.inference
        return run_inference(args)
    return run_speed(args)


def run_interactive(args: argparse.Namespace) -> int:
    """``benchmark interactive``: the simulated user on the bundled labelled volumes (Markdown on stdout, JSON
    and Markdown into ``-o`` when given)."""
    from .. import resources
    from ..bench import interactive
    from ..predictor import Predictor
    from ..session import DEFAULT_POLICY

    import sys

    from ..io_utils import atomic_path

    if args.corrections < 0 or args.walk < 1 or (args.threads is not None and args.threads < 1):
        raise InputError("--corrections must be >= 0, --walk and --threads >= 1")
    if args.clicks:
        return run_clicks(args)
    if args.volumes:
        cases = [interactive.npz_case(p) for p in args.volumes]
    else:
        cases = interactive.bundled_cases(resources.package_file("examples"))
    shared = cases_shared = None
    if args.shared is not None:
        shared = interactive.training_side_cases(Path(args.shared))
        cases_shared = cases + shared
    predictor = Predictor(embedding_cache=args.embedding_cache, threads=args.threads)
    report = interactive.run_benchmark(predictor, cases_shared or cases, DEFAULT_POLICY, args.corrections,
                                       log=lambda line: print(line, file=sys.stderr, flush=True))
    if shared:  # a real 512 x 512 CT
        volume, source = shared[0].volume, f"{shared[0].name}, a real CT"
    elif not args.volumes:
        ct = next(c for c in cases if "CT" in c.name)
        volume, source = _upsample_512(ct.volume), f"{ct.name} resampled to 512 x 512 (nearest)"
    else:
        volume, source = cases[0].volume, cases[0].name
    walk = min(args.walk, volume.shape[0] - 1)
    report["latency"] = interactive.latency_case(predictor, volume, walk=walk) if walk >= 1 else None
    if report["latency"]:
        report["latency"]["source"] = source  # type: ignore[index]
    report["backend"] = f"{getattr(predictor.backend, 'name', '?')}:{getattr(predictor.backend, 'precision', '?')}"
    report["threads"] = args.threads
    text = interactive.markdown(report, report["latency"])  # type: ignore[arg-type]
    if getattr(args, "out", None):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "interactive.json") as tmp:
            Path(tmp).write_text(json.dumps(report, indent=1))
        with atomic_path(out / "interactive.md") as tmp:
            Path(tmp).write_text(text)
    print(text)
    return 0


def run_clicks(args: argparse.Namespace) -> int:
    """``benchmark --interactive --clicks N``: the held-out click protocol (clicks.json / clicks.md into ``-o``)."""
    from ..bench import clicks
    from ..clicks import ClickModel, shipped_click_model

    if args.clicks < 0 or not args.shared:
        raise InputError("--clicks needs N >= 0 and --shared DIR (the shared data folder)")
    trained = ClickModel.from_checkpoint(args.click_weights) if args.click_weights else shipped_click_model()
    if trained is None:
        raise InputError("no click-trained weights ship with this install: give --click-weights PTH")
    models = {"trained": trained, "released decoder": ClickModel(trained.released, trained.released, "released")}
    report = clicks.held_out_report(args.shared, models, args.clicks, args.embedding_cache)
    text = clicks.markdown(report)
    if getattr(args, "out", None):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "clicks.json").write_text(json.dumps(report, indent=1))
        (out / "clicks.md").write_text(text)
    print(text)
    return 0


def _upsample_512(volume: Any) -> Any:
    """The bundled CT's slices at 512 x 512 (nearest), as a clinical CT slice: the latency case."""
    import numpy as np

    depth, height, width = volume.shape
    rows = (np.arange(512) * height // 512)[:, None]
    cols = (np.arange(512) * width // 512)[None, :]
    return np.ascontiguousarray(volume[:, rows, cols])


def run_speed(args: argparse.Namespace) -> int:
    """``benchmark speed``: :func:`medsam_lite.bench.speed.run_benchmark`."""
    from ..bench import speed

    _threads(args)
    cfg = speed.SpeedConfig(models=tuple(args.models), baseline_model=args.baseline_model, threads=args.threads,
                            repeats=args.repeats, quick=args.quick, encoders=args.encoders, max_calls=args.max_calls,
                            scaling_model=args.scaling_model, scaling_max_calls=args.scaling_max_calls,
                            box_counts=args.boxes, slice_counts=args.slices, backends=args.backends,
                            backends_all_cases=args.backends_all_cases)
    speed.run_benchmark(args.out, cfg)
    return 0


def run_inference(args: argparse.Namespace) -> int:
    """``benchmark inference``: :func:`medsam_lite.bench.inference.run_inference_bench`, written to ``--out``."""
    from ..bench.inference import InferenceBenchConfig, markdown_lines, run_inference_bench
    from ..bench.timing import machine_info
    from ..io_utils import atomic_path

    _threads(args)
    cfg = InferenceBenchConfig(model=args.model, configs=tuple(args.configs or INFERENCE_DEFAULT),
                               quick=args.quick, whole_process=not args.no_whole_process,
                               baseline_max_calls=args.baseline_max_encoder_calls, repeats=args.repeats,
                               threads=args.threads, cases=args.cases)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    section = run_inference_bench(cfg, log=print)
    result = {"machine": machine_info(args.threads), "settings": {**cfg.__dict__, "configs": list(cfg.configs)},
              "inference": section}
    with atomic_path(out / "inference.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    lines = ["# medsam-lite inference benchmark", "", f"Machine: {result['machine']['cpu']} "
             f"({result['machine']['cpu_count']} logical CPUs), torch {result['machine']['torch']}, "
             f"{args.threads} threads. All numbers measured in this one run.", ""] + markdown_lines(section)
    with atomic_path(out / "inference.md") as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``benchmark report``: :func:`medsam_lite.bench.report.run_report`, written to ``--out``."""
    from ..bench.report import ReportConfig, run_report as measure, write_report

    cfg = ReportConfig(model=args.model, quick=args.quick, cases=args.cases, repeats=args.repeats,
                       heavy_repeats=args.heavy_repeats, threads=args.threads,
                       baseline_max_calls=args.baseline_max_encoder_calls, cold_warm=args.cold_warm,
                       install_record=args.install_record)
    result = measure(cfg, log=lambda line: print(line, flush=True), checkpoint=lambda part: write_report(args.out, part))
    for path in write_report(args.out, result):
        print(f"wrote {path}")
    return 0


def run_gate(args: argparse.Namespace) -> int:
    """``benchmark gate``: :func:`medsam_lite.bench.gate.run_gate` on lite_medsam, the report into ``--out``."""
    from ..bench.gate import GateConfig, run_gate as measure, write_decision, write_report
    from ..checkpoint import load_model

    _threads(args)
    if args.shared is not None and not Path(args.shared).is_dir():
        raise InputError(f"--shared {args.shared}: not a folder")
    if args.shared is None:
        print(f"no --shared / ${SHARED_ENV}: the bundled examples only")
    cfg = GateConfig(shared=args.shared, threads=args.threads, quick=args.quick, cache_dir=args.cache_dir)
    report = measure(load_model("lite_medsam"), cfg)
    json_path, md_path = write_report(report, args.out)
    print(f"wrote {json_path} and {md_path}")
    if args.decide:
        print(f"wrote the {report['kind']} entry of {write_decision(report, str(md_path))}")
    return 0


def run_fidelity(args: argparse.Namespace) -> int:
    """``benchmark fidelity``: :func:`medsam_lite.bench.fidelity.fidelity_report`; a summary on stdout."""
    from ..bench.fidelity import FidelityConfig, TimingConfig, fidelity_report

    _threads(args)
    timing = None if args.timing_backend == "none" else TimingConfig(args.timing_backend, args.threads)
    config = FidelityConfig(args.boxes, args.seed, not args.no_3d,
                            None if args.volumes is None else tuple(args.volumes), timing, args.backend)
    result = fidelity_report(args.student, args.teacher, args.shared, args.out, config)
    print(json.dumps({k: {"stable": v["stable"]["all"] if "all" in v["stable"] else {},
                          "ground_truth": v["ground_truth"], "ground_truth_3d": v["ground_truth_3d"],
                          "encoder_ms": v.get("encoder_ms")}
                      for k, v in result["per_student"].items()}, indent=1))  # type: ignore[union-attr]
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """``benchmark serve``: :func:`medsam_lite.bench.serve.run_serve_bench`, the result as JSON on stdout."""
    from ..bench.serve import run_serve_bench

    _threads(args)
    results = run_serve_bench(args.cases, args.boxes, args.threads, log=lambda line: print(line, flush=True))
    print(json.dumps(results, indent=1))
    return 0
