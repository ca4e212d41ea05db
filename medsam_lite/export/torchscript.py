"""One self-contained TorchScript file: encoder + decoder + pre/post-processing + 3D propagation.

The artifact is ``torch.jit.script`` of :class:`medsam_lite.propagation.Propagator`, the one
inference algorithm the Predictor and the baseline also run, so its label maps equal the
Predictor's. It is loaded with ``torch.jit.load`` alone (no ``medsam_lite`` import) and exposes:

* ``segment_2d(image, boxes)``: image (H, W), (H, W, 1) or (H, W, 3) uint8; boxes (N, 4) XYXY in
  original pixels (any real dtype) -> (H, W) uint8 label map, value i+1 for box i, later boxes win.
* ``segment_3d(volume, boxes)``: volume (D, H, W) uint8; boxes (N, 6)
  ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in voxels -> (D, H, W) uint8 label map, the same
  slice-by-slice propagation (and per-slice embedding cache) as :meth:`Predictor.predict_volume`.
* ``encode(tensor)`` (1, 3, 256, 256) -> (1, 256, 64, 64) and ``decode(embedding, boxes_256)``
  -> (N, 1, 256, 256) logits, the raw model-frame network.

Pre-processing is :mod:`medsam_lite.transforms`' torch twins (OpenCV's INTER_AREA reproduced bit for
bit). Metadata JSON is stored in the file as the extra file ``metadata.json``: model, encoder,
versions, the input contract and the preprocessing (:data:`PREPROCESSING`, plus the training
normalisation recorded in the checkpoint when there is one).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from ..encoders import inference_encoder
from ..model import DecoderGraph
from ..propagation import Propagator

METADATA_NAME = "metadata.json"
"""Name of the ``_extra_files`` entry holding the metadata JSON."""

PREPROCESSING = {
    "input": "uint8 image / volume slices (map other intensities to uint8 first, e.g. medsam_lite.normalize)",
    "model_frame": "resize longest side to 256 (cv2.INTER_AREA, reproduced in torch), min-max to [0, 1], zero-pad "
                   "bottom/right to 256x256, grey replicated to 3 channels, no mean/std",
    "boxes": "scaled by 256 / max(H, W), truncated toward zero",
    "masks": "logits cropped to the resized size, bilinear to (H, W), sigmoid > 0.5",
}
"""How the artifact maps inputs to the model frame and back (recorded in its metadata)."""

INPUT_CONTRACT = {
    "segment_2d": {
        "image": "(H, W), (H, W, 1) or (H, W, 3) uint8, not constant",
        "boxes": "(N, 4) float XYXY [x_min, y_min, x_max, y_max] in original pixel indices, 1 <= N <= 255",
        "returns": "(H, W) uint8 label map: value i+1 where box i's mask is set, later boxes win",
    },
    "segment_3d": {
        "volume": "(D, H, W) uint8, not constant",
        "boxes": "(N, 6) float [x_min, y_min, z_min, x_max, y_max, z_max] in voxel indices, 1 <= N <= 255",
        "returns": "(D, H, W) uint8 label map: value i+1 for box i, later boxes win",
    },
    "encode": "(1, 3, 256, 256) float32 in [0, 1] -> (1, 256, 64, 64)",
    "decode": "embedding (1, 256, 64, 64), boxes (N, 4) float32 XYXY in the 256 frame -> logits (N, 1, 256, 256)",
    "errors": "bad inputs raise RuntimeError/ValueError with a one-line message from the artifact",
    "partial_boxes": "boxes extending past the image are clipped to it; boxes entirely outside are errors",
}


def _prepare_encoder(model: nn.Module) -> nn.Module:
    """The image encoder as inference runs it (:func:`medsam_lite.encoders.inference_encoder`), scripted."""
    encoder = inference_encoder(model.image_encoder)
    try:
        return torch.jit.script(encoder)
    except Exception:  # pragma: no cover - registry encoders script; keep a fixed-shape fallback
        return torch.jit.trace(encoder, torch.rand(1, 3, 256, 256))


def build_scripted_predictor(model: nn.Module, decode_batch: int = 1) -> torch.jit.ScriptModule:
    """Script :class:`Propagator` around the scripted encoder and the traced decoder (SAM's decoder is
    not scriptable; traced with N boxes dynamic)."""
    model = model.eval()
    embedding = torch.randn(1, 256, 64, 64)
    example_boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 40.0, 200.0, 250.0], [0.0, 0.0, 256.0, 256.0]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit deprecation notices and SAM's benign TracerWarning (constant head dim)
        encoder = _prepare_encoder(model)
        decoder = torch.jit.trace(DecoderGraph(model).eval(), (embedding, example_boxes), check_trace=False)
        return torch.jit.script(Propagator(encoder, decoder, cache=True, decode_batch=decode_batch))


def export_torchscript(model: nn.Module, path: Union[str, Path], model_name: str = "unknown",
                       decode_batch: int = 1, training_config: Optional[Dict[str, Any]] = None) -> Path:
    """Write the self-contained TorchScript predictor of ``model`` to ``path`` (with metadata JSON).

    Args:
        model: a ``MedSAMLite`` module (any registry encoder).
        path: output ``.pt`` file; parent folders are created.
        model_name: recorded in the metadata (pretrained name or checkpoint path).
        decode_batch: boxes decoded together in one decoder call.
        training_config: the checkpoint's ``config`` (its recorded normalisation goes into the metadata);
            default: the ``checkpoint_config`` that :func:`medsam_lite.checkpoint.load_checkpoint` attaches.
    Returns: the written path.
    """
    from .. import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted = build_scripted_predictor(model, decode_batch)
    metadata = {
        "format": "medsam-lite-torchscript",
        "model": model_name,
        "encoder": type(model.image_encoder).__name__,
        "medsam_lite_version": __version__,
        "torch_version": torch.__version__,
        "image_size": 256,
        "embedding_shape": [1, 256, 64, 64],
        "methods": INPUT_CONTRACT,
        "preprocessing": PREPROCESSING,
        "training_normalization": (training_config or getattr(model, "checkpoint_config", None) or {}).get(
            "normalization"),
    }
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_NAME: json.dumps(metadata, indent=2)})
    tmp.replace(path)
    return path


def read_metadata(path: Union[str, Path]) -> Dict[str, object]:
    """The metadata JSON stored in an exported TorchScript file."""
    extra = {METADATA_NAME: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_NAME])
