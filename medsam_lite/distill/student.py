"""``distill``: train a student image encoder to reproduce a teacher's image embeddings.

Loss: MSE between the teacher's and the student's (B, 256, 64, 64) embeddings of the same
(B, 3, 256, 256) model-frame input in [0, 1]. The teacher (any ``load_model`` spec: ``lite_medsam``,
a checkpoint path, train-teacher's ``best.pth``) runs frozen, in eval mode, in fp32 and never under
autocast; only the student is autocast. Data are images only (``--data`` prep folders). Optionally
(``mask_loss_weight`` > 0) a mask-level term is added (:mod:`medsam_lite.distill.mask_kd`): the frozen decoder's
masks from the student's and the teacher's embeddings for the same random boxes are pulled together.

With ``online_views`` (:mod:`medsam_lite.distill.views`) the data are fresh views drawn every step from
one views pack or the shared data folder's training sources (:class:`FreshViews`), and the teacher
encoder embeds each of them online, through OpenVINO fp32 on a CPU device when installed
(``teacher_backend="auto"``), else through torch; ``prompt_boxes="teacher"`` takes the mask term's
boxes from the teacher's own stable masks (:mod:`medsam_lite.distill.mask_kd`).

Otherwise teacher targets come either from the on-disk cache (:mod:`medsam_lite.distill.cache`; K cached variants per
image, one drawn per image and epoch) or online (``augment``: the augmentation of
:mod:`medsam_lite.distill.augment` keyed by (seed, epoch, image), so it is also deterministic).

Result: ``student.pth`` in the run folder, a self-describing checkpoint (encoder = the student
name) holding the student encoder's best weights (lowest validation loss; unfused: RepViT's
BatchNorm / branches are kept as trained) and the teacher's prompt encoder and mask decoder copied
unchanged, unless ``finetune_decoder`` then trains the mask decoder on labelled slices with the
student encoder frozen (sub-run folder ``finetune/``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medsam_lite.checkpoint import load_model, save_checkpoint, state_sha256
from medsam_lite.encoders import build_encoder
from medsam_lite.errors import InputError
from medsam_lite.model import MedSAMLite
from medsam_lite.prep.dataset import MODEL_FRAME
from medsam_lite.transforms import pad_to_square

from . import cache as cache_mod
from .augment import augment as augment_image
from .data import ImageRef, image_lists, load_model_frame, preprocessing_record, slice_datasets
from .loop import CheckpointHook, FitResult, Task, check_run_folder, fit
from .mask_kd import MaskDistillLoss
from .options import DistillConfig, TrainConfig
from .runtime import Runtime, runtime_scope
from .state import load_weights_only, preserved_rng_state
from .teacher import check_encoder, segmentation_task
from .views import VIEWS_VERSION

PathLike = Union[str, Path]
STUDENT_FILE = "student.pth"
ONLINE_AUG_SALT = 31337
VIEW_SALT, VAL_VIEW_SALT = 271828, 314159
_VIEW_SAMPLERS: Dict[str, Any] = {}  # views path -> ViewSampler: every source is loaded once per process


def view_sampler(path: PathLike) -> Any:
    """The :class:`~medsam_lite.distill.views.ViewSampler` of a views pack / shared data folder (cached per process)."""
    from .views import ViewSampler, open_sources

    key = str(Path(path).resolve())
    if key not in _VIEW_SAMPLERS:
        _VIEW_SAMPLERS[key] = ViewSampler(open_sources(key))
    return _VIEW_SAMPLERS[key]


def view_key(*keys: int) -> int:
    """A 63-bit integer from integer keys (per-view seed of the mask term's candidate boxes)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class FreshViews(Dataset):
    """``n`` fresh views per epoch: item ``i`` of epoch ``e`` is ``{"image": (3, 256, 256) float32 [0, 1]
    padded model frame, "index": i, "key": int}``, drawn by :meth:`ViewSampler.view` keyed by
    (seed, salt, e, i), so it depends on nothing else (not the process, batch or worker). ``fixed``:
    the epoch is ignored (validation: the same views every epoch)."""

    def __init__(self, path: PathLike, n: int, seed: int = 0, salt: int = VIEW_SALT, fixed: bool = False) -> None:
        self.path, self.n, self.seed, self.salt, self.fixed, self.epoch = str(path), int(n), int(seed), int(salt), fixed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Dict[str, Any]:
        keys = (self.seed, self.salt, 0 if self.fixed else self.epoch, int(index))
        image = view_sampler(self.path).view(*keys)
        return {"image": torch.from_numpy(np.ascontiguousarray(image)), "index": int(index), "key": view_key(*keys)}


class BackendTeacher:
    """A teacher image encoder run through an inference backend: ``(B, 3, 256, 256) -> (B, 256, 64, 64)``
    float32 on the input's device (:func:`medsam_lite.backends.make_backend`)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.backend.encode(images.detach().float().cpu().contiguous()).to(images.device)


def teacher_encoder_for(teacher_model: MedSAMLite, backend: str, rt: Runtime) -> Tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(encoder callable, backend name): ``auto`` = OpenVINO fp32 on a CPU device when installed, else torch."""
    from medsam_lite.backends import installed, make_backend

    if backend == "openvino" and rt.device.type != "cpu":
        raise InputError("--teacher-backend openvino runs on the CPU; use torch (or auto) with --device cuda")
    if backend == "auto":
        backend = "openvino" if rt.device.type == "cpu" and installed("openvino") else "torch"
    if backend == "openvino":
        return BackendTeacher(make_backend(teacher_model, "openvino", "fp32")), "openvino fp32"
    return teacher_model.image_encoder.to(rt.device), "torch fp32"


def time_teacher(encoder: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, repeats: int = 2) -> float:
    """Milliseconds per image of ``encoder`` on ``images`` (B, 3, 256, 256): best of ``repeats`` after one warm-up."""
    with torch.no_grad():
        encoder(images[:1])
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            encoder(images)
            best = min(best, time.perf_counter() - t0)
    return 1000.0 * best / images.shape[0]


class OnlineImages(Dataset):
    """Images for online distillation: ``{"image": (3, 256, 256) float32 [0, 1] padded model frame,
    "index": int}``; with ``augment`` the image is :func:`medsam_lite.distill.augment.augment` keyed by
    (seed, epoch, index) (set the epoch with :meth:`set_epoch`)."""

    def __init__(self, refs: Sequence[ImageRef], augment: bool = False, seed: int = 0) -> None:
        self.refs, self.augment, self.seed, self.epoch = list(refs), bool(augment), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image = load_model_frame(self.refs[index])
        if self.augment:
            image = augment_image(image, self.seed, ONLINE_AUG_SALT, self.epoch, index)
        tensor = torch.from_numpy(np.ascontiguousarray(pad_to_square(image).transpose(2, 0, 1), dtype=np.float32))
        return {"image": tensor, "index": index}


def _distill_loss(teacher_encoder: Optional[nn.Module] = None, mask_term: Optional[MaskDistillLoss] = None
                  ) -> Callable[[Callable[..., Any], Dict[str, Any], Runtime], torch.Tensor]:
    """Loss of a batch: MSE(student embedding, teacher embedding) [+ ``mask_term``].

    Without ``teacher_encoder`` the batch holds the cache's uint8 inputs and fp16 teacher embeddings
    (``target``); with it the batch holds [0, 1] images and the frozen fp32 teacher runs online.
    """

    def loss(forward: Callable[..., Any], batch: Dict[str, Any], rt: Runtime) -> torch.Tensor:
        if teacher_encoder is None:
            images = rt.to_device(batch["image"]).float().div_(255.0)
            target = rt.to_device(batch["target"]).float()
        else:
            images = rt.to_device(batch["image"])
            with torch.no_grad(), torch.autocast(device_type=rt.device.type, enabled=False):
                target = teacher_encoder(images).float()
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


def _wait_for_cache(root: Path, spec: cache_mod.CacheSpec, poll_s: float = 1.0) -> None:
    """Non-zero ranks: wait (polling, no collective timeout) until rank 0 has completed the cache."""
    while not cache_mod.is_complete(root, spec):
        time.sleep(poll_s)


@preserved_rng_state()  # loading / building models draws from the global RNGs: give the caller its streams back
def distill(data: Sequence[PathLike], out_dir: PathLike, options: Optional[DistillConfig] = None,
            config: Optional[TrainConfig] = None, *, on_checkpoint: Optional[CheckpointHook] = None,
            on_cache_batch: Optional[Callable[[int], None]] = None) -> DistillResult:
    """Distil ``options.teacher``'s image encoder into registry encoder ``options.student`` (module docstring).

    Args:
        data: prep output folders (or folders of ``imgs/*.npy``).
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
    views_path: Optional[Path] = None
    if opt.online_views:
        if len(data) != 1:
            raise InputError("--online-views takes one --data folder: a views pack or the shared data folder")
        views_path = Path(data[0]).expanduser().resolve()
        train_refs, val_refs = [], []
        info: Any = {"views": views_path.as_posix(), **view_sampler(views_path).describe()}
    else:
        train_refs, val_refs, info = image_lists(data, val_fraction=opt.val_fraction, seed=0, val_split=opt.val_split)
    if opt.finetune_decoder:
        slice_datasets(data)  # fail early when the folders have no labelled slices
    out_dir = Path(out_dir)
    if not opt.cache_only:
        check_run_folder(out_dir, cfg.resume)

    with runtime_scope(cfg.device, cfg.amp, cfg.channels_last) as rt:
        teacher_model = load_teacher(opt.teacher)
        teacher_sha = state_sha256(teacher_model)
        cache_path = Path(opt.cache_dir).resolve() if opt.cache_dir is not None else None
        spec = None
        if cache_path is not None:
            spec = cache_mod.CacheSpec(teacher=opt.teacher, teacher_sha=teacher_sha,
                                       items={"train": train_refs, "val": val_refs}, variants=opt.aug_variants,
                                       aug_seed=opt.cache_seed)
            _ensure_cache(cache_path, spec, teacher_model, opt, cfg, rt, on_cache_batch)
            if opt.cache_only:
                return DistillResult(run_dir=out_dir, student=None, cache_dir=cache_path, fit=None)

        model = _student_model(opt, teacher_model, cfg.seed)
        mask_term = (MaskDistillLoss(model, opt.mask_boxes, opt.mask_loss_weight, opt.prompt_boxes, opt.stable_iou,
                                     opt.mask_fraction)
                     if opt.mask_loss_weight > 0 else None)
        describe: Dict[str, Any] = {"data": info, "teacher": opt.teacher, "teacher_sha256": teacher_sha,
                                    "student": opt.student, "train_images": len(train_refs),
                                    "val_images": len(val_refs), "cache_dir": str(cache_path) if cache_path else None,
                                    "aug_variants": opt.aug_variants, "cache_seed": opt.cache_seed,
                                    "augment": opt.augment, "mask_loss_weight": opt.mask_loss_weight,
                                    "mask_boxes": opt.mask_boxes if mask_term else None,
                                    "prompt_boxes": opt.prompt_boxes if mask_term else None, "options": opt.to_dict()}
        if opt.init_student is not None:
            describe["init_student"] = opt.init_student
        if spec is not None:
            del teacher_model  # only the decoder copies are needed from here on
            train_set: Dataset = cache_mod.CachedEmbeddings(cache_path, spec, "train", seed=cfg.seed)
            val_set: Optional[Dataset] = (cache_mod.CachedEmbeddings(cache_path, spec, "val", seed=cfg.seed)
                                          if val_refs else None)
            loss_fn = _distill_loss(mask_term=mask_term)
        elif views_path is not None:
            teacher_encoder, backend_name = teacher_encoder_for(teacher_model, opt.teacher_backend, rt)
            train_set = FreshViews(views_path, opt.views_per_epoch, seed=cfg.seed)
            val_set = FreshViews(views_path, opt.val_views, seed=cfg.seed, salt=VAL_VIEW_SALT, fixed=True) \
                if opt.val_views else None
            probe = torch.stack([FreshViews(views_path, 4, seed=cfg.seed, salt=VAL_VIEW_SALT + 1, fixed=True)[i]["image"]
                                 for i in range(4)]).to(rt.device)
            describe.update(train_images=None, val_images=opt.val_views, views_per_epoch=opt.views_per_epoch,
                            teacher_backend=backend_name,
                            teacher_ms_per_image=round(time_teacher(teacher_encoder, probe), 2))
            loss_fn = _distill_loss(teacher_encoder, mask_term)
        else:
            teacher_encoder = teacher_model.image_encoder.to(rt.device)
            train_set = OnlineImages(train_refs, augment=opt.augment, seed=cfg.seed)
            val_set = OnlineImages(val_refs) if val_refs else None
            loss_fn = _distill_loss(teacher_encoder, mask_term)
        record = preprocessing_record(data) if views_path is None else \
            {"normalization": {"views": "distill.views v%d (CT windows / percentiles, jittered)" % VIEWS_VERSION},
             "model_frame": MODEL_FRAME}
        ckpt_config = {"task": "distill", "student": opt.student, "teacher": opt.teacher,
                       "teacher_sha256": teacher_sha, "mask_loss_weight": opt.mask_loss_weight,
                       "prompt_boxes": opt.prompt_boxes, "online_views": opt.online_views, **record}
        task = Task(name="distill", model=model, encoder=opt.student, trainable=model.image_encoder,
                    train_set=train_set, val_set=val_set, loss=loss_fn, checkpoint_config=ckpt_config,
                    describe=describe, frozen=(model.prompt_encoder, model.mask_decoder),
                    set_epoch=train_set.set_epoch)
        result = fit(task, cfg, out_dir, rt, on_checkpoint=on_checkpoint)
        _load_best(model, result)

        finetuned = None
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
    return DistillResult(run_dir=out_dir, student=student_path, cache_dir=cache_path, fit=result, finetune=finetuned)


def _ensure_cache(root: Path, spec: cache_mod.CacheSpec, teacher_model: MedSAMLite, opt: DistillConfig,
                  cfg: TrainConfig, rt: Runtime, on_batch: Optional[Callable[[int], None]]) -> None:
    """Rank 0 checks / builds the cache (moving the teacher encoder to the device meanwhile); the others wait."""
    if rt.is_main:
        cache_mod.prepare(root, spec, rebuild=opt.rebuild_cache)
        if not cache_mod.is_complete(root, spec):
            encoder = teacher_model.image_encoder.to(rt.device)
            cache_mod.build(root, spec, encoder, rt.device, batch_size=opt.cache_batch_size or cfg.batch_size,
                            workers=cfg.workers, progress=cfg.progress, on_batch=on_batch)
            teacher_model.to("cpu")
    else:
        _wait_for_cache(root, spec)
    rt.barrier()


def _student_model(opt: DistillConfig, teacher_model: MedSAMLite, seed: int) -> MedSAMLite:
    """Student encoder (initialised under ``seed`` in a forked torch RNG, or from ``init_student``) + copies of
    the teacher's prompt encoder and mask decoder (frozen)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
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
    ft_cfg = TrainConfig(**{**cfg.to_dict(), "epochs": opt.finetune_epochs, "lr": opt.finetune_lr})
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


__all__: List[str] = ["distill", "DistillConfig", "DistillResult", "OnlineImages", "FreshViews", "BackendTeacher",
                      "teacher_encoder_for", "time_teacher", "view_sampler", "init_encoder", "load_teacher"]
