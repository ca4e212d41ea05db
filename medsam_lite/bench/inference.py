"""The fast-inference benchmark: the LiteMedSAM baseline algorithm against ours on every backend x precision.

One run measures, on the same cases and the same machine:

* ``baseline``: :mod:`medsam_lite.baseline` (eager fp32, the encoder re-run for every slice of every box,
  one box per decoder call), in process and as a whole ``medsam-lite segment --baseline`` process;
* ``ours`` for each configuration ``backend:precision`` (``torch:fp32`` is the exact reference):
  :class:`~medsam_lite.predictor.Predictor` in process (start-up = building the backend, conversion
  cache hit after the first run), and the whole ``medsam-lite segment`` process run twice (the
  second run is the one users see every day: the converted model is cached);
* per configuration: image-encoder milliseconds per call (median), its GFLOPs per call (counted with
  ``torch.utils.flop_counter`` on the eager model) and the achieved GFLOP/s beside the CPU's peak
  (an estimate from its frequency, core count and vector units, stated in the report), decoder
  milliseconds per box (one box per call on one embedding, on a new embedding each call, and 4 / 16 boxes
  per call: whether slice-synchronous decoding pays);
* per case: seconds, peak RSS (MiB; a whole process: its own ``ru_maxrss`` from ``wait4``),
  agreement of the label map with ``torch:fp32`` (pixel agreement, mean label DSC), DSC against
  the case's ground truth where it has one.

Cases (:func:`medsam_lite.bench.cases.inference_cases`): the bundled nuclei (125 boxes), CT abdomen (5 organs), MR tumour; in
full mode also the CT resampled to 133 x 512 x 512 with 6 boxes (the memory check) and the nuclei
image tiled to 1024 x 1024 with 241 boxes.
"""
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..backends import format_choice, parse_choice
from ..baseline import baseline_segment_2d, baseline_segment_volume
from ..errors import InputError
from ..model import MedSAMLite
from . import INFERENCE_DEFAULT, REFERENCE
from .agreement import agreement_row
from .cases import Case, inference_cases
from .timing import PeakRSS, median_seconds

DEFAULT_CONFIGS = INFERENCE_DEFAULT
"""Configurations timed by default (``backend:precision``); missing runtimes are skipped with a note."""


@dataclass
class InferenceBenchConfig:
    """Settings of one inference benchmark run.

    Attributes:
        model: pretrained name or checkpoint path timed by every configuration and the baseline.
        configs: ``backend:precision`` strings; ``auto`` is allowed for either part.
        quick: small cases (tests); full mode adds the generated large cases.
        whole_process: also time whole ``medsam-lite segment`` processes (two runs each).
        baseline: time the baseline algorithm (in process, and whole-process when ``whole_process``).
        baseline_max_calls: skip the baseline on cases needing more encoder calls than this (None: none).
        repeats: timed calls for the encoder / decoder latencies (median).
        threads: threads of every runtime (torch's pool is set by the caller; given to the others and to
            the child processes through ``--threads``).
        cache_dir: converted-model cache for the backends (None: the user cache folder).
        cases: names of the cases to run (None: every case of the mode).
    """

    model: str = "lite_medsam"
    configs: Sequence[str] = DEFAULT_CONFIGS
    quick: bool = False
    whole_process: bool = True
    baseline: bool = True
    baseline_max_calls: Optional[int] = None
    repeats: int = 3
    threads: int = 2
    cache_dir: Optional[Path] = None
    cases: Optional[Sequence[str]] = None  # names of :func:`inference_cases` to run (None: all)


# ----------------------------------------------------------------------------- machine
def cpu_peak_gflops(threads: int) -> Dict[str, Any]:
    """Estimated peak GFLOP/s of ``threads`` cores: fp32 = cores x GHz x FLOPs per cycle (AVX-512: 2 FMA
    units x 16 lanes x 2 = 64; AVX2: 32), bf16 with AMX = cores x GHz x 1024 (one TMUL tile op per
    cycle). A ceiling, not a promise: VMs and turbo states move it."""
    flags, mhz = set(), 0.0
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                if line.startswith("cpu MHz") and not mhz:
                    mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    ghz = mhz / 1000.0
    fp32_per_cycle = 64 if "avx512f" in flags else (32 if "avx2" in flags else 16)
    out = {"ghz": round(ghz, 3), "cores": threads, "fp32_flops_per_cycle": fp32_per_cycle,
           "fp32_peak_gflops": round(threads * ghz * fp32_per_cycle, 1),
           "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}
    if "amx_bf16" in flags:
        out["bf16_peak_gflops"] = round(threads * ghz * 1024, 1)
    elif "avx512_bf16" in flags:
        out["bf16_peak_gflops"] = round(threads * ghz * 128, 1)
    return out


EXAMPLE_BOX = ((40.0, 50.0, 120.0, 140.0),)
"""The (1, 4) XYXY model-frame box the decoder is timed and its FLOPs counted on."""


def count_gflops(model: MedSAMLite) -> Tuple[float, float]:
    """(encoder GFLOPs per (1, 3, 256, 256) call, decoder GFLOPs per box), counted on the eager model."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        with FlopCounterMode(display=False) as enc:
            emb = model.encode(torch.zeros(1, 3, 256, 256))
        with FlopCounterMode(display=False) as dec:
            model.decode(emb, torch.tensor(EXAMPLE_BOX))
    return enc.get_total_flops() / 1e9, dec.get_total_flops() / 1e9


def count_split_decoder_gflops(model: MedSAMLite) -> Tuple[float, float]:
    """(GFLOPs per embedding, GFLOPs per box) of the OpenVINO decoder's two graphs
    (:class:`~medsam_lite.backends.graphs.DecoderImageGraph`, :class:`~medsam_lite.backends.graphs.DecoderBoxGraph`)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..backends.graphs import DecoderBoxGraph, DecoderImageGraph

    with torch.inference_mode():
        with FlopCounterMode(display=False) as image:
            parts = DecoderImageGraph(model)(torch.zeros(1, 256, 64, 64))
        with FlopCounterMode(display=False) as box:
            DecoderBoxGraph(model)(*parts, torch.tensor(EXAMPLE_BOX))
    return image.get_total_flops() / 1e9, box.get_total_flops() / 1e9


# ----------------------------------------------------------------------------- runs
def _run(predictor: Any, case: Case) -> np.ndarray:
    if case.kind == "2d":
        predictor.set_image(case.image)
        return predictor.predict(case.boxes)
    return predictor.predict_volume(case.image, case.boxes, progress=False)


def _vm_hwm_mib(pid: int) -> Optional[float]:
    """The process's own peak RSS (``VmHWM`` of /proc/PID/status, reset by exec), or None when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def whole_process(case: Case, args: Sequence[str], out_dir: Path, threads: int,
                  env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Wall seconds, CPU seconds and peak RSS of one ``medsam-lite segment CASE`` child process (exit status
    checked; ``env``: its environment, None: this process's).

    The peak RSS is the child's own ``VmHWM``, polled every 20 ms (``wait4``'s ``ru_maxrss`` would include
    this large parent's RSS at fork time). ``cpu_seconds``: the child's user + system time (this process's
    ``RUSAGE_CHILDREN`` before and after; children run one at a time), which a shared machine moves less than
    the wall time."""
    cmd = [sys.executable, "-m", "medsam_lite.cli.main", "segment", str(case.path), "-o", str(out_dir),
           "--no-progress", "--threads", str(threads), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    peak = 0.0
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, env=env)
        while proc.poll() is None:
            peak = max(peak, _vm_hwm_mib(proc.pid) or 0.0)
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": round(cpu, 3), "peak_rss_mib": round(peak, 1),
            "command": " ".join(cmd[1:])}


DECODE_BATCHES = (1, 4, 16)
"""Boxes per decoder call timed per configuration (the slice-synchronous question: does decoding
several boxes of one slice in one call cost less per box than one call per box?)."""


def decoder_batches(backend: Any, embedding: torch.Tensor, repeats: int) -> Dict[str, float]:
    """Decoder milliseconds per box (median of ``repeats``) for ``B`` boxes per call, ``B`` in
    :data:`DECODE_BATCHES`, all on one (1, 256, 64, 64) embedding (keys ``"1"``, ``"4"``, ``"16"``), and
    ``"1_new_embedding"``: one box per call on a different embedding each call (3D propagation's
    common case, where nothing box-independent can be reused)."""
    generator = torch.Generator().manual_seed(1)
    boxes = torch.tensor(EXAMPLE_BOX) + torch.randint(0, 60, (max(DECODE_BATCHES), 1),
                                                                          generator=generator).float()
    out: Dict[str, float] = {}
    for batch in DECODE_BATCHES:
        seconds, _ = median_seconds(lambda: backend.decode(embedding, boxes[:batch]), repeats, warmup=1)
        out[str(batch)] = seconds * 1000 / batch
    others = [embedding + 0.01 * k for k in range(1, repeats + 3)]
    it = iter(others)
    seconds, _ = median_seconds(lambda: backend.decode(next(it), boxes[:1]), repeats, warmup=1)
    out["1_new_embedding"] = seconds * 1000
    return out


class _Run:
    """One benchmark run's state: the model, its FLOP counts, the ``inference`` section being filled, the
    work folder (generated cases, whole-process outputs) and the predictor of each configuration."""

    def __init__(self, cfg: InferenceBenchConfig, work: Path, log: Callable[[str], None]) -> None:
        from .models import resolve_model

        self.cfg, self.work, self.log = cfg, work, log
        self.model = resolve_model(cfg.model)
        self.enc_gflops, dec_gflops = count_gflops(self.model)
        split_image, split_box = count_split_decoder_gflops(self.model)
        self.section: Dict[str, Any] = {
            "model": cfg.model, "encoder_gflops": self.enc_gflops, "decoder_gflops_per_box": dec_gflops,
            "split_decoder_gflops": {"per_embedding": split_image, "per_box": split_box},
            "cpu_peak": cpu_peak_gflops(cfg.threads), "configs": {}, "cases": [], "skipped": {}}
        self.predictors: Dict[str, Any] = {}
        log(f"  encoder {self.enc_gflops:.1f} GFLOPs per call, decoder {dec_gflops:.2f} GFLOPs per box")


def _select_cases(cfg: InferenceBenchConfig, work: Path) -> List[Case]:
    """:func:`~medsam_lite.bench.cases.inference_cases` of the mode, restricted to ``cfg.cases``."""
    cases = inference_cases(cfg.quick, work)
    if not cfg.cases:
        return cases
    unknown = sorted(set(cfg.cases) - {c.name for c in cases})
    if unknown:
        raise InputError(f"unknown case(s) {', '.join(unknown)}; this mode has {', '.join(c.name for c in cases)}")
    return [c for c in cases if c.name in cfg.cases]


def _resolved(config: str) -> Tuple[Optional[str], str]:
    """(``BACKEND:PRECISION`` with ``auto`` resolved, None) or (None, why it is skipped here)."""
    from ..backends import installed, resolve

    try:
        name, precision = parse_choice(config)
        if name != "auto" and not installed(name):
            return None, f"{name} is not installed"
        return format_choice(*resolve(name, precision)), ""
    except InputError as exc:
        return None, str(exc)


def _time_config(run: _Run, config: str) -> None:
    """Build one configuration's backend (start-up), time its encoder and decoder, keep its Predictor."""
    from ..backends import create_backend
    from ..predictor import Predictor

    key, why = _resolved(config)
    if key is None:
        run.section["skipped"][config] = why
        return
    cfg = run.cfg
    start = time.perf_counter()
    backend = create_backend(run.model, key, cache_dir=cfg.cache_dir, threads=cfg.threads)
    startup = time.perf_counter() - start
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        emb = backend.encode(x)
        enc_s, _ = median_seconds(lambda: backend.encode(x), cfg.repeats, warmup=1)
        box = torch.tensor(EXAMPLE_BOX)
        dec_s, _ = median_seconds(lambda: backend.decode(emb, box), cfg.repeats, warmup=1)
        batches = decoder_batches(backend, emb, cfg.repeats)
    run.section["configs"][key] = {"requested": config, "startup_s": startup, "encoder_ms": enc_s * 1000,
                                   "encoder_gflops_per_s": run.enc_gflops / enc_s,
                                   "decoder_ms_per_box": dec_s * 1000, "decoder_ms_per_box_by_batch": batches}
    run.predictors[key] = Predictor(backend=backend)
    run.log(f"  {key}: start-up {startup:.2f} s, encoder {enc_s * 1000:.0f} ms ({run.enc_gflops / enc_s:.0f} "
            f"GFLOP/s), decoder {dec_s * 1000:.1f} ms/box; by batch " + ", ".join(f"{k} {v:.1f}"
                                                                               for k, v in batches.items()))


def _time_ours(run: _Run, case: Case, key: str, reference: Optional[np.ndarray]) -> Tuple[Dict[str, Any],
                                                                                          np.ndarray]:
    """One configuration on one case: in process (seconds, peak RSS, agreement) and, when asked, as two
    whole ``medsam-lite segment`` processes (``process_first``, ``process``). Returns (row, label map)."""
    with PeakRSS() as mem:
        start = time.perf_counter()
        labels = _run(run.predictors[key], case)
        seconds = time.perf_counter() - start
    reference = labels if key == REFERENCE else reference
    res = {"seconds": seconds, "peak_rss_mib": round(mem.peak_mib, 1),
           **agreement_row(labels, reference, case.gts, len(case.boxes))}
    if run.cfg.whole_process:
        name, precision = parse_choice(key)
        args = ["--model", run.cfg.model, "--backend", name, "--precision", precision]
        res["process_first"], res["process"] = [whole_process(case, args, run.work / f"out_{key.replace(':', '_')}",
                                                              run.cfg.threads) for _ in range(2)]
    run.log(f"    {key:18s} {seconds:8.2f} s in process"
            + (f", {res['process']['seconds']:.2f} s whole process (2nd run), peak RSS "
               f"{res['process']['peak_rss_mib']:.0f} MiB" if run.cfg.whole_process else "")
            + (f", agreement {res['pixel_agreement']:.5f}" if res["pixel_agreement"] is not None else "")
            + (f", GT DSC {res['gt_dsc']:.4f}" if res["gt_dsc"] is not None else ""))
    return res, labels


def _time_baseline(run: _Run, case: Case, entry: Dict[str, Any], reference: Optional[np.ndarray]) -> None:
    """The baseline algorithm on one case (in process and, when asked, as a whole process), or why it is
    skipped; sets the speed-ups of every configuration against it."""
    cfg = run.cfg
    calls = 1 if case.kind == "2d" else int(sum(b[5] - b[2] + 1 for b in case.boxes.astype(np.int64)))
    if cfg.baseline_max_calls is not None and calls > cfg.baseline_max_calls:
        entry["baseline"] = {"skipped": f"{calls} encoder calls > {cfg.baseline_max_calls}"}
        return
    start = time.perf_counter()
    segment = baseline_segment_2d if case.kind == "2d" else baseline_segment_volume
    labels = segment(run.model, case.image, case.boxes)
    base: Dict[str, Any] = {"seconds": time.perf_counter() - start, "encoder_calls": calls,
                            **agreement_row(labels, reference, case.gts, len(case.boxes))}
    if cfg.whole_process:
        base["process"] = whole_process(case, ["--model", cfg.model, "--baseline"], run.work / "out_base", cfg.threads)
    entry["baseline"] = base
    for res in entry["ours"].values():
        res["speedup_in_process"] = base["seconds"] / res["seconds"]
        if cfg.whole_process:
            res["speedup_process"] = base["process"]["seconds"] / res["process"]["seconds"]
    run.log(f"    baseline           {base['seconds']:8.2f} s in process"
            + (f", {base['process']['seconds']:.2f} s whole process" if cfg.whole_process else ""))


def _time_case(run: _Run, case: Case) -> Dict[str, Any]:
    """Every configuration (the reference first) and the baseline on one case: its ``cases`` entry."""
    entry: Dict[str, Any] = {"name": case.name, "kind": case.kind, "shape": list(case.image.shape),
                             "n_boxes": int(len(case.boxes)), "note": case.note, "has_gt": case.gts is not None,
                             "ours": {}}
    run.log(f"  case {case.name}")
    reference: Optional[np.ndarray] = None
    keys = sorted(run.predictors, key=lambda k: k != REFERENCE)  # stable: the reference first, others as given
    for key in keys:
        entry["ours"][key], labels = _time_ours(run, case, key, reference)
        reference = labels if key == REFERENCE else reference
    if run.cfg.baseline:
        _time_baseline(run, case, entry, reference)
    return entry


def run_inference_bench(cfg: InferenceBenchConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the benchmark (module docstring); returns the ``inference`` section of ``inference.json``."""
    with tempfile.TemporaryDirectory(prefix="medsam-infer-") as tmp:
        run = _Run(cfg, Path(tmp), log)
        cases = _select_cases(cfg, run.work)
        for config in cfg.configs:
            _time_config(run, config)
        run.section["cases"] = [_time_case(run, case) for case in cases]
    return run.section


def markdown_lines(section: Dict[str, Any]) -> List[str]:
    """The inference tables as markdown lines."""
    peak = section["cpu_peak"]
    lines = [f"## Inference: {section['model']}, baseline vs ours per backend x precision", "",
             f"Encoder {section['encoder_gflops']:.1f} GFLOPs per 256x256 call, decoder "
             f"{section['decoder_gflops_per_box']:.2f} GFLOPs per box (segment-anything's graph; OpenVINO's split "
             f"decoder: {section['split_decoder_gflops']['per_embedding']:.2f} per embedding + "
             f"{section['split_decoder_gflops']['per_box']:.2f} per box). CPU peak estimate for {peak['cores']} cores at "
             f"{peak['ghz']} GHz: fp32 {peak['fp32_peak_gflops']} GFLOP/s"
             + (f", bf16 {peak['bf16_peak_gflops']} GFLOP/s" if "bf16_peak_gflops" in peak else "") + ".", "",
             "Decoder ms per box: one box per call on the same embedding (2D: every box after the first), one box "
             "per call on a new embedding each call (3D propagation), and 4 / 16 boxes per call on one embedding "
             "(slice-synchronous decoding).", "",
             "| config | start-up s | encoder ms | encoder GFLOP/s | decoder ms/box | new embedding | 4 per call | "
             "16 per call |", "|---|---|---|---|---|---|---|---|"]
    for key, c in section["configs"].items():
        by = c.get("decoder_ms_per_box_by_batch", {})
        cells = " | ".join("-" if by.get(k) is None else f"{by[k]:.1f}" for k in ("1_new_embedding", "4", "16"))
        lines.append(f"| {key} | {c['startup_s']:.2f} | {c['encoder_ms']:.0f} | {c['encoder_gflops_per_s']:.0f} | "
                     f"{c['decoder_ms_per_box']:.1f} | {cells} |")
    for key, why in section.get("skipped", {}).items():
        lines.append(f"| {key} | skipped: {why} | | | | | | |")
    lines += ["", "| case | path | in process s | whole process s (2nd run) | speed-up (process) | peak RSS MiB | "
              "agreement with torch:fp32 | GT DSC |", "|---|---|---|---|---|---|---|---|"]

    def fmt(v: Optional[float], spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for case in section["cases"]:
        base = case.get("baseline", {})
        if "seconds" in base:
            proc = base.get("process", {})
            lines.append(f"| {case['name']} | baseline | {base['seconds']:.2f} | {fmt(proc.get('seconds'), '.2f')} | "
                         f"1.0x | {fmt(proc.get('peak_rss_mib'), '.0f')} | {fmt(base.get('pixel_agreement'), '.5f')} | "
                         f"{fmt(base.get('gt_dsc'), '.4f')} |")
        elif base:
            lines.append(f"| {case['name']} | baseline | skipped: {base['skipped']} | | | | | |")
        for key, r in case["ours"].items():
            proc = r.get("process", {})
            speed = r.get("speedup_process")
            lines.append(f"| {case['name']} | {key} | {r['seconds']:.2f} | {fmt(proc.get('seconds'), '.2f')} | "
                         f"{fmt(speed, '.1f')}{'x' if speed else ''} | {fmt(proc.get('peak_rss_mib', r['peak_rss_mib']), '.0f')} | "
                         f"{fmt(r['pixel_agreement'], '.5f')} | {fmt(r['gt_dsc'], '.4f')} |")
    return lines + [""]
