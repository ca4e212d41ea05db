"""The session's one window onto inference: the implementations of :class:`~medsam_lite.session.SliceSegmenter`.

:class:`~medsam_lite.session.Session` (state + correction algorithm) never touches a network, a tensor or a
cache; it asks a :class:`~medsam_lite.session.SliceSegmenter` for masks. Two implementations, one per propagator
(the Predictor's own choice, :attr:`~medsam_lite.predictor.Predictor.uses_torch`), built from the propagator's
building blocks and the one embedding store (:mod:`medsam_lite.embedding_cache`):

* :class:`NumpySegmenter` over :class:`~medsam_lite.propagation_numpy.NumpyPropagator` (OpenVINO / ONNX Runtime:
  the default path, no torch);
* :class:`PropagatorSegmenter` over the torch :class:`~medsam_lite.propagation.Propagator` (the reference
  backend; imports torch when built).

Both give the same masks (tests/test_segmenter.py), with the same three building blocks:

* ``embedding(z)``: the propagator's ``encode_image`` behind a :class:`~medsam_lite.embedding_cache.CachedEncoder`
  (store hit, or the backend's encoder once, stored);
* ``propagate_box(box, label)``: the propagator's ``propagate_box`` (the baseline's whole walk for one 3D box,
  the code ``segment_3d`` runs), on the box's z-range only;
* ``propagate(box, order, prev, label)``: the propagator's ``propagate_run`` one slice at a time (the baseline's
  rule: prompt = box of the previous slice's mask in the 256 frame widened by 3 px, or the given box when
  that mask is empty), so the caller may stop the walk after any slice.

Threads: ``embedding(z)`` may run in a caller's worker thread (:meth:`~medsam_lite.session.Session.prefetch`)
while the caller's own thread decodes; encoder runs are serialised by one lock per segmenter (the store lookup
inside it, so a slice the worker has just embedded is a hit, never encoded twice), the decoder runs unlocked
(the backends' encoder and decoder use separate inference requests).

Frames: volumes (D, H, W) uint8 (a 2D image is (1, H, W) or (1, H, W, 3)), z = slice index; boxes
``(x0, y0, x1, y1)`` / ``(x0, y0, z0, x1, y1, z1)`` in original pixel / voxel indices, both ends inclusive;
masks (H, W) bool in the original frame.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from .embedding_cache import CachedEncoder, EmbeddingStore
from .propagation_numpy import NumpyPropagator
from .transforms import scale_boxes

if TYPE_CHECKING:
    from torch import nn

Progress = Callable[[int, int], None]


class _SerialEncoder:
    """A :class:`CachedEncoder` called under a lock: one encoder run at a time, store lookup included."""

    def __init__(self, encoder: CachedEncoder, lock: threading.Lock) -> None:
        self.encoder, self.lock = encoder, lock

    def __call__(self, images: Any) -> Any:
        with self.lock:
            return self.encoder(images)


class _ClickMixin:
    """The click decode both segmenters share (:mod:`medsam_lite.clicks`); each gives ``slice_embedding(z)``."""

    shape: Tuple[int, int, int]

    def slice_embedding(self, z: int) -> Any:
        """(1, 256, 64, 64) embedding of slice z from the store (the encoder runs at most once)."""
        raise NotImplementedError

    click_model: Optional[Any] = None
    """The :class:`~medsam_lite.clicks.ClickModel` of :meth:`click_mask` (None: the shipped one, loaded on first
    use)."""

    def click_mask(self, z: int, box: Sequence[int], clicks: Sequence[Tuple[float, float, bool]]) -> np.ndarray:
        """(H, W) bool mask of slice ``z`` refined by ``clicks`` ((x, y, positive), original pixels) within ``box``
        ((4,) XYXY pixels): :func:`medsam_lite.clicks.replay` on the slice's stored embedding. InputError (nothing
        decoded) for a click outside the image, or when no click-trained weights are available."""
        from .clicks import Click, check_clicks, replay, shipped_click_model
        from .errors import InputError

        height, width = self.shape[1], self.shape[2]
        points = [Click(float(x), float(y), bool(p)) for x, y, p in clicks]
        check_clicks(points, (height, width))
        if self.click_model is None:
            self.click_model = shipped_click_model()
        if self.click_model is None:
            raise InputError("click corrections (point=...) need click-trained prompt weights, which this install "
                             "lacks (docs/clicks.md); correct with box=(x0, y0, x1, y1)")
        embedding = self.slice_embedding(z)
        box_256 = scale_boxes(np.asarray([box[:4]], dtype=np.float64), (height, width))[0]
        return replay(self.click_model, embedding, box_256, points, (height, width))


class NumpySegmenter(_ClickMixin):
    """:class:`~medsam_lite.session.SliceSegmenter` over the numpy twin (no torch; see the module docstring).

    Args:
        volume: (D, H, W) uint8, or (1, H, W[, 3]) for a 2D image.
        backend: a :class:`~medsam_lite.backends.Backend` speaking numpy (its ``encode`` runs behind ``store``).
        decoder: callable (embedding (1, 256, 64, 64), (N, 4) model-frame boxes) -> (N, 1, 256, 256) logits
            (the Predictor's ``BackendDecoder``).
        store: the embedding store (each slice is encoded once while the store holds it).
    ``encoder`` is the :class:`CachedEncoder`: ``encoder.runs`` counts real encoder runs.
    """

    def __init__(self, volume: np.ndarray, backend: Any, decoder: Callable[[Any, Any], Any],
                 store: EmbeddingStore) -> None:
        self.volume = np.ascontiguousarray(volume)
        self.shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
        self.encoder = CachedEncoder(backend, store)
        self.lock = threading.Lock()
        # cache=False: the store is the cache (a per-call dict would hold every walked slice)
        self.propagator = NumpyPropagator(_SerialEncoder(self.encoder, self.lock), decoder, cache=False,
                                          decode_batch=1)

    def embedding(self, z: int) -> None:
        self.propagator.encode_image(self.volume[z])

    def slice_embedding(self, z: int) -> Any:
        return self.propagator.encode_image(self.volume[z])[0]

    def propagate_box(self, box: Sequence[int], label: int,
                      progress: Optional[Progress] = None) -> Dict[int, np.ndarray]:
        z0, z1 = int(box[2]), int(box[5])
        segs = np.zeros((z1 - z0 + 1,) + self.shape[1:], dtype=np.uint8)
        local = np.array([int(box[0]), int(box[1]), 0, int(box[3]), int(box[4]), z1 - z0], dtype=np.int64)
        self.propagator.callback = progress
        try:  # the box's z-range only: z_mid shifts with it, as int(a + z0) = int(a) + z0
            self.propagator.propagate_box(self.volume[z0:z1 + 1], segs, local, int(label), {}, 0, z1 - z0 + 1)
        finally:
            self.propagator.callback = None
        masks = segs == int(label)
        return {z0 + i: masks[i] for i in range(len(masks))}

    def propagate(self, box: Sequence[int], order: Sequence[int], prev: Optional[np.ndarray],
                  label: int) -> Iterator[Tuple[int, np.ndarray]]:
        height, width = self.shape[1], self.shape[2]
        given = scale_boxes(np.asarray([box[:4]], dtype=np.float64), (height, width))[0]
        mask = np.zeros((height, width), dtype=bool) if prev is None else np.asarray(prev, dtype=bool)
        scratch = np.zeros((1, height, width), dtype=np.uint8)
        for z in order:
            scratch[0] = 0
            mask, _ = self.propagator.propagate_run(self.volume[z:z + 1], scratch, int(label), given, [0], mask,
                                                    {}, 0, 0)
            yield int(z), mask.copy()


class PropagatorSegmenter(_ClickMixin):
    """:class:`~medsam_lite.session.SliceSegmenter` over the torch :class:`~medsam_lite.propagation.Propagator`
    (the reference backend; see the module docstring). Arguments as :class:`NumpySegmenter` (``decoder`` takes and
    returns tensors). ``encoder`` is the :class:`CachedEncoder`: ``encoder.runs`` counts real encoder runs.
    """

    def __init__(self, volume: np.ndarray, backend: Any, decoder: "nn.Module", store: EmbeddingStore) -> None:
        import torch

        from .propagation import ProgressPropagator

        self._torch = torch
        self.volume = torch.from_numpy(np.ascontiguousarray(volume))
        self.shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
        self.encoder = CachedEncoder(backend, store)
        self.lock = threading.Lock()
        # cache=False: the store is the cache (the Propagator's per-call dict would hold every walked slice)
        self.propagator = ProgressPropagator(_SerialEncoder(self.encoder, self.lock), decoder, cache=False,
                                             decode_batch=1)

    def embedding(self, z: int) -> None:
        with self._torch.inference_mode():
            self.propagator.encode_image(self.volume[z])

    def slice_embedding(self, z: int) -> Any:
        with self._torch.inference_mode():
            return self.propagator.encode_image(self.volume[z])[0]

    def propagate_box(self, box: Sequence[int], label: int,
                      progress: Optional[Progress] = None) -> Dict[int, np.ndarray]:
        torch = self._torch
        z0, z1 = int(box[2]), int(box[5])
        segs = torch.zeros((z1 - z0 + 1,) + self.shape[1:], dtype=torch.uint8)
        local = torch.tensor([int(box[0]), int(box[1]), 0, int(box[3]), int(box[4]), z1 - z0], dtype=torch.int64)
        self.propagator.callback = progress
        try:
            with torch.inference_mode():  # the box's z-range only: z_mid shifts with it, as int(a + z0) = int(a) + z0
                self.propagator.propagate_box(self.volume[z0:z1 + 1], segs, local, int(label), {}, 0, z1 - z0 + 1)
        finally:
            self.propagator.callback = None
        masks = (segs == int(label)).numpy()
        return {z0 + i: masks[i] for i in range(len(masks))}

    def propagate(self, box: Sequence[int], order: Sequence[int], prev: Optional[np.ndarray],
                  label: int) -> Iterator[Tuple[int, np.ndarray]]:
        torch = self._torch
        height, width = self.shape[1], self.shape[2]
        given = torch.from_numpy(scale_boxes(np.asarray([box[:4]], dtype=np.float64), (height, width))[0])
        mask = torch.zeros((height, width), dtype=torch.bool) if prev is None else torch.from_numpy(prev)
        scratch = torch.zeros((1, height, width), dtype=torch.uint8)
        for z in order:
            with torch.inference_mode():
                mask, _ = self.propagator.propagate_run(self.volume[z:z + 1], scratch, int(label), given, [0], mask,
                                                        {}, 0, 0)
            yield int(z), mask.numpy().copy()
