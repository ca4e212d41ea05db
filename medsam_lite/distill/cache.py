"""On-disk cache of teacher image embeddings for distillation (built once, resumable, reused).

Layout of a cache folder::

    index.json                 identity (teacher spec + SHA-256 of its state, data folders and file
                               lists, variant count, augmentation seed / version) and ``complete``
    <split>_inputs.npy         (R, 256, 256, 3) uint8: the padded model-frame input, round(255 x [0, 1])
    <split>_embeddings.npy     (R, 256, 64, 64) float16: teacher(inputs / 255), fp32 teacher, no autocast
    <split>_done.npy           (R,) uint8: 1 once the row's input and embedding are on disk

``split`` is ``train`` (R = images x K variants, row = image x K + variant; variant 0 = plain,
variant v > 0 = :func:`medsam_lite.distill.augment.augment` with keys (aug_seed, image, v)) and ``val``
(variant 0 only). Rows are filled batch by batch: data arrays are flushed before their ``done``
flags, so a killed build continues where it stopped and never trusts a half-written row. A cache
whose index does not match the requested teacher / data / variants is refused (or removed and
rebuilt when asked). Row sizes: 2 MiB embedding + 192 KiB input.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medsam_lite.errors import InputError
from medsam_lite.io_utils import atomic_path
from medsam_lite.transforms import EMBEDDING_SIZE, IMAGE_SIZE

from .augment import AUG_VERSION, augment, to_model_input
from .data import ImageRef, load_model_frame

PathLike = Union[str, Path]
CACHE_VERSION = 1
INDEX = "index.json"
EMBED_DIM = 256
SPLITS = ("train", "val")


@dataclass
class CacheSpec:
    """What a cache holds: teacher, images per split, variants of training images."""

    teacher: str
    teacher_sha: str
    items: Dict[str, List[ImageRef]]
    variants: int = 1
    aug_seed: int = 0

    def rows(self, split: str) -> int:
        return len(self.items[split]) * (self.variants if split == "train" else 1)

    def variants_of(self, split: str) -> int:
        return self.variants if split == "train" else 1

    def identity(self) -> Dict[str, Any]:
        """The fields that must match for a cache to be reused."""
        return {
            "version": CACHE_VERSION,
            "teacher_sha256": self.teacher_sha,
            "variants": int(self.variants),
            "aug_seed": int(self.aug_seed) if self.variants > 1 else None,
            "aug_version": AUG_VERSION if self.variants > 1 else None,
            "data": {split: [ref.key() for ref in self.items[split]] for split in SPLITS},
        }

    def index(self, complete: bool) -> Dict[str, Any]:
        return {**self.identity(), "teacher": self.teacher,
                "rows": {split: self.rows(split) for split in SPLITS},
                "folders": sorted({ref.folder for refs in self.items.values() for ref in refs}),
                "complete": bool(complete), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _difference(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    """Human-readable first difference between two identities."""
    if old.get("version") != new["version"]:
        return f"cache format version {old.get('version')} (this code writes {new['version']})"
    if old.get("teacher_sha256") != new["teacher_sha256"]:
        return f"another teacher ({old.get('teacher', '?')}, state sha256 {str(old.get('teacher_sha256'))[:12]}...)"
    if old.get("variants") != new["variants"]:
        return f"{old.get('variants')} variant(s) per image, not {new['variants']}"
    if old.get("aug_seed") != new["aug_seed"] or old.get("aug_version") != new["aug_version"]:
        return "another augmentation seed / version"
    for split in SPLITS:
        a, b = old.get("data", {}).get(split, []), new["data"][split]
        if a != b:
            return f"other {split} images ({len(a)} cached vs {len(b)} requested)"
    return "a different identity"


def _paths(root: Path, split: str) -> Dict[str, Path]:
    return {k: root / f"{split}_{k}.npy" for k in ("inputs", "embeddings", "done")}


def _shapes(rows: int) -> Dict[str, tuple]:
    return {"inputs": (rows, IMAGE_SIZE, IMAGE_SIZE, 3),
            "embeddings": (rows, EMBED_DIM, EMBEDDING_SIZE, EMBEDDING_SIZE), "done": (rows,)}


_DTYPES = {"inputs": np.uint8, "embeddings": np.float16, "done": np.uint8}


def read_index(root: PathLike) -> Optional[Dict[str, Any]]:
    """The cache's index.json, or None when there is none."""
    path = Path(root) / INDEX
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable cache index ({type(exc).__name__}); pass --rebuild-cache", path) from exc


def remove_cache(root: Path) -> None:
    """Delete the files a cache consists of (nothing else in the folder)."""
    for split in SPLITS:
        for path in _paths(root, split).values():
            path.unlink(missing_ok=True)
    (root / INDEX).unlink(missing_ok=True)


def prepare(root: PathLike, spec: CacheSpec, rebuild: bool = False) -> Dict[str, Any]:
    """Check or create the cache folder for ``spec``; returns its (possibly new) index.

    A matching existing cache is kept (complete or partly built). A mismatching one raises
    InputError naming the difference unless ``rebuild`` (then its files are removed). A folder
    holding other ``.npy`` files but no index is refused.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError("cache path exists and is not a folder", root)
    root.mkdir(parents=True, exist_ok=True)
    from .loop import remove_stale_temps

    remove_stale_temps(root, ("index",))
    old = read_index(root)
    if old is not None and old.get("version") == CACHE_VERSION and all(
            old.get(k) == v for k, v in spec.identity().items()):
        return old
    if old is not None or any(_paths(root, s)[k].exists() for s in SPLITS for k in _DTYPES):
        if not rebuild:
            what = _difference(old, spec.identity()) if old is not None else "files without an index.json"
            raise InputError(f"teacher cache holds {what}; pass --rebuild-cache to replace it or use another "
                             "--cache-dir", root)
        remove_cache(root)
    index = spec.index(complete=False)
    _write_index(root, index)
    return index


def _write_index(root: Path, index: Dict[str, Any]) -> None:
    with atomic_path(root / INDEX) as tmp:
        tmp.write_text(json.dumps(index, indent=1) + "\n")


def _open(root: Path, split: str, rows: int, mode: str) -> Dict[str, np.memmap]:
    arrays = {}
    for key, path in _paths(root, split).items():
        shape = _shapes(rows)[key]
        if mode == "r+" and not path.exists():
            arrays[key] = np.lib.format.open_memmap(path, mode="w+", dtype=_DTYPES[key], shape=shape)
            continue
        try:
            array = np.load(path, mmap_mode=mode)
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable cache array ({type(exc).__name__}); pass --rebuild-cache", path) from exc
        if array.shape != shape or array.dtype != _DTYPES[key]:
            raise InputError(f"cache array has shape {array.shape} {array.dtype}, expected {shape}; "
                             "pass --rebuild-cache", path)
        arrays[key] = array
    return arrays


class _BuildInputs(Dataset):
    """Rows still to build -> (row, (256, 256, 3) uint8 padded model-frame input)."""

    def __init__(self, refs: Sequence[ImageRef], variants: int, aug_seed: int, rows: np.ndarray) -> None:
        self.refs, self.variants, self.aug_seed, self.rows = list(refs), int(variants), int(aug_seed), rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> Dict[str, Any]:
        row = int(self.rows[j])
        image_index, variant = divmod(row, self.variants)
        image = load_model_frame(self.refs[image_index])
        if variant:
            image = augment(image, self.aug_seed, image_index, variant)
        return {"row": row, "input": torch.from_numpy(to_model_input(image))}


def embed_fp32(teacher: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's embeddings of (B, 3, 256, 256) float [0, 1] model-frame ``images`` ->
    (B, 256, 64, 64) float32 on their device: no grad, never autocast (a bf16 teacher drifts by a few
    percent). The one teacher forward of distillation (cache build and online targets)."""
    with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
        return teacher(images).float()


def teacher_embed(teacher: nn.Module, inputs_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """fp32 teacher image embeddings of (B, 256, 256, 3) uint8 inputs -> (B, 256, 64, 64) float32 (on device)
    (:func:`embed_fp32` of inputs / 255)."""
    images = inputs_u8.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return embed_fp32(teacher, images.contiguous())


def build(root: PathLike, spec: CacheSpec, teacher_encoder: nn.Module, device: torch.device,
          batch_size: int = 8, workers: int = 0, progress: bool = True,
          on_batch: Optional[Callable[[int], None]] = None) -> Dict[str, int]:
    """Fill every row of the cache not yet done; returns ``{split: rows computed now}``.

    ``teacher_encoder``: the teacher's image encoder (eval, fp32) on ``device``. ``on_batch`` is
    called with the number of rows computed so far in this call, after each batch is on disk.
    """
    root = Path(root)
    index = read_index(root)
    if index is None or any(index.get(k) != v for k, v in spec.identity().items()):
        raise InputError("cache index missing or not matching (call prepare first)", root)
    computed = {}
    needed = 0
    for split in SPLITS:  # bytes still to allocate (arrays are sparse until written)
        for key, path in _paths(root, split).items():
            size = int(np.prod(_shapes(spec.rows(split))[key])) * np.dtype(_DTYPES[key]).itemsize
            needed += max(0, size - (path.stat().st_blocks * 512 if path.exists() else 0))
    free = shutil.disk_usage(root).free
    if needed > free:
        raise InputError(f"not enough disk space for the teacher cache: about {needed / 2 ** 30:.1f} GiB more "
                         f"needed, {free / 2 ** 30:.1f} GiB free", root)
    opened = {split: _open(root, split, spec.rows(split), "r+") for split in SPLITS}
    todo_total = sum(int((opened[split]["done"] == 0).sum()) for split in SPLITS)
    done_now = 0
    from tqdm import tqdm

    bar = tqdm(total=todo_total, desc="teacher cache", unit="img", disable=not progress or todo_total == 0)
    try:
        for split in SPLITS:
            arrays = opened[split]
            todo = np.flatnonzero(np.asarray(arrays["done"]) == 0)
            computed[split] = int(todo.size)
            if not todo.size:
                continue
            loader = DataLoader(_BuildInputs(spec.items[split], spec.variants_of(split), spec.aug_seed, todo),
                                batch_size=batch_size, shuffle=False, num_workers=workers)
            for batch in loader:
                rows = batch["row"].numpy()
                embeddings = teacher_embed(teacher_encoder, batch["input"], device)
                arrays["inputs"][rows] = batch["input"].numpy()
                arrays["embeddings"][rows] = embeddings.half().cpu().numpy()
                arrays["inputs"].flush()
                arrays["embeddings"].flush()
                arrays["done"][rows] = 1
                arrays["done"].flush()
                done_now += len(rows)
                bar.update(len(rows))
                if on_batch is not None:
                    on_batch(done_now)
    finally:
        bar.close()
    _write_index(root, {**spec.index(complete=True)})
    return computed


def is_complete(root: PathLike, spec: CacheSpec) -> bool:
    """True when the cache's index matches ``spec`` and says complete."""
    index = read_index(root)
    return bool(index and index.get("complete") and all(index.get(k) == v for k, v in spec.identity().items()))


class CachedEmbeddings(Dataset):
    """Training / validation items read from a complete cache.

    Each epoch (:meth:`set_epoch`) draws one variant per image from ``(seed, epoch)``; variant 0
    only for ``val`` or K = 1. Items: ``{"image": (3, 256, 256) uint8 (divide by 255 for the model
    input), "target": (256, 64, 64) float16 teacher embedding, "index": image index}``.
    """

    def __init__(self, root: PathLike, spec: CacheSpec, split: str, seed: int = 0) -> None:
        self.root, self.split, self.seed = Path(root), split, int(seed)
        self.n = len(spec.items[split])
        self.variants = spec.variants_of(split)
        self.total_rows = spec.rows(split)
        self._arrays: Optional[Dict[str, np.ndarray]] = None
        self._choice = np.zeros(self.n, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        if self.variants > 1:
            self._choice = np.random.default_rng([self.seed, int(epoch), 7]).integers(self.variants, size=self.n)

    def _ensure(self) -> Dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = _open(self.root, self.split, self.total_rows, "r")
        return self._arrays

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Dict[str, Any]:
        arrays = self._ensure()
        row = index * self.variants + int(self._choice[index])
        return {"image": torch.from_numpy(np.ascontiguousarray(arrays["inputs"][row].transpose(2, 0, 1))),
                "target": torch.from_numpy(np.array(arrays["embeddings"][row])), "index": index}

    def __getstate__(self) -> Dict[str, Any]:  # workers reopen the memmaps themselves
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state
