"""Edits of an open case through its :class:`~medsam_lite.session.Session`, and the rules of the annotator.

Every edit is one *action* (:func:`edit`): its session calls are counted, undone together when one fails or is
cancelled (a :class:`~medsam_lite.errors.Cancelled` raised in ``progress``), and recorded as one undo step of the
case (:meth:`~medsam_lite.serve.state.CaseState.record`). Nothing here starts a thread; :mod:`.slice_mode` runs
short edits in the request, :mod:`.volume_mode` long ones as jobs.

The rules (docs/serve.md, "Rules"):

* **A box drawn on slice z** (:func:`decide`): with ``mode="new"``, or no object selected, it makes a new object;
  with ``mode="correct"`` it corrects the selected object (a slice outside its z-range grows it); with ``"auto"``
  (the page's default) it corrects the selected object when z lies in the object's z-range and the box overlaps
  the object on that slice (at least half of the smaller of the drawn box and the object's bounding box on z;
  where the object has no pixel on z, its last drawn box), and otherwise makes a new object. So a second organ
  drawn beside the first is a new object; a box drawn around the selected object is its correction.
* **A new object on a 3D case** is first *pending*: its mask on the drawn slice only (the box decoded there, the
  user sees it at once); "Propagate" (one object) or "Propagate all" (every pending object, one job) then
  propagates it over its z-range *from the drawn slice*: that slice is the start and an anchor, so its mask is the
  drawn box's and no later correction elsewhere re-decides it (the session's correction walk from slice z with
  the z-range set, i.e. the baseline's propagation with ``z_mid`` = the drawn slice). A 3D box given whole
  (``POST .../propagate {"box": [6]}``) is ``Session.add_object``'s faithful propagation (``segment``'s mask); when
  the request names the slice it was drawn on (``"z"``) and that is not the box's middle slice, a correction
  anchored there follows.
* **Locks**: before an object is added or propagated, every finished object (2D: every object; 3D: every
  propagated one) is locked, so the new one never eats it; pending objects stay unlocked. Unlock an object
  (button / L) to correct it; a locked object is refused with a one-line message.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .state import CaseState, SegObject, default_name

Progress = Callable[[int, int], None]

DEFAULT_HALF_RANGE = 5
"""A pending object's default z-range: the drawn slice +- this many slices (clipped to the volume)."""

OVERLAP = 0.5
"""``auto`` rule: a box corrects the selected object when it overlaps it by at least this fraction of the smaller
of the two boxes."""

MODES = ("auto", "new", "correct")


class Steps:
    """The session calls of one action, counted so that a failed action undoes exactly its own steps."""

    def __init__(self, state: CaseState) -> None:
        self.state, self.count = state, 0

    def __call__(self, method: str, *args: object, **kwargs: object) -> object:
        out = getattr(self.state.session, method)(*args, **kwargs)
        self.count += 1
        return out

    def rollback(self) -> None:
        for _ in range(self.count):
            self.state.session.undo()
        self.count = 0


@contextlib.contextmanager
def edit(state: CaseState) -> Iterator[Steps]:
    """One undoable action on ``state``: yields the step counter; on any error its steps are undone and the
    objects' metadata restored (nothing changed); on success it is recorded (when it changed anything)."""
    before = state.copy_objects()
    steps = Steps(state)
    try:
        yield steps
    except BaseException:
        if steps.count:  # a session step was taken: it cleared the session's redo steps, so the case's redo goes too
            state.redo.clear()
        steps.rollback()
        state.objects = before
        raise
    with state.lock:
        state.sync()
        changed = [o.to_json() for o in before.values()] != [o.to_json() for o in state.objects.values()]
        if steps.count or changed:
            state.record(steps.count, before)


def offset(progress: Optional[Progress], done: int, extra: int) -> Optional[Progress]:
    """``progress`` of a sub-action that follows ``done`` slices, with ``extra`` slices still to come after it."""
    if progress is None:
        return None
    return lambda d, t: progress(done + d, done + t + extra)


def check_box(state: CaseState, box: Sequence[float]) -> List[float]:
    """A 2D ``[x0, y0, x1, y1]`` box inside the slice (one-line :class:`InputError` otherwise: as the session, a
    box that leaves the image is refused, not clipped)."""
    values = np.asarray(box, np.float64)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise InputError(f"box must be 4 finite numbers [x0, y0, x1, y1], got {list(box)}")
    x0, y0, x1, y1 = values
    if not (0 <= x0 <= x1 < state.width and 0 <= y0 <= y1 < state.height):
        raise InputError(f"box {values.tolist()} is not inside the {state.width} x {state.height} image "
                         f"(x 0..{state.width - 1}, y 0..{state.height - 1}, x0 <= x1, y0 <= y1)")
    return [float(v) for v in values]


def check_box_3d(state: CaseState, box: Sequence[float]) -> List[float]:
    """A 3D ``[x0, y0, z0, x1, y1, z1]`` box inside the volume (refused, not clipped, otherwise)."""
    values = np.asarray(box, np.float64)
    if values.shape != (6,) or not np.isfinite(values).all():
        raise InputError(f"3D box must be 6 finite numbers [x0, y0, z0, x1, y1, z1], got {list(box)}")
    for axis, lo, hi, size in zip("xyz", values[:3], values[3:], (state.width, state.height, state.depth)):
        if not 0 <= lo <= hi < size:
            raise InputError(f"3D box {values.tolist()}: {axis} range {lo:g}..{hi:g} is not inside 0..{size - 1}")
    return [float(v) for v in values]


def _ints(box: Sequence[float]) -> Tuple[int, int, int, int]:
    return int(box[0]), int(box[1]), int(box[2]), int(box[3])


def check_range(state: CaseState, z_range: Optional[Sequence[int]], z: int) -> Tuple[int, int]:
    """The z-range a pending object drawn on slice ``z`` is propagated over: ``z_range`` (lo, hi), or z +-
    :data:`DEFAULT_HALF_RANGE`, clipped to the volume; it always includes z."""
    if z_range is None:
        lo, hi = z - DEFAULT_HALF_RANGE, z + DEFAULT_HALF_RANGE
    else:
        if len(z_range) != 2:
            raise InputError(f"z_range must be [lo, hi], got {list(z_range)}")
        lo, hi = int(z_range[0]), int(z_range[1])
        if lo > hi:
            raise InputError(f"z_range [{lo}, {hi}] is inverted")
    lo, hi = max(0, min(lo, z)), min(state.depth - 1, max(hi, z))
    return lo, hi


def lock_finished(state: CaseState, steps: Steps, keep: Optional[int] = None) -> None:
    """Lock every finished object (not pending, not ``keep``) that is unlocked."""
    for oid, obj in list(state.objects.items()):
        if oid != keep and not obj.pending and not state.session.objects[oid].locked:
            steps("lock", oid)


def add_slice_box(state: CaseState, steps: Steps, box: Sequence[float], z: int, name: Optional[str] = None,
                  z_range: Optional[Sequence[int]] = None, progress: Optional[Progress] = None) -> SegObject:
    """A new object from ``box`` drawn on slice ``z``: the object itself on a 2D case, a pending object (its mask
    on slice z only; propagated later over ``z_range``) on a 3D one."""
    z = state.check_z(z)
    box = check_box(state, box)
    x0, y0, x1, y1 = _ints(box)
    span = check_range(state, z_range, z) if state.is_3d else None
    lock_finished(state, steps)
    prompt = (x0, y0, z, x1, y1, z) if state.is_3d else (x0, y0, x1, y1)
    oid = int(steps("add_object", prompt, progress=progress))  # type: ignore[arg-type]
    state.sync()
    obj = state.objects[oid]
    obj.box, obj.z, obj.name = box, z, (name or "").strip() or default_name(oid)
    if state.is_3d:
        obj.pending, obj.z_range, obj.propagate_range = True, (z, z), span
    return obj


def add_box_3d(state: CaseState, steps: Steps, box: Sequence[float], drawn_z: Optional[int] = None,
               name: Optional[str] = None, progress: Optional[Progress] = None) -> SegObject:
    """A new object from a whole 3D box ``[x0, y0, z0, x1, y1, z1]``: ``Session.add_object`` (the faithful
    propagation); with ``drawn_z`` off the box's middle slice, then a correction anchored on ``drawn_z``."""
    if not state.is_3d:
        raise InputError("propagate needs a 3D case; use /segment for 2D")
    b = check_box_3d(state, box)
    x0, y0, z0, x1, y1, z1 = (int(v) for v in b)
    mid = int((z1 - z0) / 2 + z0)
    anchor = None if drawn_z is None or int(drawn_z) == mid else state.check_z(drawn_z)
    lock_finished(state, steps)
    slices = z1 - z0 + 1
    oid = int(steps("add_object", (x0, y0, z0, x1, y1, z1), progress=offset(progress, 0, slices if anchor else 0)))
    if anchor is not None:
        steps("correct", oid, anchor, box=(x0, y0, x1, y1), progress=offset(progress, slices, 0))
    state.sync()
    obj = state.objects[oid]
    obj.box, obj.z = [float(v) for v in (b[0], b[1], b[3], b[4])], mid if anchor is None else anchor
    obj.name = (name or "").strip() or default_name(oid)
    return obj


def correct(state: CaseState, steps: Steps, oid: int, z: int, box: Sequence[float],
            progress: Optional[Progress] = None) -> SegObject:
    """Correct object ``oid`` with ``box`` on slice ``z`` (``Session.correct``: re-propagated from z by the
    session's anchor rule). A pending object corrected on its drawn slice stays pending with the new box; on
    another slice it becomes a propagated object spanning both."""
    obj = state.get_object(oid)
    z = state.check_z(z)
    box = check_box(state, box)
    steps("correct", oid, z, box=_ints(box), progress=progress)
    if obj.pending and z != obj.z:
        obj.pending, obj.propagate_range = False, None
    obj.box, obj.z = box, z
    if obj.pending:
        obj.z_range = (z, z)
    return obj


def propagate_pending(state: CaseState, steps: Steps, oid: int, z_range: Optional[Sequence[int]] = None,
                      progress: Optional[Progress] = None) -> SegObject:
    """Propagate pending object ``oid`` from its drawn slice over ``z_range`` (default: its own)."""
    obj = state.get_object(oid)
    if not obj.pending:
        raise InputError(f"object {oid} is propagated already: correct it with a box on a slice")
    lo, hi = check_range(state, z_range if z_range is not None else obj.propagate_range, obj.z)
    lock_finished(state, steps, keep=oid)
    steps("correct", oid, obj.z, box=_ints(obj.box), z_range=(lo, hi), progress=progress)
    obj.pending, obj.propagate_range = False, None
    state.sync()
    return obj


def propagate_all(state: CaseState, steps: Steps, progress: Optional[Progress] = None) -> List[SegObject]:
    """Propagate every pending object (by id), one after the other, in this one action."""
    pending = [o for o in state.objects.values() if o.pending]
    if not pending:
        raise InputError("no pending object: draw a box for a new object first")
    spans = [check_range(state, o.propagate_range, o.z) for o in pending]
    sizes = [hi - lo + 1 for lo, hi in spans]
    done: List[SegObject] = []
    for i, (obj, span) in enumerate(zip(pending, spans)):
        sub = offset(progress, sum(sizes[:i]), sum(sizes[i + 1:]))
        done.append(propagate_pending(state, steps, obj.id, span, sub))
    return done


def total_slices(state: CaseState, oids: Sequence[int]) -> int:
    """Slices the propagation of the pending objects ``oids`` decodes (a job's initial total)."""
    return sum(hi - lo + 1 for lo, hi in (check_range(state, state.objects[k].propagate_range, state.objects[k].z)
                                         for k in oids))


def extent(state: CaseState, obj: SegObject, z: int) -> Tuple[int, int, int, int]:
    """The object's bounding box (x0, y0, x1, y1) on slice ``z``, or its last drawn box where it has no pixel."""
    ys, xs = np.nonzero(state.labels[z] == obj.id)
    if len(xs) == 0:
        return _ints(obj.box)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection of two inclusive XYXY boxes over the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    area = min((a[2] - a[0] + 1) * (a[3] - a[1] + 1), (b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return w * h / area


def decide(state: CaseState, box: Sequence[float], z: int, selected: Optional[int], mode: str) -> Dict[str, object]:
    """What a box drawn on slice ``z`` does (module docstring): ``{"action": "new"}`` or ``{"action": "correct",
    "object": k}``, with the ``reason`` in words."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    z = state.check_z(z)
    box = check_box(state, box)
    if selected is None or mode == "new":
        return {"action": "new", "reason": "new-object mode" if mode == "new" else "no object selected"}
    obj = state.get_object(selected)
    if mode == "correct":
        return {"action": "correct", "object": obj.id, "reason": "correction mode"}
    lo, hi = obj.z_range or (obj.z, obj.z)
    if not lo <= z <= hi:
        return {"action": "new", "reason": f"slice {z} is outside {obj.name}'s slices {lo}-{hi}"}
    share = overlap(_ints(box), extent(state, obj, z))
    if share < OVERLAP:
        return {"action": "new", "reason": f"the box overlaps {obj.name} by {share:.0%} (< {OVERLAP:.0%})"}
    return {"action": "correct", "object": obj.id, "reason": f"the box overlaps {obj.name} by {share:.0%}"}
