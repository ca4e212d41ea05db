"""RepViT-M0.6 student encoders, built from timm's RepViT blocks (timm has no m0_6 preset).

Two registered layouts of the same RepViT-M0.6 body (channels 40 / 80 / 160 / 320):

* ``repvit_m0_6``: the seed paper's code, every stage at 64 x 64 (below);
* ``repvit_m0_6_fpn``: the original RepViT strides (64, 32, 16, 8 for a 256 input) and an
  EdgeSAM-style top-down feature pyramid back to 64 x 64 (:class:`RepViTFPNEncoder`): about 3x
  fewer seconds per training step on a CPU and a receptive field covering the whole image.

Seed-paper design (``repvit_m0_6``):

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

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.repvit import ConvNorm, RepViTBlock, RepVitStage, RepVitStem
from timm.utils import reparameterize_model
from segment_anything.modeling.common import LayerNorm2d

from .neck import EMBED_DIM, sam_neck


def repvit_stages(embed_dims: Sequence[int], depths: Sequence[int], mlp_ratio: int, kernel_size: int,
                  keep_resolution: bool) -> List[RepVitStage]:
    """timm RepViT stages after the stem; each stage but the first starts with a downsample block whose
    depthwise conv has stride 2, or stride 1 with ``keep_resolution`` (every stage at the stem's 64 x 64)."""
    stages = []
    in_dim = embed_dims[0]
    for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
        stage = RepVitStage(in_dim, dim, depth, mlp_ratio, nn.GELU, kernel_size, downsample=i > 0)
        if i > 0 and keep_resolution:
            pad = (kernel_size - 1) // 2
            stage.downsample.spatial_downsample = ConvNorm(in_dim, in_dim, kernel_size, 1, pad, groups=in_dim)
        stages.append(stage)
        in_dim = dim
    return stages


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
        self.stages = nn.Sequential(*repvit_stages(embed_dims, depths, mlp_ratio, kernel_size, keep_resolution=True))
        self.neck = sam_neck(embed_dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stages(self.stem(x)))


def repvit_m0_6() -> RepViTEncoder:
    """The RepViT-M0.6 student encoder (seed-paper layout, all stages at 64 x 64)."""
    return RepViTEncoder()


class RepViTFPNEncoder(nn.Module):
    """(B, 3, 256, 256) -> (B, 256, 64, 64): RepViT stages at strides 4, 8, 16, 32, then a feature pyramid.

    * stem (stride 4) -> stage 0 at 64 x 64; stages 1-3 each start with timm's stride-2 RepViT
      downsample block (32 x 32, 16 x 16, 8 x 8);
    * top-down pyramid: a 1x1 ConvNorm lateral per stage to ``fpn_dim`` channels; the coarser map is
      bilinearly upsampled x2 and added, level by level, down to 64 x 64;
    * ``fuse_blocks`` RepViT blocks at 64 x 64 on the merged map;
    * neck: Conv1x1 (``fpn_dim`` -> 256), LayerNorm2d, depthwise Conv3x3 + Conv1x1 (256 -> 256),
      LayerNorm2d (a separable version of the SAM neck's 3x3 conv, which alone would cost 2.4 GMAC).
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (40, 80, 160, 320),
        depths: Sequence[int] = (2, 1, 9, 1),
        fpn_dim: int = 128,
        fuse_blocks: int = 2,
        mlp_ratio: int = 2,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.stem = RepVitStem(3, embed_dims[0], nn.GELU)
        self.stages = nn.ModuleList(repvit_stages(embed_dims, depths, mlp_ratio, kernel_size, keep_resolution=False))
        self.laterals = nn.ModuleList([ConvNorm(dim, fpn_dim, 1) for dim in embed_dims])
        self.fuse = nn.Sequential(*[RepViTBlock(fpn_dim, mlp_ratio, kernel_size, i % 2 == 0, nn.GELU)
                                    for i in range(fuse_blocks)])
        self.neck = nn.Sequential(
            nn.Conv2d(fpn_dim, EMBED_DIM, kernel_size=1, bias=False),
            LayerNorm2d(EMBED_DIM),
            nn.Conv2d(EMBED_DIM, EMBED_DIM, kernel_size=3, padding=1, groups=EMBED_DIM, bias=False),
            nn.Conv2d(EMBED_DIM, EMBED_DIM, kernel_size=1, bias=False),
            LayerNorm2d(EMBED_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        laterals = []
        for i, lateral in enumerate(self.laterals):  # enumerate: TorchScript cannot index a ModuleList by a variable
            laterals.append(lateral(features[i]))
        y = laterals[-1]
        for i in range(len(laterals) - 2, -1, -1):
            y = F.interpolate(y, size=laterals[i].shape[-2:], mode="bilinear", align_corners=False) + laterals[i]
        return self.neck(self.fuse(y))


def repvit_m0_6_fpn() -> RepViTFPNEncoder:
    """RepViT-M0.6 at its original strides with a feature-pyramid neck to the 64 x 64 embedding."""
    return RepViTFPNEncoder()


#: timm's RepViT-M0.9 / M1.0 bodies (``timm.models.repvit``: ``repvit_m0_9`` / ``repvit_m1_0``).
REPVIT_M0_9 = {"embed_dims": (48, 96, 192, 384), "depths": (2, 2, 14, 2)}
REPVIT_M1_0 = {"embed_dims": (56, 112, 224, 448), "depths": (2, 2, 14, 2)}


def repvit_m0_9_fpn() -> RepViTFPNEncoder:
    """The wider student: RepViT-M0.9 (48 / 96 / 192 / 384 channels, 2 / 2 / 14 / 2 blocks) at its original
    strides with the same feature-pyramid neck as ``repvit_m0_6_fpn``."""
    return RepViTFPNEncoder(**REPVIT_M0_9)


def repvit_m1_0_fpn() -> RepViTFPNEncoder:
    """RepViT-M1.0 (56 / 112 / 224 / 448 channels, 2 / 2 / 14 / 2 blocks), same strides and neck."""
    return RepViTFPNEncoder(**REPVIT_M1_0)


def is_repvit(module: nn.Module) -> bool:
    """True for the RepViT encoders (the ones :func:`fuse_for_inference` is meant for)."""
    return isinstance(module, (RepViTEncoder, RepViTFPNEncoder))


def fuse_for_inference(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with BatchNorm fused and RepVGG branches merged (eval mode)."""
    return reparameterize_model(module.eval(), inplace=False)
