"""Interactive sessions (issue 29) on real data: faithful first step, corrections, locks, undo / redo, bad input,
speed (encoder calls) and bounded memory. One Predictor (default backend, real LiteMedSAM weights) with one
in-memory embedding store serves every test, so each bundled slice is encoded once for the whole module."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from medsam_lite.bench.interactive import simulate_object
from medsam_lite.embedding_cache import MemoryEmbeddingStore
from medsam_lite.errors import InputError
from medsam_lite.predictor import Predictor
from medsam_lite.session import Session
from medsam_lite.transforms import box_from_mask
from tests.conftest import EXAMPLES, FIXTURES

CT_SLAB = (96, 112)
"""z-range of the bundled CT used by the fast tests (16 slices; every one of its 5 organs reaches into it)."""


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(embedding_cache=MemoryEmbeddingStore())


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
    return np.ascontiguousarray(data["imgs"][z0:z1]), boxes


def _state(s: Session):
    return s.labels.copy(), {k: (o.locked, dict(o.anchors), o.z_lo, o.z_hi) for k, o in s.objects.items()}


# ---------------------------------------------------------------- faithful first step
def test_first_object_is_the_baselines_mask_mr(predictor, mr) -> None:
    volume, boxes, _ = mr
    s = predictor.session(volume)
    k = s.add_object(tuple(boxes[0]))
    expected = predictor.predict_volume(volume, boxes, progress=False)
    assert k == 1 and s.labels.shape == volume.shape and s.labels.dtype == np.uint8
    assert np.array_equal(s.labels, expected) and expected.any()


def test_objects_in_segments_order_give_its_label_map_ct(predictor, ct_slab) -> None:
    """Unlocked objects added in the order of segment's boxes: exactly predict_volume's label map (later on top)."""
    volume, boxes = ct_slab
    s = predictor.session(volume, lock_previous=False)
    labels = [s.add_object(tuple(b)) for b in boxes]
    assert labels == [1, 2, 3, 4, 5]
    expected = predictor.predict_volume(volume, boxes, progress=False)
    assert np.array_equal(s.labels, expected) and len(np.unique(expected)) == 6


@pytest.mark.slow
def test_objects_give_segments_label_map_whole_ct(predictor) -> None:
    data = np.load(EXAMPLES / "3DBox_CT_abdomen.npz")
    s = predictor.session(data["imgs"], lock_previous=False)
    for box in data["boxes"]:
        s.add_object(tuple(box))
    assert np.array_equal(s.labels, predictor.predict_volume(data["imgs"], data["boxes"], progress=False))


def test_2d_session_equals_predict(predictor) -> None:
    import tifffile

    image = tifffile.imread(FIXTURES / "nuclei_crop_image.tif")
    truth = tifffile.imread(FIXTURES / "nuclei_crop_labels.tif")
    image = np.round((image - image.min()) / (image.max() - image.min()) * 255).astype(np.uint8)
    ids = [i for i in np.unique(truth) if i][:3]
    boxes = np.array([box_from_mask(truth == i, shift=0) for i in ids]).astype(int)
    s = predictor.session(image, lock_previous=False)
    for box in boxes:
        s.add_object(tuple(box))
    predictor.set_image(image)
    assert s.labels.shape == image.shape[:2]
    assert np.array_equal(s.labels, predictor.predict(boxes))


# ---------------------------------------------------------------- corrections
def test_corrections_help_and_reuse_embeddings(predictor, mr) -> None:
    """The simulated user's corrections on the bundled tumour raise DSC; they re-run only the decoder."""
    volume, boxes, truth = mr
    s = predictor.session(volume)
    s.add_object(tuple(boxes[0]))  # embeds the object's slices
    s.undo()
    runs = s.segmenter.encoder.runs
    scores = simulate_object(s, truth, boxes[0], corrections=3)
    assert s.segmenter.encoder.runs == runs, "a correction ran the image encoder"
    assert scores[3] > scores[0] + 0.05 and min(np.diff(scores)) > -0.005, scores


def test_each_slice_is_embedded_once_per_session(mr) -> None:
    volume, boxes, _ = mr
    p = Predictor()  # no store of its own: the session's bounded memory store
    s = p.session(volume)
    k = s.add_object(tuple(boxes[0]))
    depth = int(boxes[0][5] - boxes[0][2] + 1)
    assert s.segmenter.encoder.runs == depth
    s.correct(k, int(boxes[0][5]), box=tuple(int(v) for v in boxes[0][[0, 1, 3, 4]]))
    s.add_object(tuple(boxes[0]))
    assert s.segmenter.encoder.runs == depth


def test_correction_outside_the_range_grows_it(predictor, mr) -> None:
    volume, boxes, truth = mr
    s = predictor.session(volume)
    k = s.add_object(tuple(boxes[0]))
    z1 = int(boxes[0][5])
    before = s.labels.copy()
    box = tuple(int(v) for v in box_from_mask(truth[z1], shift=0))
    s.correct(k, z1 + 2, box=box)
    assert s.objects[k].z_hi == z1 + 2 and (s.labels[z1 + 2] == k).any() and (s.labels[z1 + 1] == k).any()
    assert np.array_equal(s.labels[: int(boxes[0][2])], before[: int(boxes[0][2])])


# ---------------------------------------------------------------- locks, many objects
def test_locked_objects_are_never_overwritten(predictor, mr) -> None:
    volume, boxes, _ = mr
    box = tuple(boxes[0])
    s = predictor.session(volume)  # default: the first object is locked when the second is added
    a = s.add_object(box)
    first = s.labels == a
    b = s.add_object(box)
    assert s.objects[a].locked and not s.objects[b].locked
    assert np.array_equal(s.labels == a, first) and not (s.labels == b)[first].any()
    with pytest.raises(InputError, match="locked"):
        s.correct(a, int(box[2]), box=box[:2] + box[3:5])
    s = predictor.session(volume, lock_previous=False)
    a, b = s.add_object(box), s.add_object(box)
    s.lock(b)
    before_b = s.labels == b
    s.correct(a, int(box[2]) + 1, box=box[:2] + box[3:5])
    assert before_b.any() and np.array_equal(s.labels == b, before_b)  # the correction of a left locked b alone


def test_later_unlocked_object_is_on_top(predictor, mr) -> None:
    volume, boxes, _ = mr
    s = predictor.session(volume, lock_previous=False)
    a = s.add_object(tuple(boxes[0]))
    first = s.labels == a
    b = s.add_object(tuple(boxes[0]))
    assert (s.labels == b).sum() >= 0.9 * first.sum()  # the same box: the later object covers the earlier one


# ---------------------------------------------------------------- undo / redo
def test_undo_redo_round_trip(predictor, mr) -> None:
    volume, boxes, truth = mr
    s = predictor.session(volume)
    k = s.add_object(tuple(boxes[0]))
    after_add = _state(s)
    z = int(boxes[0][2]) + 1
    s.correct(k, z, box=tuple(int(v) for v in box_from_mask(truth[z], shift=0)))
    after_fix = _state(s)
    assert s.undo() and np.array_equal(_state(s)[0], after_add[0]) and _state(s)[1] == after_add[1]
    assert s.redo() and np.array_equal(_state(s)[0], after_fix[0]) and _state(s)[1] == after_fix[1]
    s.remove(k)
    assert not s.labels.any() and k not in s.objects
    assert s.undo() and np.array_equal(s.labels, after_fix[0]) and k in s.objects


# ---------------------------------------------------------------- bad input
def test_bad_input_is_one_line_and_changes_nothing(predictor, mr) -> None:
    volume, boxes, _ = mr
    s = predictor.session(volume)
    assert s.undo() is False  # nothing to undo
    k = s.add_object(tuple(boxes[0]))
    box = tuple(int(v) for v in boxes[0][[0, 1, 3, 4]])
    removed = s.add_object(tuple(boxes[0]))
    s.remove(removed)
    s.lock(k)
    bad_when_locked = [lambda: s.correct(k, 12, box=box)]
    bad = [lambda: s.correct(99, 12, box=box), lambda: s.correct(removed, 12, box=box),
           lambda: s.correct(k, volume.shape[0], box=box), lambda: s.correct(k, -1, box=box),
           lambda: s.correct(k, 12, box=(0, 0, volume.shape[2], 10)), lambda: s.correct(k, 12, box=(10, 10, 5, 20)),
           lambda: s.correct(k, 12, point=(3, 4)), lambda: s.correct(k, 12, point=(3, 4), positive=False),
           lambda: s.correct(k, 12), lambda: s.add_object((0, 0, 0, 300, 10, 3)),
           lambda: s.add_object((5, 5, 3, 2, 9, 4)), lambda: s.add_object((1, 2, 3)),
           lambda: s.add_object((0, 0, 0, 10, 10, volume.shape[0])), lambda: s.remove(removed), lambda: s.lock(42)]
    for calls in (bad_when_locked, bad):
        state, steps = _state(s), len(s._undo)
        for call in calls:
            with pytest.raises(InputError) as err:
                call()
            assert "\n" not in str(err.value)
        assert np.array_equal(_state(s)[0], state[0]) and _state(s)[1] == state[1] and len(s._undo) == steps
        s.unlock(k)
    with pytest.raises(InputError, match="click"):
        s.correct(k, 12, point=(3, 4))
    assert s.undo() and s.objects[k].locked  # undoes the unlock (the last real step), not a bad call


# ---------------------------------------------------------------- memory
def test_memory_is_bounded_50_objects_200_corrections(predictor, mr) -> None:
    volume, _, _ = mr
    crop = np.ascontiguousarray(volume[12:15, 96:160, 160:224])  # 3 real slices of the tumour, 64 x 64
    store = MemoryEmbeddingStore(max_bytes=8 * 4 * 2 ** 20)
    s = Predictor(embedding_cache=store).session(crop)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    labels = []
    for i in range(50):
        x0, y0 = (int(v) for v in rng.integers(0, 40, 2))
        z = int(rng.integers(0, 3))
        labels.append(s.add_object((x0, y0, z, x0 + 20, y0 + 20, z)))
        if i == 10:
            base = tracemalloc.get_traced_memory()[0]
    for i in range(200):
        k = labels[i % 50]
        s.unlock(k)
        x0, y0 = (int(v) for v in rng.integers(0, 40, 2))
        s.correct(k, s.objects[k].z_lo, box=(x0, y0, x0 + 20, y0 + 20))
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(s.objects) == 50 and set(np.unique(s.labels)) <= set([0] + labels)
    assert s.history_nbytes <= s.history_bytes == 4 * crop.size and len(store) <= 3
    assert grown < 2 * s.history_bytes + 2 * 2 ** 20, grown  # diffs + metadata, not a volume per step
    while s.undo():
        pass
    assert s.labels.any()  # the oldest steps fell out of the bounded history


# ---------------------------------------------------------------- progress / cancel (the annotator's jobs)
def test_progress_reports_each_slice_and_cancel_changes_nothing(predictor, mr) -> None:
    """``progress(done, total)`` runs after each decoded slice of add_object / correct; Cancelled raised there
    leaves labels, objects and history as they were (undo then undoes the previous real step)."""
    from medsam_lite.errors import Cancelled

    volume, boxes, truth = mr
    s = predictor.session(volume)
    calls = []
    k = s.add_object(tuple(boxes[0]), progress=lambda d, t: calls.append((d, t)))
    depth = int(boxes[0][5] - boxes[0][2] + 1)
    assert calls == [(i, depth) for i in range(1, depth + 1)]
    z = int(boxes[0][5])
    box = tuple(int(v) for v in box_from_mask(truth[z], shift=0))
    before = _state(s)

    def stop_at_two(done: int, total: int) -> None:
        if done == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        s.correct(k, z, box=box, progress=stop_at_two)
    with pytest.raises(Cancelled):
        s.add_object(tuple(boxes[0]), progress=stop_at_two)
    after = _state(s)
    assert np.array_equal(before[0], after[0]) and before[1] == after[1]
    calls.clear()
    s.correct(k, z, box=box, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == list(range(1, len(calls) + 1))
    assert s.undo() and s.undo() and not s.undo()  # the correction, the object; the cancelled ones left no step


def test_correct_with_z_range_grows_the_object_and_undoes_in_one_step(predictor, mr) -> None:
    """An object drawn on one slice (a one-slice 3D box) propagated over a chosen z-range by ``correct(...,
    z_range=)``: the range grows, the drawn slice keeps the drawn box's mask, one undo step restores all."""
    volume, boxes, truth = mr
    s = predictor.session(volume)
    z = int((boxes[0][2] + boxes[0][5]) // 2)
    x0, y0, x1, y1 = (int(v) for v in boxes[0][[0, 1, 3, 4]])
    k = s.add_object((x0, y0, z, x1, y1, z))
    drawn = s.labels[z].copy()
    with pytest.raises(InputError, match="z_range"):
        s.correct(k, z, box=(x0, y0, x1, y1), z_range=(z + 1, z + 3))
    s.correct(k, z, box=(x0, y0, x1, y1), z_range=(z - 2, z + 2))
    assert (s.objects[k].z_lo, s.objects[k].z_hi) == (z - 2, z + 2)
    assert np.array_equal(s.labels[z], drawn)
    assert all((s.labels[zz] == k).any() for zz in (z - 2, z + 2)) and not (s.labels[z + 3] == k).any()
    assert s.undo() and (s.objects[k].z_lo, s.objects[k].z_hi) == (z, z)
    assert np.array_equal(s.labels[z], drawn) and not (s.labels[z + 1] == k).any()
