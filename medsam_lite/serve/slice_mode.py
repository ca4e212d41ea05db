"""Box mode of ``medsam-lite serve``: one box on one slice (a 2D case, or a slice of a volume).

``Predictor.set_image(slice)`` + ``Predictor.predict(box)`` on the shared caching backend; the mask
becomes an object's pixels on that slice. Everything is checked before the case changes.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..validation import check_boxes_2d
from .server import Server
from .state import CaseState, SegObject


def segment_box(server: Server, state: CaseState, box: List[float], z: int, oid: Optional[int],
                name: Optional[str]) -> Dict[str, Any]:
    """Segment the XYXY ``box`` (pixels of the slice, ends inclusive) on slice ``z`` of ``state`` into
    object ``oid`` (a new object when None). Returns the (H, W) bool ``mask``, the object, server
    milliseconds and whether the encoder ran."""
    start = time.perf_counter()
    z = state.check_z(z)
    if oid is not None:
        state.get_object(oid)
    boxes = check_boxes_2d(np.asarray([box], np.float64), (state.height, state.width))
    image = state.volume[z]
    encoded = not server.backend.cached(server.model_input(image))
    predictor = server.predictor()
    with server.backend.foreground():
        predictor.set_image(image)
        mask = predictor.predict(boxes, label_map=False)[0]
    state.embedded.add(z)
    with state.lock:
        state.snapshot()
        obj = _target(state, oid, name, [float(v) for v in box], z)
        state.set_slice_mask(obj, z, mask)
        if state.first_mask_s is None:
            state.first_mask_s = time.perf_counter() - state.opened
    return {"mask": mask, "object": obj, "encoded": encoded, "ms": (time.perf_counter() - start) * 1000.0}


def _target(state: CaseState, oid: Optional[int], name: Optional[str], box: List[float], z: int) -> SegObject:
    """The object a new mask goes to, its box and slice updated (lock held)."""
    if oid is None:
        return state.new_object(name, box, z)
    obj = state.get_object(oid)
    obj.box, obj.z, obj.z_range = box, z, None
    if name:
        obj.name = name
    return obj
