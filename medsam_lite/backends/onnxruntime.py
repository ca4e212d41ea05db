"""ONNX Runtime backend for :class:`medsam_lite.predictor.Predictor`.

``Predictor(backend=OnnxRuntimeBackend(dir))`` runs the same pre/post-processing and 3D propagation
as the eager model, with ``encoder.onnx`` / ``decoder.onnx`` of an exported folder (see
:mod:`medsam_lite.export.onnx_export`). :meth:`OnnxRuntimeBackend.from_model` converts a model locally
instead, into the artifact cache (:mod:`medsam_lite.backends.artifacts`), once per (weights,
precision, ONNX Runtime version).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Union

import numpy as np

from ..arrays import like, to_numpy

if TYPE_CHECKING:
    from medsam_lite.model import MedSAMLite

FORMAT_VERSION = 1
"""Version of the local ONNX conversion (part of the artifact key)."""

ONNX_PRECISIONS = ("fp32", "int8")
"""Precisions :meth:`OnnxRuntimeBackend.from_model` converts to (int8: ONNX Runtime dynamic quantisation)."""


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

    name = "onnxruntime"

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
        self.precision = "int8" if int8 else "fp32"
        self.weights_sha256: Optional[str] = None  # known when built by from_model
        self.encoder = _session(ort, enc, options, providers)
        self.decoder = _session(ort, dec, options, providers)

    @classmethod
    def from_folder(cls, folder: Union[str, Path], precision: str = "fp32",
                    threads: Optional[int] = None) -> "OnnxRuntimeBackend":
        """The registry's way to open an exported folder (:func:`medsam_lite.backends.open_folder`)."""
        return cls(folder, int8=precision == "int8", threads=threads)

    @classmethod
    def from_model(cls, model: "MedSAMLite", precision: str = "fp32", cache_dir: Optional[Union[str, Path]] = None,
                   threads: Optional[int] = None) -> "OnnxRuntimeBackend":
        """Convert ``model`` to ONNX locally (cached, see module docstring) and open it.

        Args:
            model: the MedSAMLite model (its state SHA-256 keys the cache entry).
            precision: ``fp32`` or ``int8`` (ONNX Runtime dynamic quantisation of both graphs).
            cache_dir: artifact cache root (None: ``$MEDSAM_LITE_CACHE`` or the user cache folder).
            threads: ONNX Runtime intra-op threads (None = ONNX Runtime default).
        """
        import onnxruntime as ort

        from medsam_lite.backends.artifacts import ArtifactKey, ensure_entry
        from medsam_lite.backends.graphs import quantize_onnx_dynamic, write_onnx_graphs
        from medsam_lite.checkpoint import state_sha256
        from medsam_lite.errors import InputError

        if precision not in ONNX_PRECISIONS:
            raise InputError(f"ONNX Runtime runs {' / '.join(ONNX_PRECISIONS)}, not {precision!r}; "
                             "use --backend openvino for bf16")
        model = model.eval()
        key = ArtifactKey("onnx", state_sha256(model), precision, ort.__version__, FORMAT_VERSION)

        def build(tmp: Path) -> None:
            paths = write_onnx_graphs(model, tmp)
            if precision == "int8":
                for part in ("encoder", "decoder"):
                    quantize_onnx_dynamic(paths[part], tmp / f"{part}.int8.onnx")
                    paths[part].unlink()

        entry = ensure_entry(key, build, f"{type(model.image_encoder).__name__} encoder + decoder to ONNX "
                                         f"({precision})", cache_dir)
        backend = cls(entry, int8=precision == "int8", threads=threads)
        backend.weights_sha256 = key.weights_sha256  # model fingerprint, e.g. for EmbeddingCache keys
        return backend

    def encode(self, image: Any) -> Any:
        """(B, 3, 256, 256) float32 model-frame images -> (B, 256, 64, 64) embeddings (one run per image:
        the exported graph has a fixed batch of 1); numpy in, numpy out (a torch tensor in, a tensor out)."""
        array = to_numpy(image)
        out = [self.encoder.run(["embedding"], {"image": array[i : i + 1]})[0] for i in range(array.shape[0])]
        return like(np.concatenate(out) if out else np.zeros((0, 256, 64, 64), np.float32), image)

    def decode(self, embedding: Any, boxes_256: Any) -> Any:
        """Embedding (1, 256, 64, 64), (N, 4) XYXY boxes in the 256 frame -> (N, 1, 256, 256) logits; numpy in,
        numpy out (a torch embedding in, a tensor out)."""
        feeds = {"embedding": to_numpy(embedding), "boxes": to_numpy(boxes_256).reshape(-1, 4)}
        return like(self.decoder.run(["logits"], feeds)[0], embedding)
