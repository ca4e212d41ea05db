"""Segmentation metrics of the CVPR24 "MedSAM on Laptop" challenge: DSC and NSD.

Frames and shapes
-----------------
Masks and label maps are numpy arrays in array order: ``(H, W)`` for 2D (rows = y, columns = x)
and ``(D, H, W)`` = ``(z, y, x)`` for 3D. ``spacing`` is given in the same order as the array
axes (``(sy, sx)`` or ``(sz, sy, sx)``), in millimetres (pixels for 2D cases, where the challenge
uses spacing 1). Callers that hold a spacing in SimpleITK ``(x, y, z)`` order must reverse it
first (see :func:`medsam_lite.evaluate.evaluate_dirs`, ``spacing_order``).

Surface distances come from DeepMind's ``surface-distance`` package (module
``surface_distance``), the code the challenge's own evaluation script copies: surfaces are made
of surface elements (contour segments in 2D, surfels in 3D) weighted by their length / area, and
the normalised surface Dice (NSD) at tolerance ``t`` is the weighted fraction of both surfaces
lying within ``t`` of the other surface.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .errors import InputError

#: Below or at this DSC a label's NSD is reported as 0 (challenge rule).
NSD_MIN_DSC = 0.2


@dataclass(frozen=True)
class LabelScore:
    """Scores of one label id of one case."""

    label: int
    dsc: float
    nsd: float


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} does not match ground-truth shape {gt.shape}")
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient ``2|P & G| / (|P| + |G|)`` of two binary masks.

    Args:
        pred: predicted mask, any shape; non-zero = foreground.
        gt: reference mask, same shape as ``pred``.

    Returns:
        DSC in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    p, g = _as_bool_pair(pred, gt)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / total


def _check_spacing(spacing: Sequence[float], ndim: int) -> Tuple[float, ...]:
    try:
        values = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as exc:
        raise InputError(f"spacing {spacing!r} is not numeric") from exc
    if len(values) != ndim:
        raise InputError(f"spacing {values} has {len(values)} values, need {ndim} for a {ndim}D mask")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise InputError(f"spacing {values} must be finite and positive")
    return values


def nsd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance: float = 2.0) -> float:
    """Normalised surface Dice of two binary masks at ``tolerance`` (same unit as ``spacing``).

    Args:
        pred: predicted mask, ``(H, W)`` or ``(D, H, W)``; non-zero = foreground.
        gt: reference mask, same shape as ``pred``.
        spacing: voxel size per array axis, in array order (``(sy, sx)`` / ``(sz, sy, sx)``).
        tolerance: distance (mm, or pixels with spacing 1) within which a surface element of
            one mask counts as matched by the other mask's surface.

    Returns:
        NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is. (No DSC
        threshold is applied here; see :func:`case_scores`.)
    """
    p, g = _as_bool_pair(pred, gt)
    if p.ndim not in (2, 3):
        raise InputError(f"NSD needs 2D or 3D masks, got shape {p.shape}")
    spacing_t = _check_spacing(spacing, p.ndim)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise InputError(f"tolerance {tolerance!r} must be finite and >= 0")
    p_any, g_any = bool(p.any()), bool(g.any())
    # Handled here because surface_distance 0.1 uses np.Inf (removed in NumPy 2) for empty masks.
    if not p_any and not g_any:
        return 1.0
    if not p_any or not g_any:
        return 0.0

    import surface_distance  # DeepMind's implementation (PyPI: surface-distance)

    with warnings.catch_warnings():
        # surface_distance 0.1 calls scipy.ndimage.filters / .morphology (deprecated aliases).
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=r".*scipy\.ndimage.*namespace")
        distances = surface_distance.compute_surface_distances(
            np.ascontiguousarray(g), np.ascontiguousarray(p), spacing_mm=spacing_t)
    return float(surface_distance.compute_surface_dice_at_tolerance(distances, float(tolerance)))


def case_scores(segs: np.ndarray, gts: np.ndarray, spacing: Sequence[float], tolerance: float = 2.0,
                ) -> Tuple[float, float, List[LabelScore]]:
    """DSC and NSD of one case, averaged over the label ids present in ``gts``.

    For every id ``k`` in ``1..gts.max()`` that occurs in ``gts`` (absent ids are skipped; ids
    predicted but absent from ``gts`` are ignored, as in the challenge), DSC and NSD of
    ``segs == k`` against ``gts == k`` are computed; NSD is set to 0 where that label's
    DSC <= 0.2 (:data:`NSD_MIN_DSC`).

    Args:
        segs: predicted label map, ``(H, W)`` or ``(D, H, W)``, integer.
        gts: reference label map, same shape, integer (0 = background).
        spacing: voxel size per array axis in array order (mm; ``(1, 1)`` for 2D cases).
        tolerance: NSD tolerance in the unit of ``spacing``.

    Returns:
        ``(case_dsc, case_nsd, per_label)``: the unweighted means over labels and one
        :class:`LabelScore` per evaluated label, in increasing label order.

    Raises:
        InputError: shape mismatch, non-integer maps, bad spacing, or no foreground label in ``gts``.
    """
    segs = np.asarray(segs)
    gts = np.asarray(gts)
    if segs.shape != gts.shape:
        raise InputError(f"segs shape {segs.shape} does not match gts shape {gts.shape}")
    for name, arr in (("segs", segs), ("gts", gts)):
        if arr.dtype.kind not in "biu":
            raise InputError(f"{name} has dtype {arr.dtype}, expected an integer label map")
    if gts.ndim not in (2, 3):
        raise InputError(f"label maps must be 2D (H, W) or 3D (D, H, W), got shape {gts.shape}")
    _check_spacing(spacing, gts.ndim)
    labels = [int(k) for k in np.unique(gts) if k > 0]
    if not labels:
        raise InputError("gts contains no foreground label (all voxels <= 0)")
    per_label: List[LabelScore] = []
    for k in labels:
        g = gts == k
        p = segs == k
        d = dice(p, g)
        n = nsd(p, g, spacing, tolerance) if d > NSD_MIN_DSC else 0.0
        per_label.append(LabelScore(label=k, dsc=float(d), nsd=float(n)))
    case_dsc = float(np.mean([s.dsc for s in per_label]))
    case_nsd = float(np.mean([s.nsd for s in per_label]))
    return case_dsc, case_nsd, per_label
