"""Inference backends: what runs the image encoder and the mask decoder, behind one protocol.

Every backend maps, in the 256 x 256 model frame:

* ``encode(images)``: (B, 3, 256, 256) float32 in [0, 1] (zero padded bottom / right) ->
  (B, 256, 64, 64) float32 image embeddings;
* ``decode(embedding, boxes_256)``: one (1, 256, 64, 64) embedding and (N, 4) float32 XYXY boxes in
  the model frame -> (N, 1, 256, 256) float32 mask logits (single-mask output).

Pre/post-processing and the 3D propagation are NOT part of a backend: they live in
:mod:`medsam_lite.transforms` and :mod:`medsam_lite.propagation`, so every backend runs the same
algorithm. Registry (:data:`BACKENDS`): ``torch`` (eager PyTorch, the exact fp32 reference),
``onnxruntime``, ``openvino``. :func:`make_backend` builds one from a model; ``"auto"`` picks the
fastest installed backend and precision as :func:`resolve` documents.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol, Tuple, runtime_checkable

import torch

from ..errors import InputError

if TYPE_CHECKING:
    from pathlib import Path

    from ..model import MedSAMLite

BACKENDS: Tuple[str, ...] = ("torch", "onnxruntime", "openvino")
"""Backend names, in the order ``auto`` prefers them from last to first (openvino first when installed)."""

PRECISIONS: Tuple[str, ...] = ("fp32", "bf16", "bf16-mixed", "bf16-mixed3", "int8")
"""Precisions a backend may run at (``torch``: fp32 only; it is the reference; the ``bf16-mixed*``
schemes are OpenVINO's per-stage mixes, :data:`medsam_lite.backends.openvino.MIXED_F32_STAGES`)."""


@runtime_checkable
class Backend(Protocol):
    """What :class:`medsam_lite.predictor.Predictor` needs from a backend (see module docstring)."""

    name: str
    precision: str

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32."""
        ...

    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        """(1, 256, 64, 64) embedding, (N, 4) float32 XYXY model-frame boxes -> (N, 1, 256, 256) logits."""
        ...


def installed(name: str) -> bool:
    """Whether the runtime of backend ``name`` can be imported here."""
    import importlib.util

    module = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}.get(name)
    return module is not None and importlib.util.find_spec(module) is not None


def resolve(backend: str = "auto", precision: str = "auto") -> Tuple[str, str]:
    """The concrete (backend, precision) for possibly-``auto`` requests.

    ``backend="auto"``: ``openvino`` when installed, else ``onnxruntime``, else ``torch``.
    ``precision="auto"``: the backend's default precision (:func:`default_precision`), fp32 unless a
    reduced precision passed the agreement gate on this kind of CPU. Unknown names or a precision a
    backend cannot run raise :class:`InputError`.
    """
    if backend not in BACKENDS + ("auto",):
        raise InputError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if precision not in PRECISIONS + ("auto",):
        raise InputError(f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)}")
    if backend == "auto":
        backend = next((b for b in ("openvino", "onnxruntime") if installed(b)), "torch")
    elif not installed(backend):
        raise InputError(f"backend {backend!r} is not installed (pip install {backend})")
    if precision == "auto":
        precision = default_precision(backend)
    if backend == "torch" and precision != "fp32":
        raise InputError("--backend torch is the exact eager fp32 reference; use openvino for bf16 / int8")
    return backend, precision


def default_precision(backend: str) -> str:
    """Precision ``auto`` runs ``backend`` at. fp32 unless a reduced precision is allowed by the gate."""
    if backend == "openvino":
        from .openvino import auto_precision

        return auto_precision()
    return "fp32"


def make_backend(model: "MedSAMLite", backend: str = "auto", precision: str = "auto",
                 cache_dir: Optional["Path"] = None, threads: Optional[int] = None) -> Backend:
    """Build backend ``backend`` at ``precision`` for ``model`` (names may be ``auto``, see :func:`resolve`).

    Converted artifacts (ONNX, OpenVINO IR) are built locally from ``model``'s weights on first use and
    cached under ``cache_dir`` (default: the user cache folder, :mod:`medsam_lite.backends.artifacts`).
    ``threads``: intra-op threads of a non-torch runtime (None = the runtime's default).
    """
    name, prec = resolve(backend, precision)
    if name == "torch":
        from .torch import TorchBackend

        return TorchBackend(model)
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend.from_model(model, precision=prec, cache_dir=cache_dir, threads=threads)
    from .openvino import OpenVINOBackend

    return OpenVINOBackend(model, precision=prec, cache_dir=cache_dir, threads=threads)
