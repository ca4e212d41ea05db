"""PNG encoding for ``medsam-lite serve`` responses."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def png(array: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) RGB uint8 -> PNG bytes."""
    import cv2

    if array.ndim == 3:
        array = array[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise InputError("could not encode PNG")
    return buf.tobytes()
