"""Stage-replacement student: a cheap convolutional stem in place of LiteMedSAM's high-resolution stages.

LiteMedSAM's TinyViT (:mod:`medsam_lite.encoders.tiny_vit`) runs its patch embedding (two 1x1
ConvNorm, 3 -> 32 -> 64 channels) and its first stage (2 MBConv blocks at 64 channels, then a
stride-2 PatchMerging to 128 channels) at the full 256 x 256 input resolution: about half of the
eager encoder time for a small part of the FLOPs. :class:`LiteMedSAMStemEncoder` replaces exactly
those two pieces (``patch_embed`` + ``layers[0]``) by

* ``stem``: ConvNorm 3x3 stride 2 (3 -> ``stem_dim``), GELU, ``depth`` timm RepViT blocks at
  128 x 128 (``stem_dim`` channels, mlp ratio 2, squeeze-excite on every other block), and a 1x1
  ConvNorm to 128 channels;

so the stem maps (B, 3, 256, 256) to (B, 128, 128, 128), the tensor the teacher's ``layers[1]``
expects (:data:`CUT_SHAPE`). The teacher's ``layers[1:]`` and ``neck`` are kept, initialised from
the real LiteMedSAM weights (SHA-256 checked, nothing downloaded) and frozen by default
(``requires_grad=False``, kept in eval mode even when the encoder is put in train mode, so their
BatchNorm statistics never move). A training loop that optimises only ``requires_grad`` parameters
therefore trains the stem alone.

Stage-level target: :func:`teacher_cut_features` gives the teacher's tensor at the cut
(``layers[0]`` output) and :meth:`LiteMedSAMStemEncoder.stem_features` the student's, so a loss
``mse(student.stem_features(x), teacher_cut_features(teacher_encoder, x))`` supervises the stem
directly, before (or beside) the embedding / mask losses.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from timm.models.repvit import ConvNorm, RepViTBlock

from .tiny_vit import TinyViTEncoder, remap_litemedsam_keys, tiny_vit
from .weights import lite_medsam_state

#: (channels, height, width) of the teacher's tensor at the cut (output of ``layers[0]``) for a 256 input.
CUT_SHAPE: Tuple[int, int, int] = (128, 128, 128)


def teacher_encoder_from_lite_medsam() -> TinyViTEncoder:
    """LiteMedSAM's TinyViT image encoder with its real weights (strict load), eval mode."""
    state = remap_litemedsam_keys(lite_medsam_state())
    prefix = "image_encoder."
    encoder = tiny_vit()
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return encoder.eval()


def teacher_cut_features(teacher_encoder: TinyViTEncoder, images: torch.Tensor) -> torch.Tensor:
    """The teacher's feature at the stem cut: (B, 3, 256, 256) in [0, 1] -> (B, 128, 128, 128)
    (``layers[0](patch_embed(images))``, NCHW). The target of a stem-only feature MSE; call it under
    ``torch.no_grad()`` with a frozen teacher."""
    return teacher_encoder.layers[0](teacher_encoder.patch_embed.seq(images))


class LiteMedSAMStemEncoder(nn.Module):
    """(B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64): a trainable conv stem, then the teacher's
    ``layers[1:]`` and ``neck`` (frozen unless ``freeze_teacher`` is False)."""

    def __init__(self, stem_dim: int = 64, depth: int = 2, mlp_ratio: int = 2,
                 pretrained: bool = True, freeze_teacher: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvNorm(3, stem_dim, 3, 2, 1), nn.GELU(),
            *[RepViTBlock(stem_dim, mlp_ratio, 3, i % 2 == 0, nn.GELU) for i in range(depth)],
            ConvNorm(stem_dim, CUT_SHAPE[0], 1),
        )
        teacher = teacher_encoder_from_lite_medsam() if pretrained else tiny_vit()
        self.layers = nn.ModuleList(list(teacher.layers)[1:])
        self.neck = teacher.neck
        self.freeze_teacher = freeze_teacher
        if freeze_teacher:
            self.layers.requires_grad_(False)
            self.neck.requires_grad_(False)

    def train(self, mode: bool = True) -> "LiteMedSAMStemEncoder":
        """Train mode for the stem; the kept teacher stages stay in eval mode while frozen."""
        super().train(mode)
        if self.freeze_teacher:
            self.layers.eval()
            self.neck.eval()
        return self

    def stem_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) -> (B, 128, 128, 128): the stem's output, compared with :func:`teacher_cut_features`."""
        return self.stem(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


def lite_medsam_stem() -> LiteMedSAMStemEncoder:
    """The registered stage-replacement student: 64-channel stem with 2 RepViT blocks, teacher frozen."""
    return LiteMedSAMStemEncoder()
