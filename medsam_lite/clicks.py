"""Click refinement (issue 30): a box, then clicks, decoded by a click-trained prompt path.

The image encoder is LiteMedSAM's, unchanged; only the prompt encoder + mask decoder
(:class:`~medsam_lite.model.PromptPath`) differ. **Box-only calls never reach the trained path**: a box without clicks is decoded by the released
decoder (:attr:`ClickModel.released`), so it gives LiteMedSAM's mask bit for bit; the trained path
(:attr:`ClickModel.trained`) runs only when at least one click is present.

One object on one slice is refined by :func:`replay`: the released decoder's box logits, then one trained
decode per click, each fed the box, every click so far and the previous decode's low-res logits as the dense
prompt (SAM's interactive loop; training does the same, :mod:`medsam_lite.distill.prompts`). Recomputing the
chain from the stored clicks keeps a session's state to the clicks themselves (undo restores them exactly).

The simulated user (:func:`next_click`, training and the held-out benchmark alike): a click at the
interior-most pixel (maximum of the distance transform, the image border counting as boundary) of the largest
connected error region; positive when that region is a miss, negative when it is a spill.

Frames: ``box`` (4,) XYXY and ``points`` (N, 2) XY pixel indices, in the 256 x 256 model frame for
:func:`refine`, in original pixels (both ends inclusive) for :func:`replay`; ``embedding`` (1, 256, 64, 64);
logits (256, 256) float32 in the model frame; masks (H, W) bool in the original frame. Numpy in, numpy out;
torch is imported only where the eager decoder runs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .errors import InputError
from .transforms import IMAGE_SIZE, get_preprocess_shape, logits_to_mask

if TYPE_CHECKING:
    from .model import PromptPath

CLICK_WEIGHTS = Path(__file__).parent / "weights" / "click_prompt_path.pth"
"""The shipped click-trained prompt path (present only when the held-out protocol passed: docs/clicks.md)."""
CLICK_WEIGHTS_SHA256 = ""
"""SHA-256 of :data:`CLICK_WEIGHTS` (empty: none shipped)."""
CLICK_CHECKPOINT_KIND = "click-prompt-path"
"""``kind`` field of a click checkpoint (``medsam-lite train-prompts`` writes it)."""


@dataclass(frozen=True)
class Click:
    """One click: (x, y) pixel indices (original frame in a session) and its sign."""

    x: float
    y: float
    positive: bool = True


def _largest_component(mask: np.ndarray) -> Tuple[int, np.ndarray]:
    """(pixel count, (H, W) bool) of the largest 8-connected component of ``mask`` ((0, empty) when none)."""
    if not mask.any():
        return 0, mask
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return int(stats[best, cv2.CC_STAT_AREA]), comp == best


def interior_point(region: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the pixel of a non-empty (H, W) bool ``region`` farthest from its boundary (L2 distance
    transform; pixels outside the image count as boundary; ties: the first in row-major order)."""
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def next_click(pred: np.ndarray, truth: np.ndarray) -> Optional[Click]:
    """The simulated user's click on (H, W) bool ``pred`` vs ``truth`` (module docstring); None when equal."""
    miss_n, miss = _largest_component(truth & ~pred)
    spill_n, spill = _largest_component(pred & ~truth)
    if miss_n == 0 and spill_n == 0:
        return None
    positive = miss_n >= spill_n
    x, y = interior_point(miss if positive else spill)
    return Click(float(x), float(y), positive)


def _torch() -> Any:
    import torch

    return torch


class ClickModel:
    """The released prompt path (box only) and a click-trained one (clicks), eager torch, fp32, eval mode.

    Args:
        trained: the click-trained :class:`~medsam_lite.model.PromptPath`.
        released: LiteMedSAM's own prompt encoder + decoder (None: loaded from the released weights).
        name: what the trained path is (a file, ``released``), for reports.
    """

    def __init__(self, trained: "PromptPath", released: Optional["PromptPath"] = None, name: str = "") -> None:
        if released is None:
            from .checkpoint import load_lite_medsam
            from .model import prompt_path_of

            released = prompt_path_of(load_lite_medsam())
        self.trained, self.released, self.name = trained.eval(), released.eval(), name

    @classmethod
    def released_only(cls) -> "ClickModel":
        """The released decoder for clicks too (the baseline the trained path is compared with)."""
        from .checkpoint import load_lite_medsam
        from .model import prompt_path_of

        released = prompt_path_of(load_lite_medsam())
        return cls(released, released, name="released")

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], sha256: Optional[str] = None) -> "ClickModel":
        """A click checkpoint of ``medsam-lite train-prompts`` (``last.pth`` / ``best.pth`` / the shipped file),
        read with ``torch.load(weights_only=True)``; ``sha256``: the file must have this digest."""
        torch = _torch()
        from .model import build_prompt_path

        path = Path(path)
        if not path.is_file():
            raise InputError("click weights not found", path)
        if sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise InputError("click weights do not match their recorded SHA-256", path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle / zip errors of a damaged or foreign file
            raise InputError(f"not a click checkpoint (weights-only load failed: {type(exc).__name__})", path) from None
        if not isinstance(payload, dict) or payload.get("config", {}).get("kind") != CLICK_CHECKPOINT_KIND:
            raise InputError(f"not a click checkpoint (no config kind {CLICK_CHECKPOINT_KIND!r})", path)
        model = build_prompt_path()
        model.load_state_dict(payload["state_dict"], strict=True)
        return cls(model.float(), name=str(path))

    def decode(self, embedding: Any, box: np.ndarray, points: np.ndarray, labels: np.ndarray,
               prev_logits: Optional[np.ndarray]) -> np.ndarray:
        """(256, 256) float32 logits (model frame) of one prompt set; released path when there is no click."""
        torch = _torch()
        path = self.trained if len(points) else self.released
        emb = embedding if isinstance(embedding, torch.Tensor) else torch.from_numpy(np.asarray(embedding))
        pts = torch.as_tensor(np.asarray(points, np.float32).reshape(1, -1, 2))
        lab = torch.as_tensor(np.asarray(labels, np.float32).reshape(1, -1))
        dense = None if prev_logits is None else torch.as_tensor(np.asarray(prev_logits, np.float32)[None, None])
        with torch.inference_mode():
            logits, _ = path(emb.float(), torch.as_tensor(np.asarray(box, np.float32).reshape(1, 4)), pts, lab, dense)
        return logits[0, 0].numpy().copy()


def refine(model: ClickModel, embedding: Any, box: Sequence[float], points: Sequence[Sequence[float]],
           point_labels: Sequence[int], prev_logits: Optional[np.ndarray]) -> np.ndarray:
    """One decode of box + clicks (+ the previous low-res logits as the dense prompt), model frame throughout
    (module docstring): (256, 256) float32 logits; the mask is ``logits > 0``. No click: the released decoder."""
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    labels = np.asarray(point_labels, np.float32).reshape(-1)
    if len(labels) != len(pts) or not np.isin(labels, (0, 1)).all():
        raise InputError("point_labels must be one 0 (negative) or 1 (positive) per point")
    if not (np.isfinite(pts).all() and ((pts >= 0) & (pts < IMAGE_SIZE)).all()):
        raise InputError(f"clicks must lie inside the {IMAGE_SIZE} x {IMAGE_SIZE} model frame")
    return model.decode(embedding, np.asarray(box, np.float32), pts, labels, prev_logits)


def to_model_frame(points: np.ndarray, original_hw: Tuple[int, int]) -> np.ndarray:
    """(N, 2) original-pixel XY -> model-frame XY (pixel centres scaled by ``256 / max(H, W)``)."""
    ratio = IMAGE_SIZE / max(original_hw)
    return ((np.asarray(points, np.float64) + 0.5) * ratio - 0.5).astype(np.float32)


def check_clicks(clicks: Sequence[Click], original_hw: Tuple[int, int]) -> None:
    """One-line :class:`InputError` for a click outside the (H, W) image."""
    height, width = original_hw
    for c in clicks:
        if not (np.isfinite(c.x) and np.isfinite(c.y) and 0 <= c.x < width and 0 <= c.y < height):
            raise InputError(f"click ({c.x:g}, {c.y:g}) is outside the image (x 0..{width - 1}, y 0..{height - 1})")


def replay(model: ClickModel, embedding: Any, box_256: Sequence[float], clicks: Sequence[Click],
           original_hw: Tuple[int, int]) -> np.ndarray:
    """The (H, W) bool mask of one object on one slice after ``clicks`` (original pixels; ``box_256``: its box
    in the model frame): released box logits, then one trained decode per click (module docstring)."""
    check_clicks(clicks, original_hw)
    logits = refine(model, embedding, box_256, np.zeros((0, 2)), [], None)
    points = to_model_frame(np.array([[c.x, c.y] for c in clicks]).reshape(-1, 2), original_hw)
    labels = [int(c.positive) for c in clicks]
    for i in range(1, len(clicks) + 1):
        logits = refine(model, embedding, box_256, points[:i], labels[:i], logits)
    new_h, new_w = get_preprocess_shape(*original_hw)
    return logits_to_mask(logits, new_h, new_w, int(original_hw[0]), int(original_hw[1]))


def shipped_click_model() -> Optional[ClickModel]:
    """The shipped click-trained model (SHA-256 checked), or None when none is shipped."""
    if not CLICK_WEIGHTS_SHA256 or not CLICK_WEIGHTS.is_file():
        return None
    return ClickModel.from_checkpoint(CLICK_WEIGHTS, CLICK_WEIGHTS_SHA256)
