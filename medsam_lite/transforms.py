"""The one place where images, boxes and masks move between the original frame and the model frame.

Data prep, training, inference and export all use these functions, so preprocessing cannot drift
between them. They reproduce the LiteMedSAM baseline exactly:

* resize the longest side to 256 with ``cv2.INTER_AREA`` (new size rounded half up),
* min-max scale the resized image to [0, 1] (denominator clipped at 1e-8),
* zero-pad bottom / right to 256 x 256, replicate grey images to 3 channels (no ImageNet mean/std),
* scale boxes by ``256 / max(H, W)`` and truncate to integers,
* crop the 256 x 256 logits to the resized size, upsample bilinearly to (H, W), threshold
  ``sigmoid > 0.5``.

Coordinate frames: *original* = pixel indices of the input image; *model* = the 256 x 256 padded
frame. Boxes are XYXY ``[x_min, y_min, x_max, y_max]``.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 256
"""Side of the square model input (pixels)."""

EMBEDDING_SIZE = 64
"""Side of the square image embedding (tokens)."""

BOX_SHIFT_3D = 3
"""Pixels (model frame) by which a propagated 3D box is widened around the previous slice's mask."""

_CV2_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def get_preprocess_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> Tuple[int, int]:
    """(new_h, new_w) after resizing so that the longest side equals ``long_side`` (rounded half up)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int = IMAGE_SIZE) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) array so its longest side is ``long_side`` (cv2.INTER_AREA).

    The dtype is kept when OpenCV supports it (uint8 stays uint8, as in the baseline); other dtypes
    are resized as float32.
    """
    if image.dtype.type not in _CV2_DTYPES:
        image = image.astype(np.float32)
    new_h, new_w = get_preprocess_shape(image.shape[0], image.shape[1], long_side)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def minmax_normalize(image: np.ndarray) -> np.ndarray:
    """Scale an array to [0, 1] by its own min and max; a constant array becomes 0.

    Computed in float64 and returned as float32, as the baseline did before ``.float()``.
    """
    image = image.astype(np.float64)
    lo, hi = image.min(), image.max()
    return ((image - lo) / max(hi - lo, 1e-8)).astype(np.float32)


def pad_to_square(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Zero-pad the bottom and right of an (h, w[, C]) array to (size, size[, C])."""
    pad_h, pad_w = size - image.shape[0], size - image.shape[1]
    pad = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pad)


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1) -> (H, W, 3) by replication; (H, W, 3) is returned unchanged."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=-1)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=-1)
    return image


def preprocess_image(image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Turn one (H, W) or (H, W, 3) image into the model input.

    Returns:
        tensor: (1, 3, 256, 256) float32 in [0, 1], zero padded bottom / right.
        resized_hw: (h, w) of the image inside the padded frame, needed to crop the logits.
    """
    resized = resize_longest_side(to_three_channels(image))
    resized_hw = (resized.shape[0], resized.shape[1])
    padded = pad_to_square(minmax_normalize(resized))
    tensor = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1).unsqueeze(0)
    return tensor, resized_hw


def scale_boxes(boxes: np.ndarray, original_hw: Tuple[int, int], long_side: int = IMAGE_SIZE) -> np.ndarray:
    """Scale (N, 4) XYXY boxes from original pixels to the model frame.

    Multiplies by ``long_side / max(H, W)`` and truncates toward zero, exactly like the baseline's
    ``resize_box_to_256``. Returns (N, 4) float32.
    """
    ratio = long_side / max(original_hw)
    return np.trunc(np.asarray(boxes, dtype=np.float64) * ratio).astype(np.float32)


def box_from_mask(mask_256: np.ndarray, shift: int = BOX_SHIFT_3D) -> np.ndarray:
    """Bounding box (4,) XYXY of a non-empty (H, W) mask (in 3D propagation: the 256 x 256 model frame),
    widened by ``shift`` px (``shift=0``: the tight box, inclusive pixel indices).

    Clipped to [0, W] / [0, H] as in the baseline's ``get_bbox256``.
    """
    ys, xs = np.nonzero(mask_256)
    h, w = mask_256.shape
    return np.array(
        [max(0, xs.min() - shift), max(0, ys.min() - shift), min(w, xs.max() + shift), min(h, ys.max() + shift)],
        dtype=np.float32,
    )


def mask_to_model_frame(mask: np.ndarray) -> np.ndarray:
    """Resize an (H, W) uint8 mask to the padded 256 x 256 model frame (INTER_AREA, then pad).

    Used by 3D propagation to find the next slice's box. Values are kept as uint8 like the baseline,
    which resized its label-valued slice, so a pixel counts when the area average rounds above 0.
    """
    return pad_to_square(resize_longest_side(mask.astype(np.uint8, copy=False)))


def postprocess_logits(
    logits: torch.Tensor, resized_hw: Tuple[int, int], original_hw: Tuple[int, int]
) -> torch.Tensor:
    """(N, 1, 256, 256) logits -> (N, H, W) bool masks in the original frame.

    Crops to the resized image, upsamples bilinearly (align_corners=False) and keeps
    ``sigmoid > 0.5``.
    """
    cropped = logits[..., : resized_hw[0], : resized_hw[1]]
    upsampled = F.interpolate(cropped, size=(int(original_hw[0]), int(original_hw[1])), mode="bilinear",
                              align_corners=False)
    return (torch.sigmoid(upsampled) > 0.5)[:, 0]
