"""Deployment exports of MedSAM-Lite models.

* :func:`medsam_lite.export.torchscript.export_torchscript`: one self-contained TorchScript predictor file.
* :func:`medsam_lite.export.onnx_export.export_onnx`: ``encoder.onnx`` + ``decoder.onnx`` (+ optional int8).
* :class:`medsam_lite.backends.onnxruntime.OnnxRuntimeBackend`: ONNX Runtime backend for :class:`medsam_lite.predictor.Predictor`.

Submodules import torch / onnx lazily; nothing heavy happens at ``import medsam_lite.export``.
"""
