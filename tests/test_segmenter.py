"""The session's two segmenters (:mod:`medsam_lite.segmenter`) and background embedding, on real data.

* The numpy segmenter (default path, no torch) and the torch one give the same session labels, action for
  action (first step, corrections, a grown range), on the bundled MR tumour and a CT slab, on one backend
  (OpenVINO fp32, shared embeddings: the numpy twin's identical inputs hit the store the torch one filled).
* ``Predictor.session`` picks the propagator the Predictor itself runs.
* ``Session.prefetch`` on a caller's executor embeds the object's slices first, outward from the current slice;
  prefetched slices are never encoded again, also when an action runs while the prefetch is still going.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from medsam_lite.backends import create_backend, installed
from medsam_lite.embedding_cache import MemoryEmbeddingStore
from medsam_lite.predictor import BackendDecoder, Predictor
from medsam_lite.segmenter import NumpySegmenter, PropagatorSegmenter
from medsam_lite.session import Session
from medsam_lite.transforms import box_from_mask
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.skipif(not installed("openvino"), reason="openvino not installed")

CT_SLAB = (96, 104)
"""8 slices of the bundled CT that every one of its 5 organs reaches into."""


@pytest.fixture(scope="module")
def backend():
    return create_backend(None, "openvino", "fp32")


@pytest.fixture(scope="module")
def store() -> MemoryEmbeddingStore:
    return MemoryEmbeddingStore()


@pytest.fixture(scope="module")
def mr():
    data = np.load(EXAMPLES / "3DBox_MR_brain_tumour.npz")
    return data["imgs"], data["boxes"], data["gts"] > 0


@pytest.fixture(scope="module")
def ct_slab():
    data = np.load(EXAMPLES / "3DBox_CT_abdomen.npz")
    z0, z1 = CT_SLAB
    boxes = data["boxes"].copy()
    boxes[:, 2] = np.clip(boxes[:, 2] - z0, 0, z1 - z0 - 1)
    boxes[:, 5] = np.clip(boxes[:, 5] - z0, 0, z1 - z0 - 1)
    return np.ascontiguousarray(data["imgs"][z0:z1]), boxes, data["gts"][z0:z1]


def _replay(session: Session, boxes: np.ndarray, truth: np.ndarray) -> list:
    """Each box as an object, then two ground-truth corrections of the first object (an inner slice and one past
    its range when there is room): the labels after every action."""
    states = []
    for box in boxes:
        session.add_object(tuple(int(v) for v in box))
        states.append(session.labels.copy())
    first = session.objects[1]
    session.unlock(1)
    depth = session.shape[0]
    for z in (first.z_lo + 1, min(first.z_hi + 2, depth - 1)):
        shown = truth[z] if truth[z].any() else truth[first.z_mid]
        session.correct(1, z, box=tuple(int(v) for v in box_from_mask(shown, shift=0)))
        states.append(session.labels.copy())
    return states


def _both(backend, store, volume, boxes, truth):
    numpy_side = Session(NumpySegmenter(volume, backend, BackendDecoder(backend), store))
    torch_side = Session(PropagatorSegmenter(volume, backend, BackendDecoder(backend), store))
    return _replay(torch_side, boxes, truth), _replay(numpy_side, boxes, truth), numpy_side


@pytest.mark.parametrize("case", ["mr", "ct_slab"])
def test_numpy_and_torch_segmenters_give_equal_session_labels(backend, store, mr, ct_slab, case) -> None:
    volume, boxes, truth = mr if case == "mr" else ct_slab
    truth = truth > 0 if truth.dtype != bool else truth
    ref, ours, numpy_side = _both(backend, store, volume, boxes, truth)
    assert len(ref) == len(boxes) + 2
    for step, (a, b) in enumerate(zip(ref, ours)):
        assert a.any() and np.array_equal(a, b), f"{case}: step {step}: {int((a != b).sum())} voxels differ"
    assert not np.array_equal(ref[len(boxes) - 1], ref[-1])  # the corrections changed the labels
    assert numpy_side.segmenter.encoder.runs == 0  # every slice was a store hit (same model inputs)


def test_predictor_session_runs_the_predictors_propagator(mr) -> None:
    volume, boxes, _ = mr
    default = Predictor(backend="openvino", precision="fp32", embedding_cache=MemoryEmbeddingStore())
    assert not default.uses_torch and isinstance(default.session(volume).segmenter, NumpySegmenter)
    reference = Predictor(backend="torch")
    assert reference.uses_torch and isinstance(reference.session(volume).segmenter, PropagatorSegmenter)
    s = default.session(volume)
    s.add_object(tuple(boxes[0]))
    assert np.array_equal(s.labels, default.predict_volume(volume, boxes, progress=False))


# ---------------------------------------------------------------- background embedding
def test_prefetch_order_object_first_outward(mr) -> None:
    volume, boxes, _ = mr
    s = Session(NumpySegmenter(volume, None, None, MemoryEmbeddingStore()))  # the order needs no model
    assert s.prefetch_order(z=3)[:6] == [3, 4, 2, 5, 1, 6] and s.prefetch_order()[0] == len(volume) // 2
    assert sorted(s.prefetch_order(z=0)) == list(range(len(volume)))


def test_prefetched_slices_are_not_encoded_again(backend, mr) -> None:
    volume, truth = mr[0][6:22], mr[2][6:22]  # 16 slices around the tumour
    box = tuple(int(v) - (6 if i in (2, 5) else 0) for i, v in enumerate(mr[1][0]))
    s = Session(NumpySegmenter(volume, backend, BackendDecoder(backend), MemoryEmbeddingStore()))
    with ThreadPoolExecutor(max_workers=1) as pool:
        handle = s.prefetch(pool, z=box[2])
        k = s.add_object(box)  # runs while the prefetch is still embedding: the two share one encoder lock
        assert handle.result(timeout=600) == len(volume)
    assert s.segmenter.encoder.runs == len(volume)  # each slice once, whoever came first
    runs = s.segmenter.encoder.runs
    order = s.prefetch_order(z=box[5], label=k)
    assert order[: box[5] - box[2] + 1] == sorted(range(box[2], box[5] + 1), key=lambda z: box[5] - z)
    z = box[5] + 2
    s.correct(k, z, box=tuple(int(v) for v in box_from_mask(truth[box[5]], shift=0)))
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert s.prefetch(pool, label=k).result(timeout=600) == len(volume)
    assert s.segmenter.encoder.runs == runs and s.segmenter.encoder.hits >= len(volume)
