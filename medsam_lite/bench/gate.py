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
>= 0.98. Writes ``gate.json`` + ``gate.md`` to the output folder and, with ``--decide``, the decision
(:func:`decision`) into :data:`medsam_lite.backends.openvino.GATE_FILE` (package data of the backends, read by
:func:`~medsam_lite.backends.openvino.auto_precision`): the measurement lives here, the decision file there.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

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
"""OpenVINO precisions the decision is about (preference order for ``auto``: fastest first)."""
AUTO_ORDER = ("bf16", "bf16-encoder", "int8")
"""``auto``'s preference among the precisions that pass (fastest first). The per-stage mixes
``bf16-mixed`` / ``bf16-mixed3`` are never chosen by ``auto``, whatever the gate says: on this CPU both
passed the gate's subsampled cases, but in the benchmark run (docs/benchmark_inference) ``bf16-mixed3``
was only 5 % faster in the encoder than fp32 (271 vs 286 ms: splitting the graph into stages costs
most of what bf16 saves) and lowered the bundled CT's ground-truth DSC through the whole 3D
propagation by 0.022 (0.6281 vs 0.6501), far outside the 0.005 budget. They stay available as
``--precision bf16-mixed`` / ``bf16-mixed3``."""


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


def run_gate(model: MedSAMLite, cfg: GateConfig, log: Any = _log) -> Dict[str, Any]:
    """Measure every variant of ``cfg`` against eager fp32; returns the report dict (see :func:`write_report`)."""
    from ..backends import parse_choice
    from ..backends.cpu import cpu_name, native_bf16

    cases_2d, cases_3d = build_cases(cfg)
    log(f"gate: {len(cases_2d)} 2D cases ({sum(len(c.boxes) for c in cases_2d)} boxes), "
        f"{len(cases_3d)} 3D cases ({sum(len(c.boxes) for c in cases_3d)} objects)")
    log(f"{REFERENCE} (reference) ...")
    ref = run_backend(make_variant(model, REFERENCE, "auto", cfg), cases_2d, cases_3d)
    r2, r3 = gt_dsc(ref, cases_2d, cases_3d)
    log(f"{REFERENCE}: {ref.seconds:.0f} s, GT DSC 2D {np.mean(r2):.4f} 3D {np.mean(r3):.4f}")
    results: Dict[str, Any] = {}
    for choice in cfg.variants:
        measured = _measure(model, choice, ref, cases_2d, cases_3d, cfg, log)
        if measured is not None:
            results[measured[0]] = measured[1]
    ref_backend, ref_precision = parse_choice(REFERENCE)
    return {
        "cpu": cpu_name(), "native_bf16": native_bf16(), "torch": torch.__version__,
        "openvino": _version("openvino"), "onnxruntime": _version("onnxruntime"), "nncf": _version("nncf"),
        "thresholds": THRESHOLDS, "config": {k: (str(v) if isinstance(v, Path) else v)
                                             for k, v in asdict(cfg).items() if k != "cache_dir"},
        "cases_2d": [{"name": c.name, "boxes": len(c.boxes), "shape": list(c.image.shape)} for c in cases_2d],
        "cases_3d": [{"name": c.name, "objects": len(c.boxes), "shape": list(c.image.shape)} for c in cases_3d],
        "reference": {"backend": ref_backend, "precision": ref_precision, "gt_dsc_2d": float(np.mean(r2)),
                      "gt_dsc_3d": float(np.mean(r3)), "seconds": round(ref.seconds, 1),
                      "encoder_calls": ref.encoder_calls},
        "results": results,
    }


def _version(module: str) -> Optional[str]:
    import importlib.metadata

    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


def decision(report: Dict[str, Any]) -> Dict[str, Any]:
    """The decision file content: which reduced OpenVINO precisions passed, and ``auto``'s preference."""
    passed = {p: bool(report["results"].get(f"openvino/{p}", {}).get("passes", False)) for p in REDUCED}
    return {"passed": passed, "auto_order": [p for p in AUTO_ORDER if passed[p]], "thresholds": report["thresholds"],
            "cpu": report["cpu"], "report": "docs/backends/gate.md"}


def write_report(report: Dict[str, Any], out_dir: Path) -> Tuple[Path, Path]:
    """Write ``out_dir/gate.json`` (all numbers) and ``out_dir/gate.md`` (tables)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "gate.json", out_dir / "gate.md"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    ref = report["reference"]
    lines = [
        "# Backend agreement gate", "",
        f"CPU: {report['cpu']} (native bf16: {report['native_bf16']}); torch {report['torch']}, "
        f"OpenVINO {report['openvino']}, ONNX Runtime {report['onnxruntime']}, NNCF {report['nncf']}.", "",
        "Reference: eager torch fp32 (lite_medsam). Rule: a reduced precision passes when |GT DSC delta| <= "
        f"{report['thresholds']['gt_dsc_max_abs_delta']} (2D objects and 3D objects) and mean object-box IoU vs "
        f"fp32 >= {report['thresholds']['box_iou_min_mean']}.", "",
        f"Reference GT DSC: 2D {ref['gt_dsc_2d']:.4f}, 3D {ref['gt_dsc_3d']:.4f} ({ref['seconds']} s, "
        f"{ref['encoder_calls']} encoder calls).", "",
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
    lines += ["", "Per-case 3D GT DSC:", "", "| backend / precision | " +
              " | ".join(c["name"] for c in report["cases_3d"]) + " |",
              "|---|" + "---|" * len(report["cases_3d"])]
    for name, m in report["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m['per_case_3d_gt_dsc'][c['name']]:.4f}"
                                                 for c in report["cases_3d"]) + " |")
    cfg = report["config"]
    lines += ["", "Cases (subsampled to finish in minutes on 2 cores): "
              f"{len(report['cases_2d'])} 2D slices / images with {sum(c['boxes'] for c in report['cases_2d'])} "
              f"tight ground-truth boxes (at most {cfg['max_boxes_per_slice']} largest objects per slice, "
              f"{cfg['slices_per_volume']} evenly spaced slices per labelled volume, {cfg['nuclei_boxes']} of the "
              f"125 nuclei, objects >= {cfg['min_object_px']} px); "
              f"{len(report['cases_3d'])} volumes propagated in 3D with "
              f"{sum(c['objects'] for c in report['cases_3d'])} objects:", ""]
    lines += [f"- 2D {c['name']}: {c['boxes']} boxes, {c['shape']}" for c in report["cases_2d"]]
    lines += [f"- 3D {c['name']}: {c['objects']} objects, {c['shape']}" for c in report["cases_3d"]]
    lines += ["", "Seconds are indicative only: the 2 CPU cores were shared with other jobs, and every variant ran "
              "in the same process as torch.", ""]
    chosen = decision(report)["auto_order"]
    lines += [f"Decision (`medsam_lite/backends/gate.json`): `auto` may run {', '.join(chosen) if chosen else 'none of them'}"
              f" (preference {', '.join(AUTO_ORDER)}; passing precisions outside that list are opt-in only, see "
              "`medsam_lite.bench.gate.AUTO_ORDER` for why), otherwise OpenVINO fp32.", ""]
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines))
    return json_path, md_path


def write_decision(report: Dict[str, Any]) -> Path:
    """Write :func:`decision` of ``report`` into :data:`medsam_lite.backends.openvino.GATE_FILE`; its path."""
    from ..backends.openvino import GATE_FILE

    with atomic_path(GATE_FILE) as tmp:
        tmp.write_text(json.dumps(decision(report), indent=1, sort_keys=True) + "\n")
    return GATE_FILE
