"""Cases the benchmarks time: the one :class:`Case` type, the bundled real examples (package data) and, in
full mode, larger cases generated from them for timing only.

Frames: a 2D case is an (H, W, 3) uint8 image with (N, 4) XYXY boxes in original pixels; a 3D case a
(D, H, W) uint8 volume (D = axial slices) with (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` boxes in
original voxels. Ground truth, where a case has it, is a label map of the image's (H, W) / (D, H, W) shape
in which box i segments label i+1 (as in the challenge files; other labels are ignored).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..resources import example_path, load_example


@dataclass
class Case:
    """One case (frames in the module docstring). ``note`` says what it is; ``path`` a challenge .npz holding
    it (for whole-process runs); ``generated``: made for timing only (no ground truth)."""

    name: str
    kind: str
    image: np.ndarray
    boxes: np.ndarray
    gts: Optional[np.ndarray] = None
    note: str = ""
    path: Optional[Path] = None
    generated: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    def object_masks(self) -> np.ndarray:
        """(N, H, W) / (N, D, H, W) bool: the ground-truth object of each box (``gts == i + 1``)."""
        if self.gts is None:
            raise ValueError(f"case {self.name} has no ground truth")
        return np.stack([self.gts == i for i in range(1, len(self.boxes) + 1)])

    def replace(self, **changes: Any) -> "Case":
        """A copy with ``changes`` (:func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)


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


def _quick_mr(mr: Dict[str, np.ndarray], first: int, last: int, crop: bool) -> Tuple[np.ndarray, np.ndarray,
                                                                                     Optional[np.ndarray]]:
    """The bundled MR case on slices first..last: the volume whole with the box z-range cut to them, or
    (``crop``) the volume, its ground truth and the box cut alike."""
    boxes = mr["boxes"].copy()
    if not crop:
        boxes[:, 2], boxes[:, 5] = first, last
        return mr["imgs"], boxes, None
    boxes[:, 2], boxes[:, 5] = 0, last - first
    return (np.ascontiguousarray(mr["imgs"][first : last + 1]), boxes,
            np.ascontiguousarray(mr["gts"][first : last + 1]))


def build_cases(quick: bool) -> List[Case]:
    """Cases of the speed benchmark (baseline vs ours); generated ones only in full mode."""
    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    mr = load_example("3DBox_MR_brain_tumour.npz")
    if quick:
        image, boxes, _ = _quick_mr(mr, 13, 14, crop=False)
        return [Case("2d_nuclei_4boxes", "2d", nuclei["imgs"], nuclei["boxes"][:4],
                     note="bundled nuclei 512x512, first 4 boxes (quick)"),
                Case("3d_mr_2slices", "3d", image, boxes,
                     note="bundled MR 25x256x256, box z-range cut to slices 13-14 (quick)")]
    ct = load_example("3DBox_CT_abdomen.npz")
    return [Case("2d_nuclei_512_125boxes", "2d", nuclei["imgs"], nuclei["boxes"],
                 note="bundled microscopy nuclei 512x512x3, 125 boxes"),
            Case("3d_ct_112x101x122_5boxes", "3d", ct["imgs"], ct["boxes"], note="bundled CT abdomen, 5 boxes"),
            Case("3d_mr_25x256x256_1box", "3d", mr["imgs"], mr["boxes"], note="bundled MR brain tumour, 1 box"),
            *generated_cases(ct, nuclei, 287, "timing only")]


def generated_cases(ct: Dict[str, np.ndarray], nuclei: Dict[str, np.ndarray], depth: int,
                    purpose: str) -> List[Case]:
    """The two large cases made from the bundled examples: the CT resampled to (depth, 512, 512) with its 5
    scaled boxes + box 4 again (6 boxes), and the nuclei image tiled 2 x 2 to 1024 x 1024 with 241 boxes."""
    big_ct, big_boxes = resample_volume(ct["imgs"], ct["boxes"], (depth, 512, 512))
    big_boxes = np.vstack([big_boxes, big_boxes[3:4]])  # the CT example has 5 boxes; a 6th repeats box 4
    big_2d, boxes_241 = tile_image(nuclei["imgs"], nuclei["boxes"], 241)
    return [Case(f"3d_ct_{depth}x512x512_6boxes", "3d", big_ct, big_boxes, generated=True,
                 note=f"CT example resampled to {depth}x512x512 (cv2 linear in-plane, nearest z); 5 scaled boxes + "
                      f"box 4 repeated ({purpose})"),
            Case("2d_nuclei_1024_241boxes", "2d", big_2d, boxes_241, generated=True,
                 note="nuclei example tiled 2x2 to 1024x1024, first 241 tiled boxes (timing only)")]


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


def backend_cases(quick: bool, all_cases: bool = False) -> List[Case]:
    """Cases of the backend comparison, with ground truth.

    Full mode: the three bundled examples, whole (all boxes); with ``all_cases`` also the generated large
    cases of :func:`build_cases` (no ground truth). Quick mode: nuclei with its first 4 boxes, and the MR case
    cropped to slices 13-14 (volume, box and ground truth cropped alike), so ground-truth DSC still means
    something.
    """
    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    mr = load_example("3DBox_MR_brain_tumour.npz")
    if quick:
        volume, boxes, gts = _quick_mr(mr, 13, 14, crop=True)
        return [Case("2d_nuclei_4boxes", "2d", nuclei["imgs"], nuclei["boxes"][:4], nuclei["gts"],
                     "bundled nuclei 512x512, first 4 boxes (quick)"),
                Case("3d_mr_2slices", "3d", volume, boxes, gts, "bundled MR cropped to slices 13-14 (quick)")]
    ct = load_example("3DBox_CT_abdomen.npz")
    cases = [Case("2d_nuclei_512_125boxes", "2d", nuclei["imgs"], nuclei["boxes"], nuclei["gts"],
                  "bundled microscopy nuclei 512x512x3, 125 boxes"),
             Case("3d_ct_112x101x122_5boxes", "3d", ct["imgs"], ct["boxes"], ct["gts"], "bundled CT abdomen, 5 boxes"),
             Case("3d_mr_25x256x256_1box", "3d", mr["imgs"], mr["boxes"], mr["gts"], "bundled MR brain tumour, 1 box")]
    if all_cases:
        cases += [c for c in build_cases(False) if c.generated]
    return cases


def inference_cases(quick: bool, work_dir: Path) -> List[Case]:
    """Cases of the inference benchmark: the bundled nuclei (125 boxes), CT abdomen (5 organs), MR tumour; in
    full mode also the CT resampled to 133 x 512 x 512 with 6 boxes (the memory check) and the nuclei image
    tiled to 1024 x 1024 with 241 boxes. Every case gets a ``path``: generated ones are written as challenge
    .npz into ``work_dir`` (for the whole-process runs)."""
    nuclei = load_example("2DBox_Microscopy_nuclei.npz")
    ct = load_example("3DBox_CT_abdomen.npz")
    mr = load_example("3DBox_MR_brain_tumour.npz")
    if quick:
        image, boxes, _ = _quick_mr(mr, 12, 14, crop=False)
        cases = [Case("2d_nuclei_8boxes", "2d", nuclei["imgs"], nuclei["boxes"][:8], nuclei["gts"],
                      "bundled nuclei 512x512, first 8 boxes (quick)"),
                 Case("3d_mr_3slices", "3d", image, boxes, None, "bundled MR, box cut to slices 12-14 (quick)")]
    else:
        cases = [Case("2d_nuclei_125boxes", "2d", nuclei["imgs"], nuclei["boxes"], nuclei["gts"],
                      "bundled microscopy nuclei 512x512, 125 boxes", example_path("2DBox_Microscopy_nuclei.npz")),
                 Case("3d_ct_5organs", "3d", ct["imgs"], ct["boxes"], ct["gts"],
                      f"bundled CT abdomen {'x'.join(map(str, ct['imgs'].shape))}, 5 organ boxes",
                      example_path("3DBox_CT_abdomen.npz")),
                 Case("3d_mr_1box", "3d", mr["imgs"], mr["boxes"], mr["gts"], "bundled MR brain tumour 25x256x256",
                      example_path("3DBox_MR_brain_tumour.npz")),
                 *generated_cases(ct, nuclei, 133, "timing and memory only")]
    for case in cases:
        if case.path is None:
            case.path = work_dir / f"{case.kind.upper()}Box_{case.name}.npz"
            np.savez_compressed(case.path, imgs=case.image, boxes=case.boxes)
    return cases
