"""The one place where images, boxes and masks move between the original frame and the model frame.

Two twins side by side (as segment-anything's ``ResizeLongestSide.apply_boxes`` /
``apply_boxes_torch``): the numpy / OpenCV functions here, and the ``*_torch`` functions of
:mod:`medsam_lite.transforms_torch` that TorchScript compiles (re-exported here on first access, so this
module imports no torch). The torch twins run the reference path (:class:`medsam_lite.propagation.Propagator`:
the eager reference backend, the baseline, the TorchScript artifact); the numpy twins run the torch-free path
(:class:`medsam_lite.propagation_numpy.NumpyPropagator`, OpenVINO / ONNX Runtime) and data prep. Both give
bit-identical model inputs and equal masks: the torch twin of ``cv2.resize(..., INTER_AREA)`` reproduces
OpenCV's uint8 arithmetic, and :func:`logits_to_mask` reproduces torch's bilinear upsampling decision (tests
compare them pixel for pixel on a sweep of sizes and on the real cases). They reproduce the LiteMedSAM
baseline exactly:

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

from typing import TYPE_CHECKING, Any, Tuple

import cv2
import numpy as np

from .frames import BOX_SHIFT_3D, EMBEDDING_SIZE, IMAGE_SIZE, get_preprocess_shape

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGE_SIZE", "EMBEDDING_SIZE", "BOX_SHIFT_3D", "get_preprocess_shape", "resize_longest_side",
           "minmax_normalize", "pad_to_square", "to_three_channels", "preprocess_array", "preprocess_image",
           "scale_boxes", "box_from_mask", "mask_to_model_frame", "upsample_logits", "logits_to_mask",
           "postprocess_logits", "LOGIT_THRESHOLD"]

_TORCH_TWINS = ("resize_area_u8_torch", "preprocess_image_torch", "scale_boxes_torch", "mask_to_model_frame_torch",
                "box_from_mask_torch")
"""Names of :mod:`medsam_lite.transforms_torch` also reachable from this module (imported on first access)."""

_CV2_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)

LOGIT_THRESHOLD = np.float32(1.5 * 2.0 ** -24)
"""``float32 sigmoid(x) > 0.5`` exactly when ``x > LOGIT_THRESHOLD`` (8.94e-8, not 0: below it ``exp(-x)``
rounds so that ``1 / (1 + exp(-x))`` is exactly 0.5). Checked against ``torch.sigmoid`` in the tests."""


def __getattr__(name: str) -> Any:
    if name in _TORCH_TWINS:
        from . import transforms_torch

        return getattr(transforms_torch, name)
    raise AttributeError(f"module 'medsam_lite.transforms' has no attribute {name!r}")


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


def preprocess_array(image: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Turn one (H, W), (H, W, 1) or (H, W, 3) image into the model input, in numpy.

    Returns:
        array: (1, 3, 256, 256) float32 in [0, 1], zero padded bottom / right.
        resized_hw: (h, w) of the image inside the padded frame, needed to crop the logits.

    uint8 input (the inference path) is resized once per distinct channel (a grey image once, then
    replicated: OpenCV resizes each channel alike) and min-max scaled through a 256-entry table computed in
    float64 exactly as :func:`minmax_normalize` computes each pixel, so the result equals the general
    chain (and :func:`~medsam_lite.transforms_torch.preprocess_image_torch`) bit for bit.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype != np.uint8:
        resized = resize_longest_side(to_three_channels(image))
        normed = minmax_normalize(resized)
    else:
        resized = resize_longest_side(np.ascontiguousarray(image))
        lo, hi = float(resized.min()), float(resized.max())
        table = ((np.arange(256, dtype=np.float64) - lo) / max(hi - lo, 1e-8)).astype(np.float32)
        normed = table[resized]
    new_h, new_w = normed.shape[0], normed.shape[1]
    out = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    out[0, :, :new_h, :new_w] = normed if normed.ndim == 2 else normed.transpose(2, 0, 1)
    return out, (new_h, new_w)


def preprocess_image(image: np.ndarray) -> Tuple["torch.Tensor", Tuple[int, int]]:
    """:func:`preprocess_array` as a torch tensor: ((1, 3, 256, 256) float32, (h, w)) (imports torch)."""
    import torch

    array, resized_hw = preprocess_array(image)
    return torch.from_numpy(array), resized_hw


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


def _linear_taps(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (align_corners=False) taps along one axis as torch's CPU kernel computes them in float32:
    (source index, next index, weight of the first, weight of the second), each (out_size,).

    The source coordinate is ``fma(scale, d + 0.5, -0.5)`` (torch's build contracts it to one fused
    multiply-add; emulated exactly in float64: the product of two float32 is exact there), clamped at 0.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    centre = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    real = (np.float64(scale) * centre.astype(np.float64) - 0.5).astype(np.float32)
    real = np.maximum(real, np.float32(0.0))
    first = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    lam = np.clip(real - first.astype(np.float32), np.float32(0.0), np.float32(1.0))
    second = np.where(first < in_size - 1, first + 1, first)
    return first, second, np.float32(1.0) - lam, lam


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (a fused multiply-add), computed in float64."""
    return (a.astype(np.float64) * b + c).astype(np.float32)


def upsample_logits(logits: np.ndarray, height: int, width: int,
                    rows: Any = slice(None), cols: Any = slice(None)) -> np.ndarray:
    """Bilinear (align_corners=False) upsampling of (h, w) float32 logits to (height, width), equal bit for bit
    to ``torch.nn.functional.interpolate`` on the CPU (AVX2 / AVX-512 kernels: the horizontal pass, then the
    vertical one, each ``fma(x0, w0, x1 * w1)``). ``rows`` / ``cols``: index arrays of the output pixels
    wanted (then (K,) values), default the whole (height, width) grid. Slower than OpenCV (float64 FMAs):
    :func:`logits_to_mask` calls it only where OpenCV's result is too close to the threshold to decide.
    """
    y0, y1, a0, a1 = (t[rows] for t in _linear_taps(logits.shape[0], height))
    x0, x1, b0, b1 = (t[cols] for t in _linear_taps(logits.shape[1], width))
    if isinstance(rows, slice) and isinstance(cols, slice):
        top = _fma(logits[:, x0], b0, logits[:, x1] * b1)  # every source row, horizontal pass
        return _fma(top[y0], a0[:, None], top[y1] * a1[:, None])
    upper = _fma(logits[y0, x0], b0, logits[y0, x1] * b1)
    lower = _fma(logits[y1, x0], b0, logits[y1, x1] * b1)
    return _fma(upper, a0, lower * a1)


def logits_to_mask(logits: np.ndarray, new_h: int, new_w: int, height: int, width: int) -> np.ndarray:
    """(256, 256) float32 logits of one box -> (height, width) bool mask: crop to the resized (new_h, new_w),
    upsample bilinearly (align_corners=False), keep ``sigmoid > 0.5`` -- the same decision as the torch twin
    (:func:`medsam_lite.propagation.upsample_mask`) for every pixel.

    OpenCV's bilinear resize decides every pixel whose value is farther from :data:`LOGIT_THRESHOLD` than
    any rounding difference between OpenCV and torch can reach (``1e-3 * max |logit|``, against observed
    differences under ``2e-6 * max |logit|``); the few pixels nearer the threshold are recomputed with torch's
    exact arithmetic (:func:`upsample_logits`).
    """
    cropped = np.ascontiguousarray(logits[:new_h, :new_w], dtype=np.float32)
    fast = cv2.resize(cropped, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
    if fast.ndim != 2:  # OpenCV drops a size-1 axis of the output in some versions
        fast = fast.reshape(int(height), int(width))
    threshold = float(LOGIT_THRESHOLD)
    mask = fast > threshold
    margin = 1e-3 * float(np.abs(cropped).max()) + 1e-6
    near = np.flatnonzero((fast >= threshold - margin) & (fast <= threshold + margin))
    if near.size:
        rows, cols = np.divmod(near, int(width))
        mask[rows, cols] = upsample_logits(cropped, height, width, rows, cols) > LOGIT_THRESHOLD
    return mask


def postprocess_logits(
    logits: "torch.Tensor", resized_hw: Tuple[int, int], original_hw: Tuple[int, int]
) -> "torch.Tensor":
    """(N, 1, 256, 256) logits tensor -> (N, H, W) bool masks in the original frame (torch; imports torch).

    Crops to the resized image, upsamples bilinearly (align_corners=False) and keeps
    ``sigmoid > 0.5``. The numpy twin is :func:`logits_to_mask`.
    """
    import torch
    import torch.nn.functional as F

    cropped = logits[..., : resized_hw[0], : resized_hw[1]]
    upsampled = F.interpolate(cropped, size=(int(original_hw[0]), int(original_hw[1])), mode="bilinear",
                              align_corners=False)
    return (torch.sigmoid(upsampled) > 0.5)[:, 0]
