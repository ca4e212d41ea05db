"""ONNX export: ``encoder.onnx`` and ``decoder.onnx`` (dynamic number of boxes), optional int8.

* ``encoder.onnx``: input ``image`` (1, 3, 256, 256) float32 in [0, 1] (model frame, pre-processed by
  :func:`medsam_lite.transforms.preprocess_image`) -> output ``embedding`` (1, 256, 64, 64).
* ``decoder.onnx``: inputs ``embedding`` (1, 256, 64, 64) and ``boxes`` (N, 4) float32 XYXY in the
  256 x 256 model frame -> output ``logits`` (N, 1, 256, 256); N is a dynamic axis.

Pre/post-processing stays in Python (:class:`medsam_lite.backends.onnxruntime.OnnxRuntimeBackend` plugs into
:class:`medsam_lite.predictor.Predictor`). Uses the TorchScript-based ONNX exporter
(``dynamo=False``), so ``onnxscript`` is not needed. The graphs themselves are defined in
:mod:`medsam_lite.backends.graphs` (core), shared with the backends' local conversion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

from torch import nn

from medsam_lite.backends.graphs import (OPSET, DecoderGraph, inline_shared_initializers, quantize_onnx_dynamic,
                                         write_onnx_graphs)

__all__ = ["OPSET", "DecoderGraph", "export_onnx", "inline_shared_initializers"]


def export_onnx(model: nn.Module, out_dir: Union[str, Path], quantize: bool = False) -> Dict[str, Path]:
    """Export ``model`` to ``out_dir/encoder.onnx`` and ``out_dir/decoder.onnx``, each checked by ``onnx.checker``.

    Args:
        model: a ``MedSAMLite`` module.
        out_dir: output folder (created).
        quantize: also write ``encoder.int8.onnx`` / ``decoder.int8.onnx`` with ONNX Runtime dynamic
            int8 quantisation (weights int8, activations quantised at run time).
    Returns: ``{"encoder": path, "decoder": path[, "encoder_int8": path, "decoder_int8": path]}``.
    """
    out_dir = Path(out_dir)
    paths = write_onnx_graphs(model, out_dir)
    if quantize:
        for key in ("encoder", "decoder"):
            paths[f"{key}_int8"] = quantize_onnx_dynamic(paths[key], out_dir / f"{key}.int8.onnx")
    return paths
