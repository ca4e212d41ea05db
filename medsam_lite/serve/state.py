"""Case state of ``medsam-lite serve`` (state only: no HTTP, no model calls, no threads started).

Frames: a case's ``volume`` is (D, H, W) uint8 (2D cases: D = 1, or (1, H, W, 3) for colour), the
array the model sees; ``labels`` is (D, H, W) uint8, value = object id (0 = background). Boxes are
in original pixels: 2D ``[x_min, y_min, x_max, y_max]`` on slice ``z``, 3D
``[x_min, y_min, z_min, x_max, y_max, z_max]``; both ends inclusive (see :mod:`medsam_lite.predictor`).

Each case has its own lock for its labels, objects and history. A case has *unsaved changes* when
its label map was edited since it was opened, saved or downloaded; :class:`CaseStore` never closes
such a case to make room (it closes the oldest case without them, or refuses with
:class:`CaseLimitError`). Jobs are in :mod:`medsam_lite.serve.jobs`, embeddings in
:mod:`medsam_lite.serve.embeddings`, settings in :mod:`medsam_lite.serve.config`.
"""
from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..imageio import Case
from ..normalize import CT_WINDOWS, Window, parse_window, percentile_bounds, scale_to_unit, unit_to_uint8, window_bounds
from .config import ServeConfig  # noqa: F401  (re-exported: ``from medsam_lite.serve.state import ServeConfig``)

if TYPE_CHECKING:
    from .jobs import Job

COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
)
"""Object colours (RGB), cycled by object id."""

HISTORY_LIMIT = 30
"""Undo steps kept per case."""


def model_input(case: Case, window: Optional[Window] = None) -> np.ndarray:
    """The uint8 array the model sees for ``case``: (D, H, W) for volumes, (H, W[, 3]) for 2D.

    The same contract as ``medsam-lite segment`` (:func:`medsam_lite.segment.model_input`: the
    normalisation table of prep; a window means CT; DICOM by its Modality tag).
    """
    from ..segment import model_input as segment_model_input

    return segment_model_input(case, None, window)[0]



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

    def __init__(self, case_id: str, case: Case, window: Optional[Window] = None, display_name: str = "",
                 temp_dir: Optional[Path] = None) -> None:
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
        self.embed_job: Optional["Job"] = None
        self.embedded: set = set()
        self.opened = time.perf_counter()
        self.first_mask_s: Optional[float] = None
        self.temp_dir = temp_dir  # an uploaded file's folder, removed with the case
        self.version = 0  # edits so far (each snapshot / undo / redo)
        self.saved_version = 0  # ``version`` when last saved or downloaded

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
                "can_undo": bool(self.undo), "can_redo": bool(self.redo), "unsaved": self.unsaved,
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

    # -- saved or not
    @property
    def unsaved(self) -> bool:
        """Whether the label map changed since the case was opened, saved or downloaded."""
        return self.version != self.saved_version

    def mark_saved(self, version: int) -> None:
        """The label map of ``version`` was saved or downloaded."""
        self.saved_version = version

    def release(self) -> None:
        """Closing: cancel the embedding job, remove the uploaded file's folder."""
        if self.embed_job is not None:
            self.embed_job.cancel.set()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    # -- edits (call with self.lock held)
    def snapshot(self) -> None:
        self.version += 1
        self.undo.append((self.labels.copy(), {k: _copy_obj(v) for k, v in self.objects.items()}))
        del self.undo[:-HISTORY_LIMIT]
        self.redo.clear()

    def restore(self, undo: bool) -> None:
        src, dst = (self.undo, self.redo) if undo else (self.redo, self.undo)
        if not src:
            raise InputError(f"nothing to {'undo' if undo else 'redo'}")
        dst.append((self.labels.copy(), {k: _copy_obj(v) for k, v in self.objects.items()}))
        self.version += 1
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

    def label_entries(self) -> Dict[int, Tuple[str, str]]:
        """Label value (object id) -> (the name given in the annotator, its colour "#rrggbb"), for the label
        table written beside a saved map (:func:`medsam_lite.imageio.write_label_entries`)."""
        return {oid: (o.name, "#%02x%02x%02x" % tuple(o.colour)) for oid, o in sorted(self.objects.items())}


def _copy_obj(obj: SegObject) -> SegObject:
    return SegObject(obj.id, obj.name, obj.colour, list(obj.box), obj.z, obj.z_range)


class CaseLimitError(Exception):
    """Every open case has unsaved changes and no more may be opened (HTTP 409)."""


class CaseStore:
    """Open cases by id, at most ``max_cases``: adding one more closes the oldest case without unsaved
    changes, or raises :class:`CaseLimitError` when every open case has some."""

    def __init__(self, max_cases: int) -> None:
        self.max_cases = max_cases
        self._cases: "OrderedDict[str, CaseState]" = OrderedDict()
        self._lock = threading.Lock()

    def new_id(self) -> str:
        return uuid.uuid4().hex[:12]

    def _room(self) -> List[CaseState]:
        """The cases to close so that one more fits (lock held); CaseLimitError if impossible."""
        excess = len(self._cases) + 1 - self.max_cases
        if excess <= 0:
            return []
        closable = [s for s in self._cases.values() if not s.unsaved][:excess]
        if len(closable) < excess:
            raise CaseLimitError(f"{len(self._cases)} cases are open (the limit) and every one has unsaved changes: "
                                 "save, download or close one first")
        return closable

    def check_room(self) -> None:
        """CaseLimitError now if :meth:`add` would refuse (checked before reading a file)."""
        with self._lock:
            self._room()

    def add(self, state: CaseState) -> CaseState:
        """Keep ``state`` open, closing the oldest cases without unsaved changes beyond ``max_cases``."""
        with self._lock:
            closing = self._room()
            for old in closing:
                del self._cases[old.id]
            self._cases[state.id] = state
        for old in closing:
            old.release()
        return state

    def get(self, case_id: str) -> CaseState:
        with self._lock:
            if case_id not in self._cases:
                raise KeyError(f"unknown case {case_id!r}")
            return self._cases[case_id]

    def remove(self, case_id: str) -> None:
        with self._lock:
            if case_id not in self._cases:
                raise KeyError(f"unknown case {case_id!r}")
            state = self._cases.pop(case_id)
        state.release()

    def all(self) -> List[CaseState]:
        with self._lock:
            return list(self._cases.values())

    def close_all(self) -> None:
        with self._lock:
            states = list(self._cases.values())
            self._cases.clear()
        for state in states:
            state.release()
