"""The SAM-style neck shared by encoders: (B, C, 64, 64) features -> (B, 256, 64, 64) embedding."""
from __future__ import annotations

from torch import nn
from segment_anything.modeling.common import LayerNorm2d

EMBED_DIM = 256
"""Channels of every image embedding (the prompt encoder and mask decoder expect 256)."""


def sam_neck(in_channels: int, out_channels: int = EMBED_DIM) -> nn.Sequential:
    """Conv1x1 -> LayerNorm2d -> Conv3x3 -> LayerNorm2d, bias-free convs, as in SAM / MobileSAM.

    Its state-dict keys (``0.weight``, ``1.weight``, ...) match the LiteMedSAM checkpoint's ``neck``.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        LayerNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )
