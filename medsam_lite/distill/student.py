"""``distill``: train a student image encoder to reproduce a teacher's image embeddings.

Loss: MSE between the teacher's and the student's (B, 256, 64, 64) embeddings of the same
(B, 3, 256, 256) model-frame input in [0, 1]. The teacher (any ``load_model`` spec: ``lite_medsam``,
a checkpoint path, train-teacher's ``best.pth``) runs frozen, in eval mode, in fp32 and never under
autocast; only the student is autocast. Data are images only (``--data`` prep folders). Optionally
(``mask_loss_weight`` > 0) a mask-level term is added (:mod:`medsam_lite.distill.mask_kd`): the frozen decoder's
masks from the student's and the teacher's embeddings for the same random boxes are pulled together;
``prompt_boxes="teacher"`` takes its boxes from the teacher's own stable masks.

Where images and teacher targets come from is one data-mode object per run
(:mod:`medsam_lite.distill.modes`, chosen once by :func:`~medsam_lite.distill.modes.data_mode`):
cached embeddings (``cache_dir``: :mod:`medsam_lite.distill.cache`, K cached variants per image, one
drawn per image and epoch), the online teacher on folder images (``augment``: keyed by (seed, epoch,
image), so also deterministic), or fresh views (``online_views``: :mod:`medsam_lite.distill.views`, the
teacher through OpenVINO fp32 on a CPU device when installed). :func:`distill_task` turns the mode's
data into the :class:`~medsam_lite.distill.loop.Task` that the one trainer (:func:`~medsam_lite.distill.loop.fit`,
nnU-Net-style hooks) runs; the mode's ``set_epoch`` is its per-epoch hook.

Result: ``student.pth`` in the run folder, a self-describing checkpoint (encoder = the student
name) holding the student encoder's best weights (lowest validation loss; unfused: RepViT's
BatchNorm / branches are kept as trained) and the teacher's prompt encoder and mask decoder copied
unchanged, unless ``finetune_decoder`` then trains the mask decoder on labelled slices with the
student encoder frozen (sub-run folder ``finetune/``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.checkpoint import load_model, save_checkpoint, state_sha256
from medsam_lite.encoders import build_encoder
from medsam_lite.errors import InputError
from medsam_lite.model import MedSAMLite

from .data import slice_datasets
from .loop import CheckpointHook, FitResult, LossFn, Task, check_run_folder, fit
from .mask_kd import MaskDistillLoss
from .modes import (ONLINE_AUG_SALT, VAL_VIEW_SALT, VIEW_SALT, BackendTeacher, DataMode, FreshViews, OnlineImages,
                    Targets, data_mode, teacher_encoder_for, time_teacher, view_key, view_sampler)
from .options import DistillConfig, TrainConfig
from .runtime import Runtime, runtime_scope
from .state import load_weights_only, preserved_rng_state, seeded_init
from .teacher import check_encoder, segmentation_task

PathLike = Union[str, Path]
STUDENT_FILE = "student.pth"


def _distill_loss(targets: Targets, mask_term: Optional[MaskDistillLoss] = None) -> LossFn:
    """Loss of a batch: MSE(student embedding, teacher embedding) [+ ``mask_term``]; ``targets`` (the data
    mode's) gives the batch's [0, 1] images and fp32 teacher embeddings; only the student is autocast."""

    def loss(forward: Callable[..., Any], batch: Dict[str, Any], rt: Runtime) -> torch.Tensor:
        images, target = targets(batch, rt)
        if rt.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with rt.autocast():
            out = forward(images)
        value = F.mse_loss(out.float(), target)
        if mask_term is not None:
            keys = batch.get("key")
            keys = [int(k) for k in keys] if keys is not None else None
            value = value + mask_term(out, target, images, rt, keys)
        return value

    return loss


def load_teacher(spec: str) -> MedSAMLite:
    """The frozen teacher (eval, no grad) for a ``load_model`` spec; bad specs raise InputError."""
    teacher = load_model(spec)
    teacher.eval().requires_grad_(False)
    return teacher


@dataclass
class DistillResult:
    """Paths of a distillation run. ``student`` is None after ``cache_only``."""

    run_dir: Path
    student: Optional[Path]
    cache_dir: Optional[Path]
    fit: Optional[FitResult]
    finetune: Optional[FitResult] = None


@preserved_rng_state()  # loading / building models draws from the global RNGs: give the caller its streams back
def distill(data: Sequence[PathLike], out_dir: PathLike, options: Optional[DistillConfig] = None,
            config: Optional[TrainConfig] = None, *, on_checkpoint: Optional[CheckpointHook] = None,
            on_cache_batch: Optional[Callable[[int], None]] = None) -> DistillResult:
    """Distil ``options.teacher``'s image encoder into registry encoder ``options.student`` (module docstring).

    The data mode (:func:`medsam_lite.distill.modes.data_mode`) is chosen once; the student then trains
    through the one trainer (:func:`medsam_lite.distill.loop.fit`, whose per-epoch hook is the mode's
    ``set_epoch``), then optionally fine-tunes the decoder, then ``student.pth`` is written.

    Args:
        data: prep output folders (or folders of ``imgs/*.npy``); with ``online_views`` one views pack or
            the shared data folder.
        out_dir: run folder: last.pth / best.pth (training states), student.pth, log.csv, loss.png,
            run.json (and ``finetune/`` with ``finetune_decoder``).
        options: what is distilled (:class:`~medsam_lite.distill.options.DistillConfig`; default: all defaults).
        config: optimisation / runtime settings (shared with train-teacher).
        on_checkpoint: hook after each last.pth write; ``on_cache_batch``: hook after each cache batch.
    """
    opt = options or DistillConfig()
    cfg = config or TrainConfig()
    check_encoder(opt.student, "--student")
    opt.check()
    mode = data_mode(opt, data)
    if opt.finetune_decoder:
        slice_datasets(data)  # fail early when the folders have no labelled slices
    out_dir = Path(out_dir)
    if not opt.cache_only:
        check_run_folder(out_dir, cfg.resume)

    with runtime_scope(cfg.device, cfg.amp, cfg.channels_last) as rt:
        teacher_model = load_teacher(opt.teacher)
        teacher_sha = state_sha256(teacher_model)
        mode.prepare(teacher_model, teacher_sha, cfg, rt, on_cache_batch)
        if opt.cache_only:
            return DistillResult(run_dir=out_dir, student=None, cache_dir=mode.cache_dir, fit=None)
        model = _student_model(opt, teacher_model, cfg.seed)
        task = distill_task(model, mode, teacher_model, teacher_sha, opt, cfg, rt)
        del teacher_model  # the student holds copies of its decoder; an online teacher encoder lives on in task.loss
        result = fit(task, cfg, out_dir, rt, on_checkpoint=on_checkpoint)
        _load_best(model, result)
        finetuned, ckpt_config = None, task.checkpoint_config
        if opt.finetune_decoder:
            finetuned = _finetune_decoder(model, data, opt, cfg, ckpt_config, result, out_dir, rt, on_checkpoint)
            _load_best(model, finetuned)
            ckpt_config = {**ckpt_config, "finetune_decoder": True}
        student_path = out_dir / STUDENT_FILE
        if rt.is_main:
            save_checkpoint(model.to("cpu"), student_path, opt.student, ckpt_config,
                            distill={"best_epoch": result.best_epoch, "best_val_loss": result.best_metric,
                                     "epochs": result.epochs_done})
        rt.barrier()
    return DistillResult(run_dir=out_dir, student=student_path, cache_dir=mode.cache_dir, fit=result, finetune=finetuned)


def distill_task(model: MedSAMLite, mode: DataMode, teacher_model: MedSAMLite, teacher_sha: str, opt: DistillConfig,
                 cfg: TrainConfig, rt: Runtime) -> Task:
    """The trainer's :class:`~medsam_lite.distill.loop.Task`: ``model``'s image encoder trained on ``mode``'s
    data against the teacher's embeddings (+ the mask term), the prompt encoder and mask decoder frozen."""
    mask_term = (MaskDistillLoss(model, opt.mask_boxes, opt.mask_loss_weight, opt.prompt_boxes, opt.stable_iou,
                                 opt.mask_fraction)
                 if opt.mask_loss_weight > 0 else None)
    describe: Dict[str, Any] = {"data": mode.info, "teacher": opt.teacher, "teacher_sha256": teacher_sha,
                                "student": opt.student, "train_images": mode.train_images,
                                "val_images": mode.val_images,
                                "cache_dir": str(mode.cache_dir) if mode.cache_dir else None,
                                "aug_variants": opt.aug_variants, "cache_seed": opt.cache_seed,
                                "augment": opt.augment, "mask_loss_weight": opt.mask_loss_weight,
                                "mask_boxes": opt.mask_boxes if mask_term else None,
                                "prompt_boxes": opt.prompt_boxes if mask_term else None, "options": opt.to_dict()}
    if opt.init_student is not None:
        describe["init_student"] = opt.init_student
    data = mode.training_data(teacher_model, cfg, rt)
    describe.update(data.describe)
    ckpt_config = {"task": "distill", "student": opt.student, "teacher": opt.teacher,
                   "teacher_sha256": teacher_sha, "mask_loss_weight": opt.mask_loss_weight,
                   "prompt_boxes": opt.prompt_boxes, "online_views": opt.online_views, **mode.record()}
    return Task(name="distill", model=model, encoder=opt.student, trainable=model.image_encoder,
                train_set=data.train_set, val_set=data.val_set, loss=_distill_loss(data.targets, mask_term),
                checkpoint_config=ckpt_config, describe=describe, frozen=(model.prompt_encoder, model.mask_decoder),
                set_epoch=data.train_set.set_epoch)


def _student_model(opt: DistillConfig, teacher_model: MedSAMLite, seed: int) -> MedSAMLite:
    """Student encoder (initialised under ``seed`` in a forked torch RNG, or from ``init_student``) + copies of
    the teacher's prompt encoder and mask decoder (frozen)."""
    with seeded_init(seed):
        encoder = build_encoder(opt.student)
    model = MedSAMLite(encoder, copy.deepcopy(teacher_model.prompt_encoder), copy.deepcopy(teacher_model.mask_decoder))
    model.prompt_encoder.requires_grad_(False)
    model.mask_decoder.requires_grad_(False)
    if opt.init_student is not None:
        init_encoder(model, opt.init_student, opt.student)
    return model


def _finetune_decoder(model: MedSAMLite, data: Sequence[PathLike], opt: DistillConfig, cfg: TrainConfig,
                      ckpt_config: Dict[str, Any], result: FitResult, out_dir: Path, rt: Runtime,
                      on_checkpoint: Optional[CheckpointHook]) -> FitResult:
    """Train the mask decoder on labelled slices (encoder frozen) in ``out_dir/finetune``."""
    seg_train, seg_val, seg_info = slice_datasets(data)
    ft_cfg = replace(cfg, epochs=opt.finetune_epochs, lr=opt.finetune_lr)
    ft_task = segmentation_task(model, opt.student, seg_train, seg_val, "finetune-decoder", decoder_only=True,
                                checkpoint_config={**ckpt_config, "finetune_decoder": True},
                                describe={"data": seg_info, "student_from": str(result.best or result.last)})
    return fit(ft_task, ft_cfg, out_dir / "finetune", rt, on_checkpoint=on_checkpoint)


def init_encoder(model: MedSAMLite, spec: str, student: str) -> None:
    """Copy the image encoder of ``load_model(spec)`` into ``model`` (InputError when it does not fit)."""
    source = load_model(spec)
    try:
        model.image_encoder.load_state_dict(source.image_encoder.state_dict(), strict=True)
    except RuntimeError as exc:
        raise InputError(f"--init-student {spec}: its image encoder is not a {student} encoder "
                         f"({str(exc).splitlines()[0]})") from exc


def _load_best(model: nn.Module, result: FitResult) -> None:
    """Load the best (else last) weights of a finished fit into ``model``."""
    path = result.best or result.last
    model.load_state_dict(load_weights_only(path)["state_dict"], strict=True)


__all__: List[str] = ["distill", "distill_task", "DistillConfig", "DistillResult", "OnlineImages", "FreshViews",
                      "BackendTeacher", "teacher_encoder_for", "time_teacher", "view_sampler", "view_key",
                      "init_encoder", "load_teacher", "ONLINE_AUG_SALT", "VIEW_SALT", "VAL_VIEW_SALT"]
