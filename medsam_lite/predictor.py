"""Box-prompted prediction: encode once, decode many boxes (2D) and slice-by-slice propagation (3D).

Frames: boxes given to this module are in *original pixels*: (N, 4) ``[x_min, y_min, x_max, y_max]``
for 2D, (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` for volumes shaped (D, H, W) with
z = slice index. Pixel coordinates are indices; both ends of a range are inclusive.
"""
from __future__ import annotations

import os

from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import load_model
from .errors import InputError
from .model import MedSAMLite
from .transforms import (box_from_mask, get_preprocess_shape, mask_to_model_frame, postprocess_logits, preprocess_image,
                         scale_boxes)
from .validation import check_boxes_2d, check_boxes_3d, check_image, check_volume

Embedding = torch.Tensor
EncodeFn = Callable[[torch.Tensor], torch.Tensor]
DecodeFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Predictor:
    """Segment-anything style predictor for MedSAM-Lite models.

    ``set_image`` computes and caches one embedding; ``predict`` only runs the decoder.
    ``predict_volume`` encodes every slice at most once, whatever the number of boxes.

    Args:
        model: a MedSAMLite module, a pretrained name, a checkpoint path, or None (default model).
        decode_batch: boxes decoded together in one decoder call. Default 1: on 2 CPU cores batching
            was never faster per box (4 per call ~10-20 % slower, 8 or more ~40 % slower; see benchmarks/).
        backend: a registry name (``torch``, ``onnxruntime``, ``openvino``, ``auto``; see
            :mod:`medsam_lite.backends`) built from ``model``, or a ready :class:`~medsam_lite.backends.Backend`
            object (then ``model`` is ignored).
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8`` (non-torch backends).
        embedding_cache: folder of the persistent slice-embedding cache (None: in-memory only).
    """

    def __init__(
        self,
        model: Union[MedSAMLite, str, None] = None,
        decode_batch: int = 1,
        backend: Union[str, object] = "torch",
        precision: str = "auto",
        embedding_cache: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> None:
        if isinstance(backend, str):
            from .backends import make_backend

            module = model if isinstance(model, MedSAMLite) else load_model(model)
            backend = make_backend(module, backend, precision)
        self.backend = backend
        self.embedding_cache = embedding_cache
        self.decode_batch = decode_batch
        self.encoder_calls = 0
        self._embedding: Optional[Embedding] = None
        self._resized_hw: Tuple[int, int] = (0, 0)
        self._original_hw: Tuple[int, int] = (0, 0)

    # ----------------------------------------------------------------- 2D
    def _encode(self, image: np.ndarray) -> Tuple[Embedding, Tuple[int, int]]:
        tensor, resized_hw = preprocess_image(image)
        self.encoder_calls += 1
        return self.backend.encode(tensor), resized_hw

    def set_image(self, image: np.ndarray) -> None:
        """Encode and cache an (H, W) or (H, W, 3) image (any real dtype; uint8 as in the challenge)."""
        image = check_image(image)
        self._embedding, self._resized_hw = self._encode(image)
        self._original_hw = (image.shape[0], image.shape[1])

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def embedding(self) -> Optional[Embedding]:
        """The cached (1, 256, 64, 64) embedding of the image given to ``set_image`` (None before)."""
        return self._embedding

    def set_embedding(self, embedding: Embedding, original_hw: Tuple[int, int]) -> None:
        """Use a precomputed (1, 256, 64, 64) embedding of an image of ``original_hw`` (H, W) pixels
        instead of ``set_image`` (e.g. one from another encoder); ``predict`` then decodes from it."""
        if tuple(embedding.shape) != (1, 256, 64, 64):
            raise ValueError(f"embedding must be (1, 256, 64, 64), got {tuple(embedding.shape)}")
        self._embedding = embedding
        self._original_hw = (int(original_hw[0]), int(original_hw[1]))
        self._resized_hw = get_preprocess_shape(*self._original_hw)

    def _decode_masks(self, embedding: Embedding, boxes_256: np.ndarray, resized_hw: Tuple[int, int],
                      original_hw: Tuple[int, int]) -> torch.Tensor:
        """(N, 4) model-frame boxes -> (N, H, W) bool masks, decoding ``decode_batch`` boxes at a time."""
        masks: List[torch.Tensor] = []
        for start in range(0, len(boxes_256), self.decode_batch):
            chunk = torch.as_tensor(boxes_256[start : start + self.decode_batch], dtype=torch.float32)
            logits = self.backend.decode(embedding, chunk)
            masks.append(postprocess_logits(logits, resized_hw, original_hw))
        return torch.cat(masks) if masks else torch.zeros((0, *original_hw), dtype=torch.bool)

    def predict(self, boxes: np.ndarray, label_map: bool = True) -> np.ndarray:
        """Masks for (N, 4) XYXY boxes in original pixels on the image given to ``set_image``.

        Returns:
            label_map=True: (H, W) uint8, value i+1 where box i's mask is (later boxes win), 0 elsewhere.
            label_map=False: (N, H, W) bool masks.
        """
        if self._embedding is None:
            raise RuntimeError("call set_image() before predict()")
        boxes = check_boxes_2d(boxes, self._original_hw)
        if label_map:
            _check_label_count(len(boxes))
        masks = self._decode_masks(self._embedding, scale_boxes(boxes, self._original_hw), self._resized_hw,
                                   self._original_hw).numpy()
        return masks_to_label_map(masks) if label_map else masks

    # ----------------------------------------------------------------- 3D
    def predict_volume(self, volume: np.ndarray, boxes: np.ndarray, progress: bool = True,
                       on_progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """Segment a (D, H, W) volume from (N, 6) boxes by the baseline's slice-by-slice propagation.

        For each box: start at ``z_mid = int((z_max - z_min) / 2 + z_min)`` with the given box, go up
        to z_max, then down to z_min (inclusive). Each next slice is prompted with the bounding box
        of the previous slice's mask in the 256 frame, widened by 3 px; when that mask is empty the
        given box is used. Slice embeddings are cached, so each slice is encoded at most once for
        all boxes.

        ``progress`` shows a tqdm bar; ``on_progress(done, total)`` is called after each decoded slice
        (total = decoded slices of all boxes).

        Returns: (D, H, W) uint8 label map, value i+1 for box i, later boxes win.
        """
        volume = check_volume(volume)
        boxes = check_boxes_3d(boxes, volume.shape)
        _check_label_count(len(boxes))
        cache: Dict[int, Tuple[Embedding, Tuple[int, int]]] = {}
        hw = (volume.shape[1], volume.shape[2])
        segs = np.zeros(volume.shape, dtype=np.uint8)
        total = int(sum(b[5] - b[2] + 1 for b in boxes.astype(np.int64)))
        bar = tqdm(total=total, desc="slices", unit="slice", disable=not progress, leave=False)

        def embed(z: int) -> Tuple[Embedding, Tuple[int, int]]:
            if z not in cache:
                cache[z] = self._encode(volume[z])
            return cache[z]

        done = [0]

        def tick() -> None:
            bar.update(1)
            done[0] += 1
            if on_progress is not None:
                on_progress(done[0], total)

        for idx, box in enumerate(boxes.astype(np.int64), start=1):
            box_mask = self._propagate(embed, box, idx, volume.shape[0], hw, tick)
            segs[box_mask] = idx
        bar.close()
        return segs

    def _propagate(self, embed: Callable[[int], Tuple[Embedding, Tuple[int, int]]], box: np.ndarray, idx: int,
                   depth: int, hw: Tuple[int, int], tick: Callable[[], None]) -> np.ndarray:
        """Propagate one (6,) box through the volume; returns a (D, H, W) bool mask of this box."""
        x0, y0, z0, x1, y1, z1 = (int(v) for v in box)
        given_256 = scale_boxes(np.array([[x0, y0, x1, y1]]), hw)[0]
        z_mid = int((z1 - z0) / 2 + z0)
        out = np.zeros((depth, *hw), dtype=bool)
        upward = list(range(z_mid, min(z1 + 1, depth)))
        downward = list(range(z_mid - 1, max(-1, z0 - 1), -1))
        for order, step in ((upward, -1), (downward, 1)):
            for z in order:
                if z == z_mid:
                    box_256 = given_256
                else:
                    prev = mask_to_model_frame(out[z + step].astype(np.uint8) * np.uint8(idx))
                    box_256 = box_from_mask(prev) if prev.max() > 0 else given_256
                embedding, resized_hw = embed(z)
                out[z] = self._decode_masks(embedding, box_256[None], resized_hw, hw)[0].numpy()
                tick()
        return out


def _check_label_count(n: int) -> None:
    if n > 255:
        raise InputError(f"{n} boxes do not fit a uint8 label map (at most 255)")


def masks_to_label_map(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (H, W) uint8 with value i+1 where mask i is set; later masks win."""
    _check_label_count(len(masks))
    out = np.zeros(masks.shape[1:], dtype=np.uint8)
    for i, mask in enumerate(masks, start=1):
        out[mask] = i
    return out
