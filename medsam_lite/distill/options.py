"""Training settings (no torch import: the CLI uses this).

``TrainConfig`` holds everything the training loop needs (shared by ``train-teacher`` and
``distill``); :func:`add_training_arguments` adds the same options to both subcommands and
:func:`config_from_args` turns them back into a config. ``DistillConfig`` holds what ``distill``
trains (teacher, student, cache, data split, fine-tuning, mask term); ``TeacherConfig`` what
``train-teacher`` trains.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional, Union

from ..backends import backend_names  # the registry only: no runtime is imported

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
SCHEDULE_CHOICES = ("plateau", "cosine")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
VAL_SPLIT_CHOICES = ("case", "image")
INIT_CHOICES = ("scratch", "lite_medsam")
PROMPT_BOX_CHOICES = ("random", "teacher")
TEACHER_BACKEND_CHOICES = ("auto",) + backend_names()
"""``--teacher-backend``: a registry backend (:mod:`medsam_lite.backends`), always run at fp32."""


@dataclass
class TrainConfig:
    """Optimisation and run settings of one training run.

    Attributes:
        epochs: total epochs (on ``resume`` the run continues up to this number).
        batch_size: images per step *per process*.
        lr, weight_decay: AdamW settings (LiteMedSAM recipe: 0.005, 0.01).
        schedule: ``plateau`` (the paper's): ReduceLROnPlateau(mode="min", ``plateau_factor``,
            ``plateau_patience``) stepped once per epoch on the validation loss (the training loss
            when there is no validation data); ``cosine``: per step from ``lr`` down to
            ``lr * min_lr_ratio`` over all ``epochs`` (for a run of a known length).
        max_steps: at most this many steps per epoch (tiny runs); None = the whole epoch.
        workers: DataLoader worker processes (0 = load in the training process; exact resume).
        seed: seeds model init, data order (per epoch: (seed, epoch)) and augmentation.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: ``auto`` = bf16 autocast (fp16 on a CUDA device without bf16), ``bf16``, ``fp16``
            (CUDA only, with a GradScaler) or ``off``. Only the trained model is autocast.
        channels_last: trained model and its inputs in channels_last memory format.
        resume: continue from ``last.pth`` in the run folder (start fresh when there is none).
        checkpoint_every: also write ``last.pth`` every this many steps inside an epoch (0 = only at
            epoch ends); a resumed run skips the steps already done.
        progress: tqdm bars (rank 0 only).
        time_limit: minutes this session may train; the run stops at the last epoch end that fits
            (judged by this session's longest epoch) and is finalised as if ``epochs`` were reached
            there (``--resume`` with a larger limit continues it). None = no limit.
    """

    epochs: int = 100
    batch_size: int = 8
    lr: float = 0.005
    weight_decay: float = 0.01
    plateau_factor: float = 0.9
    plateau_patience: int = 5
    schedule: str = "plateau"
    min_lr_ratio: float = 0.01
    max_steps: Optional[int] = None
    workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    resume: bool = False
    checkpoint_every: int = 0
    progress: bool = True
    time_limit: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def add_training_arguments(p: argparse.ArgumentParser, defaults: Optional[TrainConfig] = None) -> None:
    """Add the shared optimisation / runtime options (``--epochs`` ... ``--no-progress``) to ``p``."""
    d = defaults or TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"total epochs (default {d.epochs})")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"images per step per process (default {d.batch_size})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"AdamW weight decay (default {d.weight_decay})")
    g.add_argument("--plateau-factor", type=float, default=d.plateau_factor,
                   help=f"ReduceLROnPlateau factor (default {d.plateau_factor})")
    g.add_argument("--plateau-patience", type=int, default=d.plateau_patience,
                   help=f"ReduceLROnPlateau patience in epochs (default {d.plateau_patience})")
    g.add_argument("--schedule", choices=SCHEDULE_CHOICES, default=d.schedule,
                   help="learning-rate schedule: plateau (default, ReduceLROnPlateau on the validation loss) or "
                   "cosine (per step down to lr x --min-lr-ratio over --epochs)")
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                   help=f"final lr / lr of the cosine schedule (default {d.min_lr_ratio})")
    g.add_argument("--time-limit", type=float, default=d.time_limit, metavar="MIN",
                   help="stop at the last epoch end that fits into MIN minutes of this session and finalise")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="at most this many steps per epoch (tiny runs)")
    g.add_argument("--workers", type=int, default=d.workers,
                   help="DataLoader worker processes (default 0: loading in the training process)")
    g.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    g.add_argument("--device", choices=DEVICE_CHOICES, default=d.device,
                   help="auto (CUDA when available), cpu or cuda; under torchrun each process takes cuda:LOCAL_RANK")
    g.add_argument("--amp", choices=AMP_CHOICES, default=d.amp,
                   help="autocast of the trained model: auto (default) = bf16 on CPU and on bf16-capable GPUs, "
                   "else fp16; off = fp32")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the default contiguous memory format (channels_last is on by default)")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pth (starts fresh when there is none yet)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="STEPS",
                   help="also save last.pth every STEPS steps inside an epoch (default 0: at epoch ends only)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def from_args(cls: Any, args: argparse.Namespace) -> Any:
    """A config dataclass ``cls`` from parsed arguments whose option dests are its field names."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed arguments from :func:`add_training_arguments`."""
    return from_args(TrainConfig, args)


@dataclass
class DistillConfig:
    """What ``distill`` trains (the optimisation settings are a separate :class:`TrainConfig`).

    Attributes:
        teacher: ``load_model`` spec of the teacher (``lite_medsam``, a checkpoint path, a
            train-teacher ``best.pth``).
        student: registry encoder name of the student.
        cache_dir: teacher-embedding cache folder (built when missing or partial; reused when its
            index matches; a mismatch raises InputError unless ``rebuild_cache``). None = online.
        aug_variants: K cached variants per training image (variant 0 plain); needs ``cache_dir``.
        augment: online augmentation (no cache) keyed by (seed, epoch, image).
        rebuild_cache: replace a cache built for another teacher / data / K.
        cache_only: build the cache and return without training.
        cache_batch_size: teacher batch while building (None: ``TrainConfig.batch_size``).
        cache_seed: seed of the cached augmented variants (part of the cache identity).
        val_fraction: validation share (fixed seed 0) for folders whose manifest has no ``val`` split.
        val_split: how that share is drawn: ``"case"`` (whole cases of the manifest, no slice
            leakage) or ``"image"`` (single images; how the shipped students' runs were split).
        finetune_decoder: afterwards train the mask decoder on labelled slices for
            ``finetune_epochs`` at ``finetune_lr`` (encoder frozen); needs prep folders with labels.
        init_student: warm start: ``load_model`` spec whose image encoder initialises the student
            (same architecture); optimizer, scheduler and log start fresh. Ignored when resuming.
        mask_loss_weight: weight of the mask-level term (:mod:`medsam_lite.distill.mask_kd`) added
            to the embedding MSE; 0 = embedding MSE only (the paper's recipe).
        mask_boxes: boxes per image and step for that term (with ``prompt_boxes="teacher"``: candidate
            boxes, of which the object-like, teacher-stable ones are kept).
        prompt_boxes: ``random`` (boxes of the fidelity distribution) or ``teacher`` (EdgeSAM style: boxes
            of the teacher's own masks, kept when object-like and teacher-stable, see
            :mod:`medsam_lite.distill.mask_kd`).
        mask_fraction: share of the (online-view) images that get the mask term (the decoder is costly
            on a CPU); the term is rescaled by 1 / fraction.
        stable_iou: IoU a teacher-mask box must reach between the teacher's first mask and its mask for
            that box to be kept (``prompt_boxes="teacher"``).
        online_views: fresh views every step (:mod:`medsam_lite.distill.views`) instead of data folders:
            ``data`` is one views pack or the shared data folder; the teacher runs every step.
        views_per_epoch: training views per epoch (each one new: keyed by (seed, epoch, index)).
        val_views: fixed validation views (the same every epoch; new views of the training sources).
        teacher_backend: how the online-views teacher encoder runs: ``auto`` (OpenVINO fp32 on a CPU
            device when installed, else torch), ``torch`` or ``openvino``.
    """

    teacher: str = "lite_medsam"
    student: str = "repvit_m0_6"
    cache_dir: Optional[Union[str, os.PathLike]] = None
    aug_variants: int = 1
    augment: bool = False
    rebuild_cache: bool = False
    cache_only: bool = False
    cache_batch_size: Optional[int] = None
    cache_seed: int = 0
    val_fraction: float = 0.05
    val_split: str = "case"
    finetune_decoder: bool = False
    finetune_epochs: int = 10
    finetune_lr: float = 1e-4
    init_student: Optional[str] = None
    mask_loss_weight: float = 0.0
    mask_boxes: int = 2
    prompt_boxes: str = "random"
    stable_iou: float = 0.8
    mask_fraction: float = 1.0
    online_views: bool = False
    views_per_epoch: int = 512
    val_views: int = 32
    teacher_backend: str = "auto"

    def to_dict(self) -> Dict[str, Any]:
        return {k: (str(v) if k == "cache_dir" and v is not None else v) for k, v in asdict(self).items()}

    def check(self) -> None:
        """Refuse contradictory or out-of-range settings (InputError naming the flag); ``val_fraction`` /
        ``val_split`` are checked where they are used (``medsam_lite.distill.data.image_lists``)."""
        from medsam_lite.errors import InputError

        if self.aug_variants < 1:
            raise InputError(f"--aug-variants must be >= 1, got {self.aug_variants}")
        if self.aug_variants > 1 and self.cache_dir is None:
            raise InputError("--aug-variants needs --cache-dir (use --augment for online augmentation)")
        if self.augment and self.cache_dir is not None:
            raise InputError("--augment is for runs without a cache; with --cache-dir use --aug-variants K")
        if self.cache_only and self.cache_dir is None:
            raise InputError("--cache-only needs --cache-dir")
        if self.mask_loss_weight < 0 or self.mask_boxes < 1:
            raise InputError(f"--mask-loss-weight must be >= 0 and --mask-boxes >= 1, got {self.mask_loss_weight} "
                             f"/ {self.mask_boxes}")
        if self.prompt_boxes not in PROMPT_BOX_CHOICES:
            raise InputError(f"--prompt-boxes must be one of {', '.join(PROMPT_BOX_CHOICES)}, got {self.prompt_boxes!r}")
        if not 0.0 < self.mask_fraction <= 1.0:
            raise InputError(f"--mask-fraction must be in (0, 1], got {self.mask_fraction}")
        if not 0.0 <= self.stable_iou <= 1.0:
            raise InputError(f"--stable-iou must be in [0, 1], got {self.stable_iou}")
        if self.teacher_backend not in TEACHER_BACKEND_CHOICES:
            raise InputError(f"--teacher-backend must be one of {', '.join(TEACHER_BACKEND_CHOICES)}, "
                             f"got {self.teacher_backend!r}")
        if self.online_views:
            if self.cache_dir is not None or self.augment or self.aug_variants > 1 or self.finetune_decoder:
                raise InputError("--online-views draws its own fresh views: drop --cache-dir, --augment, "
                                 "--aug-variants and --finetune-decoder")
            if self.views_per_epoch < 1 or self.val_views < 0:
                raise InputError(f"--views-per-epoch must be >= 1 and --val-views >= 0, got "
                                 f"{self.views_per_epoch} / {self.val_views}")


@dataclass
class TeacherConfig:
    """What ``train-teacher`` trains.

    Attributes:
        encoder: image encoder name from ``medsam_lite.encoders.ENCODERS``.
        init: ``scratch`` (all random) or ``lite_medsam`` (prompt encoder + mask decoder copied
            from the real LiteMedSAM checkpoint; the encoder stays random).
    """

    encoder: str = "swin_t"
    init: str = "scratch"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PromptTrainConfig:
    """What ``train-prompts`` trains (optimisation settings: a :class:`TrainConfig`).

    Attributes:
        data: folder of :func:`~medsam_lite.distill.prompt_data.build_prompt_data` (built from ``shared``
            when it has no ``objects.npz`` yet).
        shared: the shared data folder (training-side sources only are read; needed to build ``data``).
        max_clicks: rounds per object drawn uniformly from 1..max_clicks.
        dense_prob: probability that a round gets the previous logits as its dense prompt.
        jitter_px / wide_prob / wide_frac: box jitter (:func:`jitter_box`).
        val_every: every ``val_every``-th slice's objects are the validation set (0: none).
    """

    data: str
    shared: str = ""
    max_clicks: int = 5
    dense_prob: float = 0.75
    jitter_px: int = 5
    wide_prob: float = 0.3
    wide_frac: float = 0.2
    val_every: int = 10

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
