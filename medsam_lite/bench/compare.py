"""Backend comparison (``medsam-lite benchmark speed --backends ...``): one model, several backends, same cases.

Rows (:func:`medsam_lite.bench.compare_choice` names; :data:`medsam_lite.bench.COMPARE_DEFAULT` is every one
published), all running the same model (the first of ``--models``):

* ``torch:fp32``: :class:`~medsam_lite.predictor.Predictor` on the eager PyTorch module (the reference;
  always run, first).
* any other ``BACKEND:PRECISION`` of the registry (``onnxruntime:fp32``, ``onnxruntime:int8``,
  ``openvino:bf16``, ...): :func:`medsam_lite.backends.create_backend` converts the model into a fresh
  artifact cache of its own, then ``Predictor(backend=...)`` (pre/post-processing and the 3D propagation
  in Python, the networks in that runtime).
* ``torchscript``: not a registry backend but an exported artifact:
  :func:`medsam_lite.export.torchscript.export_torchscript` once, ``torch.jit.load``, then the artifact's
  ``segment_2d(image, boxes)`` / ``segment_3d(volume, boxes)`` (pre/post-processing and the 3D propagation
  run inside the artifact).

Recorded per row (``artifacts``): artifact size in MB (10^6 bytes; ``torch:fp32``: the state dict saved
with ``torch.save``; a registry backend: every file of its cache entry), export seconds (a registry backend:
the first ``create_backend``, conversion into the empty cache and opening it), load seconds (artifact on
disk -> ready predictor: a second ``create_backend`` on the filled cache; ``torch:fp32``: building the model
from its spec) and the seconds of one warm-up run (small 2D and 3D jobs; skipped in quick mode). Per case
and row (``cases``): wall seconds of one end-to-end call (input array and original-pixel boxes in, uint8
label map out; export, load and warm-up excluded), the pixel agreement fraction and the mean DSC over labels
with the reference's label map, and, where the case has ground truth, the mean DSC against it
(:mod:`medsam_lite.bench.agreement`).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import REFERENCE, TORCHSCRIPT, compare_choice
from .agreement import gt_dsc, label_agreement
from .cases import Case

__all__ = ["LoadedBackend", "bench_backends", "gt_dsc", "label_agreement", "load_backends", "markdown_lines"]

RunFn = Callable[[str, np.ndarray, np.ndarray], np.ndarray]
"""(kind '2d' / '3d', image (H, W[, 3]) or volume (D, H, W) uint8, boxes (N, 4) / (N, 6)) -> uint8 label map."""


@dataclass
class LoadedBackend:
    """A ready row: ``run`` segments one case; ``info`` holds its artifact / export / load figures."""

    name: str
    run: RunFn
    info: Dict[str, Any] = field(default_factory=dict)


def _warmup_jobs(cases: Sequence[Case]) -> List[Dict[str, Any]]:
    """Small jobs cut from the first 2D and first 3D case: the 2D case with its first box; 2 slices of the
    3D volume around its first box's middle slice. They run once per row before the timed cases."""
    jobs: List[Dict[str, Any]] = []
    for kind in ("2d", "3d"):
        case = next((c for c in cases if c.kind == kind), None)
        if case is None:
            continue
        box = np.asarray(case.boxes[:1], dtype=np.float64).copy()
        if kind == "2d":
            jobs.append({"kind": kind, "image": case.image, "boxes": box})
            continue
        depth = case.image.shape[0]
        z0 = min(max(int((box[0, 5] - box[0, 2]) / 2 + box[0, 2]), 0), max(depth - 2, 0))
        volume = np.ascontiguousarray(case.image[z0 : z0 + 2])
        box[0, 2], box[0, 5] = 0, volume.shape[0] - 1
        jobs.append({"kind": kind, "image": volume, "boxes": box})
    return jobs


def _size_mb(paths: Sequence[Path]) -> float:
    return round(sum(Path(p).stat().st_size for p in paths) / 1e6, 2)


def _predictor_run(predictor: Any) -> RunFn:
    def run(kind: str, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if kind == "2d":
            predictor.set_image(image)
            return predictor.predict(boxes)
        return predictor.predict_volume(image, boxes, progress=False)

    return run


def _scripted_run(module: Any) -> RunFn:
    def run(kind: str, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        array = torch.from_numpy(np.ascontiguousarray(image))
        box_t = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
        out = module.segment_2d(array, box_t) if kind == "2d" else module.segment_3d(array, box_t)
        return out.numpy()

    return run


def _load_reference(spec: str, work_dir: Path) -> "tuple[Any, LoadedBackend]":
    """(model, the ``torch:fp32`` row): the model built from ``spec``, its state dict as the artifact."""
    from ..predictor import Predictor
    from .models import resolve_model

    start = time.perf_counter()
    model = resolve_model(spec)
    predictor = Predictor(model, backend=REFERENCE)
    load_s = time.perf_counter() - start
    state_path = work_dir / "eager_state_dict.pt"
    torch.save(model.state_dict(), state_path)
    return model, LoadedBackend(REFERENCE, _predictor_run(predictor),
                                {"artifact_mb": _size_mb([state_path]), "files": [state_path.name], "export_s": None,
                                 "load_s": load_s, "note": "artifact = state dict saved with torch.save; load = "
                                                           "building the model from its spec"})


def _load_torchscript(model: Any, spec: str, work_dir: Path) -> LoadedBackend:
    """The TorchScript artifact row (exported here, then ``torch.jit.load``)."""
    from ..export.torchscript import export_torchscript

    start = time.perf_counter()
    path = export_torchscript(model, work_dir / "predictor.pt", model_name=spec)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    module = torch.jit.load(str(path), map_location="cpu")
    return LoadedBackend(TORCHSCRIPT, _scripted_run(module), {"artifact_mb": _size_mb([path]), "files": [path.name],
                                                              "export_s": export_s,
                                                              "load_s": time.perf_counter() - start})


def _load_registry(model: Any, choice: str, work_dir: Path, threads: int) -> LoadedBackend:
    """A registry backend's row: converted into its own empty cache (export), then opened again (load)."""
    from ..backends import create_backend
    from ..predictor import Predictor

    cache = work_dir / choice.replace(":", "_")
    start = time.perf_counter()
    create_backend(model, choice, cache_dir=cache, threads=threads)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    predictor = Predictor(backend=create_backend(model, choice, cache_dir=cache, threads=threads))
    load_s = time.perf_counter() - start
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    return LoadedBackend(choice, _predictor_run(predictor),
                         {"artifact_mb": _size_mb(files), "files": [p.name for p in files], "export_s": export_s,
                          "load_s": load_s, "note": "export = conversion into an empty cache + opening it"})


def load_backends(spec: str, names: Sequence[str], work_dir: Path, threads: int,
                  log: Callable[[str], None] = print) -> List[LoadedBackend]:
    """Build (export + load) each row of ``names`` (:func:`~medsam_lite.bench.compare_choice` spellings) for
    model ``spec``; ``torch:fp32`` first, always, then the others in the order given.

    Artifacts are written under ``work_dir``. ``threads``: intra-op threads of the non-torch runtimes (torch
    uses the process-wide ``torch.set_num_threads``).
    """
    rows = [REFERENCE] + [n for n in dict.fromkeys(compare_choice(n) for n in names) if n != REFERENCE]
    model, reference = _load_reference(spec, work_dir)
    loaded = [reference]
    for name in rows[1:]:
        loaded.append(_load_torchscript(model, spec, work_dir) if name == TORCHSCRIPT
                      else _load_registry(model, name, work_dir, threads))
    for backend in loaded:
        log(f"  backend {backend.name}: {backend.info['artifact_mb']:.1f} MB, export "
            f"{_fmt(backend.info['export_s'])} s, load {backend.info['load_s']:.2f} s")
    return loaded


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _warm_up(loaded: Sequence[LoadedBackend], cases: Sequence[Case], warmup: bool) -> None:
    """Run every row once on :func:`_warmup_jobs` (first-call costs: TorchScript profiling, runtime
    allocations); ``warmup_s`` is None when skipped."""
    for backend in loaded:
        backend.info["warmup_s"] = None
        if warmup:
            start = time.perf_counter()
            for job in _warmup_jobs(cases):
                backend.run(job["kind"], job["image"], job["boxes"])
            backend.info["warmup_s"] = time.perf_counter() - start


def _time_case(case: Case, loaded: Sequence[LoadedBackend], log: Callable[[str], None]) -> Dict[str, Any]:
    """Every row on one case (the reference first); the case's entry of the ``cases`` list."""
    boxes = np.asarray(case.boxes)
    entry: Dict[str, Any] = {"name": case.name, "kind": case.kind, "shape": list(case.image.shape),
                             "n_boxes": int(len(boxes)), "note": case.note, "has_gt": case.gts is not None,
                             "results": {}}
    log(f"  case {case.name}")
    reference: Optional[np.ndarray] = None
    for backend in loaded:
        start = time.perf_counter()
        labels = backend.run(case.kind, case.image, boxes)
        seconds = time.perf_counter() - start
        reference = labels if reference is None else reference
        agree = label_agreement(labels, reference, len(boxes))
        res = {"seconds": seconds, "pixel_agreement": agree["pixel_agreement"],
               "label_dsc_vs_eager": agree["label_dsc"],
               "gt_dsc": gt_dsc(labels, case.gts, len(boxes)) if entry["has_gt"] else None}
        res["speedup_vs_eager"] = entry["results"][REFERENCE]["seconds"] / seconds if entry["results"] else 1.0
        entry["results"][backend.name] = res
        log(f"    {backend.name:17s} {seconds:8.2f} s  agreement {res['pixel_agreement']:.5f}  "
            f"DSC vs eager {res['label_dsc_vs_eager']:.4f}  DSC vs GT {_fmt(res['gt_dsc'], 4)}")
    return entry


def bench_backends(spec: str, names: Sequence[str], cases: List[Case], threads: int,
                   warmup: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time ``spec`` with each row on every case (interleaved per case); the ``backends`` JSON section.

    ``warmup``: run each row once on :func:`_warmup_jobs` before the timed cases (``warmup_s``;
    null when skipped, as in quick mode, where the timings are not meant to be read). "eager" in the keys
    ``speedup_vs_eager`` / ``label_dsc_vs_eager`` is the reference row ``torch:fp32``.

    Returns: ``{"model", "reference": "torch:fp32", "order", "artifacts": {row: {...}}, "cases": [{name, kind,
    shape, n_boxes, note, has_gt, "results": {row: {seconds, speedup_vs_eager, pixel_agreement,
    label_dsc_vs_eager, gt_dsc}}}]}``.
    """
    with tempfile.TemporaryDirectory(prefix="medsam-backends-") as tmp:
        loaded = load_backends(spec, names, Path(tmp), threads, log)
        _warm_up(loaded, cases, warmup)
        out_cases = [_time_case(case, loaded, log) for case in cases]
    return {"model": spec, "reference": REFERENCE, "order": [b.name for b in loaded],
            "artifacts": {b.name: b.info for b in loaded}, "cases": out_cases}


def markdown_lines(section: Dict[str, Any]) -> List[str]:
    """The backend tables (artifacts; per case seconds and agreement) as markdown lines."""
    lines = [f"## Backends: {section['model']}", "",
             "Export, load and warm-up (- = none) are not part of the per-case seconds. Agreement is with "
             f"{section['reference']}'s label map (eager PyTorch); torchscript is the exported TorchScript artifact.",
             "", "| backend | artifact MB | export s | load s | warm-up s |", "|---|---|---|---|---|"]
    for name in section["order"]:
        a = section["artifacts"][name]
        lines.append(f"| {name} | {a['artifact_mb']:.1f} | {_fmt(a['export_s'])} | {a['load_s']:.2f} | "
                     f"{_fmt(a.get('warmup_s'))} |")
    lines += ["", "| case | backend | s | speed-up vs eager | pixel agreement | DSC vs eager | DSC vs GT |",
              "|---|---|---|---|---|---|---|"]
    for case in section["cases"]:
        for name in section["order"]:
            r = case["results"][name]
            lines.append(f"| {case['name']} | {name} | {r['seconds']:.2f} | {r['speedup_vs_eager']:.2f}x | "
                         f"{r['pixel_agreement']:.5f} | {r['label_dsc_vs_eager']:.4f} | {_fmt(r['gt_dsc'], 4)} |")
    return lines + [""]
