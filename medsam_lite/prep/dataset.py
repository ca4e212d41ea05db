"""PyTorch datasets over a prepared folder (``imgs/``, ``gts/``, ``manifest.csv``; see medsam_lite.prep.prep).

Frames: *original* = the stored slice's pixels (H, W); *model* = the 256 x 256 frame the shared
transforms produce: resize the longest side to 256 (``resize_longest_side``, INTER_AREA), min-max
scale to [0, 1] (``minmax_normalize``, as ``preprocess_image`` does at inference), zero-pad bottom /
right (``pad_to_square``). Masks use INTER_NEAREST to the size of ``get_preprocess_shape``, then the
same padding. Flips (albumentations) are applied to the resized image and mask *before* padding, so
the padding stays bottom / right as at inference, and before the box is computed.

Randomness (:class:`SeededRandom`): each process (main or DataLoader worker) builds its own
``numpy.random.default_rng`` from ``torch.initial_seed()`` (which differs per worker and per epoch) on
first use, and seeds the albumentations pipeline from it, so workers never share a random stream.
:meth:`SliceDataset.reset_random` / :meth:`ImageOnlyDataset.reset_random` drop that stream so the
next item re-seeds it (the trainer calls it at every epoch start; with ``workers=0`` the stream would
otherwise carry over between epochs and runs).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from medsam_lite.errors import InputError
from medsam_lite.transforms import (box_from_mask, get_preprocess_shape, minmax_normalize, pad_to_square,
                                    resize_longest_side, to_three_channels)

PathLike = Union[str, Path]

#: The model-frame contract of every item (and of inference, ``medsam_lite.transforms``).
MODEL_FRAME = "resize longest side 256 INTER_AREA, min-max [0,1], pad bottom/right"


def read_manifest(path: Path, split: Optional[str] = None) -> List[Dict[str, str]]:
    """Rows of ``manifest.csv`` (needs a ``file`` column), restricted to ``split`` when given."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as exc:
        raise InputError(f"cannot read manifest ({type(exc).__name__})", path) from exc
    if "file" not in columns:
        raise InputError("manifest has no 'file' column", path)
    if split is not None:
        if "split" not in columns:
            raise InputError(f"manifest has no 'split' column (asked for split {split!r})", path)
        rows = [r for r in rows if r["split"] == split]
    return rows


def parse_labels(text: str) -> Dict[int, int]:
    """Manifest ``labels`` cell ``"1:542;3:264"`` -> ``{1: 542, 3: 264}``."""
    out = {}
    for item in (text or "").split(";"):
        if item.strip():
            label_id, count = item.split(":")
            out[int(label_id)] = int(count)
    return out


def image_to_model_frame(image: np.ndarray) -> np.ndarray:
    """(H, W[, 1 | 3]) image -> (h, w, 3) float32 in [0, 1]: resized longest side 256, min-max scaled,
    NOT yet padded (h, w = ``get_preprocess_shape(H, W)``)."""
    return minmax_normalize(resize_longest_side(to_three_channels(image)))


def model_frame_tensor(image: np.ndarray) -> torch.Tensor:
    """Unpadded (h, w, 3) model-frame image in [0, 1] -> the model input (3, 256, 256) float32 tensor,
    zero-padded at the bottom / right (``pad_to_square``)."""
    return torch.from_numpy(np.ascontiguousarray(pad_to_square(image).transpose(2, 0, 1), dtype=np.float32))


def _flips() -> Any:
    import albumentations as A

    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])


class SeededRandom:
    """Per-process random state: numpy Generator (+ albumentations pipeline) seeded lazily from
    ``torch.initial_seed()`` (the DataLoader worker's seed inside a worker)."""

    def __init__(self) -> None:
        self._pid: Optional[int] = None
        self._rng: Optional[np.random.Generator] = None
        self._aug: Any = None

    def _ensure(self, with_aug: bool) -> None:
        if self._rng is None or self._pid != os.getpid():
            info = torch.utils.data.get_worker_info()
            seed = info.seed if info is not None else torch.initial_seed()
            self._rng = np.random.default_rng(seed)
            self._pid = os.getpid()
            self._aug = None
        if with_aug and self._aug is None:
            self._aug = _flips()
            self._aug.set_random_seed(int(self._rng.integers(2 ** 31)))

    def reset(self) -> None:
        """Forget the stream: the next use re-seeds from ``torch.initial_seed()``."""
        self._pid = self._rng = self._aug = None

    def rng(self) -> np.random.Generator:
        self._ensure(False)
        assert self._rng is not None
        return self._rng

    def flip(self, **targets: np.ndarray) -> Dict[str, np.ndarray]:
        self._ensure(True)
        return self._aug(**targets)


class SliceDataset(Dataset):
    """Labelled slices of one split for box-prompted training.

    Each item: one random label of the slice, its mask and a box.

    Returns dict:
        image: (3, 256, 256) float32 in [0, 1], model frame, zero padded bottom / right.
        mask: (1, 256, 256) float32 in {0, 1}, the chosen label.
        box: (4,) float32 XYXY ``[x_min, y_min, x_max, y_max]`` in the model frame: the mask's
            bounding box (inclusive pixel indices), each side widened by a random 0..``max_jitter``
            px when augmenting, clipped to the resized image (0..w-1, 0..h-1).
        name: the slice's file stem.

    Args:
        root: prepared folder (``imgs/``, ``gts/``, ``manifest.csv``).
        split: ``"train"``, ``"val"``, or None for all rows.
        augment: random flips + box jitter; default: True for ``"train"`` only.
        max_jitter: largest box widening per side (px, model frame).
    """

    def __init__(self, root: PathLike, split: Optional[str] = "train", augment: Optional[bool] = None,
                 max_jitter: int = 5, manifest: str = "manifest.csv") -> None:
        self.root = Path(root)
        rows = read_manifest(self.root / manifest, split)
        if rows and "labels" not in rows[0]:
            raise InputError("manifest has no 'labels' column (use ImageOnlyDataset)", self.root / manifest)
        self.rows = [r for r in rows if parse_labels(r.get("labels", ""))]
        self.augment = (split == "train") if augment is None else bool(augment)
        self.max_jitter = int(max_jitter)
        self._random = SeededRandom()

    def reset_random(self) -> None:
        """Re-seed the random label / flips / jitter stream from ``torch.initial_seed()`` on next use."""
        self._random.reset()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        row = self.rows[index]
        image = np.load(self.root / "imgs" / row["file"], allow_pickle=False)
        labels = np.load(self.root / "gts" / row["file"], allow_pickle=False)
        rng = self._random.rng()

        resized = image_to_model_frame(image)
        h, w = get_preprocess_shape(labels.shape[0], labels.shape[1])
        labels_r = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        present = np.unique(labels_r)
        present = present[present > 0]
        if present.size:
            label_id = int(rng.choice(present))
            mask = (labels_r == label_id).astype(np.uint8)
        else:  # every object vanished under nearest-neighbour: keep any covered pixel instead
            label_id = int(rng.choice(sorted(parse_labels(row["labels"]))))
            mask = (cv2.resize((labels == label_id).astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA) > 0
                    ).astype(np.uint8)
            if not mask.any():
                ys, xs = np.nonzero(labels == label_id)
                mask[min(int(ys.mean() * h / labels.shape[0]), h - 1), min(int(xs.mean() * w / labels.shape[1]), w - 1)] = 1

        if self.augment:
            out = self._random.flip(image=resized, mask=mask)
            resized, mask = out["image"], out["mask"]

        jitter = rng.integers(0, self.max_jitter + 1, size=4) if self.augment and self.max_jitter > 0 else np.zeros(4, int)
        tight = box_from_mask(mask, shift=0)  # the one mask -> box rule; jitter widens each side, kept in the image
        box = np.clip(tight + np.array([-jitter[0], -jitter[1], jitter[2], jitter[3]]), 0, [w - 1, h - 1, w - 1, h - 1]
                      ).astype(np.float32)

        image_t = model_frame_tensor(resized)
        mask_t = torch.from_numpy(np.ascontiguousarray(pad_to_square(mask)[None], dtype=np.float32))
        return {"image": image_t, "mask": mask_t, "box": torch.from_numpy(box), "name": Path(row["file"]).stem}


class ImageOnlyDataset(Dataset):
    """Images only (distillation): no labels needed.

    Reads ``manifest.csv`` (only a ``file`` column is required; ``split`` filters when given) or,
    without a manifest, every ``*.npy`` in ``imgs/`` (or in ``root`` itself). Images may be (H, W),
    (H, W, 1) or (H, W, 3) of any numeric dtype.

    Returns dict:
        image: (3, 256, 256) float32 in [0, 1], model frame (resize, min-max, optional flips, pad).
        name: the file stem.
    """

    def __init__(self, root: PathLike, split: Optional[str] = None, augment: bool = False,
                 manifest: str = "manifest.csv") -> None:
        self.root = Path(root)
        self.image_dir = self.root / "imgs" if (self.root / "imgs").is_dir() else self.root
        if (self.root / manifest).is_file():
            self.files = [r["file"] for r in read_manifest(self.root / manifest, split)]
        else:
            if split is not None:
                raise InputError(f"no manifest to select split {split!r} from", self.root)
            self.files = sorted(p.name for p in self.image_dir.glob("*.npy") if not p.name.startswith("."))
        self.augment = bool(augment)
        self._random = SeededRandom()

    def reset_random(self) -> None:
        """Re-seed the flip stream from ``torch.initial_seed()`` on next use."""
        self._random.reset()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        name = self.files[index]
        image = np.load(self.image_dir / name, allow_pickle=False)
        resized = image_to_model_frame(image)
        if self.augment:
            resized = self._random.flip(image=resized)["image"]
        return {"image": model_frame_tensor(resized), "name": Path(name).stem}


__all__ = ["SliceDataset", "ImageOnlyDataset", "SeededRandom", "MODEL_FRAME", "read_manifest", "parse_labels",
           "image_to_model_frame", "model_frame_tensor"]
