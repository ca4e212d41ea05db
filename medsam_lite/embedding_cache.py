"""Persistent slice-embedding cache: (1, 256, 64, 64) float32 image embeddings on disk.

Re-running a case (another box, another threshold, a re-opened viewer) then skips the encoder for
every slice already seen. A key (:func:`embedding_key`) is the SHA-256 of

* the encoder input: the preprocessed (1, 3, 256, 256) model-frame tensor bytes, or the raw slice
  bytes with dtype and shape (:func:`input_digest`),
* the model fingerprint (:func:`medsam_lite.checkpoint.state_sha256`),
* the backend name and precision (an OpenVINO bf16 embedding is not an eager fp32 one).

Entries are ``<key>.npy`` files written atomically (temporary name + rename), read back with
``np.load(allow_pickle=False)`` (never unpickled), and validated (shape, dtype, finite); a corrupt or
truncated entry is removed and treated as a miss. The folder is kept under ``max_bytes`` by deleting
the least recently used entries (by modification time; a hit refreshes it).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch

from .io_utils import atomic_path

EMBEDDING_SHAPE: Tuple[int, int, int, int] = (1, 256, 64, 64)
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
"""Default size bound: 2 GiB (~500 slice embeddings of 4 MiB)."""
SUFFIX = ".npy"


def input_digest(array: Union[np.ndarray, torch.Tensor]) -> str:
    """SHA-256 of an array's dtype, shape and bytes: a preprocessed (1, 3, 256, 256) model-frame tensor or a
    raw (H, W) / (H, W, 3) slice."""
    data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    data = np.ascontiguousarray(data)
    digest = hashlib.sha256(f"{data.dtype.str}|{data.shape}|".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def embedding_key(input_sha256: str, model_sha256: str, backend: str, precision: str) -> str:
    """Cache key (hex SHA-256) of one slice embedding; see the module docstring."""
    text = f"medsam-lite-embedding-v1|{input_sha256}|{model_sha256}|{backend}|{precision}"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class EmbeddingCache:
    """A folder of ``<key>.npy`` embeddings bounded to ``max_bytes`` (LRU eviction by mtime).

    ``get(key)`` -> (1, 256, 64, 64) float32 tensor or None; ``put(key, embedding)`` stores one.
    """

    folder: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")

    def _path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"embedding cache keys are lower-case hex digests, got {key!r}")
        return self.folder / f"{key}{SUFFIX}"

    def get(self, key: str) -> Optional[torch.Tensor]:
        """The cached (1, 256, 64, 64) float32 embedding of ``key``, or None (missing, corrupt: removed)."""
        path = self._path(key)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)
            return None
        if array.shape != EMBEDDING_SHAPE or array.dtype != np.float32 or not np.isfinite(array).all():
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # mark as recently used
        except OSError:
            pass
        return torch.from_numpy(np.ascontiguousarray(array))

    def put(self, key: str, embedding: torch.Tensor) -> None:
        """Store a (1, 256, 64, 64) embedding atomically, then evict LRU entries beyond ``max_bytes``."""
        array = embedding.detach().cpu().numpy() if isinstance(embedding, torch.Tensor) else np.asarray(embedding)
        if tuple(array.shape) != EMBEDDING_SHAPE:
            raise ValueError(f"embedding must be {EMBEDDING_SHAPE}, got {tuple(array.shape)}")
        path = self._path(key)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        self.evict(keep=path)

    def _entries(self) -> Iterator[Tuple[float, int, Path]]:
        for path in self.folder.glob(f"*{SUFFIX}"):
            if path.name.startswith("."):
                continue  # a temporary file being written
            try:
                stat = path.stat()
            except OSError:
                continue
            yield stat.st_mtime, stat.st_size, path

    def size_bytes(self) -> int:
        """Total bytes of the entries now in the folder."""
        return sum(size for _, size, _ in self._entries())

    def evict(self, keep: Optional[Path] = None) -> int:
        """Delete least recently used entries until the folder holds at most ``max_bytes``; returns how many.
        ``keep`` (the entry just written) is deleted last, only if it alone exceeds the bound."""
        entries = sorted(self._entries(), key=lambda e: (e[2] == keep, e[0]))
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()
