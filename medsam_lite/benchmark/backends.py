"""Backend comparison for ``medsam-lite benchmark --backends``: one model, several runtimes, same cases.

Backends (:data:`BACKENDS`), all running the same model (the first of ``--models``):

* ``eager``: :class:`~medsam_lite.predictor.Predictor` on the PyTorch module (the reference; always run).
* ``torchscript``: :func:`medsam_lite.export.torchscript.export_torchscript` once, ``torch.jit.load``, then the
  artifact's ``segment_2d(image, boxes)`` / ``segment_3d(volume, boxes)`` (pre/post-processing and the
  3D propagation run inside the artifact).
* ``onnxruntime``: :func:`medsam_lite.export.onnx_export.export_onnx` once, then
  ``Predictor(backend=OnnxRuntimeBackend(dir))`` (pre/post-processing in Python, networks in ONNX Runtime).
* ``onnxruntime-int8``: the same with the dynamically quantised ``*.int8.onnx`` files
  (``export_onnx(..., quantize=True)``; one export call writes both fp32 and int8 files).

Recorded per backend (``artifacts``): artifact size in MB (10^6 bytes; eager: the state dict saved with
``torch.save``), export seconds, load seconds (artifact on disk -> ready predictor; eager: building the
model from its spec) and the seconds of one warm-up run (small 2D and 3D jobs; skipped in quick mode). Per case and backend (``cases``): wall
seconds of one end-to-end call (input array and original-pixel boxes in, (H, W) / (D, H, W) uint8 label
map out; export, load and warm-up excluded), the pixel agreement fraction and the mean DSC over labels
with eager's label map, and, where the case has ground truth, the mean DSC over its labels against it.

Label map frames: (H, W) for 2D cases, (D, H, W) = (z, y, x) for 3D; value i+1 = box i, later boxes win,
as :meth:`Predictor.predict` / :meth:`Predictor.predict_volume`.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from . import BACKENDS
from ..metrics import dice


RunFn = Callable[[str, np.ndarray, np.ndarray], np.ndarray]
"""(kind '2d' / '3d', image (H, W[, 3]) or volume (D, H, W) uint8, boxes (N, 4) / (N, 6)) -> uint8 label map."""


@dataclass
class LoadedBackend:
    """A ready backend: ``run`` segments one case; ``info`` holds its artifact / export / load figures."""

    name: str
    run: RunFn
    info: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- cases


def _warmup_jobs(cases: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Small jobs cut from the first 2D and first 3D case: the 2D case with its first box; 2 slices of the
    3D volume around its first box's middle slice. They run once per backend before the timed cases."""
    jobs: List[Dict[str, Any]] = []
    for kind in ("2d", "3d"):
        case = next((c for c in cases if c["kind"] == kind), None)
        if case is None:
            continue
        box = np.asarray(case["boxes"][:1], dtype=np.float64).copy()
        if kind == "2d":
            jobs.append({"kind": kind, "image": case["image"], "boxes": box})
            continue
        depth = case["image"].shape[0]
        z0 = min(max(int((box[0, 5] - box[0, 2]) / 2 + box[0, 2]), 0), max(depth - 2, 0))
        volume = np.ascontiguousarray(case["image"][z0 : z0 + 2])
        box[0, 2], box[0, 5] = 0, volume.shape[0] - 1
        jobs.append({"kind": kind, "image": volume, "boxes": box})
    return jobs


# ----------------------------------------------------------------------------- agreement
def label_agreement(labels: np.ndarray, reference: np.ndarray, n_labels: int) -> Dict[str, float]:
    """Agreement of two label maps of the same shape (values 0..n_labels).

    Returns: ``pixel_agreement`` = fraction of pixels / voxels with equal values, and
    ``label_dsc`` = mean DSC of ``labels == k`` vs ``reference == k`` over the ids k in 1..n_labels
    present in either map (1.0 when neither has any).
    """
    if labels.shape != reference.shape:
        raise ValueError(f"label maps differ in shape: {labels.shape} vs {reference.shape}")
    present = [k for k in range(1, n_labels + 1) if (labels == k).any() or (reference == k).any()]
    scores = [dice(labels == k, reference == k) for k in present]
    return {"pixel_agreement": float((labels == reference).mean()),
            "label_dsc": float(np.mean(scores)) if scores else 1.0}


def gt_dsc(labels: np.ndarray, gts: np.ndarray, n_labels: int) -> Optional[float]:
    """Mean DSC of ``labels == k`` vs ``gts == k`` over the ids k in 1..n_labels present in ``gts``
    (box i segments ground-truth label i+1, as in the challenge files); None when there is none."""
    present = [k for k in range(1, n_labels + 1) if (gts == k).any()]
    if not present:
        return None
    return float(np.mean([dice(labels == k, gts == k) for k in present]))


# ----------------------------------------------------------------------------- backends
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


def load_backends(spec: str, names: Sequence[str], work_dir: Path, threads: int,
                  log: Callable[[str], None] = print) -> List[LoadedBackend]:
    """Build (export + load) each backend of ``names`` for model ``spec``; eager first, always.

    Artifacts are written under ``work_dir``. ``threads``: ONNX Runtime intra-op threads (torch uses
    the process-wide ``torch.set_num_threads``).
    """
    from ..predictor import Predictor
    from .cases import resolve_model

    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        raise InputError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    names = ["eager"] + [n for n in BACKENDS if n in names and n != "eager"]
    start = time.perf_counter()
    model = resolve_model(spec)
    predictor = Predictor(model, backend="torch")
    load_s = time.perf_counter() - start
    state_path = work_dir / "eager_state_dict.pt"
    torch.save(model.state_dict(), state_path)
    loaded = [LoadedBackend("eager", _predictor_run(predictor),
                            {"artifact_mb": _size_mb([state_path]), "files": [state_path.name], "export_s": None,
                             "load_s": load_s, "note": "artifact = state dict saved with torch.save; load = "
                                                       "building the model from its spec"})]
    if "torchscript" in names:
        from medsam_lite.export.torchscript import export_torchscript

        start = time.perf_counter()
        path = export_torchscript(model, work_dir / "predictor.pt", model_name=spec)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        module = torch.jit.load(str(path), map_location="cpu")
        loaded.append(LoadedBackend("torchscript", _scripted_run(module),
                                    {"artifact_mb": _size_mb([path]), "files": [path.name], "export_s": export_s,
                                     "load_s": time.perf_counter() - start}))
    onnx_names = [n for n in names if n.startswith("onnxruntime")]
    if onnx_names:
        from medsam_lite.backends.onnxruntime import OnnxRuntimeBackend
        from medsam_lite.export.onnx_export import export_onnx

        onnx_dir = work_dir / "onnx"
        quantize = "onnxruntime-int8" in onnx_names
        start = time.perf_counter()
        paths = export_onnx(model, onnx_dir, quantize=quantize)
        export_s = time.perf_counter() - start
        shared = "export_s is one export_onnx call that wrote both fp32 and int8 files" if quantize else ""
        for name in onnx_names:
            int8 = name.endswith("int8")
            files = [paths["encoder_int8"], paths["decoder_int8"]] if int8 else [paths["encoder"], paths["decoder"]]
            start = time.perf_counter()
            ort_predictor = Predictor(backend=OnnxRuntimeBackend(onnx_dir, int8=int8, threads=threads))
            loaded.append(LoadedBackend(name, _predictor_run(ort_predictor),
                                        {"artifact_mb": _size_mb(files), "files": [p.name for p in files],
                                         "export_s": export_s, "load_s": time.perf_counter() - start,
                                         **({"note": shared} if shared else {})}))
    for backend in loaded:
        log(f"  backend {backend.name}: {backend.info['artifact_mb']:.1f} MB, export "
            f"{_fmt(backend.info['export_s'])} s, load {backend.info['load_s']:.2f} s")
    return loaded


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- section
def bench_backends(spec: str, names: Sequence[str], cases: List[Dict[str, Any]], threads: int,
                   warmup: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time ``spec`` with each backend on every case (interleaved per case); the ``backends`` JSON section.

    ``warmup``: run each backend once on :func:`_warmup_jobs` before the timed cases (``warmup_s``;
    null when skipped, as in quick mode, where the timings are not meant to be read).

    Returns: ``{"model", "reference": "eager", "order", "artifacts": {backend: {...}}, "cases": [{name, kind,
    shape, n_boxes, note, has_gt, "results": {backend: {seconds, speedup_vs_eager, pixel_agreement,
    label_dsc_vs_eager, gt_dsc}}}]}``.
    """
    with tempfile.TemporaryDirectory(prefix="medsam-backends-") as tmp:
        loaded = load_backends(spec, names, Path(tmp), threads, log)
        for backend in loaded:  # warm-up: first-call costs (TorchScript profiling, ORT allocations) not timed
            backend.info["warmup_s"] = None
            if warmup:
                start = time.perf_counter()
                for job in _warmup_jobs(cases):
                    backend.run(job["kind"], job["image"], job["boxes"])
                backend.info["warmup_s"] = time.perf_counter() - start
        out_cases = []
        for case in cases:
            boxes = np.asarray(case["boxes"])
            entry: Dict[str, Any] = {"name": case["name"], "kind": case["kind"], "shape": list(case["image"].shape),
                                     "n_boxes": int(len(boxes)), "note": case["note"],
                                     "has_gt": case.get("gts") is not None, "results": {}}
            log(f"  case {case['name']}")
            reference: Optional[np.ndarray] = None
            for backend in loaded:
                start = time.perf_counter()
                labels = backend.run(case["kind"], case["image"], boxes)
                seconds = time.perf_counter() - start
                reference = labels if reference is None else reference
                agree = label_agreement(labels, reference, len(boxes))
                res = {"seconds": seconds, "pixel_agreement": agree["pixel_agreement"],
                       "label_dsc_vs_eager": agree["label_dsc"],
                       "gt_dsc": gt_dsc(labels, case["gts"], len(boxes)) if entry["has_gt"] else None}
                res["speedup_vs_eager"] = entry["results"]["eager"]["seconds"] / seconds if entry["results"] else 1.0
                entry["results"][backend.name] = res
                log(f"    {backend.name:17s} {seconds:8.2f} s  agreement {res['pixel_agreement']:.5f}  "
                    f"DSC vs eager {res['label_dsc_vs_eager']:.4f}  DSC vs GT {_fmt(res['gt_dsc'], 4)}")
            out_cases.append(entry)
    return {"model": spec, "reference": "eager", "order": [b.name for b in loaded],
            "artifacts": {b.name: b.info for b in loaded}, "cases": out_cases}


def markdown_lines(section: Dict[str, Any]) -> List[str]:
    """The backend tables (artifacts; per case seconds and agreement) as markdown lines."""
    lines = [f"## Backends: {section['model']}", "",
             "Export, load and warm-up (- = none) are not part of the per-case seconds. Agreement is with eager's "
             "label map.",
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
