"""Mask-level ("prompt-in-the-loop") distillation term for ``distill --mask-loss-weight``.

Embedding MSE alone leaves the student's masks far from the teacher's even when most of the
embedding variance is explained (``docs/distill/RECIPE.md``): the mask decoder is sensitive to
parts of the embedding that a plain MSE weighs no more than the rest. This term, as in EdgeSAM's
prompt-in-the-loop distillation, runs the (frozen, shared) prompt encoder and mask decoder on both
embeddings with the same random boxes and pulls the student's mask towards the teacher's:

    weight * mean over images of [ BCE-with-logits(student logits, sigmoid(teacher logits))
                                   + Dice(student logits, teacher logits > 0) ]

on the (K, 1, 256, 256) low-resolution logits of K boxes per image. Gradients reach only the
student encoder through its embedding; the decoder's weights never change.

Boxes are drawn in the 256 x 256 model frame inside each image's content region (the rows and
columns before the zero padding), with the distribution of :func:`medsam_lite.distill.boxes.sample_boxes`
(the fidelity report's), from numpy's global RNG: the training loop reseeds and checkpoints that
RNG, so runs stay deterministic and resume exactly, and validation sees the same boxes each epoch.
When the batch carries per-image integer ``keys`` (online views), each image's boxes come from its
own generator seeded by its key instead: the boxes of an image no longer depend on which process or
batch position it lands in (a DDP run then sees exactly the boxes of a single-process run).

``box_source="teacher"`` (EdgeSAM's prompt-in-the-loop, boxes from the teacher's own masks): the K
random boxes are only *candidates*. The teacher decodes them; for each candidate mask the tight box
(:func:`medsam_lite.transforms.box_from_mask`, shift 0) is kept when the mask is object-like (at least
``MIN_MASK_PX`` pixels, and its box covers at most ``MAX_BOX_FRACTION`` of the content area) and
teacher-stable (the teacher's mask for that box has IoU >= ``stable_iou`` with the candidate's mask).
The loss then uses the kept boxes, with the teacher's logits *for those boxes* as targets; an image
without a kept box contributes 0 to the mean over the batch's images (so the mean is a sum over a
fixed count: a DDP average over equal per-process batches equals the single-process mean).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.model import MedSAMLite
from medsam_lite.transforms import box_from_mask

from .boxes import sample_boxes
from .runtime import Runtime

MIN_CONTENT = 16  # pixels: a smaller content side (near-blank image) is widened to this
MIN_MASK_PX = 16  # a teacher mask smaller than this (in the 256 x 256 frame) is not an object
MAX_BOX_FRACTION = 0.7  # a teacher-mask box covering more of the content area is "the whole frame"
BOX_SOURCES = ("random", "teacher")
KEY_SALT = 7919
FRACTION_MOD = 10007


def content_sizes(images: torch.Tensor) -> List[tuple]:
    """(height, width) of the non-padded content of each (B, 3, 256, 256) model-frame image: up to the
    last row / column holding a non-zero pixel (at least ``MIN_CONTENT``)."""
    nonzero = images.detach().amax(dim=1) > 0  # (B, H, W)
    sizes = []
    for m in nonzero:
        rows = torch.nonzero(m.any(dim=1)).flatten()
        cols = torch.nonzero(m.any(dim=0)).flatten()
        h = int(rows[-1]) + 1 if rows.numel() else m.shape[0]
        w = int(cols[-1]) + 1 if cols.numel() else m.shape[1]
        sizes.append((max(h, MIN_CONTENT), max(w, MIN_CONTENT)))
    return sizes


class MaskDistillLoss:
    """Callable ``(student_emb, teacher_emb, images, rt) -> scalar`` (see module docstring).

    Args:
        model: the student MedSAMLite; only its prompt encoder and mask decoder are used (frozen).
        boxes_per_image: K random boxes per image and step.
        weight: factor of the term in the total loss.
        box_source: ``random`` or ``teacher`` (module docstring).
        stable_iou: teacher-stability threshold of ``teacher`` boxes.
        fraction: share of images that get the term (the decoder is expensive on a CPU: about as much
            per box as the teacher encoder per image). With per-image ``keys`` an image takes part when
            ``key % 10007 < fraction * 10007`` (a property of the view, not of its batch or process) and the
            sum is divided by ``fraction * B``; without keys every image takes part.
    """

    def __init__(self, model: MedSAMLite, boxes_per_image: int = 2, weight: float = 1.0, box_source: str = "random",
                 stable_iou: float = 0.8, fraction: float = 1.0) -> None:
        from monai.losses import DiceLoss

        if boxes_per_image < 1:
            raise ValueError(f"boxes_per_image must be >= 1, got {boxes_per_image}")
        if box_source not in BOX_SOURCES:
            raise ValueError(f"box_source must be one of {BOX_SOURCES}, got {box_source!r}")
        self.decoder = MedSAMLite(nn.Identity(), model.prompt_encoder, model.mask_decoder)
        self.boxes_per_image, self.weight = int(boxes_per_image), float(weight)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.box_source, self.stable_iou, self.fraction = box_source, float(stable_iou), float(fraction)
        self.dice = DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")
        self.kept = [0, 0]  # (kept, candidates) of teacher boxes since construction (diagnostics)

    def boxes(self, images: torch.Tensor, keys: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """Per image a (K, 4) float32 XYXY box tensor in the 256 x 256 model frame (random candidates)."""
        sizes = content_sizes(images)
        if keys is None:
            rng = np.random.default_rng(int(np.random.randint(0, 2 ** 31 - 1)))
            return [torch.from_numpy(sample_boxes(rng, h, w, self.boxes_per_image)) for h, w in sizes]
        return [torch.from_numpy(sample_boxes(np.random.default_rng([int(k), KEY_SALT]), h, w, self.boxes_per_image))
                for (h, w), k in zip(sizes, keys)]

    def teacher_boxes(self, teacher_emb: torch.Tensor, candidates: torch.Tensor, size: Tuple[int, int]
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Object-like, teacher-stable boxes of one image (module docstring).

        Args:
            teacher_emb: (1, 256, 64, 64) fp32; candidates: (K, 4) XYXY model frame; size: content (h, w).
        Returns:
            ((M, 4) kept boxes, (M, 1, 256, 256) teacher logits for them), M in 0..K.
        """
        first, _ = self.decoder.decode(teacher_emb, candidates)
        masks = (first[:, 0] > 0).cpu().numpy()
        content = float(size[0] * size[1])
        boxes, index = [], []
        for k, mask in enumerate(masks):
            if mask.sum() < MIN_MASK_PX:
                continue
            box = box_from_mask(mask, shift=0)
            if (box[2] - box[0] + 1) * (box[3] - box[1] + 1) > MAX_BOX_FRACTION * content:
                continue
            boxes.append(box)
            index.append(k)
        self.kept[1] += len(masks)
        if not boxes:
            return candidates[:0], first[:0]
        kept = torch.from_numpy(np.stack(boxes)).to(teacher_emb.device)
        second, _ = self.decoder.decode(teacher_emb, kept)
        a, b = first[index, 0] > 0, second[:, 0] > 0
        iou = (a & b).flatten(1).sum(1).float() / (a | b).flatten(1).sum(1).clamp_min(1).float()
        stable = iou >= self.stable_iou
        self.kept[0] += int(stable.sum())
        return kept[stable], second[stable]

    def __call__(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, images: torch.Tensor,
                 rt: Runtime, keys: Optional[Sequence[int]] = None) -> torch.Tensor:
        """student_emb / teacher_emb: (B, 256, 64, 64); images: the (B, 3, 256, 256) model inputs;
        keys: optional (B,) per-image seeds of the candidate boxes."""
        terms = []
        sizes = content_sizes(images)
        fraction = self.fraction if keys is not None else 1.0
        for i, boxes in enumerate(self.boxes(images, keys)):
            if fraction < 1.0 and int(keys[i]) % FRACTION_MOD >= fraction * FRACTION_MOD:
                continue
            boxes = boxes.to(student_emb.device)
            with torch.no_grad(), torch.autocast(device_type=rt.device.type, enabled=False):
                if self.box_source == "teacher":
                    boxes, target = self.teacher_boxes(teacher_emb[i:i + 1].float(), boxes, sizes[i])
                    if boxes.shape[0] == 0:
                        continue
                else:
                    target, _ = self.decoder.decode(teacher_emb[i:i + 1].float(), boxes)
            with rt.autocast():
                logits, _ = self.decoder.decode(student_emb[i:i + 1], boxes)
            logits = logits.float()
            terms.append(F.binary_cross_entropy_with_logits(logits, torch.sigmoid(target))
                         + self.dice(logits, (target > 0).float()))
        if not terms:  # no teacher-stable box in the batch: a zero that keeps the graph (DDP sees every grad)
            return student_emb.float().sum() * 0.0
        return self.weight * torch.stack(terms).sum() / (fraction * len(sizes))


__all__ = ["MaskDistillLoss", "content_sizes", "BOX_SOURCES", "MIN_MASK_PX", "MAX_BOX_FRACTION"]
