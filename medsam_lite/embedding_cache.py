"""The one embedding path: slice embeddings keyed once, kept in memory or on disk, reached through one encoder.

As micro-sam's ``precompute_image_embeddings`` is the one embedding path of its annotators, evaluation and
inference, every caller of the image encoder that wants reuse goes through this module: the Predictor (a
persistent ``--embedding-cache`` folder, or a memory store), the annotator's server (a bounded memory store
shared by every case) and the fidelity report (a memory store cleared per volume).

* :func:`embedding_key`, the one key: the SHA-256 of

  * the encoder input, the preprocessed (1, 3, 256, 256) model-frame tensor (:func:`input_digest` of its
    dtype, shape and bytes),
  * the model fingerprint (the backend's ``weights_sha256``),
  * the backend name and precision (an OpenVINO bf16 embedding is not an eager fp32 one).

* :class:`EmbeddingStore`, the one protocol (``get(key)`` -> (1, 256, 64, 64) float32 numpy array or None,
  ``put(key, embedding)``: a numpy array or a torch tensor, stored as a numpy copy), with two
  implementations: :class:`MemoryEmbeddingStore` (LRU, bounded in bytes, thread-safe) and :class:`DiskEmbeddingStore` (a folder, bounded in bytes, LRU by modification time).
* :class:`CachedEncoder`, the one way to run a backend's encoder behind a store: numpy in, numpy out for the
  torch-free path (:class:`~medsam_lite.propagation_numpy.NumpyPropagator`), torch in, torch out for the
  reference :class:`~medsam_lite.propagation.Propagator` and the server (:mod:`medsam_lite.arrays`).

This module imports no torch.

Disk entries are ``<key>.emb`` files written atomically (temporary name + rename): a magic line, an
HMAC-SHA256 tag and the ``.npy`` bytes. The tag binds the embedding to its key under a per-user secret
(:func:`user_secret`: 32 random bytes in the user config folder, mode 0600), so an entry crafted by someone
who can write to a shared cache folder but cannot read the user's secret is a miss, never trusted. Entries
are read back with ``np.load(allow_pickle=False)`` (never unpickled) and validated (shape, dtype, finite); an
unreadable entry is removed, a foreign or forged one is ignored (and replaced on the next ``put``).

The :class:`~medsam_lite.propagation.Propagator` (and its numpy twin) keeps one more, deliberately: the
per-call working set of a volume's slice embeddings inside the TorchScript algorithm (a local dict, dropped
once no later box visits a slice). It is part of the exported algorithm, not a store: a TorchScript module
cannot call back into Python stores.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Tuple, Union

import numpy as np

from .arrays import is_tensor, like, to_numpy
from .io_utils import atomic_path

EMBEDDING_SHAPE: Tuple[int, int, int, int] = (1, 256, 64, 64)
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
"""Default size bound of either store: 2 GiB (~500 slice embeddings of 4 MiB)."""
SUFFIX = ".emb"
MAGIC = b"medsam-lite-embedding-v2\n"
TAG_BYTES = 32
SECRET_ENV = "MEDSAM_LITE_SECRET_FILE"
"""Environment variable naming the secret file (default: ``embedding-cache.key`` in the user config folder)."""


def input_digest(array: Any) -> str:
    """SHA-256 of an array's dtype, shape and bytes: a preprocessed (1, 3, 256, 256) model-frame array (numpy or
    torch: the same data gives the same digest) or a raw (H, W) / (H, W, 3) slice."""
    data = array.detach().cpu().numpy() if is_tensor(array) else np.asarray(array)
    data = np.ascontiguousarray(data)
    digest = hashlib.sha256(f"{data.dtype.str}|{data.shape}|".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def embedding_key(input_sha256: str, model_sha256: str, backend: str, precision: str) -> str:
    """The key (hex SHA-256) of one slice embedding; see the module docstring."""
    text = f"medsam-lite-embedding-v1|{input_sha256}|{model_sha256}|{backend}|{precision}"
    return hashlib.sha256(text.encode()).hexdigest()


def _check_embedding(embedding: Any) -> np.ndarray:
    """A float32 numpy copy of a (1, 256, 64, 64) embedding (numpy array or torch tensor); ValueError otherwise."""
    if tuple(embedding.shape) != EMBEDDING_SHAPE:
        raise ValueError(f"embedding must be {EMBEDDING_SHAPE}, got {tuple(embedding.shape)}")
    return np.array(to_numpy(embedding), dtype=np.float32, copy=True)


class EmbeddingStore(Protocol):
    """Where slice embeddings live: ``get(key)`` -> (1, 256, 64, 64) float32 numpy array or None;
    ``put(key, emb)`` (numpy or torch)."""

    def get(self, key: str) -> Optional[np.ndarray]: ...

    def put(self, key: str, embedding: Any) -> None: ...


class MemoryEmbeddingStore:
    """LRU in-memory store of (1, 256, 64, 64) float32 numpy embeddings, bounded to ``max_bytes`` (thread-safe).
    The entry just stored is evicted last, so one entry larger than the bound still round-trips."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[np.ndarray]:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, embedding: Any) -> None:
        with self._lock:
            if key in self._items:
                return
        array = _check_embedding(embedding)
        with self._lock:
            if key in self._items:
                return
            self._items[key] = array
            self._bytes += array.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def size_bytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return self._bytes

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _secret_path() -> Path:
    named = os.environ.get(SECRET_ENV)
    if named:
        return Path(named)
    import platformdirs

    return Path(platformdirs.user_config_dir("medsam-lite")) / "embedding-cache.key"


def user_secret(path: Optional[Path] = None) -> bytes:
    """The per-user 32-byte secret that tags disk entries, created on first use (mode 0600, never
    overwritten: created under a temporary name and linked into place)."""
    path = Path(path) if path is not None else _secret_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(TAG_BYTES))
        try:
            os.link(tmp, path)  # fails if another process created it first: then theirs is the secret
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        data = path.read_bytes()
    if len(data) != TAG_BYTES:
        raise ValueError(f"{path}: the embedding-cache secret must be {TAG_BYTES} bytes (delete it to renew)")
    return data


class DiskEmbeddingStore:
    """A folder of ``<key>.emb`` entries bounded to ``max_bytes`` (LRU eviction by mtime), each bound to its
    key by an HMAC under ``secret`` (default: :func:`user_secret`); see the module docstring.

    ``get(key)`` -> (1, 256, 64, 64) float32 numpy array or None; ``put(key, embedding)`` stores one.
    """

    def __init__(self, folder: Union[str, Path], max_bytes: int = DEFAULT_MAX_BYTES,
                 secret: Optional[bytes] = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self._secret = secret if secret is not None else user_secret()

    def _path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"embedding cache keys are lower-case hex digests, got {key!r}")
        return self.folder / f"{key}{SUFFIX}"

    def _tag(self, key: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, key.encode() + b"|" + payload, hashlib.sha256).digest()

    def get(self, key: str) -> Optional[np.ndarray]:
        """The stored (1, 256, 64, 64) float32 embedding of ``key``, or None (missing; unreadable: removed;
        tagged by another secret or forged: ignored)."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        head = len(MAGIC) + TAG_BYTES
        if not data.startswith(MAGIC) or len(data) <= head:
            path.unlink(missing_ok=True)
            return None
        tag, payload = data[len(MAGIC):head], data[head:]
        try:
            array = np.load(io.BytesIO(payload), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            path.unlink(missing_ok=True)  # unreadable: corrupt or truncated
            return None
        if not hmac.compare_digest(tag, self._tag(key, payload)):
            return None  # well-formed but not ours (another user's secret, or forged): never trusted, kept
        if array.shape != EMBEDDING_SHAPE or array.dtype != np.float32 or not np.isfinite(array).all():
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # mark as recently used
        except OSError:
            pass
        return np.ascontiguousarray(array)

    def put(self, key: str, embedding: Any) -> None:
        """Store a (1, 256, 64, 64) embedding (numpy or torch) atomically, then evict LRU entries beyond
        ``max_bytes``."""
        array = _check_embedding(embedding)
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        payload = buffer.getvalue()
        path = self._path(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(MAGIC + self._tag(key, payload) + payload)
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


EmbeddingCache = DiskEmbeddingStore
"""The former name of :class:`DiskEmbeddingStore` (the ``--embedding-cache`` folder)."""


def open_store(store: Any) -> Optional[EmbeddingStore]:
    """A store for a folder path (:class:`DiskEmbeddingStore`); None stays None; a store is used as it is."""
    if store is None or not isinstance(store, (str, os.PathLike)):
        return store
    return DiskEmbeddingStore(Path(store))


class CachedEncoder:
    """A backend's ``encode`` behind an :class:`EmbeddingStore`: (B, 3, 256, 256) model-frame inputs ->
    (B, 256, 64, 64) embeddings, each image looked up by :meth:`key` and encoded only on a miss (the result
    equals the backend's exactly). ``store=None``: no reuse, a plain call. ``hits`` / ``runs`` count lookups
    answered by the store and encoder runs.

    Numpy in, numpy out (the torch-free :class:`~medsam_lite.propagation_numpy.NumpyPropagator`); torch in,
    torch out (the reference :class:`~medsam_lite.propagation.Propagator` runs it as its encoder callable, the
    server's :class:`~medsam_lite.serve.embeddings.CachingBackend` looks inputs up). A numpy and a torch input
    with the same data have the same key.
    """

    def __init__(self, backend: Any, store: Optional[EmbeddingStore] = None) -> None:
        self.backend, self.store = backend, store
        self.hits = 0
        self.runs = 0

    def key(self, image: Any) -> str:
        """The :func:`embedding_key` of one (3, 256, 256) or (1, 3, 256, 256) model-frame input."""
        image = image if image.ndim == 4 else image[None]
        return embedding_key(input_digest(image), str(getattr(self.backend, "weights_sha256", "") or ""),
                             str(getattr(self.backend, "name", "")), str(getattr(self.backend, "precision", "")))

    def lookup(self, image: Any) -> Any:
        """The stored (1, 256, 64, 64) embedding of one input (in the input's kind), or None."""
        if self.store is None:
            return None
        hit = self.store.get(self.key(image))
        return None if hit is None else like(hit, image)

    def encode_one(self, image: Any) -> Any:
        """(1, 3, 256, 256) -> (1, 256, 64, 64): the stored embedding, else the backend's ``encode``, stored."""
        key = self.key(image) if self.store is not None else ""
        if self.store is not None:
            hit = self.store.get(key)
            if hit is not None:
                self.hits += 1
                return like(hit, image)
        embedding = self.backend.encode(image)
        self.runs += 1
        if self.store is not None:
            self.store.put(key, embedding)  # the store keeps its own copy
        return embedding

    def __call__(self, images: Any) -> Any:
        if self.store is None:
            self.runs += 1
            return self.backend.encode(images)
        out = [self.encode_one(images[i : i + 1]) for i in range(images.shape[0])]
        if is_tensor(images):
            return sys.modules["torch"].cat(out)
        return np.concatenate(out)
