"""Checks on images, volumes and boxes; each failure is one :class:`InputError` line.

Boxes partly outside the image are clipped to it with a ``UserWarning`` (documented behaviour);
boxes entirely outside, empty (zero width / height) or inverted are errors.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence, Tuple

import numpy as np

from .errors import InputError

_TORCH_TWINS = ("check_pixels_torch", "check_boxes_torch")
"""Names of :mod:`medsam_lite.validation_torch` also reachable from this module (imported on first access)."""


def __getattr__(name: str) -> Any:
    if name in _TORCH_TWINS:
        from . import validation_torch

        return getattr(validation_torch, name)
    raise AttributeError(f"module 'medsam_lite.validation' has no attribute {name!r}")


def _check_numeric(array: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InputError(f"{what} must be a numpy array, got {type(array).__name__}")
    if array.dtype.kind not in "uif" or array.dtype == np.float16:
        if array.dtype == np.float16:
            array = array.astype(np.float32)
        elif array.dtype == np.bool_:
            array = array.astype(np.uint8)
        else:
            raise InputError(f"{what} has unsupported dtype {array.dtype} (need integer or float pixels)")
    if array.size == 0:
        raise InputError(f"{what} is empty (shape {array.shape})")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{what} contains NaN or infinite values")
    return array


def check_image(image: np.ndarray) -> np.ndarray:
    """A 2D image: (H, W), (H, W, 1) or (H, W, 3), finite, not constant."""
    image = _check_numeric(image, "image")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise InputError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if image.min() == image.max():
        raise InputError(f"image is constant (every pixel = {image.flat[0]}), nothing to segment")
    return image


def check_volume(volume: np.ndarray) -> np.ndarray:
    """A volume: (D, H, W), finite, not constant."""
    volume = _check_numeric(volume, "volume")
    if volume.ndim != 3:
        raise InputError(f"volume must be (D, H, W), got shape {volume.shape}")
    if volume.min() == volume.max():
        raise InputError(f"volume is constant (every voxel = {volume.flat[0]}), nothing to segment")
    return volume


def as_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 as is; other real dtypes min-max scaled to 0..255 (rounded) so the model sees uint8, as
    in the challenge format (use :mod:`medsam_lite.normalize` for modality-aware mapping first)."""
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    data = array.astype(np.float64)
    lo, hi = float(data.min()), float(data.max())
    return np.ascontiguousarray(np.round((data - lo) / max(hi - lo, 1e-8) * 255.0).astype(np.uint8))


def _as_boxes(boxes: object, width: int) -> np.ndarray:
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"boxes are not numeric ({exc})") from exc
    if arr.ndim == 1 and arr.size == width:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise InputError(f"boxes must have shape (N, {width}), got {arr.shape}")
    if len(arr) == 0:
        raise InputError("no boxes given")
    if not np.isfinite(arr).all():
        raise InputError("boxes contain NaN or infinite values")
    return arr


def _clip_axes(boxes: np.ndarray, lo_cols: Sequence[int], hi_cols: Sequence[int], limits: Sequence[int],
               names: str) -> np.ndarray:
    """Validate min < max (or <= for z) per axis and clip into [0, limit - 1]."""
    out = boxes.copy()
    clipped = []
    for i, box in enumerate(boxes):
        for lo_c, hi_c, limit, name in zip(lo_cols, hi_cols, limits, names):
            lo, hi = box[lo_c], box[hi_c]
            strict = name != "z"
            if hi < lo or (strict and hi == lo):
                raise InputError(f"box {i} is {'inverted' if hi < lo else 'empty'} along {name}: "
                                 f"{name}_min={lo:g}, {name}_max={hi:g}")
            if hi < 0 or lo > limit - 1:
                raise InputError(f"box {i} lies outside the image along {name}: [{lo:g}, {hi:g}] vs [0, {limit - 1}]")
            if lo < 0 or hi > limit - 1:
                clipped.append(i)
                out[i, lo_c], out[i, hi_c] = max(lo, 0.0), min(hi, float(limit - 1))
    if clipped:
        warnings.warn(f"boxes {sorted(set(clipped))} extend past the image and were clipped to it", stacklevel=3)
    return out


def check_boxes_2d(boxes: object, hw: Tuple[int, int]) -> np.ndarray:
    """(N, 4) XYXY boxes in pixels of an (H, W) image; returns float64, clipped into the image."""
    arr = _as_boxes(boxes, 4)
    return _clip_axes(arr, (0, 1), (2, 3), (hw[1], hw[0]), "xy")


def check_boxes_3d(boxes: object, shape: Tuple[int, int, int]) -> np.ndarray:
    """(N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in voxels of a (D, H, W) volume."""
    arr = _as_boxes(boxes, 6)
    return _clip_axes(arr, (0, 1, 2), (3, 4, 5), (shape[2], shape[1], shape[0]), "xyz")


MAX_LABELS = 255
"""At most this many boxes per case: label maps are uint8 (value i+1 = box i)."""
