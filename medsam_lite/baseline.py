"""The LiteMedSAM baseline inference algorithm, kept as a library path for speed comparisons.

It is :class:`medsam_lite.propagation.Propagator` (the one inference algorithm) with the slice cache
switched off and one box per decoder call, as the official ``CVPR24_LiteMedSAM_infer.py`` does:

* 2D: the image is encoded once, then every box is decoded on its own (one decoder call per box).
* 3D: boxes are processed one at a time; for every slice of every box the slice is preprocessed
  and the image encoder is run again (no embedding cache), then one box is decoded.

So its masks equal :class:`medsam_lite.predictor.Predictor`'s by construction; the tests compare
both against an independent transcription of the official loop.

Frames: boxes are in original pixels, (N, 4) ``[x_min, y_min, x_max, y_max]`` for 2D images (H, W[, 3])
and (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` for (D, H, W) volumes, z = slice index.
Images / volumes are uint8 (other real dtypes are min-max scaled to uint8 first, as the Predictor does).
It is deliberately slow; use the Predictor for real work.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch

from .encoders import inference_encoder
from .model import DecoderGraph, MedSAMLite
from .propagation import Propagator
from .validation import as_uint8, check_boxes_2d, check_boxes_3d, check_image, check_volume


def baseline_propagator(model: MedSAMLite) -> Propagator:
    """The baseline: ``model``'s encoder and decoder in a Propagator without slice cache, one box per call."""
    model = model.eval()
    return Propagator(inference_encoder(model.image_encoder), DecoderGraph(model), cache=False, decode_batch=1)


def _propagator(model: Union[MedSAMLite, Propagator]) -> Propagator:
    return model if isinstance(model, Propagator) else baseline_propagator(model)


def baseline_segment_2d(model: Union[MedSAMLite, Propagator], image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Baseline 2D: encode the (H, W[, 3]) image once, decode the (N, 4) boxes one at a time.

    ``model``: a MedSAMLite, or a :func:`baseline_propagator` whose call counters the caller reads.
    Returns: (H, W) uint8 label map, value i+1 for box i, later boxes win.
    """
    image = as_uint8(check_image(image))
    boxes = check_boxes_2d(boxes, (image.shape[0], image.shape[1]))
    with torch.inference_mode():
        return _propagator(model).segment_2d(torch.from_numpy(image), torch.from_numpy(boxes)).numpy()


def baseline_segment_volume(model: Union[MedSAMLite, Propagator], volume: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Baseline 3D: one box at a time, re-encoding every slice for every box (no cache).

    Args:
        model: a MedSAMLite, or a :func:`baseline_propagator` whose call counters the caller reads.
        volume: (D, H, W) uint8 (the challenge format).
        boxes: (N, 6) in voxel indices, both ends inclusive.
    Returns: (D, H, W) uint8 label map, value i+1 for box i, later boxes win.
    """
    volume = as_uint8(check_volume(volume))
    boxes = check_boxes_3d(boxes, volume.shape)
    with torch.inference_mode():
        return _propagator(model).segment_3d(torch.from_numpy(volume), torch.from_numpy(boxes)).numpy()


class BaselinePredictor:
    """The baseline behind the Predictor's surface (``set_image`` / ``predict`` / ``predict_volume``), so
    ``medsam-lite segment --baseline`` runs the LiteMedSAM algorithm on any input for comparisons."""

    def __init__(self, model: MedSAMLite) -> None:
        self.model = model.eval()
        self.propagator = baseline_propagator(self.model)
        self._image: Optional[np.ndarray] = None

    def set_image(self, image: np.ndarray) -> None:
        self._image = image

    def predict(self, boxes: np.ndarray) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("call set_image() before predict()")
        return baseline_segment_2d(self.propagator, self._image, boxes)

    def predict_volume(self, volume: np.ndarray, boxes: np.ndarray, progress: bool = False,
                       on_progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        return baseline_segment_volume(self.propagator, volume, boxes)


def baseline_encoder_calls_volume(volume_shape: Tuple[int, int, int], boxes: np.ndarray) -> int:
    """Encoder calls the baseline makes on a (D, H, W) volume: the sum of the boxes' clipped z-ranges."""
    depth = volume_shape[0]
    total = 0
    for b in np.asarray(boxes, dtype=np.int64).reshape(-1, 6):
        total += max(0, min(int(b[5]), depth - 1) - max(int(b[2]), 0) + 1)
    return total
