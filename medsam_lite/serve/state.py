"""Case state of ``medsam-lite serve`` (state only: no HTTP, no threads started; inference only through the
case's :class:`~medsam_lite.session.Session`, called from :mod:`medsam_lite.serve.editing`).

Frames: a case's ``volume`` is (D, H, W) uint8 (2D cases: D = 1, or (1, H, W, 3) for colour), the
array the model sees; ``labels`` is (D, H, W) uint8, value = object id (0 = background): the session's label map.
Boxes are in original pixels: 2D ``[x_min, y_min, x_max, y_max]`` on slice ``z``, 3D
``[x_min, y_min, z_min, x_max, y_max, z_max]``; both ends inclusive (see :mod:`medsam_lite.predictor`).

The :class:`~medsam_lite.session.Session` is the case's voxel state (objects, anchors, locks, its undo steps); the
server adds per object a name, a colour and whether it is *pending* (3D: drawn on one slice, not propagated yet),
and one undo history of *actions* (an action = the session steps it took + the objects' metadata before / after;
a rename is an action of no session step). Each case has its own lock for its objects and history, and at most
one running edit job (``job``): other edits are refused (:class:`BusyError`, HTTP 409) until it ends.
A case has *unsaved changes* when its label map was edited since it was opened, saved or downloaded;
:class:`CaseStore` never closes such a case to make room (it closes the oldest case without them, or refuses
with :class:`CaseLimitError`). Jobs are in :mod:`medsam_lite.serve.jobs`, embeddings in
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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

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
    """One object: label ``id`` in the label map, its name and colour, the last box drawn for it on slice ``z``,
    the slices ``z_range`` (lo, hi) it covers, whether it is ``pending`` (3D: drawn on slice ``z`` only; propagated
    over ``propagate_range`` on request) and ``locked`` (the session's lock)."""

    id: int
    name: str
    colour: Tuple[int, int, int]
    box: List[float]
    z: int
    z_range: Optional[Tuple[int, int]] = None
    pending: bool = False
    locked: bool = False
    propagate_range: Optional[Tuple[int, int]] = None

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "name": self.name, "colour": list(self.colour), "box": self.box, "z": self.z,
                "z_range": list(self.z_range) if self.z_range else None, "pending": self.pending,
                "locked": self.locked,
                "propagate_range": list(self.propagate_range) if self.propagate_range else None}


def default_name(oid: int) -> str:
    """The name of object ``oid`` until one is typed (and when a typed name is cleared)."""
    return f"object {oid}"


@dataclass
class Action:
    """One undoable user action: ``steps`` session steps and the objects' metadata before / after it."""

    steps: int
    before: Dict[int, SegObject]
    after: Dict[int, SegObject]


class BusyError(Exception):
    """An edit job runs on the case; the request would change it (HTTP 409)."""


def is_hounsfield(case: Case, window: Optional[Window]) -> bool:
    """Whether the case's raw values are CT Hounsfield units (CT window presets apply): a CT Modality tag, a window
    given at opening, or a signed input reaching air (<= -500); never an 8-bit input."""
    array = case.array
    if array.dtype == np.uint8:
        return False
    if window is not None or str(case.meta.get("modality") or "").upper() == "CT":
        return True
    return bool(np.issubdtype(array.dtype, np.number) and array.size and float(array.min()) <= -500.0)


def view_of(case: Case) -> Dict[str, Any]:
    """How the page turns a slice for radiological display (:func:`medsam_lite.overlay.radiological_view` of the
    case's geometry): ``transpose`` / ``flip_rows`` / ``flip_cols`` (applied in that order), the edge ``letters``
    left, right, top, bottom ("" when the file has no geometry) and a description."""
    from ..imageio import index_axes_lps
    from ..overlay import radiological_view

    (transpose, flip_rows, flip_cols), how, letters = radiological_view(index_axes_lps(case) if case.is_3d else None)
    return {"transpose": transpose, "flip_rows": flip_rows, "flip_cols": flip_cols, "letters": letters, "how": how}


SessionFactory = Callable[[np.ndarray], Any]
"""``factory(array)`` -> a :class:`~medsam_lite.session.Session` on a (D, H, W) volume or (H, W[, 3]) image."""


class CaseState:
    """An open case: its reader output, the model input, its session, the objects' metadata and undo history."""

    def __init__(self, case_id: str, case: Case, window: Optional[Window] = None, display_name: str = "",
                 temp_dir: Optional[Path] = None, session_factory: Optional[SessionFactory] = None) -> None:
        self.id = case_id
        self.case = case
        self.name = display_name or case.path.name
        self.lock = threading.RLock()
        u8 = model_input(case, window)
        self.is_3d = bool(case.is_3d)
        self.rgb = (not self.is_3d) and u8.ndim == 3
        self.volume = u8 if self.is_3d else u8[None]  # (D, H, W) or (1, H, W[, 3])
        self.depth, self.height, self.width = self.volume.shape[0], self.volume.shape[1], self.volume.shape[2]
        self.session = session_factory(u8) if session_factory is not None else None
        self.objects: Dict[int, SegObject] = {}
        self.undo: List[Action] = []
        self.redo: List[Action] = []
        self.raw_is_uint8 = case.array.dtype == np.uint8
        self.hounsfield = is_hounsfield(case, window)
        self.view = view_of(case)
        self._percentiles: Optional[Tuple[float, float]] = None
        self.embed_job: Optional["Job"] = None
        self.job: Optional["Job"] = None  # the running edit job (one at a time)
        self.embedded: set = set()
        self.focus = self.depth // 2  # the slice the user works on: background embedding starts there
        self.opened = time.perf_counter()
        self.first_mask_s: Optional[float] = None
        self.temp_dir = temp_dir  # an uploaded file's folder, removed with the case
        self.version = 0  # edits so far (each action / undo / redo)
        self.saved_version = 0  # ``version`` when last saved or downloaded

    # -- description
    @property
    def kind(self) -> str:
        return "3d" if self.is_3d else "2d"

    @property
    def labels(self) -> np.ndarray:
        """(D, H, W) uint8 label map (2D: D = 1), read-only: the session's."""
        if self.session is None:
            return np.zeros((self.depth, self.height, self.width), np.uint8)
        labels = self.session.labels
        return labels if self.is_3d else labels[None]

    def info(self) -> Dict[str, Any]:
        shape = [self.depth, self.height, self.width] if self.is_3d else [self.height, self.width]
        job, edit = self.embed_job, self.job
        return {"id": self.id, "name": self.name, "shape": shape, "kind": self.kind, "format": self.case.kind,
                "depth": self.depth, "height": self.height, "width": self.width, "rgb": self.rgb,
                "raw_dtype": str(self.case.array.dtype), "windows": sorted(CT_WINDOWS),
                "hounsfield": self.hounsfield, "view": self.view,
                "embedded": len(self.embedded), "embedding": job.to_json() if job else None,
                "job": edit.to_json() if edit is not None and edit.state == "running" else None,
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
        non-zero values of the whole case), a CT preset name of :data:`CT_WINDOWS` (HU data only: on other data,
        the model input, so that an 8-bit image is never washed out), or ``LEVEL,WIDTH`` in raw values.
        """
        z = self.check_z(z)
        bounds = None if window in ("auto", "percentile") else window_bounds(parse_window(window))
        if window == "auto" or self.rgb or (window in CT_WINDOWS and not self.hounsfield):
            return self.volume[z]
        raw = self.case.array[z] if self.is_3d else self.case.array
        if bounds is not None:
            lo, hi = bounds
        else:
            if self._percentiles is None:
                self._percentiles = percentile_bounds(self.case.array) or (0.0, 1.0)
            lo, hi = self._percentiles
        return unit_to_uint8(scale_to_unit(raw, lo, hi, keep_zero=bounds is None))

    def value_at(self, z: int, x: int, y: int) -> Dict[str, Any]:
        """The raw value (HU for CT) and the model's uint8 value at voxel (x, y) of slice ``z``."""
        z = self.check_z(z)
        if not (0 <= int(x) < self.width and 0 <= int(y) < self.height):
            raise InputError(f"pixel ({x}, {y}) is outside the {self.width} x {self.height} image")
        raw = self.case.array[z] if self.is_3d else self.case.array
        value = raw[int(y), int(x)]
        shown = [float(v) for v in np.ravel(value)]
        with self.lock:
            label = int(self.labels[z, int(y), int(x)])
        return {"z": z, "x": int(x), "y": int(y), "value": shown[0] if len(shown) == 1 else shown,
                "unit": "HU" if self.hounsfield else "", "model": np.ravel(self.volume[z][int(y), int(x)]).tolist(),
                "label": label}

    # -- saved or not
    @property
    def unsaved(self) -> bool:
        """Whether the label map changed since the case was opened, saved or downloaded."""
        return self.version != self.saved_version

    def mark_saved(self, version: int) -> None:
        """The label map of ``version`` was saved or downloaded."""
        self.saved_version = version

    def release(self) -> None:
        """Closing: cancel the embedding and edit jobs, remove the uploaded file's folder."""
        for job in (self.embed_job, self.job):
            if job is not None:
                job.cancel.set()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    # -- objects and history (call with self.lock held)
    def check_idle(self) -> None:
        """:class:`BusyError` while an edit job runs on the case."""
        job = self.job
        if job is not None and job.state == "running":
            raise BusyError(f"a {job.kind} job is running on this case ({job.done}/{job.total} slices): wait for it "
                            "or cancel it")

    def get_object(self, oid: int) -> SegObject:
        if oid not in self.objects:
            raise KeyError(f"unknown object {oid}")
        return self.objects[oid]

    def copy_objects(self) -> Dict[int, SegObject]:
        return {k: _copy_obj(v) for k, v in self.objects.items()}

    def sync(self) -> None:
        """Mirror the session's objects into the metadata: new ones get a default name and colour, removed ones go,
        locks and the z-ranges of propagated objects follow the session."""
        live = self.session.objects if self.session is not None else {}
        for oid in [k for k in self.objects if k not in live]:
            del self.objects[oid]
        for oid, sobj in live.items():
            obj = self.objects.get(oid)
            if obj is None:
                box = [float(v) for v in (sobj.box[0], sobj.box[1], sobj.box[3], sobj.box[4])]
                obj = self.objects[oid] = SegObject(oid, default_name(oid), COLOURS[(oid - 1) % len(COLOURS)], box,
                                                    int(sobj.z_mid))
            obj.locked = bool(sobj.locked)
            if not obj.pending:
                obj.z_range = (int(sobj.z_lo), int(sobj.z_hi)) if self.is_3d else None

    def record(self, steps: int, before: Dict[int, SegObject]) -> None:
        """Push the action just done (``steps`` session steps; the metadata ``before`` it) on the undo history."""
        self.version += 1
        self.undo.append(Action(steps, before, self.copy_objects()))
        del self.undo[:-HISTORY_LIMIT]
        self.redo.clear()

    def restore(self, undo: bool) -> None:
        """Undo (or redo) the last action: its session steps and the objects' metadata."""
        src, dst = (self.undo, self.redo) if undo else (self.redo, self.undo)
        if not src:
            raise InputError(f"nothing to {'undo' if undo else 'redo'}")
        action = src[-1]
        go, back = (self.session.undo, self.session.redo) if undo else (self.session.redo, self.session.undo)
        for done in range(action.steps):
            if not go():
                for _ in range(done):
                    back()
                self.undo.clear()
                self.redo.clear()
                raise InputError("the history limit was reached: older steps cannot be undone")
        src.pop()
        dst.append(action)
        self.version += 1
        self.objects = {k: _copy_obj(v) for k, v in (action.before if undo else action.after).items()}

    def label_map(self) -> np.ndarray:
        """The label map in the case's own shape: (D, H, W) for volumes, (H, W) for 2D."""
        labels = self.labels
        return labels if self.is_3d else labels[0]

    def label_entries(self) -> Dict[int, Tuple[str, str]]:
        """Label value (object id) -> (the name given in the annotator, its colour "#rrggbb"), for the label
        table written beside a saved map (:func:`medsam_lite.imageio.write_label_entries`)."""
        return {oid: (o.name, "#%02x%02x%02x" % tuple(o.colour)) for oid, o in sorted(self.objects.items())}


def _copy_obj(obj: SegObject) -> SegObject:
    return SegObject(obj.id, obj.name, obj.colour, list(obj.box), obj.z, obj.z_range, obj.pending, obj.locked,
                     obj.propagate_range)


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
