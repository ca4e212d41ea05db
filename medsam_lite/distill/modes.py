"""Distillation data modes: where ``distill``'s images and teacher targets come from.

One object per mode, chosen once per run by :func:`data_mode` from the
:class:`~medsam_lite.distill.options.DistillConfig`:

* :class:`CachedEmbeddingsMode` (``cache_dir``): images of data folders with their teacher
  embeddings read from the on-disk cache (:mod:`medsam_lite.distill.cache`; K cached variants per
  image, one drawn per image and epoch); the teacher runs only while the cache is built.
* :class:`OnlineTeacherMode` (the default): images of data folders (``augment``: the augmentation of
  :mod:`medsam_lite.distill.augment` keyed by (seed, epoch, image)); the frozen fp32 torch teacher
  embeds every batch.
* :class:`FreshViewsMode` (``online_views``): fresh views of one views pack or the shared data
  folder, new every epoch (:class:`FreshViews`); the teacher embeds every batch through an
  inference backend (:func:`teacher_encoder_for`: OpenVINO fp32 on a CPU device when installed).

A mode lists its images when it is made (bad input fails before any model loads),
:meth:`DataMode.prepare` does what must happen before the student exists (the cache mode builds or
checks its cache), and :meth:`DataMode.training_data` gives the :class:`TrainingData` that
:func:`medsam_lite.distill.student.distill` turns into a :class:`~medsam_lite.distill.loop.Task`:
datasets whose ``set_epoch`` is the trainer's per-epoch hook, and a ``targets`` function giving
each batch's model-frame images and teacher embeddings.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from medsam_lite.errors import InputError
from medsam_lite.model import MedSAMLite
from medsam_lite.prep.dataset import MODEL_FRAME, model_frame_tensor

from . import cache as cache_mod
from .augment import augment as augment_image
from .data import ImageRef, image_lists, load_model_frame, preprocessing_record
from .options import DistillConfig, TrainConfig
from .runtime import Runtime
from .views import VIEWS_VERSION

PathLike = Union[str, Path]
ONLINE_AUG_SALT = 31337
VIEW_SALT, VAL_VIEW_SALT = 271828, 314159
_VIEW_SAMPLERS: Dict[str, Any] = {}  # views path -> ViewSampler: every source is loaded once per process

Targets = Callable[[Dict[str, Any], Runtime], Tuple[torch.Tensor, torch.Tensor]]
"""``targets(batch, runtime) -> (images, teacher embeddings)``: (B, 3, 256, 256) float32 [0, 1] model-frame
images and (B, 256, 64, 64) float32 fp32-teacher embeddings of them, both on the runtime's device."""


# ------------------------------------------------------------------ datasets
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
        return {"image": model_frame_tensor(image), "index": index}


# ------------------------------------------------------------------ teachers and targets
class BackendTeacher:
    """A teacher image encoder run through an inference backend: ``(B, 3, 256, 256) -> (B, 256, 64, 64)``
    float32 on the input's device (:func:`medsam_lite.backends.make_backend`)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.backend.encode(images.detach().float().cpu().contiguous()).to(images.device)


def teacher_encoder_for(teacher_model: MedSAMLite, backend: str, rt: Runtime) -> Tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(encoder callable, ``"BACKEND PRECISION"`` label for the run log) of the fp32 teacher. ``auto`` = the preferred installed
    fp32 backend on a CPU device (:func:`medsam_lite.backends.resolve`: OpenVINO when installed), the eager
    reference on any other device (a converted runtime runs on the CPU only)."""
    from medsam_lite.backends import REFERENCE, create_backend, is_reference, resolve

    on_cpu = rt.device.type == "cpu"
    if not on_cpu and not is_reference(backend, "fp32"):
        raise InputError(f"--teacher-backend {backend} runs on the CPU; use torch (or auto) with --device "
                         f"{rt.device.type}")
    name, precision = resolve(backend, "fp32") if on_cpu else REFERENCE
    if (name, precision) == REFERENCE:
        return teacher_model.image_encoder.to(rt.device), " ".join(REFERENCE)
    return BackendTeacher(create_backend(teacher_model, name, precision)), f"{name} {precision}"


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


def cached_targets(batch: Dict[str, Any], rt: Runtime) -> Tuple[torch.Tensor, torch.Tensor]:
    """:data:`Targets` of a :class:`~medsam_lite.distill.cache.CachedEmbeddings` batch: its uint8 inputs / 255
    and its float16 teacher embeddings, as float32."""
    images = rt.to_device(batch["image"]).float().div_(255.0)
    return images, rt.to_device(batch["target"]).float()


class OnlineTargets:
    """:data:`Targets` of a batch of [0, 1] images: the frozen teacher ``encoder`` embeds them now
    (:func:`medsam_lite.distill.cache.embed_fp32`: fp32, no grad, never autocast)."""

    def __init__(self, encoder: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.encoder = encoder

    def __call__(self, batch: Dict[str, Any], rt: Runtime) -> Tuple[torch.Tensor, torch.Tensor]:
        images = rt.to_device(batch["image"])
        return images, cache_mod.embed_fp32(self.encoder, images)


# ------------------------------------------------------------------ the modes
@dataclass
class TrainingData:
    """What a mode gives the trainer: datasets (``train_set.set_epoch`` is the per-epoch hook), the batch
    :data:`Targets`, and facts for run.json beyond those :func:`~medsam_lite.distill.student.distill` records."""

    train_set: Dataset
    val_set: Optional[Dataset]
    targets: Targets
    describe: Dict[str, Any] = field(default_factory=dict)


class DataMode:
    """One distillation data mode (module docstring). Attributes: ``info`` (run.json ``data``),
    ``train_images`` / ``val_images`` (counts for run.json), ``cache_dir`` (None without a cache)."""

    cache_dir: Optional[Path] = None

    def __init__(self, opt: DistillConfig, data: Sequence[PathLike]) -> None:
        self.opt, self.data = opt, list(data)
        self.info: Any = None
        self.train_images: Optional[int] = 0
        self.val_images: Optional[int] = 0

    def prepare(self, teacher: MedSAMLite, teacher_sha: str, cfg: TrainConfig, rt: Runtime,
                on_batch: Optional[Callable[[int], None]] = None) -> None:
        """Work that needs the teacher before the student exists (none by default)."""

    def training_data(self, teacher: MedSAMLite, cfg: TrainConfig, rt: Runtime) -> TrainingData:
        """Datasets and targets of the run (``teacher``: the frozen teacher model, on the CPU)."""
        raise NotImplementedError

    def record(self) -> Dict[str, Any]:
        """How the images were normalised and the model-frame contract, for the checkpoints' ``config``."""
        return preprocessing_record(self.data)


class _FolderMode(DataMode):
    """Modes reading the images of data folders: training / validation lists by :func:`image_lists`."""

    def __init__(self, opt: DistillConfig, data: Sequence[PathLike]) -> None:
        super().__init__(opt, data)
        self.train_refs, self.val_refs, self.info = image_lists(data, val_fraction=opt.val_fraction, seed=0,
                                                                val_split=opt.val_split)
        self.train_images, self.val_images = len(self.train_refs), len(self.val_refs)


class CachedEmbeddingsMode(_FolderMode):
    """Folder images with cached teacher embeddings (``cache_dir``); built (resumably) by rank 0 in :meth:`prepare`."""

    def __init__(self, opt: DistillConfig, data: Sequence[PathLike]) -> None:
        super().__init__(opt, data)
        self.cache_dir = Path(opt.cache_dir).resolve()
        self.spec: Optional[cache_mod.CacheSpec] = None

    def prepare(self, teacher: MedSAMLite, teacher_sha: str, cfg: TrainConfig, rt: Runtime,
                on_batch: Optional[Callable[[int], None]] = None) -> None:
        """Rank 0 checks / builds the cache (the teacher encoder on the device meanwhile); the others wait."""
        opt, root = self.opt, self.cache_dir
        self.spec = spec = cache_mod.CacheSpec(teacher=opt.teacher, teacher_sha=teacher_sha,
                                               items={"train": self.train_refs, "val": self.val_refs},
                                               variants=opt.aug_variants, aug_seed=opt.cache_seed)
        if rt.is_main:
            cache_mod.prepare(root, spec, rebuild=opt.rebuild_cache)
            if not cache_mod.is_complete(root, spec):
                encoder = teacher.image_encoder.to(rt.device)
                cache_mod.build(root, spec, encoder, rt.device, batch_size=opt.cache_batch_size or cfg.batch_size,
                                workers=cfg.workers, progress=cfg.progress, on_batch=on_batch)
                teacher.to("cpu")
        else:
            _wait_for_cache(root, spec)
        rt.barrier()

    def training_data(self, teacher: MedSAMLite, cfg: TrainConfig, rt: Runtime) -> TrainingData:
        assert self.spec is not None, "prepare() builds the cache first"
        val = cache_mod.CachedEmbeddings(self.cache_dir, self.spec, "val", seed=cfg.seed) if self.val_refs else None
        return TrainingData(cache_mod.CachedEmbeddings(self.cache_dir, self.spec, "train", seed=cfg.seed), val,
                            cached_targets)


class OnlineTeacherMode(_FolderMode):
    """Folder images (optionally augmented online); the torch teacher embeds every batch."""

    def training_data(self, teacher: MedSAMLite, cfg: TrainConfig, rt: Runtime) -> TrainingData:
        encoder = teacher.image_encoder.to(rt.device)
        val = OnlineImages(self.val_refs) if self.val_refs else None
        return TrainingData(OnlineImages(self.train_refs, augment=self.opt.augment, seed=cfg.seed), val,
                            OnlineTargets(encoder))


class FreshViewsMode(DataMode):
    """Fresh views of ONE views pack or shared data folder; the teacher embeds every batch through a backend."""

    def __init__(self, opt: DistillConfig, data: Sequence[PathLike]) -> None:
        super().__init__(opt, data)
        if len(self.data) != 1:
            raise InputError("--online-views takes one --data folder: a views pack or the shared data folder")
        self.path = Path(self.data[0]).expanduser().resolve()
        self.info = {"views": self.path.as_posix(), **view_sampler(self.path).describe()}
        self.train_images, self.val_images = None, opt.val_views

    def training_data(self, teacher: MedSAMLite, cfg: TrainConfig, rt: Runtime) -> TrainingData:
        opt = self.opt
        encoder, backend_name = teacher_encoder_for(teacher, opt.teacher_backend, rt)
        train = FreshViews(self.path, opt.views_per_epoch, seed=cfg.seed)
        val = FreshViews(self.path, opt.val_views, seed=cfg.seed, salt=VAL_VIEW_SALT, fixed=True) \
            if opt.val_views else None
        probe_views = FreshViews(self.path, 4, seed=cfg.seed, salt=VAL_VIEW_SALT + 1, fixed=True)
        probe = torch.stack([probe_views[i]["image"] for i in range(4)]).to(rt.device)
        describe = {"views_per_epoch": opt.views_per_epoch, "teacher_backend": backend_name,
                    "teacher_ms_per_image": round(time_teacher(encoder, probe), 2)}
        return TrainingData(train, val, OnlineTargets(encoder), describe)

    def record(self) -> Dict[str, Any]:
        return {"normalization": {"views": "distill.views v%d (CT windows / percentiles, jittered)" % VIEWS_VERSION},
                "model_frame": MODEL_FRAME}


def data_mode(opt: DistillConfig, data: Sequence[PathLike]) -> DataMode:
    """The mode of ``opt`` (``online_views`` -> fresh views, ``cache_dir`` -> cached embeddings, else the
    online teacher on folder images), its images listed (InputError on bad data folders)."""
    if opt.online_views:
        return FreshViewsMode(opt, data)
    if opt.cache_dir is not None:
        return CachedEmbeddingsMode(opt, data)
    return OnlineTeacherMode(opt, data)


def _wait_for_cache(root: Path, spec: cache_mod.CacheSpec, poll_s: float = 1.0) -> None:
    """Non-zero ranks: wait (polling, no collective timeout) until rank 0 has completed the cache."""
    while not cache_mod.is_complete(root, spec):
        time.sleep(poll_s)


__all__: List[str] = ["DataMode", "CachedEmbeddingsMode", "OnlineTeacherMode", "FreshViewsMode", "TrainingData",
                      "data_mode", "Targets", "cached_targets", "OnlineTargets", "FreshViews", "OnlineImages",
                      "BackendTeacher", "teacher_encoder_for", "time_teacher", "view_sampler", "view_key"]
