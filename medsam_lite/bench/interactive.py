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

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
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


def npz_case(path: Path) -> InteractiveCase:
    """A labelled challenge-style 3D case (``imgs`` (D, H, W) uint8, ``gts`` label map, ``boxes`` (N, 6)): one
    object per box, label i+1 = box i (one object ``gts > 0`` when the labels do not match the boxes).
    InputError (one line) when the file is not such a case."""
    path = Path(path)
    try:
        with np.load(path) as data:
            imgs, gts, boxes = data["imgs"], data["gts"], data["boxes"].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"not a labelled 3D case (.npz with imgs, gts, boxes): {exc}", path) from None
    if imgs.ndim != 3 or imgs.dtype != np.uint8 or gts.shape != imgs.shape or boxes.ndim != 2 or boxes.shape[1] != 6:
        raise InputError(f"needs imgs (D, H, W) uint8, gts of its shape and boxes (N, 6); got imgs "
                         f"{imgs.shape} {imgs.dtype}, gts {gts.shape}, boxes {boxes.shape}", path)
    ids = [i for i in np.unique(gts) if i]
    objects = tuple(gts == i for i in ids) if len(ids) == len(boxes) else (gts > 0,)
    return InteractiveCase(path.stem, imgs, objects, boxes[: len(objects)])


def bundled_cases(examples: Path) -> List[InteractiveCase]:
    """The bundled labelled 3D examples (``3DBox_*.npz`` with ``gts``): one object per box, label i+1 = box i."""
    paths = sorted(Path(examples).glob("3DBox_*.npz"))
    return [npz_case(p) for p in paths if "gts" in np.load(p).files]


TRAINING_SIDE = ("lesions/lung1",)
"""Training-side labelled volumes of ``../shared/data`` beside the bundled examples (which are ``ct_organs`` and
``lesions/brain1``); the held-out volumes (``bench.fidelity.volume_cases``) are never benchmarked here."""


def training_side_cases(shared: Path) -> List[InteractiveCase]:
    """:data:`TRAINING_SIDE` as cases: ``lesions/lung1`` (a 48 x 512 x 512 chest CT, window L40/W400; its lesion
    boxed by :func:`medsam_lite.bench.fidelity.volume_box`)."""
    from ..imageio import read_case
    from ..normalize import model_input_uint8
    from .fidelity import volume_box

    folder = Path(shared) / "lesions"
    image, label = folder / "lung1_image.nrrd", folder / "lung1_label.nrrd"
    if not image.is_file() or not label.is_file():
        raise InputError("no lesions/lung1_image.nrrd / lung1_label.nrrd (the training-side CT lesion)", shared)
    truth = read_case(label).array > 0
    volume = np.ascontiguousarray(model_input_uint8(read_case(image).array, "CT", None)[0])
    return [InteractiveCase("lung1 (CT lesion)", volume, (truth,), volume_box(truth)[None].astype(np.int64))]


def run_benchmark(predictor: object, cases: Sequence[InteractiveCase], policy: CorrectionPolicy,
                  corrections: int = 3, log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """The simulated user on every case with ``policy`` -> {"policy", "curves" (per case, per object),
    "summary" (:func:`summarize`), "cpu", "cpu_count", "load_average", "seconds", "worst_step"}. ``predictor``: a
    :class:`~medsam_lite.predictor.Predictor`; ``log``: one line per case as it ends (its mean curve)."""
    curves = {}
    load_before, start = _load(), time.perf_counter()
    for case in cases:
        session = predictor.session(case.volume, policy=policy)  # type: ignore[attr-defined]
        curves[case.name] = run_case(session, case, corrections)
        if log is not None:
            mean = np.mean(np.asarray(curves[case.name]), axis=0)
            log(f"{case.name}: {len(case.objects)} objects, mean DSC after 0..{corrections} corrections "
                f"{' '.join(f'{v:.3f}' for v in mean)} ({time.perf_counter() - start:.0f} s, load {_load()})")
    return {"policy": policy_name(policy), "curves": curves, "summary": summarize(curves), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "load_average": {"start": load_before, "end": _load()},
            "seconds": round(time.perf_counter() - start, 1), "worst_step": worst_step(summarize(curves))}


def _load() -> List[float]:
    """The 1 / 5 / 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def worst_step(summary: Dict[str, List[float]]) -> float:
    """The largest drop of the overall mean DSC from one correction to the next (0 when none drops)."""
    overall = summary["overall"]
    return float(max([0.0] + [overall[i] - overall[i + 1] for i in range(len(overall) - 1)]))


def latency_case(predictor: object, volume: np.ndarray, walk: int = 20, repeats: int = 3) -> Dict[str, object]:
    """:func:`correction_latency` on the middle slice of ``volume`` (D, H, W) with a box of half its size."""
    session = predictor.session(volume)  # type: ignore[attr-defined]
    depth, height, width = session.shape
    z = max(0, min(depth // 2, depth - 1 - walk))
    box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    result: Dict[str, object] = dict(correction_latency(session, 1, z, box, walk, repeats))
    result.update({"shape": [depth, height, width], "cpu": cpu_model(), "load_average": _load()})
    return result


def markdown(report: Dict[str, object], latency: Optional[Dict[str, object]] = None) -> str:
    """The benchmark report as Markdown (mean DSC after 0..n corrections per case and overall; latency)."""
    summary: Dict[str, List[float]] = report["summary"]  # type: ignore[assignment]
    n = len(summary["overall"])
    load = report.get("load_average", {})
    lines = [f"Policy: {report['policy']}. CPU: {report['cpu']} ({report.get('cpu_count', '?')} logical CPUs), "
             f"load average (1 / 5 / 15 min) {load.get('start')} at the start, {load.get('end')} at the end "  # type: ignore[union-attr]
             f"({report.get('seconds', '?')} s). Largest drop of the overall mean from one correction to the "
             f"next: {float(report.get('worst_step', 0.0)):.3f}.", "",
             "| case | objects | " + " | ".join(f"{i} corr." for i in range(n)) + " |",
             "|---|---|" + "---|" * n]
    curves: Dict[str, List[List[float]]] = report["curves"]  # type: ignore[assignment]
    for name, values in summary.items():
        count = sum(len(c) for c in curves.values()) if name == "overall" else len(curves[name])
        lines.append(f"| {name} | {count} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    if latency:
        lines += ["", f"Latency on a {latency['shape']} volume ({latency.get('source', 'volume')}; {latency['cpu']}, "
                  f"load average {latency.get('load_average')}; median of the runs, embeddings in the store): a "
                  f"correction box, decoder only, "
                  f"{latency['correction_s']:.3f} s; re-propagation over {int(latency['walk_slices'])} slices "
                  f"{[v for k, v in latency.items() if str(k).startswith('walk_') and k != 'walk_slices'][0]:.2f} s."]
    return "\n".join(lines) + "\n"
