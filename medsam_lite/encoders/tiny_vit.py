"""LiteMedSAM's TinyViT image encoder, assembled from timm's TinyViT blocks.

Layout (input (B, 3, 256, 256)):

* patch embedding: two 1x1 ConvNorm layers (3 -> 32 -> 64 channels, GELU between), stride 1, so
  the first stage runs at full 256 x 256 resolution (this is why the baseline is slow on a CPU);
* stage 0: 2 MBConv blocks at 64 ch, then PatchMerging (stride 2) -> 128 ch at 128 x 128;
* stage 1: 2 TinyViT blocks (4 heads, window 7), PatchMerging (stride 2) -> 160 ch at 64 x 64;
* stage 2: 6 TinyViT blocks (5 heads, window 14), PatchMerging (stride 1) -> 320 ch at 64 x 64;
* stage 3: 2 TinyViT blocks (10 heads, window 7);
* SAM neck -> (B, 256, 64, 64).

Parameter names follow the LiteMedSAM checkpoint except that timm's ConvNorm calls its conv
``conv`` where the checkpoint says ``c``; :func:`remap_litemedsam_keys` translates.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import nn
from timm.models.tiny_vit import ConvNorm, MBConv, PatchMerging, TinyVitBlock

from .neck import sam_neck


class _Stage(nn.Module):
    """A stage's blocks, then an optional PatchMerging; NCHW in and out.

    MBConv blocks run on NCHW maps; TinyViT attention blocks (``channels_last=True``) on NHWC.
    """

    def __init__(self, blocks: nn.ModuleList, downsample: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2).contiguous()
        return self.downsample(x)


def _patch_merging(dim: int, out_dim: int, stride: int) -> PatchMerging:
    merge = PatchMerging(dim, out_dim, nn.GELU)
    if stride != 2:
        merge.conv2 = ConvNorm(out_dim, out_dim, 3, stride, 1, groups=out_dim)
    return merge


class TinyViTEncoder(nn.Module):
    """(B, 3, 256, 256) float in [0, 1] -> (B, 256, 64, 64) image embedding."""

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.seq = nn.Sequential(
            ConvNorm(3, embed_dims[0] // 2, 1, 1, 0), nn.GELU(), ConvNorm(embed_dims[0] // 2, embed_dims[0], 1, 1, 0)
        )
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        layers = []
        for i, depth in enumerate(depths):
            rates = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            last = i == len(depths) - 1
            downsample = nn.Identity() if last else _patch_merging(embed_dims[i], embed_dims[i + 1], merge_strides[i])
            if i == 0:
                blocks = nn.ModuleList(
                    MBConv(embed_dims[0], embed_dims[0], mbconv_expand_ratio, nn.GELU, r) for r in rates
                )
                layers.append(_Stage(blocks, downsample, channels_last=False))
            else:
                blocks = nn.ModuleList(
                    TinyVitBlock(embed_dims[i], num_heads[i], window_sizes[i], mlp_ratio, drop_path=r)
                    for r in rates
                )
                layers.append(_Stage(blocks, downsample, channels_last=True))
        self.layers = nn.ModuleList(layers)
        self.neck = sam_neck(embed_dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.seq(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


def remap_litemedsam_keys(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename LiteMedSAM / MobileSAM TinyViT keys (ConvNorm ``.c.``) to timm's (``.conv.``)."""
    return {key.replace(".c.", ".conv."): value for key, value in state_dict.items()}


def tiny_vit() -> TinyViTEncoder:
    """The LiteMedSAM TinyViT (5.7 M parameters)."""
    return TinyViTEncoder()
