"""medsam-lite: fast box-prompted medical image segmentation (lightweight MedSAM) on a CPU.

``from medsam_lite import Predictor, load_model`` works; the names are imported on first use (PEP 562), so
``import medsam_lite`` and ``medsam-lite --help`` stay light (no torch, no model code).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Predictor": "medsam_lite.predictor",
    "load_model": "medsam_lite.checkpoint",
    "create_backend": "medsam_lite.backends",
}
"""Public name -> the module that defines it (imported on first access)."""

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs only
    from .backends import create_backend
    from .checkpoint import load_model
    from .predictor import Predictor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medsam_lite' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(list(globals()) + list(_LAZY))
