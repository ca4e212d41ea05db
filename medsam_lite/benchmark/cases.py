"""Cases timed by the benchmark: the bundled real examples (package data) and, in full mode, larger
cases generated from them for timing only.

Case dicts: ``name``, ``kind`` ('2d' / '3d'), ``image`` ((H, W, 3) uint8 image or (D, H, W) uint8
volume), ``boxes`` ((N, 4) XYXY or (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in original
pixels / voxels), ``note``, optional ``gts`` (label map, box i = label i+1) and ``generated``.
Model specs (:func:`resolve_model`): a pretrained name or checkpoint path, ``random:<encoder>`` (random
weights, seed 0: timing only), optional ``+fused`` suffix (RepViT fused for inference).
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from ..model import MedSAMLite, build_medsam
from ..resources import load_example


def resample_volume(volume: np.ndarray, boxes: np.ndarray, shape: Tuple[int, int, int]) -> Tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """Resample a (D, H, W) volume to ``shape`` (cv2 linear in-plane, nearest slice along z).

    Boxes (N, 6) are scaled to the new grid (floor, clipped). For timing only, not accuracy.
    """
    import cv2

    d, h, w = volume.shape
    nd, nh, nw = shape
    zs = np.clip(np.round((np.arange(nd) + 0.5) * d / nd - 0.5).astype(int), 0, d - 1)
    planes = [cv2.resize(volume[z], (nw, nh), interpolation=cv2.INTER_LINEAR) for z in range(d)]
    out = np.stack([planes[z] for z in zs])
    scale = np.array([nw / w, nh / h, nd / d, nw / w, nh / h, nd / d])
    new_boxes = np.floor(np.asarray(boxes, dtype=np.float64) * scale).astype(np.int64)
    hi = np.array([nw - 1, nh - 1, nd - 1] * 2)
    return out, np.clip(new_boxes, 0, hi)


def tile_image(image: np.ndarray, boxes: np.ndarray, n_boxes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Tile an (H, W[, C]) image 2 x 2 and return it with the first ``n_boxes`` of the tiled (4N, 4) boxes."""
    h, w = image.shape[:2]
    tiled = np.concatenate([np.concatenate([image, image], axis=1)] * 2, axis=0)
    all_boxes = np.concatenate([boxes + np.array([dx, dy, dx, dy]) for dy in (0, h) for dx in (0, w)])
    return tiled, all_boxes[:n_boxes]


def build_cases(quick: bool) -> List[Dict[str, Any]]:
    """Cases to time: dicts with name, kind ('2d' / '3d'), image (array), boxes, note; generated ones have
    ``generated=True`` (full mode only)."""
    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    mr = load_example("3DBox_MR_brain_tumour.npz")
    if quick:
        mr_boxes = mr["boxes"].copy()
        mr_boxes[:, [2, 5]] = [13, 14]
        return [
            {"name": "2d_nuclei_4boxes", "kind": "2d", "image": nuclei["imgs"], "boxes": nuclei["boxes"][:4],
             "note": "bundled nuclei 512x512, first 4 boxes (quick)"},
            {"name": "3d_mr_2slices", "kind": "3d", "image": mr["imgs"], "boxes": mr_boxes,
             "note": "bundled MR 25x256x256, box z-range cut to slices 13-14 (quick)"},
        ]
    ct = load_example("3DBox_CT_abdomen.npz")
    big_ct, big_boxes = resample_volume(ct["imgs"], ct["boxes"], (287, 512, 512))
    extra = big_boxes[3].copy()  # the CT example has 5 boxes; a 6th repeats box 4 to reach 6
    big_boxes = np.vstack([big_boxes, extra])
    big_2d, boxes_241 = tile_image(nuclei["imgs"], nuclei["boxes"], 241)
    return [
        {"name": "2d_nuclei_512_125boxes", "kind": "2d", "image": nuclei["imgs"], "boxes": nuclei["boxes"],
         "note": "bundled microscopy nuclei 512x512x3, 125 boxes"},
        {"name": "3d_ct_112x101x122_5boxes", "kind": "3d", "image": ct["imgs"], "boxes": ct["boxes"],
         "note": "bundled CT abdomen, 5 boxes"},
        {"name": "3d_mr_25x256x256_1box", "kind": "3d", "image": mr["imgs"], "boxes": mr["boxes"],
         "note": "bundled MR brain tumour, 1 box"},
        {"name": "3d_ct_287x512x512_6boxes", "kind": "3d", "image": big_ct, "boxes": big_boxes,
         "note": "CT example resampled to 287x512x512 (cv2 linear in-plane, nearest z); 5 scaled boxes + box 4 "
                 "repeated (timing only)", "generated": True},
        {"name": "2d_nuclei_1024_241boxes", "kind": "2d", "image": big_2d, "boxes": boxes_241,
         "note": "nuclei example tiled 2x2 to 1024x1024, first 241 tiled boxes (timing only)", "generated": True},
    ]


def slab_boxes(boxes: np.ndarray, slices: int) -> np.ndarray:
    """(N, 6) boxes restricted to one slab of ``slices`` consecutive slices (z = slab indices kept).

    The slab is centred on the median of the boxes' middle slices; boxes not meeting it are dropped,
    the others get their z-range intersected with it. Boxes that overlap in the full case overlap
    the same way inside the slab, so the cache's saving is kept, unlike cutting boxes separately.
    """
    b = np.asarray(boxes, dtype=np.int64).copy()
    mids = [int((x[5] - x[2]) / 2 + x[2]) for x in b]
    lo = max(0, int(np.median(mids)) - slices // 2)
    hi = lo + slices - 1
    keep = (b[:, 5] >= lo) & (b[:, 2] <= hi)
    b = b[keep]
    b[:, 2], b[:, 5] = np.maximum(b[:, 2], lo), np.minimum(b[:, 5], hi)
    return b


def backend_cases(quick: bool, all_cases: bool = False) -> List[Dict[str, Any]]:
    """Cases for the backend table: dicts with name, kind, image, boxes, gts (or None), note.

    Full mode: the three bundled examples, whole (all boxes, with ground truth); with ``all_cases``
    also the generated large cases of :func:`medsam_lite.benchmark.cases.build_cases` (no ground truth).
    Quick mode: nuclei with its first 4 boxes, and the MR case cropped to slices 13-14 (volume, box
    and ground truth cropped alike), so ground-truth DSC is still meaningful.
    """
    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    mr = load_example("3DBox_MR_brain_tumour.npz")
    if quick:
        mr_boxes = mr["boxes"].copy()
        mr_boxes[:, 2], mr_boxes[:, 5] = 0, 1
        return [
            {"name": "2d_nuclei_4boxes", "kind": "2d", "image": nuclei["imgs"], "boxes": nuclei["boxes"][:4],
             "gts": nuclei["gts"], "note": "bundled nuclei 512x512, first 4 boxes (quick)"},
            {"name": "3d_mr_2slices", "kind": "3d", "image": np.ascontiguousarray(mr["imgs"][13:15]),
             "boxes": mr_boxes, "gts": np.ascontiguousarray(mr["gts"][13:15]),
             "note": "bundled MR cropped to slices 13-14 (quick)"},
        ]
    ct = load_example("3DBox_CT_abdomen.npz")
    cases: List[Dict[str, Any]] = [
        {"name": "2d_nuclei_512_125boxes", "kind": "2d", "image": nuclei["imgs"], "boxes": nuclei["boxes"],
         "gts": nuclei["gts"], "note": "bundled microscopy nuclei 512x512x3, 125 boxes"},
        {"name": "3d_ct_112x101x122_5boxes", "kind": "3d", "image": ct["imgs"], "boxes": ct["boxes"],
         "gts": ct["gts"], "note": "bundled CT abdomen, 5 boxes"},
        {"name": "3d_mr_25x256x256_1box", "kind": "3d", "image": mr["imgs"], "boxes": mr["boxes"],
         "gts": mr["gts"], "note": "bundled MR brain tumour, 1 box"},
    ]
    if all_cases:
        cases += [{**c, "gts": None} for c in build_cases(False) if c.get("generated")]
    return cases


def resolve_model(spec: str) -> MedSAMLite:
    """Build a model from a spec (see module docstring); eval mode."""
    from ..checkpoint import load_model
    from ..encoders.repvit import fuse_for_inference

    base, fused = (spec[: -len("+fused")], True) if spec.endswith("+fused") else (spec, False)
    if base.startswith("random:"):
        with torch.random.fork_rng(devices=[]):  # seed 0 for the weights, the caller's RNG state untouched
            torch.manual_seed(0)
            model = build_medsam(base[len("random:"):]).eval()
    else:
        model = load_model(base).eval()
    if fused:
        model.image_encoder = fuse_for_inference(model.image_encoder)
    return model.eval()
