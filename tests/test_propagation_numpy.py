"""The numpy / OpenCV twin of the propagation (:mod:`medsam_lite.propagation_numpy`) against the torch reference
(:class:`medsam_lite.propagation.Propagator`): equal label maps on the bundled cases, on every registered backend,
and the post-processing twin equal to torch's bilinear upsampling and sigmoid threshold bit for bit."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsam_lite.backends import backend_names, create_backend, installed
from medsam_lite.embedding_cache import CachedEncoder, MemoryEmbeddingStore
from medsam_lite.predictor import BackendDecoder
from medsam_lite.propagation import Propagator, upsample_mask
from medsam_lite.propagation_numpy import NumpyPropagator
from medsam_lite.resources import load_example
from medsam_lite.transforms import LOGIT_THRESHOLD, get_preprocess_shape, logits_to_mask, upsample_logits

CT_SLAB = (80, 96)
"""z range of the CT example used by the default test (every one of its 5 boxes visits it; the full case is
the slow test's)."""


def _cases(full: bool) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    ct = load_example("3DBox_CT_abdomen.npz")
    mr = load_example("3DBox_MR_brain_tumour.npz")
    ct_imgs, ct_boxes = ct["imgs"], ct["boxes"].astype(np.float64)
    if not full:
        lo, hi = CT_SLAB
        ct_imgs = ct_imgs[lo:hi]
        ct_boxes[:, 2] = np.clip(ct_boxes[:, 2] - lo, 0, hi - lo - 1)
        ct_boxes[:, 5] = np.clip(ct_boxes[:, 5] - lo, 0, hi - lo - 1)
    return {"nuclei_2d": (nuclei["imgs"], nuclei["boxes"]), "ct_3d": (ct_imgs, ct_boxes),
            "mr_3d": (mr["imgs"], mr["boxes"])}


class _NumpyDecode:
    """A backend's decode for the numpy twin: numpy in, numpy out (the torch backend speaks tensors only)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def __call__(self, embedding: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = self.backend.decode(torch.from_numpy(embedding), torch.from_numpy(boxes))
        return out.numpy()


@pytest.fixture(scope="module", params=backend_names())
def backend(request, lite_medsam):
    if not installed(request.param):
        pytest.skip(f"{request.param} not installed")
    return create_backend(lite_medsam, request.param, "fp32", threads=2)


def _both(backend: Any, image: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(torch Propagator label map, numpy twin label map) on one backend, sharing slice embeddings (a memory
    store keyed by the model input: the torch twin encodes, the numpy twin's identical inputs hit)."""
    store = MemoryEmbeddingStore()
    reference = Propagator(CachedEncoder(backend, store), BackendDecoder(backend), decode_batch=4)
    twin = NumpyPropagator(CachedEncoder(backend, store), _NumpyDecode(backend), decode_batch=4)
    with torch.inference_mode():
        if image.ndim == 3 and boxes.shape[1] == 6:
            ref = reference.segment_3d(torch.from_numpy(image), torch.from_numpy(boxes)).numpy()
            ours = twin.segment_3d(image, boxes)
        else:
            ref = reference.segment_2d(torch.from_numpy(image), torch.from_numpy(boxes)).numpy()
            ours = twin.segment_2d(image, boxes)
    assert twin.encoder.runs == 0 and twin.encoder.hits == reference.encoder.runs > 0  # same embeddings
    assert (twin.encoder_calls, twin.decoder_calls) == (reference.encoder_calls, reference.decoder_calls)
    return ref, ours


def _check_case(backend: Any, name: str, image: np.ndarray, boxes: np.ndarray) -> None:
    ref, ours = _both(backend, image, boxes)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    labels = set(np.unique(ref).tolist())
    assert len(labels) > 1, name  # real masks, not an empty map
    assert np.array_equal(ours, ref), f"{name} on {backend.name}: {int((ours != ref).sum())} voxels differ"


@pytest.mark.parametrize("case", ["nuclei_2d", "ct_3d", "mr_3d"])
def test_numpy_twin_equals_torch_propagator(backend, case: str) -> None:
    image, boxes = _cases(full=False)[case]
    _check_case(backend, case, image, boxes)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ct_3d"])
def test_numpy_twin_equals_torch_propagator_full_ct(backend, case: str) -> None:
    image, boxes = _cases(full=True)[case]
    _check_case(backend, case, image, boxes)


# ----------------------------------------------------------------------------- post-processing twin
def test_logit_threshold_is_torch_sigmoid_half() -> None:
    """``sigmoid(x) > 0.5`` in torch float32 exactly when ``x > LOGIT_THRESHOLD`` (checked on every float32
    within 10**5 ulps of it, and on zero and negatives)."""
    bits = np.arange(-100_000, 100_000, dtype=np.int64) + int(np.float32(LOGIT_THRESHOLD).view(np.int32))
    values = np.concatenate([bits.astype(np.int32).view(np.float32), np.float32([0.0, -1e-9, -1.0, 1e-3])])
    torch_says = (torch.sigmoid(torch.from_numpy(values)) > 0.5).numpy()
    assert np.array_equal(torch_says, values > LOGIT_THRESHOLD)
    assert torch_says.any() and not torch_says.all()


def _real_logits(lite_medsam) -> torch.Tensor:
    """(4, 1, 256, 256) decoder logits of real boxes on the CT example's slice 90 (eager LiteMedSAM)."""
    from medsam_lite.transforms import preprocess_image

    ct = load_example("3DBox_CT_abdomen.npz")
    image, _ = preprocess_image(ct["imgs"][90])
    boxes = torch.tensor([[20.0, 50.0, 90.0, 120.0], [150.0, 60.0, 200.0, 110.0], [50.0, 55.0, 90.0, 110.0],
                          [70.0, 90.0, 220.0, 180.0]])
    with torch.inference_mode():
        return lite_medsam.decode(lite_medsam.encode(image), boxes)[0]


SIZES = [(101, 122), (512, 512), (660, 550), (197, 233), (1000, 1000), (256, 256), (45, 120), (300, 301)]


def test_upsample_and_threshold_equal_torch_on_real_logits(lite_medsam) -> None:
    """:func:`upsample_logits` equals ``F.interpolate`` bit for bit, and :func:`logits_to_mask` equals the torch
    Propagator's :func:`~medsam_lite.propagation.upsample_mask`, on real logits over a sweep of image sizes."""
    logits = _real_logits(lite_medsam)
    near = 0
    for height, width in SIZES:
        new_h, new_w = get_preprocess_shape(height, width)
        up = F.interpolate(logits[:, :, :new_h, :new_w], size=[height, width], mode="bilinear", align_corners=False)
        ref_masks = upsample_mask(logits, new_h, new_w, height, width).numpy()
        for k in range(logits.shape[0]):
            cropped = np.ascontiguousarray(logits[k, 0, :new_h, :new_w].numpy())
            assert np.array_equal(upsample_logits(cropped, height, width), up[k, 0].numpy()), (height, width, k)
            mask = logits_to_mask(logits[k, 0].numpy(), new_h, new_w, height, width)
            assert mask.dtype == np.bool_ and np.array_equal(mask, ref_masks[k]), (height, width, k)
            near += int((np.abs(up[k, 0].numpy()) < 1e-2).sum())
    assert ref_masks.any() and near > 0  # the exact path near the threshold was exercised
