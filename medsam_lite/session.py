"""Interactive segmentation sessions: objects from boxes, correction boxes, locks, undo / redo (issue 29).

State lives here, separate from any UI (as micro-sam's ``sam_annotator/_state.py``); inference is reached only
through a :class:`SliceSegmenter` (``Predictor.session`` builds :class:`~medsam_lite.segmenter.NumpySegmenter` on
the default, torch-free path and :class:`~medsam_lite.segmenter.PropagatorSegmenter` on the torch reference; this
module imports neither torch nor a network).

Frames: the volume is (D, H, W) (a 2D image is held as one slice, D = 1); z = slice index; a 3D box is
``(x0, y0, z0, x1, y1, z1)``, a 2D / correction box ``(x0, y0, x1, y1)``, in voxel indices, both ends inclusive,
inside the volume (a box that leaves it is an :class:`~medsam_lite.errors.InputError`, not clipped).

* **First step** (:meth:`Session.add_object`): the baseline's propagation of the 3D box with the object's label
  value (``SliceSegmenter.propagate_box``, the code of ``Predictor.predict_volume``), so objects added in the
  order of ``segment``'s boxes give its label map exactly.
* **Corrections** (:meth:`Session.correct`): the correction box decodes slice z, which becomes an anchor; the
  object's box slice (``z_mid``, where the first step started) is an anchor too. From z the object is
  re-propagated up and down (the baseline's rule) over the slices nearer to z than to the next anchor on that
  side (``reach="nearest"``; ``"next"``: up to that anchor), or to the end of the object's z-range when no
  anchor lies beyond (optionally a walk stops after the first slice whose new mask agrees with the existing
  one, IoU >= ``stop_iou``: measured without effect, so off by default). Slices no walk reaches keep their
  mask. A correction outside the z-range grows it. :data:`DEFAULT_POLICY` ("nearest", box slice an anchor,
  both directions, no stop) was chosen from the simulated-user curves of docs/interactive.md (training side).
* **Many objects, locks**: an object never writes over a locked object's voxels, nor over a later object's
  (later unlocked objects are on top, as ``segment``'s later boxes win); by default (``lock_previous``)
  adding an object locks every earlier one, so a finished organ cannot be eaten by its neighbour's
  propagation; :meth:`Session.unlock` it to correct it.
* **Memory**: the (D, H, W) uint8 label map is the only voxel state (an object is ``labels == k``), objects keep
  O(D) metadata, and the undo history keeps compact diffs (the changed voxels' bounding crop, before and
  after) bounded to ``history_steps`` steps and ``history_bytes`` bytes (default 4 x D x H x W; the newest step
  is always kept). Embeddings live in the segmenter's bounded store.
* **Bad input** raises :class:`InputError` (one line) before any state changes; undo then undoes the previous
  real step.
* **Background embedding** (:meth:`Session.prefetch`): on an executor the caller gives, the slices are embedded
  ahead of the user (an object's slices first, outward from the current slice); actions then run the decoder only.
* **Progress / cancel**: ``add_object`` and ``correct`` take ``progress(done, total)``, called after each decoded
  slice; a :class:`~medsam_lite.errors.Cancelled` raised there stops the action before anything is written.
"""
from __future__ import annotations

import copy
import threading
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from .errors import InputError

MAX_OBJECTS = int(np.iinfo(np.uint8).max)
"""Objects a session holds at most: labels are uint8."""

Box4 = Tuple[int, int, int, int]
Box6 = Tuple[int, int, int, int, int, int]
Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each decoded slice of an action; raising
:class:`~medsam_lite.errors.Cancelled` in it stops the action, which then changes nothing (no history step)."""


class SliceSegmenter(Protocol):
    """What a session needs from inference (see the module docstring)."""

    shape: Tuple[int, int, int]
    """(D, H, W) of the volume."""

    def embedding(self, z: int) -> None:
        """Make sure slice z is embedded (in the store); the encoder runs at most once per slice."""

    def propagate_box(self, box: Sequence[int], label: int,
                      progress: Optional[Progress] = None) -> Dict[int, np.ndarray]:
        """The baseline's propagation of one (6,) voxel box with label value ``label``: slice -> (H, W) bool;
        ``progress(done, total)`` after each slice (``total`` = the box's slices)."""

    def propagate(self, box: Sequence[int], order: Sequence[int], prev: Optional[np.ndarray],
                  label: int) -> Iterator[Tuple[int, np.ndarray]]:
        """Walk the slices ``order``, yielding (z, (H, W) bool mask); the first slice is prompted from ``prev``'s
        box (or ``box``, (4,) XYXY pixels, when ``prev`` is None / empty), each next one from the previous mask."""


@dataclass(frozen=True)
class CorrectionPolicy:
    """How far a correction re-propagates (module docstring). ``reach``: ``"nearest"`` (slices nearer the new
    anchor than the next one) or ``"next"`` (up to the next anchor); ``stop_iou``: stop after a slice whose new
    mask has at least this IoU with the existing one (None: never); ``box_anchor``: the 3D box's ``z_mid`` is an
    anchor; ``inward``: see below."""

    reach: str = "nearest"
    stop_iou: Optional[float] = None
    box_anchor: bool = True
    inward: bool = True
    """Also walk from the correction toward the box slice ``z_mid`` (False: only away from it)."""


SESSION_STORE_BYTES = 1024 ** 3
"""Bound of a session's own in-memory embedding store (~256 slice embeddings) when its Predictor has none."""

DEFAULT_POLICY = CorrectionPolicy()
"""The chosen design (docs/interactive.md: training-side simulated-user curves per policy)."""


@dataclass
class ObjectState:
    """One object's metadata (its voxels are ``labels == label``): the 3D ``box``, the slice ``z_mid`` its
    propagation started on, user ``anchors`` (slice -> correction box), its z-range ``z_lo..z_hi``, ``locked``
    and ``order`` (creation rank: later objects are on top)."""

    label: int
    box: Box6
    z_mid: int
    z_lo: int
    z_hi: int
    order: int
    locked: bool = False
    anchors: Dict[int, Box4] = field(default_factory=dict)
    clicks: Optional[Dict[int, List[Tuple[float, float, bool]]]] = None
    """Slice -> its clicks (x, y, positive) since its last correction box (issue 30); None until the first click
    (no per-object cost in the undo history of box-only sessions)."""


@dataclass
class _Step:
    """One undoable step: the changed voxels' bounding crop ``region`` (z0, z1, y0, y1, x0, x1, half-open) of the
    labels before / after, and the objects' metadata before / after."""

    region: Optional[Tuple[int, int, int, int, int, int]]
    before: Optional[np.ndarray]
    after: Optional[np.ndarray]
    objects_before: Dict[int, ObjectState]
    objects_after: Dict[int, ObjectState]

    @property
    def nbytes(self) -> int:
        return 0 if self.before is None else 2 * int(self.before.nbytes)


class Prefetch:
    """Handle of one :meth:`Session.prefetch`: ``order`` (slices to embed), ``done`` (embedded so far),
    ``future`` (the executor's future of :meth:`run`)."""

    def __init__(self, order: Sequence[int]) -> None:
        self.order = list(order)
        self.done = 0
        self.future: Optional["Future[int]"] = None
        self._stop = threading.Event()

    def run(self, segmenter: SliceSegmenter) -> int:
        """Embed ``order`` through ``segmenter`` until done or cancelled; returns the slices embedded."""
        for z in self.order:
            if self._stop.is_set():
                break
            segmenter.embedding(z)
            self.done += 1
        return self.done

    def cancel(self) -> None:
        """Stop after the slice in progress (slices already embedded stay in the store)."""
        self._stop.set()

    def result(self, timeout: Optional[float] = None) -> int:
        """Wait for the prefetch to end; the slices it embedded."""
        assert self.future is not None
        return self.future.result(timeout)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _as_ints(box: Sequence[float], n: int, what: str) -> Tuple[int, ...]:
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be {n} numbers, got {box!r}") from None
    if len(values) != n or not all(np.isfinite(values)):
        raise InputError(f"{what} must be {n} finite numbers, got {box!r}")
    return tuple(int(v) for v in values)


class Session:
    """Interactive segmentation of one volume or image (module docstring).

    Args:
        segmenter: the inference window (:class:`~medsam_lite.segmenter.SliceSegmenter`) over the volume.
        is_2d: the volume is one 2D image: boxes are ``(x0, y0, x1, y1)``, ``labels`` is (H, W).
        policy: the correction algorithm's parameters (default :data:`DEFAULT_POLICY`).
        lock_previous: adding an object locks every earlier one.
        history_steps / history_bytes: bounds of the undo history (default bytes: 4 x D x H x W).
    """

    def __init__(self, segmenter: SliceSegmenter, is_2d: bool = False, policy: CorrectionPolicy = DEFAULT_POLICY,
                 lock_previous: bool = True, history_steps: int = 100, history_bytes: Optional[int] = None) -> None:
        if policy.reach not in ("nearest", "next"):
            raise InputError(f"policy reach must be 'nearest' or 'next', got {policy.reach!r}")
        self.segmenter, self.is_2d, self.policy, self.lock_previous = segmenter, is_2d, policy, lock_previous
        self.shape = tuple(int(s) for s in segmenter.shape)
        self._labels = np.zeros(self.shape, dtype=np.uint8)
        self.objects: Dict[int, ObjectState] = {}
        self._order = 0
        self.history_steps = int(history_steps)
        self.history_bytes = int(history_bytes if history_bytes is not None else 4 * self._labels.nbytes)
        self._undo: List[_Step] = []
        self._redo: List[_Step] = []

    # ------------------------------------------------------------------ reading
    @property
    def labels(self) -> np.ndarray:
        """(D, H, W) uint8 label map (2D: (H, W)), value k where object k is; a read-only view."""
        view = self._labels[0] if self.is_2d else self._labels
        view = view.view()
        view.flags.writeable = False
        return view

    def mask(self, label: int) -> np.ndarray:
        """(D, H, W) bool voxels of object ``label`` (2D: (H, W))."""
        self._object(label)
        return self.labels == label

    @property
    def history_nbytes(self) -> int:
        """Bytes held by the undo and redo history."""
        return sum(s.nbytes for s in self._undo) + sum(s.nbytes for s in self._redo)

    # ------------------------------------------------------------------ checks (raise before any change)
    def _object(self, label: object) -> ObjectState:
        if not isinstance(label, (int, np.integer)) or int(label) not in self.objects:
            raise InputError(f"no object {label!r} in this session (objects: {sorted(self.objects)})")
        return self.objects[int(label)]

    def _check_box(self, box: Sequence[float], with_z: bool) -> Tuple[int, ...]:
        n = 6 if with_z else 4
        what = "3D box (x0, y0, z0, x1, y1, z1)" if with_z else "box (x0, y0, x1, y1)"
        values = _as_ints(box, n, what)
        depth, height, width = self.shape[0], self.shape[1], self.shape[2]
        lows, highs = values[: n // 2], values[n // 2:]
        limits = (width, height, depth)[: n // 2]
        for axis, lo, hi, size in zip("xyz", lows, highs, limits):
            if not 0 <= lo <= hi < size:
                raise InputError(f"{what} {list(values)}: {axis} range {lo}..{hi} is not inside 0..{size - 1}")
        return values

    def _check_range(self, z_range: Sequence[int], z: int) -> Tuple[int, int]:
        lo, hi = _as_ints(z_range, 2, "z_range (lo, hi)")
        if not 0 <= lo <= z <= hi < self.shape[0]:
            raise InputError(f"z_range {lo}..{hi} must contain slice {z} and lie inside 0..{self.shape[0] - 1}")
        return lo, hi

    def _check_slice(self, z: object) -> int:
        if not isinstance(z, (int, np.integer)) or not 0 <= int(z) < self.shape[0]:
            raise InputError(f"slice {z!r} is outside the volume (0..{self.shape[0] - 1})")
        return int(z)

    # ------------------------------------------------------------------ actions
    def add_object(self, box: Sequence[float], progress: Optional[Progress] = None) -> int:
        """Segment a new object from its 3D box (2D session: ``(x0, y0, x1, y1)``) by the baseline's propagation;
        returns its label k (the smallest free one). ``progress``: see :data:`Progress` (cancel: nothing changes)."""
        if self.is_2d:
            x0, y0, x1, y1 = self._check_box(box, with_z=False)
            box6: Box6 = (x0, y0, 0, x1, y1, 0)
        else:
            box6 = self._check_box(box, with_z=True)  # type: ignore[assignment]
        free = [k for k in range(1, MAX_OBJECTS + 1) if k not in self.objects]
        if not free:
            raise InputError(f"a session holds at most {MAX_OBJECTS} objects (uint8 labels); remove one first")
        label = free[0]
        masks = self.segmenter.propagate_box(box6, label, progress)
        before = copy.deepcopy(self.objects)
        if self.lock_previous:
            for obj in self.objects.values():
                obj.locked = True
        self._order += 1
        z_mid = int((box6[5] - box6[2]) / 2 + box6[2])
        self.objects[label] = ObjectState(label, box6, z_mid, box6[2], box6[5], self._order)
        self._commit(masks, label, before)
        return label

    def correct(self, label: int, z: int, box: Optional[Sequence[float]] = None,
                point: Optional[Sequence[float]] = None, positive: bool = True,
                progress: Optional[Progress] = None, z_range: Optional[Sequence[int]] = None) -> None:
        """Correct object ``label`` with a box ``(x0, y0, x1, y1)`` on slice ``z`` (module docstring: the slice
        becomes an anchor and the object is re-propagated from it), or with a click ``point=(x, y)`` (``positive``: add
        / remove), which refines slice ``z`` from its box, every click on it so far and the previous mask
        (:meth:`_click`) and makes it an anchor the same way.
        ``z_range=(lo, hi)`` (inclusive, containing z) first grows the object's z-range to cover it (how an
        annotator propagates an object drawn on one slice over the slices the user chose); one undo step.
        ``progress``: see :data:`Progress` (cancel: nothing changes)."""
        obj = self._object(label)
        z = self._check_slice(z)
        if box is None and point is None:
            raise InputError("correct() needs box=(x0, y0, x1, y1) or point=(x, y)")
        span = (z, z) if z_range is None else self._check_range(z_range, z)
        clicks, first = [], None
        if point is not None:  # a click: box of the slice + all its clicks so far (medsam_lite.clicks)
            box4, clicks, first = self._click(obj, z, point, positive)
        else:
            box4 = self._check_box(box, with_z=False)  # type: ignore[assignment]
        if obj.locked:
            raise InputError(f"object {label} is locked; unlock({label}) it to correct it")
        lo, hi = min(obj.z_lo, span[0]), max(obj.z_hi, span[1])
        masks = self._repropagate(obj, z, box4, progress, (lo, hi), first)
        before = copy.deepcopy(self.objects)
        obj.anchors[z] = box4
        if clicks:
            obj.clicks = {**(obj.clicks or {}), z: clicks}
        elif obj.clicks:
            obj.clicks.pop(z, None)
        obj.z_lo, obj.z_hi = lo, hi
        self._commit(masks, obj.label, before)

    def remove(self, label: int) -> None:
        """Delete object ``label`` (its voxels become background)."""
        self._object(label)
        before = copy.deepcopy(self.objects)
        del self.objects[int(label)]
        zs = np.nonzero((self._labels == label).any(axis=(1, 2)))[0]
        empty = {int(z): np.zeros(self.shape[1:], dtype=bool) for z in zs}
        self._commit(empty, int(label), before, owner_exists=False)

    def lock(self, label: int) -> None:
        """Protect object ``label``: no other object writes over its voxels, and it cannot be corrected."""
        self._set_lock(label, True)

    def unlock(self, label: int) -> None:
        """Make object ``label`` correctable (and writable by later objects) again."""
        self._set_lock(label, False)

    def _set_lock(self, label: int, locked: bool) -> None:
        obj = self._object(label)
        if obj.locked == locked:
            return
        before = copy.deepcopy(self.objects)
        obj.locked = locked
        self._push(_Step(None, None, None, before, copy.deepcopy(self.objects)))

    # ------------------------------------------------------------------ background embedding
    def prefetch_order(self, z: Optional[int] = None, label: Optional[int] = None) -> List[int]:
        """The slices in the order :meth:`prefetch` embeds them: object ``label``'s z-range first (when given),
        then every other slice, each group outward from slice ``z`` (default: the middle of the volume, or the
        object's box slice ``z_mid``): z, z + 1, z - 1, z + 2, ..."""
        depth = self.shape[0]
        if label is not None:
            obj = self._object(label)
            center = obj.z_mid if z is None else self._check_slice(z)
            first = set(range(obj.z_lo, obj.z_hi + 1))
        else:
            center = depth // 2 if z is None else self._check_slice(z)
            first = set()
        outward = sorted(range(depth), key=lambda zz: (abs(zz - center), zz < center))
        return [zz for zz in outward if zz in first] + [zz for zz in outward if zz not in first]

    def prefetch(self, executor: Executor, z: Optional[int] = None, label: Optional[int] = None) -> "Prefetch":
        """Embed the session's slices in the background, in :meth:`prefetch_order`, on the caller's ``executor``
        (e.g. a ``concurrent.futures.ThreadPoolExecutor(1)``: this library starts no thread of its own), so later
        actions find them in the store and run the decoder only. Returns a :class:`Prefetch` handle (``cancel()``
        stops after the slice in progress; ``result()`` waits and gives the slices embedded). Safe beside actions
        of this session in the caller's thread: the segmenter serialises encoder runs and looks each slice up in
        the store first, so no slice is encoded twice."""
        handle = Prefetch(self.prefetch_order(z, label))
        handle.future = executor.submit(handle.run, self.segmenter)
        return handle

    # ------------------------------------------------------------------ undo / redo
    def undo(self) -> bool:
        """Undo the last step; returns False (and changes nothing) when there is none."""
        return self._replay(self._undo, self._redo, forward=False)

    def redo(self) -> bool:
        """Redo the last undone step; returns False (and changes nothing) when there is none."""
        return self._replay(self._redo, self._undo, forward=True)

    def _replay(self, source: List[_Step], target: List[_Step], forward: bool) -> bool:
        if not source:
            return False
        step = source.pop()
        if step.region is not None:
            z0, z1, y0, y1, x0, x1 = step.region
            self._labels[z0:z1, y0:y1, x0:x1] = step.after if forward else step.before
        self.objects = copy.deepcopy(step.objects_after if forward else step.objects_before)
        target.append(step)
        return True

    def _push(self, step: _Step) -> None:
        self._undo.append(step)
        self._redo.clear()
        total = sum(s.nbytes for s in self._undo)
        while len(self._undo) > 1 and (len(self._undo) > self.history_steps or total > self.history_bytes):
            total -= self._undo.pop(0).nbytes

    # ------------------------------------------------------------------ writing
    def _writable(self, label: int) -> np.ndarray:
        """(256,) bool: which label values object ``label`` may overwrite (background, itself, earlier unlocked)."""
        allowed = np.zeros(256, dtype=bool)
        allowed[0] = allowed[label] = True
        owner = self.objects.get(label)
        for other in self.objects.values():
            if owner is not None and not other.locked and other.order < owner.order:
                allowed[other.label] = True
        return allowed

    def _commit(self, masks: Dict[int, np.ndarray], label: int, objects_before: Dict[int, ObjectState],
                owner_exists: bool = True) -> None:
        """Write object ``label``'s new (H, W) bool masks (slice -> mask) into the labels under the lock rules
        and record one undo step (the changed voxels' bounding crop before / after)."""
        allowed = self._writable(label) if owner_exists else np.zeros(256, dtype=bool)
        changed: Dict[int, np.ndarray] = {}
        for z, mask in masks.items():
            current = self._labels[z]
            new = current.copy()
            new[(current == label) & ~mask] = 0
            new[mask & allowed[current]] = label
            if not np.array_equal(new, current):
                changed[z] = new
        region, before, after = None, None, None
        if changed:
            zs = sorted(changed)
            diff = np.zeros(self.shape[1:], dtype=bool)
            for z in zs:
                diff |= changed[z] != self._labels[z]
            ys, xs = np.nonzero(diff.any(axis=1))[0], np.nonzero(diff.any(axis=0))[0]
            region = (zs[0], zs[-1] + 1, int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
            z0, z1, y0, y1, x0, x1 = region
            before = self._labels[z0:z1, y0:y1, x0:x1].copy()
            for z, new in changed.items():
                self._labels[z] = new
            after = self._labels[z0:z1, y0:y1, x0:x1].copy()
        self._push(_Step(region, before, after, objects_before, copy.deepcopy(self.objects)))

    # ------------------------------------------------------------------ the correction algorithm
    def _repropagate(self, obj: ObjectState, z: int, box: Box4, progress: Optional[Progress],
                     span: Tuple[int, int], first: Optional[np.ndarray] = None) -> Dict[int, np.ndarray]:
        """New (H, W) bool masks of ``obj`` (slice -> mask) after a correction ``box`` on slice ``z``: the box's
        mask on z (or ``first``, a click's), then a walk up and one down (the baseline's rule) to the reach of
        :attr:`policy`, inside the object's z-range ``span`` (lo, hi inclusive, containing z)."""
        walks = self._walks(obj, z, span)
        total, done = 1 + sum(len(w) for w in walks), 1
        if first is None:
            _, first = next(iter(self.segmenter.propagate(box, [z], None, obj.label)))
        masks = {z: first}
        if progress is not None:
            progress(done, total)
        for walk in walks:
            for zz, mask in self.segmenter.propagate(box, walk, first, obj.label):
                masks[zz] = mask
                done += 1
                if progress is not None:
                    progress(done, total)
                if self.policy.stop_iou is not None and _iou(mask, self._labels[zz] == obj.label) >= self.policy.stop_iou:
                    break
        if progress is not None and done < total:
            progress(total, total)
        return masks

    def _click(self, obj: ObjectState, z: int, point: Sequence[float],
               positive: bool) -> Tuple[Box4, List[Tuple[float, float, bool]], np.ndarray]:
        """(box, clicks, mask) of a click on slice ``z``: the slice's box is its correction box, else the tight box
        of the object's mask there, else the 3D box's; the clicks are the slice's earlier ones plus this one;
        the mask is the click-trained decode (``segmenter.click_mask``, InputError for a click off the image)."""
        if obj.locked:
            raise InputError(f"object {obj.label} is locked; unlock({obj.label}) it to correct it")
        try:
            x, y = (float(v) for v in point)
        except (TypeError, ValueError):
            raise InputError(f"point must be (x, y), two numbers, got {point!r}") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(f"point must be (x, y), two finite numbers, got {point!r}")
        mask = self._labels[z] == obj.label
        if z in obj.anchors:
            box4 = obj.anchors[z]
        elif mask.any():
            ys, xs = np.nonzero(mask)
            box4 = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        else:
            box4 = (obj.box[0], obj.box[1], obj.box[3], obj.box[4])
        clicks = list((obj.clicks or {}).get(z, [])) + [(x, y, bool(positive))]
        return box4, clicks, self.segmenter.click_mask(z, box4, clicks)

    def _walks(self, obj: ObjectState, z: int, span: Tuple[int, int]) -> List[range]:
        """The slices a correction on slice ``z`` re-propagates inside ``span``: one walk up, one down."""
        policy = self.policy
        anchors = set(obj.anchors) | ({obj.z_mid} if policy.box_anchor else set())
        anchors.discard(z)
        lo, hi = span
        walks = []
        for step in (1, -1):
            if not policy.inward and (obj.z_mid - z) * step > 0:
                continue
            beyond = [a for a in anchors if (a - z) * step > 0]
            if beyond:
                nearest = min(beyond, key=lambda a: abs(a - z))
                end = z + step * (abs(nearest - z) // 2) if policy.reach == "nearest" else nearest - step
            else:
                end = hi if step > 0 else lo
            walks.append(range(z + step, end + step, step))
        return walks
