"""Box mode of ``medsam-lite serve``: one box on one slice, answered in the request (``POST .../segment``).

A new object (``object`` null: :func:`~medsam_lite.serve.editing.add_slice_box`; on a 3D case a pending object
on that slice) or a correction of object ``object`` on slice z (:func:`~medsam_lite.serve.editing.correct`), both
through the case's :class:`~medsam_lite.session.Session` on the shared caching backend. Everything is checked
before the case changes.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from .editing import add_slice_box, check_box, correct, edit
from .server import Server
from .state import CaseState


def segment_box(server: Server, state: CaseState, box: List[float], z: int, oid: Optional[int],
                name: Optional[str]) -> Dict[str, Any]:
    """Segment the XYXY ``box`` (pixels of the slice, ends inclusive) on slice ``z`` of ``state`` into
    object ``oid`` (a new object when None). Returns the (H, W) bool ``mask`` (the object on slice z), the object,
    server milliseconds and whether the encoder ran."""
    start = time.perf_counter()
    z = state.check_z(z)
    if oid is not None:
        state.get_object(oid)
    check_box(state, box)
    encoded = not server.backend.cached(server.model_input(state.volume[z]))
    state.focus = z
    with state.lock:
        state.check_idle()
        with server.backend.foreground(), edit(state) as steps:
            obj = correct(state, steps, oid, z, box) if oid is not None else add_slice_box(state, steps, box, z, name)
            if oid is not None and name and name.strip():
                obj.name = name.strip()
        state.embedded.add(z)
        if state.first_mask_s is None:
            state.first_mask_s = time.perf_counter() - state.opened
        mask = state.labels[z] == obj.id
    return {"mask": mask, "object": obj, "encoded": encoded, "ms": (time.perf_counter() - start) * 1000.0}
