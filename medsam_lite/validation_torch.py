"""Torch twins of the checks of :mod:`medsam_lite.validation` (TorchScript-able; the reference path and the
TorchScript artifact run them). Their own module so that the numpy path never imports torch; re-exported by
:mod:`medsam_lite.validation` on first access, ``__module__`` kept as ``medsam_lite.validation`` (the
artifact's qualified names are unchanged).
"""
from __future__ import annotations

import warnings
from typing import List

import torch


def check_pixels_torch(array: torch.Tensor, what: str) -> None:
    """Torch twin of the pixel checks for uint8 inputs: uint8, not empty, not constant (ValueError)."""
    if array.dtype != torch.uint8:
        raise ValueError(what + " must be a uint8 tensor, got " + str(array.dtype))
    if array.numel() == 0:
        raise ValueError(what + " is empty (shape " + str(list(array.shape)) + ")")
    if bool(array.min() == array.max()):
        raise ValueError(what + " is constant (every value = " + str(int(array.min())) + "), nothing to segment")


def check_boxes_torch(boxes: torch.Tensor, width: int, limits: List[int]) -> torch.Tensor:
    """Torch twin of :func:`check_boxes_2d` / :func:`check_boxes_3d` (same rules and messages, as ValueError).

    Args:
        boxes: (N, width) real tensor: width 4 ``[x_min, y_min, x_max, y_max]`` or 6
            ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in original pixel / voxel indices.
        limits: the image size per axis in box order, (W, H) or (W, H, D).
    Returns: (N, width) float64, clipped into the image (a warning names clipped boxes).
    """
    if boxes.dim() == 1 and boxes.shape[0] == width:
        boxes = boxes.unsqueeze(0)
    if boxes.dim() != 2 or boxes.shape[1] != width:
        raise ValueError("boxes must have shape (N, " + str(width) + "), got " + str(list(boxes.shape)))
    if boxes.shape[0] == 0:
        raise ValueError("no boxes given")
    if boxes.shape[0] > 255:  # MAX_LABELS (a literal: TorchScript reads no module globals)
        raise ValueError(str(boxes.shape[0]) + " boxes do not fit a uint8 label map (at most 255)")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise ValueError("boxes must be a real-valued tensor, got " + str(boxes.dtype))
    boxes = boxes.to(torch.float64)
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes contain NaN or infinite values")
    names = ["x", "y", "z"]
    half = width // 2
    out = boxes.clone()
    clipped = False
    for i in range(boxes.shape[0]):
        for a in range(half):
            lo = float(boxes[i, a])
            hi = float(boxes[i, a + half])
            name = names[a]
            limit = limits[a]
            if hi < lo:
                raise ValueError("box " + str(i) + " is inverted along " + name + ": " + name + "_min=" + str(lo)
                                 + ", " + name + "_max=" + str(hi))
            if hi == lo and name != "z":
                raise ValueError("box " + str(i) + " is empty along " + name + ": " + name + "_min=" + str(lo)
                                 + ", " + name + "_max=" + str(hi))
            if hi < 0.0 or lo > float(limit - 1):
                raise ValueError("box " + str(i) + " lies outside the image along " + name + ": [" + str(lo) + ", "
                                 + str(hi) + "] vs [0, " + str(limit - 1) + "]")
            if lo < 0.0 or hi > float(limit - 1):
                clipped = True
            out[i, a] = max(lo, 0.0)
            out[i, a + half] = min(hi, float(limit - 1))
    if clipped:
        warnings.warn("some boxes extend past the image and were clipped to it")
    return out


for _fn in (check_pixels_torch, check_boxes_torch):
    _fn.__module__ = "medsam_lite.validation"
del _fn
