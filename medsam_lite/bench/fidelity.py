"""Fidelity of a distilled student against its teacher on held-out real images.

Two measures (issue 5), both on images the student never saw in distillation:

* **agreement**: for every held-out 2D image (or slice of a held-out volume) a fixed set of random
  boxes (seeded by the image's position in the list), both models segment every box, and the IoU of
  the two masks is recorded (both masks empty counts as IoU 1). Reported per modality and overall.
* **ground truth / object boxes**: DSC against real labels for teacher and student, with one tight
  box per object (the 125 nuclei of ``nuclei2d``, grey / white matter of MNI152 on axial slices,
  the ``mr_organs`` organs and the ``breast1`` lesion), and the student-vs-teacher IoU on those
  boxes: agreement where a user would actually draw a box.
* **noise floor** (reference): the teacher against itself on the same images plus Gaussian noise
  (``NOISE_SIGMA`` grey levels), same boxes: how stable the teacher's own masks are for those boxes.
  The agreement is also reported on the *stable* boxes alone (teacher vs noisy teacher IoU >=
  ``STABLE_IOU``), where the teacher's mask is a well-defined target.

Images are read with the same readers as ``medsam-lite segment`` and mapped to uint8 the same way
(:func:`medsam_lite.imageio.to_uint8`: 0.5-99.5 percentiles), so the measure reflects the CLI path.

* **3D**: every held-out labelled volume whole (:func:`volume_cases`), one box per object on its
  middle slice, propagated by the real 3D path (:meth:`Predictor.predict_volume`); 3D DSC of both
  models and the student-vs-teacher 3D IoU.

Several students are compared side by side in one run (the teacher's masks are computed once), each
with its encoder time on one backend (:class:`TimingConfig`, default OpenVINO fp32 at 2 threads).

The held-out list itself (:data:`medsam_lite.distill.fidelity.HELD_OUT`) belongs to distillation, which
must never train on it; this module measures on it. Usage::

    medsam-lite benchmark fidelity --student repvit_m0_6_lite --teacher lite_medsam --shared DATA -o OUT
    medsam-lite benchmark fidelity --student runs/a/best.pth --student runs/b/best.pth \\
        --shared DATA -o runs/compare --timing-backend openvino --threads 2
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..checkpoint import load_model
from ..distill.boxes import random_boxes
from ..distill.fidelity import HELD_OUT, HeldOut, held_out_file
from ..errors import InputError
from ..imageio import read_case, to_uint8
from ..io_utils import atomic_path
from ..metrics import dice
from ..predictor import Predictor
from ..transforms import box_from_mask

__all__ = ["HELD_OUT", "HeldOut", "random_boxes", "fidelity_report", "FidelityConfig", "TimingConfig"]

if TYPE_CHECKING:
    from ..model import MedSAMLite

PathLike = Union[str, Path]

#: Reference for the agreement numbers: the teacher against itself on the same image plus Gaussian
#: noise of this std (grey levels of the uint8 input), same boxes.
NOISE_SIGMA = 2.0
#: A box is "stable" when the teacher's masks with and without that noise have at least this IoU.
STABLE_IOU = 0.9


def load_held_out(shared: PathLike, items: Sequence[HeldOut] = HELD_OUT) -> List[Tuple[HeldOut, str, np.ndarray]]:
    """Read every held-out item -> list of (item, image id, (H, W[, 3]) uint8 image)."""
    images: List[Tuple[HeldOut, str, np.ndarray]] = []
    for item in items:
        path = held_out_file(item, shared)
        case = read_case(path)
        array = case.array
        if case.is_3d and not item.slices:
            raise InputError("volume needs slice fractions in the held-out list", path)
        if item.slices and array.ndim == 3 and case.is_3d:
            for frac in item.slices:
                z = min(array.shape[0] - 1, int(round(frac * (array.shape[0] - 1))))
                images.append((item, f"{item.name}_z{z}", to_uint8(array[z])))
        else:
            images.append((item, item.name, to_uint8(array)))
    return images


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def box_masks(predictor: Predictor, images: Sequence[Tuple[HeldOut, str, np.ndarray]], n_boxes: int = 8,
              seed: int = 0) -> List[np.ndarray]:
    """Per image: the (n_boxes, H, W) bool masks of its :func:`random_boxes` (seed ``seed + i``)."""
    masks = []
    for i, (_, _, image) in enumerate(images):
        predictor.set_image(image)
        masks.append(np.asarray(predictor.predict(random_boxes(image.shape, n_boxes, seed + i), label_map=False)))
    return masks


def compare(images: Sequence[Tuple[HeldOut, str, np.ndarray]], reference: Sequence[np.ndarray],
            other: Sequence[np.ndarray]) -> List[Dict[str, object]]:
    """Per image: modality, id, shape and the IoU of ``other`` vs ``reference`` masks for each box."""
    return [{"modality": item.modality, "source": item.name, "image": image_id, "shape": list(image.shape),
             "iou": [mask_iou(r, o) for r, o in zip(ref, oth)]}
            for (item, image_id, image), ref, oth in zip(images, reference, other)]


def agreement(student: Predictor, teacher: Predictor, images: Sequence[Tuple[HeldOut, str, np.ndarray]],
              n_boxes: int = 8, seed: int = 0,
              student_images: Optional[Sequence[Tuple[HeldOut, str, np.ndarray]]] = None) -> List[Dict[str, object]]:
    """Per image: modality, id, the IoU of student vs teacher masks for each of ``n_boxes`` random boxes.

    ``student_images`` (same order and shapes as ``images``) replaces the student's input, e.g. the
    teacher on :func:`add_noise` images for the noise floor."""
    return compare(images, box_masks(teacher, images, n_boxes, seed),
                   box_masks(student, images if student_images is None else student_images, n_boxes, seed))


def add_noise(images: Sequence[Tuple[HeldOut, str, np.ndarray]], sigma: float,
              seed: int = 123) -> List[Tuple[HeldOut, str, np.ndarray]]:
    """The images plus Gaussian noise of std ``sigma`` grey levels (rounded, clipped to uint8)."""
    rng = np.random.default_rng(seed)
    return [(item, image_id, np.clip(np.rint(image + rng.normal(0.0, sigma, image.shape)), 0, 255).astype(np.uint8))
            for item, image_id, image in images]


#: Smallest object (pixels on the slice) that gets a box in the object-box cases, as the challenge's prep.
MIN_OBJECT_PIXELS = 20

ObjectCase = Tuple[np.ndarray, List[np.ndarray]]
#: Modality of each :func:`object_cases` set (the 2D ground-truth rows).
OBJECT_MODALITY = {"nuclei2d": "Microscopy", "mni152_gm_wm": "MR", "mr_organs": "MR", "breast1_lesion": "MR"}


def _nuclei_cases(shared: Path) -> List[ObjectCase]:
    import tifffile

    img = tifffile.imread(shared / "nuclei2d/image.tif").astype(np.float64)
    lbl = tifffile.imread(shared / "nuclei2d/labels.tif")
    image = np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)
    return [(image, [lbl == i for i in np.unique(lbl) if i])]


def _mni_cases(shared: Path, fractions: Sequence[float]) -> List[ObjectCase]:
    t1 = read_case(shared / "mni152/t1.nii.gz")
    gm = read_case(shared / "mni152/gm_prob.nii.gz").array >= 128
    wm = read_case(shared / "mni152/wm_prob.nii.gz").array >= 128
    cases = []
    for frac in fractions:
        z = int(round(frac * (t1.array.shape[0] - 1)))
        cases.append((to_uint8(t1.array[z]), [m[z] for m in (gm, wm) if m[z].any()]))
    return cases


def _label_volume_cases(image_path: Path, label_path: Path, slices: Sequence[int]) -> List[ObjectCase]:
    """Per slice: the image (``to_uint8``) and one mask per label id with >= MIN_OBJECT_PIXELS pixels."""
    volume, labels = read_case(image_path).array, read_case(label_path).array
    cases = []
    for z in slices:
        ids, counts = np.unique(labels[z], return_counts=True)
        masks = [labels[z] == i for i, c in zip(ids, counts) if i and c >= MIN_OBJECT_PIXELS]
        if masks:
            cases.append((to_uint8(volume[z]), masks))
    return cases


def object_cases(shared: Path, mni_fractions: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7)
                 ) -> Dict[str, List[ObjectCase]]:
    """Held-out labelled images, each with its ground-truth object masks (one tight box per object):
    the 125 nuclei of ``nuclei2d``, MNI152 grey / white matter on axial slices, the ``mr_organs``
    organs on the fidelity report's slices and the ``breast1`` lesion on every slice that shows it."""
    organs = next(h for h in HELD_OUT if h.name == "mr_organs")
    depth = read_case(shared / organs.path).array.shape[0]
    organ_slices = [min(depth - 1, int(round(f * (depth - 1)))) for f in organs.slices]
    lesion = read_case(shared / "lesions/breast1_label.nrrd").array
    lesion_slices = [z for z in range(lesion.shape[0]) if lesion[z].sum() >= MIN_OBJECT_PIXELS]
    return {"nuclei2d": _nuclei_cases(shared),
            "mni152_gm_wm": _mni_cases(shared, mni_fractions),
            "mr_organs": _label_volume_cases(shared / organs.path, shared / "mr_organs/labels.nii.gz", organ_slices),
            "breast1_lesion": _label_volume_cases(shared / "lesions/breast1_image.nrrd",
                                                  shared / "lesions/breast1_label.nrrd", lesion_slices)}


def _object_masks(predictor: Predictor, cases: Sequence[ObjectCase]) -> List[np.ndarray]:
    """Per object of ``cases`` (in order): the predicted bool mask for its tight box."""
    out: List[np.ndarray] = []
    for image, masks in cases:
        predictor.set_image(image)
        boxes = np.array([box_from_mask(m, shift=0) for m in masks], dtype=np.float32)
        out.extend(predictor.predict(boxes, label_map=False))
    return out


def ground_truth(predictors: Dict[str, Predictor], shared: Path,
                 mni_fractions: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
                 cases: Optional[Dict[str, List[ObjectCase]]] = None) -> Dict[str, Dict[str, object]]:
    """Per object case (``cases``, default :func:`object_cases`): modality, mean DSC vs the ground truth of each
    predictor (``{"teacher": ..., "student": ...}``), and when both are given the student-vs-teacher mask
    IoU on these object boxes (``agreement``) and the number of boxes (``boxes``); rows of :func:`_gt_row`."""
    result: Dict[str, Dict[str, object]] = {}
    for name, cases_of in (cases if cases is not None else object_cases(shared, mni_fractions)).items():
        truth = [m for _, masks in cases_of for m in masks]
        result[name] = _gt_row(OBJECT_MODALITY.get(name, "?"), truth,
                               {k: _object_masks(p, cases_of) for k, p in predictors.items()})
    return result


#: Smallest object (voxels) that gets a 3D box in the volume cases.
MIN_OBJECT_VOXELS = 50


@dataclass(frozen=True)
class VolumeCase:
    """A held-out labelled volume for the 3D rows: ``volume`` (D, H, W) uint8 (``to_uint8`` of the file,
    as ``medsam-lite segment`` reads it), ``objects`` one (D, H, W) bool ground-truth mask per object and
    ``boxes`` (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in original voxels (:func:`volume_box`)."""

    modality: str
    volume: np.ndarray
    objects: Tuple[np.ndarray, ...]
    boxes: np.ndarray


def volume_box(mask: np.ndarray) -> np.ndarray:
    """(D, H, W) bool object -> (6,) float64 ``[x_min, y_min, z_min, x_max, y_max, z_max]``: the object's z
    extent, and in x / y the tight box of the object on its middle slice ``z_mid = int((z_max - z_min) / 2 +
    z_min)`` (where LiteMedSAM's propagation starts with the given box; LITEMEDSAM_FACTS.md); when that
    slice is empty (a non-convex object) the object's xy extent over all slices."""
    zs = np.nonzero(mask.any(axis=(1, 2)))[0]
    z_min, z_max = int(zs.min()), int(zs.max())
    z_mid = int((z_max - z_min) / 2 + z_min)
    plane = mask[z_mid] if mask[z_mid].any() else mask.any(axis=0)
    x0, y0, x1, y1 = box_from_mask(plane, shift=0)
    return np.array([x0, y0, z_min, x1, y1, z_max], dtype=np.float64)


def _volume_case(modality: str, volume: np.ndarray, objects: Sequence[np.ndarray]) -> VolumeCase:
    objects = tuple(o for o in objects if o.sum() >= MIN_OBJECT_VOXELS)
    return VolumeCase(modality, to_uint8(volume), objects, np.stack([volume_box(o) for o in objects]))


def _label_objects(labels: np.ndarray) -> List[np.ndarray]:
    return [labels == i for i in np.unique(labels) if i]


def volume_cases(shared: PathLike, names: Optional[Sequence[str]] = None) -> Dict[str, VolumeCase]:
    """The held-out labelled volumes, whole, for 3D propagation (one box per object, :func:`volume_box`):

    * ``mr_organs_3d``: the 23-class abdominal MR (objects >= ``MIN_OBJECT_VOXELS`` voxels);
    * ``breast1_lesion_3d``: the breast MR lesion;
    * ``mni152_gm_wm_3d``: MNI152 grey and white matter (probability >= 128), brain MR.

    Training sources are not here: the bundled ``3DBox_CT_abdomen`` / ``3DBox_MR_brain_tumour`` examples are
    the ``ct_organs`` and ``lesions/brain1`` volumes of the distillation data list. ``names`` picks a subset."""
    shared = Path(shared)
    builders = {
        "mr_organs_3d": lambda: _volume_case("MR", read_case(shared / "mr_organs/mr.nii.gz").array,
                                             _label_objects(read_case(shared / "mr_organs/labels.nii.gz").array)),
        "breast1_lesion_3d": lambda: _volume_case(
            "MR", read_case(shared / "lesions/breast1_image.nrrd").array,
            _label_objects(read_case(shared / "lesions/breast1_label.nrrd").array)),
        "mni152_gm_wm_3d": lambda: _volume_case(
            "MR", read_case(shared / "mni152/t1.nii.gz").array,
            [read_case(shared / f"mni152/{k}_prob.nii.gz").array >= 128 for k in ("gm", "wm")]),
    }
    return {k: f() for k, f in builders.items() if names is None or k in names}


def volume_predictor(model: "MedSAMLite", backend: str = "torch") -> Predictor:
    """A :class:`Predictor` of ``model`` on ``backend`` (fp32) with an in-memory embedding store
    (:class:`~medsam_lite.embedding_cache.MemoryEmbeddingStore`, the one store of the package), so the per-object
    propagations through one volume encode each slice once (3D rows)."""
    from ..embedding_cache import MemoryEmbeddingStore

    return Predictor(model, backend=backend, precision="fp32", embedding_cache=MemoryEmbeddingStore())


def volume_masks(predictor: Predictor, case: VolumeCase) -> List[np.ndarray]:
    """Per object of ``case``: its (D, H, W) bool mask from the real 3D propagation
    (:meth:`Predictor.predict_volume`, each object's box propagated alone so overlaps cannot hide one).
    A :func:`volume_predictor` encodes each slice once for all objects (its cache is cleared afterwards)."""
    masks = [predictor.predict_volume(case.volume, box[None], progress=False) > 0 for box in case.boxes]
    cache = getattr(predictor, "embedding_cache", None)
    if hasattr(cache, "clear"):
        cache.clear()
    return masks


def _gt_row(modality: str, truth: Sequence[np.ndarray], masks: Dict[str, List[np.ndarray]]) -> Dict[str, object]:
    """Mean DSC vs ``truth`` per model of ``masks`` (``teacher`` first), per-model IoU with the teacher
    (``agreement_<name>``; ``agreement`` for the single ``student``), number of objects."""
    row: Dict[str, object] = {"modality": modality}
    for name, pred in masks.items():
        row[name] = float(np.mean([dice(m, g) for m, g in zip(pred, truth)]))
        if name != "teacher" and "teacher" in masks:
            key = "agreement" if name == "student" else f"agreement_{name}"
            row[key] = float(np.mean([mask_iou(t, m) for t, m in zip(masks["teacher"], pred)]))
    row["boxes"] = len(truth)
    return row


def ground_truth_3d(predictors: Dict[str, Predictor], cases: Dict[str, VolumeCase]) -> Dict[str, Dict[str, object]]:
    """Per volume case: modality, mean 3D DSC vs the ground truth per predictor (one box per object,
    propagated through the volume), the 3D mask IoU of each other predictor with ``teacher`` and the
    number of objects (``boxes``)."""
    return {name: _gt_row(case.modality, case.objects, {k: volume_masks(p, case) for k, p in predictors.items()})
            for name, case in cases.items()}


@dataclass(frozen=True)
class TimingConfig:
    """Encoder timing: ``backend`` (``torch`` = eager, or ``openvino`` / ``onnxruntime`` at fp32),
    ``threads`` for a non-torch runtime (eager torch uses the process' setting, set by the CLI),
    median of ``repeats`` calls after ``warmup``."""

    backend: str = "openvino"
    threads: int = 2
    repeats: int = 5
    warmup: int = 2


def encoder_ms(model: "MedSAMLite", timing: TimingConfig = TimingConfig(),
               cache_dir: Optional[PathLike] = None) -> float:
    """Median milliseconds of one (1, 3, 256, 256) encoder call of ``model`` on ``timing.backend`` (fp32)."""
    import statistics
    import time

    import torch

    from ..backends import create_backend

    backend = create_backend(model, timing.backend, "fp32", cache_dir=None if cache_dir is None else Path(cache_dir),
                             threads=timing.threads)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        for i in range(timing.warmup + max(1, timing.repeats)):
            start = time.perf_counter()
            backend.encode(x)
            if i >= timing.warmup:
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def summarize(rows: Sequence[Dict[str, object]]) -> Dict[str, Dict[str, float]]:
    """Per modality and "all": mean IoU, its standard error over boxes (``sem_iou``: std / sqrt(boxes);
    boxes of one image are not independent, so it is a lower bound), fraction of boxes with IoU >= 0.9,
    images, boxes."""
    groups: Dict[str, List[float]] = {}
    images: Dict[str, int] = {}
    for r in rows:
        for key in (str(r["modality"]), "all"):
            groups.setdefault(key, []).extend(r["iou"])  # type: ignore[arg-type]
            images[key] = images.get(key, 0) + 1
    return {k: {"mean_iou": float(np.mean(v)), "sem_iou": float(np.std(v) / np.sqrt(len(v))),
                "frac_iou_ge_0.9": float(np.mean(np.array(v) >= 0.9)),
                "images": images[k], "boxes": len(v)} for k, v in sorted(groups.items())}


def stable_rows(rows: Sequence[Dict[str, object]], noisy: Sequence[Dict[str, object]],
                threshold: float = STABLE_IOU) -> List[Dict[str, object]]:
    """``rows`` restricted to the boxes whose ``noisy`` (teacher vs noisy teacher) IoU is >= ``threshold``;
    images left without a box are dropped."""
    out = []
    for row, ref in zip(rows, noisy):
        kept = [iou for iou, n in zip(row["iou"], ref["iou"]) if n >= threshold]  # type: ignore[call-overload]
        if kept:
            out.append({**row, "iou": kept})
    return out


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline_lines(result: Dict[str, object]) -> List[str]:
    """The headline table, one column per student (``per_student``): IoU with the teacher on teacher-stable
    boxes and on tight object boxes, ground-truth DSC of teacher and student (2D and 3D, per set and
    modality), random boxes with the teacher's noise floor, encoder ms on one backend."""
    per: Dict[str, Dict[str, object]] = result["per_student"]  # type: ignore[assignment]
    names = list(per)
    floor = result.get("noise_floor") or {}
    lines = ["## Headline", "",
             "IoU rows: student-vs-teacher mask IoU (mean over boxes); the teacher column there is the teacher "
             f"against itself on the same images plus Gaussian noise (std {result.get('noise_sigma')} grey levels) "
             "where that applies. DSC rows: DSC against the ground truth, the teacher in its own column and "
             "each student as `DSC (student - teacher)`.", "",
             "| row | modality | boxes | teacher | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|" + "---|" * (4 + len(names))]

    def iou_row(label: str, modality: str, key: str, group: str, floor_value: Optional[float]) -> None:
        stats = [per[n][key].get(group) for n in names]  # type: ignore[union-attr]
        boxes = "/".join(str(st["boxes"]) if st else "0" for st in stats)
        cells = [f"{st['mean_iou']:.3f} +- {st['sem_iou']:.3f}" if st else "-" for st in stats]
        lines.append(f"| {label} | {modality} | {boxes} | {_fmt(floor_value)} | " + " | ".join(cells) + " |")

    groups = sorted({g for n in names for g in per[n]["stable"]})  # type: ignore[union-attr]
    for g in ["all"] + [g for g in groups if g != "all"]:
        iou_row("IoU, teacher-stable random boxes", g, "stable", g, None)
    for dim, key in (("2D object boxes", "ground_truth"), ("3D propagation", "ground_truth_3d")):
        sets = list(per[names[0]].get(key, {}))  # type: ignore[union-attr]
        for k in sets:
            rows = [per[n][key][k] for n in names]  # type: ignore[index]
            lines.append(f"| IoU, {dim}: {k} | {rows[0].get('modality', '-')} | {rows[0]['boxes']} | - | "
                         + " | ".join(_fmt(r.get("agreement")) for r in rows) + " |")
        for k in sets:
            rows = [per[n][key][k] for n in names]  # type: ignore[index]
            teacher = float(rows[0]["teacher"])
            lines.append(f"| GT DSC, {dim}: {k} | {rows[0].get('modality', '-')} | {rows[0]['boxes']} | "
                         f"{teacher:.4f} | " + " | ".join(f"{float(r['student']):.4f} ({float(r['student']) - teacher:+.4f})"
                                                        for r in rows) + " |")
    for g in ["all"] + [g for g in groups if g != "all"]:
        iou_row("IoU, all random boxes", g, "summary", g, (floor.get(g) or {}).get("mean_iou"))  # type: ignore[union-attr]
    if "teacher_ms" in result:
        t = result["timing"]  # type: ignore[index]
        teacher_ms = float(result["teacher_ms"])  # type: ignore[arg-type]
        lines.append(f"| encoder ms ({t['backend']} {t['precision']}, {t['threads']} threads, median of "  # type: ignore[index]
                     f"{t['repeats']}) | - | - | {teacher_ms:.1f} | "  # type: ignore[index]
                     + " | ".join(f"{float(per[n]['encoder_ms']):.1f} ({float(per[n]['encoder_ms']) / teacher_ms:.3f}x)"  # type: ignore[arg-type]
                                  for n in names) + " |")
    return lines + [""]


def write_report(result: Dict[str, object], out_dir: PathLike) -> None:
    """fidelity.json and fidelity.md in ``out_dir`` (atomic writes). With ``per_student`` the markdown starts
    with the side-by-side :func:`headline_lines`; the single-student detail tables follow when ``summary``
    is there."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "fidelity.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    students = result.get("students") or [result.get("student")]
    lines = [f"# Student fidelity: {', '.join(f'`{n}`' for n in students)} vs teacher `{result['teacher']}`", "",  # type: ignore[union-attr]
             "Held-out sources only (never in the distillation data list docs/distill/data_list.csv). "
             f"Masks computed with {result.get('backend', 'torch fp32')} for every model.", ""]
    if "per_student" in result:
        lines += headline_lines(result)
    if "summary" in result:
        lines += _detail_lines(result)
    lines += ["Held-out sources: " + ", ".join(f"{h.name} ({h.modality}, {h.path})" for h in HELD_OUT), ""]
    with atomic_path(out / "fidelity.md") as tmp:
        Path(tmp).write_text("\n".join(lines))


def _detail_lines(result: Dict[str, object]) -> List[str]:
    """The single-student tables: random boxes per modality (noise floor, stable boxes), object boxes, 3D."""
    s = result["summary"]  # type: ignore[index]
    gt = result["ground_truth"]  # type: ignore[index]
    floor, stable = result.get("noise_floor"), result.get("stable")
    lines = [f"{result['n_boxes']} random boxes per image (seed {result['seed']}). "
             "IoU of student vs teacher masks per box; both empty = 1. Mean IoU +- its standard error over "
             "boxes (boxes of one image are correlated, so the real uncertainty is larger).", ""]
    columns = ["modality", "images", "boxes", "mean IoU", "boxes with IoU >= 0.9"]
    if floor:
        lines += [f"Reference: the teacher against itself on the same image plus Gaussian noise (std "
                  f"{result['noise_sigma']} grey levels), same boxes.", ""]
        columns += ["teacher vs noisy teacher: mean IoU", ">= 0.9"]
    if stable is not None:
        lines += [f"Stable boxes: those where that teacher-vs-noisy-teacher IoU is >= {result['stable_iou']}, "
                  "i.e. the teacher's own mask is a well-defined target; the last column is the student's "
                  "agreement on them alone.", ""]
        columns += ["stable boxes", "student mean IoU on stable boxes"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for k, v in s.items():  # type: ignore[union-attr]
        row = (f"| {k} | {v['images']} | {v['boxes']} | {v['mean_iou']:.3f} +- {v['sem_iou']:.3f} "
               f"| {v['frac_iou_ge_0.9']:.2f} |")
        if floor:
            row += f" {floor[k]['mean_iou']:.3f} | {floor[k]['frac_iou_ge_0.9']:.2f} |"  # type: ignore[index]
        if stable is not None:
            st = stable.get(k)  # type: ignore[union-attr]
            row += (f" {st['boxes']} | {st['mean_iou']:.3f} +- {st['sem_iou']:.3f} |" if st else " 0 | - |")
        lines.append(row)
    lines += ["", "Object boxes: one tight box around each ground-truth object of the held-out labelled images "
              "(what a user draws). DSC of each model against the ground truth, and the student-vs-teacher "
              "mask IoU on the same boxes.", "",
              "| ground truth (one tight box per object) | boxes | teacher DSC | student DSC | student - teacher "
              "| student vs teacher IoU |", "|---|---|---|---|---|---|"]
    for k, v in gt.items():  # type: ignore[union-attr]
        boxes = f"{v['boxes']:d}" if "boxes" in v else "-"
        agree = f"{v['agreement']:.3f}" if "agreement" in v else "-"
        lines.append(f"| {k} | {boxes} | {v['teacher']:.4f} | {v['student']:.4f} | {v['student'] - v['teacher']:+.4f} "
                     f"| {agree} |")
    gt3 = result.get("ground_truth_3d") or {}
    if gt3:
        lines += ["", "3D: each held-out labelled volume whole, one box per object on its middle slice "
                  "(z extent of the object), propagated slice by slice as LiteMedSAM does "
                  "(`Predictor.predict_volume`); 3D DSC and 3D mask IoU.", "",
                  "| volume | modality | objects | teacher DSC | student DSC | student - teacher | 3D IoU |",
                  "|---|---|---|---|---|---|---|"]
        for k, v in gt3.items():  # type: ignore[union-attr]
            lines.append(f"| {k} | {v['modality']} | {v['boxes']} | {v['teacher']:.4f} | {v['student']:.4f} "
                         f"| {v['student'] - v['teacher']:+.4f} | {v['agreement']:.3f} |")
    return lines + [""]


@dataclass(frozen=True)
class FidelityConfig:
    """What :func:`fidelity_report` measures: ``n_boxes`` random boxes per held-out image (``seed``), the
    3D propagation rows (``volumes``; ``volume_names`` a subset of :func:`volume_cases`, None = all) and
    the encoder timing of every model on one backend (``timing``; None = not timed). ``backend``: what
    every model's masks are computed with, at fp32 (``torch``: eager, the reference; ``openvino``: the
    ``segment`` default, same masks as eager within the agreement gate, ~4x faster)."""

    n_boxes: int = 8
    seed: int = 0
    volumes: bool = True
    volume_names: Optional[Tuple[str, ...]] = None
    timing: Optional[TimingConfig] = TimingConfig()
    backend: str = "torch"


def student_fidelity(student: Predictor, images: Sequence[Tuple[HeldOut, str, np.ndarray]],
                     teacher_masks: Sequence[np.ndarray], noisy: Sequence[Dict[str, object]],
                     objects: Dict[str, List[ObjectCase]], teacher_objects: Dict[str, List[np.ndarray]],
                     volumes: Dict[str, VolumeCase], teacher_volumes: Dict[str, List[np.ndarray]],
                     n_boxes: int, seed: int, student_model: Optional["MedSAMLite"] = None,
                     backend: str = "torch") -> Dict[str, object]:
    """One student's rows against precomputed teacher masks: random-box ``summary`` and per-image ``images``,
    ``stable`` (teacher-stable boxes), 2D ``ground_truth`` (tight object boxes: DSC of both, IoU) and
    ``ground_truth_3d`` (3D propagation: DSC of both, 3D IoU; through :func:`volume_predictor` of
    ``student_model`` when given, else ``student``)."""
    rows = compare(images, teacher_masks, box_masks(student, images, n_boxes, seed))
    volume_student = volume_predictor(student_model, backend) if student_model is not None else student
    gt2 = {}
    for name, cases in objects.items():
        truth = [m for _, masks in cases for m in masks]
        gt2[name] = _gt_row(OBJECT_MODALITY.get(name, "?"), truth,
                            {"teacher": teacher_objects[name], "student": _object_masks(student, cases)})
    gt3 = {name: _gt_row(case.modality, case.objects, {"teacher": teacher_volumes[name],
                                                       "student": volume_masks(volume_student, case)})
           for name, case in volumes.items()}
    return {"summary": summarize(rows), "stable": summarize(stable_rows(rows, noisy)), "ground_truth": gt2,
            "ground_truth_3d": gt3, "images": rows}


def fidelity_report(students: Union[str, Sequence[str]], teacher: str, shared: PathLike,
                    out_dir: Optional[PathLike] = None,
                    config: FidelityConfig = FidelityConfig(), cache_dir: Optional[PathLike] = None,
                    objects: Optional[Dict[str, List[ObjectCase]]] = None,
                    images: Optional[Sequence[Tuple[HeldOut, str, np.ndarray]]] = None) -> Dict[str, object]:
    """Fidelity of one or several students (model names or checkpoint paths) against ``teacher`` on the
    held-out sets, the teacher's masks and noise floor computed once for all of them.

    Result: ``per_student`` {spec: :func:`student_fidelity` rows + ``encoder_ms``}, ``teacher_ms``, the noise
    floor, and for a single student also its rows at the top level (``student``, ``summary``, ``stable``,
    ``ground_truth``, ``ground_truth_3d``, ``images``). ``objects`` / ``images`` replace the held-out 2D sets
    (tests). Written to ``out_dir`` as fidelity.json / fidelity.md when given."""
    specs = [students] if isinstance(students, str) else list(students)
    if not specs:
        raise InputError("give at least one student", "--student")
    if len(set(specs)) != len(specs):
        raise InputError(f"a student is given twice: {', '.join(specs)}", "--student")
    shared = Path(shared)
    if not (shared / "nuclei2d").is_dir():
        raise InputError("not the shared data folder (no nuclei2d/)", shared)
    teacher_model = load_model(teacher)
    tp = Predictor(teacher_model, backend=config.backend, precision="fp32")
    images = load_held_out(shared) if images is None else images
    objects = object_cases(shared) if objects is None else objects
    volumes = volume_cases(shared, config.volume_names) if config.volumes else {}
    teacher_masks = box_masks(tp, images, config.n_boxes, config.seed)
    noisy = compare(images, teacher_masks, box_masks(tp, add_noise(images, NOISE_SIGMA), config.n_boxes, config.seed))
    teacher_objects = {k: _object_masks(tp, v) for k, v in objects.items()}
    tv = volume_predictor(teacher_model, config.backend)
    teacher_volumes = {k: volume_masks(tv, v) for k, v in volumes.items()}
    per_student: Dict[str, Dict[str, object]] = {}
    for spec in specs:
        model = load_model(spec)
        rows = student_fidelity(Predictor(model, backend=config.backend, precision="fp32"), images, teacher_masks, noisy, objects,
                                teacher_objects, volumes, teacher_volumes, config.n_boxes, config.seed, model,
                                config.backend)
        if config.timing is not None:
            rows["encoder_ms"] = encoder_ms(model, config.timing, cache_dir)
        per_student[spec] = rows
    result: Dict[str, object] = {
        "teacher": str(teacher), "students": specs, "backend": f"{config.backend} fp32", "n_boxes": config.n_boxes, "seed": config.seed,
        "noise_sigma": NOISE_SIGMA, "noise_floor": summarize(noisy), "stable_iou": STABLE_IOU,
        "noise_images": [r["iou"] for r in noisy], "per_student": per_student}
    if config.timing is not None:
        result["timing"] = {"backend": config.timing.backend, "threads": config.timing.threads,
                            "repeats": config.timing.repeats, "precision": "fp32"}
        result["teacher_ms"] = encoder_ms(teacher_model, config.timing, cache_dir)
    if len(specs) == 1:
        result.update({"student": specs[0], **{k: v for k, v in per_student[specs[0]].items() if k != "encoder_ms"}})
    if out_dir is not None:
        write_report(result, out_dir)
    return result
