"""Arrays across the numpy / torch boundary without importing torch.

The torch-free path (:class:`~medsam_lite.propagation_numpy.NumpyPropagator`, the OpenVINO and ONNX Runtime
backends, the embedding stores) speaks numpy; the reference path (:class:`~medsam_lite.propagation.Propagator`)
speaks torch. Functions that serve both (a backend's ``encode`` / ``decode``,
:class:`~medsam_lite.embedding_cache.CachedEncoder`) take either and answer in the caller's kind: a torch
tensor can only exist when the caller imported torch, so asking ``sys.modules`` never imports it.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (False, without importing torch, when torch is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def to_numpy(value: Any, dtype: Any = np.float32) -> np.ndarray:
    """A C-contiguous numpy array of ``dtype`` with ``value``'s data (a tensor is detached and moved to the CPU;
    no copy when it already fits)."""
    if is_tensor(value):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


def like(array: np.ndarray, template: Any) -> Any:
    """``array`` in the kind of ``template``: a torch tensor sharing its memory when ``template`` is a tensor,
    else ``array`` itself."""
    if is_tensor(template):
        return sys.modules["torch"].from_numpy(array)
    return array
