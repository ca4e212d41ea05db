"""The LiteMedSAM baseline inference algorithm, kept as a library path for speed comparisons.

This reproduces the official LiteMedSAM inference loop (``CVPR24_LiteMedSAM_infer.py``) on top of
:mod:`medsam_lite.transforms`, so its masks equal :class:`medsam_lite.predictor.Predictor`'s:

* 2D: the image is encoded once, then every box is decoded on its own (one decoder call per box).
* 3D: boxes are processed one at a time; for every slice of every box the slice is preprocessed
  and the image encoder is run again (no embedding cache), then one box is decoded. Propagation
  rules are the Predictor's (start at ``z_mid``, go up to z_max, then down to z_min; next box from
  the previous slice's mask in the 256 frame widened by 3 px, the given box when that mask is
  empty).

Frames: boxes are in original pixels, (N, 4) ``[x_min, y_min, x_max, y_max]`` for 2D images (H, W[, 3])
and (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` for (D, H, W) volumes, z = slice index.
It is deliberately slow; use the Predictor for real work.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .model import MedSAMLite
from .transforms import box_from_mask, mask_to_model_frame, postprocess_logits, preprocess_image, scale_boxes
from .validation import check_boxes_2d, check_boxes_3d, check_image, check_volume


@torch.inference_mode()
def _encode(model: MedSAMLite, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(H, W[, 3]) image -> (1, 256, 64, 64) embedding and the resized (h, w) inside the 256 frame."""
    tensor, resized_hw = preprocess_image(image)
    return model.encode(tensor), resized_hw


@torch.inference_mode()
def _decode_one(model: MedSAMLite, embedding: torch.Tensor, box_256: np.ndarray, resized_hw: Tuple[int, int],
                original_hw: Tuple[int, int]) -> np.ndarray:
    """One (4,) model-frame box -> (H, W) bool mask in the original frame (one decoder call)."""
    logits, _ = model.decode(embedding, torch.as_tensor(np.asarray(box_256)[None], dtype=torch.float32))
    return postprocess_logits(logits, resized_hw, original_hw)[0].numpy()


def baseline_segment_2d(model: MedSAMLite, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Baseline 2D: encode the (H, W[, 3]) image once, decode the (N, 4) boxes one at a time.

    Returns: (H, W) uint8 label map, value i+1 for box i, later boxes win.
    """
    model = model.eval()
    image = check_image(image)
    hw = (image.shape[0], image.shape[1])
    boxes = check_boxes_2d(boxes, hw)
    embedding, resized_hw = _encode(model, image)
    segs = np.zeros(hw, dtype=np.uint8)
    for idx, box_256 in enumerate(scale_boxes(boxes, hw), start=1):
        segs[_decode_one(model, embedding, box_256, resized_hw, hw)] = idx
    return segs


def baseline_segment_volume(model: MedSAMLite, volume: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Baseline 3D: one box at a time, re-encoding every slice for every box (no cache).

    Args:
        volume: (D, H, W) any real dtype (uint8 in the challenge).
        boxes: (N, 6) in voxel indices, both ends inclusive.
    Returns: (D, H, W) uint8 label map, value i+1 for box i, later boxes win.
    """
    model = model.eval()
    volume = check_volume(volume)
    boxes = check_boxes_3d(boxes, volume.shape).astype(np.int64)
    depth, hw = volume.shape[0], (volume.shape[1], volume.shape[2])
    segs = np.zeros(volume.shape, dtype=np.uint8)
    for idx, box in enumerate(boxes, start=1):
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        temp = np.zeros(volume.shape, dtype=np.uint8)
        given_256 = scale_boxes(np.array([[x0, y0, x1, y1]]), hw)[0]
        z_mid = int((z1 - z0) / 2 + z0)
        upward = list(range(z_mid, min(z1 + 1, depth)))
        downward = list(range(z_mid - 1, max(-1, z0 - 1), -1))
        for order, step in ((upward, -1), (downward, 1)):
            for z in order:
                embedding, resized_hw = _encode(model, volume[z])  # re-encoded for every box
                if z == z_mid:
                    box_256 = given_256
                else:
                    prev = mask_to_model_frame(temp[z + step])
                    box_256 = box_from_mask(prev) if prev.max() > 0 else given_256
                temp[z, _decode_one(model, embedding, box_256, resized_hw, hw)] = idx
        segs[temp > 0] = idx
    return segs


def baseline_encoder_calls_volume(volume_shape: Tuple[int, int, int], boxes: np.ndarray) -> int:
    """Encoder calls the baseline makes on a (D, H, W) volume: the sum of the boxes' clipped z-ranges."""
    depth = volume_shape[0]
    total = 0
    for b in np.asarray(boxes, dtype=np.int64).reshape(-1, 6):
        total += max(0, min(int(b[5]), depth - 1) - max(int(b[2]), 0) + 1)
    return total
