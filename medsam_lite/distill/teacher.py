"""``train-teacher``: MedSAM (default encoder ``swin_t``) trained end to end on prep output.

Loss (the LiteMedSAM recipe), all in the 256 x 256 model frame: the mask decoder's low-resolution
logits are (B, 1, 256, 256) (4 x the 64 x 64 embedding), the same grid as the (B, 1, 256, 256)
ground-truth mask from ``SliceDataset``:

    Dice (monai ``DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")``)
    + BCE with logits
    + MSE(predicted IoU (B, 1), IoU of (logits > 0) vs the ground truth (B, 1))

:func:`segmentation_task` is shared with ``distill --finetune-decoder`` (mask decoder only, on
precomputed embeddings of the frozen encoder).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.encoders import ENCODERS
from medsam_lite.errors import InputError
from medsam_lite.model import MedSAMLite, build_medsam

from .data import preprocessing_record, slice_datasets
from .loop import CheckpointHook, FitResult, LossFn, Task, check_run_folder, fit
from .options import INIT_CHOICES, TeacherConfig, TrainConfig
from .runtime import Runtime, runtime_scope
from .state import preserved_rng_state, seeded_init

PathLike = Union[str, Path]


class SegmentationLoss(nn.Module):
    """Dice + BCE + IoU-prediction MSE for (B, 1, 256, 256) logits against (B, 1, 256, 256) masks."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")
        self.bce = nn.BCEWithLogitsLoss(reduction="mean")

    @staticmethod
    def mask_iou(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1) IoU of ``sigmoid(logits) > 0.5`` with ``masks > 0.5`` (1 when both are empty)."""
        pred, gt = logits > 0, masks > 0.5
        inter = (pred & gt).flatten(1).sum(1).float()
        union = (pred | gt).flatten(1).sum(1).float()
        return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))[:, None]

    def forward(self, logits: torch.Tensor, iou_pred: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits, iou_pred, masks = logits.float(), iou_pred.float(), masks.float()
        with torch.no_grad():
            iou = self.mask_iou(logits, masks)
        return self.dice(logits, masks) + self.bce(logits, masks) + F.mse_loss(iou_pred, iou)


def _seg_loss_fn(criterion: SegmentationLoss, encoder: Optional[nn.Module] = None) -> LossFn:
    """Loss function for :class:`~medsam_lite.distill.loop.Task`.

    Without ``encoder``: ``forward(images, boxes)`` is the whole model. With ``encoder`` (frozen):
    embeddings are computed under no_grad first and ``forward(embeddings, boxes)`` only decodes.
    """

    def loss(forward: Callable[..., Any], batch: Dict[str, Any], rt: Runtime) -> torch.Tensor:
        images = rt.to_device(batch["image"], image=True)
        boxes = rt.to_device(batch["box"])
        masks = rt.to_device(batch["mask"])
        with rt.autocast():
            if encoder is not None:
                with torch.no_grad():
                    images = encoder(images)
            logits, iou_pred = forward(images, boxes)
        return criterion(logits, iou_pred, masks)

    return loss


def segmentation_task(model: MedSAMLite, encoder_name: str, train_set: Any, val_set: Any, name: str,
                      decoder_only: bool = False, checkpoint_config: Optional[Dict[str, Any]] = None,
                      describe: Optional[Dict[str, Any]] = None) -> Task:
    """A box-prompted segmentation :class:`Task` for ``model``.

    ``decoder_only``: train the mask decoder alone; the image and prompt encoders are frozen (no
    grad, eval mode) and the trained module is ``MedSAMLite(Identity, prompt_encoder, mask_decoder)``
    fed with embeddings, so DDP sees one forward per step.
    """
    criterion = SegmentationLoss()
    if decoder_only:
        model.image_encoder.requires_grad_(False)
        model.prompt_encoder.requires_grad_(False)
        model.mask_decoder.requires_grad_(True)
        trainable: nn.Module = MedSAMLite(nn.Identity(), model.prompt_encoder, model.mask_decoder)
        return Task(name=name, model=model, encoder=encoder_name, trainable=trainable, train_set=train_set,
                    val_set=val_set, loss=_seg_loss_fn(criterion, model.image_encoder),
                    checkpoint_config=dict(checkpoint_config or {}), describe=dict(describe or {}),
                    frozen=(model.image_encoder, model.prompt_encoder))
    # boxes use 2 of the prompt encoder's 4 point embeddings; mask_downscaling is unused
    return Task(name=name, model=model, encoder=encoder_name, trainable=model, train_set=train_set, val_set=val_set,
                loss=_seg_loss_fn(criterion), checkpoint_config=dict(checkpoint_config or {}),
                describe=dict(describe or {}), find_unused_parameters=True)


def copy_prompt_and_decoder(target: MedSAMLite, source: MedSAMLite) -> None:
    """Copy ``source``'s prompt encoder and mask decoder weights into ``target`` (strict)."""
    target.prompt_encoder.load_state_dict(source.prompt_encoder.state_dict(), strict=True)
    target.mask_decoder.load_state_dict(source.mask_decoder.state_dict(), strict=True)


def check_encoder(name: str, what: str = "--encoder") -> str:
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(ENCODERS))}", what)
    return name


@dataclass
class TeacherResult:
    """Paths of a finished ``train-teacher`` run (``best`` is what ``distill --teacher`` takes)."""

    run_dir: Path
    best: Optional[Path]
    last: Path
    fit: FitResult


@preserved_rng_state()  # loading / building models draws from the global RNGs: give the caller its streams back
def train_teacher(data: Sequence[PathLike], out_dir: PathLike, options: Optional[TeacherConfig] = None,
                  config: Optional[TrainConfig] = None, *, on_checkpoint: Optional[CheckpointHook] = None
                  ) -> TeacherResult:
    """Train MedSAM with registry encoder ``options.encoder`` end to end on prep folders ``data``.

    Args:
        data: prep output folders (``imgs/``, ``gts/``, ``manifest.csv`` with ``train`` / ``val`` split).
        out_dir: run folder: last.pth, best.pth (self-describing, loadable by ``load_model``; their
            ``config`` records the data's normalisation and the model-frame contract), log.csv,
            loss.png, run.json.
        options: encoder and initialisation (:class:`~medsam_lite.distill.options.TeacherConfig`).
        config: optimisation / runtime settings (defaults: lr 0.005, batch 8, 100 epochs).
        on_checkpoint: hook after every last.pth write (see :class:`medsam_lite.distill.loop.Trainer`).
    """
    opt = options or TeacherConfig()
    cfg = config or TrainConfig()
    check_encoder(opt.encoder)
    if opt.init not in INIT_CHOICES:
        raise InputError(f"--init must be one of {', '.join(INIT_CHOICES)}, got {opt.init!r}")
    train_set, val_set, info = slice_datasets(data)
    check_run_folder(out_dir, cfg.resume)
    with runtime_scope(cfg.device, cfg.amp, cfg.channels_last) as rt:
        with seeded_init(cfg.seed):  # initial weights from cfg.seed; the caller's RNG is untouched
            model = build_medsam(opt.encoder)
        if opt.init == "lite_medsam":
            from medsam_lite.checkpoint import load_model

            copy_prompt_and_decoder(model, load_model("lite_medsam"))
        describe: Dict[str, Any] = {"data": info, "init": opt.init, "options": opt.to_dict(),
                                    "train_items": len(train_set),
                                    "val_items": len(val_set) if val_set is not None else 0}
        task = segmentation_task(model, opt.encoder, train_set, val_set, "train-teacher",
                                 checkpoint_config={"task": "train-teacher", "init": opt.init,
                                                    "data": [d["folder"] for d in info],
                                                    **preprocessing_record(data)},
                                 describe=describe)
        result = fit(task, cfg, out_dir, rt, on_checkpoint=on_checkpoint)
    return TeacherResult(run_dir=result.run_dir, best=result.best, last=result.last, fit=result)


__all__: List[str] = ["train_teacher", "TeacherConfig", "SegmentationLoss", "segmentation_task", "copy_prompt_and_decoder",
                      "TeacherResult"]
