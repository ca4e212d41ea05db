"""Jobs of ``medsam-lite serve`` that edit a case: a box drawn by the page (new object or correction, by the rules
of :func:`~medsam_lite.serve.editing.decide`), a correction, a 3D box, the propagation of pending objects.

Each runs as a background :class:`~medsam_lite.serve.jobs.Job` with progress ``done / total`` slices (the session's
``progress`` callback) and can be cancelled (``POST /api/jobs/{job}/cancel``): the callback raises
:class:`~medsam_lite.errors.Cancelled` and the action's session steps are undone, so a cancelled job changes
nothing. One edit job runs per case (others are refused with 409 while it runs); the job is a foreground
operation of the shared backend, so background embedding waits for it. Everything is checked before the job
starts.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import Cancelled, InputError
from . import editing
from .jobs import Job, run_job
from .server import Server
from .state import CaseState, SegObject

Work = Callable[[editing.Steps, editing.Progress], List[SegObject]]


def start_edit(server: Server, state: CaseState, kind: str, total: int, work: Work,
               extra: Optional[Dict[str, Any]] = None, volume: bool = False) -> Job:
    """Run ``work(steps, progress)`` as job ``kind`` on ``state`` (one action; refused while another runs)."""
    with state.lock:
        state.check_idle()
        job = server.jobs.add(kind, state.id, max(1, total))
        state.job = job

    def progress(done: int, all_slices: int) -> None:
        job.done, job.total = done, all_slices
        if job.cancel.is_set():
            raise Cancelled()

    def run(job: Job) -> Dict[str, Any]:
        with server.backend.foreground(), editing.edit(state) as steps:
            objects = work(steps, progress)
        job.done = job.total
        return _result(state, objects, extra or {}, volume)

    run_job(job, run)
    return job


def _result(state: CaseState, objects: List[SegObject], extra: Dict[str, Any], volume: bool) -> Dict[str, Any]:
    with state.lock:
        labels = state.labels
        out: Dict[str, Any] = dict(extra)
        out["objects"] = [o.to_json() for o in objects]
        if objects:
            obj = objects[-1]
            mask = labels == obj.id
            out["object"] = obj.to_json()
            out["slices"] = [int(z) for z in np.flatnonzero(mask.any((1, 2)))]
            out["pixels"] = int(mask[obj.z].sum())
            if volume:
                out["labels"] = mask.astype(np.uint8)
    return out


def start_box(server: Server, state: CaseState, box: Sequence[float], z: int, selected: Optional[int], mode: str,
              name: Optional[str], z_range: Optional[Sequence[int]]) -> Job:
    """A box drawn on slice ``z`` by the page: a new object or a correction of ``selected`` (the rules)."""
    decision = editing.decide(state, box, z, selected, mode)
    state.focus = int(z)
    if decision["action"] == "new":
        if z_range is not None:
            editing.check_range(state, z_range, int(z))
        return start_edit(server, state, "new", 1, lambda steps, progress: [editing.add_slice_box(
            state, steps, box, z, name, z_range, progress)], decision)
    oid = int(decision["object"])  # type: ignore[arg-type]
    obj = state.get_object(oid)
    if obj.locked:
        raise InputError(f"{obj.name} is locked: unlock it to correct it, or choose New object")
    return start_correction(server, state, oid, z, box, decision)


def start_correction(server: Server, state: CaseState, oid: int, z: int, box: Sequence[float],
                     extra: Optional[Dict[str, Any]] = None) -> Job:
    """Correct object ``oid`` with ``box`` on slice ``z`` (``Session.correct``) as a job."""
    obj = state.get_object(oid)
    state.check_z(z)
    editing.check_box(state, box)
    if obj.locked:
        raise InputError(f"{obj.name} is locked: unlock it to correct it")
    lo, hi = obj.z_range or (obj.z, obj.z)
    state.focus = int(z)
    return start_edit(server, state, "correct", max(hi, z) - min(lo, z) + 1, lambda steps, progress: [
        editing.correct(state, steps, oid, z, box, progress)], {"action": "correct", **(extra or {})})


def start_propagation(server: Server, state: CaseState, box: Optional[List[float]], oid: Optional[int],
                      name: Optional[str], z: Optional[int] = None, z_range: Optional[Sequence[int]] = None,
                      every: bool = False) -> Job:
    """``box`` (6): a new object by the faithful propagation of the 3D box (then anchored on ``z`` when given);
    ``oid``: propagate that pending object over ``z_range``; ``every``: all pending objects in one job. The job's
    result: the object(s), ``slices`` (the z with mask pixels of the last one) and ``labels`` (its (D, H, W) uint8
    0 / 1 volume, for ``GET /api/jobs/{job}/labels``)."""
    if not state.is_3d:
        raise InputError("propagate needs a 3D case; use /segment for 2D")
    if sum(x is not None and x is not False for x in (box, oid, every or None)) != 1:
        raise InputError("give one of: box (a new object from a 3D box), object (a pending object), all: true")
    if box is not None:
        b = editing.check_box_3d(state, box)
        if z is not None:
            state.check_z(z)
        state.focus = int(z) if z is not None else int((b[5] - b[2]) / 2 + b[2])
        return start_edit(server, state, "propagate", int(b[5] - b[2] + 1), lambda steps, progress: [
            editing.add_box_3d(state, steps, box, z, name, progress)], volume=True)
    if every:
        pending = [k for k, o in state.objects.items() if o.pending]
        if not pending:
            raise InputError("no pending object: draw a box for a new object first")
        return start_edit(server, state, "propagate", editing.total_slices(state, pending),
                          lambda steps, progress: editing.propagate_all(state, steps, progress), volume=True)
    obj = state.get_object(int(oid))  # type: ignore[arg-type]
    if not obj.pending:
        raise InputError(f"object {obj.id} is propagated already: correct it with a box on a slice")
    if obj.locked:
        raise InputError(f"{obj.name} is locked: unlock it to propagate it")
    lo, hi = editing.check_range(state, z_range if z_range is not None else obj.propagate_range, obj.z)
    state.focus = obj.z
    return start_edit(server, state, "propagate", hi - lo + 1, lambda steps, progress: [
        editing.propagate_pending(state, steps, obj.id, (lo, hi), progress)], volume=True)
