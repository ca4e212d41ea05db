"""Training: the Swin-T teacher (``train_teacher``) and encoder distillation into a student (``distill``).

Both run through one training loop (:mod:`medsam_lite.distill.loop`): AdamW + ReduceLROnPlateau on the
validation loss, ``last.pth`` / ``best.pth`` written atomically every epoch, exact resume, bf16/fp16
autocast, channels_last, one CPU / one GPU / several processes under ``torchrun`` (DDP).

Modules: :mod:`medsam_lite.distill.options` (``TrainConfig``, ``DistillConfig``, ``TeacherConfig``, shared CLI
options; no torch import), :mod:`medsam_lite.distill.state` (RNG states, weights-only loading),
:mod:`medsam_lite.distill.runtime` (device, distributed setup, autocast), :mod:`medsam_lite.distill.loop` (the ``Trainer``),
:mod:`medsam_lite.distill.data` (data folders and splits), :mod:`medsam_lite.distill.augment` (deterministic augmentation),
:mod:`medsam_lite.distill.cache` (teacher-embedding cache), :mod:`medsam_lite.distill.modes` (the distillation data
modes: cached embeddings, online teacher, fresh views), :mod:`medsam_lite.distill.teacher`,
:mod:`medsam_lite.distill.student`, :mod:`medsam_lite.distill.campaign` (``CampaignConfig``: a DistillConfig +
TrainConfig with device-dependent defaults).

The public functions are imported lazily so that ``import medsam_lite.distill.options`` stays light.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "DistillConfig", "TeacherConfig", "Trainer", "train_teacher", "distill"]


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "DistillConfig", "TeacherConfig"):
        from . import options

        return getattr(options, name)
    if name == "Trainer":
        from .loop import Trainer

        return Trainer
    if name == "train_teacher":
        from .teacher import train_teacher

        return train_teacher
    if name == "distill":
        from .student import distill

        return distill
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
