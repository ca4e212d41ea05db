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
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.model import MedSAMLite

from .boxes import sample_boxes
from .runtime import Runtime

MIN_CONTENT = 16  # pixels: a smaller content side (near-blank image) is widened to this


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
    """

    def __init__(self, model: MedSAMLite, boxes_per_image: int = 2, weight: float = 1.0) -> None:
        from monai.losses import DiceLoss

        if boxes_per_image < 1:
            raise ValueError(f"boxes_per_image must be >= 1, got {boxes_per_image}")
        self.decoder = MedSAMLite(nn.Identity(), model.prompt_encoder, model.mask_decoder)
        self.boxes_per_image, self.weight = int(boxes_per_image), float(weight)
        self.dice = DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")

    def boxes(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Per image a (K, 4) float32 XYXY box tensor in the 256 x 256 model frame."""
        rng = np.random.default_rng(int(np.random.randint(0, 2 ** 31 - 1)))
        return [torch.from_numpy(sample_boxes(rng, h, w, self.boxes_per_image)) for h, w in content_sizes(images)]

    def __call__(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, images: torch.Tensor,
                 rt: Runtime) -> torch.Tensor:
        """student_emb / teacher_emb: (B, 256, 64, 64); images: the (B, 3, 256, 256) model inputs."""
        terms = []
        for i, boxes in enumerate(self.boxes(images)):
            boxes = boxes.to(student_emb.device)
            with torch.no_grad(), torch.autocast(device_type=rt.device.type, enabled=False):
                target, _ = self.decoder.decode(teacher_emb[i:i + 1].float(), boxes)
            with rt.autocast():
                logits, _ = self.decoder.decode(student_emb[i:i + 1], boxes)
            logits = logits.float()
            terms.append(F.binary_cross_entropy_with_logits(logits, torch.sigmoid(target))
                         + self.dice(logits, (target > 0).float()))
        return self.weight * torch.stack(terms).mean()


__all__ = ["MaskDistillLoss", "content_sizes"]
