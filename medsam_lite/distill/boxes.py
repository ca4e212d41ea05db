"""Random box prompts, shared by the fidelity report and mask-level distillation.

One distribution everywhere: box sides uniform in 10-60 % of the image's (or content region's)
sides, placed uniformly inside it, rounded to whole pixels.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def sample_boxes(rng: np.random.Generator, height: int, width: int, n: int) -> np.ndarray:
    """(n, 4) float32 XYXY boxes inside a ``height`` x ``width`` pixel grid (coordinates 0 .. side - 1)."""
    bw = rng.uniform(0.1, 0.6, n) * (width - 1)
    bh = rng.uniform(0.1, 0.6, n) * (height - 1)
    x0 = rng.uniform(0, 1, n) * (width - 1 - bw)
    y0 = rng.uniform(0, 1, n) * (height - 1 - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], axis=1).round().astype(np.float32)


def random_boxes(shape: Tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """(n, 4) XYXY boxes in original pixels of an image of ``shape`` (H, W[, C]), fixed by ``seed``."""
    return sample_boxes(np.random.default_rng(seed), shape[0], shape[1], n)
