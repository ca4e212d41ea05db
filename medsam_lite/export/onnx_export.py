"""ONNX export: ``encoder.onnx`` and ``decoder.onnx`` (dynamic number of boxes), optional int8.

* ``encoder.onnx``: input ``image`` (1, 3, 256, 256) float32 in [0, 1] (model frame, pre-processed by
  :func:`medsam_lite.transforms.preprocess_image`) -> output ``embedding`` (1, 256, 64, 64).
* ``decoder.onnx``: inputs ``embedding`` (1, 256, 64, 64) and ``boxes`` (N, 4) float32 XYXY in the
  256 x 256 model frame -> output ``logits`` (N, 1, 256, 256); N is a dynamic axis.

Pre/post-processing stays in Python (:class:`medsam_lite.backends.onnxruntime.OnnxRuntimeBackend` plugs into
:class:`medsam_lite.predictor.Predictor`). Uses the TorchScript-based ONNX exporter
(``dynamo=False``), so ``onnxscript`` is not needed.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Union

import torch
from torch import nn

from medsam_lite.io_utils import atomic_path

if TYPE_CHECKING:
    import onnx

OPSET = 17
"""ONNX opset used for both graphs."""


class _DecoderGraph(nn.Module):
    """embedding (1, 256, 64, 64), boxes (N, 4) in the 256 frame -> logits (N, 1, 256, 256)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(embedding, boxes)[0]


def _inference_encoder(model: nn.Module) -> nn.Module:
    """The image encoder in eval mode; RepViT reparameterised / BatchNorm fused."""
    from medsam_lite.encoders.repvit import fuse_for_inference, is_repvit

    encoder = model.image_encoder.eval()
    return fuse_for_inference(encoder) if is_repvit(encoder) else encoder


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


def export_onnx(model: nn.Module, out_dir: Union[str, Path], quantize: bool = False) -> Dict[str, Path]:
    """Export ``model`` to ``out_dir/encoder.onnx`` and ``out_dir/decoder.onnx``, each checked by ``onnx.checker``.

    Args:
        model: a ``MedSAMLite`` module.
        out_dir: output folder (created).
        quantize: also write ``encoder.int8.onnx`` / ``decoder.int8.onnx`` with ONNX Runtime dynamic
            int8 quantisation (weights int8, activations quantised at run time).
    Returns: ``{"encoder": path, "decoder": path[, "encoder_int8": path, "decoder_int8": path]}``.
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    paths = {"encoder": out_dir / "encoder.onnx", "decoder": out_dir / "decoder.onnx"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(paths["encoder"]) as tmp:
            torch.onnx.export(
                _inference_encoder(model), (torch.rand(1, 3, 256, 256),), str(tmp),
                input_names=["image"], output_names=["embedding"], opset_version=OPSET, dynamo=False,
            )
            onnx.checker.check_model(str(tmp))
        boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 40.0, 200.0, 250.0]])
        with atomic_path(paths["decoder"]) as tmp:
            torch.onnx.export(
                _DecoderGraph(model).eval(), (torch.randn(1, 256, 64, 64), boxes), str(tmp),
                input_names=["embedding", "boxes"], output_names=["logits"], opset_version=OPSET, dynamo=False,
                dynamic_axes={"boxes": {0: "num_boxes"}, "logits": {0: "num_boxes"}},
            )
            onnx.checker.check_model(str(tmp))
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for key in ("encoder", "decoder"):
            target = out_dir / f"{key}.int8.onnx"
            fd, scratch = tempfile.mkstemp(prefix=f".{key}.prequant.", suffix=".onnx", dir=out_dir)
            os.close(fd)
            try:
                onnx.save(inline_shared_initializers(onnx.load(str(paths[key]))), scratch)
                with atomic_path(target) as tmp:
                    quantize_dynamic(scratch, str(tmp), weight_type=QuantType.QInt8)
                    onnx.checker.check_model(str(tmp))
            finally:
                Path(scratch).unlink(missing_ok=True)
            paths[f"{key}_int8"] = target
    return paths
