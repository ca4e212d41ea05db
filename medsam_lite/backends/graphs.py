"""The torch graphs that fast-inference backends convert, and their ONNX serialisation.

* :func:`medsam_lite.encoders.inference_encoder` (of ``model.image_encoder``): the image encoder in eval mode
  (RepViT reparameterised / BatchNorm fused), (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64).
* :class:`~medsam_lite.model.DecoderGraph`: ``(embedding (1, 256, 64, 64), boxes (N, 4) XYXY model frame) ->
  logits (N, 1, 256, 256)``, N dynamic (prompt encoder + mask decoder, single-mask output).
* :class:`DecoderImageGraph` / :class:`DecoderBoxGraph`: the same
  decoder split into its box-independent part (once per slice) and the per-box rest (OpenVINO backend).
* :func:`write_onnx_graphs`: both graphs as ``encoder.onnx`` / ``decoder.onnx`` (names ``image`` ->
  ``embedding`` and ``embedding``, ``boxes`` -> ``logits``), used by the ONNX Runtime backend's local
  conversion and by :mod:`medsam_lite.export.onnx_export`.

This is core code: it imports nothing from the export / benchmark layers.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Tuple, Union

import torch
from torch import nn

from ..encoders import inference_encoder
from ..io_utils import atomic_path
from ..model import DecoderGraph, MedSAMLite
from ..transforms import EMBEDDING_SIZE, IMAGE_SIZE

if TYPE_CHECKING:
    import onnx

OPSET = 17
"""ONNX opset used for both graphs."""

ENCODER_INPUT_SHAPE: Tuple[int, int, int, int] = (1, 3, 256, 256)
EMBEDDING_SHAPE: Tuple[int, int, int, int] = (1, 256, 64, 64)
EXAMPLE_BOXES = ((10.0, 20.0, 100.0, 120.0), (50.0, 40.0, 200.0, 250.0))
"""Two (4,) XYXY model-frame boxes used as the decoder's example input when tracing."""

SPLIT_NAMES: Tuple[str, str, str, str] = ("keys", "k", "v", "q")
"""Outputs of the decoder's box-independent part (:class:`DecoderImageGraph`), in order."""


def _heads(attention: nn.Module) -> Tuple[int, int]:
    """(heads, channels per head) of a segment-anything ``Attention`` (the decoder's cross attentions: 8, 16)."""
    return attention.num_heads, attention.internal_dim // attention.num_heads


def _per_head(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """A (heads x d, C) projection weight as (heads, d, C): rows of head h are ``weight[d h : d (h + 1)]``."""
    return weight.reshape(heads, -1, weight.shape[-1])


def _token_to_image(attention: nn.Module, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """segment-anything ``Attention(q=queries, k=keys, v=values)`` for T prompt tokens attending to the
    4096 image tokens, without projecting the image side: with q_h = W_q,h x + b_q,h (16 channels of
    head h), the score q_h . (W_k,h k_j + b_k,h) = (W_k,h^T q_h) . k_j + const, the constant cancelling
    in the softmax over j; and sum_j a_j (W_v,h v_j + b_v,h) = W_v,h (sum_j a_j v_j) + b_v,h since the
    weights sum to one. Two (T * 8) x 4096 x 256 products instead of two 4096 x 256 x 128 projections.

    queries (N, T, 256), keys / values (N, 4096, 256) -> (N, T, 256).
    """
    (n, t, _), (heads, dim) = queries.shape, _heads(attention)
    q = attention.q_proj(queries).reshape(n, t, heads, dim) / dim ** 0.5
    u = torch.einsum("nihd,hdc->nhic", q, _per_head(attention.k_proj.weight, heads)).reshape(n, heads * t, -1)
    weights = torch.softmax(u @ keys.transpose(1, 2), dim=-1)  # (N, 8 T, 4096), rows (head, token)
    mixed = (weights @ values).reshape(n, heads, t, -1)  # (N, 8, T, 256)
    out = torch.einsum("nhic,hdc->nihd", mixed, _per_head(attention.v_proj.weight, heads)).reshape(n, t, -1)
    return attention.out_proj(out + attention.v_proj.bias)


def _image_to_token(attention: nn.Module, image_q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    projected: bool = False) -> torch.Tensor:
    """segment-anything ``Attention(q=image_q, k=keys, v=values)`` for the 4096 image tokens attending to
    T prompt tokens, in token-major layout with no head split of the image side: the scores of all
    heads are one product of the image tokens with a (256, 8 T) matrix (W_q,h^T k_h per head h and
    token), and ``out_proj`` of the head outputs is the softmax weights times the (8 T, 256) matrix of
    W_o,h v_h. With ``projected``, ``image_q`` is already ``q_proj(image_q)`` (N or 1, 4096, 128) and the
    keys enter as a block-diagonal (128, 8 T) matrix.

    image_q (N, 4096, 256) (or projected), keys / values (N, T, 256) -> (N, 4096, 256).
    """
    (n, t, _), (heads, dim) = keys.shape, _heads(attention)
    k = attention.k_proj(keys).reshape(n, t, heads, dim) / dim ** 0.5
    v = attention.v_proj(values).reshape(n, t, heads, dim)
    if projected:
        eye = torch.eye(heads, dtype=k.dtype, device=k.device)
        blocks = k.permute(0, 2, 1, 3)[:, :, :, None, :] * eye[None, :, None, :, None]  # (N, 8, T, 8, 16)
        scores = blocks.reshape(n, heads * t, -1) @ image_q.transpose(1, 2)
    else:
        u = torch.einsum("nihd,hdc->nhic", k, _per_head(attention.q_proj.weight, heads)).reshape(n, heads * t, -1)
        bias = torch.einsum("nihd,hd->nhi", k, attention.q_proj.bias.reshape(heads, dim))
        scores = u @ image_q.transpose(1, 2) + bias.reshape(n, heads * t, 1)
    weights = torch.softmax(scores.reshape(n, heads, t, -1), dim=2).reshape(n, heads * t, -1)
    out_weight = attention.out_proj.weight.reshape(-1, heads, dim)  # (256, 8, 16)
    mixed = torch.einsum("nihd,chd->nhic", v, out_weight).reshape(n, heads * t, -1)  # (N, 8 T, 256)
    return weights.transpose(1, 2) @ mixed + attention.out_proj.bias


class DecoderImageGraph(nn.Module):
    """The box-independent part of :class:`DecoderGraph`, computed once per image embedding.

    With no mask prompt, segment-anything's mask decoder starts from ``src = embedding +
    no_mask_embed`` and its first two-way block projects that image side (keys, key + positional
    encoding) before any box enters: the token-to-image attention's k / v and the image-to-token
    attention's q. Computing them once per slice serves every box of that slice.

    embedding (1, 256, 64, 64) -> keys (1, 4096, 256), k (1, 8, 16, 4096) and v (1, 8, 4096, 16) per head,
    q (1, 4096, 128).
    """

    def __init__(self, model: MedSAMLite) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        prompt_encoder, layer = self.model.prompt_encoder, self.model.mask_decoder.transformer.layers[0]
        keys = (embedding + prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)).flatten(2).permute(0, 2, 1)
        keys_pe = keys + prompt_encoder.get_dense_pe().flatten(2).permute(0, 2, 1)
        to_image = layer.cross_attn_token_to_image
        heads, dim = _heads(to_image)
        k = to_image.k_proj(keys_pe).reshape(1, -1, heads, dim).permute(0, 2, 3, 1)
        v = to_image.v_proj(keys).reshape(1, -1, heads, dim).permute(0, 2, 1, 3)
        return keys, k, v, layer.cross_attn_image_to_token.q_proj(keys_pe)


class DecoderBoxGraph(nn.Module):
    """The box-dependent rest of :class:`DecoderGraph`: (keys, k, v, q) of :class:`DecoderImageGraph`,
    boxes (N, 4) float32 XYXY in the model frame -> logits (N, 1, 256, 256).

    ``DecoderBoxGraph(m)(*DecoderImageGraph(m)(e), b)`` equals ``DecoderGraph(m)(e, b)`` up to float
    rounding (tested): segment-anything's modules and weights, in segment-anything's order
    (``MaskDecoder.predict_masks`` / ``TwoWayTransformer`` / ``TwoWayAttentionBlock``, first block with
    ``skip_first_layer_pe``, single-mask output), rewritten for the CPU with the same algebra:

    * the cross attentions never project or head-split the 4096 image tokens
      (:func:`_token_to_image`, :func:`_image_to_token`): ~0.9 instead of ~2.1 GFLOP a box, no
      4096-token transposes;
    * everything stays token-major (N, 4096, C): each 2 x 2 / stride-2 transposed convolution of
      ``output_upscaling`` is a per-token matrix product (256 -> 2 x 2 x 64, then 64 -> 2 x 2 x 32),
      ``LayerNorm2d`` a layer norm over the last axis, the hypernetwork product a (65536, 32) x (32, 1)
      product, and only the final (N, 256, 256) logits are rearranged into image order (no
      channel-first reorders of the 8 MB upscaled tensor, which took ~30 % of a box in OpenVINO).

    OpenVINO f32, 2 threads: 14.0 ms a box against 27.7 ms for the module-by-module graph (measured
    side by side; docs/backends/README.md). The TorchScript artifact and ``--backend torch`` keep
    :class:`DecoderGraph`, the exact reference.
    """

    def __init__(self, model: MedSAMLite) -> None:
        super().__init__()
        self.model = model
        up = model.mask_decoder.output_upscaling  # ConvT(256, 64, 2, 2), LayerNorm2d(64), GELU, ConvT(64, 32, 2, 2), GELU
        for i, conv in (("1", up[0]), ("2", up[3])):  # (C_in, C_out, 2, 2) -> (C_in, 2 x 2 x C_out): columns (a, b, out)
            self.register_buffer(f"up{i}_weight", conv.weight.detach().permute(0, 2, 3, 1).reshape(conv.in_channels, -1),
                                 persistent=False)
            self.register_buffer(f"up{i}_bias", conv.bias.detach().repeat(4), persistent=False)

    def forward(self, keys: torch.Tensor, k1: torch.Tensor, v1: torch.Tensor, q1: torch.Tensor,
                boxes: torch.Tensor) -> torch.Tensor:
        prompt_encoder, decoder = self.model.prompt_encoder, self.model.mask_decoder
        transformer = decoder.transformer
        sparse, _ = prompt_encoder(points=None, boxes=boxes.reshape(-1, 1, 4), masks=None)
        n = sparse.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)  # (N, 7, 256)
        key_pe = prompt_encoder.get_dense_pe().flatten(2).permute(0, 2, 1)  # (1, 4096, 256)
        first = transformer.layers[0]  # TwoWayAttentionBlock with skip_first_layer_pe
        queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
        to_image = first.cross_attn_token_to_image  # its image projections k1 / v1 come in per head
        heads, dim = _heads(to_image)
        q = to_image.q_proj(queries + tokens).reshape(n, -1, heads, dim).transpose(1, 2)
        weights = torch.softmax((q @ k1) / dim ** 0.5, dim=-1)  # (N, 8, 7, 4096)
        queries = first.norm2(queries + to_image.out_proj((weights @ v1).transpose(1, 2).reshape(n, -1, heads * dim)))
        queries = first.norm3(queries + first.mlp(queries))
        keys = first.norm4(keys + _image_to_token(first.cross_attn_image_to_token, q1, queries + tokens, queries,
                                                  projected=True))
        for layer in transformer.layers[1:]:
            q = queries + tokens
            queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
            keys_pe = keys + key_pe
            queries = layer.norm2(queries + _token_to_image(layer.cross_attn_token_to_image, queries + tokens, keys_pe, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(keys + _image_to_token(layer.cross_attn_image_to_token, keys_pe, queries + tokens, queries))
        queries = transformer.norm_final_attn(
            queries + _token_to_image(transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys))
        norm, act = decoder.output_upscaling[1], decoder.output_upscaling[2]
        x = (keys @ self.up1_weight + self.up1_bias).reshape(n, -1, 4, norm.weight.shape[0])  # (N, 4096, [a b], 64)
        x = act(torch.nn.functional.layer_norm(x, norm.weight.shape, norm.weight, norm.bias, norm.eps))
        x = decoder.output_upscaling[4](x @ self.up2_weight + self.up2_bias)  # (N, 4096, [a b], [c d] x 32)
        hyper = decoder.output_hypernetworks_mlps[0](queries[:, 1, :])  # first mask token: single-mask output
        logits = x.reshape(n, -1, hyper.shape[-1]) @ hyper.unsqueeze(-1)  # (N, 4096 x [a b] x [c d], 1)
        # token (i, j) of the 64 x 64 grid, sub-pixels (a, b) then (c, d): pixel (4 i + 2 a + c, 4 j + 2 b + d)
        logits = logits.reshape(n, EMBEDDING_SIZE, EMBEDDING_SIZE, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
        return logits.reshape(n, 1, IMAGE_SIZE, IMAGE_SIZE)


ENCODER_STAGES: Tuple[str, ...] = ("stem", "layer0", "layer1", "layer2", "layer3", "neck")
"""Names of :func:`encoder_stages`, in forward order."""


def encoder_stages(encoder: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The image encoder as a chain of stages whose composition is its forward, for per-stage precision:
    LiteMedSAM's TinyViT as ``stem`` (patch embedding, (B, 3, 256, 256) -> (B, 64, 128, 128)),
    ``layer0`` .. ``layer3`` and ``neck`` (-> (B, 256, 64, 64)). Other encoders: ``[]`` (no split)."""
    from ..encoders.tiny_vit import TinyViTEncoder

    if type(encoder) is not TinyViTEncoder:
        return []
    return list(zip(ENCODER_STAGES, [encoder.patch_embed.seq, *encoder.layers, encoder.neck], strict=True))


def decoder_graph(model: nn.Module) -> DecoderGraph:
    """:class:`DecoderGraph` of ``model`` in eval mode."""
    return DecoderGraph(model).eval()


def example_inputs() -> Tuple[Tuple[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]:
    """Example inputs ``((image,), (embedding, boxes))`` for tracing the encoder and decoder graphs."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(ENCODER_INPUT_SHAPE, generator=generator)
    embedding = torch.randn(EMBEDDING_SHAPE, generator=generator)
    return (image,), (embedding, torch.tensor(EXAMPLE_BOXES, dtype=torch.float32))


def inline_shared_initializers(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """``model`` with every ``Identity`` of an initializer replaced by a copy of that initializer.

    The TorchScript-based exporter de-duplicates bitwise-equal parameters (e.g. freshly initialised,
    untrained layers) into ``Identity`` nodes; ONNX Runtime's dynamic quantiser then fails with
    "Expected <weight> to be an initializer". Trained weights rarely share bits, so this mostly
    matters for random-weight models; the graph's outputs are unchanged.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in initializers:
            copy = numpy_helper.from_array(numpy_helper.to_array(initializers[node.input[0]]), node.output[0])
            graph.initializer.append(copy)
            initializers[copy.name] = copy
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return model


def write_onnx_graphs(model: nn.Module, out_dir: Union[str, Path], split_decoder: bool = False) -> Dict[str, Path]:
    """Write ``out_dir/encoder.onnx`` and ``out_dir/decoder.onnx`` (each atomically, ``onnx.checker``-checked);
    with ``split_decoder`` instead of ``decoder.onnx`` the two parts ``decoder_image.onnx`` (``embedding`` ->
    ``keys``, ``k``, ``v``, ``q``) and ``decoder_box.onnx`` (those + ``boxes`` -> ``logits``).

    Uses the TorchScript-based exporter (``dynamo=False``) at opset :data:`OPSET`; the decoder's box
    count is the dynamic axis ``num_boxes``. Returns ``{"encoder": path, "decoder": path}`` (split:
    ``{"encoder", "decoder_image", "decoder_box"}``).
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    (image,), (embedding, boxes) = example_inputs()
    names = ("encoder", "decoder_image", "decoder_box") if split_decoder else ("encoder", "decoder")
    paths = {name: out_dir / f"{name}.onnx" for name in names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(paths["encoder"]) as tmp:
            torch.onnx.export(
                inference_encoder(model.image_encoder), (image,), str(tmp),
                input_names=["image"], output_names=["embedding"], opset_version=OPSET, dynamo=False,
            )
            onnx.checker.check_model(str(tmp))
        if not split_decoder:
            with atomic_path(paths["decoder"]) as tmp:
                torch.onnx.export(
                    decoder_graph(model), (embedding, boxes), str(tmp),
                    input_names=["embedding", "boxes"], output_names=["logits"], opset_version=OPSET, dynamo=False,
                    dynamic_axes={"boxes": {0: "num_boxes"}, "logits": {0: "num_boxes"}},
                )
                onnx.checker.check_model(str(tmp))
            return paths
        image_part, box_part = DecoderImageGraph(model).eval(), DecoderBoxGraph(model).eval()
        parts = image_part(embedding)
        with atomic_path(paths["decoder_image"]) as tmp:
            torch.onnx.export(image_part, (embedding,), str(tmp), input_names=["embedding"],
                              output_names=list(SPLIT_NAMES), opset_version=OPSET, dynamo=False)
            onnx.checker.check_model(str(tmp))
        with atomic_path(paths["decoder_box"]) as tmp:
            torch.onnx.export(
                box_part, (*parts, boxes), str(tmp), input_names=[*SPLIT_NAMES, "boxes"], output_names=["logits"],
                opset_version=OPSET, dynamo=False, dynamic_axes={"boxes": {0: "num_boxes"}, "logits": {0: "num_boxes"}},
            )
            onnx.checker.check_model(str(tmp))
    return paths


def quantize_onnx_dynamic(source: Union[str, Path], target: Union[str, Path]) -> Path:
    """ONNX Runtime dynamic int8 quantisation of ``source`` into ``target`` (weights int8, activations
    quantised at run time), written atomically and ``onnx.checker``-checked."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(source), Path(target)
    fd, scratch = tempfile.mkstemp(prefix=f".{source.stem}.prequant.", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        onnx.save(inline_shared_initializers(onnx.load(str(source))), scratch)
        with atomic_path(target) as tmp:
            quantize_dynamic(scratch, str(tmp), weight_type=QuantType.QInt8)
            onnx.checker.check_model(str(tmp))
    finally:
        Path(scratch).unlink(missing_ok=True)
    return target
