"""ONNX export: ``encoder.onnx`` and ``decoder.onnx`` (dynamic number of boxes), optional int8.

* ``encoder.onnx``: input ``image`` (1, 3, 256, 256) float32 in [0, 1] (model frame, pre-processed by
  :func:`medsam_lite.transforms.preprocess_image`) -> output ``embedding`` (1, 256, 64, 64).
* ``decoder.onnx``: inputs ``embedding`` (1, 256, 64, 64) and ``boxes`` (N, 4) float32 XYXY in the
  256 x 256 model frame -> output ``logits`` (N, 1, 256, 256); N is a dynamic axis.

Pre/post-processing stays in Python (:class:`export.onnx_backend.OnnxRuntimeBackend` plugs into
:class:`medsam_lite.predictor.Predictor`). Uses the TorchScript-based ONNX exporter
(``dynamo=False``), so ``onnxscript`` is not needed.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Union

import torch
from torch import nn

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
    from medsam_lite.encoders.repvit import RepViTEncoder, fuse_for_inference

    encoder = model.image_encoder.eval()
    return fuse_for_inference(encoder) if isinstance(encoder, RepViTEncoder) else encoder


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
        torch.onnx.export(
            _inference_encoder(model), (torch.rand(1, 3, 256, 256),), str(paths["encoder"]),
            input_names=["image"], output_names=["embedding"], opset_version=OPSET, dynamo=False,
        )
        boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 40.0, 200.0, 250.0]])
        torch.onnx.export(
            _DecoderGraph(model).eval(), (torch.randn(1, 256, 64, 64), boxes), str(paths["decoder"]),
            input_names=["embedding", "boxes"], output_names=["logits"], opset_version=OPSET, dynamo=False,
            dynamic_axes={"boxes": {0: "num_boxes"}, "logits": {0: "num_boxes"}},
        )
    for path in list(paths.values()):
        onnx.checker.check_model(str(path))
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for key in ("encoder", "decoder"):
            target = out_dir / f"{key}.int8.onnx"
            quantize_dynamic(str(paths[key]), str(target), weight_type=QuantType.QInt8)
            onnx.checker.check_model(str(target))
            paths[f"{key}_int8"] = target
    return paths
