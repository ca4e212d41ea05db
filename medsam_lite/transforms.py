"""The one place where images, boxes and masks move between the original frame and the model frame.

Two twins side by side (as segment-anything's ``ResizeLongestSide.apply_boxes`` /
``apply_boxes_torch``): numpy / OpenCV functions (data prep, training) and ``*_torch`` functions that
TorchScript compiles. Inference (:mod:`medsam_lite.propagation`: the Predictor, the baseline and the
TorchScript artifact) runs the torch twins, so every inference path sees bit-identical inputs; the
torch twin of ``cv2.resize(..., INTER_AREA)`` reproduces OpenCV's uint8 arithmetic (tests compare it
with cv2 pixel for pixel over a sweep of sizes and on the real cases). They reproduce the LiteMedSAM
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

from typing import List, Tuple

import math

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


# ============================================================================ torch twins (TorchScript)
# TorchScript reads no module-level constants: 256 below is IMAGE_SIZE, 3 is BOX_SHIFT_3D.
def _area_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's ``computeResizeAreaTab`` for one axis of a shrinking INTER_AREA resize, vectorised.

    Returns (out_size, T) source indices (int64) and float32 weights, taps in ascending source
    order per output pixel; absent taps have weight 0 (adding ``0 * x`` leaves a float sum unchanged).
    Computed in float64 as OpenCV does, including its rule that drops overlaps under 1e-3 px.
    """
    scale = 1.0 / (float(out_size) / float(in_size))
    f1 = torch.arange(out_size, dtype=torch.float64) * scale
    f2 = f1 + scale
    cell = torch.clamp(float(in_size) - f1, max=scale)
    s2 = torch.clamp(torch.floor(f2), max=float(in_size - 1))
    s1 = torch.minimum(torch.ceil(f1), s2)
    left = (s1 - f1) > 1e-3
    right = (f2 - s2) > 1e-3
    w_left = (s1 - f1) / cell
    w_full = 1.0 / cell
    w_right = torch.minimum(torch.clamp(f2 - s2, max=1.0), cell) / cell
    taps = int(math.ceil(scale)) + 2
    index = torch.zeros([out_size, taps], dtype=torch.int64)
    alpha = torch.zeros([out_size, taps], dtype=torch.float64)
    zero = torch.zeros_like(f1)
    for t in range(taps):
        src = s1 - 1.0 + float(t)
        weight = torch.where((src == s1 - 1.0) & left, w_left, zero)
        weight = torch.where((src >= s1) & (src < s2), w_full, weight)
        weight = torch.where((src == s2) & right, w_right, weight)
        index[:, t] = torch.clamp(src, 0.0, float(in_size - 1)).to(torch.int64)
        alpha[:, t] = weight
    return index, alpha.to(torch.float32)


def _linear_area_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's INTER_AREA *enlarging* taps along one axis: (source index, next index, 11-bit weights (out, 2)).

    When enlarging, OpenCV runs its bilinear code with area coefficients: output pixel d covers
    [d * s, (d + 1) * s) of the source (s = in / out < 1) and straddles at most two source pixels.
    Weights are computed in float32 and quantised to 11 bits exactly like ``cv::resize`` on uint8.
    """
    inv = float(out_size) / float(in_size)
    scale = 1.0 / inv
    d = torch.arange(out_size, dtype=torch.float64)
    src = torch.floor(d * scale)
    fx = ((d + 1.0) - (src + 1.0) * inv).to(torch.float32)
    fx = torch.where(fx <= 0.0, torch.zeros_like(fx), fx - torch.floor(fx))
    last = src >= float(in_size - 1)
    src = torch.where(last, torch.full_like(src, float(in_size - 1)), src)
    fx = torch.where(last, torch.zeros_like(fx), fx)
    weights = torch.stack([torch.round((1.0 - fx) * 2048.0), torch.round(fx * 2048.0)], dim=1).to(torch.int64)
    index = src.to(torch.int64)
    return index, torch.clamp(index + 1, max=in_size - 1), weights


def resize_area_u8_torch(image: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """Torch twin of ``cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)`` on uint8 data.

    Args:
        image: (C, H, W) uint8 (or any integer / float tensor holding 0..255 integers).
    Returns:
        (C, new_h, new_w) uint8, equal to OpenCV's result: integer shrink factor 2 = rounded 2 x 2
        sums ``(s + 2) >> 2``; other integer factors = float32 ``sum * (1 / area)`` rounded half to
        even; other shrinks = OpenCV's float32 area taps (row pass, then column pass, in OpenCV's
        order) rounded half to even; enlarging = OpenCV's 11-bit fixed-point bilinear-area path.
    """
    height, width = image.shape[1], image.shape[2]
    if new_h == height and new_w == width:
        return image.to(torch.uint8)
    if new_h > height or new_w > width:
        sy, ny, wy = _linear_area_taps(height, new_h)
        sx, nx, wx = _linear_area_taps(width, new_w)
        src = image.to(torch.int64)
        rows = src[:, :, sx] * wx[:, 0] + src[:, :, nx] * wx[:, 1]  # (C, H, new_w), scaled by 2048
        top = torch.div(rows[:, sy, :], 16, rounding_mode="floor") * wy[:, 0].unsqueeze(1)
        bottom = torch.div(rows[:, ny, :], 16, rounding_mode="floor") * wy[:, 1].unsqueeze(1)
        out = torch.div(top, 65536, rounding_mode="floor") + torch.div(bottom, 65536, rounding_mode="floor")
        return torch.clamp(torch.div(out + 2, 4, rounding_mode="floor"), 0, 255).to(torch.uint8)
    scale_x = 1.0 / (float(new_w) / float(width))
    scale_y = 1.0 / (float(new_h) / float(height))
    ix, iy = int(round(scale_x)), int(round(scale_y))
    if abs(scale_x - ix) < 2.220446049250313e-16 and abs(scale_y - iy) < 2.220446049250313e-16:
        channels = image.shape[0]
        blocks = image.to(torch.int64)[:, : new_h * iy, : new_w * ix].reshape(channels, new_h, iy, new_w, ix)
        sums = blocks.sum(dim=4).sum(dim=2)
        if ix == 2 and iy == 2:
            return torch.div(sums + 2, 4, rounding_mode="floor").to(torch.uint8)
        scaled = sums.to(torch.float32) * torch.tensor(1.0 / float(ix * iy), dtype=torch.float32)
        return torch.clamp(torch.round(scaled), 0, 255).to(torch.uint8)
    xi, xa = _area_taps(width, new_w)
    yi, ya = _area_taps(height, new_h)
    src = image.to(torch.float32)
    rows = torch.zeros([image.shape[0], height, new_w], dtype=torch.float32)
    for t in range(xi.shape[1]):
        rows = rows + src[:, :, xi[:, t]] * xa[:, t]
    out = rows[:, yi[:, 0], :] * ya[:, 0].unsqueeze(1)
    for t in range(1, yi.shape[1]):
        out = out + rows[:, yi[:, t], :] * ya[:, t].unsqueeze(1)
    return torch.clamp(torch.round(out), 0, 255).to(torch.uint8)


def preprocess_image_torch(image: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
    """Torch twin of :func:`preprocess_image`: an (H, W), (H, W, 1) or (H, W, 3) uint8 image ->
    ((1, 3, 256, 256) float32 in [0, 1] zero padded bottom / right, resized h, resized w).

    A grey image is resized once and replicated (OpenCV resizes the replicated channels alike).
    """
    if image.dim() == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    height, width = image.shape[0], image.shape[1]
    new_h, new_w = get_preprocess_shape(height, width)
    if image.dim() == 2:
        resized = resize_area_u8_torch(image.unsqueeze(0), new_h, new_w).expand(3, new_h, new_w)
    else:
        resized = resize_area_u8_torch(image.permute(2, 0, 1), new_h, new_w)
    data = resized.to(torch.float64)
    lo = data.min()
    hi = data.max()
    normed = ((data - lo) / torch.clamp(hi - lo, min=1e-8)).to(torch.float32)
    padded = F.pad(normed, [0, 256 - new_w, 0, 256 - new_h])
    return padded.unsqueeze(0).contiguous(), new_h, new_w


def scale_boxes_torch(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Torch twin of :func:`scale_boxes`: (N, 4) XYXY original pixels -> (N, 4) float32 model frame
    (multiply by 256 / max(H, W) in float64, truncate toward zero)."""
    ratio = 256.0 / float(max(height, width))
    return torch.trunc(boxes.to(torch.float64) * ratio).to(torch.float32)


def mask_to_model_frame_torch(mask: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`mask_to_model_frame`: an (H, W) uint8 mask (values as given: the
    propagation passes the box's label value, as the baseline did) -> (256, 256) uint8."""
    new_h, new_w = get_preprocess_shape(mask.shape[0], mask.shape[1])
    small = resize_area_u8_torch(mask.unsqueeze(0), new_h, new_w)[0]
    return F.pad(small, [0, 256 - new_w, 0, 256 - new_h])


def box_from_mask_torch(mask_256: torch.Tensor, shift: int = 3) -> torch.Tensor:
    """Torch twin of :func:`box_from_mask` for a non-empty (H, W) mask: (4,) float32 XYXY widened by
    ``shift`` px and clipped to [0, W] / [0, H] as the baseline's ``get_bbox256``."""
    ys = torch.nonzero(mask_256.any(dim=1)).flatten()
    xs = torch.nonzero(mask_256.any(dim=0)).flatten()
    h, w = mask_256.shape[0], mask_256.shape[1]
    return torch.tensor([max(0, int(xs.min()) - shift), max(0, int(ys.min()) - shift),
                         min(w, int(xs.max()) + shift), min(h, int(ys.max()) + shift)], dtype=torch.float32)
