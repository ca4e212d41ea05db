"""How mask agreement depends on the size of the student's embedding error (a calibration of the fidelity bar).

For every held-out image of :mod:`medsam_lite.bench.fidelity` and its fixed random boxes, the teacher's decoder
decodes the *blended* embedding ``e_t + alpha * (e_s - e_t)`` for several ``alpha`` in [0, 1]
(``e_t``: teacher embedding, ``e_s``: student embedding of the same image). ``alpha = 1`` is the
student itself (its fidelity IoU), ``alpha = 0`` the teacher; the embedding MSE at ``alpha`` is
``alpha**2`` times the student's. The IoU with the teacher's masks as a function of that MSE tells
how much smaller the student's error must become, in the direction it has now, for a given mean
IoU: e.g. if ``alpha = 0.3`` reaches 0.90, the MSE must fall ~11x.

The same is done with isotropic Gaussian noise of the student's error size (``noise`` rows), to see
whether the student's error is more or less harmful to the masks than random error of equal MSE.

    python -m scripts.recipe.error_scaling --student repvit_m0_6_lite --teacher lite_medsam \\
        --shared ../shared/data -o docs/distill
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from medsam_lite.checkpoint import load_model
from medsam_lite.io_utils import atomic_path
from medsam_lite.predictor import Predictor

from medsam_lite.distill.boxes import random_boxes
from medsam_lite.bench.fidelity import HeldOut, load_held_out, mask_iou
from medsam_lite.cli.benchmark import add_report_args

PathLike = Union[str, Path]
ALPHAS: Tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def error_scaling(student: Predictor, teacher: Predictor, images: Sequence[Tuple[HeldOut, str, np.ndarray]],
                  alphas: Sequence[float] = ALPHAS, n_boxes: int = 8, seed: int = 0,
                  noise_seed: int = 0) -> Dict[str, object]:
    """Per ``alpha``: mean embedding MSE and mean box IoU vs the teacher's masks, for the blend towards the
    student (``blend``) and for Gaussian noise of the same MSE (``noise``); boxes as in the fidelity report.
    ``student_mse_by_modality``: the student's own embedding MSE (alpha = 1), mean over each modality's images;
    ``student_mse_by_image``: the same per image."""
    gen = torch.Generator().manual_seed(noise_seed)
    iou: Dict[str, Dict[float, List[float]]] = {"blend": {a: [] for a in alphas}, "noise": {a: [] for a in alphas}}
    mse: Dict[float, List[float]] = {a: [] for a in alphas}
    by_image: List[Dict[str, object]] = []
    for i, (item, image_id, image) in enumerate(images):
        boxes = random_boxes(image.shape, n_boxes, seed + i)
        hw = (image.shape[0], image.shape[1])
        student.set_image(image)
        teacher.set_image(image)
        e_s, e_t = student.embedding, teacher.embedding
        assert e_s is not None and e_t is not None
        reference = teacher.predict(boxes, label_map=False)
        error = e_s - e_t
        rms = float(error.square().mean().sqrt())
        by_image.append({"image": image_id, "modality": item.modality, "mse": rms * rms})
        noise = torch.randn(e_t.shape, generator=gen) * rms
        for a in alphas:
            mse[a].append(float((a * error).square().mean()))
            for kind, delta in (("blend", error), ("noise", noise)):
                teacher.set_embedding(e_t + a * delta, hw)
                masks = teacher.predict(boxes, label_map=False)
                iou[kind][a].extend(mask_iou(r, m) for r, m in zip(reference, masks))
    rows = [{"alpha": a, "mse": float(np.mean(mse[a])), "mse_ratio": a * a,
             "iou_blend": float(np.mean(iou["blend"][a])),
             "sem_blend": float(np.std(iou["blend"][a]) / np.sqrt(len(iou["blend"][a]))),
             "frac_ge_0.9_blend": float(np.mean(np.array(iou["blend"][a]) >= 0.9)),
             "iou_noise": float(np.mean(iou["noise"][a]))} for a in alphas]
    by_modality: Dict[str, List[float]] = {}
    for r in by_image:
        by_modality.setdefault(str(r["modality"]), []).append(float(r["mse"]))  # type: ignore[arg-type]
    modalities = {m: {"images": len(v), "mse": float(np.mean(v))} for m, v in sorted(by_modality.items())}
    return {"images": len(images), "boxes": len(iou["blend"][alphas[0]]), "rows": rows, "student_mse_by_modality": modalities,
            "student_mse_by_image": by_image}


def write_report(result: Dict[str, object], out_dir: PathLike, student: str, teacher: str) -> None:
    """error_scaling.json and error_scaling.md in ``out_dir`` (atomic writes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "error_scaling.json") as tmp:
        Path(tmp).write_text(json.dumps({"student": student, "teacher": teacher, **result}, indent=1))
    lines = [f"# Mask agreement vs embedding error: `{student}` towards teacher `{teacher}`", "",
             f"Held-out fidelity images ({result['images']}) and boxes ({result['boxes']}); the teacher's decoder on "
             "e_t + alpha (e_s - e_t). MSE = alpha^2 x the student's embedding MSE. Noise: isotropic Gaussian "
             "error of the same MSE instead of the student's.", "",
             "| alpha | embedding MSE | MSE / student's | mean IoU vs teacher | +- | boxes >= 0.9 | "
             "same-MSE Gaussian noise: mean IoU |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:  # type: ignore[union-attr]
        lines.append(f"| {r['alpha']:.2f} | {r['mse']:.6f} | {r['mse_ratio']:.2f} | {r['iou_blend']:.3f} | "
                     f"{r['sem_blend']:.3f} | {r['frac_ge_0.9_blend']:.2f} | {r['iou_noise']:.3f} |")
    by_modality = result.get("student_mse_by_modality", {})
    if by_modality:
        lines += ["", "The student's embedding MSE (alpha = 1) per modality of the held-out images:", "",
                  "| modality | images | embedding MSE |", "|---|---|---|"]
        lines += [f"| {m} | {v['images']} | {v['mse']:.5f} |" for m, v in by_modality.items()]  # type: ignore[union-attr]
    with atomic_path(out / "error_scaling.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_report_args(p, "error_scaling")
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    args = p.parse_args(argv)
    student, teacher = Predictor(load_model(args.student)), Predictor(load_model(args.teacher))
    result = error_scaling(student, teacher, load_held_out(args.shared), args.alphas)
    if args.out:
        write_report(result, args.out, args.student, args.teacher)
    print(json.dumps(result["rows"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
