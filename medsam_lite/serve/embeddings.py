"""Slice embeddings of ``medsam-lite serve``: the in-memory store and the caching, serialising backend.

Every use of these in the server goes through this module (the persistent cache of
:mod:`medsam_lite.embedding_cache` is the other store; the two are being unified).

Concurrency: one model (backend) is shared by every case and request. :class:`CachingBackend` wraps
it: a lock serialises encoder / decoder calls, and encoder outputs are kept in an
:class:`EmbeddingStore` keyed by the content of the model-frame input, so a slice is encoded once
whoever asks (background embedding, a box, a propagation through ``Predictor.predict_volume``).
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from typing import Any, Iterator, Optional, Protocol

import torch


class EmbeddingStore(Protocol):
    """Where slice embeddings live, keyed by a digest of the model-frame input (the persistent-cache hook)."""

    def get(self, key: str) -> Optional[torch.Tensor]: ...

    def put(self, key: str, embedding: torch.Tensor) -> None: ...


class MemoryEmbeddingStore:
    """LRU in-memory store of (1, 256, 64, 64) float32 embeddings, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[torch.Tensor]:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, embedding: torch.Tensor) -> None:
        size = embedding.element_size() * embedding.nelement()
        with self._lock:
            if key in self._items:
                return
            self._items[key] = embedding
            self._bytes += size
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.element_size() * old.nelement()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items


def input_key(images: torch.Tensor) -> str:
    """Digest of one (3, 256, 256) float32 model-frame input."""
    return hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=20).hexdigest()


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
        self.name = getattr(inner, "name", "torch")
        self.precision = getattr(inner, "precision", "fp32")
        self.encoder_runs = 0
        self._cond = threading.Condition()
        self._busy = False
        self._foreground = 0

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

    def cached(self, images: torch.Tensor) -> bool:
        """Whether every (3, 256, 256) input of the (B, 3, 256, 256) batch is stored."""
        return all(self.store.get(input_key(img)) is not None for img in images)

    def _encode(self, images: torch.Tensor, background: bool) -> torch.Tensor:
        out = []
        for img in images:
            key = input_key(img)
            emb = self.store.get(key)
            if emb is None:
                with self._model(background):
                    emb = self.store.get(key)
                    if emb is None:
                        emb = self.inner.encode(img[None])[0].detach().clone()
                        self.encoder_runs += 1
                        self.store.put(key, emb)
            out.append(emb)
        return torch.stack(out)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) model-frame inputs -> (B, 256, 64, 64) embeddings (stored ones reused)."""
        return self._encode(images, background=False)

    def encode_background(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` that yields to foreground operations."""
        return self._encode(images, background=True)

    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        with self._model():
            return self.inner.decode(embedding, boxes_256)
