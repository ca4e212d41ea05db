"""Segment files or folders of cases with box prompts (the library side of ``medsam-lite segment``).

Inputs (see :mod:`medsam_lite.imageio`): challenge ``.npz`` cases carry their own boxes; NIfTI /
MHA / NRRD volumes, DICOM series folders, and PNG / JPG / TIFF / DICOM images take boxes from the
caller (same boxes for every case in a folder). Box coordinates are voxel / pixel indices of the
file's own grid: 2D ``[x_min, y_min, x_max, y_max]``, 3D ``[x_min, y_min, z_min, x_max, y_max, z_max]``.

Non-uint8 intensities (CT in HU, 16-bit MR / microscopy) are mapped to uint8 first with
:func:`medsam_lite.imageio.to_uint8`: a CT window when given, else the 0.5-99.5 percentiles.
"""
from __future__ import annotations

import csv
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from .errors import InputError
from .imageio import Case, is_supported, mask_path_for, read_case, to_uint8, write_mask
from .io_utils import atomic_path
from .overlay import write_overlay, write_volume_overlay
from .predictor import Predictor


@dataclass
class SegmentResult:
    """Outputs written, failures as (path, one-line message), and seconds per case."""

    outputs: List[Path] = field(default_factory=list)
    failures: List[Tuple[Path, str]] = field(default_factory=list)
    times: List[Tuple[str, float, str]] = field(default_factory=list)


def _case_paths(input_path: Path) -> List[Path]:
    if input_path.is_dir() and not is_supported(input_path):
        paths = sorted(p for p in input_path.iterdir() if not p.name.startswith(".") and is_supported(p))
        if not paths:
            raise InputError("folder holds no supported cases (.npz, NIfTI, MHA, NRRD, images, DICOM)", input_path)
        return paths
    return [input_path]


def segment_case(predictor: Predictor, case: Case, boxes: Optional[np.ndarray],
                 window: Optional[Tuple[float, float]] = None, progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Label map for one case; returns (mask, boxes used). Errors are InputError naming the case."""
    boxes = case.boxes if case.boxes is not None else boxes
    if boxes is None:
        raise InputError("no boxes: give --box or --boxes for non-challenge inputs", case.path)
    boxes = np.asarray(boxes, dtype=np.float64)
    width = 6 if case.is_3d else 4
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise InputError(f"a {'3D' if case.is_3d else '2D'} case needs boxes of {width} numbers, got shape "
                         f"{boxes.shape}", case.path)
    array = to_uint8(case.array, window)
    try:
        if case.is_3d:
            mask = predictor.predict_volume(array, boxes, progress=progress)
        else:
            predictor.set_image(array)
            mask = predictor.predict(boxes)
    except InputError as exc:
        raise exc.with_source(case.path)
    return mask, boxes


def segment_paths(
    input_path: Union[str, Path],
    out_dir: Union[str, Path],
    model: Union[str, Predictor, None] = None,
    boxes: Optional[np.ndarray] = None,
    overlay: Optional[Union[str, Path]] = None,
    window: Optional[Tuple[float, float]] = None,
    progress: bool = True,
) -> SegmentResult:
    """Segment one case or every case of a folder into ``out_dir``.

    Writes masks (atomically), ``timing.csv`` (case, seconds, status), and overlays when asked
    (a PNG path for one case, a folder for a folder of cases). One bad case does not stop the
    others: it is listed in ``result.failures``.
    """
    input_path, out_dir = Path(input_path), Path(out_dir)
    paths = _case_paths(input_path)
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    result = SegmentResult()
    many = len(paths) > 1 or input_path.is_dir() and not is_supported(input_path)
    for path in paths:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                case = read_case(path)
                mask, used = segment_case(predictor, case, boxes, window, progress)
                out = write_mask(case, mask, mask_path_for(case, out_dir))
            for w in caught:
                print(f"warning: {path}: {w.message}")
            elapsed = time.perf_counter() - start
            if overlay is not None:
                target = Path(overlay) / f"{path.name.split('.')[0]}.png" if many else Path(overlay)
                writer = write_volume_overlay if case.is_3d else write_overlay
                writer(target, case.array, mask, used)
            result.outputs.append(out)
            result.times.append((path.name, elapsed, "ok"))
        except InputError as exc:
            result.failures.append((path, str(exc.with_source(path))))
            result.times.append((path.name, time.perf_counter() - start, "failed"))
    _write_timing(out_dir / "timing.csv", result.times)
    return result


def _write_timing(path: Path, rows: List[Tuple[str, float, str]]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case", "seconds", "status"])
            writer.writerows((name, f"{sec:.3f}", status) for name, sec, status in rows)
