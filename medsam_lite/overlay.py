"""A PNG for a person to look at: the image with its boxes and the mask contours drawn on it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from .imageio import to_uint8
from .io_utils import atomic_path


def _colour(i: int) -> tuple:
    """A distinct BGR colour for label i (1-based), from the HSV circle."""
    hsv = np.uint8([[[(i * 47) % 180, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def render_overlay(image: np.ndarray, labels: np.ndarray, boxes: Optional[np.ndarray] = None,
                   box_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """(H, W[, 3]) image + (H, W) label map + (N, 4) XYXY boxes in the same pixels -> (H, W, 3) BGR uint8.

    Box ``box_ids[k]`` (default k+1) and the contour of that label share a colour.
    """
    grey_or_rgb = to_uint8(image)
    canvas = cv2.cvtColor(grey_or_rgb, cv2.COLOR_GRAY2BGR) if grey_or_rgb.ndim == 2 else grey_or_rgb[:, :, ::-1].copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes)
    ids = list(box_ids) if box_ids is not None else list(range(1, len(boxes) + 1))
    for i, box in zip(ids, boxes):
        x0, y0, x1, y1 = (int(round(v)) for v in box[:4])
        cv2.rectangle(canvas, (x0, y0), (x1, y1), _colour(i), thickness)
    for label in np.unique(labels):
        if label == 0:
            continue
        contours, _ = cv2.findContours((labels == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, _colour(int(label)), thickness + 1)
    return canvas


def draw_caption(canvas: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner of a BGR canvas (white on a black band, readable on any image)."""
    scale = max(0.4, max(canvas.shape[:2]) / 700)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(canvas, (0, 0), (w + 6, h + base + 6), (0, 0, 0), -1)
    cv2.putText(canvas, text, (3, h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def write_overlay(path: Union[str, Path], image: np.ndarray, labels: np.ndarray,
                  boxes: Optional[np.ndarray] = None, box_ids: Optional[Sequence[int]] = None,
                  caption: Optional[str] = None) -> Path:
    """Render and write the overlay PNG atomically (``path`` should end in .png), with ``caption`` drawn
    in its top-left corner when given."""
    canvas = render_overlay(image, labels, boxes, box_ids)
    if caption:
        draw_caption(canvas, caption)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise OSError(f"could not write overlay {path}")
    return Path(path)


def write_volume_overlay(path: Union[str, Path], volume: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> Path:
    """Overlay of the (D, H, W) volume's slice with the largest mask area; shows the 3D boxes
    (N, 6) whose z range covers that slice, and says which slice it is (``slice z = <z> of <D>`` drawn
    in the corner; z = the index of the box's third number)."""
    areas = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
    z = int(np.argmax(areas)) if areas.max() > 0 else labels.shape[0] // 2
    ids = [i for i, b in enumerate(boxes, start=1) if b[2] <= z <= b[5]]
    on_slice = np.array([boxes[i - 1][[0, 1, 3, 4]] for i in ids]).reshape(-1, 4)
    return write_overlay(path, to_uint8(volume)[z], labels[z], on_slice, ids,
                         caption=f"slice z = {z} of {labels.shape[0]} (0-based)")
