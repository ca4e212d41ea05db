"""Propagation mode of ``medsam-lite serve``: one 3D box through a volume, as a background job.

``Predictor.predict_volume(volume, box)`` (the baseline's slice-by-slice propagation, reusing cached
slice embeddings) on the shared caching backend; the result replaces an object on every slice of
the box's z-range. Everything is checked before the job starts.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import InputError
from ..validation import check_boxes_3d
from .jobs import Cancelled, Job, run_job
from .server import Server
from .state import CaseState


def start_propagation(server: Server, state: CaseState, box: List[float], oid: Optional[int],
                      name: Optional[str]) -> Job:
    """Start propagating the ``[x0, y0, z0, x1, y1, z1]`` box (voxels, ends inclusive) through
    ``state`` into object ``oid`` (new when None). The job's result: ``labels`` (D, H, W) uint8,
    ``object``, ``slices`` (the z with mask pixels)."""
    if not state.is_3d:
        raise InputError("propagate needs a 3D case; use /segment for 2D")
    if oid is not None:
        state.get_object(oid)
    boxes = check_boxes_3d(np.asarray([box], np.float64), state.volume.shape)
    z0, z1 = int(boxes[0, 2]), int(boxes[0, 5])
    job = server.jobs.add("propagate", state.id, z1 - z0 + 1)

    def progress(done: int, total: int) -> None:
        job.done, job.total = done, total
        if job.cancel.is_set():
            raise Cancelled()

    def work(job: Job) -> Dict[str, Any]:
        with server.backend.foreground():
            segs = server.predictor().predict_volume(state.volume, boxes, progress=False, on_progress=progress)
        return _apply(state, segs, boxes, oid, name)

    run_job(job, work)
    return job


def _apply(state: CaseState, segs: np.ndarray, boxes: np.ndarray, oid: Optional[int],
           name: Optional[str]) -> Dict[str, Any]:
    """Make the (D, H, W) propagation ``segs`` object ``oid``'s voxels (new object when None)."""
    mask = segs > 0
    z0, z1 = int(boxes[0, 2]), int(boxes[0, 5])
    with state.lock:
        state.snapshot()
        xyxy = [float(boxes[0, i]) for i in (0, 1, 3, 4)]
        mid = int((z1 - z0) / 2 + z0)
        if oid is None:
            obj = state.new_object(name, xyxy, mid)
        else:
            obj = state.get_object(oid)
            if name:
                obj.name = name
        obj.box, obj.z, obj.z_range = xyxy, mid, (z0, z1)
        state.set_volume_mask(obj, mask)
        state.embedded.update(range(z0, z1 + 1))
    return {"labels": segs, "object": obj.to_json(), "slices": [int(z) for z in np.flatnonzero(mask.any((1, 2)))]}
