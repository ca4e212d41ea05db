"""RepViT-M0.6 student encoder, built from timm's RepViT blocks (timm has no m0_6 preset).

Seed-paper design, kept here:

* channels 40 / 80 / 160 / 320 with 2 / 1 / 9 / 1 blocks after each stage's downsample block
  (the RepViT-M0.6 configuration of the original RepViT code, expressed in timm's stage layout;
  mlp ratio 2, squeeze-excite on every other block);
* the stem (two stride-2 3x3 ConvNorm) takes 256 x 256 to 64 x 64 and **every later stage stays at
  64 x 64**: the stage-transition blocks keep timm's RepViT downsample structure but their depthwise
  conv has stride 1, so no resolution is lost before the mask decoder;
* SAM neck: Conv1x1 (320 -> 256), LayerNorm2d, Conv3x3, LayerNorm2d.

For inference call :func:`fuse_for_inference` (timm's ``reparameterize_model``): BatchNorm is
folded into the convolutions and RepVGG branches are merged; outputs stay equal to float precision.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from timm.models.repvit import ConvNorm, RepVitStage, RepVitStem
from timm.utils import reparameterize_model

from .neck import sam_neck


class RepViTEncoder(nn.Module):
    """(B, 3, 256, 256) -> (B, 256, 64, 64) with all stages kept at 64 x 64."""

    def __init__(
        self,
        embed_dims: Sequence[int] = (40, 80, 160, 320),
        depths: Sequence[int] = (2, 1, 9, 1),
        mlp_ratio: int = 2,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.stem = RepVitStem(3, embed_dims[0], nn.GELU)
        stages = []
        in_dim = embed_dims[0]
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            stage = RepVitStage(in_dim, dim, depth, mlp_ratio, nn.GELU, kernel_size, downsample=i > 0)
            if i > 0:  # keep 64 x 64: the transition's depthwise conv gets stride 1
                pad = (kernel_size - 1) // 2
                stage.downsample.spatial_downsample = ConvNorm(in_dim, in_dim, kernel_size, 1, pad, groups=in_dim)
            stages.append(stage)
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.neck = sam_neck(embed_dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stages(self.stem(x)))


def repvit_m0_6() -> RepViTEncoder:
    """The RepViT-M0.6 student encoder."""
    return RepViTEncoder()


def fuse_for_inference(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with BatchNorm fused and RepVGG branches merged (eval mode)."""
    return reparameterize_model(module.eval(), inplace=False)
