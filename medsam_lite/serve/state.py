"""Server-side state of ``medsam-lite serve``: allowed roots, open cases, embeddings, jobs.

Frames: a case's ``volume`` is (D, H, W) uint8 (2D cases: D = 1, or (1, H, W, 3) for colour), the
array the model sees; ``labels`` is (D, H, W) uint8, value = object id (0 = background). Boxes are
in original pixels: 2D ``[x_min, y_min, x_max, y_max]`` on slice ``z``, 3D
``[x_min, y_min, z_min, x_max, y_max, z_max]``; both ends inclusive (see :mod:`medsam_lite.predictor`).

Concurrency: one model (backend) is shared by every case and request. :class:`CachingBackend` wraps
it: a lock serialises encoder / decoder calls, and encoder outputs are kept in an
:class:`EmbeddingStore` keyed by the content of the model-frame input, so a slice is encoded once
whoever asks (background embedding, a box, a propagation through ``Predictor.predict_volume``).
Each request builds its own light :class:`~medsam_lite.predictor.Predictor` on that backend, so the
predictor's per-image state is never shared between tabs. Each case has its own lock for its labels.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from ..errors import InputError
from ..imageio import Case, read_case
from ..normalize import (CT_WINDOWS, Window, parse_window, percentile_bounds, scale_to_unit, unit_to_uint8,
                         window_bounds)

COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
)
"""Object colours (RGB), cycled by object id."""

HISTORY_LIMIT = 30
"""Undo steps kept per case."""


# ------------------------------------------------------------------ configuration
@dataclass
class ServeConfig:
    """Settings of one server.

    ``roots``: files / folders whose contents may be opened by path (resolved, symlinks followed).
    ``output_root``: folder under which masks may be saved. ``model``: pretrained name or checkpoint
    path (None = default). ``max_upload_mb``: upload size limit. ``max_cases``: open cases kept (the
    oldest is closed beyond). ``embedding_cache_mb``: in-memory slice-embedding budget (4 MiB per slice).
    """

    roots: Sequence[Path] = ()
    output_root: Path = Path(".")
    model: Optional[str] = None
    backend: str = "auto"
    precision: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_mb: float = 512.0
    max_cases: int = 8
    embedding_cache_mb: float = 2048.0
    preload: Sequence[Path] = ()


def model_input(case: Case, window: Optional[Window] = None) -> np.ndarray:
    """The uint8 array the model sees for ``case``: (D, H, W) for volumes, (H, W[, 3]) for 2D.

    The same contract as ``medsam-lite segment`` (:func:`medsam_lite.segment.model_input`: the
    normalisation table of prep; a window means CT; DICOM by its Modality tag).
    """
    from ..segment import model_input as segment_model_input

    return segment_model_input(case, None, window)[0]


def resolve_under(path: str | os.PathLike, roots: Sequence[Path], what: str = "path") -> Path:
    """``path`` resolved (symlinks and ``..`` followed); InputError unless it is one of ``roots`` or
    inside a root folder. ``roots`` must already be resolved."""
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"{what} not found", path) from exc
    for root in roots:
        if resolved == root or (root.is_dir() and resolved.is_relative_to(root)):
            return resolved
    raise InputError(f"{what} is outside the allowed roots (the paths given to 'medsam-lite serve')", path)


# ------------------------------------------------------------------ embeddings
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


# ------------------------------------------------------------------ jobs
@dataclass
class Job:
    """A background task (embedding a case, a propagation) with progress ``done / total``."""

    id: str
    kind: str
    case_id: str
    total: int
    done: int = 0
    state: str = "running"  # running | done | error | cancelled
    message: str = ""
    started: float = field(default_factory=time.perf_counter)
    ms: Optional[float] = None
    result: Any = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: Optional[threading.Thread] = None

    def to_json(self) -> Dict[str, Any]:
        out = {"id": self.id, "kind": self.kind, "case": self.case_id, "state": self.state, "done": self.done,
               "total": self.total, "message": self.message, "ms": self.ms}
        if isinstance(self.result, dict):
            out.update({k: v for k, v in self.result.items() if k != "labels"})
        return out


class Cancelled(Exception):
    """Raised inside a job's progress callback when the job was cancelled."""


# ------------------------------------------------------------------ cases
@dataclass
class SegObject:
    """One segmented object: label ``id`` in the label map, its last box and the slices it covers."""

    id: int
    name: str
    colour: Tuple[int, int, int]
    box: List[float]
    z: int
    z_range: Optional[Tuple[int, int]] = None

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "name": self.name, "colour": list(self.colour), "box": self.box, "z": self.z,
                "z_range": list(self.z_range) if self.z_range else None}


class CaseState:
    """An open case: its reader output, the model input, the label map, objects and undo history."""

    def __init__(self, case_id: str, case: Case, window: Optional[Window] = None, display_name: str = "") -> None:
        self.id = case_id
        self.case = case
        self.name = display_name or case.path.name
        self.lock = threading.RLock()
        u8 = model_input(case, window)
        self.is_3d = bool(case.is_3d)
        self.rgb = (not self.is_3d) and u8.ndim == 3
        self.volume = u8 if self.is_3d else u8[None]  # (D, H, W) or (1, H, W[, 3])
        self.depth, self.height, self.width = self.volume.shape[0], self.volume.shape[1], self.volume.shape[2]
        self.labels = np.zeros((self.depth, self.height, self.width), np.uint8)
        self.objects: Dict[int, SegObject] = {}
        self.undo: List[Tuple[np.ndarray, Dict[int, SegObject]]] = []
        self.redo: List[Tuple[np.ndarray, Dict[int, SegObject]]] = []
        self.raw_is_uint8 = case.array.dtype == np.uint8
        self._percentiles: Optional[Tuple[float, float]] = None
        self.embed_job: Optional[Job] = None
        self.embedded: set = set()
        self.opened = time.perf_counter()
        self.first_mask_s: Optional[float] = None

    # -- description
    @property
    def kind(self) -> str:
        return "3d" if self.is_3d else "2d"

    def info(self) -> Dict[str, Any]:
        shape = [self.depth, self.height, self.width] if self.is_3d else [self.height, self.width]
        job = self.embed_job
        return {"id": self.id, "name": self.name, "shape": shape, "kind": self.kind, "format": self.case.kind,
                "depth": self.depth, "height": self.height, "width": self.width, "rgb": self.rgb,
                "raw_dtype": str(self.case.array.dtype), "windows": sorted(CT_WINDOWS),
                "embedded": len(self.embedded), "embedding": job.to_json() if job else None,
                "objects": [o.to_json() for o in self.objects.values()],
                "can_undo": bool(self.undo), "can_redo": bool(self.redo),
                "boxes": self.case.boxes.tolist() if self.case.boxes is not None else None}

    def check_z(self, z: int) -> int:
        if not 0 <= int(z) < self.depth:
            raise InputError(f"slice {z} is outside 0..{self.depth - 1}")
        return int(z)

    # -- display
    def display_slice(self, z: int, window: str = "auto") -> np.ndarray:
        """Slice ``z`` for display, uint8 (H, W) or (H, W, 3) RGB.

        ``window``: ``auto`` (the model input), ``percentile`` (0.5 / 99.5 percentiles of the raw
        non-zero values of the whole case), a CT preset name of :data:`CT_WINDOWS`, or ``LEVEL,WIDTH``.
        """
        z = self.check_z(z)
        bounds = None if window in ("auto", "percentile") else window_bounds(parse_window(window))
        if window == "auto" or self.rgb:
            return self.volume[z]
        raw = self.case.array[z] if self.is_3d else self.case.array
        if bounds is not None:
            lo, hi = bounds
        else:
            if self._percentiles is None:
                self._percentiles = percentile_bounds(self.case.array) or (0.0, 1.0)
            lo, hi = self._percentiles
        return unit_to_uint8(scale_to_unit(raw, lo, hi, keep_zero=bounds is None))

    # -- edits (call with self.lock held)
    def snapshot(self) -> None:
        self.undo.append((self.labels.copy(), {k: _copy_obj(v) for k, v in self.objects.items()}))
        del self.undo[:-HISTORY_LIMIT]
        self.redo.clear()

    def restore(self, undo: bool) -> None:
        src, dst = (self.undo, self.redo) if undo else (self.redo, self.undo)
        if not src:
            raise InputError(f"nothing to {'undo' if undo else 'redo'}")
        dst.append((self.labels.copy(), {k: _copy_obj(v) for k, v in self.objects.items()}))
        self.labels, self.objects = src.pop()

    def new_object(self, name: Optional[str], box: List[float], z: int) -> SegObject:
        used = set(self.objects)
        oid = next((i for i in range(1, 256) if i not in used), None)
        if oid is None:
            raise InputError("255 objects already: a uint8 label map holds no more")
        obj = SegObject(oid, name or f"object {oid}", COLOURS[(oid - 1) % len(COLOURS)], box, z)
        self.objects[oid] = obj
        return obj

    def get_object(self, oid: int) -> SegObject:
        if oid not in self.objects:
            raise KeyError(f"unknown object {oid}")
        return self.objects[oid]

    def set_slice_mask(self, obj: SegObject, z: int, mask: np.ndarray) -> None:
        """Replace ``obj``'s pixels on slice ``z`` with the (H, W) bool ``mask``."""
        plane = self.labels[z]
        plane[plane == obj.id] = 0
        plane[mask] = obj.id

    def set_volume_mask(self, obj: SegObject, mask: np.ndarray) -> None:
        """Replace ``obj``'s voxels everywhere with the (D, H, W) bool ``mask``."""
        self.labels[self.labels == obj.id] = 0
        self.labels[mask] = obj.id

    def delete_object(self, oid: int) -> None:
        self.get_object(oid)
        self.labels[self.labels == oid] = 0
        del self.objects[oid]

    def label_map(self) -> np.ndarray:
        """The label map in the case's own shape: (D, H, W) for volumes, (H, W) for 2D."""
        return self.labels if self.is_3d else self.labels[0]


def _copy_obj(obj: SegObject) -> SegObject:
    return SegObject(obj.id, obj.name, obj.colour, list(obj.box), obj.z, obj.z_range)


class CaseStore:
    """Open cases by id (at most ``max_cases``: opening one more closes the oldest)."""

    def __init__(self, max_cases: int) -> None:
        self.max_cases = max_cases
        self._cases: "OrderedDict[str, CaseState]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, case: Case, window: Optional[Window], name: str) -> CaseState:
        state = CaseState(uuid.uuid4().hex[:12], case, window, name)
        with self._lock:
            self._cases[state.id] = state
            while len(self._cases) > self.max_cases:
                _, old = self._cases.popitem(last=False)
                if old.embed_job is not None:
                    old.embed_job.cancel.set()
        return state

    def get(self, case_id: str) -> CaseState:
        with self._lock:
            if case_id not in self._cases:
                raise KeyError(f"unknown case {case_id!r}")
            return self._cases[case_id]

    def remove(self, case_id: str) -> None:
        state = self.get(case_id)
        if state.embed_job is not None:
            state.embed_job.cancel.set()
        with self._lock:
            self._cases.pop(case_id, None)

    def all(self) -> List[CaseState]:
        with self._lock:
            return list(self._cases.values())


def embedding_order(depth: int, start: Optional[int] = None) -> List[int]:
    """Slices from ``start`` (default the middle) outwards: start, start+1, start-1, start+2, ..."""
    start = depth // 2 if start is None else start
    order = [start]
    for step in range(1, depth):
        for z in (start + step, start - step):
            if 0 <= z < depth:
                order.append(z)
    return order


def open_case_file(path: Path, source_name: Optional[str] = None) -> Case:
    """``read_case`` with the message naming ``source_name`` (the uploaded file's name) when given."""
    try:
        return read_case(path)
    except InputError as exc:
        if source_name:
            raise InputError(exc.problem, source_name) from exc
        raise


def run_job(job: Job, work: Callable[[Job], Any]) -> threading.Thread:
    """Run ``work(job)`` in a daemon thread, recording state, result, message and milliseconds."""

    def target() -> None:
        try:
            job.result = work(job)
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except InputError as exc:
            job.state, job.message = "error", str(exc)
        except Exception as exc:  # a job must never take the server down; the page shows the line
            job.state, job.message = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            job.ms = (time.perf_counter() - job.started) * 1000.0

    job.thread = threading.Thread(target=target, name=f"serve-{job.kind}-{job.id}", daemon=True)
    job.thread.start()
    return job.thread
