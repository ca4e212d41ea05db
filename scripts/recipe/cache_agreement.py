"""Student-vs-teacher mask agreement on the *distillation* images, from a teacher cache.

The fidelity report (``medsam_lite.bench.fidelity``) measures held-out images; this measures the images the
student was trained on (``train``) and the validation split (``val``), to tell under-fitting from
over-fitting. Per image (every ``--stride``-th of the split, plain variant 0) ``--boxes`` random
boxes are drawn in the 256 x 256 model frame inside the image's unpadded content
(:func:`medsam_lite.distill.mask_kd.content_sizes`, seed 1000 + image index); the student's embedding of the
cached input and the cached teacher embedding are decoded with the student's prompt encoder and
mask decoder (the teacher's, copied), and the IoU of the low-res masks (logits > 0) is averaged.

Usage::

    python -m scripts.recipe.cache_agreement --data runs/distill_data/selected --cache-dir runs/teacher_cache \\
        --teacher lite_medsam repvit_m0_6_lite runs/student_mask/last.pth
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from medsam_lite.checkpoint import load_model, state_sha256
from medsam_lite.errors import InputError

from medsam_lite.distill import cache as cache_mod
from medsam_lite.distill.boxes import sample_boxes
from medsam_lite.distill.data import VAL_SPLITS, image_lists
from medsam_lite.distill.mask_kd import content_sizes

PathLike = Union[str, Path]


def cache_agreement(student: str, data: Sequence[PathLike], cache_dir: PathLike, teacher: str = "lite_medsam",
                    val_fraction: float = 0.05, val_split: str = "case", stride: int = 15, n_boxes: int = 8) -> Dict[str, Dict[str, float]]:
    """{split: {"mean_iou", "images", "boxes"}} of ``student`` (a ``load_model`` spec) against the cache of
    ``teacher`` built for ``data`` (same ``val_fraction`` / ``val_split`` as the distill run)."""
    train, val, _ = image_lists(data, val_fraction=val_fraction, seed=0, val_split=val_split)
    index = cache_mod.read_index(Path(cache_dir)) or {}
    spec = cache_mod.CacheSpec(teacher=teacher, teacher_sha=state_sha256(load_model(teacher)),
                               items={"train": train, "val": val}, variants=int(index.get("variants") or 1),
                               aug_seed=int(index.get("aug_seed") or 0))
    if not index.get("complete") or any(index.get(k) != v for k, v in spec.identity().items()):
        raise InputError(f"not a complete cache of teacher {teacher} for these data folders", cache_dir)
    model = load_model(student).eval()
    result: Dict[str, Dict[str, float]] = {}
    for split in ("train", "val"):
        if not spec.items[split]:
            continue
        dataset = cache_mod.CachedEmbeddings(cache_dir, spec, split)
        ious: List[float] = []
        indices = range(0, len(dataset), stride if split == "train" else 1)
        with torch.no_grad():
            for i in indices:
                item = dataset[i]
                image = item["image"][None].float() / 255.0
                (h, w), = content_sizes(image)
                boxes = torch.from_numpy(sample_boxes(np.random.default_rng(1000 + i), h, w, n_boxes))
                ours = model.decode(model.encode(image), boxes)[0] > 0
                theirs = model.decode(item["target"][None].float(), boxes)[0] > 0
                for a, b in zip(ours, theirs):
                    union = int((a | b).sum())
                    ious.append(1.0 if union == 0 else int((a & b).sum()) / union)
        result[split] = {"mean_iou": float(np.mean(ious)), "images": len(indices), "boxes": len(ious)}
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("students", nargs="+", help="student model names or checkpoint paths")
    p.add_argument("--data", nargs="+", required=True, help="the distill run's --data folders")
    p.add_argument("--cache-dir", required=True, help="the distill run's teacher cache")
    p.add_argument("--teacher", default="lite_medsam")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--val-split", choices=VAL_SPLITS, default="case", help="as the distill run's")
    p.add_argument("--stride", type=int, default=15, help="every N-th training image (default 15)")
    p.add_argument("--boxes", type=int, default=8, help="random boxes per image (default 8)")
    args = p.parse_args(argv)
    for student in args.students:
        for split, r in cache_agreement(student, args.data, args.cache_dir, args.teacher, args.val_fraction,
                                        args.val_split, args.stride, args.boxes).items():
            print(f"{student} {split}: {r['images']} images, {r['boxes']} boxes, mean IoU {r['mean_iou']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
