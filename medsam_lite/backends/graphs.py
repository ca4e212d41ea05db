"""The torch graphs that fast-inference backends convert, and their ONNX serialisation.

* :func:`inference_encoder`: the image encoder in eval mode (RepViT reparameterised / BatchNorm fused),
  (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64).
* :class:`~medsam_lite.model.DecoderGraph`: ``(embedding (1, 256, 64, 64), boxes (N, 4) XYXY model frame) ->
  logits (N, 1, 256, 256)``, N dynamic (prompt encoder + mask decoder, single-mask output).
* :class:`~medsam_lite.model.DecoderImageGraph` / :class:`~medsam_lite.model.DecoderBoxGraph`: the same
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

from ..encoders import inference_encoder as _encoder_for_inference
from ..io_utils import atomic_path
from ..model import DecoderBoxGraph, DecoderGraph, DecoderImageGraph

if TYPE_CHECKING:
    import onnx

OPSET = 17
"""ONNX opset used for both graphs."""

ENCODER_INPUT_SHAPE: Tuple[int, int, int, int] = (1, 3, 256, 256)
EMBEDDING_SHAPE: Tuple[int, int, int, int] = (1, 256, 64, 64)
EXAMPLE_BOXES = ((10.0, 20.0, 100.0, 120.0), (50.0, 40.0, 200.0, 250.0))
"""Two (4,) XYXY model-frame boxes used as the decoder's example input when tracing."""

SPLIT_NAMES: Tuple[str, str, str, str] = ("keys", "k", "v", "q")
"""Outputs of the decoder's box-independent part (:class:`~medsam_lite.model.DecoderImageGraph`), in order."""


def inference_encoder(model: nn.Module) -> nn.Module:
    """``model.image_encoder`` as every inference path runs it (:func:`medsam_lite.encoders.inference_encoder`:
    eval mode, RepViT fused into a copy): (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64)."""
    return _encoder_for_inference(model.image_encoder)


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
                inference_encoder(model), (image,), str(tmp),
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
