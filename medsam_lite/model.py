"""MedSAM-Lite: any registry image encoder + segment-anything's prompt encoder and mask decoder."""
from __future__ import annotations

from typing import Tuple

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


def _attend(attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """segment-anything ``Attention.forward`` after its q / k / v projections (given already projected):
    split heads, scaled softmax, recombine, ``out_proj``."""
    q = attention._separate_heads(q, attention.num_heads)
    k = attention._separate_heads(k, attention.num_heads)
    v = attention._separate_heads(v, attention.num_heads)
    weights = torch.softmax((q @ k.permute(0, 1, 3, 2)) / (q.shape[-1] ** 0.5), dim=-1)
    return attention.out_proj(attention._recombine_heads(weights @ v))


class DecoderImageGraph(nn.Module):
    """The box-independent part of :class:`DecoderGraph`, computed once per image embedding.

    With no mask prompt, segment-anything's mask decoder starts from ``src = embedding +
    no_mask_embed`` and its first two-way block projects that image side (keys, key + positional
    encoding) before any box enters: the token-to-image attention's k / v and the image-to-token
    attention's q. Those three (4096 x 256 -> 128) projections are ~25 % of a box's decoder time in
    OpenVINO; computing them once per slice serves every box of that slice.

    embedding (1, 256, 64, 64) -> keys (1, 4096, 256), k (1, 4096, 128), v (1, 4096, 128), q (1, 4096, 128).
    """

    def __init__(self, model: MedSAMLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        prompt_encoder, layer = self.model.prompt_encoder, self.model.mask_decoder.transformer.layers[0]
        keys = (embedding + prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)).flatten(2).permute(0, 2, 1)
        keys_pe = keys + prompt_encoder.get_dense_pe().flatten(2).permute(0, 2, 1)
        return (keys, layer.cross_attn_token_to_image.k_proj(keys_pe), layer.cross_attn_token_to_image.v_proj(keys),
                layer.cross_attn_image_to_token.q_proj(keys_pe))


class DecoderBoxGraph(nn.Module):
    """The box-dependent rest of :class:`DecoderGraph`: (keys, k, v, q) of :class:`DecoderImageGraph`,
    boxes (N, 4) float32 XYXY in the model frame -> logits (N, 1, 256, 256).

    ``DecoderBoxGraph(m)(*DecoderImageGraph(m)(e), b)`` equals ``DecoderGraph(m)(e, b)`` up to float
    rounding (tested): the same segment-anything modules, run in segment-anything's order
    (``MaskDecoder.predict_masks`` / ``TwoWayTransformer`` / ``TwoWayAttentionBlock``, first block with
    ``skip_first_layer_pe``, single-mask output), with two graph-level changes: the first block's image
    projections come in precomputed, and the hypernetwork product is an elementwise product summed
    over the 32 channels instead of a matmul over a (N, 32, 65536) view (same sum, without the
    layout copy that view forces in OpenVINO: ~7 ms a box). The TorchScript artifact and ``--backend
    torch`` keep :class:`DecoderGraph`, the exact reference.
    """

    def __init__(self, model: MedSAMLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, keys: torch.Tensor, k1: torch.Tensor, v1: torch.Tensor, q1: torch.Tensor,
                boxes: torch.Tensor) -> torch.Tensor:
        prompt_encoder, decoder = self.model.prompt_encoder, self.model.mask_decoder
        transformer = decoder.transformer
        sparse, _ = prompt_encoder(points=None, boxes=boxes.reshape(-1, 1, 4), masks=None)
        n = sparse.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
        key_pe = prompt_encoder.get_dense_pe().flatten(2).permute(0, 2, 1)
        first = transformer.layers[0]  # TwoWayAttentionBlock with skip_first_layer_pe
        queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
        to_image, to_token = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        queries = first.norm2(queries + _attend(to_image, to_image.q_proj(queries + tokens), k1.expand(n, -1, -1),
                                                v1.expand(n, -1, -1)))
        queries = first.norm3(queries + first.mlp(queries))
        q = queries + tokens
        keys = first.norm4(keys + _attend(to_token, q1.expand(n, -1, -1), to_token.k_proj(q), to_token.v_proj(queries)))
        for layer in transformer.layers[1:]:
            queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=key_pe)
        attn = transformer.final_attn_token_to_image(q=queries + tokens, k=keys + key_pe, v=keys)
        queries = transformer.norm_final_attn(queries + attn)
        src = keys.transpose(1, 2).reshape(n, EMBED_DIM, EMBEDDING_SIZE, EMBEDDING_SIZE)
        upscaled = decoder.output_upscaling(src)  # (N, 32, 256, 256)
        hyper = decoder.output_hypernetworks_mlps[0](queries[:, 1, :])  # first mask token: single-mask output
        return (upscaled * hyper.reshape(n, -1, 1, 1)).sum(dim=1, keepdim=True)


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
