"""Deployment exports of MedSAM-Lite models.

* :func:`export.torchscript.export_torchscript`: one self-contained TorchScript predictor file.
* :func:`export.onnx_export.export_onnx`: ``encoder.onnx`` + ``decoder.onnx`` (+ optional int8).
* :class:`export.onnx_backend.OnnxRuntimeBackend`: ONNX Runtime backend for :class:`medsam_lite.predictor.Predictor`.

Submodules import torch / onnx lazily; nothing heavy happens at ``import export``.
"""
