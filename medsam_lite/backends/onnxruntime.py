"""ONNX Runtime backend for :class:`medsam_lite.predictor.Predictor`.

``Predictor(backend=OnnxRuntimeBackend(dir))`` runs the same pre/post-processing and 3D propagation
as the eager model, with ``encoder.onnx`` / ``decoder.onnx`` (see :mod:`medsam_lite.export.onnx_export`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
import torch


def _session(ort: Any, path: Path, options: Any, providers: List[str]) -> Any:
    """An ``ort.InferenceSession`` for ``path``; an unreadable / invalid model is a one-line InputError."""
    from medsam_lite.errors import InputError

    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind error types (InvalidProtobuf, Fail, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load ONNX model ({type(exc).__name__}: {first})", path) from exc


class OnnxRuntimeBackend:
    """``encode`` (1, 3, 256, 256) -> (1, 256, 64, 64) and ``decode(embedding, boxes_256 (N, 4))`` -> (N, 1, 256, 256).

    Args:
        onnx_dir: folder with ``encoder.onnx`` and ``decoder.onnx`` (or their ``.int8.onnx`` variants).
        int8: use the dynamically quantised ``*.int8.onnx`` files.
        threads: ONNX Runtime intra-op threads (None = ONNX Runtime default).
    """

    def __init__(self, onnx_dir: Union[str, Path], int8: bool = False, threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        from medsam_lite.errors import InputError

        onnx_dir = Path(onnx_dir)
        suffix = ".int8.onnx" if int8 else ".onnx"
        enc, dec = onnx_dir / f"encoder{suffix}", onnx_dir / f"decoder{suffix}"
        for path in (enc, dec):
            if not path.is_file():
                how = "medsam-lite export --format onnx" + (" --quantize" if int8 else "")
                raise InputError(f"file not found; create it with '{how} -o {onnx_dir}'", path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.encoder = _session(ort, enc, options, providers)
        self.decoder = _session(ort, dec, options, providers)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, 256, 256) float32 model-frame image -> (1, 256, 64, 64) embedding."""
        array = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.encoder.run(["embedding"], {"image": array})[0])

    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        """Embedding (1, 256, 64, 64), (N, 4) XYXY boxes in the 256 frame -> (N, 1, 256, 256) logits."""
        feeds = {
            "embedding": np.ascontiguousarray(embedding.detach().cpu().numpy(), dtype=np.float32),
            "boxes": np.ascontiguousarray(boxes_256.detach().cpu().numpy(), dtype=np.float32).reshape(-1, 4),
        }
        return torch.from_numpy(self.decoder.run(["logits"], feeds)[0])
