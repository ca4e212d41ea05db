"""The numpy / OpenCV twin of :class:`medsam_lite.propagation.Propagator`: the same 2D box decoding and 3D box
propagation, without torch (the Predictor on OpenVINO / ONNX Runtime runs it).

The torch :class:`~medsam_lite.propagation.Propagator` stays the reference and the TorchScript source; this
twin runs the same steps in the same order on the numpy twins of :mod:`medsam_lite.transforms`
(:func:`~medsam_lite.transforms.preprocess_array`, :func:`~medsam_lite.transforms.scale_boxes`,
:func:`~medsam_lite.transforms.mask_to_model_frame`, :func:`~medsam_lite.transforms.box_from_mask`,
:func:`~medsam_lite.transforms.logits_to_mask`), each equal to its torch twin pixel for pixel, so the label maps
are equal, not merely close (tests/test_propagation_numpy.py, on the bundled cases and every backend).

Algorithm and frames (as :mod:`medsam_lite.propagation`): images (H, W), (H, W, 1) or (H, W, 3) uint8; volumes
(D, H, W) uint8, z = slice index; boxes (N, 4) ``[x_min, y_min, x_max, y_max]`` / (N, 6)
``[x_min, y_min, z_min, x_max, y_max, z_max]`` in original pixel / voxel indices, both ends inclusive. Label
maps are uint8, value i+1 where box i's mask is set, later boxes win; each mask is written straight into the
label map (memory O(H x W), 3D O(D x H x W) for the result only). 3D: for each box start at
``z_mid = int((z_max - z_min) / 2 + z_min)`` with the given box, go up to z_max, then down to z_min; each next
slice is prompted with the box of the previous slice's mask in the 256 frame (the mask resized with its label
value) widened by 3 px, or the given box when that mask is empty; a slice embedding is dropped once no later
box visits that slice.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .frames import BOX_SHIFT_3D
from .transforms import box_from_mask, logits_to_mask, mask_to_model_frame, preprocess_array, scale_boxes
from .validation import MAX_LABELS, check_boxes_2d, check_boxes_3d

Encoder = Callable[[np.ndarray], np.ndarray]
"""(1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64) float32."""
Decoder = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""((1, 256, 64, 64) embedding, (N, 4) float32 XYXY model-frame boxes) -> (N, 1, 256, 256) float32 logits."""


def _check_uint8(array: np.ndarray, what: str) -> None:
    """The twin of :func:`medsam_lite.validation_torch.check_pixels_torch`: uint8, not empty, not constant."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 numpy array, got {getattr(array, 'dtype', type(array).__name__)}")
    if array.size == 0:
        raise ValueError(f"{what} is empty (shape {list(array.shape)})")
    if array.min() == array.max():
        raise ValueError(f"{what} is constant (every value = {int(array.flat[0])}), nothing to segment")


class NumpyPropagator:
    """Box-prompted segmentation of 2D images and 3D volumes in numpy (see the module docstring).

    Args:
        encoder: callable mapping (1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64) (e.g. a backend's
            ``encode`` or a :class:`~medsam_lite.embedding_cache.CachedEncoder`).
        decoder: callable mapping (embedding (1, 256, 64, 64), boxes (N, 4) float32 XYXY in the model frame)
            -> logits (N, 1, 256, 256).
        cache: keep each slice's embedding for all boxes of a volume (True), or re-encode every slice for every
            box as the LiteMedSAM baseline does (False).
        decode_batch: boxes per decoder call.

    ``encoder_calls`` / ``decoder_calls`` count the network calls made so far; ``callback(done, total)``, when
    set, is called after each decoded slice of :meth:`segment_3d`.
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, cache: bool = True, decode_batch: int = 1) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.cache = cache
        self.decode_batch = int(decode_batch)
        self.encoder_calls = 0
        self.decoder_calls = 0
        self.callback: Optional[Callable[[int, int], None]] = None

    # ------------------------------------------------------------------ building blocks
    def encode_image(self, image: np.ndarray) -> Tuple[np.ndarray, int, int]:
        """(H, W[, 1 | 3]) uint8 -> ((1, 256, 64, 64) embedding, resized h, resized w)."""
        array, (new_h, new_w) = preprocess_array(image)
        self.encoder_calls += 1
        return self.encoder(array), new_h, new_w

    def decode_into(self, out: np.ndarray, embedding: np.ndarray, boxes_256: np.ndarray, first_label: int,
                    new_h: int, new_w: int) -> np.ndarray:
        """Decode (N, 4) model-frame boxes and write box k's mask into the (H, W) uint8 ``out`` as
        ``first_label + k`` (later boxes win). Returns the last box's (H, W) bool mask."""
        height, width = out.shape[0], out.shape[1]
        boxes_256 = np.asarray(boxes_256, dtype=np.float32).reshape(-1, 4)
        last = np.zeros((height, width), dtype=bool)
        for start in range(0, len(boxes_256), self.decode_batch):
            logits = np.asarray(self.decoder(embedding, boxes_256[start:start + self.decode_batch]))
            self.decoder_calls += 1
            for k in range(logits.shape[0]):
                last = logits_to_mask(logits[k, 0], new_h, new_w, height, width)
                np.putmask(out, last, first_label + start + k)
        return last

    def decode_masks(self, embedding: np.ndarray, boxes_256: np.ndarray, new_h: int, new_w: int, height: int,
                     width: int) -> np.ndarray:
        """(N, 4) model-frame boxes -> (N, H, W) bool masks (for callers that want every mask)."""
        boxes_256 = np.asarray(boxes_256, dtype=np.float32).reshape(-1, 4)
        masks: List[np.ndarray] = []
        for start in range(0, len(boxes_256), self.decode_batch):
            logits = np.asarray(self.decoder(embedding, boxes_256[start:start + self.decode_batch]))
            self.decoder_calls += 1
            masks.extend(logits_to_mask(logits[k, 0], new_h, new_w, height, width) for k in range(logits.shape[0]))
        return np.stack(masks)

    def on_slice(self, done: int, total: int) -> None:
        """Called after each decoded slice of :meth:`segment_3d` (``total`` = slices of all boxes)."""
        if self.callback is not None:
            self.callback(done, total)

    # ------------------------------------------------------------------ 2D
    def segment_2d(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(H, W[, 1 | 3]) uint8 image, (N, 4) boxes in original pixels -> (H, W) uint8 label map."""
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {list(image.shape)}")
        _check_uint8(image, "image")
        height, width = image.shape[0], image.shape[1]
        boxes = check_boxes_2d(boxes, (height, width))
        if len(boxes) > MAX_LABELS:
            raise ValueError(f"{len(boxes)} boxes do not fit a uint8 label map (at most {MAX_LABELS})")
        embedding, new_h, new_w = self.encode_image(image)
        out = np.zeros((height, width), dtype=np.uint8)
        self.decode_into(out, embedding, scale_boxes(boxes, (height, width)), 1, new_h, new_w)
        return out

    # ------------------------------------------------------------------ 3D
    def segment_3d(self, volume: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(D, H, W) uint8 volume, (N, 6) boxes in voxel indices -> (D, H, W) uint8 label map.

        With the slice cache on, the boxes run in lock-step (:meth:`_lockstep`): one sweep up the volume
        decodes every box whose upward run visits the slice, one sweep down every box whose downward run does;
        each box still sees exactly the prompts of its own run (its previous mask) and one decoder call of its
        own, and a voxel keeps the highest label whose mask is set there, so the label map equals the box by
        box order's; the decoder's box-independent image part then runs once per slice and sweep, not once
        per box and slice. ``cache=False`` (the baseline's cost model) runs box by box.
        """
        if volume.ndim != 3:
            raise ValueError(f"volume must be (D, H, W), got shape {list(volume.shape)}")
        _check_uint8(volume, "volume")
        boxes = check_boxes_3d(boxes, volume.shape).astype(np.int64)
        if len(boxes) > MAX_LABELS:
            raise ValueError(f"{len(boxes)} boxes do not fit a uint8 label map (at most {MAX_LABELS})")
        segs = np.zeros(volume.shape, dtype=np.uint8)
        progress = [0, int((boxes[:, 5] - boxes[:, 2] + 1).sum())]  # done, total
        if self.cache:
            self._lockstep(volume, segs, boxes, progress)
            return segs
        for b, box in enumerate(boxes):
            progress[0] = self.propagate_box(volume, segs, box, b + 1, {}, progress[0], progress[1])
        return segs

    def _next_prompt(self, mask: np.ndarray, label: int, given: np.ndarray) -> np.ndarray:
        """The prompt after a slice whose mask is ``mask``: the widened 256-frame box of the mask resized with
        its label value, or the given box when that is empty."""
        small = mask_to_model_frame(mask.astype(np.uint8) * np.uint8(label))
        return box_from_mask(small > 0, BOX_SHIFT_3D) if small.any() else given

    def _lockstep(self, volume: np.ndarray, segs: np.ndarray, boxes: np.ndarray, progress: List[int]) -> None:
        """Both sweeps of :meth:`segment_3d` (cache on); slice embeddings are kept only for the down sweep."""
        height, width = volume.shape[1], volume.shape[2]
        given = scale_boxes(boxes[:, [0, 1, 3, 4]].astype(np.float64), (height, width))
        z_mid = [int((int(b[5]) - int(b[2])) / 2 + int(b[2])) for b in boxes]
        depth = volume.shape[0]
        up = [[b for b in range(len(boxes)) if z_mid[b] <= z <= boxes[b, 5]] for z in range(depth)]  # boxes a slice
        down = [[b for b in range(len(boxes)) if boxes[b, 2] <= z < z_mid[b]] for z in range(depth)]  # visits
        prompt = {b: given[b] for b in range(len(boxes))}  # next prompt of each box's current run
        start_down = dict(prompt)  # the prompt after each box's z_mid mask
        cache: Dict[int, Tuple[np.ndarray, int, int]] = {}
        for sweep, order in ((up, range(depth)), (down, range(depth - 1, -1, -1))):
            if sweep is down:
                prompt = start_down
            for z in order:
                if not sweep[z]:
                    continue
                embedding, new_h, new_w = cache.pop(z) if z in cache else self.encode_image(volume[z])
                if sweep is up and down[z]:
                    cache[z] = (embedding, new_h, new_w)
                for b in sweep[z]:  # ascending box order; the highest label wins where masks overlap
                    logits = np.asarray(self.decoder(embedding, prompt[b][None].astype(np.float32)))
                    self.decoder_calls += 1
                    mask = logits_to_mask(logits[0, 0], new_h, new_w, height, width)
                    np.maximum(segs[z], np.uint8(b + 1), out=segs[z], where=mask)
                    prompt[b] = self._next_prompt(mask, b + 1, given[b])
                    if z == z_mid[b]:
                        start_down[b] = prompt[b]
                    progress[0] += 1
                    self.on_slice(progress[0], progress[1])

    def propagate_box(self, volume: np.ndarray, segs: np.ndarray, box: np.ndarray, label: int,
                      cache: Dict[int, Tuple[np.ndarray, int, int]], done: int, total: int) -> int:
        """The baseline's propagation of one (6,) voxel box into the (D, H, W) uint8 ``segs`` as ``label`` (the torch
        twin's :meth:`~medsam_lite.propagation.Propagator.propagate_box`): the given box on ``z_mid``, up to z_max,
        then from ``z_mid``'s mask down to z_min (:meth:`propagate_run`). Returns ``done`` plus the slices decoded."""
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        height, width = volume.shape[1], volume.shape[2]
        given = scale_boxes(np.array([[x0, y0, x1, y1]], dtype=np.float64), (height, width))[0]
        z_mid = int((z1 - z0) / 2 + z0)
        empty = np.zeros((height, width), dtype=bool)
        mid, done = self.propagate_run(volume, segs, label, given, range(z_mid, z1 + 1), empty, cache, done, total)
        _, done = self.propagate_run(volume, segs, label, given, range(z_mid - 1, z0 - 1, -1), mid, cache, done,
                                     total)
        return done

    def propagate_run(self, volume: np.ndarray, segs: np.ndarray, label: int, given: np.ndarray,
                      order: Sequence[int], prev: np.ndarray, cache: Dict[int, Tuple[np.ndarray, int, int]],
                      done: int, total: int) -> Tuple[np.ndarray, int]:
        """Decode the slices ``order`` of the (D, H, W) uint8 ``volume`` one after the other, writing ``label``
        into ``segs[z]`` (the torch twin's :meth:`~medsam_lite.propagation.Propagator.propagate_run`): each slice
        is prompted with the box of the previous slice's (H, W) bool mask (``prev`` for the first) in the 256
        frame (resized with its label value) widened by 3 px, or with ``given`` ((4,) model-frame XYXY) when that
        mask is empty; ``cache`` maps slice -> embedding (kept when ``self.cache``). Returns (the first slice's
        (H, W) bool mask (``prev`` when ``order`` is empty), ``done`` plus the slices decoded)."""
        first = prev
        for i, z in enumerate(order):
            prompt = self._next_prompt(prev, label, given)
            if self.cache and z in cache:
                embedding, new_h, new_w = cache[z]
            else:
                embedding, new_h, new_w = self.encode_image(volume[z])
                if self.cache:
                    cache[z] = (embedding, new_h, new_w)
            prev = self.decode_into(segs[z], embedding, prompt[None], label, new_h, new_w)
            if i == 0:
                first = prev
            done += 1
            self.on_slice(done, total)
        return first, done
