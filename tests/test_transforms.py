"""The shared transforms against hand computations."""
from __future__ import annotations

import numpy as np
import torch

from medsam_lite import transforms as T


def test_preprocess_shape_rounds_half_up() -> None:
    assert T.get_preprocess_shape(512, 512) == (256, 256)
    assert T.get_preprocess_shape(101, 122) == (212, 256)  # 101 * 256 / 122 = 211.93
    assert T.get_preprocess_shape(660, 550) == (256, 213)  # 550 * 256 / 660 = 213.33


def test_preprocess_image_hand_computed() -> None:
    img = np.zeros((4, 8), np.uint8)
    img[:, 4:] = 200
    img[0, 0] = 100
    tensor, hw = T.preprocess_image(img)
    assert tensor.shape == (1, 3, 256, 256) and tensor.dtype == torch.float32
    assert hw == (128, 256)
    # INTER_AREA upsampling by 32x keeps the constant regions; min-max maps 200 -> 1 and 0 -> 0
    assert float(tensor[0, 0, 100, 200]) == 1.0
    assert float(tensor[0, 0, 100, 60]) == 0.0
    assert float(tensor[0, 0, 5, 5]) == 0.5  # the 100 pixel
    assert float(tensor[0, :, 128:].abs().sum()) == 0.0  # padding
    assert torch.equal(tensor[0, 0], tensor[0, 2])  # grey replicated


def test_scale_boxes_truncates_like_baseline() -> None:
    boxes = np.array([[10, 21, 43, 57]])
    out = T.scale_boxes(boxes, (101, 122))
    expected = [int(v * 256 / 122) for v in boxes[0]]
    assert out.tolist() == [expected]


def test_box_from_mask_widened_and_clipped() -> None:
    m = np.zeros((256, 256), np.uint8)
    m[1:10, 250:255] = 1
    assert T.box_from_mask(m).tolist() == [247, 0, 256, 12]


def test_postprocess_crops_upsamples_thresholds() -> None:
    logits = torch.full((1, 1, 256, 256), -5.0)
    logits[..., :64, :128] = 5.0  # top-left quarter of the resized (128 x 256) image
    masks = T.postprocess_logits(logits, (128, 256), (64, 128))
    assert masks.shape == (1, 64, 128) and masks.dtype == torch.bool
    assert masks[0, :31, :63].all() and not masks[0, 33:, :].any() and not masks[0, :, 65:].any()
