"""The model frame's sizes and the one resize rule, shared by the numpy / OpenCV transforms and their torch
twins (:mod:`medsam_lite.transforms`, :mod:`medsam_lite.transforms_torch`). Pure Python: no numpy, no torch.

*Original* frame = pixel indices of the input image (H, W); *model* frame = the 256 x 256 padded square.
"""
from __future__ import annotations

from typing import Tuple

IMAGE_SIZE = 256
"""Side of the square model input (pixels)."""

EMBEDDING_SIZE = 64
"""Side of the square image embedding (tokens)."""

BOX_SHIFT_3D = 3
"""Pixels (model frame) by which a propagated 3D box is widened around the previous slice's mask."""


def get_preprocess_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> Tuple[int, int]:
    """(new_h, new_w) after resizing (H, W) so that the longest side equals ``long_side`` (rounded half up)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


get_preprocess_shape.__module__ = "medsam_lite.transforms"  # its public home (re-exported there); keeps the
# TorchScript artifact's qualified names as they were
