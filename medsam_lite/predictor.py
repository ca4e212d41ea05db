"""Box-prompted prediction: encode once, decode many boxes (2D) and slice-by-slice propagation (3D).

The algorithm is :class:`medsam_lite.propagation.Propagator` (the same code the baseline and the
TorchScript artifact run) on the torch reference backend, and its numpy / OpenCV twin
:class:`medsam_lite.propagation_numpy.NumpyPropagator` (equal label maps, tested) on every other backend
(OpenVINO, ONNX Runtime), so that path never imports torch; this module adds the user-facing checks (one-line
:class:`InputError`), numpy in / out, backend selection, progress and the embedding caches. Importing it
imports no torch.

Frames: boxes given to this module are in *original pixels*: (N, 4) ``[x_min, y_min, x_max, y_max]``
for 2D, (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` for volumes shaped (D, H, W) with
z = slice index. Pixel coordinates are indices; both ends of a range are inclusive.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple, Union

import numpy as np

from .arrays import is_tensor, to_numpy
from .embedding_cache import CachedEncoder, EmbeddingStore, open_store
from .errors import InputError
from .normalize import Window, model_input_uint8, modality_rule, parse_window
from .propagation_numpy import NumpyPropagator
from .transforms import get_preprocess_shape, scale_boxes
from .validation import MAX_LABELS, as_uint8, check_boxes_2d, check_boxes_3d, check_image, check_volume

if TYPE_CHECKING:  # building a torch model imports segment-anything / timm; a cached OpenVINO model needs neither
    import torch

    from .model import MedSAMLite
    from .session import Session

Embedding = Any
"""A (1, 256, 64, 64) float32 embedding: a torch tensor on the reference backend, a numpy array otherwise."""


class BackendDecoder:
    """A backend's ``decode`` as the decoder callable of a propagator (numpy in / out, or torch in / out)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def __call__(self, embedding: Any, boxes: Any) -> Any:
        return self.backend.decode(embedding, boxes)


def _speaks_torch(backend: Any) -> bool:
    """Whether ``backend`` (or the backend a wrapper such as the server's caching one stands for, by its ``name``
    / ``precision``) is the torch reference, whose ``encode`` / ``decode`` take tensors only."""
    from .backends import backend_names, is_reference

    name = str(getattr(backend, "name", ""))
    return name in backend_names() and is_reference(name, str(getattr(backend, "precision", "")) or "auto")


def _reference_propagator(backend: Any, store: Optional[EmbeddingStore], decode_batch: int) -> Any:
    """The torch :class:`~medsam_lite.propagation.ProgressPropagator` of the reference backend (imports torch):
    its own modules, or (with a store, or a wrapper of it) the backend behind a :class:`CachedEncoder`."""
    from .propagation import ProgressPropagator

    if store is None and hasattr(backend, "reference_modules"):
        encoder, decoder = backend.reference_modules()  # the eager reference path: no wrapper
    else:
        encoder, decoder = CachedEncoder(backend, store), BackendDecoder(backend)
    return ProgressPropagator(encoder, decoder, cache=True, decode_batch=decode_batch)


class Predictor:
    """Segment-anything style predictor for MedSAM-Lite models.

    ``set_image`` computes and caches one embedding; ``predict`` only runs the decoder.
    ``predict_volume`` encodes every slice at most once, whatever the number of boxes.

    Args:
        model: a MedSAMLite module, a pretrained name, a checkpoint path, or None (default model).
        decode_batch: boxes of one image decoded together in one decoder call (2D; 3D propagation decodes
            one box per call). None (default): the backend's ``decode_batch`` attribute, else 1 (eager torch:
            batching is no faster per box on 2 CPU cores; OpenVINO's token-major decoder: 4, 0-15 % less
            time a box than one per call, docs/benchmark_inference).
        backend: a registry spec ``BACKEND[:PRECISION]`` (:func:`medsam_lite.backends.parse_choice`: ``auto``
            (default: the preferred installed backend, OpenVINO fp32 unless the gate allows a reduced precision),
            ``torch`` (the exact eager fp32 reference), ``onnxruntime``, ``openvino``, or e.g. ``openvino:bf16``)
            built from ``model`` by :func:`medsam_lite.backends.create_backend`, or a ready
            :class:`~medsam_lite.backends.Backend` object (then ``model`` is ignored).
        precision: ``auto`` or one of the backend's registered precisions (``fp32``, ``bf16``, ``int8``, ...).
        embedding_cache: folder of the persistent slice-embedding store, or any
            :class:`~medsam_lite.embedding_cache.EmbeddingStore` (e.g. a bounded
            :class:`~medsam_lite.embedding_cache.MemoryEmbeddingStore`); None: no reuse across calls (a volume's
            slices are still encoded once per ``predict_volume`` call).
        threads: intra-op threads of a non-torch runtime (None: its default; torch's own pool is the
            process's, set by the entry point).
        modality: intensity mapping of ``set_image`` / ``predict_volume`` inputs, as ``medsam-lite segment
            --modality`` (the same code: :func:`medsam_lite.normalize.model_input_uint8`): ``"CT"`` windows raw
            HU (L40/W400 or ``window``), ``"MR"`` / ``"US"`` / ... clip to the 0.5-99.5 percentiles of the
            non-zero voxels. None (default): uint8 input is used as is; other dtypes are min-max scaled to
            uint8, with a warning (raw CT then loses most of its contrast: give ``modality="CT"``).
        window: CT ``(level, width)`` or a preset name / ``"L,W"`` text (``"abdomen"``, ``"40,400"``); implies CT.
    """

    def __init__(
        self,
        model: Union[MedSAMLite, str, None] = None,
        decode_batch: Optional[int] = None,
        backend: Union[str, object] = "auto",
        precision: str = "auto",
        embedding_cache: Optional[Union[str, "os.PathLike[str]", EmbeddingStore]] = None,
        threads: Optional[int] = None,
        modality: Optional[str] = None,
        window: Union[None, str, Window] = None,
    ) -> None:
        self.window = parse_window(window)
        self.modality = modality
        if modality is not None and modality_rule(modality).grey != "window" and self.window is not None:
            raise InputError(f"window applies to CT only, not to modality {modality}")  # unknown names fail above
        if isinstance(backend, str):
            from .backends import create_backend

            backend = create_backend(model, backend, precision, threads=threads)
        self.backend = backend
        self.embedding_cache = open_store(embedding_cache)
        if self.embedding_cache is not None and not getattr(backend, "weights_sha256", None):
            raise InputError("embedding_cache needs a backend that states its weights_sha256 (every registry "
                             "backend does)")
        if decode_batch is None:
            decode_batch = int(getattr(backend, "decode_batch", 1))
        self.uses_torch = hasattr(backend, "reference_modules") or _speaks_torch(backend)
        """True on the torch reference backend (the torch Propagator); False: the numpy twin, no torch."""
        if self.uses_torch:
            self.propagator: Any = _reference_propagator(backend, self.embedding_cache, decode_batch)
        else:
            self.propagator = NumpyPropagator(CachedEncoder(backend, self.embedding_cache), BackendDecoder(backend),
                                              cache=True, decode_batch=decode_batch)
        self._embedding: Optional[Embedding] = None
        self._resized_hw: Tuple[int, int] = (0, 0)
        self._original_hw: Tuple[int, int] = (0, 0)

    @property
    def decode_batch(self) -> int:
        return self.propagator.decode_batch

    @property
    def encoder_calls(self) -> int:
        """Image-encoder runs so far (persistent-cache hits included, as they stand in for a run)."""
        return self.propagator.encoder_calls

    # ----------------------------------------------------------------- 2D
    def set_image(self, image: np.ndarray) -> None:
        """Encode and cache an (H, W) or (H, W, 3) image (uint8 as in the challenge; other real dtypes
        are min-max scaled to uint8 first, like a uint8 image after the baseline's min-max)."""
        image = check_image(image)
        image = self._to_uint8(image, is_rgb=image.ndim == 3 and image.shape[-1] == 3)
        with self._no_grad():
            self._embedding, new_h, new_w = self.propagator.encode_image(self._in(image))
        self._resized_hw = (new_h, new_w)
        self._original_hw = (image.shape[0], image.shape[1])

    def _to_uint8(self, array: np.ndarray, is_rgb: bool) -> np.ndarray:
        """The model's uint8 input: the ``modality`` / ``window`` mapping of ``segment``, or (neither given)
        uint8 as is and other dtypes min-max scaled, with a one-line warning."""
        if self.modality is None and self.window is None:
            if array.dtype != np.uint8:
                warnings.warn(f"{array.dtype} input min-max scaled to uint8: give Predictor(modality=...) (e.g. "
                              f"'CT' for Hounsfield units) for the intensity mapping of medsam-lite segment",
                              UserWarning, stacklevel=3)
            return as_uint8(array)
        return np.ascontiguousarray(model_input_uint8(array, self.modality, self.window, is_rgb=is_rgb)[0])

    def _in(self, array: np.ndarray) -> Any:
        """A numpy input as the propagator takes it (a tensor sharing its memory on the torch path)."""
        if not self.uses_torch:
            return array
        import torch

        return torch.from_numpy(array)

    def _no_grad(self) -> Any:
        """``torch.inference_mode()`` on the torch path, else a no-op context."""
        if not self.uses_torch:
            import contextlib

            return contextlib.nullcontext()
        import torch

        return torch.inference_mode()

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
        if self.uses_torch != is_tensor(embedding):
            embedding = self._in(to_numpy(embedding))
        self._embedding = embedding
        self._original_hw = (int(original_hw[0]), int(original_hw[1]))
        self._resized_hw = get_preprocess_shape(*self._original_hw)

    def predict(self, boxes: np.ndarray, label_map: bool = True) -> np.ndarray:
        """Masks for (N, 4) XYXY boxes in original pixels on the image given to ``set_image``.

        Returns:
            label_map=True: (H, W) uint8, value i+1 where box i's mask is (later boxes win), 0 elsewhere;
                each mask is written straight into it (memory O(H x W)).
            label_map=False: (N, H, W) bool masks.
        """
        if self._embedding is None:
            raise RuntimeError("call set_image() before predict()")
        boxes = check_boxes_2d(boxes, self._original_hw)
        boxes_256 = self._in(scale_boxes(boxes, self._original_hw))
        (new_h, new_w), (height, width) = self._resized_hw, self._original_hw
        with self._no_grad():
            if not label_map:
                masks = self.propagator.decode_masks(self._embedding, boxes_256, new_h, new_w, height, width)
                return to_numpy(masks, dtype=bool)
            _check_label_count(len(boxes))
            out = np.zeros((height, width), dtype=np.uint8)
            self.propagator.decode_into(self._in(out), self._embedding, boxes_256, 1, new_h, new_w)
        return out

    # ----------------------------------------------------------------- 3D
    def predict_volume(self, volume: np.ndarray, boxes: np.ndarray, progress: bool = True,
                       on_progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """Segment a (D, H, W) volume from (N, 6) boxes by the baseline's slice-by-slice propagation
        (:mod:`medsam_lite.propagation`); each slice is encoded at most once for all boxes.

        ``progress`` shows a tqdm bar; ``on_progress(done, total)`` is called after each decoded slice
        (total = decoded slices of all boxes).

        Returns: (D, H, W) uint8 label map, value i+1 for box i, later boxes win.
        """
        volume = self._to_uint8(check_volume(volume), is_rgb=False)
        boxes = check_boxes_3d(boxes, volume.shape)
        _check_label_count(len(boxes))
        total = int(sum(b[5] - b[2] + 1 for b in boxes.astype(np.int64)))
        from tqdm import tqdm  # here, not at import: ~50 ms of start-up a 2D run never uses

        bar = tqdm(total=total, desc="slices", unit="slice", disable=not progress, leave=False)

        def report(done: int, all_slices: int) -> None:
            bar.update(1)
            if on_progress is not None:
                on_progress(done, all_slices)

        self.propagator.callback = report
        try:
            with self._no_grad():
                segs = self.propagator.segment_3d(self._in(volume), self._in(boxes))
        finally:
            self.propagator.callback = None
            bar.close()
        return to_numpy(segs, dtype=np.uint8)

    # ----------------------------------------------------------------- interactive
    def session(self, volume_or_image: np.ndarray, **options: Any) -> "Session":
        """An interactive :class:`~medsam_lite.session.Session` on a (D, H, W) volume or an (H, W[, 3]) image (same
        intensity mapping as ``predict_volume`` / ``set_image``); its slices are embedded once each through this
        predictor's embedding store, or a bounded in-memory one. Its segmenter runs this predictor's propagator: the
        numpy twin (:class:`~medsam_lite.segmenter.NumpySegmenter`, no torch) unless :attr:`uses_torch` (the torch
        :class:`~medsam_lite.segmenter.PropagatorSegmenter`). ``options``: :class:`Session` keyword arguments."""
        from .embedding_cache import MemoryEmbeddingStore
        from .segmenter import NumpySegmenter, PropagatorSegmenter
        from .session import SESSION_STORE_BYTES, Session

        array = np.asarray(volume_or_image)
        is_2d = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3))  # (H, W, 1 | 3): an image
        if is_2d:
            image = check_image(array)
            image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
            volume = self._to_uint8(image, is_rgb=image.ndim == 3)[None]
        else:
            volume = self._to_uint8(check_volume(array), is_rgb=False)
        store = self.embedding_cache if self.embedding_cache is not None else MemoryEmbeddingStore(SESSION_STORE_BYTES)
        kind = PropagatorSegmenter if self.uses_torch else NumpySegmenter  # the propagator predict_volume runs
        return Session(kind(volume, self.backend, BackendDecoder(self.backend), store), is_2d=is_2d, **options)


def _check_label_count(n: int) -> None:
    if n > MAX_LABELS:
        raise InputError(f"{n} boxes do not fit a uint8 label map (at most {MAX_LABELS})")


def masks_to_label_map(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (H, W) uint8 with value i+1 where mask i is set; later masks win."""
    _check_label_count(len(masks))
    out = np.zeros(masks.shape[1:], dtype=np.uint8)
    for i, mask in enumerate(masks, start=1):
        out[mask] = i
    return out
