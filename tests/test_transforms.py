"""The shared transforms against hand computations."""
from __future__ import annotations

import numpy as np
import pytest
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


# ----------------------------------------------------------------------------- torch twins
def _sizes():
    rng = np.random.default_rng(0)
    fixed = [(512, 512), (101, 122), (256, 256), (660, 550), (1000, 1000), (480, 640), (1024, 256), (128, 128),
             (197, 233), (91, 117), (45, 120), (300, 301), (255, 257), (1955, 1841), (768, 768), (500, 500),
             (333, 777), (257, 256), (1, 300), (6000, 600)]
    return fixed + [(int(h), int(w)) for h, w in rng.integers(2, 1500, size=(25, 2))]


@pytest.mark.parametrize("hw", _sizes())
def test_resize_area_torch_twin_equals_cv2(hw) -> None:
    """The torch twin of cv2.resize(INTER_AREA) is bit-exact on uint8: grey and 3-channel, noise, smooth
    images and label-valued masks, shrinking (integer factors 2, 4, ... and fractional) and enlarging."""
    import cv2

    from medsam_lite.transforms import get_preprocess_shape, resize_area_u8_torch

    h, w = hw
    rng = np.random.default_rng(h * 10007 + w)
    noise = rng.integers(0, 256, (h, w), dtype=np.uint8)
    for grey in (noise, cv2.GaussianBlur(noise, (0, 0), 3), ((noise > 200) * 7).astype(np.uint8)):
        new_h, new_w = get_preprocess_shape(h, w)
        for image in (grey, np.ascontiguousarray(np.stack([grey, 255 - grey, grey // 2], axis=-1))):
            ref = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA).reshape(new_h, new_w, -1)
            chw = torch.from_numpy(image.reshape(h, w, -1)).permute(2, 0, 1)
            ours = resize_area_u8_torch(chw, new_h, new_w).permute(1, 2, 0).numpy()
            assert ours.dtype == np.uint8 and np.array_equal(ours, ref), (hw, image.ndim, int((ours != ref).sum()))


def test_preprocess_twins_equal_on_real_cases() -> None:
    """numpy/cv2 and torch twins give the identical model input and resized size on the bundled cases, and the
    box / mask twins agree."""
    from medsam_lite.resources import load_example
    from medsam_lite.transforms import (box_from_mask, box_from_mask_torch, mask_to_model_frame,
                                        mask_to_model_frame_torch, preprocess_image, preprocess_image_torch,
                                        scale_boxes, scale_boxes_torch)

    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    ct = load_example("3DBox_CT_abdomen.npz")
    for image in (nuclei["imgs"], ct["imgs"][90], ct["imgs"][90][:, :, None]):
        ref, ref_hw = preprocess_image(image)
        ours, new_h, new_w = preprocess_image_torch(torch.from_numpy(np.ascontiguousarray(image)))
        assert (new_h, new_w) == ref_hw and torch.equal(ours, ref)
    hw = ct["imgs"].shape[1:]
    boxes = ct["boxes"][:, [0, 1, 3, 4]].astype(np.float64)
    assert np.array_equal(scale_boxes_torch(torch.from_numpy(boxes), *hw).numpy(), scale_boxes(boxes, hw))
    mask = (ct["gts"][90] == 2).astype(np.uint8) * 2
    small = mask_to_model_frame(mask)
    assert small.any() and np.array_equal(mask_to_model_frame_torch(torch.from_numpy(mask)).numpy(), small)
    assert np.array_equal(box_from_mask_torch(torch.from_numpy(small > 0)).numpy(), box_from_mask(small))
