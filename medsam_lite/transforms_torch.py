"""Torch twins of :mod:`medsam_lite.transforms` (TorchScript-able): the reference inference path's pre- and
post-processing, bit-exact with the numpy / OpenCV twins (tests/test_transforms.py).

They live in their own module so that the numpy path (:mod:`medsam_lite.transforms`,
:mod:`medsam_lite.propagation_numpy`) never imports torch; :mod:`medsam_lite.transforms` re-exports them on
first access (``from medsam_lite.transforms import preprocess_image_torch`` works). Their ``__module__`` is
set to ``medsam_lite.transforms`` (as numpy's ``set_module`` does), so the TorchScript artifact's qualified
names are those of the public home and the artifact is unchanged.

Frames and rules: see :mod:`medsam_lite.transforms`.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from .frames import get_preprocess_shape


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


for _fn in (_area_taps, _linear_area_taps, resize_area_u8_torch, preprocess_image_torch, scale_boxes_torch,
            mask_to_model_frame_torch, box_from_mask_torch):
    _fn.__module__ = "medsam_lite.transforms"
del _fn
