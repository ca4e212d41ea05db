"""Deterministic image augmentation for distillation, applied in the model frame.

Input and output are *unpadded* model-frame images: (h, w, 3) float32 in [0, 1] with the longest
side 256 (``medsam_lite.prep.dataset.image_to_model_frame``). :func:`augment` draws, from a seed made of
integer keys (e.g. (seed, image index, variant)):

* horizontal / vertical flip, rot90 (p = 0.5 each; rot90 swaps h and w, the long side stays 256);
* random resized crop (area 60-100 %, aspect 3/4-4/3) back to the same size (p = 0.5);
* brightness / contrast (+-0.2 / +-0.3, p = 0.7) and gamma (0.7-1.5, p = 0.5), clipped to [0, 1];
* zoom-out (p = 0.3): the longest side shrunk to 128-256 px (more zero padding later, like a
  smaller source image);

then min-max scales to [0, 1] again, as preprocessing does at inference (a brightness / contrast
change survives only through clipping: it acts like a different intensity window). The caller pads
with ``pad_to_square`` exactly like inference preprocessing. Same keys -> same output (albumentations
``Compose(seed=...)`` plus a numpy Generator from ``SeedSequence(keys)``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medsam_lite.normalize import unit_to_uint8
from medsam_lite.transforms import IMAGE_SIZE, minmax_normalize, pad_to_square, resize_longest_side

AUG_VERSION = 1
"""Bumped whenever :func:`augment` changes (part of the teacher-cache identity)."""


def _pipeline(height: int, width: int, seed: int) -> Any:
    import albumentations as A

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.RandomResizedCrop(size=(height, width), scale=(0.6, 1.0), ratio=(0.75, 4 / 3), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.3, p=0.7),
        A.RandomGamma(gamma_limit=(70, 150), p=0.5),
    ], seed=seed)


def augment(image: np.ndarray, *keys: int) -> np.ndarray:
    """Augmented copy of an unpadded model-frame image, determined by ``keys``.

    Args:
        image: (h, w, 3) float32 in [0, 1], max(h, w) == 256.
        keys: non-negative integers seeding the draw.
    Returns:
        (h', w', 3) float32 in [0, 1], max(h', w') <= 256, unpadded.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))
    h, w = image.shape[:2]
    out = _pipeline(h, w, int(rng.integers(2 ** 31)))(image=np.ascontiguousarray(image, dtype=np.float32))["image"]
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if rng.random() < 0.3:
        long_side = int(rng.integers(IMAGE_SIZE // 2, IMAGE_SIZE + 1))
        if long_side < max(out.shape[:2]):
            out = resize_longest_side(out, long_side)
    return minmax_normalize(out)


def to_model_input(image: np.ndarray) -> np.ndarray:
    """Unpadded (h, w, 3) float [0, 1] -> padded (256, 256, 3) uint8 = round(255 * value)."""
    return unit_to_uint8(pad_to_square(image))
