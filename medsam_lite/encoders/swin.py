"""Swin-T teacher encoder: timm's Swin Transformer body plus a small feature-pyramid neck.

Design (documented choice; the seed paper does not publish its neck):

* body: Swin-T (embed 96, depths 2/2/6/2, heads 3/6/12/24, patch 4) at 256 x 256 input with
  window 8, so the four stages run at 64, 32, 16 and 8 tokens per side (96/192/384/768 channels)
  and every window tiles its map exactly;
* neck: each stage output goes through Conv1x1 -> LayerNorm2d to 256 channels, is upsampled
  bilinearly to 64 x 64, and the four maps are summed (an FPN-style top-down fusion without the
  lateral cascade); then Conv3x3 -> LayerNorm2d as in SAM's neck.  Fusing all stages keeps the
  64 x 64 detail of stage 1 that a plain stride-32 Swin output would lose, which matters for small
  lesions.

Output: (B, 256, 64, 64) for (B, 3, 256, 256) input in [0, 1].
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from segment_anything.modeling.common import LayerNorm2d
from timm.models.swin_transformer import SwinTransformer

from .neck import EMBED_DIM


class SwinEncoder(nn.Module):
    """(B, 3, 256, 256) -> (B, 256, 64, 64) with a Swin body and multi-scale fusion neck."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 8,
        drop_path_rate: float = 0.1,
        img_size: int = 256,
    ) -> None:
        super().__init__()
        body = SwinTransformer(
            img_size=img_size, patch_size=4, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads),
            window_size=window_size, drop_path_rate=drop_path_rate, num_classes=0,
        )
        self.patch_embed = body.patch_embed
        self.stages = body.layers
        self.out_size = img_size // 4
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, EMBED_DIM, kernel_size=1, bias=False), LayerNorm2d(EMBED_DIM)) for d in dims
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(EMBED_DIM, EMBED_DIM, kernel_size=3, padding=1, bias=False), LayerNorm2d(EMBED_DIM)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, 64, 64, 96) NHWC
        feats: List[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x.permute(0, 3, 1, 2))
        out = torch.zeros(0)
        for i, lateral in enumerate(self.lateral):
            y = lateral(feats[i])
            if i > 0:
                y = F.interpolate(y, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
            out = y if i == 0 else out + y
        return self.fuse(out)


def swin_t() -> SwinEncoder:
    """The Swin-T teacher encoder (about 28 M parameters in the body)."""
    return SwinEncoder()
