"""Image encoder registry: every builder returns a module mapping (B, 3, 256, 256) to (B, 256, 64, 64)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Dict

if TYPE_CHECKING:  # torch only when an encoder is built
    from torch import nn


def _lazy(module: str, builder: str) -> Callable[[], nn.Module]:
    """The builder ``module.builder`` of this package, imported on first call: the encoder modules pull
    in timm (and through it torchvision, ~1-2 s), which a process running a converted OpenVINO model
    never needs."""

    def build() -> nn.Module:
        return getattr(importlib.import_module(f"{__name__}.{module}"), builder)()

    build.__name__ = build.__qualname__ = builder
    build.__doc__ = f"{builder}() of medsam_lite.encoders.{module} (imported on first use)."
    return build


ENCODERS: Dict[str, Callable[[], nn.Module]] = {
    "tiny_vit": _lazy("tiny_vit", "tiny_vit"),
    "swin_t": _lazy("swin", "swin_t"),
    "repvit_m0_6": _lazy("repvit", "repvit_m0_6"),
    "repvit_m0_6_fpn": _lazy("repvit", "repvit_m0_6_fpn"),
    "repvit_m0_9_fpn": _lazy("repvit", "repvit_m0_9_fpn"),
    "repvit_m1_0_fpn": _lazy("repvit", "repvit_m1_0_fpn"),
    "lite_medsam_stem": _lazy("stem", "lite_medsam_stem"),
}


def build_encoder(name: str) -> nn.Module:
    """Build the encoder registered as ``name``; unknown names raise ValueError listing valid ones."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]()


def inference_encoder(encoder: nn.Module) -> nn.Module:
    """The encoder as every inference path runs it (eval mode; RepViT BatchNorm fused and RepVGG branches
    merged into a copy, also in the stem of ``lite_medsam_stem``; other encoders unchanged). The Predictor's torch backend, the TorchScript artifact
    and the ONNX / OpenVINO conversions all use this, so they compute the same network."""
    from .repvit import fuse_for_inference, is_repvit
    from .stem import LiteMedSAMStemEncoder

    encoder = encoder.eval()
    return fuse_for_inference(encoder) if is_repvit(encoder) or isinstance(encoder, LiteMedSAMStemEncoder) \
        else encoder
