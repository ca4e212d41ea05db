"""Agreement gate: may ``auto`` run a reduced precision? Every backend x precision against eager fp32.

``medsam-lite benchmark gate -o OUT --shared DATA`` measures, on the bundled examples and the labelled
shared data (``DATA``: ct_organs, mr_organs, lesions, nuclei2d, mni152; without it the bundled examples
only):

* **2D object boxes**: slices with ground-truth objects; for each object the tight box of its mask
  (:func:`medsam_lite.transforms.box_from_mask` with shift 0, original pixels); mask IoU against the
  eager fp32 mask of the same box (mean, min) and ground-truth DSC of both;
* **3D propagation**: :meth:`medsam_lite.predictor.Predictor.predict_volume` with each backend object;
  label-map DSC against the fp32 label map and ground-truth DSC per object.

Cases are :class:`medsam_lite.bench.cases.Case` (2D: (H, W[, 3]) image, (N, 4) tight boxes; 3D: (D, H, W)
volume, (N, 6) boxes; ``gts`` a label map, value i+1 = the object of box i). Variants are
``BACKEND:PRECISION`` choices built with :func:`medsam_lite.backends.create_backend`; the report keys them
``backend/precision`` (the committed ``docs/backends/gate.json`` layout). A variant the registry cannot
build here (runtime missing, precision not registered) is skipped with a logged reason.

Intensities become uint8 by the one normalisation table (:mod:`medsam_lite.normalize`: CT windows,
MR / microscopy percentiles), volumes are (D, H, W) with D = axial slices. To finish in minutes on 2
cores the data are subsampled (:class:`GateConfig`, recorded in the report).

Rule (:data:`THRESHOLDS`): a reduced precision passes when its mean ground-truth DSC is within 0.005 of
fp32 (|delta| on the 2D objects and on the 3D objects) and its mean 2D object-box IoU against fp32 is
>= 0.98. bf16 precisions are skipped on a CPU without native bf16 (:func:`not_native`). Then the speed of
OpenVINO fp32 and of every measured reduced precision (:func:`measure_speed`: encoder call and decoded box,
interleaved rounds, medians). Writes ``gate.json`` + ``gate.md`` to the output folder and the CPU kind's
entry (:func:`decision`: agreement + speed per precision) into a decision file
(:mod:`medsam_lite.backends.decision`): the committed package data with ``benchmark gate --decide``, the
user cache folder with ``medsam-lite gate``. The measurement lives here, the choice from it there.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..backends.decision import AUTO_CANDIDATES, BF16_PRECISIONS, FORMAT, read_decision
from ..errors import InputError
from ..io_utils import atomic_path
from ..metrics import dice
from ..model import MedSAMLite
from ..normalize import normalize_to_uint8
from ..transforms import box_from_mask
from . import REFERENCE
from .cases import Case

THRESHOLDS: Dict[str, float] = {"gt_dsc_max_abs_delta": 0.005, "box_iou_min_mean": 0.98}
"""The gate's rule (see module docstring)."""

VARIANTS: Tuple[str, ...] = ("onnxruntime:fp32", "openvino:fp32", "openvino:bf16", "openvino:bf16-encoder",
                             "openvino:bf16-mixed", "openvino:bf16-mixed3", "openvino:int8")
"""``BACKEND:PRECISION`` measured against the eager torch fp32 reference."""

REDUCED = ("bf16", "bf16-encoder", "bf16-mixed", "bf16-mixed3", "int8")
"""OpenVINO precisions the decision records (agreement, and speed against fp32)."""
AUTO_ORDER = AUTO_CANDIDATES
"""The reduced precisions ``auto`` may run (:data:`medsam_lite.backends.decision.AUTO_CANDIDATES`, where the
reason the per-stage mixes are left out is given)."""

USER_VARIANTS: Tuple[str, ...] = ("openvino:fp32",) + tuple(f"openvino:{p}" for p in AUTO_CANDIDATES)
"""What ``medsam-lite gate`` measures on a user's CPU: OpenVINO fp32 and every precision ``auto`` may run."""


@dataclass
class GateConfig:
    """What the gate runs on (subsampling keeps it to minutes on 2 CPU cores).

    Attributes:
        shared: the shared data folder (None: bundled examples only).
        slices_per_volume: 2D slices taken per labelled volume (the centres of equal runs of the slices
            that hold objects).
        max_boxes_per_slice: largest objects kept per 2D slice.
        nuclei_boxes: nuclei kept (evenly spaced by label id) of the 2D microscopy example.
        min_object_px: smallest 2D object (pixels) used as a box target.
        organs_3d: largest organs of mr_organs propagated in 3D.
        ct_slab: the bundled CT volume is cut to this many axial slices centred in its boxes' z range
            (boxes clipped to the slab, ground truth cut the same way).
        threads: runtime threads (torch and the converted backends).
        variants: ``BACKEND:PRECISION`` choices to measure.
        quick: bundled examples only, 3D on the MR example only (for tests).
        speed_rounds: interleaved timing rounds of the speed measurement (:func:`measure_speed`; medians).
        speed_images: 2D cases (the first ones) whose images and boxes are timed.
    """

    shared: Optional[Path] = None
    slices_per_volume: int = 2
    max_boxes_per_slice: int = 8
    nuclei_boxes: int = 20
    min_object_px: int = 20
    organs_3d: int = 2
    ct_slab: int = 31
    threads: int = 2
    variants: Tuple[str, ...] = VARIANTS
    quick: bool = False
    cache_dir: Optional[Path] = None
    speed_rounds: int = 9
    speed_images: int = 3


# ----------------------------------------------------------------------------- cases
def _boxes_2d(label_map: np.ndarray, labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 4) tight boxes of the objects ``label_map == labels[i]`` and their label map (value i+1 = box i)."""
    gts = np.zeros(label_map.shape, np.uint8)
    for i, k in enumerate(labels, start=1):
        gts[label_map == k] = i
    boxes = np.stack([box_from_mask(gts == i, 0) for i in range(1, len(labels) + 1)]) if labels else \
        np.zeros((0, 4), np.float32)
    return boxes.astype(np.int64), gts


def _case_2d(name: str, image: np.ndarray, label_map: np.ndarray, labels: Sequence[int]) -> Case:
    boxes, gts = _boxes_2d(label_map, labels)
    return Case(name, "2d", image, boxes, gts)


def _box_3d(mask: np.ndarray) -> np.ndarray:
    zs, ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()], dtype=np.int64)


def _slices_of_volume(name: str, volume: np.ndarray, labels: np.ndarray, cfg: GateConfig) -> List[Case]:
    """``cfg.slices_per_volume`` axial slices of a labelled (D, H, W) volume, largest objects as boxes."""
    area = (labels > 0).reshape(labels.shape[0], -1).sum(1)
    candidates = np.nonzero(area >= cfg.min_object_px)[0]
    if len(candidates) == 0:
        return []
    n = min(cfg.slices_per_volume, len(candidates))
    picks = candidates[((np.arange(n) + 0.5) / n * len(candidates)).astype(int)]  # centres of n equal runs
    cases = []
    for z in sorted(set(int(p) for p in picks)):
        ids, counts = np.unique(labels[z][labels[z] > 0], return_counts=True)
        keep = [int(k) for k, c in sorted(zip(ids, counts), key=lambda t: -t[1]) if c >= cfg.min_object_px]
        if keep:
            cases.append(_case_2d(f"{name}/z{z}", volume[z], labels[z], keep[: cfg.max_boxes_per_slice]))
    return cases


def _slab(name: str, volume: np.ndarray, boxes: np.ndarray, gts: np.ndarray, slices: int) -> Case:
    """The ``slices`` axial slices centred in the boxes' z range, boxes clipped and shifted to the slab."""
    z_lo, z_hi = int(boxes[:, 2].min()), int(boxes[:, 5].max())
    start = max(0, (z_lo + z_hi + 1) // 2 - slices // 2)
    stop = min(volume.shape[0], start + slices)
    clipped = boxes.copy()
    clipped[:, 2] = np.clip(boxes[:, 2], start, stop - 1) - start
    clipped[:, 5] = np.clip(boxes[:, 5], start, stop - 1) - start
    return Case(f"{name}[z{start}:{stop}]", "3d", volume[start:stop], clipped, gts[start:stop])


def _read(path: Path) -> np.ndarray:
    from ..imageio import read_case

    return read_case(path).array


def build_cases(cfg: GateConfig) -> Tuple[List[Case], List[Case]]:
    """The gate's 2D and 3D cases (see module docstring and :class:`GateConfig`)."""
    from ..resources import load_example

    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    ids = [int(k) for k in np.unique(nuclei["gts"]) if k > 0]
    ids = [ids[i] for i in np.linspace(0, len(ids) - 1, min(cfg.nuclei_boxes, len(ids))).round().astype(int)]
    cases_2d = [_case_2d("bundled/nuclei2d", nuclei["imgs"], nuclei["gts"], ids)]
    ct, mr = load_example("3DBox_CT_abdomen.npz"), load_example("3DBox_MR_brain_tumour.npz")
    cases_3d = [] if cfg.quick else [_slab("bundled/ct_abdomen", ct["imgs"], ct["boxes"], ct["gts"], cfg.ct_slab)]
    cases_3d.append(Case("bundled/mr_brain_tumour", "3d", mr["imgs"], mr["boxes"], mr["gts"]))
    if cfg.quick or cfg.shared is None:  # with the shared data, ct_organs (same scan, 61 labels) replaces these
        cases_2d += _slices_of_volume("bundled/ct_abdomen", ct["imgs"], ct["gts"], cfg)[: 1 if cfg.quick else None]
        return cases_2d, cases_3d
    root = Path(cfg.shared)
    ct_vol = normalize_to_uint8(_read(root / "ct_organs/ct.nii.gz"), "CT", (40.0, 400.0))
    cases_2d += _slices_of_volume("ct_organs", ct_vol, _read(root / "ct_organs/labels.nii.gz").astype(np.int64), cfg)
    mr_vol = normalize_to_uint8(_read(root / "mr_organs/mr.nii.gz"), "MR")
    mr_lab = _read(root / "mr_organs/labels.nii.gz").astype(np.int64)
    cases_2d += _slices_of_volume("mr_organs", mr_vol, mr_lab, cfg)
    ids, counts = np.unique(mr_lab[mr_lab > 0], return_counts=True)
    organs = [int(k) for k, _ in sorted(zip(ids, counts), key=lambda t: -t[1])[: cfg.organs_3d]]
    gts = np.zeros(mr_lab.shape, np.uint8)
    for i, k in enumerate(organs, start=1):
        gts[mr_lab == k] = i
    cases_3d.append(Case("mr_organs", "3d", mr_vol, np.stack([_box_3d(mr_lab == k) for k in organs]), gts))
    for lesion, modality, window in (("lung1", "CT", (-600.0, 1500.0)), ("breast1", "MR", None)):
        vol = normalize_to_uint8(_read(root / f"lesions/{lesion}_image.nrrd"), modality, window)
        lab = (_read(root / f"lesions/{lesion}_label.nrrd") > 0).astype(np.uint8)
        cases_3d.append(Case(f"lesions/{lesion}", "3d", vol, _box_3d(lab > 0)[None], lab))
        z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
        cases_2d.append(_case_2d(f"lesions/{lesion}/z{z}", vol[z], lab[z], [1]))
    t1 = normalize_to_uint8(_read(root / "mni152/t1.nii.gz"), "MR")
    tissue = np.zeros(t1.shape, np.int64)
    tissue[_read(root / "mni152/wm_prob.nii.gz") >= 128] = 1
    tissue[_read(root / "mni152/gm_prob.nii.gz") >= 128] = 2
    for z in np.linspace(t1.shape[0] * 0.35, t1.shape[0] * 0.65, 2).round().astype(int):
        cases_2d.append(_case_2d(f"mni152/z{z}", t1[z], tissue[z], [1, 2]))
    return cases_2d, cases_3d


# ----------------------------------------------------------------------------- running
@dataclass
class Outputs:
    """One backend's predictions: masks_2d[i] (N, H, W) bool per 2D case, segs_3d[i] (D, H, W) uint8."""

    masks_2d: List[np.ndarray] = field(default_factory=list)
    segs_3d: List[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0
    encoder_calls: int = 0


def run_backend(backend: Any, cases_2d: Sequence[Case], cases_3d: Sequence[Case]) -> Outputs:
    """Predict every case with ``backend`` through :class:`~medsam_lite.predictor.Predictor`."""
    from ..predictor import Predictor

    predictor = Predictor(None, backend=backend)
    out = Outputs()
    start = time.perf_counter()
    for case in cases_2d:
        predictor.set_image(case.image)
        out.masks_2d.append(predictor.predict(case.boxes, label_map=False))
    for case in cases_3d:
        out.segs_3d.append(predictor.predict_volume(case.image, case.boxes, progress=False))
    out.seconds = time.perf_counter() - start
    out.encoder_calls = predictor.encoder_calls
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def gt_dsc(outputs: Outputs, cases_2d: Sequence[Case], cases_3d: Sequence[Case]) -> Tuple[List[float], List[float]]:
    """Per-object ground-truth DSC: (2D objects, 3D objects)."""
    d2 = [dice(m, g) for masks, case in zip(outputs.masks_2d, cases_2d) for m, g in zip(masks, case.object_masks())]
    d3 = [dice(seg == i, case.gts == i) for seg, case in zip(outputs.segs_3d, cases_3d)
          for i in range(1, len(case.boxes) + 1)]
    return d2, d3


def compare(ref: Outputs, out: Outputs, cases_2d: Sequence[Case], cases_3d: Sequence[Case]) -> Dict[str, Any]:
    """Agreement of ``out`` with the fp32 reference ``ref`` and the change of ground-truth DSC."""
    ious = [_iou(a, b) for ra, oa in zip(ref.masks_2d, out.masks_2d) for a, b in zip(ra, oa)]
    label_dsc = [dice(r == i, o == i) for r, o, case in zip(ref.segs_3d, out.segs_3d, cases_3d)
                 for i in range(1, len(case.boxes) + 1)]
    r2, r3 = gt_dsc(ref, cases_2d, cases_3d)
    o2, o3 = gt_dsc(out, cases_2d, cases_3d)
    return {
        "box_iou_mean": float(np.mean(ious)), "box_iou_min": float(np.min(ious)), "n_boxes": len(ious),
        "label_dsc_vs_fp32_mean": float(np.mean(label_dsc)), "label_dsc_vs_fp32_min": float(np.min(label_dsc)),
        "n_objects_3d": len(label_dsc),
        "gt_dsc_2d": float(np.mean(o2)), "gt_dsc_2d_delta": float(np.mean(o2) - np.mean(r2)),
        "gt_dsc_3d": float(np.mean(o3)), "gt_dsc_3d_delta": float(np.mean(o3) - np.mean(r3)),
        "per_case_3d_gt_dsc": {case.name: float(np.mean([dice(seg == i, case.gts == i)
                                                          for i in range(1, len(case.boxes) + 1)]))
                               for seg, case in zip(out.segs_3d, cases_3d)},
        "seconds": round(out.seconds, 1), "encoder_calls": out.encoder_calls,
    }


def passes(metrics: Dict[str, Any], thresholds: Dict[str, float] = THRESHOLDS) -> bool:
    """The gate rule on one variant's metrics (see module docstring)."""
    limit = thresholds["gt_dsc_max_abs_delta"]
    return bool(abs(metrics["gt_dsc_2d_delta"]) <= limit and abs(metrics["gt_dsc_3d_delta"]) <= limit
                and metrics["box_iou_mean"] >= thresholds["box_iou_min_mean"])


def make_variant(model: MedSAMLite, backend: str, precision: str, cfg: GateConfig) -> Any:
    """A backend object for one variant (``backend`` may carry the precision: ``"openvino:bf16"``), built by
    :func:`medsam_lite.backends.create_backend` into ``cfg.cache_dir`` with ``cfg.threads``."""
    from ..backends import create_backend

    return create_backend(model, backend, precision, cache_dir=cfg.cache_dir, threads=cfg.threads)


def _log(message: str) -> None:
    print(message, flush=True)


def _measure(model: MedSAMLite, choice: str, ref: Outputs, cases_2d: Sequence[Case], cases_3d: Sequence[Case],
             cfg: GateConfig, log: Any) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(report key ``backend/precision``, metrics against the reference outputs: :func:`compare` + ``passes``)
    of one variant, or None when the registry cannot build it here (the reason is logged)."""
    from ..backends import installed, parse_choice

    try:
        backend, precision = parse_choice(choice)
        if not installed(backend):
            log(f"{backend}: not installed, skipped")
            return None
        reason = not_native(backend, precision)
        if reason:
            log(f"{choice}: skipped ({reason})")
            return None
        log(f"{backend} {precision} ...")
        variant = make_variant(model, backend, precision, cfg)
    except InputError as exc:
        log(f"{choice}: skipped ({exc})")
        return None
    out = run_backend(variant, cases_2d, cases_3d)
    del variant
    metrics = compare(ref, out, cases_2d, cases_3d)
    metrics["passes"] = passes(metrics)
    log(f"{backend} {precision}: {metrics['seconds']:.0f} s, IoU mean {metrics['box_iou_mean']:.4f} "
        f"min {metrics['box_iou_min']:.4f}, 3D label DSC vs fp32 {metrics['label_dsc_vs_fp32_mean']:.4f}, "
        f"GT DSC delta 2D {metrics['gt_dsc_2d_delta']:+.4f} 3D {metrics['gt_dsc_3d_delta']:+.4f} "
        f"-> {'pass' if metrics['passes'] else 'fail'}")
    return f"{backend}/{precision}", metrics


def not_native(backend: str, precision: str) -> Optional[str]:
    """Why ``backend:precision`` is not measured on this CPU (a bf16 precision without native bf16: OpenVINO
    would silently run it in f32), else None."""
    from ..backends.cpu import native_bf16

    if precision in BF16_PRECISIONS and not native_bf16():  # OpenVINO's names: no other backend has them
        return "no native bf16 on this CPU: OpenVINO would run it in f32"
    return None


def run_gate(model: MedSAMLite, cfg: GateConfig, log: Any = _log) -> Dict[str, Any]:
    """Measure every variant of ``cfg`` against eager fp32, then the speed of the OpenVINO ones
    (:func:`measure_speed`); returns the report dict (see :func:`write_report`)."""
    from ..backends import parse_choice
    from ..backends.cpu import cpu_name, native_bf16, this_cpu_kind

    cases_2d, cases_3d = build_cases(cfg)
    log(f"gate on {cpu_name()} ({this_cpu_kind()}): {len(cases_2d)} 2D cases "
        f"({sum(len(c.boxes) for c in cases_2d)} boxes), {len(cases_3d)} 3D cases "
        f"({sum(len(c.boxes) for c in cases_3d)} objects)")
    log(f"{REFERENCE} (reference) ...")
    ref = run_backend(make_variant(model, REFERENCE, "auto", cfg), cases_2d, cases_3d)
    r2, r3 = gt_dsc(ref, cases_2d, cases_3d)
    log(f"{REFERENCE}: {ref.seconds:.0f} s, GT DSC 2D {np.mean(r2):.4f} 3D {np.mean(r3):.4f}")
    results: Dict[str, Any] = {}
    for choice in cfg.variants:
        measured = _measure(model, choice, ref, cases_2d, cases_3d, cfg, log)
        if measured is not None:
            results[measured[0]] = measured[1]
    skipped = {c: not_native(*parse_choice(c)) for c in cfg.variants if not_native(*parse_choice(c))}
    timed = [key.split("/", 1)[1] for key in results if key.startswith("openvino/")]
    speed = measure_speed(model, timed, speed_inputs(cases_2d, cfg.speed_images), cfg, log) if timed else {}
    ref_backend, ref_precision = parse_choice(REFERENCE)
    return {
        "cpu": cpu_name(), "kind": this_cpu_kind(), "native_bf16": native_bf16(), "logical_cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "torch": torch.__version__,
        "openvino": _version("openvino"), "onnxruntime": _version("onnxruntime"), "nncf": _version("nncf"),
        "thresholds": THRESHOLDS, "config": {k: (str(v) if isinstance(v, Path) else v)
                                             for k, v in asdict(cfg).items() if k != "cache_dir"},
        "cases_2d": [{"name": c.name, "boxes": len(c.boxes), "shape": list(c.image.shape)} for c in cases_2d],
        "cases_3d": [{"name": c.name, "objects": len(c.boxes), "shape": list(c.image.shape)} for c in cases_3d],
        "reference": {"backend": ref_backend, "precision": ref_precision, "gt_dsc_2d": float(np.mean(r2)),
                      "gt_dsc_3d": float(np.mean(r3)), "seconds": round(ref.seconds, 1),
                      "encoder_calls": ref.encoder_calls},
        "results": results, "skipped": skipped, "speed": speed,
    }


# ----------------------------------------------------------------------------- speed
def speed_inputs(cases_2d: Sequence[Case], n: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """(model input (1, 3, 256, 256), its boxes in the model frame (k, 4), at most 4 a call as the OpenVINO
    Predictor decodes them) of the first ``n`` 2D cases: the real images the speed is measured on."""
    from ..transforms import preprocess_image, scale_boxes

    inputs = []
    for case in list(cases_2d)[:n]:
        image, _ = preprocess_image(case.image)
        boxes = scale_boxes(case.boxes[:4], case.image.shape[:2])
        inputs.append((image, torch.from_numpy(boxes)))
    return inputs


def measure_speed(model: MedSAMLite, precisions: Sequence[str], inputs: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                  cfg: GateConfig, log: Any = _log) -> Dict[str, Dict[str, Any]]:
    """Median ms of one encoder call and of one decoded box (a call of the input's boxes, a new embedding:
    the decoder's image part included) for each OpenVINO precision, fp32 always among them. The variants
    are timed interleaved, round by round (their order reversed every other round), so a shared machine's
    load falls on all of them alike; one warm-up call each is not timed."""
    names = ["fp32"] + [p for p in precisions if p != "fp32"]
    backends = {p: make_variant(model, "openvino", p, cfg) for p in names}
    for backend in backends.values():
        backend.decode(backend.encode(inputs[0][0]), inputs[0][1])
    enc: Dict[str, List[float]] = {p: [] for p in names}
    dec: Dict[str, List[float]] = {p: [] for p in names}
    for r in range(cfg.speed_rounds):
        image, boxes = inputs[r % len(inputs)]
        for p in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            embedding = backends[p].encode(image)
            t1 = time.perf_counter()
            backends[p].decode(embedding, boxes)
            enc[p].append((t1 - t0) * 1e3)
            dec[p].append((time.perf_counter() - t1) * 1e3 / len(boxes))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # how shared the cores were
    speed = {p: {"encoder_ms": round(float(np.median(enc[p])), 1), "decoder_ms": round(float(np.median(dec[p])), 2),
                 "rounds": cfg.speed_rounds, "load_avg_1min": load} for p in names}
    log("speed (median ms, interleaved): " + ", ".join(
        f"{p} encoder {v['encoder_ms']} decoder/box {v['decoder_ms']}" for p, v in speed.items()))
    return speed


def _version(module: str) -> Optional[str]:
    import importlib.metadata

    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


AGREEMENT_KEYS: Tuple[str, ...] = ("box_iou_mean", "box_iou_min", "gt_dsc_2d_delta", "gt_dsc_3d_delta",
                                   "label_dsc_vs_fp32_mean", "n_boxes", "n_objects_3d")
"""Agreement metrics a decision entry keeps per precision (the report keeps them all)."""


def decision(report: Dict[str, Any], report_path: str) -> Dict[str, Any]:
    """The decision-file entry of the report's CPU kind (:mod:`medsam_lite.backends.decision`): per reduced
    OpenVINO precision its agreement metrics, pass / fail and speed, or why it was not measured here."""
    speed = report.get("speed", {})
    precisions: Dict[str, Any] = {}
    for p in REDUCED:
        metrics = report["results"].get(f"openvino/{p}")
        if metrics is not None:
            precisions[p] = {"passes": bool(metrics["passes"]), **{k: metrics[k] for k in AGREEMENT_KEYS},
                             **{k: v for k, v in speed.get(p, {}).items() if k in ("encoder_ms", "decoder_ms")}}
        elif f"openvino:{p}" in report.get("skipped", {}):
            precisions[p] = {"skipped": report["skipped"][f"openvino:{p}"]}
    fp32 = speed.get("fp32")
    return {"cpu": report["cpu"], "date": report["date"], "openvino": report["openvino"],
            "threads": report["config"]["threads"], "thresholds": report["thresholds"],
            "speed_rounds": fp32["rounds"] if fp32 else None,
            "load_avg_1min": fp32.get("load_avg_1min") if fp32 else None,
            "fp32": {k: fp32[k] for k in ("encoder_ms", "decoder_ms")} if fp32 else None,
            "precisions": precisions, "report": report_path}


def write_decision(report: Dict[str, Any], report_path: str, path: Optional[Path] = None) -> Path:
    """Store :func:`decision` of ``report`` (its markdown report at ``report_path``) under its CPU kind in the
    decision file ``path`` (default: the committed :data:`medsam_lite.backends.decision.GATE_FILE`), keeping
    the other kinds' entries; its path."""
    from ..backends.decision import GATE_FILE

    path = Path(GATE_FILE if path is None else path)
    content = read_decision(path) or {"format": FORMAT, "kinds": {}}
    content["kinds"][report["kind"]] = decision(report, report_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    return path


def _agreement_lines(report: Dict[str, Any]) -> List[str]:
    """The report's agreement tables (every variant; per-case 3D DSC)."""
    lines = [
        "| backend / precision | box IoU mean | box IoU min | 3D label DSC vs fp32 mean / min | GT DSC 2D (delta) "
        "| GT DSC 3D (delta) | s | gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["results"].items():
        lines.append(
            f"| {name} | {m['box_iou_mean']:.4f} | {m['box_iou_min']:.4f} | {m['label_dsc_vs_fp32_mean']:.4f} / "
            f"{m['label_dsc_vs_fp32_min']:.4f} | {m['gt_dsc_2d']:.4f} ({m['gt_dsc_2d_delta']:+.4f}) | "
            f"{m['gt_dsc_3d']:.4f} ({m['gt_dsc_3d_delta']:+.4f}) | {m['seconds']} | "
            f"{'pass' if m['passes'] else 'fail'} |")
    lines += [f"| {name.replace(':', '/')} | - | - | - | - | - | - | skipped: {why} |"
              for name, why in report.get("skipped", {}).items()]
    lines += ["", "Per-case 3D GT DSC:", "", "| backend / precision | " +
              " | ".join(c["name"] for c in report["cases_3d"]) + " |",
              "|---|" + "---|" * len(report["cases_3d"])]
    for name, m in report["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m['per_case_3d_gt_dsc'][c['name']]:.4f}"
                                                 for c in report["cases_3d"]) + " |")
    return lines


def _speed_lines(report: Dict[str, Any]) -> List[str]:
    """The speed table and the decision it leads to on this CPU kind."""
    from ..backends.decision import SPEED_MARGIN, choose, eligible, image_ms

    speed, entry = report.get("speed", {}), decision(report, "")
    if not speed:
        return ["No OpenVINO variant was timed: `auto` runs fp32 on this kind.", ""]
    fp32 = speed["fp32"]
    lines = [f"Speed on this CPU (OpenVINO, {report['config']['threads']} threads; median of {fp32['rounds']} "
             "interleaved rounds on real images of the 2D cases: each round times every precision once, in "
             "alternating order; a decoder call decodes up to 4 boxes of a new embedding" +
             (f"; 1-minute load average {fp32['load_avg_1min']:.1f} when the timing ended, on "
              f"{report.get('logical_cpus')} logical CPUs" if fp32.get("load_avg_1min") is not None else "") + "):", "",
             "| precision | encoder ms | decoder ms / box | encoder + 1 box ms | vs fp32 | agreement | auto may run |",
             "|---|---|---|---|---|---|---|"]
    for p, v in speed.items():
        passed = "pass" if p == "fp32" else ("pass" if entry["precisions"][p]["passes"] else "fail")
        may = "yes (reference)" if p == "fp32" else ("yes" if eligible(entry, p) else "no")
        lines.append(f"| {p} | {v['encoder_ms']} | {v['decoder_ms']} | {image_ms(v):.1f} | "
                     f"{image_ms(v) / image_ms(fp32):.2f}x | {passed} | {may} |")
    chosen = choose(entry, native_bf16=bool(report["native_bf16"]))
    return lines + ["", f"Rule (`medsam_lite.backends.decision`): `auto` runs the fastest precision of "
                    f"{', '.join(AUTO_CANDIDATES)} that passed the agreement rule AND takes at most "
                    f"{1 - SPEED_MARGIN:.2f}x fp32's encoder + 1 box time with a decoder no more than "
                    f"{SPEED_MARGIN:.0%} slower; else fp32. On this kind ({report['kind']}): **{chosen}**.", ""]


def write_report(report: Dict[str, Any], out_dir: Path) -> Tuple[Path, Path]:
    """Write ``out_dir/gate.json`` (all numbers) and ``out_dir/gate.md`` (tables)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "gate.json", out_dir / "gate.md"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    ref, cfg = report["reference"], report["config"]
    lines = [
        "# Backend agreement and speed gate", "",
        f"CPU: {report['cpu']}, kind `{report['kind']}` (native bf16: {report['native_bf16']}), measured "
        f"{report['date']}; torch {report['torch']}, OpenVINO {report['openvino']}, ONNX Runtime "
        f"{report['onnxruntime']}, NNCF {report['nncf']}.", "",
        "Reference: eager torch fp32 (lite_medsam). Rule: a reduced precision passes when |GT DSC delta| <= "
        f"{report['thresholds']['gt_dsc_max_abs_delta']} (2D objects and 3D objects) and mean object-box IoU vs "
        f"fp32 >= {report['thresholds']['box_iou_min_mean']}.", "",
        f"Reference GT DSC: 2D {ref['gt_dsc_2d']:.4f}, 3D {ref['gt_dsc_3d']:.4f} ({ref['seconds']} s, "
        f"{ref['encoder_calls']} encoder calls).", ""]
    lines += [f"Note: {report['note']}", ""] if report.get("note") else []
    lines += _agreement_lines(report) + [""] + _speed_lines(report)
    lines += ["Cases (subsampled to finish in minutes on 2 cores): "
              f"{len(report['cases_2d'])} 2D slices / images with {sum(c['boxes'] for c in report['cases_2d'])} "
              f"tight ground-truth boxes (at most {cfg['max_boxes_per_slice']} largest objects per slice, "
              f"{cfg['slices_per_volume']} evenly spaced slices per labelled volume, {cfg['nuclei_boxes']} of the "
              f"125 nuclei, objects >= {cfg['min_object_px']} px); "
              f"{len(report['cases_3d'])} volumes propagated in 3D with "
              f"{sum(c['objects'] for c in report['cases_3d'])} objects:", ""]
    lines += [f"- 2D {c['name']}: {c['boxes']} boxes, {c['shape']}" for c in report["cases_2d"]]
    lines += [f"- 3D {c['name']}: {c['objects']} objects, {c['shape']}" for c in report["cases_3d"]]
    lines += ["", "The seconds column is indicative only (whole runs, one after another, in the same process as "
              "torch); the speed table is the measurement the decision uses.", ""]
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines))
    return json_path, md_path
