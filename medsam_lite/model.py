"""MedSAM-Lite: any registry image encoder + segment-anything's prompt encoder and mask decoder."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from .encoders import build_encoder
from .encoders.neck import EMBED_DIM
from .transforms import EMBEDDING_SIZE, IMAGE_SIZE


class MedSAMLite(nn.Module):
    """Holds the three modules it is given; no building logic lives here."""

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float in [0, 1] -> (B, 256, 64, 64) image embeddings."""
        return self.image_encoder(images)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Decode N boxes against ONE image embedding.

        Args:
            embedding: (1, 256, 64, 64).
            boxes: (N, 4) XYXY in the 256 x 256 model frame.
        Returns:
            logits (N, 1, 256, 256) and predicted IoU (N, 1); single-mask output.
        """
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes.reshape(-1, 1, 4), masks=None)
        return self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training forward: one box per image.

        Args:
            images: (B, 3, 256, 256); boxes: (B, 4) XYXY in the model frame.
        Returns:
            logits (B, 1, 256, 256) and predicted IoU (B, 1).
        """
        embeddings = self.encode(images)
        outs = [self.decode(embeddings[i : i + 1], boxes[i : i + 1]) for i in range(embeddings.shape[0])]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


class DecoderGraph(nn.Module):
    """The prompt encoder + mask decoder of ``model`` as one graph (tracing, conversion, backends):
    embedding (1, 256, 64, 64), boxes (N, 4) float32 XYXY in the model frame -> logits (N, 1, 256, 256)."""

    def __init__(self, model: MedSAMLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(embedding, boxes)[0]


def build_prompt_encoder() -> PromptEncoder:
    """SAM's PromptEncoder(256, (64, 64), (256, 256), mask_in_chans=16)."""
    return PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBEDDING_SIZE, EMBEDDING_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )


def build_mask_decoder() -> MaskDecoder:
    """SAM's MaskDecoder with TwoWayTransformer(depth 2, 256, mlp 2048, 8 heads), 3 multimask outputs."""
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


def build_medsam(encoder: str) -> MedSAMLite:
    """Attach the registry encoder ``encoder`` to a fresh prompt encoder and mask decoder."""
    return MedSAMLite(build_encoder(encoder), build_prompt_encoder(), build_mask_decoder())


class PromptPath(nn.Module):
    """A prompt encoder + mask decoder pair on their own (the click-refinement path, :mod:`medsam_lite.clicks`):
    trained on cached embeddings, the image encoder is not part of it."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(self, embedding: torch.Tensor, box: torch.Tensor, points: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None,
                mask_input: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Decode one object's prompts against ONE image embedding (all in the 256 x 256 model frame).

        Args:
            embedding: (1, 256, 64, 64).
            box: (1, 4) XYXY.
            points: (1, N, 2) XY pixel indices (None: no clicks); labels: (1, N) float, 1 positive, 0 negative.
            mask_input: (1, 1, 256, 256) low-res logits of the previous mask (None: no dense prompt).
        Returns:
            logits (1, 1, 256, 256) and predicted IoU (1, 1).
        """
        pts = None if points is None or points.shape[1] == 0 else (points, labels)
        sparse, dense = self.prompt_encoder(points=pts, boxes=box.reshape(-1, 1, 4), masks=mask_input)
        return self.mask_decoder(image_embeddings=embedding, image_pe=self.prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=False)


def prompt_path_of(model: MedSAMLite) -> PromptPath:
    """A :class:`PromptPath` holding deep copies of ``model``'s prompt encoder and mask decoder."""
    import copy

    return PromptPath(copy.deepcopy(model.prompt_encoder), copy.deepcopy(model.mask_decoder))


def build_prompt_path() -> PromptPath:
    """A fresh :class:`PromptPath` (LiteMedSAM's architecture)."""
    return PromptPath(build_prompt_encoder(), build_mask_decoder())
