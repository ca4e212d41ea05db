"""Speed benchmark against the LiteMedSAM baseline, all measured in one run on one machine.

Sections of the result (``benchmark.json``; ``benchmark.md`` and ``benchmark.png`` summarise it):

* ``encoders``: latency of each registry image encoder on one (1, 3, 256, 256) input (median of
  ``repeats`` timed calls after one warm-up call), plus RepViT fused by ``fuse_for_inference``.
* ``decoder``: prompt encoder + mask decoder seconds per box, one box per call and batched.
* ``cases``: whole cases end to end. ``baseline`` = :mod:`medsam_lite.baseline` (re-encodes every
  slice for every box, one box per decoder call); ``ours`` = :class:`~medsam_lite.predictor.Predictor`
  (slice-embedding cache, batched decoding). ``ratio`` = baseline seconds / ours seconds, both
  measured on exactly the same input in this run. When a path would need more than
  ``max_calls`` encoder (3D) or decoder (2D) calls, both paths are measured on a labelled subset
  (3D: a slab of consecutive slices, all boxes clipped to it; 2D: the first boxes); the full-case
  cost is never extrapolated.
* ``scaling``: seconds against number of boxes and number of slices; cells that would exceed
  ``max_calls`` are listed with their exact encoder-call count and ``seconds = null``.
* ``backends`` (only with ``backends=...``): the first of ``models`` run with several backends
  (``BACKEND:PRECISION`` of the registry, and the TorchScript artifact as the row ``torchscript``) on the
  bundled cases: seconds, agreement with eager, DSC vs ground truth, artifact sizes and load times
  (:mod:`medsam_lite.bench.compare`).

Peak memory is the peak resident set size (RSS, MiB) sampled every 5 ms while a path runs, and
the process-wide ``ru_maxrss``; the challenge limit is 8 GB.

Model specs: :func:`medsam_lite.bench.models.resolve_model`.
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..baseline import (baseline_encoder_calls_volume, baseline_propagator, baseline_segment_2d,
                        baseline_segment_volume)
from ..io_utils import atomic_path
from ..model import MedSAMLite
from ..resources import load_example
from .cases import Case, build_cases, resample_volume, slab_boxes
from .models import resolve_model
from .timing import PeakRSS, machine_info, median_seconds


# ----------------------------------------------------------------------------- helpers


def _timed(fn: Callable[[], Any], counters: Any) -> Dict[str, Any]:
    """Run ``fn`` once; seconds, peak RSS, and the encoder / decoder calls it added to ``counters`` (a
    :class:`~medsam_lite.propagation.Propagator`)."""
    enc, dec = counters.encoder_calls, counters.decoder_calls
    with PeakRSS() as mem:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "encoder_calls": counters.encoder_calls - enc,
            "decoder_calls": counters.decoder_calls - dec, "peak_rss_mib": round(mem.peak_mib, 1)}


def _subset(case: Case, max_calls: Optional[int]) -> Tuple[np.ndarray, Optional[str]]:
    """Boxes to time for ``case`` so that the baseline stays within ``max_calls``; and a label, or None."""
    boxes = np.asarray(case.boxes)
    if max_calls is None:
        return boxes, None
    if case.kind == "2d":
        if len(boxes) <= max_calls:
            return boxes, None
        return boxes[:max_calls], f"first {max_calls} of {len(boxes)} boxes"
    shape = case.image.shape
    if baseline_encoder_calls_volume(shape, boxes) <= max_calls:
        return boxes, None
    slices = shape[0]
    while slices > 1 and baseline_encoder_calls_volume(shape, slab_boxes(boxes, slices)) > max_calls:
        slices -= 1
    sub = slab_boxes(boxes, slices)
    full = baseline_encoder_calls_volume(shape, boxes)
    return sub, (f"slab of {slices} slices z={int(sub[:, 2].min())}-{int(sub[:, 5].max())}, {len(sub)} boxes "
                 f"(full case: {full} baseline encoder calls)")


def _run_path(path: str, model: MedSAMLite, case: Case, boxes: np.ndarray) -> Dict[str, Any]:
    """One timed run (:func:`_timed`) of ``boxes`` on ``case``: the baseline, or ours (eager Predictor)."""
    from ..predictor import Predictor
    from . import REFERENCE

    image = case.image
    if path == "baseline":
        propagator = baseline_propagator(model)
        fn = ((lambda: baseline_segment_2d(propagator, image, boxes)) if case.kind == "2d"
              else (lambda: baseline_segment_volume(propagator, image, boxes)))
        return _timed(fn, propagator)
    predictor = Predictor(model, backend=REFERENCE)

    def fn() -> None:
        if case.kind == "2d":
            predictor.set_image(image)
            predictor.predict(boxes)
        else:
            predictor.predict_volume(image, boxes, progress=False)

    return _timed(fn, predictor.propagator)


# ----------------------------------------------------------------------------- sections
def bench_encoders(names: Sequence[str], repeats: int, warmup: int, log: Callable[[str], None]) -> Dict[str, Any]:
    """Median latency (s) of each encoder on one (1, 3, 256, 256) input; RepViT also fused."""
    from ..encoders import build_encoder
    from ..encoders.repvit import fuse_for_inference

    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    out: Dict[str, Any] = {}
    todo: List[Tuple[str, Callable[[], torch.nn.Module]]] = []
    for name in names:
        todo.append((name, lambda n=name: build_encoder(n).eval()))
        if name.startswith("repvit_"):
            todo.append((f"{name}+fused", lambda n=name: fuse_for_inference(build_encoder(n).eval())))
    for name, make in todo:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            encoder = make()
        params = sum(p.numel() for p in encoder.parameters())
        with torch.inference_mode():
            med, times = median_seconds(lambda enc=encoder: enc(x), repeats, warmup)
        out[name] = {"median_s": med, "times_s": times, "params_m": round(params / 1e6, 3)}
        log(f"  encoder {name:20s} {med * 1000:9.1f} ms  ({params / 1e6:.2f} M params)")
        del encoder
    return out


def bench_decoder(model: MedSAMLite, repeats: int, warmup: int, batch: int,
                  log: Callable[[str], None]) -> Dict[str, Any]:
    """Prompt encoder + mask decoder seconds per box: one box per call, and ``batch`` boxes per call."""
    gen = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, 256, 64, 64, generator=gen)
    one = torch.tensor([[40.0, 50.0, 120.0, 140.0]])
    many = one.repeat(batch, 1) + torch.arange(batch, dtype=torch.float32)[:, None]
    with torch.inference_mode():
        single, t1 = median_seconds(lambda: model.decode(embedding, one), repeats, warmup)
        batched, tb = median_seconds(lambda: model.decode(embedding, many), repeats, warmup)
    log(f"  decoder: {single * 1000:.1f} ms/box one at a time, {batched / batch * 1000:.1f} ms/box in batches of "
        f"{batch}")
    return {"per_box_single_s": single, "per_box_batched_s": batched / batch, "batch": batch,
            "single_times_s": t1, "batched_call_times_s": tb}


def bench_cases(cases: List[Case], baseline: Tuple[str, MedSAMLite], ours: Dict[str, MedSAMLite],
                max_calls: Optional[int], log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Baseline vs ours on every case (same boxes for both; see ``_subset``)."""
    results = []
    for case in cases:
        boxes, subset = _subset(case, max_calls)
        entry: Dict[str, Any] = {"name": case.name, "kind": case.kind, "shape": list(case.image.shape),
                                 "n_boxes": int(len(case.boxes)), "note": case.note,
                                 "measured_on": subset or "full case", "n_boxes_timed": int(len(boxes))}
        if case.kind == "3d":
            entry["slices_timed_baseline"] = baseline_encoder_calls_volume(case.image.shape, boxes)
        log(f"  case {case.name} ({entry['measured_on']})")
        entry["baseline"] = {"model": baseline[0], **_run_path("baseline", baseline[1], case, boxes)}
        log(f"    baseline {baseline[0]}: {entry['baseline']['seconds']:.2f} s, "
            f"{entry['baseline']['encoder_calls']} encoder calls")
        entry["ours"], entry["ratio"] = {}, {}
        for spec, model in ours.items():
            res = _run_path("ours", model, case, boxes)
            entry["ours"][spec] = res
            entry["ratio"][spec] = entry["baseline"]["seconds"] / res["seconds"]
            log(f"    ours {spec}: {res['seconds']:.2f} s, {res['encoder_calls']} encoder calls -> "
                f"{entry['ratio'][spec]:.1f}x faster")
        results.append(entry)
    return results


def bench_scaling(spec: str, model: MedSAMLite, box_counts: Sequence[int], slice_counts: Sequence[int],
                  max_calls: Optional[int], log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Seconds vs number of boxes (at the smallest slice count) and vs slices (1 box).

    The volume is the CT example resampled in z to S slices (in-plane 101 x 122; the encoder
    always sees 256 x 256); box i is the CT example's box (i mod 5), its z-range set to all S slices.
    """
    ct = load_example("3DBox_CT_abdomen.npz")
    grid = [(n, min(slice_counts)) for n in box_counts] + [(1, s) for s in slice_counts if s != min(slice_counts)]
    rows = []
    for n_boxes, n_slices in grid:
        volume, boxes = resample_volume(ct["imgs"], ct["boxes"], (n_slices, *ct["imgs"].shape[1:]))
        boxes = np.stack([boxes[i % len(boxes)] for i in range(n_boxes)])
        boxes[:, 2], boxes[:, 5] = 0, n_slices - 1
        case = Case(f"scaling_{n_boxes}x{n_slices}", "3d", volume, boxes)
        row: Dict[str, Any] = {"boxes": n_boxes, "slices": n_slices, "model": spec,
                               "baseline_encoder_calls": n_boxes * n_slices, "ours_encoder_calls": n_slices}
        for path, calls in (("baseline", n_boxes * n_slices), ("ours", n_slices)):
            if max_calls is not None and calls > max_calls:
                row[f"{path}_s"] = None
                continue
            row[f"{path}_s"] = _run_path(path, model, case, boxes)["seconds"]
        b, o = row["baseline_s"], row["ours_s"]
        row["ratio"] = b / o if b is not None and o is not None else None
        log(f"  scaling boxes={n_boxes} slices={n_slices}: baseline {_fmt(b)} s, ours {_fmt(o)} s")
        rows.append(row)
    return rows


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "not measured" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- reports


def write_markdown(result: Dict[str, Any], path: Path) -> None:
    """``benchmark.md``: machine, encoder, decoder, case and scaling tables."""
    m = result["machine"]
    lines = ["# medsam-lite benchmark", "",
             f"Machine: {m['cpu']} ({m['cpu_count']} logical CPUs), {m['platform']}, torch {m['torch']}, "
             f"`torch.set_num_threads({m['torch_threads']})`. Mode: {'quick' if result['quick'] else 'full'}. "
             f"All numbers measured in this one run.", "",
             "## Image encoder latency (1 x 3 x 256 x 256)", "", "| encoder | params (M) | median ms |", "|---|---|---|"]
    for name, e in result["encoders"].items():
        lines.append(f"| {name} | {e['params_m']} | {e['median_s'] * 1000:.1f} |")
    d = result["decoder"]
    lines += ["", f"Prompt encoder + mask decoder ({result['decoder_model']}): {d['per_box_single_s'] * 1000:.1f} "
              f"ms/box one box per call, {d['per_box_batched_s'] * 1000:.1f} ms/box in batches of {d['batch']}.", "",
              "## Whole cases: baseline vs ours", "",
              "| case | measured on | path | model | s | encoder calls | decoder calls | peak RSS MiB | speed-up |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in result["cases"]:
        b = c["baseline"]
        lines.append(f"| {c['name']} | {c['measured_on']} | baseline | {b['model']} | {b['seconds']:.2f} | "
                     f"{b['encoder_calls']} | {b['decoder_calls']} | {b['peak_rss_mib']} | 1.0x |")
        for spec, o in c["ours"].items():
            lines.append(f"| {c['name']} | {c['measured_on']} | ours | {spec} | {o['seconds']:.2f} | "
                         f"{o['encoder_calls']} | {o['decoder_calls']} | {o['peak_rss_mib']} | "
                         f"{c['ratio'][spec]:.1f}x |")
    lines += ["", "## Scaling (3D, boxes spanning all slices)", "",
              "| boxes | slices | model | baseline encoder calls | ours encoder calls | baseline s | ours s | speed-up |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["scaling"]:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        lines.append(f"| {r['boxes']} | {r['slices']} | {r['model']} | {r['baseline_encoder_calls']} | "
                     f"{r['ours_encoder_calls']} | {_fmt(r['baseline_s'])} | {_fmt(r['ours_s'])} | {ratio} |")
    lines += ["", f"Process peak RSS (ru_maxrss): {result['process_peak_rss_mib']:.0f} MiB (challenge limit 8 GB).",
              "'not measured' = the cell would exceed the run's max_calls budget; it is not extrapolated.", ""]
    if result.get("backends"):
        from .compare import markdown_lines

        lines += markdown_lines(result["backends"])
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))


def write_chart(result: Dict[str, Any], path: Path) -> None:
    """``benchmark.png``: encoder latency and per-case seconds (log scale), baseline vs ours."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8))  # no pyplot: the process's matplotlib backend stays as it is
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    names = list(result["encoders"])
    ax1.barh(names, [result["encoders"][n]["median_s"] * 1000 for n in names], color="tab:blue")
    ax1.set_xlabel("ms per 256x256 image (median)")
    ax1.set_title(f"Image encoder latency, {result['machine']['torch_threads']} threads")
    cases = result["cases"]
    specs = list(cases[0]["ours"]) if cases else []
    width = 0.8 / (1 + len(specs))
    xs = np.arange(len(cases))
    ax2.bar(xs, [c["baseline"]["seconds"] for c in cases], width, label=f"baseline ({cases[0]['baseline']['model']})"
            if cases else "baseline", color="tab:gray")
    for k, spec in enumerate(specs, start=1):
        ax2.bar(xs + k * width, [c["ours"][spec]["seconds"] for c in cases], width, label=f"ours ({spec})")
    ax2.set_xticks(xs + width * len(specs) / 2)
    ax2.set_xticklabels([c["name"] + ("*" if c["measured_on"] != "full case" else "") for c in cases],
                        rotation=20, ha="right", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("seconds per case (log)")
    ax2.set_title("Whole cases (* = measured on a labelled subset)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


# ----------------------------------------------------------------------------- entry point
@dataclass
class SpeedConfig:
    """Settings of one speed benchmark run.

    Attributes:
        models: model specs timed as "ours" (Predictor: cache + batched decoding; :mod:`.models`).
        baseline_model: model spec run by the baseline path (LiteMedSAM by default).
        threads: threads the run is meant to use: recorded, and given to the non-torch runtimes (torch's
            own pool is set by the caller, e.g. the CLI entry point, never here).
        repeats: timed calls per encoder / decoder latency (median reported); 1 warm-up call (0 in quick mode).
        quick: tiny cases and grids (for tests); the full mode produces the published numbers.
        encoders: registry encoders to time (None: all of ``ENCODERS``).
        max_calls: cap on the baseline's encoder calls (3D) / decoder calls (2D) per measurement;
            cases above it are timed on a labelled subset, scaling cells above it are skipped.
        scaling_model: model spec for the scaling table (None: ``baseline_model``).
        scaling_max_calls: ``max_calls`` for the scaling table (None: ``max_calls``).
        box_counts, slice_counts: scaling grid (None: (1, 2, 4, 8) and (50, 100, 200); quick (1, 2), (1, 2)).
        decode_batch: recorded; boxes per decoder call for ours (the decoder table's batched timing uses 4).
        backends: also compare these backends (:func:`medsam_lite.bench.compare_choice` names) for
            ``models[0]`` on the bundled cases (section ``backends``); None / empty: skip.
        backends_all_cases: in full mode, include the generated large cases in the backend section.
    """

    models: Sequence[str] = ("lite_medsam",)
    baseline_model: str = "lite_medsam"
    threads: int = 2
    repeats: int = 5
    quick: bool = False
    encoders: Optional[Sequence[str]] = None
    max_calls: Optional[int] = None
    scaling_model: Optional[str] = None
    scaling_max_calls: Optional[int] = None
    box_counts: Optional[Sequence[int]] = None
    slice_counts: Optional[Sequence[int]] = None
    decode_batch: int = 1
    backends: Optional[Sequence[str]] = None
    backends_all_cases: bool = False


class _Models:
    """Model specs resolved once each (:func:`~medsam_lite.bench.models.resolve_model`)."""

    def __init__(self) -> None:
        self._loaded: Dict[str, MedSAMLite] = {}

    def __call__(self, spec: str) -> MedSAMLite:
        if spec not in self._loaded:
            self._loaded[spec] = resolve_model(spec)
        return self._loaded[spec]


def _settings(cfg: SpeedConfig, warmup: int) -> Dict[str, Any]:
    return {"models": list(cfg.models), "baseline_model": cfg.baseline_model, "repeats": cfg.repeats,
            "warmup": warmup, "max_calls": cfg.max_calls, "decode_batch": cfg.decode_batch}


def _latency_sections(result: Dict[str, Any], cfg: SpeedConfig, get: _Models, warmup: int,
                      log: Callable[[str], None]) -> None:
    """(a): the ``encoders``, ``decoder_model`` and ``decoder`` sections."""
    from ..encoders import ENCODERS

    log("(a) image encoder latency")
    result["encoders"] = bench_encoders(list(cfg.encoders or ENCODERS), cfg.repeats, warmup, log)
    log("(a) prompt encoder + mask decoder")
    result["decoder_model"] = cfg.baseline_model
    # the batched timing uses 4 boxes per call whatever decode_batch is (the Predictor's default is 1)
    result["decoder"] = bench_decoder(get(cfg.baseline_model), cfg.repeats, warmup, 4, log)


def _case_sections(result: Dict[str, Any], cfg: SpeedConfig, get: _Models, log: Callable[[str], None]) -> None:
    """(b, c) whole cases and (d) scaling: the ``cases`` and ``scaling`` sections."""
    log("(b, c) whole cases")
    ours = {spec: get(spec) for spec in cfg.models}
    result["cases"] = bench_cases(build_cases(cfg.quick), (cfg.baseline_model, get(cfg.baseline_model)), ours,
                                  cfg.max_calls, log)
    log("(d) scaling")
    spec = cfg.scaling_model or cfg.baseline_model
    scaling_cap = cfg.max_calls if cfg.scaling_max_calls is None else cfg.scaling_max_calls
    result["settings"]["scaling_max_calls"] = scaling_cap
    box_counts = tuple(cfg.box_counts or ((1, 2) if cfg.quick else (1, 2, 4, 8)))
    slice_counts = tuple(cfg.slice_counts or ((1, 2) if cfg.quick else (50, 100, 200)))
    result["scaling"] = bench_scaling(spec, get(spec), box_counts, slice_counts, scaling_cap, log)


def _backend_section(result: Dict[str, Any], cfg: SpeedConfig, log: Callable[[str], None]) -> None:
    """(e) the ``backends`` section (:mod:`.compare`), printed as tables too."""
    from .cases import backend_cases
    from .compare import bench_backends, markdown_lines

    log(f"(e) backends for {cfg.models[0]}: {', '.join(cfg.backends or ())}")
    result["settings"]["backends"] = list(cfg.backends or ())
    result["settings"]["backends_all_cases"] = cfg.backends_all_cases
    result["backends"] = bench_backends(cfg.models[0], list(cfg.backends or ()),
                                        backend_cases(cfg.quick, cfg.backends_all_cases), cfg.threads,
                                        warmup=not cfg.quick, log=log)
    for line in markdown_lines(result["backends"]):
        log(line)


def write_outputs(result: Dict[str, Any], out_dir: Path) -> None:
    """``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` into ``out_dir`` (each written atomically)."""
    with atomic_path(out_dir / "benchmark.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    write_markdown(result, out_dir / "benchmark.md")
    write_chart(result, out_dir / "benchmark.png")


def run_benchmark(out_dir: Union[str, Path], cfg: SpeedConfig = SpeedConfig(),
                  log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time encoders, the decoder, whole cases, scaling (and, with ``cfg.backends``, the backend comparison)
    in one run (:class:`SpeedConfig`); write ``benchmark.json`` / ``benchmark.md`` / ``benchmark.png`` into
    ``out_dir`` (created). Returns the dict written to ``benchmark.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"medsam-lite benchmark: torch threads {torch.get_num_threads()}, "
        f"{'quick' if cfg.quick else 'full'} mode, out={out_dir}")
    warmup = 0 if cfg.quick else 1
    started = time.perf_counter()
    get = _Models()
    result: Dict[str, Any] = {"machine": machine_info(torch.get_num_threads()), "quick": cfg.quick,
                              "settings": _settings(cfg, warmup)}
    _latency_sections(result, cfg, get, warmup, log)
    _case_sections(result, cfg, get, log)
    if cfg.backends:
        _backend_section(result, cfg, log)
    result["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["total_seconds"] = time.perf_counter() - started
    write_outputs(result, out_dir)
    log(f"wrote {out_dir / 'benchmark.json'}, benchmark.md, benchmark.png in {result['total_seconds']:.0f} s")
    return result
