"""Training data from prep output folders (``imgs/``, ``gts/``, ``manifest.csv``; see ``medsam_lite.prep.prep``).

* :func:`slice_datasets`: labelled slices for box-prompted training (``SliceDataset`` per folder,
  split ``train`` / ``val`` from each manifest).
* :func:`image_lists`: image files for distillation (labels not needed). Per folder: the manifest's
  ``train`` / ``val`` rows when it has a ``val`` split, else ``val_fraction`` of the folder's cases
  (manifest ``dataset`` + ``case``: all slices of one volume go to the same side, so validation
  does not leak) or, with ``val_split="image"`` or without a ``case`` column, of its images, drawn
  with a fixed seed; folders without a manifest are read as ``imgs/*.npy`` (or ``*.npy``).
* :class:`ImageRef`, :func:`load_model_frame`: one image file and its (h, w, 3) model-frame version.
* :func:`preprocessing_record`: the intensity normalisation of the folders' data (manifest
  ``normalization`` column, per modality) and the model-frame contract, stored in checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from medsam_lite.prep.dataset import MODEL_FRAME, ImageOnlyDataset, SliceDataset, image_to_model_frame, read_manifest
from medsam_lite.errors import InputError

from .options import VAL_SPLIT_CHOICES

PathLike = Union[str, Path]
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class ImageRef:
    """One image file of a data folder: ``folder / image_subdir / file``."""

    folder: str
    image_dir: str
    file: str

    @property
    def path(self) -> Path:
        return Path(self.image_dir) / self.file

    def key(self) -> List[str]:
        """Identity used by the teacher cache index: [folder, file]."""
        return [self.folder, self.file]


def check_folders(folders: Sequence[PathLike], need_manifest: bool = False) -> List[Path]:
    """Resolved data folders, sorted; a missing / non-folder path (or a missing manifest) raises InputError."""
    if not folders:
        raise InputError("give at least one data folder (--data DIR ...)")
    out = []
    for folder in folders:
        path = Path(folder).expanduser()
        if not path.exists():
            raise InputError("data folder not found", path)
        if not path.is_dir():
            raise InputError("not a folder (expected prep output with imgs/, gts/, manifest.csv)", path)
        if need_manifest and not (path / MANIFEST).is_file():
            raise InputError("no manifest.csv: not a prep output folder (run medsam-lite prep first)", path)
        out.append(path.resolve())
    if len(set(out)) != len(out):
        raise InputError("the same data folder is given twice", out[0])
    return sorted(out)  # the order on the command line does not change the data (or a cache's identity)


def _concat(parts: List[Dataset]) -> Optional[Dataset]:
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def slice_datasets(folders: Sequence[PathLike]) -> Tuple[Dataset, Optional[Dataset], List[Dict[str, Any]]]:
    """Labelled training / validation slices of prep folders.

    Returns:
        train: items ``{"image": (3, 256, 256) float32 [0, 1], "mask": (1, 256, 256) float32,
            "box": (4,) float32 XYXY model frame, "name": str}`` (flips + box jitter).
        val: the same without augmentation, or None when no folder has ``val`` rows.
        info: per folder ``{"folder", "train", "val"}`` counts (for run.json).
    """
    paths = check_folders(folders, need_manifest=True)
    train_parts, val_parts, info = [], [], []
    for path in paths:
        rows = read_manifest(path / MANIFEST)
        if not rows:
            raise InputError("manifest.csv has no rows", path / MANIFEST)
        if "split" not in rows[0]:
            raise InputError("manifest.csv has no 'split' column", path / MANIFEST)
        train = SliceDataset(path, split="train")
        val = SliceDataset(path, split="val")
        train_parts.append(train)
        val_parts.append(val)
        info.append({"folder": str(path), "train": len(train), "val": len(val)})
    train_set = _concat(train_parts)
    if train_set is None:
        raise InputError("no labelled training slices (split 'train') in manifest.csv", paths[0] / MANIFEST)
    return train_set, _concat(val_parts), info


def _split_fraction(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean (n,) validation mask: round(n * fraction) items (>= 1 when fraction > 0 and n >= 2, never all)."""
    mask = np.zeros(n, dtype=bool)
    if fraction <= 0 or n < 2:
        return mask
    k = min(n - 1, max(1, int(round(n * fraction))))
    mask[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return mask


VAL_SPLITS = VAL_SPLIT_CHOICES


def _val_mask(files: Sequence[str], rows: Sequence[Dict[str, str]], val_fraction: float, seed: int,
              val_split: str) -> Tuple[np.ndarray, str]:
    """Boolean validation mask over ``files`` and its description: whole cases, or single images."""
    by_file = {r["file"]: r for r in rows if "file" in r}
    if val_split == "case" and files and all(f in by_file and by_file[f].get("case") for f in files):
        keys = [(by_file[f].get("dataset", ""), by_file[f]["case"]) for f in files]
        groups = sorted(set(keys))
        chosen = {g for g, m in zip(groups, _split_fraction(len(groups), val_fraction, seed)) if m}
        return np.array([k in chosen for k in keys], dtype=bool), f"fraction {val_fraction:g} of {len(groups)} cases, seed {seed}"
    return _split_fraction(len(files), val_fraction, seed), f"fraction {val_fraction:g}, seed {seed}"


def image_lists(folders: Sequence[PathLike], val_fraction: float = 0.05, seed: int = 0, val_split: str = "case"
                ) -> Tuple[List[ImageRef], List[ImageRef], List[Dict[str, Any]]]:
    """Training and validation image files of data folders (see module docstring).

    ``val_split``: ``"case"`` (default; whole cases when the manifest names them) or ``"image"``.
    Returns (train refs, val refs, per-folder info ``{"folder", "train", "val", "val_from"}``).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_split not in VAL_SPLITS:
        raise InputError(f"--val-split must be one of {', '.join(VAL_SPLITS)}, got {val_split!r}")
    paths = check_folders(folders)
    train: List[ImageRef] = []
    val: List[ImageRef] = []
    info = []
    for path in paths:
        manifest = path / MANIFEST
        columns: List[str] = []
        rows: List[Dict[str, str]] = []
        if manifest.is_file():
            rows = read_manifest(manifest)
            if not rows:
                raise InputError("manifest.csv has no rows", manifest)
            columns = list(rows[0])
        if "split" in columns and any(r["split"] == "val" for r in rows):
            tr, va = ImageOnlyDataset(path, split="train"), ImageOnlyDataset(path, split="val")
            image_dir, tr_files, va_files, source = tr.image_dir, tr.files, va.files, "manifest"
        else:
            everything = ImageOnlyDataset(path)
            image_dir, files = everything.image_dir, list(everything.files)
            if not files:
                raise InputError("no images found (expected imgs/*.npy or manifest.csv)", path)
            mask, source = _val_mask(files, rows, val_fraction, seed, val_split)
            tr_files = [f for f, m in zip(files, mask) if not m]
            va_files = [f for f, m in zip(files, mask) if m]
        missing = [f for f in tr_files + va_files if not (image_dir / f).is_file()]
        if missing:
            raise InputError(f"{len(missing)} image file(s) listed but missing, e.g. {missing[0]}", image_dir)
        train += [ImageRef(str(path), str(image_dir), f) for f in tr_files]
        val += [ImageRef(str(path), str(image_dir), f) for f in va_files]
        info.append({"folder": str(path), "train": len(tr_files), "val": len(va_files), "val_from": source})
    if not train:
        raise InputError("no training images", paths[0])
    return train, val, info


def load_model_frame(ref: ImageRef) -> np.ndarray:
    """The image of ``ref`` as (h, w, 3) float32 in [0, 1]: longest side resized to 256 (INTER_AREA),
    min-max scaled, not padded (``medsam_lite.prep.dataset.image_to_model_frame``)."""
    try:
        image = np.load(ref.path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image ({type(exc).__name__}: {exc})", ref.path) from exc
    return image_to_model_frame(image)


UNRECORDED = "unrecorded"


def preprocessing_record(folders: Sequence[PathLike]) -> Dict[str, Any]:
    """How the data of ``folders`` was preprocessed, for a checkpoint's ``config``.

    Returns ``{"normalization": {modality: text}, "model_frame": MODEL_FRAME}``: per manifest
    ``modality`` the ``normalization`` column's text (e.g. ``{"CT": "ct[L40,W400]", "MR":
    "percentile[0.5,99.5]"}``; a sorted list when one modality was normalised in several ways).
    Folders without a manifest, or manifests without those columns, count as modality
    ``"unknown"`` / normalisation ``"unrecorded"``.
    """
    seen: Dict[str, set] = {}
    for path in check_folders(folders):
        manifest = path / MANIFEST
        rows = read_manifest(manifest) if manifest.is_file() else [{}]
        for row in rows:
            modality = row.get("modality") or "unknown"
            seen.setdefault(modality, set()).add(row.get("normalization") or UNRECORDED)
    normalization = {m: (next(iter(v)) if len(v) == 1 else sorted(v)) for m, v in sorted(seen.items())}
    return {"normalization": normalization, "model_frame": MODEL_FRAME}
