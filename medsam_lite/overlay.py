"""A PNG for a person to look at: the image with its boxes and the mask contours drawn on it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

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


def _text_scale(canvas: np.ndarray) -> float:
    return max(0.4, max(canvas.shape[:2]) / 700)


def draw_caption(canvas: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner of a BGR canvas (white on a black band, readable on any image)."""
    scale = _text_scale(canvas)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(canvas, (0, 0), (w + 6, h + base + 6), (0, 0, 0), -1)
    cv2.putText(canvas, text, (3, h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def draw_edge_letters(canvas: np.ndarray, letters: str) -> np.ndarray:
    """Orientation markers as 3D Slicer draws them: ``letters`` = (left, right, top, bottom) edge, e.g. "RLAP",
    each in yellow on a black box at the middle of its edge of the BGR canvas."""
    scale = _text_scale(canvas)
    height, width = canvas.shape[:2]
    for letter, (fx, fy) in zip(letters, ((0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0))):
        (w, h), base = cv2.getTextSize(letter, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = int(round(fx * (width - w - 4))) + 2
        y = int(round(fy * (height - h - base - 4))) + h + 2
        cv2.rectangle(canvas, (x - 2, y - h - 2), (x + w + 2, y + base), (0, 0, 0), -1)
        cv2.putText(canvas, letter, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 255), 1, cv2.LINE_AA)
    return canvas


def write_overlay(path: Union[str, Path], image: np.ndarray, labels: np.ndarray,
                  boxes: Optional[np.ndarray] = None, box_ids: Optional[Sequence[int]] = None,
                  caption: Optional[str] = None, view: Tuple[bool, bool, bool] = (False, False, False),
                  letters: str = "") -> Path:
    """Render and write the overlay PNG atomically (``path`` should end in .png), turned by ``view``
    ((transpose, flip rows, flip columns) of :func:`radiological_view`, applied after drawing), with ``caption``
    drawn in its top-left corner and orientation ``letters`` (:func:`draw_edge_letters`) when given."""
    canvas = render_overlay(image, labels, boxes, box_ids)
    transpose, flip_rows, flip_cols = view
    if transpose:
        canvas = canvas.transpose(1, 0, 2)
    canvas = np.ascontiguousarray(canvas[::-1 if flip_rows else 1, ::-1 if flip_cols else 1])
    if letters:
        draw_edge_letters(canvas, letters)
    if caption:
        draw_caption(canvas, caption)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise OSError(f"could not write overlay {path}")
    return Path(path)


_PLANES = {  # slice normal's main LPS axis -> (plane, screen right, screen down, edge letters L R T B) as
    # 3D Slicer / ITK-SNAP show that plane
    2: ("axial", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), "RLAP"),  # patient's left on the right, posterior down
    1: ("coronal", (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), "RLSI"),  # patient's left on the right, inferior down
    0: ("sagittal", (0.0, 1.0, 0.0), (0.0, 0.0, -1.0), "APSI"),  # posterior on the right, inferior down
}
_WORDS = {"R": "patient's right", "L": "patient's left", "A": "anterior", "P": "posterior", "S": "superior",
          "I": "inferior"}


def radiological_view(axes_lps: Optional[np.ndarray]) -> Tuple[Tuple[bool, bool, bool], str, str]:
    """How to turn a (y, x) slice of a volume for radiological display, and a description.

    ``axes_lps``: (3, 3), columns = LPS unit directions of increasing x, y, z index
    (:func:`medsam_lite.imageio.index_axes_lps`), or None. The slice plane is the one its normal (the z axis) is
    closest to; the slice is transposed / flipped so that screen right and down point as 3D Slicer and ITK-SNAP
    show that plane (axial: patient's left on the right, posterior down, i.e. patient's right on image left and
    anterior up). Returns ((transpose, flip rows, flip columns), a description such as "axial, radiological:
    patient's right on the left, anterior up", the edge letters left / right / top / bottom such as "RLAP"); None
    gives no turn, "array orientation: row 0 up, column 0 left" and no letters.
    """
    if axes_lps is None:
        return (False, False, False), "array orientation: row 0 up, column 0 left", ""
    cols, rows, normal = (np.asarray(axes_lps, dtype=np.float64)[:, i] for i in range(3))
    plane, right, down, letters = _PLANES[int(np.argmax(np.abs(normal)))]
    transpose = abs(float(np.dot(rows, right))) > abs(float(np.dot(cols, right)))
    horizontal, vertical = (rows, cols) if transpose else (cols, rows)
    turn = (transpose, float(np.dot(vertical, down)) < 0, float(np.dot(horizontal, right)) < 0)
    how = f"{plane}, radiological: {_WORDS[letters[0]]} on the left, {_WORDS[letters[2]]} up"
    return turn, how, letters


def write_volume_overlay(path: Union[str, Path], volume: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
                         axes_lps: Optional[np.ndarray] = None) -> Tuple[Path, str]:
    """Overlay of the (D, H, W) volume's slice with the largest mask area, with the 3D boxes (N, 6) whose z range
    covers that slice. Shown radiologically when ``axes_lps`` (:func:`radiological_view`) is given, else in array
    orientation. Drawn on it: ``z = 17 of 112`` in the top-left corner and, when radiological, the orientation
    letters at the edges (R L A P for an axial slice). Returns (path, a description for the user: ``slice z = 17 of
    112 (0-based, the boxes' third number), axial, radiological: patient's right on the left, anterior up``)."""
    areas = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
    z = int(np.argmax(areas)) if areas.max() > 0 else labels.shape[0] // 2
    ids = [i for i, b in enumerate(boxes, start=1) if b[2] <= z <= b[5]]
    on_slice = np.array([boxes[i - 1][[0, 1, 3, 4]] for i in ids]).reshape(-1, 4)
    view, how, letters = radiological_view(axes_lps)
    written = write_overlay(path, to_uint8(volume)[z], labels[z], on_slice, ids,
                            caption=f"z = {z} of {labels.shape[0]}", view=view, letters=letters)
    return written, f"slice z = {z} of {labels.shape[0]} (0-based, the boxes' third number), {how}"
