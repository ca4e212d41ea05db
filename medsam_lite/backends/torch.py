"""The eager PyTorch backend: the exact fp32 reference every other backend is measured against."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..encoders import inference_encoder
from ..model import MedSAMLite


class TorchBackend:
    """Runs a :class:`~medsam_lite.model.MedSAMLite` eagerly in fp32 under ``torch.inference_mode``.

    ``encode``: (B, 3, 256, 256) -> (B, 256, 64, 64); ``decode``: (1, 256, 64, 64) embedding and (N, 4)
    model-frame boxes -> (N, 1, 256, 256) logits.
    """

    name = "torch"
    precision = "fp32"

    def __init__(self, model: MedSAMLite) -> None:
        self.model = model.eval()
        self.encoder = inference_encoder(model.image_encoder)
        self._sha: Optional[str] = None

    @classmethod
    def from_model(cls, model: MedSAMLite, precision: str = "fp32", cache_dir: Optional[object] = None,
                   threads: Optional[int] = None) -> "TorchBackend":
        """The registry's constructor (:func:`medsam_lite.backends.create_backend`): fp32 only; ``cache_dir`` and
        ``threads`` do not apply (torch's thread pool is the process's, set by the entry point)."""
        if precision != "fp32":
            raise ValueError(f"the torch backend is the exact eager fp32 reference, not {precision!r}")
        return cls(model)

    def reference_modules(self) -> Tuple[nn.Module, nn.Module]:
        """(encoder, decoder) as the reference path runs them, for :class:`~medsam_lite.propagation.Propagator`:
        the fused image encoder and :class:`~medsam_lite.model.DecoderGraph` (no wrapper in between)."""
        from ..model import DecoderGraph

        return self.encoder, DecoderGraph(self.model).eval()

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the model's state dict (the fingerprint in embedding-cache keys), computed on first use."""
        if self._sha is None:
            from ..checkpoint import state_sha256

            self._sha = state_sha256(self.model)
        return self._sha

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    @torch.inference_mode()
    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        return self.model.decode(embedding, boxes_256)[0]
