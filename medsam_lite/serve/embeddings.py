"""Slice embeddings of ``medsam-lite serve``: the one embedding path of :mod:`medsam_lite.embedding_cache`
behind a serialising backend.

Concurrency: one model (backend) is shared by every case and request. :class:`CachingBackend` wraps it: a
lock serialises encoder / decoder calls, and encoder outputs go through one
:class:`~medsam_lite.embedding_cache.CachedEncoder` over a bounded
:class:`~medsam_lite.embedding_cache.MemoryEmbeddingStore` (the key: the model-frame input, the weights, the
backend and precision), so a slice is encoded once whoever asks (background embedding, a box, a propagation
through ``Predictor.predict_volume``). This module adds only the scheduling: background encodes yield to
foreground (user-facing) operations.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Union

import numpy as np

from ..arrays import is_tensor
from ..embedding_cache import CachedEncoder, EmbeddingStore

Array = Union[np.ndarray, Any]
"""A numpy array (the numpy path), or a torch tensor (the torch reference's caller)."""


class CachingBackend:
    """A :class:`~medsam_lite.backends.Backend` wrapper: serialises calls and caches encoder outputs.

    ``encode`` returns the stored embedding of an identical input, so results equal the wrapped
    backend's exactly; ``decode`` is passed through. One model call runs at a time; background
    encodes (:meth:`encode_background`) wait while any :meth:`foreground` operation (a request, a
    propagation) is active, so a user's box never queues behind the whole background embedding.
    """

    def __init__(self, inner: Any, store: EmbeddingStore) -> None:
        self.inner = inner
        self.store = store
        self.name = getattr(inner, "name", "")
        self.precision = getattr(inner, "precision", "")
        self.weights_sha256 = getattr(inner, "weights_sha256", None)
        """The wrapped backend's (so a session's embedding keys equal this store's: one entry per slice)."""
        self.encoder = CachedEncoder(inner, store)
        self._cond = threading.Condition()
        self._busy = False
        self._foreground = 0

    @property
    def encoder_runs(self) -> int:
        """Encoder runs of the wrapped backend so far (store hits excluded)."""
        return self.encoder.runs

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """Mark a user-facing operation: background encodes pause until it ends."""
        with self._cond:
            self._foreground += 1
        try:
            yield
        finally:
            with self._cond:
                self._foreground -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def _model(self, background: bool = False) -> Iterator[None]:
        with self._cond:
            while self._busy or (background and self._foreground > 0):
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    @property
    def foreground_active(self) -> bool:
        """Whether a foreground operation runs now (background encodes wait)."""
        return self._foreground > 0

    def cached(self, images: Array) -> bool:
        """Whether every (3, 256, 256) input of the (B, 3, 256, 256) batch is stored."""
        return all(self.encoder.lookup(img) is not None for img in images)

    def _encode(self, images: Array, background: bool) -> Array:
        out = []
        for i in range(images.shape[0]):
            image = images[i : i + 1]
            embedding = self.encoder.lookup(image)
            if embedding is None:
                with self._model(background):
                    embedding = self.encoder.encode_one(image)  # looks again: another thread may have stored it
            out.append(embedding)
        if is_tensor(images):  # the torch reference's caller (torch is imported already)
            import torch

            return torch.cat(out)
        return np.concatenate(out)  # the numpy path: no torch

    def encode(self, images: Array) -> Array:
        """(B, 3, 256, 256) model-frame inputs -> (B, 256, 64, 64) embeddings (stored ones reused)."""
        return self._encode(images, background=False)

    def encode_background(self, images: Array) -> Array:
        """:meth:`encode` that yields to foreground operations."""
        return self._encode(images, background=True)

    def decode(self, embedding: Array, boxes_256: Array) -> Array:
        with self._model():
            return self.inner.decode(embedding, boxes_256)
