"""Agreement of label maps, shared by every benchmark.

Label maps are (H, W) for 2D cases and (D, H, W) = (z, y, x) for 3D, uint8, value i+1 = box i (later boxes
win), as :meth:`~medsam_lite.predictor.Predictor.predict` / :meth:`~medsam_lite.predictor.Predictor.predict_volume`.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..metrics import dice


def label_agreement(labels: np.ndarray, reference: np.ndarray, n_labels: int) -> Dict[str, float]:
    """Agreement of two label maps of the same shape (values 0..n_labels).

    Returns: ``pixel_agreement`` = fraction of pixels / voxels with equal values, and
    ``label_dsc`` = mean DSC of ``labels == k`` vs ``reference == k`` over the ids k in 1..n_labels
    present in either map (1.0 when neither has any).
    """
    if labels.shape != reference.shape:
        raise ValueError(f"label maps differ in shape: {labels.shape} vs {reference.shape}")
    present = [k for k in range(1, n_labels + 1) if (labels == k).any() or (reference == k).any()]
    scores = [dice(labels == k, reference == k) for k in present]
    return {"pixel_agreement": float((labels == reference).mean()),
            "label_dsc": float(np.mean(scores)) if scores else 1.0}


def gt_dsc(labels: np.ndarray, gts: np.ndarray, n_labels: int) -> Optional[float]:
    """Mean DSC of ``labels == k`` vs ``gts == k`` over the ids k in 1..n_labels present in ``gts``
    (box i segments ground-truth label i+1, as in the challenge files); None when there is none."""
    present = [k for k in range(1, n_labels + 1) if (gts == k).any()]
    if not present:
        return None
    return float(np.mean([dice(labels == k, gts == k) for k in present]))


def agreement_row(labels: np.ndarray, reference: Optional[np.ndarray], gts: Optional[np.ndarray],
                  n_labels: int) -> Dict[str, Optional[float]]:
    """``pixel_agreement`` and ``label_dsc_vs_reference`` with ``reference`` (None without one) and ``gt_dsc``
    (:func:`gt_dsc`; None without ground truth)."""
    out: Dict[str, Optional[float]] = {"pixel_agreement": None, "label_dsc_vs_reference": None, "gt_dsc": None}
    if reference is not None:
        agree = label_agreement(labels, reference, n_labels)
        out["pixel_agreement"], out["label_dsc_vs_reference"] = agree["pixel_agreement"], agree["label_dsc"]
    if gts is not None:
        out["gt_dsc"] = gt_dsc(labels, gts, n_labels)
    return out
