"""Simulated-user benchmark of interactive sessions (issue 29): ``medsam-lite benchmark --interactive``.

Protocol (the issue's acceptance protocol), per object of a labelled volume: the 3D box
(:func:`medsam_lite.bench.fidelity.volume_box`, or the case's own box), then ``corrections`` correction boxes,
each the ground-truth 2D box (tight, :func:`medsam_lite.transforms.box_from_mask` with shift 0) of the slice
with the most wrong voxels that has no correction yet and shows the object (a slice whose ground truth is empty
has no box to draw). DSC of the object's voxels (``session.labels == k``) after 0..``corrections`` corrections.
Each object is measured alone (it is removed before the next), so neighbours cannot hide it.

Latency: a correction on one slice (decoder only: the slice embedded beforehand) and a re-propagation over
``walk`` slices, with the CPU model named.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..metrics import dice
from ..session import CorrectionPolicy, Session
from ..transforms import box_from_mask


@dataclass(frozen=True)
class InteractiveCase:
    """A labelled volume: ``volume`` (D, H, W) uint8, ``objects`` one (D, H, W) bool mask per object, ``boxes``
    (N, 6) voxel boxes ``[x0, y0, z0, x1, y1, z1]`` (one per object)."""

    name: str
    volume: np.ndarray
    objects: Tuple[np.ndarray, ...]
    boxes: np.ndarray


def worst_slice(pred: np.ndarray, truth: np.ndarray, done: Sequence[int]) -> Optional[int]:
    """The slice (no correction yet, ground truth not empty) with the most wrong voxels of (D, H, W) bool ``pred``
    vs ``truth``; None when no slice is left."""
    wrong = np.count_nonzero(pred ^ truth, axis=(1, 2)).astype(np.int64)
    shows = truth.any(axis=(1, 2))
    candidates = [z for z in range(len(wrong)) if shows[z] and z not in done]
    return max(candidates, key=lambda z: (wrong[z], -z)) if candidates else None


def simulate_object(session: Session, truth: np.ndarray, box: Sequence[float], corrections: int = 3) -> List[float]:
    """Run the simulated user on one object of ``session``: DSC after 0..``corrections`` corrections (the object
    is removed afterwards)."""
    label = session.add_object(tuple(int(v) for v in box))
    scores = [dice(session.labels == label, truth)]
    done: List[int] = []
    for _ in range(corrections):
        z = worst_slice(session.labels == label, truth, done)
        if z is None:
            scores.append(scores[-1])
            continue
        x0, y0, x1, y1 = (int(v) for v in box_from_mask(truth[z], shift=0))
        session.correct(label, z, box=(x0, y0, x1, y1))
        done.append(z)
        scores.append(dice(session.labels == label, truth))
    session.remove(label)
    return scores


def run_case(session: Session, case: InteractiveCase, corrections: int = 3) -> List[List[float]]:
    """Per object of ``case``: its DSC curve (:func:`simulate_object`)."""
    return [simulate_object(session, truth, box, corrections) for truth, box in zip(case.objects, case.boxes)]


def summarize(curves: Dict[str, List[List[float]]]) -> Dict[str, List[float]]:
    """Mean DSC after 0..n corrections per case and ``"overall"`` (mean over every object)."""
    out = {name: np.mean(np.asarray(c), axis=0).tolist() for name, c in curves.items() if c}
    every = [curve for c in curves.values() for curve in c]
    out["overall"] = np.mean(np.asarray(every), axis=0).tolist()
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def correction_latency(session: Session, label: int, z: int, box: Sequence[int], walk: int,
                       repeats: int = 3) -> Dict[str, float]:
    """Median seconds of (a) the decoder-only mask of a correction box on slice ``z`` and (b) a walk of the
    baseline's rule over ``walk`` slices from ``z`` (embeddings already in the store; each run undone)."""
    segmenter = session.segmenter
    depth = session.shape[0]
    order = [zz for zz in range(z + 1, min(depth, z + 1 + walk))]
    for zz in [z] + order:
        segmenter.embedding(zz)
    one, many = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        _, mask = next(iter(segmenter.propagate(tuple(box), [z], None, label)))
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in segmenter.propagate(tuple(box), order, mask, label):
            pass
        many.append(time.perf_counter() - start)
    return {"correction_s": float(np.median(one)), f"walk_{len(order)}_s": float(np.median(many)),
            "walk_slices": float(len(order))}


def policy_name(policy: CorrectionPolicy) -> str:
    """Short text of a policy, e.g. ``nearest, stop IoU 0.9``."""
    stop = "no stop" if policy.stop_iou is None else f"stop IoU {policy.stop_iou:g}"
    return (f"{policy.reach}, {stop}" + ("" if policy.box_anchor else ", no box anchor")
            + ("" if policy.inward else ", outward only"))


def bundled_cases(examples: Path) -> List[InteractiveCase]:
    """The bundled labelled 3D examples (``3DBox_*.npz`` with ``gts``): one object per box, label i+1 = box i."""
    cases = []
    for path in sorted(Path(examples).glob("3DBox_*.npz")):
        data = np.load(path)
        if "gts" not in data:
            continue
        gts, boxes = data["gts"], data["boxes"].astype(np.int64)
        ids = [i for i in np.unique(gts) if i]
        objects = tuple(gts == i for i in ids) if len(ids) == len(boxes) else (gts > 0,)
        cases.append(InteractiveCase(path.stem, data["imgs"], objects, boxes[: len(objects)]))
    return cases


def run_benchmark(predictor: object, cases: Sequence[InteractiveCase], policy: CorrectionPolicy,
                  corrections: int = 3) -> Dict[str, object]:
    """The simulated user on every case with ``policy`` -> {"policy", "curves" (per case, per object),
    "summary" (:func:`summarize`), "cpu"}. ``predictor``: a :class:`~medsam_lite.predictor.Predictor`."""
    curves = {}
    for case in cases:
        session = predictor.session(case.volume, policy=policy)  # type: ignore[attr-defined]
        curves[case.name] = run_case(session, case, corrections)
    return {"policy": policy_name(policy), "curves": curves, "summary": summarize(curves), "cpu": cpu_model()}


def latency_case(predictor: object, volume: np.ndarray, walk: int = 20, repeats: int = 3) -> Dict[str, object]:
    """:func:`correction_latency` on the middle slice of ``volume`` (D, H, W) with a box of half its size."""
    session = predictor.session(volume)  # type: ignore[attr-defined]
    depth, height, width = session.shape
    z = max(0, min(depth // 2, depth - 1 - walk))
    box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    result: Dict[str, object] = dict(correction_latency(session, 1, z, box, walk, repeats))
    result.update({"shape": [depth, height, width], "cpu": cpu_model()})
    return result


def markdown(report: Dict[str, object], latency: Optional[Dict[str, object]] = None) -> str:
    """The benchmark report as Markdown (mean DSC after 0..n corrections per case and overall; latency)."""
    summary: Dict[str, List[float]] = report["summary"]  # type: ignore[assignment]
    n = len(summary["overall"])
    lines = [f"Policy: {report['policy']}. CPU: {report['cpu']}.", "",
             "| case | objects | " + " | ".join(f"{i} corr." for i in range(n)) + " |",
             "|---|---|" + "---|" * n]
    curves: Dict[str, List[List[float]]] = report["curves"]  # type: ignore[assignment]
    for name, values in summary.items():
        count = sum(len(c) for c in curves.values()) if name == "overall" else len(curves[name])
        lines.append(f"| {name} | {count} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    if latency:
        lines += ["", f"Latency on a {latency['shape']} volume ({latency['cpu']}): a correction box, decoder only, "
                  f"{latency['correction_s']:.3f} s; re-propagation over {int(latency['walk_slices'])} slices "
                  f"{[v for k, v in latency.items() if str(k).startswith('walk_') and k != 'walk_slices'][0]:.2f} s."]
    return "\n".join(lines) + "\n"
