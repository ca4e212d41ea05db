"""The one inference algorithm: 2D box decoding and the baseline's 3D box propagation, in TorchScript.

:class:`Propagator` is compiled by ``torch.jit.script`` for the exported artifact and runs eagerly
everywhere else: the :class:`~medsam_lite.predictor.Predictor` (slice cache on), the LiteMedSAM
baseline (:mod:`medsam_lite.baseline`: the same module with the slice cache off) and the TorchScript
file (:mod:`medsam_lite.export.torchscript`). Every path therefore runs the same code on the same
inputs, and their label maps are equal, not merely close.

Its numpy / OpenCV twin, :class:`medsam_lite.propagation_numpy.NumpyPropagator`, runs the same algorithm
without torch (the Predictor on OpenVINO / ONNX Runtime); this module stays the reference and the TorchScript
source, and tests prove the two give equal label maps on the bundled cases with every backend.

Pre/post-processing are the torch twins of :mod:`medsam_lite.transforms` (bit-exact with OpenCV):
resize the longest side to 256 (INTER_AREA), min-max to [0, 1], zero-pad bottom / right, grey -> 3
channels; boxes scaled by 256 / max(H, W) and truncated; logits cropped to the resized size,
upsampled bilinearly to (H, W), ``sigmoid > 0.5``.

3D propagation (LITEMEDSAM_FACTS): for each box start at ``z_mid = int((z_max - z_min) / 2 + z_min)``
with the given box, go up to z_max, then down to z_min (inclusive); each next slice is prompted with
the bounding box of the previous slice's mask in the 256 frame (the mask resized with its label
value, as the baseline did) widened by 3 px, or with the given box when that mask is empty.

Frames: images (H, W), (H, W, 1) or (H, W, 3) uint8; volumes (D, H, W) uint8, z = slice index; boxes
(N, 4) ``[x_min, y_min, x_max, y_max]`` / (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in
original pixel / voxel indices, both ends inclusive. Label maps are uint8, value i+1 where box i's mask
is set, later boxes win. Post-processing writes each box's mask straight into the label map, so
memory is O(H x W) (3D: O(D x H x W) for the result only), never O(N x H x W); a slice embedding is
dropped once no later box visits that slice.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .transforms_torch import (box_from_mask_torch, mask_to_model_frame_torch, preprocess_image_torch,
                               scale_boxes_torch)
from .validation_torch import check_boxes_torch, check_pixels_torch


def upsample_mask(logits: torch.Tensor, new_h: int, new_w: int, height: int, width: int) -> torch.Tensor:
    """(K, 1, 256, 256) logits -> (K, H, W) bool: crop to (new_h, new_w), bilinear to (H, W), sigmoid > 0.5."""
    cropped = logits[:, :, :new_h, :new_w]
    up = F.interpolate(cropped, size=[height, width], mode="bilinear", align_corners=False)
    return torch.sigmoid(up)[:, 0] > 0.5


class Propagator(nn.Module):
    """Box-prompted segmentation of 2D images and 3D volumes (see the module docstring).

    Args:
        encoder: module mapping (1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64).
        decoder: module mapping (embedding (1, 256, 64, 64), boxes (N, 4) float32 XYXY in the model
            frame) -> logits (N, 1, 256, 256).
        cache: keep each slice's embedding for all boxes of a volume (True), or re-encode every slice
            for every box as the LiteMedSAM baseline does (False).
        decode_batch: boxes per decoder call.

    ``encoder_calls`` / ``decoder_calls`` count the network calls made so far.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, cache: bool = True, decode_batch: int = 1) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.cache = cache
        self.decode_batch = int(decode_batch)
        self.encoder_calls = 0
        self.decoder_calls = 0

    # ------------------------------------------------------------------ networks (model frame)
    @torch.jit.export
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64): the raw image encoder."""
        return self.encoder(images)

    @torch.jit.export
    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        """(1, 256, 64, 64) embedding, (N, 4) float32 XYXY model-frame boxes -> (N, 1, 256, 256) logits."""
        return self.decoder(embedding, boxes_256)

    # ------------------------------------------------------------------ building blocks
    @torch.jit.export
    def encode_image(self, image: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """(H, W[, 1 | 3]) uint8 -> ((1, 256, 64, 64) embedding, resized h, resized w)."""
        tensor, new_h, new_w = preprocess_image_torch(image)
        self.encoder_calls += 1
        return self.encoder(tensor), new_h, new_w

    @torch.jit.export
    def decode_into(self, out: torch.Tensor, embedding: torch.Tensor, boxes_256: torch.Tensor, first_label: int,
                    new_h: int, new_w: int) -> torch.Tensor:
        """Decode (N, 4) model-frame boxes and write box k's mask into the (H, W) uint8 ``out`` as
        ``first_label + k`` (later boxes win). Returns the last box's (H, W) bool mask."""
        height, width = out.shape[0], out.shape[1]
        n = boxes_256.shape[0]
        last = torch.zeros([height, width], dtype=torch.bool)
        for start in range(0, n, self.decode_batch):
            chunk = boxes_256[start:min(start + self.decode_batch, n)].to(torch.float32)
            logits = self.decoder(embedding, chunk)
            self.decoder_calls += 1
            for k in range(chunk.shape[0]):
                last = upsample_mask(logits[k:k + 1], new_h, new_w, height, width)[0]
                out.masked_fill_(last, first_label + start + k)
        return last

    @torch.jit.export
    def decode_masks(self, embedding: torch.Tensor, boxes_256: torch.Tensor, new_h: int, new_w: int, height: int,
                     width: int) -> torch.Tensor:
        """(N, 4) model-frame boxes -> (N, H, W) bool masks (for callers that want every mask)."""
        masks: List[torch.Tensor] = []
        n = boxes_256.shape[0]
        for start in range(0, n, self.decode_batch):
            chunk = boxes_256[start:min(start + self.decode_batch, n)].to(torch.float32)
            logits = self.decoder(embedding, chunk)
            self.decoder_calls += 1
            masks.append(upsample_mask(logits, new_h, new_w, height, width))
        return torch.cat(masks)

    def on_slice(self, done: int, total: int) -> None:
        """Called after each decoded slice of :meth:`segment_3d` (``total`` = slices of all boxes)."""
        pass

    # ------------------------------------------------------------------ 2D
    @torch.jit.export
    def segment_2d(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(H, W[, 1 | 3]) uint8 image, (N, 4) boxes in original pixels -> (H, W) uint8 label map."""
        if image.dim() == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.dim() == 2 or (image.dim() == 3 and image.shape[2] == 3)):
            raise ValueError("image must be (H, W) or (H, W, 3), got shape " + str(list(image.shape)))
        check_pixels_torch(image, "image")
        height, width = image.shape[0], image.shape[1]
        boxes = check_boxes_torch(boxes, 4, [width, height])
        with torch.no_grad():
            embedding, new_h, new_w = self.encode_image(image)
            out = torch.zeros([height, width], dtype=torch.uint8)
            self.decode_into(out, embedding, scale_boxes_torch(boxes, height, width), 1, new_h, new_w)
        return out

    # ------------------------------------------------------------------ 3D
    @torch.jit.export
    def segment_3d(self, volume: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(D, H, W) uint8 volume, (N, 6) boxes in voxel indices -> (D, H, W) uint8 label map."""
        if volume.dim() != 3:
            raise ValueError("volume must be (D, H, W), got shape " + str(list(volume.shape)))
        check_pixels_torch(volume, "volume")
        depth, height, width = volume.shape[0], volume.shape[1], volume.shape[2]
        boxes = check_boxes_torch(boxes, 6, [width, height, depth]).to(torch.int64)
        segs = torch.zeros([depth, height, width], dtype=torch.uint8)
        cache: Dict[int, Tuple[torch.Tensor, int, int]] = {}
        last_use: Dict[int, int] = {}  # slice -> last box that visits it: its embedding is dropped after that box
        for b in range(boxes.shape[0]):
            for z in range(int(boxes[b, 2]), int(boxes[b, 5]) + 1):
                last_use[z] = b
        total = int((boxes[:, 5] - boxes[:, 2] + 1).sum())
        done = 0
        with torch.no_grad():
            for b in range(boxes.shape[0]):
                done = self.propagate_box(volume, segs, boxes[b], b + 1, cache, done, total)
                for z in list(cache.keys()):  # memory: keep only embeddings a later box will use again
                    if last_use[z] <= b:
                        cache.pop(z)
        return segs

    @torch.jit.export
    def propagate_box(self, volume: torch.Tensor, segs: torch.Tensor, box: torch.Tensor, label: int,
                      cache: Dict[int, Tuple[torch.Tensor, int, int]], done: int, total: int) -> int:
        """The baseline's propagation of one (6,) int64 voxel box into the (D, H, W) uint8 ``segs`` as ``label``:
        the given box on ``z_mid``, up to z_max, then from ``z_mid``'s mask down to z_min (:meth:`propagate_run`).
        Returns ``done`` plus the slices decoded."""
        x0, y0, z0 = int(box[0]), int(box[1]), int(box[2])
        x1, y1, z1 = int(box[3]), int(box[4]), int(box[5])
        height, width = volume.shape[1], volume.shape[2]
        given = scale_boxes_torch(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float64), height, width)[0]
        z_mid = int((z1 - z0) / 2 + z0)
        empty = torch.zeros([height, width], dtype=torch.bool)
        mid, done = self.propagate_run(volume, segs, label, given, list(range(z_mid, z1 + 1)), empty, cache, done,
                                       total)
        _, done = self.propagate_run(volume, segs, label, given, list(range(z_mid - 1, z0 - 1, -1)), mid, cache,
                                     done, total)
        return done

    @torch.jit.export
    def propagate_run(self, volume: torch.Tensor, segs: torch.Tensor, label: int, given: torch.Tensor,
                      order: List[int], prev: torch.Tensor, cache: Dict[int, Tuple[torch.Tensor, int, int]],
                      done: int, total: int) -> Tuple[torch.Tensor, int]:
        """Decode the slices ``order`` of the (D, H, W) uint8 ``volume`` one after the other, writing ``label``
        into ``segs[z]``: each slice is prompted with the box of the previous slice's (H, W) bool mask (``prev``
        for the first) in the 256 frame (resized with its label value, as the baseline did) widened by 3 px, or
        with ``given`` ((4,) float32 model-frame XYXY) when that mask is empty. Returns (the first slice's
        (H, W) bool mask (``prev`` when ``order`` is empty), ``done`` plus the slices decoded)."""
        first = prev
        for i, z in enumerate(order):
            box = given
            small = mask_to_model_frame_torch(prev.to(torch.uint8) * label)
            if bool(small.any()):
                box = box_from_mask_torch(small > 0, 3)  # BOX_SHIFT_3D
            if self.cache and z in cache:
                embedding, new_h, new_w = cache[z]
            else:
                embedding, new_h, new_w = self.encode_image(volume[z])
                if self.cache:
                    cache[z] = (embedding, new_h, new_w)
            prev = self.decode_into(segs[z], embedding, box.unsqueeze(0), label, new_h, new_w)
            if i == 0:
                first = prev
            done += 1
            self.on_slice(done, total)
        return first, done

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`segment_2d`."""
        return self.segment_2d(image, boxes)


class ProgressPropagator(Propagator):
    """A Propagator that reports each decoded slice to ``callback(done, total)`` (eager use only: the
    Predictor's reference path)."""

    callback: Optional[Callable[[int, int], None]] = None

    def on_slice(self, done: int, total: int) -> None:
        if self.callback is not None:
            self.callback(done, total)
