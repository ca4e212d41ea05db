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

Usage::

    python -m medsam_lite.distill.fidelity --student medsam_lite/weights/repvit_m0_6_lite.pth --teacher lite_medsam \\
        --shared ../shared -o docs/distill
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from medsam_lite.checkpoint import load_model
from medsam_lite.errors import InputError
from medsam_lite.imageio import read_case, to_uint8
from medsam_lite.io_utils import atomic_path
from medsam_lite.metrics import dice
from medsam_lite.predictor import Predictor
from medsam_lite.transforms import box_from_mask

from .boxes import random_boxes

PathLike = Union[str, Path]

#: Reference for the agreement numbers: the teacher against itself on the same image plus Gaussian
#: noise of this std (grey levels of the uint8 input), same boxes.
NOISE_SIGMA = 2.0
#: A box is "stable" when the teacher's masks with and without that noise have at least this IoU.
STABLE_IOU = 0.9


@dataclass(frozen=True)
class HeldOut:
    """One held-out source: ``path`` relative to the shared data folder (or absolute), its modality,
    and for volumes which (z) slices to use (``slices``: fractions of the depth in [0, 1])."""

    name: str
    modality: str
    path: str
    slices: Tuple[float, ...] = ()


def _pydicom_file(name: str) -> str:
    """Absolute path of a test file that pydicom ships (never used for training)."""
    import pydicom

    return str(Path(pydicom.__file__).parent / "data" / "test_files" / name)


#: The held-out set. Shared-data files here are excluded from the distillation data list
#: (``distill/recipe``); the pydicom files are sample images of a package outside that list.
#: Held-out modalities: ultrasound and nuclear medicine (no image of either is distilled on).
HELD_OUT: Tuple[HeldOut, ...] = (
    HeldOut("nuclei2d", "Microscopy", "nuclei2d/image.tif"),
    HeldOut("mni152_t1", "MR", "mni152/t1.nii.gz", (0.3, 0.4, 0.5, 0.6, 0.7)),
    HeldOut("mr_organs", "MR", "mr_organs/mr.nii.gz", (0.2, 0.35, 0.5, 0.65, 0.8)),
    HeldOut("breast1", "MR", "lesions/breast1_image.nrrd", (0.3, 0.5, 0.7)),
    HeldOut("us_lymph_node", "US", "unlabeled/us_lymph_node_doppler.dcm"),
    HeldOut("nm_bone_scan", "NM", "unlabeled/nm_bone_scan.dcm"),
    HeldOut("pydicom_mr_small", "MR", "pydicom:MR_small.dcm"),
    HeldOut("pydicom_ct_liver", "CT", "pydicom:liver_1frame.dcm"),
)


def load_held_out(shared: PathLike, items: Sequence[HeldOut] = HELD_OUT) -> List[Tuple[HeldOut, str, np.ndarray]]:
    """Read every held-out item -> list of (item, image id, (H, W[, 3]) uint8 image)."""
    images: List[Tuple[HeldOut, str, np.ndarray]] = []
    for item in items:
        path = _pydicom_file(item.path.split(":", 1)[1]) if item.path.startswith("pydicom:") else \
            str(Path(shared) / item.path)
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
                 cases: Optional[Dict[str, List[ObjectCase]]] = None) -> Dict[str, Dict[str, float]]:
    """Per object case (``cases``, default :func:`object_cases`): mean DSC vs the ground truth of each
    predictor (``{"teacher": ..., "student": ...}``), and when both are given the student-vs-teacher mask
    IoU on these object boxes (``agreement``) and the number of boxes (``boxes``)."""
    result: Dict[str, Dict[str, float]] = {}
    for name, cases_of in (cases if cases is not None else object_cases(shared, mni_fractions)).items():
        truth = [m for _, masks in cases_of for m in masks]
        predicted = {k: _object_masks(p, cases_of) for k, p in predictors.items()}
        row: Dict[str, float] = {k: float(np.mean([dice(m, g) for m, g in zip(v, truth)])) for k, v in predicted.items()}
        if {"teacher", "student"} <= set(predicted):
            row["agreement"] = float(np.mean([mask_iou(t, s) for t, s in zip(predicted["teacher"], predicted["student"])]))
        row["boxes"] = len(truth)
        result[name] = row
    return result


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


def write_report(result: Dict[str, object], out_dir: PathLike) -> None:
    """fidelity.json and fidelity.md in ``out_dir`` (atomic writes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "fidelity.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    s = result["summary"]  # type: ignore[index]
    gt = result["ground_truth"]  # type: ignore[index]
    floor, stable = result.get("noise_floor"), result.get("stable")
    lines = [f"# Student fidelity: `{result['student']}` vs teacher `{result['teacher']}`", "",
             f"Held-out images only; {result['n_boxes']} random boxes per image (seed {result['seed']}). "
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
    lines += ["", "Held-out sources: " + ", ".join(f"{h.name} ({h.modality}, {h.path})" for h in HELD_OUT), ""]
    with atomic_path(out / "fidelity.md") as tmp:
        Path(tmp).write_text("\n".join(lines))


def fidelity_report(student: str, teacher: str = "lite_medsam", shared: PathLike = "../shared/data",
                    out_dir: Optional[PathLike] = None, n_boxes: int = 8, seed: int = 0) -> Dict[str, object]:
    """Measure agreement and ground-truth DSC of ``student`` vs ``teacher`` (model names or checkpoint paths)."""
    shared = Path(shared)
    if not (shared / "nuclei2d").is_dir():
        raise InputError("not the shared data folder (no nuclei2d/)", shared)
    predictors = {"teacher": Predictor(load_model(teacher), backend="torch"), "student": Predictor(load_model(student), backend="torch")}
    images = load_held_out(shared)
    teacher_masks = box_masks(predictors["teacher"], images, n_boxes, seed)  # computed once, used twice
    rows = compare(images, teacher_masks, box_masks(predictors["student"], images, n_boxes, seed))
    noisy = compare(images, teacher_masks, box_masks(predictors["teacher"], add_noise(images, NOISE_SIGMA), n_boxes,
                                                     seed))
    result: Dict[str, object] = {"student": str(student), "teacher": str(teacher), "n_boxes": n_boxes, "seed": seed,
                                 "summary": summarize(rows), "ground_truth": ground_truth(predictors, shared),
                                 "noise_sigma": NOISE_SIGMA, "noise_floor": summarize(noisy), "stable_iou": STABLE_IOU,
                                 "stable": summarize(stable_rows(rows, noisy)), "images": rows,
                                 "noise_images": [r["iou"] for r in noisy]}
    if out_dir is not None:
        write_report(result, out_dir)
    return result


def add_report_args(p: argparse.ArgumentParser, report: str) -> None:
    """--student, --teacher, --shared and -o/--out (``report``.json / .md) for the held-out reports."""
    p.add_argument("--student", required=True, help="student model name or checkpoint path")
    p.add_argument("--teacher", default="lite_medsam", help="teacher model name or checkpoint path")
    p.add_argument("--shared", default="../shared/data", help="the shared data folder")
    p.add_argument("-o", "--out", default=None, help=f"write {report}.json / {report}.md here")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_report_args(p, "fidelity")
    p.add_argument("--boxes", type=int, default=8, help="random boxes per held-out image")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    result = fidelity_report(args.student, args.teacher, args.shared, args.out, args.boxes, args.seed)
    print(json.dumps({"summary": result["summary"], "ground_truth": result["ground_truth"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
